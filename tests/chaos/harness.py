"""The chaos harness: monthly cycles end to end (export state machine -> S3 -> import -> session followed)
under moto with the Soracom and CloudBlue simulators, with random faults drawn from a seed.

The promise checked (issue 4): whatever fails and however often a month is re-run, each charge reaches
CloudBlue exactly once, or the run stops with a clear reason and can be re-run safely. For every cycle:

- *expected* is what :func:`soracharge.logic.charges.plan_import` makes of the month's CSV bytes with the
  mapping in use: ``{extChargeId: totalPrice}``;
- *held* is every charge in the CloudBlue sessions opened during the cycle that were **closed** and did not
  end ``FAILED_PROCESSED``: a session never closed is never rated (the import gives such sessions up on
  purpose), and a session CloudBlue failed to rate bills nothing;
- *against the CSV*: held is also compared with what ``tests/reference.py`` works out from the CSV bytes and the
  mapping on its own (the standard library's csv and Decimal, no code of the import): Σ totalPrice, each
  subscription, resource and SIM or device's sum, each shared pool;
- the cycle is good when held equals expected exactly (none lost, none doubled, sums equal, nothing against the
  CSV), either after
  the first run or after the runbook was followed: after each run the harness reads the alerts it caused
  (the alerts topic, as the people subscribed read it) and performs the action each one names (its
  ``Runbook action:`` line) exactly as it says (``tests/chaos/runbook.py``), with the faults gone; a run
  that failed without an alert naming an action failed *without a reason*, a defect.

Faults are counted twice: armed (drawn for the cycle) and fired (the simulators' ``fired`` counters, the
kill that happened, the event that was delivered again): a fault armed for a stage the run never reached
did not fire.

How each fault is injected (names are the keys of :data:`FAULTS`):

- ``soracom.*`` and ``cloudblue.*``: the simulators' own fault switches (``SoracomFaults``,
  ``CloudBlueFaults``, ``expire_tokens``). Faults that should last a while (slow answers, truncated
  downloads) are switched off again after a number of Lambda invocations through ``runner.before_invoke``.
  Slow answers exceed the clients' timeouts (set low: ``SORACOM_TIMEOUT_SECONDS``, ``APS_TIMEOUT_SECONDS``)
  or stay below them.
- ``cloudblue.gateway``: CloudBlue's gateway answers 502 or 504 to the next requests, either before
  CloudBlue saw them or after it handled them (the answer lost: the outcome is unknown to the client).
- ``cloudblue.failed_until_fixed``: a subscription of the month is inactive in CloudBlue, so a session
  with its charges ends ``FAILED_PROCESSED`` until the runbook fixes it in CloudBlue (``errorDesc`` names
  it); the harness's "faults gone" does not fix it.
- ``cloudblue.token_expiry``: the functions are given ``APS_TOKEN`` for the cycle (the simulator accepts
  OAuth and APS tokens; OAuth has no token to expire), and the token expires before the import, after the
  k-th packet CloudBlue accepted, or before the session is followed.
- ``lambda.killed``: the import function dies at one point of its work: after CloudBlue accepted packet k
  but before the ledger recorded it, after a packet was marked in flight but before it was sent, or after
  the session was closed but before the ledger said so. See :class:`LambdaKilled` for what "dies" means here.
- ``s3.duplicate_event``: the S3 event is delivered again (``AsyncInvoker.redeliver``) once or twice.
- ``s3.out_of_order``: the object is copied onto itself (a new version, a new event), then the older
  version's event is delivered after the newer one was handled.
- ``month.run_twice``: the export state machine runs again for the month once the cycle is done.
- ``review.approval``: the mapping asks for every month to be approved (``review.approval: always``): the
  import stops after planning and alerts; the runbook approves it with the alert's command (fired: the
  alert came and its command was run).

The client-side retry sleeps of the CloudBlue client (tenacity) return at once, as the engine's
``instant_waits`` does for Step Functions' Wait states and Retry intervals: only time is skipped.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import threading
import time
import traceback
import types
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_plus

import tenacity.nap
import yaml
from moto.backends import get_backend
from soracharge.adapters.cloudblue import CloudBlueClient
from soracharge.adapters.ledger import DynamoDbLedger
from soracharge.logic.imports import follow_execution_name
from soracharge.models.charges import ImportPlan
from soracharge.models.mapping import parse_mapping
from soracharge.models.months import shift_month
from soracharge.models.runbook import Remedy
from soracharge.observability import logger, metrics
from soracharge_local.engine import ACCOUNT_ID, CloudBlueAccess, ExecutionResult, LocalCloud, SoracomAccess
from soracharge_local.s3_events import Delivery
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator, SoracomFaults, SoracomSimulator

from tests import reference
from tests.chaos.runbook import PERFORMERS, ReceivedAlert
from tests.planning import planned

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_MAPPING = REPO / "examples" / "mapping.example.yaml"
AUTH_KEY_ID = "keyId-chaos"
AUTH_KEY = "secret-chaos-do-not-log"
#: Small packets, so that a month is several packets (28 charges: 6 packets).
PACKET_SIZE = 5
#: Client timeouts the functions get (seconds): a "slow" answer is either below or above them.
CLIENT_TIMEOUT = 1.0
SLOW_ABOVE = 1.3
SLOW_BELOW = 0.15
#: CloudBlue client attempts per call (tenacity; its sleeps are skipped).
APS_MAX_ATTEMPTS = 3
FAILED_PROCESSING_DESC = "Subscription 9531985d-5d9d-49f8-9818-e811892f902b is not active"
#: Rounds of the runbook (every alert of a round acted on) before the harness gives the cycle up.
MAX_RERUNS = 4
#: The errorDesc of a session with charges of an inactive subscription (the simulator's, as CloudBlue words it).
INACTIVE_SUBSCRIPTION = re.compile(r"Subscription (\S+) is not active")


class LambdaKilled(Exception):
    """Where the harness kills the import function.

    A real kill (timeout, out of memory, the sandbox recycled) stops everything at once: no ``except``
    or ``finally`` runs. The in-process Lambda runner catches ``Exception`` only, so a ``BaseException``
    would unwind moto's invoke and the async invoker's worker thread and the delivery would never be
    recorded (nor retried). So the kill is an ``Exception`` the runner turns into an error payload, as
    the Lambda service does for a crashed runtime, and the one cleanup the import does on failure
    (``ledger.release``, which lets a retry resume at once) is skipped for that invocation: its claim
    keeps its lease, exactly as after a real kill. Other ``except BaseException`` blocks on the way out
    (stopping the packets not started yet) only do what the process dying would do anyway.
    """


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}({self.detail})"


@dataclass
class Signal:
    """One thing that failed, and the reason it gave (empty: no reason anywhere)."""

    where: str
    reason: str


@dataclass
class CycleResult:
    seed: int
    index: int
    month: str = ""
    concurrency: int = 0
    #: Always False: CloudBlue keeps a repeated extHash (nothing it publishes promises otherwise), so a double shows.
    ignores_repeated_ext_hash: bool = False
    faults: list[Fault] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)
    first_run_ok: bool = False
    signals: list[Signal] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    reruns: list[str] = field(default_factory=list)
    rerun_ok: bool | None = None
    expected_charges: int = 0
    expected_sum: Decimal = Decimal(0)
    held_charges: int = 0
    held_sum: Decimal = Decimal(0)
    lost: int = 0
    doubled: int = 0
    #: What CloudBlue holds that the CSV, worked out apart from the import (tests/reference.py), does not make.
    against_csv: list[str] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    harness_error: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.signals) or not self.first_run_ok

    @property
    def failed_without_reason(self) -> bool:
        """A failure with no error text anywhere, or a run that ended as if all was well but was not."""
        return any(not s.reason.strip() for s in self.signals) or bool(self.silent)

    @property
    def failed_with_reason(self) -> bool:
        return self.failed and not self.failed_without_reason and self.rerun_ok is not False

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.held_sum == self.expected_sum and not self.against_csv

    @property
    def good(self) -> bool:
        return self.exact and not self.failed_without_reason and self.harness_error is None

    def describe(self) -> str:
        lines = [
            f"seed {self.seed} cycle {self.index}: month {self.month}, concurrency {self.concurrency}, "
            f"CloudBlue ignores repeated extHash: {self.ignores_repeated_ext_hash}",
            f"  faults: {', '.join(str(f) for f in self.faults) or 'none'}; fired: {sorted(self.fired) or 'none'}",
            f"  first run: {'completed' if self.first_run_ok else 'failed'}; re-runs: {self.reruns or 'none'}"
            + ("" if self.rerun_ok is None else f" -> {'completed' if self.rerun_ok else 'NOT completed'}"),
            f"  expected {self.expected_charges} charges ({self.expected_sum}), held {self.held_charges} "
            f"({self.held_sum}): lost {self.lost}, doubled {self.doubled}",
        ]
        lines += [f"  against the CSV: {difference}" for difference in self.against_csv]
        lines += [f"  alert: {alert}" for alert in self.alerts]
        lines += [f"  failure at {s.where}: {s.reason or '<NO REASON>'}" for s in self.signals]
        lines += [f"  SILENT: {s}" for s in self.silent]
        lines += [f"  note: {n}" for n in self.notes]
        if self.harness_error:
            lines.append("  harness error: " + self.harness_error.replace("\n", "\n    "))
        return "\n".join(lines)


@dataclass
class Totals:
    cycles: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    doubled: int = 0
    #: cycles whose CloudBlue does not hold what the CSV makes, worked out apart from the import (tests/reference.py)
    against_csv: int = 0
    failed_with_reason: int = 0
    failed_without_reason: int = 0
    reruns_not_completed: int = 0
    harness_errors: int = 0
    bad: list[CycleResult] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    note_examples: dict[str, str] = field(default_factory=dict)

    def add(self, result: CycleResult) -> None:
        self.cycles += 1
        self.faults.update(f.name for f in result.faults)
        self.fired.update(result.fired)
        self.lost += result.lost
        self.doubled += result.doubled
        self.against_csv += int(bool(result.against_csv))
        self.failed_with_reason += int(result.failed_with_reason)
        self.failed_without_reason += int(result.failed_without_reason)
        self.reruns_not_completed += int(result.rerun_ok is False)
        self.harness_errors += int(result.harness_error is not None)
        if not result.good:
            self.bad.append(result)
        for note in result.notes:
            if not note.startswith("sessions:"):
                kind = note.split(":", 1)[0]
                self.notes[kind] += 1
                self.note_examples.setdefault(kind, f"seed {result.seed} cycle {result.index}: {note}")


# --------------------------------------------------------------------------------------------
# Patches: kill points, packet triggers, instant client retries
# --------------------------------------------------------------------------------------------

KillPoint = Literal["before_record", "after_mark", "after_close"]


@dataclass
class KillPlan:
    point: KillPoint
    k: int
    lapse_before_retry: bool


class Injector:
    """Harness-only wrappers around a few ledger and client methods: they do exactly what the originals do,
    plus the kill and the per-packet triggers armed for the current cycle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kills = 0  # every kill that happened (never reset: a cycle compares it before and after)
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.kill: KillPlan | None = None
            self.after_packet: dict[int, list[Callable[[], None]]] = {}
            self.record_calls = 0
            self.mark_calls = 0
            self.skip_release = False
            self.killed_at: str | None = None
            self.lapse_on_next_import = False

    def _die(self, where: str) -> None:
        self.kills += 1
        self.skip_release = True
        self.killed_at = where
        raise LambdaKilled(f"chaos: the import function was killed {where}")

    @contextmanager
    def installed(self) -> Iterator[None]:
        injector = self
        original_mark = DynamoDbLedger.mark_in_flight
        original_record = DynamoDbLedger.record_packet
        original_release = DynamoDbLedger.release
        original_close = CloudBlueClient.close_session

        def mark_in_flight(ledger: DynamoDbLedger, object_id: str, epoch: int, session: int, index: int) -> None:
            original_mark(ledger, object_id, epoch, session, index)
            with injector._lock:
                injector.mark_calls += 1
                kill = injector.kill
                if kill is not None and kill.point == "after_mark" and injector.mark_calls == kill.k:
                    injector.kill = None
                    injector.lapse_on_next_import = kill.lapse_before_retry
                    injector._die(f"after marking packet {index + 1} in flight, before sending it")

        def record_packet(ledger: DynamoDbLedger, object_id: str, epoch: int, session: int, index: int) -> None:
            with injector._lock:
                injector.record_calls += 1
                calls = injector.record_calls
                kill = injector.kill
                if kill is not None and kill.point == "before_record" and calls == kill.k:
                    injector.kill = None
                    injector.lapse_on_next_import = kill.lapse_before_retry
                    injector._die(f"after CloudBlue accepted packet {index + 1}, before the ledger recorded it")
                actions = injector.after_packet.pop(calls, [])
            original_record(ledger, object_id, epoch, session, index)
            for action in actions:
                action()

        def release(ledger: DynamoDbLedger, object_id: str, epoch: int) -> None:
            with injector._lock:
                if injector.skip_release:
                    injector.skip_release = False  # a killed process cleans nothing up
                    return
            original_release(ledger, object_id, epoch)

        def close_session(client: CloudBlueClient, session_id: int) -> None:
            original_close(client, session_id)
            with injector._lock:
                kill = injector.kill
                if kill is not None and kill.point == "after_close":
                    injector.kill = None
                    injector.lapse_on_next_import = kill.lapse_before_retry
                    injector._die(f"after closing session {session_id}, before the ledger said so")

        patches: list[tuple[type, str, Callable[..., None]]] = [
            (DynamoDbLedger, "mark_in_flight", mark_in_flight),
            (DynamoDbLedger, "record_packet", record_packet),
            (DynamoDbLedger, "release", release),
            (CloudBlueClient, "close_session", close_session),
        ]
        originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        try:
            yield
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)


