"""The import use case killed at every dangerous instant, then retried: nothing lost, nothing doubled.

Real pieces where it matters: the DynamoDB ledger (on moto) with a clock the test moves, and the
CloudBlue client against the CloudBlue simulator. S3 and Step Functions are small fakes.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import pytest
from moto import mock_aws
from pydantic import SecretStr
from soracharge.adapters.cloudblue import CloudBlueClient, OAuth1TwoLegged
from soracharge.adapters.ledger import LEASE_SECONDS, DynamoDbLedger
from soracharge.adapters.storage import StoredObject
from soracharge.errors import ImportInProgressError, ImportResumeError, ImportTimeBudgetError
from soracharge.logic.charges import plan_import
from soracharge.logic.imports import ImportDependencies, additional_id_suffix, import_object
from soracharge.models.imports import ImportReport, ObjectRef
from soracharge.models.mapping import Mapping, parse_mapping
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator, SoracomSimulator

MONTH = "202610"
MAPPING = parse_mapping((Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml").read_text(), "ex")
SMALL_PACKETS = MAPPING.model_copy(update={"packet_size": 5})
CSV = SoracomSimulator(auth_key_id="k", auth_key="s", today=datetime(2026, 11, 22, tzinfo=UTC).date()).csv_bytes(MONTH)


class Killed(BaseException):
    """The Lambda runtime killing the function (timeout, out of memory): no except clause runs for it."""


@dataclass
class FakeStore:
    bucket: str = "data"
    objects: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, body: bytes, version: str, **metadata: str) -> ObjectRef:
        self.objects[(key, version)] = (body, metadata)
        return ObjectRef(bucket=self.bucket, key=key, version_id=version)

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        if (key, version_id or "") not in self.objects:
            return None
        body, metadata = self.objects[(key, version_id or "")]
        return StoredObject(self.bucket, key, version_id, len(body), metadata)

    def open(self, key: str, version_id: str | None = None) -> BinaryIO:
        return io.BytesIO(self.objects[(key, version_id or "")][0])

    def put_json(self, key: str, body: dict[str, Any]) -> StoredObject:
        self.reports[key] = body
        return StoredObject(self.bucket, key, None, 0, {})

    def put_text(self, key: str, text: str, content_type: str) -> StoredObject:
        self.pages[key] = text
        return StoredObject(self.bucket, key, None, len(text), {})

    def get_json(self, key: str) -> dict[str, Any] | None:
        return self.reports.get(key)


@dataclass
class FakeWorkflows:
    started: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        self.started.setdefault(name, payload)
        return name


@dataclass
class FakeNotifier:
    published: list[tuple[str, str]] = field(default_factory=list)

    def publish(self, subject: str, message: str) -> None:
        self.published.append((subject, message))


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class KillingLedger(DynamoDbLedger):
    """A ledger whose process dies right before the ``kill_at``-th call of ``method``."""

    kill: tuple[str, int] | None = None
    calls: dict[str, int]

    def _maybe_die(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.kill == (method, self.calls[method]):
            self.kill = None
            raise Killed(method)

    def record_packet(self, object_id: str, index: int) -> None:
        self._maybe_die("record_packet")
        super().record_packet(object_id, index)

    def set_status(self, object_id: str, status: Any, **fields: str | int) -> None:
        self._maybe_die(f"set_status:{status}")
        super().set_status(object_id, status, **fields)

    #: Runs once, right before the next ``mark_closing``: another invocation's work in between.
    before_closing: Any = None

    def mark_closing(self, object_id: str, session_id: int, lock_key: str, **fields: Any) -> bool:
        self._maybe_die("mark_closing")
        if self.before_closing is not None:
            meanwhile, self.before_closing = self.before_closing, None
            meanwhile()
        return super().mark_closing(object_id, session_id, lock_key, **fields)


@pytest.fixture(scope="module")
def cloudblue() -> Iterator[CloudBlueSimulator]:
    with CloudBlueSimulator() as simulator:
        yield simulator


@dataclass
class World:
    deps: ImportDependencies
    store: FakeStore
    ledger: KillingLedger
    clock: Clock
    cloudblue: CloudBlueSimulator
    workflows: FakeWorkflows
    mapping: list[Mapping]
    notifier: FakeNotifier

    def lapse(self) -> None:
        """Let a dead invocation's lease run out."""
        self.clock.now += LEASE_SECONDS + 1

    def run(self, obj: ObjectRef) -> ImportReport:
        return import_object(obj, self.deps, lease_seconds=900)


