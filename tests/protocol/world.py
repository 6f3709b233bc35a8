"""The unit world the exactly-once protocol is explored in: the real ledger on moto's DynamoDB, the real
CloudBlue client against the CloudBlue simulator over HTTP (which keeps repeated extHash, as a real
CloudBlue may), an S3 of object versions in memory, and a clock the test moves.

:meth:`ProtocolWorld.attempt` makes one invocation of the import whose adapters pass the scheduler's
gates (``tests/protocol/scheduler.py``). :meth:`ProtocolWorld.settle` is what happens after a case: Lambda's
retries and the runbook, until every file has ended; :meth:`ProtocolWorld.verdict` then says whether
CloudBlue rates the month exactly once and whether every file that ended without importing was alerted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import logging
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import httpx
import yaml
from moto import mock_aws
from pydantic import SecretStr
from soracharge.adapters.cloudblue import CloudBlueClient, OAuth1TwoLegged
from soracharge.adapters.ledger import DynamoDbLedger
from soracharge.adapters.storage import StoredObject
from soracharge.logic.corrections import Allocation, write_differences
from soracharge.logic.imports import ImportDependencies, import_object, review_object
from soracharge.logic.sessions import finish_import, poll_session
from soracharge.models.coverage import Coverage
from soracharge.models.imports import FollowSessionRequest, ImportReport, ObjectRef, ReviewRequest
from soracharge.models.mapping import Mapping, parse_mapping
from soracharge.models.runbook import Remedy
from soracharge.observability import logger, metrics
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator, SoracomSimulator

from tests import reference
from tests.chaos.runbook import ReceivedAlert
from tests.planning import planned
from tests.protocol.scheduler import Attempt, Gated, Stop

REPO = Path(__file__).resolve().parents[2]
MONTH = "202610"
TABLE = "ledger"
MAPPING_YAML = (REPO / "examples" / "mapping.example.yaml").read_text()
MAPPING = parse_mapping(MAPPING_YAML, "mapping.yaml")
#: 38 charges (SIMs, devices, shares) in 3 packets: enough packets for a session to be half sent, few enough
#: steps to try them all.
PACKET_SIZE = 13
#: The day the simulated bills are made (the month after MONTH): every file here is the same on any day.
TODAY = datetime(2026, 11, 22, tzinfo=UTC).date()
CSV = SoracomSimulator(auth_key_id="k", auth_key="s", today=TODAY).csv_bytes(MONTH)
GLOBAL_CSV = SoracomSimulator(coverage="g", auth_key_id="k", auth_key="s", today=TODAY).csv_bytes(MONTH)
GLOBAL_MAPPING_YAML = (REPO / "examples" / "mapping.global.example.yaml").read_text()
GLOBAL_MAPPING = parse_mapping(GLOBAL_MAPPING_YAML, "global.yaml")
#: One mapping for both coverages (the README allows it): Japan's, with both item lists and no currency.
BOTH_MAPPING_YAML = yaml.safe_dump(
    {key: value for key, value in yaml.safe_load(MAPPING_YAML).items() if key != "currency"}
    | {"items": yaml.safe_load(MAPPING_YAML)["items"] + yaml.safe_load(GLOBAL_MAPPING_YAML)["items"]},
    allow_unicode=True,
)
BOTH_MAPPING = parse_mapping(BOTH_MAPPING_YAML, "both.yaml")
#: The YAML a mapping was read from, where a test uses it as it was read: what tests/reference.py reads.
SOURCES = {id(MAPPING): MAPPING_YAML, id(GLOBAL_MAPPING): GLOBAL_MAPPING_YAML, id(BOTH_MAPPING): BOTH_MAPPING_YAML}
#: The same rows in other bytes: a second file for the month (its charges are the month's charges).
OTHER_CSV = CSV.replace(b"\r\n", b"\n")
#: Time enough for any claim to lapse.
LAPSE_SECONDS = 3600.0
#: Deliveries of a file's event after a case before it counts as stuck (Lambda's retries and the runbook's).
MAX_DELIVERIES = 6
#: The statuses a file's report ends in (anything else is still being imported).
ENDED = frozenset(
    {"CLOSED", "PROCESSED", "FAILED_PROCESSED", "NOT_RATED", "REJECTED", "HELD", "DUPLICATE", "AWAITING_APPROVAL"}
)
#: Ends that import nothing: a person must hear of each.
NOT_IMPORTED = frozenset({"REJECTED", "HELD", "DUPLICATE", "SUPERSEDED", "AWAITING_APPROVAL"})


class Clock:
    """The ledger's clock (seconds): moved by the test, never by time passing."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class MemoryStore:
    """The data bucket: object versions with their metadata, and JSON and text objects."""

    bucket: str = "data"
    objects: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)
    _versions: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def put(self, key: str, body: bytes, **metadata: str) -> ObjectRef:
        version = f"v{next(self._versions)}"
        self.objects[(key, version)] = (body, dict(metadata))
        return ObjectRef(bucket=self.bucket, key=key, version_id=version)

    def body(self, obj: ObjectRef) -> bytes:
        return self.objects[(obj.key, obj.version_id or "")][0]

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        if (key, version_id or "") not in self.objects:
            return None
        body, metadata = self.objects[(key, version_id or "")]
        return StoredObject(self.bucket, key, version_id, len(body), dict(metadata))

    def open(self, key: str, version_id: str | None = None) -> BinaryIO:
        return io.BytesIO(self.objects[(key, version_id or "")][0])

    def put_json(self, key: str, body: dict[str, Any]) -> StoredObject:
        self.documents[key] = body
        return StoredObject(self.bucket, key, None, 0, {})

    def put_text(self, key: str, text: str, content_type: str) -> StoredObject:
        self.pages[key] = text
        return StoredObject(self.bucket, key, None, len(text), {})

    def get_json(self, key: str) -> dict[str, Any] | None:
        return self.documents.get(key)

    def keys(self, prefix: str) -> list[str]:
        return sorted(key for key in {*self.documents, *self.pages} if key.startswith(prefix))

    def report(self, obj: ObjectRef) -> ImportReport | None:
        document = self.documents.get(f"reports/{MONTH}/{obj.version_id}.json")
        return ImportReport.model_validate(document) if document else None