def local_runtime_fixes() -> None:
    """What one long-lived process running every function needs that a Lambda sandbox does not.

    Powertools' Logger and Metrics are created once, when ``soracharge.observability`` is first imported
    (here: by the harness, outside any function's environment), so the template's ``POWERTOOLS_*``
    values never reach them: logs stay at INFO (quieted here, with moto's ASL failure dumps), and the
    metrics namespace stays unset. With ``POWERTOOLS_METRICS_DISABLED`` the metric values are never
    flushed, so they pile up across invocations of every function, and the 100th value of one metric
    makes Powertools serialize them, which fails without a namespace (``SchemaValidationError: Must
    contain a metric namespace``) inside whatever function added it. The namespace is set as the
    template sets it, and the metrics are cleared before each invocation (see ``_before_invoke``).
    """
    logger.setLevel(logging.ERROR)
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    metrics.namespace = "Soracharge"


@contextmanager
def instant_client_retries(sleeps: list[float]) -> Iterator[None]:
    """tenacity's default sleep calls ``tenacity.nap.time.sleep``: make it record the wait and return."""
    module, name = tenacity.nap, "time"
    original = getattr(module, name)
    setattr(module, name, types.SimpleNamespace(sleep=sleeps.append))
    try:
        yield
    finally:
        setattr(module, name, original)