@pytest.fixture
def world(cloudblue: CloudBlueSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cloudblue.faults = CloudBlueFaults()
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="ledger",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        clock = Clock()
        ledger = KillingLedger(client, "ledger", clock=clock)
        ledger.calls = {}
        store, workflows, notifier = FakeStore(), FakeWorkflows(), FakeNotifier()
        mapping = [SMALL_PACKETS]
        deps = ImportDependencies(
            store=store,
            ledger=ledger,
            cloudblue=CloudBlueClient(
                endpoint=cloudblue.base_url,
                auth=OAuth1TwoLegged(cloudblue.consumer_key, SecretStr(cloudblue.consumer_secret)),
                resource_id=cloudblue.resource_id,
                max_wait_seconds=0.01,
            ),
            workflows=workflows,
            mapping=lambda coverage: (mapping[0], "mapping.yaml"),
            follow_state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:follow",
            notifier=notifier,
            concurrency=1,
        )
        yield World(deps, store, ledger, clock, cloudblue, workflows, mapping, notifier)


def expected(mapping: Mapping = SMALL_PACKETS, body: bytes = CSV, id_suffix: str = "") -> list[tuple[str, Decimal]]:
    plan = plan_import(io.BytesIO(body), month=MONTH, currency="JPY", mapping=mapping, id_suffix=id_suffix)
    return sorted((c.ext_charge_id or "", c.total_price) for c in plan.charges)


def held(world: World, session_id: int) -> list[tuple[str, Decimal]]:
    return sorted((c["extChargeId"], c["totalPrice"]) for c in world.cloudblue.charges(session_id))


def rated_charges(world: World, sessions: set[int]) -> list[tuple[str, Decimal]]:
    """What CloudBlue will rate of these sessions: only the closed ones."""
    closed = [s for s in sessions if world.cloudblue.session(s).closed_at is not None]
    return sorted(charge for s in closed for charge in held(world, s))


def sessions_of(report: ImportReport) -> set[int]:
    assert report.import_session_id is not None
    return {report.import_session_id, *report.abandoned_sessions}


def test_a_kill_after_cloudblue_took_a_packet_but_before_the_ledger_knew_gives_the_session_up(world):
    obj = world.store.put(f"uploads/{MONTH}/a.csv", CSV, "v1", currency="JPY")
    world.ledger.kill = ("record_packet", 3)  # CloudBlue holds packet 3; the ledger only has it in flight
    with pytest.raises(Killed):
        world.run(obj)
    world.lapse()

    report = world.run(obj)

    (abandoned,) = report.abandoned_sessions
    assert world.cloudblue.session(abandoned).closed_at is None  # never rated
    assert len(world.cloudblue.charges(abandoned)) == 15  # packets 1-3, held but never rated
    assert held(world, report.import_session_id) == expected()
    assert rated_charges(world, sessions_of(report)) == expected()
    assert "packets [3] were being sent when the last attempt stopped" in report.warnings[0]


def test_a_kill_after_every_packet_was_recorded_resumes_in_the_same_session(world):
    obj = world.store.put(f"uploads/{MONTH}/b.csv", CSV, "v1", currency="JPY")
    world.ledger.kill = ("set_status:CLOSED", 1)  # after closeSession and the report, before the ledger says so
    with pytest.raises(Killed):
        world.run(obj)
    world.lapse()

    report = world.run(obj)

    assert report.abandoned_sessions == []
    assert report.status == "CLOSED"
    assert held(world, report.import_session_id) == expected()
    assert world.cloudblue.session(report.import_session_id).closed_at is not None
    assert len(world.workflows.started) == 1


def test_a_session_closed_before_a_kill_is_never_sent_again_even_when_the_plan_changed_meanwhile(world):
    # Given an attempt killed after closeSession (before the ledger knew), then the mapping changed
    obj = world.store.put(f"uploads/{MONTH}/closed.csv", CSV, "v1", currency="JPY")
    world.ledger.kill = ("set_status:CLOSED", 1)
    with pytest.raises(Killed):
        world.run(obj)
    world.lapse()
    before = {s.importSessionId for s in world.cloudblue.sessions()}
    world.mapping[0] = MAPPING.model_copy(update={"packet_size": 7})  # another plan: another fingerprint

    # When the import is retried
    report = world.run(obj)

    # Then the closed session stands, nothing is sent again, and the report says why its sums may differ
    assert {s.importSessionId for s in world.cloudblue.sessions()} == before
    assert report.abandoned_sessions == []
    assert rated_charges(world, {report.import_session_id}) == expected()
    assert "was closed by the last attempt with the packets planned then" in report.warnings[0]


def test_a_plan_that_changed_between_attempts_is_never_mixed_into_one_session(world):
    obj = world.store.put(f"uploads/{MONTH}/c.csv", CSV, "v1", currency="JPY")
    world.ledger.kill = ("record_packet", 2)
    with pytest.raises(Killed):
        world.run(obj)
    world.lapse()
    world.mapping[0] = MAPPING.model_copy(update={"packet_size": 7})  # someone edited the mapping meanwhile

    report = world.run(obj)

    assert len(report.abandoned_sessions) == 1
    assert rated_charges(world, sessions_of(report)) == expected(world.mapping[0])
    assert "not the ones planned" in report.warnings[0]


def test_a_duplicate_event_while_the_import_runs_is_retried_later_not_reported_done(world):
    obj = world.store.put(f"uploads/{MONTH}/d.csv", CSV, "v1", currency="JPY")
    world.ledger.claim(obj.object_id, month=MONTH, lease_seconds=900)  # another invocation holds it
    with pytest.raises(ImportInProgressError, match=r"being imported by another invocation"):
        world.run(obj)


def test_a_second_file_for_the_month_is_held_the_same_bytes_are_a_duplicate_and_additional_is_imported(world):
    first = world.run(world.store.put(f"exports/{MONTH}/fe_1.csv", CSV, "v1", currency="JPY"))
    same = world.run(world.store.put(f"uploads/{MONTH}/again.csv", CSV, "v1", currency="JPY"))
    changed_csv = CSV.replace(b"\r\n", b"\n")  # the same rows, other bytes
    other = world.run(world.store.put(f"uploads/{MONTH}/other.csv", changed_csv, "v1", currency="JPY"))
    extra = world.run(
        world.store.put(f"uploads/{MONTH}/extra.csv", changed_csv, "v2", currency="JPY", **{"import": "additional"})
    )

    assert first.status == "CLOSED"
    assert (same.status, same.duplicate_of) == ("DUPLICATE", first.object.object_id)
    assert (other.status, other.duplicate_of) == ("HELD", first.object.object_id)
    assert "would bill the month twice" in other.summary
    assert extra.status == "CLOSED"
    assert len(world.cloudblue.sessions()) >= 2
    assert same.import_session_id is other.import_session_id is None


def stopped_by_cloudblue(world: World, obj: ObjectRef) -> None:
    """An import that took its month and opened a session, then stopped: CloudBlue refused every packet."""
    world.cloudblue.faults = CloudBlueFaults(server_error_next=100, only_operation="importCharges")
    try:
        with pytest.raises(Exception, match=r"CloudBlue answered HTTP 500"):
            world.run(obj)
    finally:
        world.cloudblue.faults = CloudBlueFaults()


def test_a_stuck_import_is_taken_over_by_a_fixed_file_and_its_late_retry_stops(world, cloudblue):
    # Given the first file's import stopped for good (CloudBlue refused every packet) with its lease lapsed
    before = {s.importSessionId for s in cloudblue.sessions()}
    stuck = world.store.put(f"uploads/{MONTH}/first.csv", CSV, "v1", currency="JPY")
    stopped_by_cloudblue(world, stuck)
    world.lapse()

    # When a fixed file for the month is uploaded, it takes the month over
    fixed = world.run(world.store.put(f"uploads/{MONTH}/fixed.csv", CSV.replace(b"\r\n", b"\n"), "v1", currency="JPY"))
    assert fixed.status == "CLOSED"

    # Then the stuck import's late retry stops instead of sending or closing its session
    world.lapse()
    late = world.run(stuck)
    assert late.status == "SUPERSEDED"
    assert late.duplicate_of == fixed.object.object_id
    opened = {s.importSessionId for s in cloudblue.sessions()} - before
    assert rated_charges(world, opened) == expected()  # exactly once, from the fixed file's session
    assert world.cloudblue.session(fixed.import_session_id).closed_at is not None


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"currency": "jpy!"}, "currency must be JPY, USD or EUR"),
        ({"currency": "JPY", "bill-amount": "lots"}, "the bill amount is not a number"),
        ({"currency": "JPY", "bill-amount": "100", "coupon-amount": "Infinity"}, "the coupon amount is not a number"),
        ({"currency": "JPY", "coupon-amount": "5"}, "a coupon amount needs a bill-amount"),
    ],
)
def test_bad_metadata_is_a_rejected_report_before_anything_is_sent(world, metadata, message):
    sessions = len(world.cloudblue.sessions())
    report = world.run(world.store.put(f"uploads/{MONTH}/meta.csv", CSV, "v1", **metadata))
    assert report.status == "REJECTED"
    assert message in report.problems[0].message
    assert len(world.cloudblue.sessions()) == sessions