@dataclass
class Workflows:
    """Step Functions: the follow-session executions started, by name (a repeated start is a no-op)."""

    started: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        self.started.setdefault(name, payload)
        return name


@dataclass
class Topic:
    """The alerts topic: every message, read as a person reads it."""

    published: list[ReceivedAlert] = field(default_factory=list)

    def publish(self, subject: str, message: str) -> None:
        self.published.append(ReceivedAlert.read(subject, message))

    def about(self, obj: ObjectRef) -> list[ReceivedAlert]:
        """The alerts that name ``obj`` as their file."""
        return [alert for alert in self.published if alert.file()[1:] == (obj.key, obj.version_id)]


class AtomicCalls:
    """A boto3 client whose calls are atomic, as DynamoDB's are (moto's in-memory tables are not thread-safe:
    a read can see an item half written). Between calls, threads interleave freely."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def atomic(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return atomic


class AnswerLost(httpx.BaseTransport):
    """CloudBlue's transport, which can lose the answer of a request CloudBlue handled: a timeout after the
    request was sent (``lose_next``: the next N requests of ``operation`` get their effect, then time out)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.lose_next = 0
        self.path_part = "/charges"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if self.lose_next > 0 and self.path_part in request.url.path:
            self.lose_next -= 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer never came (lost after CloudBlue handled the request)", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


@dataclass
class Verdict:
    """What a case ended with, against what it must end with."""

    lost: list[str]
    doubled: list[str]
    unalerted: list[str]
    stuck: list[str]
    untruthful: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.unalerted or self.stuck or self.untruthful)

    def __str__(self) -> str:
        parts = [f"{name} {len(values)}: {values[:4]}" for name, values in vars(self).items() if values]
        return "; ".join(parts) or "exactly once, every end alerted"

    __repr__ = __str__