# --------------------------------------------------------------------------------------------
# The world: simulators and the stack in moto, reused across cycles
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one delivery of an S3 event ended, followed to CloudBlue's rating when it closed a session."""

    delivery: Delivery
    ok: bool
    stage: str  # import | rating | follow | done
    reason: str = ""
    status: str = ""


class ChaosWorld:
    """One Soracom simulator, one CloudBlue simulator and one LocalCloud, reused by many cycles."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.injector = Injector()
        self.client_sleeps: list[float] = []
        self.invoke_hooks: list[Callable[[str, int], None]] = []
        self.invocations = 0
        self.hook_errors: list[str] = []
        self._stack = ExitStack()
        self._used_months: set[str] = set()
        self._executions = 0
        self._clock = time.time()
        self._plan: tuple[str, ImportPlan] | None = None
        self.mapping_path = workdir / "mapping.yaml"

    def __enter__(self) -> ChaosWorld:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def use_approval(self, approval: str) -> None:
        """The mapping's ``review.approval`` for the cycle (``always``: every month waits for a person)."""
        mapping = yaml.safe_load(EXAMPLE_MAPPING.read_text())
        mapping["packetSize"] = PACKET_SIZE
        mapping["review"] = {"approval": approval}
        self.mapping_path.write_text(yaml.safe_dump(mapping, allow_unicode=True))
        if hasattr(self, "cloud"):
            self.cloud.put_mapping(self.mapping_path)
        self.approval = approval

    def _start(self) -> None:
        self.use_approval("unusual")
        self.mapping = parse_mapping(self.mapping_path.read_text(), "chaos")
        self.soracom: SoracomSimulator = self._stack.enter_context(
            SoracomSimulator(auth_key_id=AUTH_KEY_ID, auth_key=AUTH_KEY, polls_until_ready=1)
        )
        self.cloudblue: CloudBlueSimulator = self._stack.enter_context(CloudBlueSimulator())
        timeout = str(CLIENT_TIMEOUT)
        self.cloud: LocalCloud = self._stack.enter_context(
            LocalCloud(
                soracom=SoracomAccess(endpoint=self.soracom.base_url, auth_key_id=AUTH_KEY_ID, auth_key=AUTH_KEY),
                cloudblue=CloudBlueAccess(
                    endpoint=self.cloudblue.base_url,
                    consumer_key=self.cloudblue.consumer_key,
                    consumer_secret=self.cloudblue.consumer_secret,
                ),
                mapping=self.mapping_path,
                instant_waits=True,
                environment={
                    "POWERTOOLS_METRICS_DISABLED": "true",
                    "POWERTOOLS_LOG_LEVEL": "ERROR",
                    "APS_MAX_ATTEMPTS": str(APS_MAX_ATTEMPTS),
                    "APS_TIMEOUT_SECONDS": timeout,
                    "SORACOM_TIMEOUT_SECONDS": timeout,
                    "SORACOM_DOWNLOAD_TIMEOUT_SECONDS": timeout,
                },
            )
        )
        local_runtime_fixes()
        self._stack.enter_context(self.injector.installed())
        self._stack.enter_context(instant_client_retries(self.client_sleeps))
        self.cloud.runner.before_invoke.append(self._before_invoke)
        today = self.soracom.today
        current = f"{today.year:04d}{today.month:02d}"
        self.months = [shift_month(current, -n) for n in range(1, 19)]

    # -- per cycle ---------------------------------------------------------------------------

    def _before_invoke(self, logical_id: str, event: Any) -> None:
        """Runs inside the runner before each invocation: must never raise (it is outside the runner's try)."""
        self.invocations += 1
        metrics.clear_metrics()  # see local_runtime_fixes
        for hook in list(self.invoke_hooks):
            try:
                hook(logical_id, self.invocations)
            except Exception:  # noqa: BLE001 - recorded, reported as a harness error
                self.hook_errors.append(traceback.format_exc())

    def begin_cycle(self, month: str, concurrency: int, ignores_repeats: bool) -> int:
        """Reset faults and hooks, free the month (wipe what an earlier cycle left of it); the last session id."""
        self.calm()
        self._plan = None
        for subscription in self.cloudblue.inactive_subscriptions:
            self.cloudblue.activate_subscription(subscription)
        self.cloud.alerts()  # what earlier cycles left on the topic
        self.soracom.clear_fired()
        self.cloudblue.clear_fired()
        self.invoke_hooks.clear()
        self.invocations = 0
        self.hook_errors.clear()
        self.soracom.clear_requests()
        self.cloudblue.ignore_repeated_ext_hash = ignores_repeats
        overrides = self.cloud.runner.environment_overrides
        overrides["IMPORT_CONCURRENCY"] = str(concurrency)
        overrides.pop("APS_TOKEN", None)
        if self.approval != "unusual":
            self.use_approval("unusual")
        if month in self._used_months:
            self._wipe(month)
        self._used_months.add(month)
        return max((s.importSessionId for s in self.cloudblue.sessions()), default=0)

    def calm(self) -> None:
        """Every fault off, tokens valid again, and time passes: leases of stuck imports lapse."""
        self.soracom.faults = SoracomFaults()
        self.cloudblue.faults = CloudBlueFaults()
        self.cloudblue.renew_token()
        self.injector.reset()
        self.invoke_hooks.clear()
        self.lapse_leases()

    def _wipe(self, month: str) -> None:
        s3 = self.cloud.client("s3")
        prefixes = (f"exports/{month}/", f"uploads/{month}/", f"reports/{month}/")
        # The versions are read from moto's bucket itself: its list_object_versions deep-copies every version
        # of the bucket at each call, copies that stayed alive (a 1,000-cycle run grew past 15 GB)
        bucket = get_backend("s3")[ACCOUNT_ID]["global"].buckets[self.cloud.bucket]
        for key in [k for k in list(bucket.keys) if k.startswith(prefixes)]:
            for version in list(bucket.keys.getlist(key)):
                s3.delete_object(Bucket=self.cloud.bucket, Key=key, VersionId=version.version_id)
        db = self.cloud.client("dynamodb")
        table = self.cloud.resources["LedgerTable"]
        for page in db.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                pk = item["pk"]["S"]
                if (
                    pk.startswith((f"bill#{month}#", f"bytes#{month}#", f"month#{month}#"))
                    or item.get("month", {}).get("S") == month
                ):
                    db.delete_item(TableName=table, Key={"pk": {"S": pk}})

    def clock(self) -> float:
        """The wall clock a person's shell reads (``$(date +%s)``): a second later at each read."""
        self._clock += 1.0
        return self._clock

    def alerts(self) -> list[ReceivedAlert]:
        """The alerts published since the last call, as the people subscribed to the topic read them."""
        return [ReceivedAlert.read(alert["subject"], alert["message"]) for alert in self.cloud.alerts()]

    def invoke_async(self, function_name: str, event: dict[str, Any]) -> Delivery:
        """``aws lambda invoke --invocation-type Event``: delivered as Lambda delivers it (retries included)."""
        invoker = self.cloud.async_invocations
        delivery = invoker.invoke(function_name, event)
        invoker.wait_idle()
        return delivery

    def object_bytes(self, bucket: str, key: str, version: str | None) -> bytes:
        extra = {"VersionId": version} if version else {}
        return bytes(self.cloud.client("s3").get_object(Bucket=bucket, Key=key, **extra)["Body"].read())

    def put(self, key: str, body: bytes, metadata: dict[str, str]) -> list[Delivery]:
        """``aws s3 cp FILE s3://<bucket>/<key> --metadata ...``; the import deliveries it caused."""
        before = len(self.cloud.async_invocations.deliveries)
        self.cloud.client("s3").put_object(Bucket=self.cloud.bucket, Key=key, Body=body, Metadata=metadata)
        return self.cloud.import_deliveries(before)

    def subscriptions(self, month: str) -> list[str]:
        """The CloudBlue subscriptions the month's charges name."""
        return sorted({c.subscription_id for c in self.plan(month).charges})

    def lapse_leases(self) -> None:
        """Time passes beyond every lease: an import left IMPORTING by a killed invocation can be resumed."""
        db = self.cloud.client("dynamodb")
        table = self.cloud.resources["LedgerTable"]
        for page in db.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                if item.get("status", {}).get("S") == "IMPORTING":
                    db.update_item(
                        TableName=table,
                        Key={"pk": item["pk"]},
                        UpdateExpression="SET lease_until = :zero",
                        ExpressionAttributeValues={":zero": {"N": "0"}},
                    )

    def plan(self, month: str) -> ImportPlan:
        """The month's CSV planned with the mapping in use (once a cycle: ``begin_cycle`` forgets it)."""
        if self._plan is None or self._plan[0] != month:
            body = self.soracom.csv_bytes(month)
            plan = planned(io.BytesIO(body), month=month, currency=self.soracom.currency, mapping=self.mapping)
            assert not plan.problems, plan.problems
            self._plan = (month, plan)
        return self._plan[1]

    def expected(self, month: str) -> dict[str, Decimal]:
        return {c.ext_charge_id or "": c.total_price for c in self.plan(month).charges}

    def held(self, after_session: int) -> list[tuple[str, Decimal]]:
        """Charges in sessions opened after ``after_session`` that were closed and not FAILED_PROCESSED.

        A file re-imported as additional (the runbook, after FAILED_PROCESSED) gives its charges ids
        of their own (``…-a<hex>``): compared without that suffix, so one charge rated twice is
        still counted doubled.
        """
        return [
            (_ADDITIONAL_SUFFIX.sub("", str(c["extChargeId"])), Decimal(c["totalPrice"]))
            for c in self.held_charges(after_session)
        ]

    def held_charges(self, after_session: int) -> list[dict[str, Any]]:
        """The charges :meth:`held` counts, as CloudBlue stores them."""
        return [
            c
            for s in self.cloudblue.sessions()
            if s.importSessionId > after_session and s.closed_at is not None and s.status != "FAILED_PROCESSED"
            for c in s.charges
        ]

    def against_csv(self, month: str, after_session: int) -> list[str]:
        """What the charges held differ by from the month's CSV worked out on its own (tests/reference.py)."""
        return reference.lacking(
            self.soracom.csv_bytes(month),
            self.mapping_path.read_text(encoding="utf-8"),
            self.soracom.currency,
            self.held_charges(after_session),
        )

    # -- runs --------------------------------------------------------------------------------

    def export(self, month: str, label: str) -> tuple[ExecutionResult, list[Delivery]]:
        """Run the export state machine for ``month``; the S3 event deliveries it caused (all handled)."""
        self._executions += 1
        invoker = self.cloud.async_invocations
        before = len(invoker.deliveries)
        result = self.cloud.run(
            "ExportBillingStateMachine", {"month": month}, name=f"{label}-{self._executions}", timeout_seconds=600
        )
        return result, self.cloud.import_deliveries(before)

    def redeliver(self, delivery: Delivery) -> Delivery:
        invoker = self.cloud.async_invocations
        again = invoker.redeliver(delivery)
        invoker.wait_idle()
        return again

    def copy(self, key: str, target: str | None = None, extra_metadata: dict[str, str] | None = None) -> list[Delivery]:
        """Copy an object (onto itself: the runbook's re-delivery; elsewhere: a re-upload); its deliveries."""
        s3 = self.cloud.client("s3")
        invoker = self.cloud.async_invocations
        before = len(invoker.deliveries)
        head = s3.head_object(Bucket=self.cloud.bucket, Key=key)
        metadata = {**head["Metadata"], **(extra_metadata or {})}
        s3.copy_object(
            Bucket=self.cloud.bucket,
            Key=target or key,
            CopySource={"Bucket": self.cloud.bucket, "Key": key},
            Metadata=metadata,
            MetadataDirective="REPLACE",
        )
        return self.cloud.import_deliveries(before)

    def settle(self, delivery: Delivery) -> Outcome:
        """How a delivery ended; a session it closed is followed to its end (the follow state machine)."""
        if delivery.error is not None:
            return Outcome(delivery, ok=False, stage="import", reason=delivery.error, status="ERROR")
        reports = (delivery.result or {}).get("reports") or []
        if len(reports) != 1:
            return Outcome(delivery, ok=False, stage="import", reason="", status=f"{len(reports)} reports")
        report = reports[0]
        status = str(report.get("status"))
        if status in ("CLOSED", "PROCESSED", "FAILED_PROCESSED", "NOT_RATED"):
            ended = self.follow(report)
            if ended is None:
                return Outcome(delivery, ok=False, stage="follow", reason="", status=f"{status}, never followed")
            final = self.report(report)
            status = str(final.get("status"))
            reason = str(final.get("summary") or "")
            if status == "PROCESSED" and ended.get("type") == "ExecutionSucceeded":
                return Outcome(delivery, ok=True, stage="done", status=status)
            if status == "FAILED_PROCESSED":
                reason = f"{reason} (errorDesc: {final.get('errorDesc')})" if final.get("errorDesc") else reason
                return Outcome(delivery, ok=False, stage="rating", reason=reason, status=status)
            if status == "NOT_RATED":
                return Outcome(delivery, ok=False, stage="follow", reason=reason, status=status)
            return Outcome(delivery, ok=False, stage="follow", reason="", status=f"{status} after {ended.get('type')}")
        return Outcome(delivery, ok=False, stage="import", reason=str(report.get("summary") or ""), status=status)

    def follow(self, report: dict[str, Any]) -> dict[str, Any] | None:
        obj = report["object"]
        session_id = report.get("importSessionId")
        if session_id is None:
            return None
        arn = self.cloud.state_machines["FollowImportSessionStateMachine"].replace(":stateMachine:", ":execution:")
        name = follow_execution_name(f"{obj['bucket']}/{obj['key']}#{obj['versionId']}", int(session_id))
        try:
            events = list(self.cloud.follow(f"{arn}:{name}", timeout_seconds=300))
        except self.cloud.client("stepfunctions").exceptions.ExecutionDoesNotExist:
            return None
        return dict(events[-1]) if events else None

    def report(self, report: dict[str, Any]) -> dict[str, Any]:
        key = f"reports/{report['month']}/{report['object']['versionId']}.json"
        body = self.cloud.client("s3").get_object(Bucket=self.cloud.bucket, Key=key)["Body"].read()
        return dict(json.loads(body))