def test_running_short_of_time_stops_cleanly_and_the_retry_resumes(world):
    obj = world.store.put(f"uploads/{MONTH}/e.csv", CSV, "v1", currency="JPY")
    budget = iter([900.0, 900.0, 30.0])
    world.deps.remaining_seconds = lambda: next(budget, 30.0)
    with pytest.raises(ImportTimeBudgetError):
        world.run(obj)
    world.deps.remaining_seconds = lambda: 900.0

    report = world.run(obj)  # released at once: no need to wait for the lease

    assert report.abandoned_sessions == []
    assert report.counts.packets_already_accepted == 2
    assert held(world, report.import_session_id) == expected()


def test_a_kill_after_the_session_closed_then_a_copy_onto_itself_never_bills_the_month_twice(world, cloudblue):
    # Given the import died after CloudBlue closed its session, before the ledger said so (found by the chaos runs)
    before = {s.importSessionId for s in cloudblue.sessions()}
    old = world.store.put(f"uploads/{MONTH}/closed.csv", CSV, "v1", currency="JPY")
    world.ledger.kill = ("set_status:CLOSED", 1)
    with pytest.raises(Killed):
        world.run(old)
    world.lapse()

    # When a person re-delivers it by copying the object onto itself (a new version, the same bytes)
    copy = world.run(world.store.put(f"uploads/{MONTH}/closed.csv", CSV, "v2", currency="JPY"))

    # Then the copy is a duplicate of the month already rated, and the old version's retry finishes it
    assert copy.status == "DUPLICATE"
    assert copy.duplicate_of == old.object_id
    finished = world.run(old)
    assert finished.status == "CLOSED"
    opened = {s.importSessionId for s in cloudblue.sessions()} - before
    assert rated_charges(world, opened) == expected()