class ProtocolWorld:
    """One case's world. Build it inside :func:`protocol_world` (it needs moto running)."""

    def __init__(
        self,
        cloudblue: CloudBlueSimulator,
        *,
        mapping: Mapping | dict[str, Mapping] | None = None,
        coverages: tuple[Coverage, ...] = ("jp",),
        concurrency: int = 1,
        dynamodb: Any = None,
        table: str = TABLE,
    ) -> None:
        self.cloudblue = cloudblue
        self.clock = Clock()
        self.store = MemoryStore()
        self.workflows = Workflows()
        self.topic = Topic()
        self.dynamodb = dynamodb or boto3.client("dynamodb", region_name="us-east-1")
        self.table = table
        self.dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.ledger = DynamoDbLedger(AtomicCalls(self.dynamodb), table, clock=self.clock)  # type: ignore[arg-type]
        self.transport = AnswerLost()
        self.client = CloudBlueClient(
            endpoint=cloudblue.base_url,
            auth=OAuth1TwoLegged(cloudblue.consumer_key, SecretStr(cloudblue.consumer_secret)),
            resource_id=cloudblue.resource_id,
            max_wait_seconds=0.001,
            transport=self.transport,
        )
        chosen = mapping if isinstance(mapping, dict) else dict.fromkeys(("jp", "g"), mapping or MAPPING)
        #: The mapping each coverage's bills are read with (a test may change it between attempts).
        self.mappings = {c: m.model_copy(update={"packet_size": PACKET_SIZE}) for c, m in chosen.items()}
        #: Each coverage's mapping as read from its YAML, with that YAML (none for a mapping a test made).
        self.sources = {c: (self.mappings[c], SOURCES[id(m)]) for c, m in chosen.items() if id(m) in SOURCES}
        self.coverages = coverages
        self.concurrency = concurrency
        #: The function's time left, as the import asks it (Lambda's context).
        self.remaining: Callable[[], float] = lambda: math.inf
        self.performed: set[int] = set()
        self.sessions_before = set(cloudblue.session_ids())
        self.files: list[ObjectRef] = []
        self.attempts: list[Attempt] = []

    # -- files and attempts ------------------------------------------------------------------------

    def upload(self, key: str, body: bytes = CSV, *, additional: bool = False, **metadata: str) -> ObjectRef:
        """A file put in the bucket (JPY unless ``metadata`` says otherwise; ``currency=""`` names none), with
        ``import=additional`` when ``additional``."""
        metadata = {"currency": "JPY", **metadata, **({"import": "additional"} if additional else {})}
        obj = self.store.put(key, body, **{name: value for name, value in metadata.items() if value})
        self.files.append(obj)
        return obj

    def dependencies(self, attempt: Attempt) -> ImportDependencies:
        """The import's adapters, each gated by ``attempt``."""
        return ImportDependencies(
            store=Gated("store", self.store, attempt),
            ledger=Gated("ledger", self.ledger, attempt),
            cloudblue=Gated("cloudblue", self.client, attempt),
            workflows=Gated("workflows", self.workflows, attempt),
            mapping=lambda coverage: (self.mappings[coverage], f"mapping.{coverage}.yaml"),
            follow_state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:follow",
            notifier=Gated("notifier", self.topic, attempt),
            concurrency=self.concurrency,
            coverages=self.coverages,
            clock=lambda: datetime.fromtimestamp(self.clock(), UTC),
            remaining_seconds=lambda: self.remaining(),
        )

    def attempt(self, obj: ObjectRef, name: str, *, pause: Stop | None = None, kill: Stop | None = None) -> Attempt:
        """A delivery of ``obj``'s S3 event, started: it runs until it pauses or ends."""
        attempt = Attempt(name, pause=pause, kill=kill)
        self.attempts.append(attempt)
        deps = self.dependencies(attempt)
        return attempt.start(lambda: import_object(obj, deps))

    def decide(
        self,
        obj: ObjectRef,
        decision: str = "approve",
        *,
        by: str = "Hanako",
        plan: str | None = None,
        pause: Stop | None = None,
        kill: Stop | None = None,
    ) -> Attempt:
        """A person's decision on ``obj``'s preview (the plan its report shows, unless ``plan``), run to its end
        (or to ``pause``)."""
        report = self.store.report(obj)
        approval = report.approval if report is not None else None
        shown = plan or (approval.plan if approval is not None else "0" * 64)
        version = approval.month_version if approval is not None else 0
        request = ReviewRequest(object_id=obj.object_id, plan=shown, version=version, decision=decision, by=by)
        attempt = Attempt(f"{decision} by {by}", pause=pause, kill=kill)
        self.attempts.append(attempt)
        deps = self.dependencies(attempt)
        attempt.start(lambda: review_object(request, deps))
        if pause is None and not attempt.ended:
            raise AssertionError("the decision paused without a pause")
        return attempt

    def history(self, month: str, per_customer: dict[str, str], *, per_item: dict[str, str] | None = None) -> None:
        """An earlier month imported: its report in ``reports/<month>/`` as the import left it."""
        moment = datetime.fromtimestamp(self.clock(), UTC).isoformat()
        self.store.put_json(
            f"reports/{month}/earlier-{month}.json",
            {
                "status": "PROCESSED",
                "summary": f"{month}, imported before",
                "month": month,
                "coverage": "jp",
                "object": {"bucket": self.store.bucket, "key": f"exports/{month}/earlier.csv", "versionId": "e"},
                "perCustomer": [{"name": name, "amount": amount} for name, amount in per_customer.items()],
                "perItem": [{"name": name, "amount": amount} for name, amount in (per_item or {}).items()],
                "createdAt": moment,
                "updatedAt": moment,
            },
        )

    def deliver(self, obj: ObjectRef, name: str = "delivery", *, kill: Stop | None = None) -> Attempt:
        """A delivery of ``obj``'s S3 event, run to its end."""
        attempt = self.attempt(obj, name, kill=kill)
        if not attempt.ended:
            raise AssertionError(f"{name} paused without a pause")
        return attempt

    def lapse(self) -> None:
        """Time passes: every claim's lease runs out."""
        self.clock.now += LAPSE_SECONDS

    @contextmanager
    def refusing(self, **faults: Any) -> Iterator[None]:
        """CloudBlue with these faults for the time of the block; by default it refuses every packet with a
        503 (it says it did not take them)."""
        self.cloudblue.faults = CloudBlueFaults(
            **(faults or {"server_error_next": 100, "server_error_status": 503, "only_operation": "importCharges"})
        )
        try:
            yield
        finally:
            self.cloudblue.faults = CloudBlueFaults()

    # -- after a case --------------------------------------------------------------------------------

    def settle(self) -> None:
        """Lambda's retries and the follow state machine, until every file has ended (or is stuck)."""
        self.cloudblue.faults = CloudBlueFaults()
        self.transport.lose_next = 0
        for _ in range(MAX_DELIVERIES):
            pending = [obj for obj in self.files if not self._ended(obj)]
            if not pending:
                break
            self.lapse()
            for obj in pending:
                self.deliver(obj, "retry")
        self.follow()

    def follow(self) -> None:
        """Every follow-session execution started: CloudBlue's answer, recorded (the simulator rates at once)."""
        for payload in list(self.workflows.started.values()):
            request = FollowSessionRequest.model_validate(payload)
            progress = poll_session(request.session, self.client)
            finish_import(
                request.model_copy(update={"session": progress}),
                self.store,
                self.ledger,
                self.topic,
                clock=lambda: datetime.fromtimestamp(self.clock(), UTC),
            )

    def follow_runbook(self, rounds: int = 4) -> None:
        """What a person does with each alert: the action its last line names, as its text says; then settle."""
        for _ in range(rounds):
            todo = [(n, a) for n, a in enumerate(self.topic.published) if n not in self.performed]
            if not todo:
                return
            for number, alert in todo:
                self.performed.add(number)
                self._perform(alert)
            self.settle()

    def _perform(self, alert: ReceivedAlert) -> None:
        _, key, version = alert.file()
        if alert.remedy in (Remedy.UPLOAD_ADDITIONAL, Remedy.IMPORT_DIFFERENCES):
            this = self.store.objects[(key, version or "")][0]
            body = this
            if alert.remedy is Remedy.IMPORT_DIFFERENCES:
                imported_path, _, imported_version = alert.facts["Imported before"].partition("#")
                imported = self.store.objects[(imported_path.partition("/")[2], imported_version)][0]
                sink = io.StringIO()
                coverage = "g" if "/g/" in key else "jp"
                allocation = Allocation(self.mappings[coverage], MONTH, "USD" if coverage == "g" else "JPY")
                imported_pair, corrected_pair = ("i.csv", io.BytesIO(imported)), ("c.csv", io.BytesIO(this))
                if write_differences([imported_pair], corrected_pair, sink, allocation=allocation).empty:
                    return
                body = sink.getvalue().encode("utf-8")
            metadata = alert.metadata()
            assert metadata.pop("import", None) == "additional", alert.message
            self.upload(f"{alert.upload_folder()}runbook-{len(self.files)}.csv", body, additional=True, **metadata)
        elif alert.remedy is Remedy.APPROVE:
            payload = alert.review_payload("approve", "runbook")
            assert payload is not None, alert.message
            self.decide(ObjectRef.from_object_id(payload["review"]["objectId"]), by="runbook")
        elif alert.remedy is Remedy.REDELIVER_EVENT:
            self.deliver(ObjectRef(bucket=self.store.bucket, key=key, version_id=version), "runbook")

    def net(self) -> dict[tuple[str, ...], Decimal]:
        """What CloudBlue rates, summed per currency, subscription, resource, SIM and bill item (ids aside)."""
        return _net(self.rated())

    def expected_net(self, *bills: tuple[bytes, str, str]) -> dict[tuple[str, ...], Decimal]:
        """The charges of ``bills`` (CSV bytes, currency, id suffix), summed as :meth:`net` sums."""
        charges = []
        for body, currency, suffix in bills:
            plan = planned(io.BytesIO(body), month=MONTH, currency=currency, mapping=self.mapping, id_suffix=suffix)
            charges += [charge.model_dump(by_alias=True, exclude_none=True) for charge in plan.charges]
        return _net(charges)

    def _ended(self, obj: ObjectRef) -> bool:
        report = self.store.report(obj)
        entry = self.ledger.get(obj.object_id)
        return report is not None and report.status in ENDED and entry is not None and entry.status != "IMPORTING"

    # -- what CloudBlue holds ----------------------------------------------------------------------

    def rated(self) -> list[dict[str, Any]]:
        """Every charge CloudBlue rates: in the case's sessions that were closed and did not fail."""
        charges = []
        for session_id in self.cloudblue.session_ids():
            if session_id in self.sessions_before:
                continue  # another case's: the simulator lives as long as the worker
            session = self.cloudblue.session(session_id)
            if session.closed_at is not None and session.status != "FAILED_PROCESSED":
                charges.extend(session.charges)
        return charges

    @property
    def mapping(self) -> Mapping:
        """Japan's mapping (the one every coverage uses unless the world was given one each)."""
        return self.mappings["jp"]

    def expected(
        self, body: bytes = CSV, *, currency: str = "JPY", coverage: Coverage = "jp", id_suffix: str = ""
    ) -> dict[str, Decimal]:
        """The charges a file holds, by extChargeId (``id_suffix``: an additional file's)."""
        suffix = "-".join(part for part in ("g" if coverage == "g" else "", id_suffix) if part)
        plan = planned(
            io.BytesIO(body), month=MONTH, currency=currency, mapping=self.mappings[coverage], id_suffix=suffix
        )
        # The ids are the plan's (the protocol is checked charge by charge), the money is the CSV's: the plan must
        # hold what tests/reference.py works out from the CSV and the mapping's YAML alone, apart from the code.
        mapping, text = self.sources.get(coverage, (None, ""))
        if mapping is self.mappings[coverage]:
            charges = (charge.model_dump(by_alias=True, exclude_none=True) for charge in plan.charges)
            found = reference.differences(reference.expected(body, text, currency), reference.held(charges))
            assert not found, f"the plan is not what the CSV makes (tests/reference.py): {found}"
        return {charge.ext_charge_id or "": charge.total_price for charge in plan.charges}

    def verdict(self, expected: dict[str, Decimal] | None = None) -> Verdict:
        """CloudBlue against the month's charges, and every file's end against its alerts and its report."""
        want = expected if expected is not None else self.expected()
        rated = self.rated()
        held = Counter(charge["extChargeId"] for charge in rated)
        prices: dict[str, set[Decimal]] = defaultdict(set)
        for charge in rated:
            prices[charge["extChargeId"]].add(charge["totalPrice"])
        lost = sorted(set(want) - set(held))
        doubled = sorted(charge_id for charge_id, times in held.items() if times > 1 or charge_id not in want)
        doubled += sorted(i for i in want if i in prices and prices[i] != {want[i]})
        unalerted, stuck, untruthful = [], [], []
        for obj in self.files:
            report = self.store.report(obj)
            entry = self.ledger.get(obj.object_id)
            if report is None or entry is None or entry.status == "IMPORTING":
                stuck.append(f"{obj.key}#{obj.version_id}")
                continue
            if report.status in NOT_IMPORTED and not any(a.remedy for a in self.topic.about(obj)):
                unalerted.append(f"{obj.key}#{obj.version_id} {report.status}")
            if report.status in ("CLOSED", "PROCESSED") and report.import_session_id is not None:
                session = self.cloudblue.session(report.import_session_id)
                if session.closed_at is None:
                    untruthful.append(f"{obj.key}: report names session {report.import_session_id}, never closed")
        return Verdict(lost, doubled, unalerted, stuck, untruthful)