# --------------------------------------------------------------------------------------------
# One cycle
# --------------------------------------------------------------------------------------------


class Cycle:
    """One monthly cycle: faults drawn from ``random.Random(seed * 1000 + index)``."""

    def __init__(
        self,
        world: ChaosWorld,
        seed: int,
        index: int,
        *,
        faults: list[str] | None = None,
        kill_point: KillPoint | None = None,
    ) -> None:
        """``faults`` and ``kill_point`` force what is otherwise drawn (a regression test's exact scenario)."""
        self.world = world
        self.forced_faults = faults
        self.kill_point = kill_point
        self.rng = random.Random(seed * 1000 + index)
        self.result = CycleResult(seed=seed, index=index)
        self.label = f"chaos-{seed}-{index}"
        self.flags: set[str] = set()
        self.export_key: str | None = None
        self.main: Delivery | None = None
        self.ok = False
        self.pending = False  # alerts still asking for action when the harness stopped following the runbook
        self.fired_here: set[str] = set()  # the harness's own faults that happened (the simulators count theirs)
        self.kills_before = world.injector.kills
        self.error_descs: list[str] = []
        self._soracom_kind: list[str | None] = []
        self._cloudblue_operation: list[str | None] = []

    def soracom_kind(self, choices: list[str | None]) -> str | None:
        """The request kind this cycle's Soracom faults target (one switch, ``only_kind``, shared by them)."""
        if not self._soracom_kind:
            self._soracom_kind.append(self.rng.choice(choices))
            self.world.soracom.faults.only_kind = self._soracom_kind[0]
        return self._soracom_kind[0]

    def cloudblue_operation(self) -> str | None:
        """The operation this cycle's CloudBlue faults target (one switch, ``only_operation``, shared by them)."""
        if not self._cloudblue_operation:
            self._cloudblue_operation.append(self.rng.choice(CLOUDBLUE_OPERATIONS))
            self.world.cloudblue.faults.only_operation = self._cloudblue_operation[0]
        return self._cloudblue_operation[0]

    # -- faults ------------------------------------------------------------------------------

    def add(self, name: str, detail: str) -> None:
        self.result.faults.append(Fault(name, detail))

    def on_invocation(self, n: int, action: Callable[[], None], logical_id: str | None = None) -> None:
        """Run ``action`` before the n-th Lambda invocation of the cycle (of ``logical_id`` when given)."""
        seen = [0]

        def hook(invoked: str, _count: int) -> None:
            if logical_id is not None and invoked != logical_id:
                return
            seen[0] += 1
            if seen[0] == n:
                action()

        self.world.invoke_hooks.append(hook)

    def for_invocations(self, k: int, revert: Callable[[], None]) -> None:
        """A fault switched on now lasts ``k`` Lambda invocations (reverted before the next one)."""
        self.on_invocation(k + 1, revert)

    def during(self, logical_id: str, switch_on: Callable[[], None], switch_off: Callable[[], None]) -> None:
        """A fault on for the first invocation of ``logical_id`` only (off before the next invocation)."""
        state = {"on": False, "done": False}

        def hook(invoked: str, _count: int) -> None:
            if state["on"]:
                switch_off()
                state["on"], state["done"] = False, True
            if invoked == logical_id and not state["done"]:
                switch_on()
                state["on"] = True

        self.world.invoke_hooks.append(hook)

    def pick_faults(self) -> list[str]:
        if self.forced_faults is not None:
            return list(self.forced_faults)
        count = self.rng.choices([0, 1, 2, 3], weights=[1, 4, 3, 2])[0]
        names = self.rng.sample(sorted(FAULTS), count)
        if "soracom.export_failed" in names and "soracom.export_never" in names:
            names.remove("soracom.export_never")
        return names

    # -- running -----------------------------------------------------------------------------

    def run(self) -> CycleResult:
        started = time.monotonic()
        try:
            self._run()
        except Exception:  # noqa: BLE001 - a cycle the harness could not finish is reported, never hidden
            self.result.harness_error = traceback.format_exc()
        if self.world.hook_errors:
            self.result.harness_error = (self.result.harness_error or "") + "\n".join(self.world.hook_errors)
        self.result.seconds = time.monotonic() - started
        return self.result

    def _run(self) -> None:
        rng, result, world = self.rng, self.result, self.world
        result.month = month = rng.choice(world.months)
        result.concurrency = rng.choice([1, 2, 4, 8])
        fault_names = self.pick_faults()
        watermark = world.begin_cycle(month, result.concurrency, result.ignores_repeated_ext_hash)
        expected = world.expected(month)
        result.expected_charges, result.expected_sum = len(expected), sum(expected.values(), Decimal(0))
        for name in fault_names:
            FAULTS[name](self)

        # The first run, with the faults
        result.first_run_ok = self._first_run(month)
        if not result.first_run_ok:
            self._check_progress_while_failed(watermark, expected)
        elif not self._exact(world.held(watermark), expected):
            result.silent.append("the run completed, but CloudBlue does not hold exactly the expected charges")

        # The runbook, as a person follows it: each alert's action, with the faults gone and time passed
        self._follow_runbook()
        if result.reruns:
            exact = self._exact(world.held(watermark), expected)
            result.rerun_ok = self.ok and exact and not self.pending
            if self.ok and not exact:
                result.silent.append(
                    "the runbook was followed, but CloudBlue does not hold exactly the expected charges"
                )

        # What may happen afterwards: an old event, the month exported again (and the runbook for what they say)
        world.calm()
        if "s3.out_of_order" in self.flags:
            self._out_of_order()
        if "month.run_twice" in self.flags:
            self._run_twice(month)
        if self.flags & {"s3.out_of_order", "month.run_twice"}:
            ok, self.ok = self.ok, True
            self._follow_runbook()
            self.ok = self.ok and ok

        self._fired()
        held = world.held(watermark)
        result.against_csv = world.against_csv(month, watermark)
        self._verdict(held, expected)
        self._describe_sessions(watermark)

    def _follow_runbook(self) -> None:
        """Read the alerts the runs caused and perform each one's action, round after round, until none is left.

        A run that failed and caused no alert naming an action failed without a reason.
        """
        result, world = self.result, self.world
        alerts = self._read_alerts()
        rounds = 0
        while True:
            actionable = [alert for alert in alerts if alert.remedy is not None and alert.remedy != Remedy.NOTHING]
            if not actionable:
                if not self.ok:
                    self._signal("runbook", "")
                    result.silent.append("the run failed, and no alert named an action to take")
                self.pending = False
                return
            if rounds == MAX_RERUNS:
                self.pending = True
                result.notes.append(f"runbook: alerts still asking for action after {MAX_RERUNS} rounds")
                return
            rounds += 1
            world.calm()  # the causes fixed: the faults gone, time passed (CloudBlue's own settings are not)
            ok = True
            for alert in _one_per_action(actionable):
                assert alert.remedy is not None
                result.reruns.append(f"{alert.remedy} ({alert.subject})")
                ok = PERFORMERS[alert.remedy](self, alert) and ok
            self.ok = ok
            alerts = self._read_alerts()

    def _fired(self) -> None:
        """Which of the cycle's faults fired: the simulators' counters, the kills, the harness's own events."""
        world = self.world
        counters = {"soracom": world.soracom.fired, "cloudblue": world.cloudblue.fired}
        if world.injector.kills > self.kills_before:
            self.fired_here.add("lambda.killed")
        for fault in self.result.faults:
            if fault.name in FIRED_BY:
                simulator, keys = FIRED_BY[fault.name]
                if any(counters[simulator][key] for key in keys):
                    self.result.fired.add(fault.name)
            elif fault.name in self.fired_here:
                self.result.fired.add(fault.name)

    def _read_alerts(self) -> list[ReceivedAlert]:
        alerts = self.world.alerts()
        for alert in alerts:
            if alert.remedy is None:
                self._signal(f"alert {alert.subject!r}", "")
                self.result.silent.append(f"an alert named no runbook action: {alert.subject}")
            if alert.facts.get("errorDesc", "-") != "-":
                self.error_descs.append(alert.facts["errorDesc"])
        self.result.alerts.extend(f"{alert.remedy}: {alert.subject}" for alert in alerts)
        return alerts

    # -- what the runbook's performers use (tests/chaos/runbook.py) ------------------------------

    def unperformable(self, alert: ReceivedAlert, why: str) -> bool:
        """An alert whose action cannot be done as it is written: a defect of the alert."""
        self._signal(f"runbook {alert.remedy}", "")
        self.result.silent.append(f"the action of alert {alert.subject!r} cannot be performed: {why}")
        return False

    def fix_in_cloudblue(self) -> None:
        """What a person does in CloudBlue after reading errorDesc: activate the subscription it names."""
        inactive = self.world.cloudblue.inactive_subscriptions
        for desc in self.error_descs:
            named = INACTIVE_SUBSCRIPTION.search(desc)
            if named is not None and named.group(1) in inactive:
                self.world.cloudblue.activate_subscription(named.group(1))
                self.result.notes.append(f"fixed in CloudBlue: subscription {named.group(1)} activated")

    def run_execution(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> bool:
        """``aws stepfunctions start-execution`` as an alert gives it, followed to its end (and its imports)."""
        world = self.world
        logical = {arn: logical_id for logical_id, arn in world.cloud.state_machines.items()}.get(state_machine_arn)
        if logical is None:
            self._signal("runbook start-execution", "")
            self.result.silent.append(f"the alert's state machine {state_machine_arn} does not exist")
            return False
        before = len(world.cloud.async_invocations.deliveries)
        execution = world.cloud.run(logical, payload, name=name, timeout_seconds=600)
        if logical == "ExportBillingStateMachine":
            return self._after_export(execution, world.cloud.import_deliveries(before), first=False)
        # follow-import-session: the outcome is in the report it recorded
        if execution.status != "SUCCEEDED":
            self._signal(f"follow again {execution.status}", f"{execution.error or ''}: {_cause(execution.cause)}")
            return False
        key = str(payload.get("reportKey", ""))
        report = json.loads(world.cloud.client("s3").get_object(Bucket=world.cloud.bucket, Key=key)["Body"].read())
        if report.get("status") != "PROCESSED":
            reason = str(report.get("summary") or "")
            self._signal(f"follow again ({report.get('status')})", reason)
            return False
        return True

    def _signal(self, where: str, reason: str) -> None:
        self.result.signals.append(Signal(where, reason))

    def _first_run(self, month: str) -> bool:
        execution, deliveries = self.world.export(month, self.label)
        return self._after_export(execution, deliveries, first=True)

    def _after_export(self, execution: ExecutionResult, deliveries: list[Delivery], *, first: bool) -> bool:
        if execution.status != "SUCCEEDED":
            reason = f"{execution.error or ''}: {_cause(execution.cause)}".strip(": ")
            self._signal(f"export {execution.status}", reason if execution.error else "")
            if deliveries:  # it failed after storing the file: the import ran anyway
                self.main = self.main or deliveries[0]
                self.settle_all(deliveries)
            self.ok = False
            return False
        stored = (execution.output or {}).get("s3") or {}
        self.export_key = stored.get("key")
        if not deliveries:
            if stored.get("alreadyStored") or stored.get("already_stored"):
                self.result.notes.append("export said already stored: the month had an export")
            self._signal("import", "")  # nothing was imported, and nothing said why
            self.result.silent.append(f"the export succeeded ({stored}) but no import followed")
            self.ok = False
            return False
        self.main = deliveries[0]
        if first and "s3.duplicate_event" in self.flags:
            self.fired_here.add("s3.duplicate_event")
            for _ in range(self.rng.randint(1, 2)):
                deliveries.append(self.world.redeliver(self.main))
        return self.settle_all(deliveries)

    def settle_all(self, deliveries: list[Delivery]) -> bool:
        """Settle every delivery; the run is ok when the last word on each object version is ok."""
        last: dict[str, Outcome] = {}
        for delivery in deliveries:
            outcome = self.world.settle(delivery)
            if not outcome.ok:
                self._signal(f"{outcome.stage} ({outcome.status})", outcome.reason)
            last[_version_of(delivery)] = outcome
        self.ok = all(o.ok for o in last.values())
        return self.ok

    def _out_of_order(self) -> None:
        """A newer version of the object (copied onto itself) is handled, then the older version's event arrives."""
        if self.main is None:
            return
        self.fired_here.add("s3.out_of_order")
        for delivery in self.world.copy(_event_key(self.main)):
            self._extra_outcome("newer version", self.world.settle(delivery))
        self._extra_outcome("older event, late", self.world.settle(self.world.redeliver(self.main)))

    def _run_twice(self, month: str) -> None:
        self.fired_here.add("month.run_twice")
        execution, deliveries = self.world.export(month, f"{self.label}-again")
        if execution.status != "SUCCEEDED":
            self._signal(f"second export {execution.status}", execution.error or "")
        stored = (execution.output or {}).get("s3") or {}
        if not stored.get("alreadyStored", stored.get("already_stored")):
            self.result.notes.append("second export stored the month again")
        for delivery in deliveries:
            self._extra_outcome("second export", self.world.settle(delivery))

    def _extra_outcome(self, what: str, outcome: Outcome) -> None:
        if outcome.ok or outcome.status in ("DUPLICATE", "HELD"):
            self.result.notes.append(f"{what}: {outcome.status}")
            return
        if outcome.stage == "import" and outcome.status == "ERROR":
            self.result.notes.append(f"{what}: failed, {outcome.reason[:120]}")
            if not outcome.reason.strip():
                self._signal(what, "")
            return
        self.result.notes.append(f"{what}: {outcome.status} {outcome.reason[:120]}")

    def _check_progress_while_failed(self, watermark: int, expected: dict[str, Decimal]) -> None:
        """After an explicit failure CloudBlue may hold nothing or everything, never a part (a part would be rated)."""
        held = self.world.held(watermark)
        if held and not self._exact(held, expected):
            self.result.notes.append(
                f"partial: after the failed run CloudBlue's closed sessions hold {len(held)} of {len(expected)} charges"
            )

    @staticmethod
    def _exact(held: list[tuple[str, Decimal]], expected: dict[str, Decimal]) -> bool:
        return sorted(held) == sorted(expected.items())

    def _verdict(self, held: list[tuple[str, Decimal]], expected: dict[str, Decimal]) -> None:
        result = self.result
        counts = Counter(ext_id for ext_id, _ in held)
        prices: dict[str, set[Decimal]] = {}
        for ext_id, price in held:
            prices.setdefault(ext_id, set()).add(price)
        result.held_charges = len(held)
        result.held_sum = sum((price for _, price in held), Decimal(0))
        result.lost = sum(1 for ext_id, price in expected.items() if price not in prices.get(ext_id, set()))
        result.doubled = sum(n - 1 for n in counts.values() if n > 1) + sum(
            n for ext_id, n in counts.items() if ext_id not in expected
        )
        if not result.failed and not result.exact:
            result.silent.append("no failure was reported, yet CloudBlue does not hold exactly the expected charges")

    def _describe_sessions(self, watermark: int) -> None:
        sessions = [s for s in self.world.cloudblue.sessions() if s.importSessionId > watermark]
        summary = Counter(("closed " + s.status) if s.closed_at is not None else "left open" for s in sessions)
        self.result.notes.append("sessions: " + ", ".join(f"{n} {what}" for what, n in sorted(summary.items())))


def _one_per_action(alerts: list[ReceivedAlert]) -> list[ReceivedAlert]:
    """What a person does once for several alerts that ask the same: one export, one upload per month."""
    seen: set[tuple[object, ...]] = set()
    chosen = []
    for alert in alerts:
        if alert.remedy in (Remedy.START_EXPORT, Remedy.UPLOAD_ADDITIONAL):
            key: tuple[object, ...] = (alert.remedy, alert.month)
        else:
            key = (alert.remedy, alert.command or alert.facts.get("File"))
        if key not in seen:
            seen.add(key)
            chosen.append(alert)
    return chosen


def _cause(cause: str | None) -> str:
    try:
        return str(json.loads(cause or "{}").get("errorMessage", cause))
    except (ValueError, AttributeError):
        return cause or ""


def _event_key(delivery: Delivery) -> str:
    """The object key of an S3 event (URL-encoded in the event, as S3 sends it), or of a review's objectId."""
    if "review" in delivery.event:
        return str(delivery.event["review"]["objectId"]).rpartition("#")[0].partition("/")[2]
    return unquote_plus(str(delivery.event["Records"][0]["s3"]["object"]["key"]))


def _version_of(delivery: Delivery) -> str:
    """``<key>#<version>`` of the object an S3 event or a review names."""
    if "review" in delivery.event:
        version = str(delivery.event["review"]["objectId"]).rpartition("#")[2]
        return f"{_event_key(delivery)}#{None if version == 'null' else version}"
    obj = delivery.event["Records"][0]["s3"]["object"]
    return f"{_event_key(delivery)}#{obj.get('versionId')}"


# --------------------------------------------------------------------------------------------
# The fault catalogue
# --------------------------------------------------------------------------------------------

SORACOM_KINDS: list[str | None] = [None, "getBilling", "exportBilling", "getExportedFile"]
CLOUDBLUE_OPERATIONS: list[str | None] = [None, "openSession", "importCharges", "closeSession", "getSession"]


def _soracom_429(cycle: Cycle) -> None:
    n, kind = cycle.rng.randint(1, 6), cycle.soracom_kind(SORACOM_KINDS)
    cycle.world.soracom.faults.rate_limit_next = n
    cycle.world.soracom.faults.rate_limit_seconds = 1
    cycle.add("soracom.429", f"next {n} {kind or 'API'} requests")


def _soracom_5xx(cycle: Cycle) -> None:
    n, kind = cycle.rng.randint(1, 7), cycle.soracom_kind(SORACOM_KINDS)
    cycle.world.soracom.faults.server_error_next = n
    cycle.add("soracom.5xx", f"next {n} {kind or 'API'} requests")


def _soracom_slow(cycle: Cycle) -> None:
    seconds = cycle.rng.choice([SLOW_BELOW, SLOW_ABOVE])
    kind = cycle.soracom_kind([*SORACOM_KINDS, "download"])
    k = cycle.rng.randint(1, 3)
    cycle.world.soracom.faults.slow_seconds = seconds
    cycle.for_invocations(k, lambda: setattr(cycle.world.soracom.faults, "slow_seconds", 0.0))
    cycle.add("soracom.slow", f"{seconds}s on {kind or 'API'} for {k} invocations")


def _soracom_token_expiry(cycle: Cycle) -> None:
    n = cycle.rng.randint(1, 5)
    cycle.on_invocation(n, cycle.world.soracom.expire_tokens)
    cycle.add("soracom.token_expiry", f"before invocation {n}")


def _soracom_export_failed(cycle: Cycle) -> None:
    cycle.world.soracom.faults.export_outcome = "failed"
    cycle.add("soracom.export_failed", "status failed")


def _soracom_export_never(cycle: Cycle) -> None:
    cycle.world.soracom.faults.export_outcome = "never"
    cycle.add("soracom.export_never", "processing forever")


def _soracom_download(cycle: Cycle) -> None:
    if cycle.rng.random() < 0.5:
        n = cycle.rng.randint(1, 6)
        cycle.world.soracom.faults.download_server_error_next = n
        cycle.add("soracom.download", f"next {n} downloads answer 500")
    else:
        k = cycle.rng.randint(1, 7)
        cycle.world.soracom.faults.truncate_download = True
        cycle.for_invocations(k, lambda: setattr(cycle.world.soracom.faults, "truncate_download", False))
        cycle.add("soracom.download", f"downloads cut short for {k} invocations")


def _cloudblue_5xx(cycle: Cycle) -> None:
    n, operation = cycle.rng.randint(1, 8), cycle.cloudblue_operation()
    cycle.world.cloudblue.faults.server_error_next = n
    cycle.add("cloudblue.5xx", f"next {n} {operation or 'API'} requests")


def _cloudblue_5xx_packets(cycle: Cycle) -> None:
    # The packet numbers count every importCharges request ever received (CloudBlue's requests are never cleared).
    already = cycle.world.cloudblue.count("importCharges")
    packets = sorted(already + p for p in cycle.rng.sample(range(1, 13), cycle.rng.randint(1, 5)))
    cycle.world.cloudblue.faults.server_error_on_packets = packets
    cycle.add("cloudblue.5xx_packets", f"importCharges requests {[p - already for p in packets]}")


def _cloudblue_slow(cycle: Cycle) -> None:
    seconds = cycle.rng.choice([SLOW_BELOW, SLOW_ABOVE])
    operation = cycle.cloudblue_operation()
    function = cycle.rng.choice(["ImportChargesFunction", "GetImportSessionFunction"])
    cycle.during(
        function,
        lambda: setattr(cycle.world.cloudblue.faults, "slow_seconds", seconds),
        lambda: setattr(cycle.world.cloudblue.faults, "slow_seconds", 0.0),
    )
    cycle.add("cloudblue.slow", f"{seconds}s on {operation or 'API'} during the first {function} invocation")


def _cloudblue_dropped(cycle: Cycle) -> None:
    n = cycle.rng.randint(1, 3)
    cycle.world.cloudblue.faults.drop_after_processing_next = n
    cycle.add("cloudblue.dropped", f"next {n} accepted importCharges get no answer")


def _cloudblue_token_expiry(cycle: Cycle) -> None:
    world = cycle.world
    world.cloud.runner.environment_overrides["APS_TOKEN"] = world.cloudblue.aps_token
    when = cycle.rng.choice(["before_import", "after_packet", "before_follow"])
    if when == "before_import":
        cycle.on_invocation(1, world.cloudblue.expire_tokens, "ImportChargesFunction")
        cycle.add("cloudblue.token_expiry", "APS token expires before the import")
    elif when == "after_packet":
        k = cycle.rng.randint(1, 6)
        world.injector.after_packet.setdefault(k, []).append(world.cloudblue.expire_tokens)
        cycle.add("cloudblue.token_expiry", f"APS token expires after packet {k} was recorded")
    else:
        cycle.on_invocation(1, world.cloudblue.expire_tokens, "GetImportSessionFunction")
        cycle.add("cloudblue.token_expiry", "APS token expires before the session is followed")


def _cloudblue_gateway(cycle: Cycle) -> None:
    n, operation = cycle.rng.randint(1, 4), cycle.cloudblue_operation()
    status, after = cycle.rng.choice([502, 504]), cycle.rng.random() < 0.5
    faults = cycle.world.cloudblue.faults
    faults.gateway_error_next, faults.gateway_status, faults.gateway_after_processing = n, status, after
    handled = "after CloudBlue handled them" if after else "before CloudBlue saw them"
    cycle.add("cloudblue.gateway", f"next {n} {operation or 'API'} requests answer {status}, {handled}")


def _cloudblue_failed_until_fixed(cycle: Cycle) -> None:
    subscription = cycle.rng.choice(cycle.world.subscriptions(cycle.result.month))
    cycle.world.cloudblue.deactivate_subscription(subscription)
    cycle.add("cloudblue.failed_until_fixed", f"subscription {subscription} inactive until fixed in CloudBlue")


def _cloudblue_failed_processed(cycle: Cycle) -> None:
    cycle.world.cloudblue.faults.fail_processing = FAILED_PROCESSING_DESC
    cycle.add("cloudblue.failed_processed", "the next closed sessions end FAILED_PROCESSED")


def _lambda_killed(cycle: Cycle) -> None:
    points: list[KillPoint] = ["before_record", "after_mark", "after_close"]
    drawn = cycle.rng.choice(points)
    point = cycle.kill_point or drawn
    k = cycle.rng.randint(1, 6)
    lapse = cycle.rng.random() < 0.5
    world = cycle.world
    world.injector.kill = KillPlan(point, k, lapse)

    def lapse_if_killed(logical_id: str, _n: int) -> None:
        if logical_id == "ImportChargesFunction" and world.injector.lapse_on_next_import:
            world.injector.lapse_on_next_import = False
            world.lapse_leases()

    world.invoke_hooks.append(lapse_if_killed)
    where = {"before_record": f"packet {k} accepted", "after_mark": f"packet {k} in flight", "after_close": "closed"}
    cycle.add(
        "lambda.killed",
        f"{where[point]}; lease {'lapses' if lapse else 'still held'} when Lambda retries",
    )


def _s3_duplicate_event(cycle: Cycle) -> None:
    cycle.flags.add("s3.duplicate_event")
    cycle.add("s3.duplicate_event", "the import's S3 event is delivered again")


def _s3_out_of_order(cycle: Cycle) -> None:
    cycle.flags.add("s3.out_of_order")
    cycle.add("s3.out_of_order", "a newer version's event is handled before the older one's")


def _review_approval(cycle: Cycle) -> None:
    cycle.world.use_approval("always")
    cycle.add("review.approval", "the mapping asks for every month to be approved: the runbook approves it")


def _month_run_twice(cycle: Cycle) -> None:
    cycle.flags.add("month.run_twice")
    cycle.add("month.run_twice", "the export runs again for the month")


FAULTS: dict[str, Callable[[Cycle], None]] = {
    "soracom.429": _soracom_429,
    "soracom.5xx": _soracom_5xx,
    "soracom.slow": _soracom_slow,
    "soracom.token_expiry": _soracom_token_expiry,
    "soracom.export_failed": _soracom_export_failed,
    "soracom.export_never": _soracom_export_never,
    "soracom.download": _soracom_download,
    "cloudblue.5xx": _cloudblue_5xx,
    "cloudblue.5xx_packets": _cloudblue_5xx_packets,
    "cloudblue.slow": _cloudblue_slow,
    "cloudblue.dropped": _cloudblue_dropped,
    "cloudblue.token_expiry": _cloudblue_token_expiry,
    "cloudblue.failed_processed": _cloudblue_failed_processed,
    "cloudblue.gateway": _cloudblue_gateway,
    "cloudblue.failed_until_fixed": _cloudblue_failed_until_fixed,
    "lambda.killed": _lambda_killed,
    "s3.duplicate_event": _s3_duplicate_event,
    "s3.out_of_order": _s3_out_of_order,
    "month.run_twice": _month_run_twice,
    "review.approval": _review_approval,
}


#: The simulator counters (``fired``) that say a fault of the catalogue fired; the other faults are the harness's.
FIRED_BY: dict[str, tuple[Literal["soracom", "cloudblue"], tuple[str, ...]]] = {
    "soracom.429": ("soracom", ("rate_limit_next",)),
    "soracom.5xx": ("soracom", ("server_error_next",)),
    "soracom.slow": ("soracom", ("slow_seconds",)),
    "soracom.token_expiry": ("soracom", ("expired_token",)),
    "soracom.export_failed": ("soracom", ("export_outcome",)),
    "soracom.export_never": ("soracom", ("export_outcome",)),
    "soracom.download": ("soracom", ("download_server_error_next", "truncate_download")),
    "cloudblue.5xx": ("cloudblue", ("server_error_next",)),
    "cloudblue.5xx_packets": ("cloudblue", ("server_error_on_packets",)),
    "cloudblue.slow": ("cloudblue", ("slow_seconds",)),
    "cloudblue.dropped": ("cloudblue", ("drop_after_processing_next",)),
    "cloudblue.token_expiry": ("cloudblue", ("expired_token",)),
    "cloudblue.failed_processed": ("cloudblue", ("fail_processing",)),
    "cloudblue.gateway": ("cloudblue", ("gateway_error_next",)),
    "cloudblue.failed_until_fixed": ("cloudblue", ("inactive_subscription",)),
}


def run_cycles(world: ChaosWorld, seed: int, cycles: int, start: int = 0) -> Iterator[CycleResult]:
    for index in range(start, start + cycles):
        yield Cycle(world, seed, index).run()


_ADDITIONAL_SUFFIX = re.compile(r"-a[0-9a-f]{12}$")