class AtomicCalls:
    """A boto3 client whose calls are atomic, as DynamoDB's are (moto's in-memory tables are not
    thread-safe: a read can see an item half written). Between calls, threads interleave freely."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def atomic(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return atomic


def test_concurrent_deliveries_of_the_same_and_of_other_objects_import_each_exactly_once(world, cloudblue):
    # Given eight invocations for one object version and one each for two other files, all at once
    world.ledger._db = AtomicCalls(world.ledger._db)
    before = {s.importSessionId for s in cloudblue.sessions()}
    same = world.store.put(f"uploads/{MONTH}/burst.csv", CSV, "v1", currency="JPY")
    others = [
        world.store.put(f"uploads/{MONTH}/extra-{n}.csv", CSV.replace(b"\r\n", b"\n" * (n + 1)), "v1",
                        currency="JPY", **{"import": "additional"})
        for n in range(2)
    ]  # fmt: skip
    outcomes: list[object] = []
    start = threading.Barrier(10)

    def deliver(obj: ObjectRef) -> None:
        start.wait()
        try:
            outcomes.append(world.run(obj))
        except Exception as exc:  # noqa: BLE001 - every outcome is checked below
            outcomes.append(exc)

    threads = [threading.Thread(target=deliver, args=(obj,)) for obj in [same] * 8 + others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # Then each file was imported once: one closed session per file, each holding the file's charges once
    reports = [o for o in outcomes if isinstance(o, ImportReport)]
    assert len(outcomes) == 10
    others_failed = [o for o in outcomes if not isinstance(o, ImportReport | ImportInProgressError)]
    assert others_failed == []  # the rest were turned away, to be retried by Lambda
    assert {r.object.object_id for r in reports} == {same.object_id, *(o.object_id for o in others)}
    opened = {s.importSessionId for s in cloudblue.sessions()} - before
    closed = [s for s in opened if cloudblue.session(s).closed_at is not None]
    assert len(closed) == 3
    for report in reports:
        session = report.import_session_id
        assert session is not None
        assert session in closed
        body = world.store.objects[(report.object.key, "v1")][0]
        # The month's first file keeps the plain ids; each additional file's ids carry its own suffix.
        suffix = additional_id_suffix(hashlib.sha256(body).hexdigest(), "v1") if "extra" in report.object.key else ""
        assert held(world, session) == expected(body=body, id_suffix=suffix)
        if suffix:
            assert all(charge_id.endswith(f"-{suffix}") for charge_id, _ in held(world, session))


def test_a_file_cloudblue_failed_to_rate_is_imported_again_as_additional_with_new_ids(world, cloudblue):
    # Given an additional file imported, whose session CloudBlue then failed to rate
    first = world.store.put(f"uploads/{MONTH}/fix.csv", CSV, "v1", currency="JPY", **{"import": "additional"})
    failed = world.run(first)
    assert failed.status == "CLOSED"
    assert failed.import_session_id is not None
    world.ledger.set_status(first.object_id, "FAILED_PROCESSED")  # what FinishImport records

    # When the runbook's fix is followed: the same bytes uploaded again as an additional file
    again = world.store.put(f"uploads/{MONTH}/fix-again.csv", CSV, "v2", currency="JPY", **{"import": "additional"})
    report = world.run(again)

    # Then it takes the lock over and is imported, with ids of its own (not the failed session's)
    assert report.status == "CLOSED", report.summary
    assert report.import_session_id not in (None, failed.import_session_id)
    assert report.import_session_id is not None
    new_ids = {charge_id for charge_id, _ in held(world, report.import_session_id)}
    assert not new_ids & {charge_id for charge_id, _ in held(world, failed.import_session_id)}
    assert sorted(p for _, p in held(world, report.import_session_id)) == sorted(p for _, p in expected())


def test_the_month_s_first_file_failed_by_cloudblue_holds_a_plain_reupload_and_says_how_to_import_it(world):
    first = world.store.put(f"uploads/{MONTH}/bill.csv", CSV, "v1", currency="JPY")
    assert world.run(first).status == "CLOSED"
    world.ledger.set_status(first.object_id, "FAILED_PROCESSED")

    report = world.run(world.store.put(f"uploads/{MONTH}/bill-again.csv", CSV, "v2", currency="JPY"))

    assert report.status == "HELD"
    assert "FAILED_PROCESSED" in report.summary
    assert "import=additional" in report.summary
    (subject, _), *_ = world.notifier.published[-1:]
    assert "held" in subject

    # When the runbook is followed, the additional file is imported; a later plain file is still held
    again = world.run(world.store.put(f"uploads/{MONTH}/bill-again.csv", CSV, "v3", **{"import": "additional"}))
    assert again.status == "CLOSED", again.summary
    later = world.run(world.store.put(f"uploads/{MONTH}/later.csv", CSV.replace(b"\r\n", b"\n"), "v4"))
    assert (later.status, later.duplicate_of) == ("HELD", first.object_id)
    assert "unless the month was imported again since" in later.summary


# -- two coverages in one stack: two bills a month, each imported once in its own currency ---------

GLOBAL_CSV = SoracomSimulator(
    coverage="g", auth_key_id="k", auth_key="s", today=datetime(2026, 11, 22, tzinfo=UTC).date()
).csv_bytes(MONTH)
GLOBAL_MAPPING = parse_mapping(
    (Path(__file__).resolve().parents[2] / "examples" / "mapping.global.example.yaml").read_text(), "g"
).model_copy(update={"packet_size": 5})


@pytest.fixture
def both(world: World) -> World:
    """The world as a stack exporting jp and g, with a mapping each."""
    mappings = {"jp": SMALL_PACKETS, "g": GLOBAL_MAPPING}
    world.deps.coverages = ("jp", "g")
    world.deps.mapping = lambda coverage: (mappings[coverage], f"mapping.{coverage}.yaml")
    return world


def test_both_bills_of_a_month_are_imported_once_each_in_their_own_currency(both):
    japan = both.run(both.store.put(f"exports/{MONTH}/jp/fe_1.csv", CSV, "v1", currency="JPY", coverage="jp"))
    global_ = both.run(both.store.put(f"exports/{MONTH}/g/fe_2.csv", GLOBAL_CSV, "v1", currency="USD", coverage="g"))

    assert (japan.status, japan.coverage, japan.currency) == ("CLOSED", "jp", "JPY")
    assert (global_.status, global_.coverage, global_.currency) == ("CLOSED", "g", "USD")
    assert japan.import_session_id != global_.import_session_id
    assert rated_charges(both, sessions_of(japan)) == expected()
    assert rated_charges(both, sessions_of(global_)) == expected(GLOBAL_MAPPING, GLOBAL_CSV, id_suffix="g")
    global_charges = both.cloudblue.charges(global_.import_session_id)
    assert {c["currencyCode"] for c in global_charges} == {"USD"}
    assert all(c["extChargeId"].endswith("-g") for c in global_charges)
    assert not any(c["extChargeId"].endswith("-g") for c in both.cloudblue.charges(japan.import_session_id))
    assert "Global coverage" in global_.summary
    # Each month's lock is its coverage's.
    assert both.ledger.owner(f"lock#{MONTH}#jp").object_id == japan.object.object_id
    assert both.ledger.owner(f"lock#{MONTH}#g").object_id == global_.object.object_id
    assert both.ledger.owner(f"lock#{MONTH}") is None


def test_a_duplicate_event_and_a_second_file_of_each_coverage_send_nothing_again(both):
    japan_ref = both.store.put(f"exports/{MONTH}/jp/fe_1.csv", CSV, "v1", currency="JPY", coverage="jp")
    # (S3 version ids are unique in a bucket; the reports are keyed by them.)
    global_ref = both.store.put(f"exports/{MONTH}/g/fe_2.csv", GLOBAL_CSV, "v2", currency="USD", coverage="g")
    japan, global_ = both.run(japan_ref), both.run(global_ref)
    sessions = len(both.cloudblue.sessions())

    assert both.run(japan_ref).to_event() == japan.to_event()  # the same S3 event again: the same report
    assert both.run(global_ref).to_event() == global_.to_event()
    again = both.run(both.store.put(f"uploads/{MONTH}/g/again.csv", GLOBAL_CSV, "v3"))
    other = both.run(
        both.store.put(f"uploads/{MONTH}/other.csv", GLOBAL_CSV.replace(b"\r\n", b"\n"), "v4", currency="USD")
    )
    assert (again.status, again.duplicate_of, again.coverage) == ("DUPLICATE", global_.object.object_id, "g")
    assert (other.status, other.duplicate_of, other.coverage) == ("HELD", global_.object.object_id, "g")
    assert len(both.cloudblue.sessions()) == sessions


def as_before_coverages(world: World, object_id: str) -> None:
    """The ledger as the code before coverages left a month: its lock is ``lock#<month>``, and the
    owner's entry has that lock and no pinned coverage or currency, and no ``bytes#`` record exists."""
    table = world.ledger._db
    for item in table.scan(TableName="ledger")["Items"]:
        if item["pk"]["S"].startswith("bytes#"):
            table.delete_item(TableName="ledger", Key={"pk": item["pk"]})
    item = table.get_item(TableName="ledger", Key={"pk": {"S": f"lock#{MONTH}#jp"}})["Item"]
    table.put_item(TableName="ledger", Item={**item, "pk": {"S": f"lock#{MONTH}"}})
    table.delete_item(TableName="ledger", Key={"pk": {"S": f"lock#{MONTH}#jp"}})
    table.update_item(
        TableName="ledger",
        Key={"pk": {"S": f"object#{object_id}"}},
        UpdateExpression="SET lock_key = :legacy REMOVE coverage, currency",
        ExpressionAttributeValues={":legacy": {"S": f"lock#{MONTH}"}},
    )