def _net(charges: list[dict[str, Any]]) -> dict[tuple[str, ...], Decimal]:
    sums: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    for charge in charges:
        attributes = charge.get("attributes") or {}
        key = (
            str(charge["currencyCode"]),
            str(charge["subscriptionId"]),
            str(charge["resourceId"]),
            str(attributes.get("imsi", "")),
            str(attributes.get("billItemName", "")),
        )
        sums[key] += Decimal(str(charge["totalPrice"]))
    return {key: total for key, total in sums.items() if total != 0}


@contextmanager
def protocol_world(cloudblue: CloudBlueSimulator, **options: Any) -> Iterator[ProtocolWorld]:
    """A fresh world (ledger, store, clock) around the long-lived CloudBlue simulator: in a moto of its own,
    or, inside :func:`shared_aws`, in a table of its own of that moto (faster for a long run of cases)."""
    cloudblue.faults = CloudBlueFaults()
    with contextlib.ExitStack() as stack:
        if _SHARED:
            options |= {"dynamodb": _SHARED[0], "table": f"{TABLE}-{next(_TABLES)}"}
        else:
            stack.enter_context(mock_aws())
        world = ProtocolWorld(cloudblue, **options)
        try:
            yield world
        finally:
            world.client.close()
            metrics.clear_metrics()  # no Lambda runtime flushes them here: a long run would overflow them
            if _SHARED:
                world.dynamodb.delete_table(TableName=world.table)


_SHARED: list[Any] = []
_TABLES = itertools.count(1)


@contextmanager
def shared_aws() -> Iterator[None]:
    """One moto and one DynamoDB client for every world made inside (each world gets a table of its own)."""
    with mock_aws():
        _SHARED.append(boto3.client("dynamodb", region_name="us-east-1"))
        try:
            yield
        finally:
            _SHARED.clear()


def follow_event(obj: ObjectRef, session: int) -> dict[str, Any]:
    """The event a Japan import's follow execution starts with (what the follow function reads), written out."""
    return {
        "objectId": obj.object_id,
        "month": MONTH,
        "coverage": "jp",
        "reportKey": f"reports/{MONTH}/{obj.version_id}.json",
        "session": {"importSessionId": session, "status": "NEW", "polls": 0, "month": MONTH, "objectId": obj.object_id},
    }


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


Runner = Callable[[ProtocolWorld], None]


class Logged(logging.Handler):
    """The import function's log records while inside, at the template's default level (its logger does not
    propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Logged:
        self._level = logger.log_level
        logger.setLevel("INFO")  # the template's LogLevel default, whatever the process was started with
        logging.getLogger(logger.name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(logger.name).removeHandler(self)
        logger.setLevel(self._level)