def test_a_month_imported_before_coverages_keeps_its_lock_for_its_coverage(world):
    """A single-coverage (jp) stack updated to jp,g: its lock#<month> still holds Japan's bill, not Global's."""
    first = world.run(world.store.put(f"exports/{MONTH}/fe_1.csv", CSV, "v1", currency="JPY"))
    assert first.status == "CLOSED"
    # As the code before coverages left it: the month's lock is lock#<month>, and the owner's ledger says so.
    as_before_coverages(world, first.object.object_id)
    mappings = {"jp": SMALL_PACKETS, "g": GLOBAL_MAPPING}
    world.deps.coverages = ("jp", "g")
    world.deps.mapping = lambda coverage: (mappings[coverage], f"mapping.{coverage}.yaml")
    sessions = len(world.cloudblue.sessions())

    same = world.run(world.store.put(f"exports/{MONTH}/jp/fe_3.csv", CSV, "v1", currency="JPY", coverage="jp"))
    other = world.run(world.store.put(f"uploads/{MONTH}/jp/fixed.csv", CSV.replace(b"\r\n", b"\n"), "v1"))
    assert (same.status, same.duplicate_of) == ("DUPLICATE", first.object.object_id)
    assert (other.status, other.duplicate_of) == ("HELD", first.object.object_id)
    assert len(world.cloudblue.sessions()) == sessions
    # The old month's bytes uploaded as Global's bill by mistake: a DUPLICATE of it, never imported twice
    one = SMALL_PACKETS.model_copy(update={"currency": None})
    world.deps.mapping = lambda coverage: (one, "mapping.yaml")
    cross = world.run(world.store.put(f"uploads/{MONTH}/g/copy.csv", CSV, "v5", currency="USD"))
    assert (cross.status, cross.duplicate_of, cross.coverage) == ("DUPLICATE", first.object.object_id, "g")
    assert "as the Japan coverage bill" in cross.summary
    assert len(world.cloudblue.sessions()) == sessions
    # It keeps the Global month's lock it took: Global's own bill is then held (a person imports it on purpose)
    world.deps.mapping = lambda coverage: (mappings[coverage], f"mapping.{coverage}.yaml")
    global_ = world.run(world.store.put(f"exports/{MONTH}/g/fe_2.csv", GLOBAL_CSV, "v6", currency="USD", coverage="g"))
    assert (global_.status, global_.duplicate_of) == ("HELD", cross.object.object_id)
    assert "is held by" in global_.summary
    assert "a DUPLICATE of a file imported as another coverage's bill" in global_.summary
    again = world.run(
        world.store.put(f"uploads/{MONTH}/g/fe_2.csv", GLOBAL_CSV, "v7", currency="USD", **{"import": "additional"})
    )
    assert (again.status, again.coverage) == ("CLOSED", "g"), again.summary
    assert len(world.cloudblue.sessions()) == sessions + 1  # Global's own bill only


@pytest.mark.parametrize(
    ("key", "metadata", "message"),
    [
        (
            f"uploads/{MONTH}/bill.csv",
            {},
            "this stack imports Japan coverage and Global coverage bills and the file names neither: upload it to "
            "uploads/<yyyyMM>/jp/ or uploads/<yyyyMM>/g/",
        ),
        (
            f"uploads/{MONTH}/jp/bill.csv",
            {"currency": "USD"},
            "the key's folder says Japan coverage, the metadata currency USD says Global coverage",
        ),
        (f"uploads/{MONTH}/bill.csv", {"coverage": "eu"}, "coverage must be jp or g"),
    ],
)
def test_a_file_whose_coverage_cannot_be_told_is_rejected_and_says_how_to_name_it(both, key, metadata, message):
    report = both.run(both.store.put(key, GLOBAL_CSV, "v1", **metadata))
    assert report.status == "REJECTED"
    assert message in report.problems[0].message
    assert report.import_session_id is None
    (subject, text) = both.notifier.published[-1]
    assert subject.startswith(f"soracharge {MONTH}")
    assert "file rejected" in subject
    assert message in text


def test_an_upload_is_told_apart_by_its_folder_or_its_currency_and_takes_the_coverage_currency(both):
    by_folder = both.run(both.store.put(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, "v1"))
    assert (by_folder.status, by_folder.coverage, by_folder.currency) == ("CLOSED", "g", "USD")
    by_currency = both.run(both.store.put(f"uploads/{MONTH}/bill.csv", CSV, "v1", currency="JPY"))
    assert (by_currency.status, by_currency.coverage, by_currency.currency) == ("CLOSED", "jp", "JPY")


def test_a_mapping_currency_of_the_other_coverage_rejects_the_upload_by_name(both):
    """One Japan mapping (currency: JPY) serving both: a Global upload without its currency is not made JPY."""
    both.deps.mapping = lambda coverage: (SMALL_PACKETS, "mapping.yaml")
    report = both.run(both.store.put(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, "v1"))
    assert report.status == "REJECTED"
    assert "the mapping's currency JPY is not Global coverage's (USD, EUR)" in report.problems[0].message


def closed_sessions(world: World, since: set[int]) -> list[int]:
    """The sessions opened since ``since`` (the ids there were before) that were closed, so rated."""
    opened = [s.importSessionId for s in world.cloudblue.sessions() if s.importSessionId not in since]
    return [session for session in opened if world.cloudblue.session(session).closed_at is not None]


def session_ids(world: World) -> set[int]:
    return {s.importSessionId for s in world.cloudblue.sessions()}


def test_a_retry_imports_the_file_as_its_first_attempt_settled_after_the_stack_became_jp_and_g(world, cloudblue):
    # Given a jp stack: an upload with no metadata (Japan's, JPY) whose import failed after it took the month
    obj = world.store.put(f"uploads/{MONTH}/bill.csv", CSV, "v1")
    stopped_by_cloudblue(world, obj)
    world.lapse()
    # When the stack is updated to jp,g (where such a file names no coverage) and the event is re-delivered
    world.deps.coverages = ("jp", "g")
    retry = world.run(obj)
    # Then it is imported as it was started: Japan's, in JPY, once
    assert (retry.status, retry.coverage, retry.currency) == ("CLOSED", "jp", "JPY"), retry.summary
    assert rated_charges(world, sessions_of(retry)) == expected()
    assert world.ledger.owner(f"lock#{MONTH}#jp").object_id == obj.object_id


def test_a_session_closed_before_the_stack_became_jp_and_g_is_recorded_closed_not_rejected(world):
    obj = world.store.put(f"uploads/{MONTH}/bill.csv", CSV, "v1")
    world.ledger.kill = ("set_status:CLOSED", 1)  # after closeSession and the report, before the ledger says so
    with pytest.raises(Killed):
        world.run(obj)
    world.lapse()
    world.deps.coverages = ("jp", "g")

    retry = world.run(obj)

    assert retry.status == "CLOSED", retry.summary
    assert world.store.reports[f"reports/{MONTH}/v1.json"]["status"] == "CLOSED"
    assert len(world.workflows.started) == 1  # its rating is followed
    assert world.notifier.published == []


def test_the_same_csv_uploaded_as_both_coverages_bills_is_imported_once_and_alerted(both):
    before = session_ids(both)
    # One mapping for both coverages, with no currency (as the README allows)
    one = GLOBAL_MAPPING.model_copy(update={"currency": None})
    both.deps.mapping = lambda coverage: (one, "mapping.yaml")
    wrong = both.run(both.store.put(f"uploads/{MONTH}/jp/bill.csv", GLOBAL_CSV, "v1"))
    right = both.run(both.store.put(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, "v2", currency="USD"))

    assert (wrong.status, wrong.coverage) == ("CLOSED", "jp")
    assert (right.status, right.duplicate_of, right.import_session_id) == ("DUPLICATE", wrong.object.object_id, None)
    assert "as the Japan coverage bill" in right.summary
    assert closed_sessions(both, before) == [wrong.import_session_id]
    assert session_ids(both) - before == sessions_of(wrong)  # told before a session was opened: nothing sent
    (subject, text) = both.notifier.published[-1]
    assert subject == f"soracharge {MONTH} (Global coverage): the same file was imported as the other coverage's bill"
    assert "undo them with a correction" in text
    assert "Runbook action: import-differences" in text


def test_the_same_csv_closed_under_the_other_coverage_while_it_was_sent_is_never_closed_twice(both):
    """Both files pass every check at the same time; the second to mark its session closing loses."""
    before = session_ids(both)
    one = GLOBAL_MAPPING.model_copy(update={"currency": None})
    both.deps.mapping = lambda coverage: (one, "mapping.yaml")
    first = both.store.put(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, "v1", currency="USD")
    second = both.store.put(f"uploads/{MONTH}/jp/bill.csv", GLOBAL_CSV, "v2")
    other: list[ImportReport] = []
    both.ledger.before_closing = lambda: other.append(both.run(first))  # the Global one closes in between

    report = both.run(second)

    (global_,) = other
    assert global_.status == "CLOSED"
    assert (report.status, report.duplicate_of) == ("DUPLICATE", global_.object.object_id)
    (left_open,) = report.abandoned_sessions
    assert f"session {left_open} was given up and left open, never closed" in report.summary
    assert closed_sessions(both, before) == [global_.import_session_id]
    assert rated_charges(both, {left_open, *sessions_of(global_)}) == expected(one, GLOBAL_CSV, id_suffix="g")
    # It keeps the Japan lock it took fresh (as when the two come one after the other): Japan's bill is
    # held, and imported once a person says so, never beside the runbook's re-import
    both.deps.mapping = lambda coverage: ((SMALL_PACKETS if coverage == "jp" else one), "mapping.yaml")
    japan = both.run(both.store.put(f"uploads/{MONTH}/jp/japan.csv", CSV, "v3"))
    assert (japan.status, japan.duplicate_of) == ("HELD", report.object.object_id)
    on_purpose = both.run(both.store.put(f"uploads/{MONTH}/jp/japan.csv", CSV, "v4", **{"import": "additional"}))
    assert (on_purpose.status, on_purpose.currency) == ("CLOSED", "JPY"), on_purpose.summary


def test_a_file_rejected_on_retry_gives_its_session_and_the_month_up(world, cloudblue):
    obj = world.store.put(f"uploads/{MONTH}/bill.csv", CSV, "v1", currency="JPY")
    stopped_by_cloudblue(world, obj)
    world.lapse()
    # The mapping is cut down meanwhile: the retry finds unmapped items
    world.mapping[0] = SMALL_PACKETS.model_copy(update={"items": SMALL_PACKETS.items[:1]})
    rejected = world.run(obj)
    assert rejected.status == "REJECTED"
    (given_up,) = rejected.abandoned_sessions
    assert f"session {given_up} was given up and left open, never closed" in rejected.summary

    # A fixed file (other bytes) is imported: the month's lock is not kept by a file that imported nothing
    world.mapping[0] = SMALL_PACKETS
    fixed = world.run(world.store.put(f"uploads/{MONTH}/fixed.csv", CSV.replace(b"\r\n", b"\n"), "v2"))
    assert fixed.status == "CLOSED", fixed.summary
    assert rated_charges(world, {given_up, *sessions_of(fixed)}) == expected()


def test_a_retry_that_reads_problems_in_a_file_whose_session_was_closed_fails_by_name_and_sends_nothing(world):
    before = session_ids(world)
    obj = world.store.put(f"uploads/{MONTH}/bill.csv", CSV, "v1", currency="JPY")
    world.ledger.kill = ("set_status:CLOSED", 1)
    with pytest.raises(Killed):
        world.run(obj)
    world.lapse()
    world.mapping[0] = SMALL_PACKETS.model_copy(update={"items": SMALL_PACKETS.items[:1]})
    charges = sum(len(world.cloudblue.charges(s)) for s in closed_sessions(world, before))

    with pytest.raises(ImportResumeError, match=r"session \d+ was closed by the last attempt .* Put back the mapping"):
        world.run(obj)

    assert sum(len(world.cloudblue.charges(s)) for s in closed_sessions(world, before)) == charges
    world.mapping[0] = SMALL_PACKETS
    world.lapse()
    assert world.run(obj).status == "CLOSED"


def test_a_lock_from_before_coverages_whose_owner_cannot_be_told_is_not_taken_over_by_the_other_coverage(
    world, cloudblue
):
    # Given a month locked by the code before coverages, by an upload that names nothing, stuck importing
    stuck = world.store.put(f"uploads/{MONTH}/first.csv", CSV, "v1")
    stopped_by_cloudblue(world, stuck)
    as_before_coverages(world, stuck.object_id)
    world.lapse()
    world.deps.coverages = ("jp", "g")
    world.deps.mapping = lambda coverage: ((SMALL_PACKETS if coverage == "jp" else GLOBAL_MAPPING), coverage)

    # When a Global file of the month comes, it does not take the stuck month over
    global_ = world.store.put(f"uploads/{MONTH}/g/global.csv", GLOBAL_CSV, "v2", currency="USD")
    with pytest.raises(ImportInProgressError, match=r"its coverage cannot be told, so its month is not taken over"):
        world.run(global_)

    # The stuck one's own retry cannot tell its coverage on a stack of both either: it gives its
    # session up (never rated) and is rejected, with how to name its coverage
    world.lapse()
    late = world.run(stuck)
    assert late.status == "REJECTED"
    assert "upload it to uploads/<yyyyMM>/jp/ or uploads/<yyyyMM>/g/" in late.problems[0].message
    (given_up,) = late.abandoned_sessions
    assert world.cloudblue.session(given_up).closed_at is None

    # Then, as the runbook says: Japan's uploaded again to its folder, and Global's event re-delivered
    japan = world.run(world.store.put(f"uploads/{MONTH}/jp/first.csv", CSV, "v3"))
    again = world.run(global_)
    assert (japan.status, japan.currency, again.status, again.currency) == ("CLOSED", "JPY", "CLOSED", "USD")
    assert rated_charges(world, sessions_of(japan)) == expected()
    assert rated_charges(world, sessions_of(again)) == expected(GLOBAL_MAPPING, GLOBAL_CSV, id_suffix="g")


def test_a_file_of_a_coverage_the_stack_does_not_import_is_rejected_by_name(world):
    report = world.run(world.store.put(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, "v1", currency="USD"))
    assert report.status == "REJECTED"
    assert (
        "the key's folder says Global coverage, and this stack imports Japan coverage bills only "
        "(SoracomCoverageType jp): import it in a stack of g, or add g to SoracomCoverageType"
    ) in report.problems[0].message
    assert report.import_session_id is None


def closing_marked_then_close_failed(world: World, cloudblue: CloudBlueSimulator) -> tuple[ObjectRef, int]:
    """An attempt that sent every packet and marked its session closing, whose closeSession never got through."""
    obj = world.store.put(f"uploads/{MONTH}/bill.csv", CSV, "v1", currency="JPY")
    cloudblue.faults = CloudBlueFaults(server_error_next=100, only_operation="closeSession")
    with pytest.raises(Exception, match=r"CloudBlue answered HTTP 500"):
        world.run(obj)
    cloudblue.faults = CloudBlueFaults()
    world.lapse()
    entry = world.ledger.get(obj.object_id)
    assert entry is not None
    assert entry.closing_session is not None
    assert entry.closing_session == entry.session_id
    return obj, entry.closing_session


def test_a_session_marked_closing_is_closed_by_the_retry_as_it_was_sent_even_when_the_plan_changed(world, cloudblue):
    obj, marked = closing_marked_then_close_failed(world, cloudblue)
    world.mapping[0] = SMALL_PACKETS.model_copy(update={"packet_size": 7})  # another plan, another fingerprint

    report = world.run(obj)

    # The session its last attempt marked closing is closed, never given up and sent again elsewhere
    assert (report.status, report.import_session_id, report.abandoned_sessions) == ("CLOSED", marked, [])
    assert "it was closed as it was sent" in report.warnings[0]
    assert rated_charges(world, {marked}) == expected()


def test_a_retry_that_reads_problems_in_a_file_whose_session_was_marked_closing_gives_nothing_up(world, cloudblue):
    obj, marked = closing_marked_then_close_failed(world, cloudblue)
    world.mapping[0] = SMALL_PACKETS.model_copy(update={"items": SMALL_PACKETS.items[:1]})

    with pytest.raises(ImportResumeError, match=rf"session {marked} was closed by the last attempt \(it is closed now"):
        world.run(obj)

    # Closed as it was sent (every packet, the plan of its last attempt), never given up
    entry = world.ledger.get(obj.object_id)
    assert (entry.status, entry.session_id, entry.closing_session, entry.abandoned_sessions) == (
        "IMPORTING",
        marked,
        marked,
        (),
    )
    assert rated_charges(world, {marked}) == expected()
    # A fixed file is held (the month is imported); the file's own retry, on the mapping put back, records it
    world.mapping[0] = SMALL_PACKETS
    fixed = world.run(world.store.put(f"uploads/{MONTH}/fixed.csv", CSV.replace(b"\r\n", b"\n"), "v2"))
    assert fixed.status == "HELD"
    world.lapse()
    assert world.run(obj).status == "CLOSED"


def test_a_misfiled_copy_of_the_other_coverage_s_bill_never_takes_a_stuck_month_over(both, cloudblue):
    one = GLOBAL_MAPPING.model_copy(update={"currency": None, "items": GLOBAL_MAPPING.items + SMALL_PACKETS.items})
    both.deps.mapping = lambda coverage: (one, "mapping.yaml")
    # Given Global's bill imported, and Japan's export stuck (CloudBlue refused its packets, lease lapsed)
    global_ = both.run(both.store.put(f"exports/{MONTH}/g/fe_1.csv", GLOBAL_CSV, "v1", currency="USD", coverage="g"))
    assert global_.status == "CLOSED"
    japan = both.store.put(f"exports/{MONTH}/jp/fe_2.csv", CSV, "v2", currency="JPY", coverage="jp")
    stopped_by_cloudblue(both, japan)
    both.lapse()

    # When a copy of Global's CSV is uploaded to Japan's folder by mistake
    copy = both.run(both.store.put(f"uploads/{MONTH}/jp/copy.csv", GLOBAL_CSV, "v3"))

    # Then it is a DUPLICATE that took nothing over, and Japan's own retry imports Japan's bill
    assert (copy.status, copy.duplicate_of) == ("DUPLICATE", global_.object.object_id)
    assert both.ledger.owner(f"lock#{MONTH}#jp").object_id == japan.object_id
    retry = both.run(japan)
    assert (retry.status, retry.currency) == ("CLOSED", "JPY"), retry.summary


def test_a_later_file_of_a_month_held_by_a_duplicate_is_alerted_with_what_to_look_at_first(both):
    one = GLOBAL_MAPPING.model_copy(update={"currency": None, "items": GLOBAL_MAPPING.items + SMALL_PACKETS.items})
    both.deps.mapping = lambda coverage: (one, "mapping.yaml")
    wrong = both.run(both.store.put(f"uploads/{MONTH}/g/bill.csv", CSV, "v1", currency="USD"))  # Japan's, as Global
    duplicate = both.run(both.store.put(f"exports/{MONTH}/jp/fe_1.csv", CSV, "v2", currency="JPY", coverage="jp"))
    assert (wrong.status, duplicate.status) == ("CLOSED", "DUPLICATE")

    later = both.run(both.store.put(f"uploads/{MONTH}/jp/later.csv", CSV.replace(b"\r\n", b"\n"), "v3"))

    assert (later.status, later.duplicate_of) == ("HELD", duplicate.object.object_id)
    (subject, text) = both.notifier.published[-1]
    assert subject == f"soracharge {MONTH} (Japan coverage): file held, the month's lock is a duplicate's"
    assert "Look at the month's reports first" in text
    assert text.rstrip().endswith("Runbook action: nothing")


def test_a_misfiled_copy_that_took_a_stuck_month_over_before_the_other_bill_closed_hands_it_back(both, cloudblue):
    one = GLOBAL_MAPPING.model_copy(update={"currency": None, "items": GLOBAL_MAPPING.items + SMALL_PACKETS.items})
    both.deps.mapping = lambda coverage: (one, "mapping.yaml")
    # Given Japan's export stuck, and a copy of Global's CSV in Japan's folder that takes its month over
    # (Global's own bill not imported yet), then stops before closing
    japan = both.store.put(f"exports/{MONTH}/jp/fe_2.csv", CSV, "v2", currency="JPY", coverage="jp")
    cloudblue.faults = CloudBlueFaults(server_error_next=100, only_operation="importCharges")
    with pytest.raises(Exception, match=r"CloudBlue answered HTTP 500"):
        both.run(japan)
    both.lapse()
    copy = both.store.put(f"uploads/{MONTH}/jp/copy.csv", GLOBAL_CSV, "v3")
    with pytest.raises(Exception, match=r"CloudBlue answered HTTP 500"):
        both.run(copy)
    cloudblue.faults = CloudBlueFaults()
    assert both.ledger.owner(f"lock#{MONTH}#jp").object_id == copy.object_id
    # When Global's bill is imported, the copy's retry is a DUPLICATE and gives Japan's month back
    global_ = both.run(both.store.put(f"exports/{MONTH}/g/fe_1.csv", GLOBAL_CSV, "v1", currency="USD", coverage="g"))
    assert global_.status == "CLOSED"
    both.lapse()
    again = both.run(copy)
    assert again.status == "DUPLICATE"
    assert both.ledger.owner(f"lock#{MONTH}#jp").object_id == japan.object_id
    # And Japan's own retry imports Japan's bill, once
    retry = both.run(japan)
    assert (retry.status, retry.currency) == ("CLOSED", "JPY"), retry.summary
    assert rated_charges(both, sessions_of(retry)) == expected()
