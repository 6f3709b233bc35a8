"""The import use case: one S3 object version becomes charges in one rated CloudBlue session, exactly once.

The protocol (docs/how-it-works/import.md, "Exactly once", is the same page). CloudBlue rates a session
only once it is closed, so the session is the unit of atomicity: a session whose content is in doubt
is given up (never closed) and everything is sent again in a new one. The ledger's records are
described in ``adapters/ledger.py``.

1. **Claim.** A conditional write takes the object version for this attempt and gives it a new epoch,
   its fence. Every later ledger write of the attempt holds only while that epoch is still the
   object's, and a packet is sent only after such a write, so an attempt that a later claim superseded
   (slow, not dead) can neither record nor send again, however late its answers arrive. What people
   read (the report, an alert) is published only after the attempt's last fenced write. A finished
   object answers with its report; one that a live attempt holds fails, to be retried. The lease is for
   liveness only: a crashed attempt's retry claims the object once it lapsed.
   *Invariant: at most one attempt at a time can write, send or publish for an object.*
2. **Pin and plan.** The first attempt settles the file's coverage and currency and pins them with a
   copy of the mapping; its retries read the pins. The whole file is read and checked before anything
   is sent: any problem rejects it. *Invariant: every attempt of an object plans the same packets.*
3. **Look** (a read; nothing is taken). When another object already closed a session for the month's
   bill (a plain file) or for these bytes, this file ends HELD or DUPLICATE now, before anything is sent.
   **Review** (reads): the month as it stands with this file (the ledger's ``month#`` record: the files
   closed, at a version) against the months before it (``logic/variance.py``). When the mapping asks for
   a person's approval (always, or for an unusual month), the file ends AWAITING_APPROVAL with its
   preview; a person's decision (:func:`review_object`) makes it claimable with that plan and month
   version approved, or ends it REJECTED. *Invariant: nothing is sent that needed an approval it lacks.*
4. **Session.** The recorded session is resumed when its packets are the plan's and none is in doubt
   (every packet marked in flight was recorded accepted); otherwise it is given up and a new one is
   opened and recorded. *Invariant: a session given up is never closed.*
5. **Packets.** Each packet not yet accepted is marked in flight, sent, and recorded accepted. When
   CloudBlue says it did not take it (429, 503, a 4xx) the mark is removed; when its outcome is unknown
   (a 500, 502 or 504, a timeout or a dropped connection once it was sent) the session is given up:
   step 4 again, ``MAX_SESSIONS`` at most. *Invariant: whatever a session may hold is in the ledger.*
6. **Close.** One transaction: the fence holds, every packet is accepted, the session is marked
   closing, the month's bill (a plain file) and the bytes are taken for this object unless another
   object took them first, and the month's record is still at the version reviewed (it moves on, listing
   this file's totals). Only then is closeSession called. The loser's session is given up and left
   open, and the loser ends HELD or DUPLICATE; a file whose month changed is reviewed again (and held
   if it now needs an approval). *Invariant: at most one session is ever closed for a month's bill, and
   for the same bytes, each into the month it was reviewed with; a session marked closing is never
   given up.*
7. **Record and publish.** The report is staged under ``ledger/``, the end recorded in the ledger (CLOSED,
   or REJECTED, HELD, DUPLICATE, AWAITING_APPROVAL with the reason) naming it, then published as a
   projection of the ledger (``logic/publishing.py``): its alert sent when something is off, the report
   the ledger names written to ``reports/`` (its JSON last) and the ledger read again, the
   follow-session state machine started. A retry that finds a session marked closing closes it
   (closeSession again is harmless) and records it; a delivery that finds ``reports/`` behind the
   ledger publishes what the ledger names (an alert may so be sent twice, never lost).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, BinaryIO

from soracharge.adapters.cloudblue import ChargesImportManager
from soracharge.adapters.ledger import LEASE_SECONDS, Ledger, LedgerEntry, MonthMark, Pins
from soracharge.adapters.notifier import Notifier
from soracharge.adapters.storage import ReportStore, StoredObject
from soracharge.adapters.workflows import WorkflowStarter
from soracharge.errors import (
    CloudBlueError,
    CloudBlueUnavailableError,
    ImportInProgressError,
    ImportResumeError,
    ImportSupersededError,
    ImportTimeBudgetError,
    InvalidInputError,
    StorageError,
)
from soracharge.logic import alerts, guards, publishing, variance
from soracharge.logic.charges import charge_id_suffix, plan_import
from soracharge.logic.publishing import STAGED_REPORTS, public_report_key, save_report
from soracharge.logic.reconciliation import BillFacts, reconcile
from soracharge.models.accounts import Account, BillAccount, account_coverages, listed_operators
from soracharge.models.charges import EXACT, ImportPlan, Packets, ProblemKind
from soracharge.models.coverage import (
    COVERAGES,
    CURRENCIES,
    Coverage,
    coverage_label,
    coverage_of_currency,
    default_currency,
    parse_coverage,
)
from soracharge.models.imports import (
    IMPORTABLE_KEY,
    Amount,
    Approval,
    EndReason,
    FollowSessionRequest,
    ImportReport,
    ObjectRef,
    Problem,
    Reconciliation,
    ReportCounts,
    ReviewRequest,
    SessionProgress,
    SharedCost,
    Variance,
    report_key,
)
from soracharge.models.mapping import Mapping
from soracharge.observability import Metric, add_amount, count, logger

#: Sessions one attempt may open before it gives up (each after an outcome that could not be known).
MAX_SESSIONS = 3
#: The import stops sending when the function has less time left than this, and its retry resumes.
DEADLINE_MARGIN_SECONDS = 60.0
#: Object metadata (``x-amz-meta-import: additional``) that imports a second file for a month on purpose.
ADDITIONAL_FILE = "additional"
#: Where the import keeps what it needs across attempts in the data bucket (never read by people).
PINNED_MAPPINGS = "ledger/mappings/"
PINNED_TOTALS = "ledger/totals/"
#: Closing transactions an attempt tries while other files of the month keep closing (each judged again).
CLOSING_ROUNDS = 3
#: While it reads a file, an attempt renews its claim this often (its writes renew it too).
HEARTBEAT_SECONDS = LEASE_SECONDS / 3


@dataclass
class ImportDependencies:
    store: ReportStore
    ledger: Ledger
    cloudblue: ChargesImportManager
    workflows: WorkflowStarter
    #: The mapping of a coverage's bills, and where it was read from.
    mapping: Callable[[Coverage], tuple[Mapping, str]]
    follow_state_machine_arn: str
    notifier: Notifier
    concurrency: int = 8
    #: The coverages the stack exports: a file that names none is the stack's, when it has one.
    coverages: tuple[Coverage, ...] = ("jp",)
    #: The operators it exports besides its own (SoracomAccounts): a file of another one is refused.
    accounts: tuple[Account, ...] = ()
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    remaining_seconds: Callable[[], float] = field(default=lambda: math.inf)
    #: The import function's name, for the commands an alert gives (approve, reject).
    function_name: str = "<ImportChargesFunction>"


def import_object(obj: ObjectRef, deps: ImportDependencies) -> ImportReport:
    """Import one object version; return its report (the existing one when it was done before)."""
    logger.append_keys(objectKey=obj.key, objectVersion=obj.version_id)
    try:
        source, month = obj.layout()
    except InvalidInputError as exc:
        report = _report(deps, obj, "REJECTED", str(exc), problems=[Problem(message=str(exc))])
        report = report.model_copy(update={"reason": EndReason.PROBLEMS})
        unsorted_key = report_key(None, obj.version_id, obj.key)
        save_report(deps.store, unsorted_key, report)
        _alert(report, unsorted_key, deps)
        return report
    logger.append_keys(month=month)
    head = deps.store.head(obj.key, obj.version_id)
    if head is None:
        raise InvalidInputError(f"{obj.uri} (version {obj.version_id}) does not exist")
    obj = obj.model_copy(update={"version_id": head.version_id or obj.version_id})
    deps.ledger.migrate(lambda owner: _coverages_of(owner, deps))

    claim = deps.ledger.claim(obj.object_id, month=month)
    if not claim.granted:
        return _already_claimed(obj, claim.entry, deps)
    attempt = _Attempt(obj, source, month, head, claim.entry, deps)
    try:
        return attempt.run()
    except ImportSupersededError:
        count(Metric.IMPORTS_SUPERSEDED)
        raise
    except BaseException:
        with contextlib.suppress(Exception):  # a retry may claim at once (a lapsed lease allows it anyway)
            deps.ledger.release(obj.object_id, claim.entry.epoch)
        raise


def _already_claimed(obj: ObjectRef, entry: LedgerEntry, deps: ImportDependencies) -> ImportReport:
    """A delivery of an object another attempt holds (fail, to be retried) or that ended (its report)."""
    logger.info("Object version already claimed", extra={"ledgerStatus": entry.status})
    count(Metric.DUPLICATE_IMPORT_EVENTS)
    if entry.status == "IMPORTING":
        raise ImportInProgressError(
            f"{obj.uri} version {obj.version_id} is being imported by another invocation: this one will be retried"
        )
    if publishing.behind(obj, deps.store, entry):  # its last end's writer stopped before publishing it
        return _publish(obj, deps)
    key = public_report_key(obj)
    existing = deps.store.get_json(key)
    if existing is None:
        raise ImportInProgressError(f"{obj.uri} is {entry.status} in the ledger but its report is not written yet")
    report = ImportReport.model_validate(existing)
    if entry.status == "CLOSED" and report.import_session_id is not None:
        # in case it stopped before this
        _follow(obj, report.import_session_id, key, deps, report.coverage, report.operator)
    return report


def review_object(request: ReviewRequest, deps: ImportDependencies) -> ImportReport:
    """A person's decision on an import held for approval: ``approve`` sends exactly the plan previewed (the
    same packets, by the import's own protocol: the object becomes claimable with that plan recorded);
    ``reject`` ends it REJECTED with nothing sent. Deciding again the same way answers with the report."""
    obj = ObjectRef.from_object_id(request.object_id)
    logger.append_keys(objectKey=obj.key, objectVersion=obj.version_id, decision=request.decision)
    entry = deps.ledger.get(obj.object_id)
    if entry is None or entry.review_plan is None:
        raise InvalidInputError(
            f"{obj.uri} (version {obj.version_id}) was never held for approval: there is nothing to "
            f"{request.decision} (check the objectId in the alert)"
        )
    if entry.review_plan != request.plan or (entry.review_version or 0) != request.version:
        raise InvalidInputError(
            f"the preview decided on (plan {request.plan[:12]}..., month version {request.version}) is not the latest "
            f"preview of {obj.uri} (plan {entry.review_plan[:12]}..., month version {entry.review_version or 0}): "
            "nothing was decided. Read the latest preview and use its alert's command"
        )
    decided = "approved" if request.decision == "approve" else "rejected"
    if entry.decision is not None and entry.decision != decided:
        raise InvalidInputError(f"{obj.uri} was {entry.decision} by {entry.decided_by} already: nothing was changed")
    if entry.status == "AWAITING_APPROVAL":
        # One conditional write decides, carrying its own report: the answer is whether this write won
        staged = None
        if decided == "rejected":
            preview = deps.store.get_json(entry.report_key or "")
            if preview is None:
                raise ImportInProgressError(f"the preview of {obj.uri} is not written yet: decide again in a minute")
            report = _rejected_by(ImportReport.model_validate(preview), request.by, deps.clock())
            staged = f"{STAGED_REPORTS}{report.month}/{obj.version_id}/decision-{uuid.uuid4().hex}.json"
            deps.store.put_json(staged, report.to_event())
        won = deps.ledger.decide(
            obj.object_id,
            plan=request.plan,
            version=request.version,
            decision=decided,
            by=request.by,
            report_key=staged,
        )
        if won and staged is not None:
            logger.warning("Import rejected by a person", extra={"by": request.by})
            return _publish(obj, deps)
        if not won:
            entry = deps.ledger.get(obj.object_id) or entry
            if entry.decision != decided:
                raise InvalidInputError(
                    f"{obj.uri} was {entry.decision} by {entry.decided_by} meanwhile: your decision was not recorded"
                )
    if decided == "rejected":
        return _already_claimed(obj, entry, deps)  # rejected before: its report (published if it was not)
    return import_object(obj, deps)  # approved: the import claims it and sends the plan approved, once


def _rejected_by(preview: ImportReport, by: str, now: datetime) -> ImportReport:
    approval = (
        preview.approval.model_copy(update={"decision": "rejected", "by": by, "at": now}) if preview.approval else None
    )
    return preview.model_copy(
        update={
            "status": "REJECTED",
            "reason": EndReason.REVIEW_REJECTED,
            "summary": f"rejected by {by} after the preview: nothing was sent. {preview.summary}",
            "approval": approval,
            "updated_at": now,
        }
    )


@dataclass(frozen=True)
class _Settled:
    """What decides the packets of a file, as its first attempt settled and pinned it."""

    coverage: Coverage
    currency: str
    mapping: Mapping
    mapping_source: str
    #: The operator SoracomAccounts lists whose bill the file is; None: the stack's own.
    operator: str | None = None

    @property
    def account(self) -> BillAccount:
        return BillAccount(self.coverage, self.operator)


@dataclass(frozen=True)
class _Taken:
    """Another object closed a session for this file's bill or bytes: how this file ends."""

    status: str
    reason: EndReason
    other: str
    other_account: BillAccount | None


class _Attempt:
    """One attempt at one object version, holding the fence (``epoch``) its claim gave it."""

    def __init__(
        self, obj: ObjectRef, source: str, month: str, head: StoredObject, entry: LedgerEntry, deps: ImportDependencies
    ) -> None:
        self.obj = obj
        self.month = month
        self.head = head
        self.entry = entry
        self.epoch = entry.epoch
        self.deps = deps
        self.ledger = deps.ledger
        self.additional = head.metadata.get("import", "").lower() == ADDITIONAL_FILE
        self.base: dict[str, Any] = {"month": month, "source": source}
        #: Every session of the object given up: by earlier attempts, then by this one.
        self.given_up: list[int] = list(entry.abandoned_sessions)
        self._given_up_before = len(self.given_up)
        #: The session the ledger records for the object now (given up or closing aside).
        self.session: int | None = entry.session_id if entry.closing_session is None else None
        self.warnings: list[str] = []
        self.variance: Variance | None = None
        self.approval: Approval | None = None
        #: The month's record and the version of it this attempt judged (step 3b), which its closing requires.
        self.month_key = ""
        self.judged = 0
        #: The months before this one, as their reports say (read at the first review).
        self.earlier: list[variance.MonthTotals] | None = None
        self._renewed = time.monotonic()

    # -- the protocol, step by step ---------------------------------------------------------------

    def run(self) -> ImportReport:
        settled = self.settle()
        if isinstance(settled, list):
            return self.reject(settled, len(settled))
        plan, sha256 = self.plan(settled)
        self.base["sha256"] = sha256
        closing = self.entry.closing_session
        if plan.problems:
            if closing is not None:
                raise ImportResumeError(
                    f"{self.obj.uri}: session {closing} was marked closing by the last attempt, and this attempt "
                    f"reads {plan.problem_count} problem(s) in the file with the same pinned mapping (first: "
                    f"{plan.problems[0].message}): was the code changed in between? Nothing was sent again"
                )
            problems = [Problem.model_validate(p.model_dump()) for p in plan.problems]
            return self.reject(problems, plan.problem_count, plan)
        scope = settled.account.scope
        bill = None if self.additional else f"bill#{self.month}#{scope}"
        bytes_key = f"bytes#{self.month}#{sha256}"
        if closing is None:
            taken, take_from = self.look(bill, bytes_key, scope)
            if taken is not None:
                return self.not_imported(taken)
            self.review(plan, settled)
            if self.approval is not None and self.approval.decision == "pending":
                return self.await_approval(plan, settled)
            session, sent = self.send(plan)
            totals = self.stage_totals(plan)
            for _ in range(CLOSING_ROUNDS):
                month = MonthMark(self.month_key, self.judged, totals)
                if self.ledger.mark_closing(
                    self.obj.object_id, self.epoch, session, bill=bill, bytes_key=bytes_key, sha256=sha256,
                    take_from=take_from, month=month,
                ):  # fmt: skip
                    break
                ended = self.lost(bill, bytes_key, scope)
                if ended is not None:
                    return ended
                self.review(plan, settled)  # the month changed since it was judged: judged again
                if self.approval is not None and self.approval.decision == "pending":
                    return self.await_approval(plan, settled)
            else:
                raise ImportInProgressError(
                    f"{self.obj.uri}: other files of {self.month} kept closing while this one closed: it is retried"
                )
            closing = session
        else:
            sent = 0
        self.deps.cloudblue.close_session(closing)
        return self.closed(plan, settled, closing, sent)

    def settle(self) -> _Settled | list[Problem]:
        """Step 2: the coverage, currency and mapping pinned by the first attempt, or settled and pinned now."""
        settled = self._pinned() if self.entry.pins is not None else self._settle_and_pin()
        if isinstance(settled, _Settled):
            self.base.update(
                coverage=settled.coverage,
                operator=settled.operator,
                currency=settled.currency,
                mapping=settled.mapping_source,
            )
            logger.append_keys(coverage=settled.coverage, operator=settled.operator)
        return settled

    def _pinned(self) -> _Settled:
        pins = self.entry.pins
        assert pins is not None
        document = self.deps.store.get_json(pins.mapping)
        if document is None:
            raise StorageError(f"the mapping {self.obj.uri} was first imported with ({pins.mapping}) is gone")
        account = BillAccount.from_scope(pins.coverage)  # the ledger's coverage holds the account's scope
        return _Settled(
            coverage=account.coverage,
            currency=pins.currency,
            mapping=Mapping.model_validate(document["mapping"]).for_operator(account.operator),
            mapping_source=str(document["source"]),
            operator=account.operator,
        )

    def _settle_and_pin(self) -> _Settled | list[Problem]:
        coverage: Coverage | None
        problems: list[Problem] = []
        operator: str | None = None
        if self.entry.coverage is not None:  # settled by a version that pinned no mapping yet
            account = BillAccount.from_scope(self.entry.coverage)
            coverage, operator = account.coverage, account.operator
        else:
            operator, coverages, problems = file_operator(self.obj, self.head.metadata, self.deps)
            self.base["operator"] = operator
            if problems:
                return problems
            coverage, problems = file_coverage(self.obj, self.head.metadata, coverages, operator)
        self.base["coverage"] = coverage
        if coverage is None:
            return problems
        mapping, source = self.deps.mapping(coverage)
        self.base["mapping"] = source
        if operator is not None and (problems := _unlisted_operators(mapping, self.deps.accounts)):
            return problems
        if self.entry.currency is not None:
            currency = self.entry.currency
        else:
            currency, problems = file_currency(coverage, self.head.metadata, mapping.currency)
        self.base["currency"] = currency or None
        problems = problems or _metadata_problems(self.head.metadata)
        if problems:
            return problems
        document = {"source": source, "mapping": mapping.model_dump(mode="json", by_alias=True)}
        text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        pinned = f"{PINNED_MAPPINGS}{hashlib.sha256(text.encode()).hexdigest()}.json"
        self.deps.store.put_json(pinned, document)  # the same mapping, the same key: written again harmlessly
        scope = BillAccount(coverage, operator).scope  # the ledger's coverage: the account's scope
        self.entry = self.ledger.pin(self.obj.object_id, self.epoch, Pins(scope, currency, pinned))
        return _Settled(
            coverage=coverage,
            currency=currency,
            mapping=mapping.for_operator(operator),
            mapping_source=source,
            operator=operator,
        )

    def plan(self, settled: _Settled) -> tuple[ImportPlan, str]:
        """Step 2: the whole file read and checked; the plan and the file's SHA-256."""
        store, obj = self.deps.store, self.obj
        # An additional file's charges get ids of their own (from its bytes), apart from the first file's;
        # a Global bill's charges are marked apart from a Japan bill's.
        own = additional_id_suffix(_sha256_of(store, obj), obj.version_id) if self.additional else ""
        with store.open(obj.key, obj.version_id) as body:
            hashing = _HashingReader(body, self.heartbeat)
            plan = plan_import(
                io.BufferedReader(hashing, buffer_size=guards.SNIFF_BYTES),  # its start tells the encoding
                month=self.month,
                currency=settled.currency,
                mapping=settled.mapping,
                source=obj.uri,
                id_suffix=charge_id_suffix(settled.coverage, own, operator=settled.operator),
                reopen=lambda: store.open(obj.key, obj.version_id),  # a file with a problem is read again
            )
            return plan, hashing.hexdigest()

    def look(self, bill: str | None, bytes_key: str, scope: str) -> tuple[_Taken | None, tuple[str, str] | None]:
        """Step 3 (and after a lost closing): whether another object closed a session for this file's bill
        or bytes, so this file must not be imported; and, for an additional file, the object it may take
        the bytes from (CloudBlue failed to rate its session, or it imported them as another account's:
        coverage or operator). ``scope`` is the file's account's (:attr:`BillAccount.scope`)."""
        account = BillAccount.from_scope(scope)
        holder = self.ledger.holder(bytes_key)
        take_from = None
        if holder is not None and holder.object_id != self.obj.object_id:
            other = self.ledger.get(holder.object_id)
            failed = other is not None and other.status == "FAILED_PROCESSED"
            of = _account(other)
            if self.additional and (failed or (of is not None and of != account)):
                take_from = (holder.object_id, scope)
            elif failed:
                return _Taken("HELD", EndReason.FAILED_RATING, holder.object_id, of), None
            elif of in (None, account):
                return _Taken("DUPLICATE", EndReason.SAME_BYTES, holder.object_id, of), None
            else:
                return _Taken("DUPLICATE", EndReason.SAME_BYTES_OTHER_COVERAGE, holder.object_id, of), None
        holder = self.ledger.holder(bill) if bill is not None else None
        if holder is not None and holder.object_id != self.obj.object_id:
            other = self.ledger.get(holder.object_id)
            if other is not None and other.status == "FAILED_PROCESSED":
                return _Taken("HELD", EndReason.FAILED_RATING, holder.object_id, account), None
            exports = self.base["source"] == "exports" and _source_of(holder.object_id) == "exports"
            reason = EndReason.EXPORTED_TWICE if exports else EndReason.SECOND_FILE
            return _Taken("HELD", reason, holder.object_id, account), None
        return None, take_from

    def review(self, plan: ImportPlan, settled: _Settled) -> None:
        """Step 3b: the month, as it stands with this file, against the months before it; and whether a person
        must approve the plan first.

        The month as it stands is the ledger's record of it (``month#``: the totals of each file closed, at a
        version), plus this file: the closing (step 6) holds only while the month is still at the version
        judged here, so no file is closed into a month other than the one it was judged (and approved) with.
        An approval holds for the plan and the month version it was given for."""
        self.month_key = f"month#{self.month}#{settled.account.scope}"
        state = self.ledger.month_state(self.month_key)
        self.judged = state.version
        if self.earlier is None:  # read once an attempt: a review again after a refused closing reuses them
            reports = variance.imported_reports(self.deps.store, variance.earlier_months(self.month))
            self.earlier = variance.history(
                reports, settled.coverage, self.month, currency=settled.currency, operator=settled.operator
            )
        earlier = self.earlier
        month = variance.month_with(
            [self.deps.store.get_json(key) or {} for key in state.files], self.month, plan.per_customer, plan.per_item
        )
        self.variance = variance.compare(
            self.month, month.per_customer, month.per_item, earlier, settled.mapping.review.variance, settled.currency
        )
        fingerprint = _fingerprint(plan)
        entry = self.entry
        approved = entry.decision == "approved" and entry.review_plan is not None
        if approved and entry.review_version == self.judged:
            if entry.review_plan != fingerprint:
                raise ImportResumeError(
                    f"{self.obj.uri}: the plan {entry.decided_by} approved ({(entry.review_plan or '')[:12]}) is not "
                    f"the plan this attempt reads ({fingerprint[:12]}) with the same pinned file and mapping: was the "
                    "code changed in between? Nothing was sent"
                )
            at = datetime.fromtimestamp(entry.decided_at, UTC) if entry.decided_at is not None else None
            asked = "always" if entry.review_asked == "always" else "unusual"
            self.approval = Approval(
                asked_because=asked,
                plan=fingerprint,
                month_version=self.judged,
                decision="approved",
                by=entry.decided_by,
                at=at,
            )
            return
        if approved:
            self.warnings.append(
                f"{entry.decided_by} approved this file against the month as it stood then; another file of the month "
                "was imported since, so it is previewed again"
            )
        mode = settled.mapping.review.approval
        self.approval = None
        if mode == "always" or (mode == "unusual" and self.variance.unusual):
            self.approval = Approval(
                asked_because="always" if mode == "always" else "unusual", plan=fingerprint, month_version=self.judged
            )

    def stage_totals(self, plan: ImportPlan) -> str:
        """The file's totals, staged for the month's record (``month#``: listed there once it closes)."""
        key = f"{PINNED_TOTALS}{self.month}/{self.obj.version_id}/{self.epoch}.json"
        self.deps.store.put_json(
            key,
            {
                "perCustomer": {name: str(amount) for name, amount in plan.per_customer.items()},
                "perItem": {name: str(amount) for name, amount in plan.per_item.items()},
            },
        )
        return key

    def await_approval(self, plan: ImportPlan, settled: _Settled) -> ImportReport:
        """AWAITING_APPROVAL: the preview (every charge, the reconciliation, the variance) published, nothing sent."""
        assert self.approval is not None
        assert self.variance is not None
        why = (
            f"the month is unusual against {self.variance.compared_with}: {self.variance.flags[0].message}"
            + (f" (and {len(self.variance.flags) - 1} more)" if len(self.variance.flags) > 1 else "")
            if self.approval.asked_because == "unusual"
            else "the mapping asks for every month to be approved (review.approval: always)"
        )
        nothing = "Nothing was sent"
        if self.session is not None:  # packets were sent before the month changed: never closed, never rated
            nothing = "Nothing was rated"
            self.warnings.append(
                f"session {self.session} was given up and left open, never closed (CloudBlue does not rate an open "
                "session): the month changed after this file's packets were sent, and it needs an approval now. Do "
                f"not close session {self.session}."
            )
        summary = (
            f"held for approval: {why}. {nothing}: {len(plan.charges)} charges ({plan.charges_sum} "
            f"{settled.currency}) are sent exactly as previewed once a person approves them"
        )
        report = self.report(
            "AWAITING_APPROVAL",
            summary,
            reason=EndReason.REVIEW,
            counts=ReportCounts(rows=plan.rows, charges=len(plan.charges), packets=len(plan.packets(0))),
            reconciliation=_reconcile(
                plan, settled.currency, settled.mapping, bill_facts(self.head.metadata), imported=plan.charges_sum
            ),
            warnings=self.warnings,
            **_totals(plan, settled.mapping),
        )
        self.end(
            report,
            review_plan=self.approval.plan,
            review_asked=self.approval.asked_because,
            review_version=str(self.judged),
        )
        count(Metric.IMPORTS_AWAITING_APPROVAL)
        logger.warning("Import held for approval", extra={"asked": self.approval.asked_because})
        return report

    def send(self, plan: ImportPlan) -> tuple[int, int]:
        """Steps 4 and 5: every packet accepted in one session; the session and the packets sent now."""
        fingerprint = _fingerprint(plan)
        count_ = len(plan.packets(0))
        entry = self.entry
        session = entry.session_id
        accepted = entry.accepted
        if session is not None:
            reason = None
            if entry.fingerprint != fingerprint:
                reason = "its packets are not this file's plan (it was planned by another version of soracharge)"
            elif entry.unconfirmed:
                reason = f"packets {sorted(i + 1 for i in entry.unconfirmed)} were being sent when its attempt stopped"
            if reason is not None:
                self.give_up(session, reason)
                session = None
        opened = 0
        while True:
            if session is None:
                if opened >= MAX_SESSIONS:
                    raise CloudBlueUnavailableError(
                        f"gave {MAX_SESSIONS} sessions up in this attempt after outcomes that could not be known: "
                        "stopping; nothing was rated, and Lambda's retry (or a re-delivered event) starts a new session"
                    )
                session = self.deps.cloudblue.open_session().import_session_id
                opened += 1
                self.ledger.open_session(
                    self.obj.object_id, self.epoch, session, packets=count_, fingerprint=fingerprint
                )
                self.session = session
                accepted = frozenset()
            logger.append_keys(importSessionId=session)
            to_send = [index for index in range(count_) if index not in accepted]
            logger.info("Sending packets", extra={"packets": len(to_send), "alreadyAccepted": len(accepted)})
            if self.send_packets(plan.packets(session), to_send, session):
                self.give_up(session, "a packet was sent and no answer came back (its outcome is unknown)")
                session = None
                continue
            return session, len(to_send)

    def send_packets(self, packets: Packets, indexes: list[int], session: int) -> bool:
        """Send packets with bounded concurrency; True when an outcome was unknown (the session must be given up).

        Each packet is marked in flight (the fenced write that allows the send), sent, and recorded
        accepted. Sending stops at the first failure, and before the function runs out of time. Each
        packet is built by the thread that sends it, so only ``concurrency`` packets are ever in memory.
        """
        stop, unknown = threading.Event(), threading.Event()
        object_id, epoch, deps = self.obj.object_id, self.epoch, self.deps

        def send(index: int) -> None:
            if stop.is_set():
                return
            try:
                if deps.remaining_seconds() < DEADLINE_MARGIN_SECONDS:
                    raise ImportTimeBudgetError(f"stopped sending {self.obj.uri} with too little time left")
                body = packets[index].to_json_bytes()
                self.ledger.mark_in_flight(object_id, epoch, session, index)
                try:
                    deps.cloudblue.import_charges(body)
                except CloudBlueError as exc:
                    if getattr(exc, "outcome_unknown", False):
                        unknown.set()
                        stop.set()
                        return
                    self.ledger.unmark_in_flight(object_id, epoch, session, index)  # CloudBlue did not take it
                    raise
                # Anything failing from here on leaves the packet in flight: the next attempt gives the session up.
                self.ledger.record_packet(object_id, epoch, session, index)
            except BaseException:
                stop.set()  # the first failure stops every packet not yet started
                raise

        with ThreadPoolExecutor(max_workers=max(1, deps.concurrency), thread_name_prefix="import-charges") as pool:
            futures = [pool.submit(send, index) for index in indexes]
            wait(futures, return_when=FIRST_EXCEPTION)
        if unknown.is_set():
            return True
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return False

    def give_up(self, session: int, reason: str) -> None:
        self.ledger.give_up(self.obj.object_id, self.epoch, session)
        self.given_up.append(session)
        self.session = None
        self.warnings.append(
            f"session {session} was given up and left open, never closed (CloudBlue does not rate an open "
            f"session): {reason}. Every charge was sent again in a new session. Do not close session {session}."
        )

    def lost(self, bill: str | None, bytes_key: str, scope: str) -> ImportReport | None:
        """Step 6 refused: superseded (stop), another object closed a session for the bill or bytes first (its
        end), or the month changed since it was judged (None: judge it again)."""
        current = self.ledger.get(self.obj.object_id)
        if current is None or current.epoch != self.epoch:
            raise ImportSupersededError(f"{self.obj.uri}: a later attempt took the import over before it closed")
        taken, _ = self.look(bill, bytes_key, scope)
        if taken is not None:
            return self.not_imported(taken)
        if self.ledger.month_state(self.month_key).version != self.judged:
            return None
        raise StorageError(f"{self.obj.uri}: the closing transaction was refused, and no other file holds the month")

    def closed(self, plan: ImportPlan, settled: _Settled, session: int, sent: int) -> ImportReport:
        """Step 7 for a closed session: staged report, CLOSED, then the report, an alert if needed, the follow."""
        packets = plan.packets(session)
        with localcontext(EXACT):
            imported = sum((packets.total(i) for i in range(len(packets))), Decimal(0))
        counts = ReportCounts(
            rows=plan.rows,
            charges=len(plan.charges),
            packets=len(packets),
            packets_sent_this_run=sent,
            packets_already_accepted=len(packets) - sent,
        )
        summary = (
            f"{len(plan.charges)} charges ({plan.charges_sum} {settled.currency}, {settled.account.label}) "
            f"imported in CloudBlue session {session}, closed and waiting for rating"
        )
        report = self.report(
            "CLOSED",
            summary,
            import_session_id=session,
            session_status="NEW",
            counts=counts,
            reconciliation=_reconcile(
                plan, settled.currency, settled.mapping, bill_facts(self.head.metadata), imported=imported
            ),
            warnings=self.warnings,
            **_totals(plan, settled.mapping),
        )
        self.end(report)
        count(Metric.IMPORTS_CLOSED)
        count(Metric.ROWS_READ, plan.rows)
        count(Metric.CHARGES_SENT, len(plan.charges))
        count(Metric.PACKETS_SENT, sent)
        count(Metric.SESSIONS_ABANDONED, len(self.given_up) - self._given_up_before)
        add_amount(Metric.AMOUNT_IMPORTED, imported, settled.currency, settled.coverage, settled.operator)
        if report.reconciliation is not None and not report.reconciliation.balanced:
            count(Metric.RECONCILIATION_IMBALANCED)
        return report

    def not_imported(self, taken: _Taken) -> ImportReport:
        """HELD or DUPLICATE: another object closed a session for the month's bill or these bytes."""
        report = self.report(
            taken.status,
            _held_summary(taken, self.base, self.session),
            duplicate_of=taken.other,
            reason=taken.reason,
            warnings=self.warnings,
        )
        self.end(report)
        count(_NOT_IMPORTED_METRICS[taken.status])
        logger.warning("File not imported", extra={"status": taken.status, "reason": taken.reason})
        return report

    def reject(self, problems: list[Problem], problem_count: int, plan: ImportPlan | None = None) -> ImportReport:
        said = guards.diagnosis(plan) if plan is not None else (problems[0].message if len(problems) == 1 else None)
        summary = (
            f"{problem_count} problem(s) in {self.obj.uri}: nothing was imported; fix the file and upload it again"
        )
        extra: dict[str, Any] = (
            {
                "counts": ReportCounts(rows=plan.rows, problems=problem_count, unmapped_rows=plan.unmapped_rows),
                "problem_counts": plan.kinds,
            }
            if plan
            else {"problem_counts": {ProblemKind.SETTING: problem_count}}
        )
        report = self.report(
            "REJECTED",
            f"{said}. {summary}" if said else summary,
            reason=EndReason.PROBLEMS,
            diagnosis=said,
            problems=problems,
            problems_not_listed=max(problem_count - len(problems), 0),
            **extra,
        )
        self.end(report)
        count(Metric.IMPORTS_REJECTED)
        if plan is not None:
            count(Metric.ROWS_READ, plan.rows)
            count(Metric.UNMAPPED_ROWS, plan.unmapped_rows)
        logger.warning("Import rejected", extra={"problems": problem_count})
        return report

    # -- step 7: staged, recorded (fenced), then published ------------------------------------------

    def report(self, status: str, summary: str, **fields: Any) -> ImportReport:
        left_open = [self.session] if status != "CLOSED" and self.session is not None else []
        given_up = [*self.given_up, *left_open]
        review = {"variance": self.variance, "approval": self.approval}
        return _report(
            self.deps, self.obj, status, summary, abandoned_sessions=given_up, **self.base, **review, **fields
        )

    def end(self, report: ImportReport, **recorded: str) -> None:
        """Stage the report, record the end in the ledger (fenced: a superseded attempt stops here), publish."""
        staged = f"{STAGED_REPORTS}{self.month}/{self.obj.version_id}/{self.epoch}.json"
        self.deps.store.put_json(staged, report.to_event())
        extra = {"duplicate_of": report.duplicate_of} if report.duplicate_of else {}
        extra |= recorded
        if report.reason is not None:
            extra["reason"] = report.reason.value
        self.ledger.end(self.obj.object_id, self.epoch, report.status, report_key=staged, **extra)  # type: ignore[arg-type]
        _publish(self.obj, self.deps)

    def heartbeat(self) -> None:
        """While the file is read: the claim's lease runs on (best effort: the writes that matter are fenced)."""
        if time.monotonic() - self._renewed < HEARTBEAT_SECONDS:
            return
        self._renewed = time.monotonic()
        with contextlib.suppress(StorageError):
            self.ledger.renew(self.obj.object_id, self.epoch)


def _publish(obj: ObjectRef, deps: ImportDependencies) -> ImportReport:
    """The report the ledger names now, published (``logic/publishing.py``): the alert it owes, the report,
    then the rating followed when it is CLOSED."""

    def follow(report: ImportReport, key: str) -> None:
        if report.status == "CLOSED" and report.import_session_id is not None:
            _follow(obj, report.import_session_id, key, deps, report.coverage, report.operator)

    return publishing.publish(
        obj,
        deps.store,
        deps.ledger,
        deps.notifier,
        alert=lambda report, key: alerts.for_report(report, key, import_function=deps.function_name),
        after=follow,
    )


def _held_summary(taken: _Taken, base: dict[str, Any], left_open: int | None) -> str:
    other, month = taken.other, base["month"]
    summary = {
        EndReason.SAME_BYTES: (
            f"the same bytes were already imported for the month from {other}: nothing imported again"
        ),
        EndReason.SAME_BYTES_OTHER_COVERAGE: (
            f"the same bytes were already imported for the month as the "
            f"{(taken.other_account or BillAccount('jp')).label} bill, from {other}: nothing imported again. One of "
            "the two names the wrong coverage or operator"
        ),
        EndReason.SECOND_FILE: (
            f"a different file for {month} was already imported from {other}; importing this one too would bill "
            f"the month twice, so nothing was imported. If it replaces the first file, import only the "
            "differences (see the runbook, docs/operate/runbook.md); if it is a second bill for the month, upload it "
            f"again with the metadata import={ADDITIONAL_FILE}"
        ),
        EndReason.EXPORTED_TWICE: (
            f"the month was exported twice and the other export, {other}, was imported: nothing was imported "
            "from this one"
        ),
        EndReason.FAILED_RATING: (
            f"CloudBlue failed to rate the session of {other} (FAILED_PROCESSED), which holds this month's bill "
            f"(or these bytes): nothing was imported. Once the cause is fixed in CloudBlue, upload the file again "
            f"with the metadata import={ADDITIONAL_FILE}, unless the month was imported again since (a file "
            f"uploaded with import={ADDITIONAL_FILE} after the failure: see the month's reports)"
        ),
    }[taken.reason]
    if left_open is not None:
        summary += (
            f". Its session {left_open} was given up and left open, never closed (CloudBlue does not rate an open "
            f"session). Do not close session {left_open}."
        )
    return summary


_NOT_IMPORTED_METRICS = {"DUPLICATE": Metric.IMPORTS_DUPLICATE, "HELD": Metric.IMPORTS_HELD}


def additional_id_suffix(sha256: str, version_id: str | None = None) -> str:
    """The ``extChargeId`` suffix of an additional file's charges (see logic/charges.py): from its bytes
    and its object version, so a file imported again after CloudBlue failed to rate it gets new ids."""
    return "a" + hashlib.sha256(f"{sha256}#{version_id or ''}".encode()).hexdigest()[:12]


def _sha256_of(store: ReportStore, obj: ObjectRef) -> str:
    digest = hashlib.sha256()
    with store.open(obj.key, obj.version_id) as body:
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bill_facts(metadata: dict[str, str]) -> BillFacts | None:
    """The bill the export flow stored with the CSV (``bill-amount``, ``coupon-amount``), or None (an upload)."""
    if not metadata.get("bill-amount"):
        return None
    return BillFacts(
        amount=Decimal(metadata["bill-amount"]), applied_coupon_amount=Decimal(metadata.get("coupon-amount") or 0)
    )


def file_operator(
    obj: ObjectRef, metadata: dict[str, str], deps: ImportDependencies
) -> tuple[str | None, tuple[Coverage, ...], list[Problem]]:
    """The operator of a file's bill: its key's folder (``<yyyyMM>/OP0012345678/g/``), else its metadata
    ``operator``; with the coverages the stack imports of it. None: the stack's own operator (the file names
    none). A file naming two operators, or one SoracomAccounts does not list, is refused: whose bill it is
    would be a guess."""
    named = {
        where: value
        for where, value in (
            ("the key's folder", obj.key_operator()),
            ("the metadata operator", metadata.get("operator", "").strip()),
        )
        if value
    }
    if len(set(named.values())) > 1:
        said = ", ".join(f"{where} says {value}" for where, value in named.items())
        return None, (), [_setting(column="operator", value=",".join(sorted(set(named.values()))), message=said)]
    if not named:
        return None, deps.coverages, []
    (where, operator), *_ = named.items()
    coverages = account_coverages(deps.accounts, operator)
    if coverages is None:
        return (
            operator,
            (),
            [
                _setting(
                    column="operator",
                    value=operator,
                    message=(
                        f"{where} says operator {operator}, which is not one of this stack's accounts (SoracomAccounts "
                        f"lists {listed_operators(deps.accounts)}): add it to SoracomAccounts, or upload the file to "
                        "the stack that lists it"
                    ),
                )
            ],
        )
    return operator, coverages, []


def _unlisted_operators(mapping: Mapping, accounts: tuple[Account, ...]) -> list[Problem]:
    """A listed operator's bill is read by the mapping's ``customer.operators`` only when every operator it names
    is one SoracomAccounts lists: one it does not (a typo of an id, an operator no longer exported) would leave
    that operator's bill read by the customer column instead, a guess at whose it is."""
    unlisted = [operator for operator in mapping.customer.operators if account_coverages(accounts, operator) is None]
    if not unlisted:
        return []
    return [
        _setting(
            column="operator",
            value=", ".join(unlisted),
            message=(
                f"the mapping's customer.operators names {', '.join(unlisted)}, which SoracomAccounts does not list "
                f"(it lists {listed_operators(accounts)}): a mistyped id would leave an operator's bill read by the "
                "customer column. Correct the id, or remove the operators no longer exported from the mapping"
            ),
        )
    ]


def file_coverage(
    obj: ObjectRef,
    metadata: dict[str, str],
    coverages: tuple[Coverage, ...],
    operator: str | None = None,
) -> tuple[Coverage | None, list[Problem]]:
    """The coverage of a file's bill: its key's folder (``<yyyyMM>/g/``), else its metadata ``coverage``,
    else the coverage of its metadata ``currency``, else the stack's own when it exports one.

    None, with the problems, when the file names none on a stack of two, or names two that differ.
    """
    named: dict[str, Coverage] = {}
    if (folder := obj.key_coverage()) is not None:
        named["the key's folder"] = folder
    if given := metadata.get("coverage", "").strip().lower():
        try:
            named["the metadata coverage"] = parse_coverage(given)
        except InvalidInputError:
            return None, [_setting(column="coverage", value=given, message="coverage must be jp or g")]
    if (of_currency := coverage_of_currency(metadata.get("currency"))) is not None:
        named[f"the metadata currency {metadata['currency'].upper()}"] = of_currency
    if len(set(named.values())) > 1:
        said = ", ".join(f"{where} says {coverage_label(coverage)}" for where, coverage in named.items())
        return None, [
            Problem(
                kind=ProblemKind.SETTING, column="coverage", value=",".join(sorted(set(named.values()))), message=said
            )
        ]
    if named:
        (where, coverage), *_ = named.items()
        if coverage in coverages:
            return coverage, []
        exported = " and ".join(coverage_label(c) for c in coverages)
        listed = ",".join(coverages)
        said = f"SoracomCoverageType {listed}" if operator is None else f"SoracomAccounts lists {operator} on {listed}"
        setting = "SoracomCoverageType" if operator is None else f"{operator}'s coverages in SoracomAccounts"
        whose = "" if operator is None else f" of operator {operator}"
        return None, [
            _setting(
                column="coverage",
                value=coverage,
                message=(
                    f"{where} says {coverage_label(coverage)}, and this stack imports {exported} bills{whose} only "
                    f"({said}): import it in a stack of {coverage}, or add {coverage} to {setting}"
                ),
            )
        ]
    if len(coverages) == 1:
        return coverages[0], []
    return None, [
        _setting(
            column="coverage",
            message=(
                f"this stack imports {' and '.join(coverage_label(c) for c in coverages)} bills and the file names "
                "neither: upload it to uploads/<yyyyMM>/jp/ or uploads/<yyyyMM>/g/, or with the metadata "
                "coverage=jp|g (or currency=JPY|USD|EUR)"
            ),
        )
    ]


def file_currency(coverage: Coverage, metadata: dict[str, str], mapped: str | None) -> tuple[str, list[Problem]]:
    """The bill's currency, which has one truth: the file's metadata (the export flow's is the bill's own, an
    upload's is a person's), the mapping's ``currency`` and the coverage must all agree. Any two that differ
    reject the file, naming each source and its value; a Global bill's currency named nowhere is a problem,
    never a guess (Global bills are in USD or EUR); a Japan bill named nowhere is JPY.
    """
    told = {}
    if given := metadata.get("currency", "").strip().upper():
        told["the file's metadata currency"] = given
    if mapped:
        told["the mapping's currency"] = mapped.upper()
    known = {c for currencies in CURRENCIES.values() for c in currencies}
    for where, value in told.items():
        if value not in known:
            return "", [
                Problem(
                    kind=ProblemKind.SETTING,
                    column="currency",
                    value=value,
                    message=f"currency must be JPY, USD or EUR ({where})",
                )
            ]
    allowed = CURRENCIES[coverage]
    values = set(told.values())
    if len(values) > 1 or not values <= set(allowed):
        said = ", ".join(f"{where} is {value}" for where, value in told.items())
        return "", [
            _setting(
                column="currency",
                value=",".join(told.values()),
                message=(
                    f"the bill's currency is not the same everywhere: {said}, and {coverage_label(coverage)} bills "
                    f"in {' or '.join(allowed)}: nothing is imported on a guess. Correct the one that is wrong (the "
                    "upload's metadata currency=..., the mapping's currency, or the coverage the file is uploaded as)"
                ),
            )
        ]
    if values:
        return values.pop(), []
    if len(allowed) == 1:
        return default_currency(coverage), []
    options = "|".join(allowed)
    return "", [
        _setting(
            column="currency",
            message=(
                f"no currency for this file: {coverage_label(coverage)} bills in {' or '.join(allowed)}; "
                f"the export flow sets it as object metadata; for an upload, set 'currency' in the mapping or upload "
                f"with the metadata currency={options}"
            ),
        )
    ]


def _metadata_problems(metadata: dict[str, str]) -> list[Problem]:
    problems = []
    for name, what in (("bill-amount", "the bill amount"), ("coupon-amount", "the coupon amount")):
        value = metadata.get(name)
        if not value:
            continue
        try:
            if not Decimal(value).is_finite():
                raise InvalidOperation
        except InvalidOperation:
            problems.append(_setting(column=name, value=value, message=f"{what} is not a number"))
    if metadata.get("coupon-amount") and not metadata.get("bill-amount"):
        coupon = metadata["coupon-amount"]
        problems.append(
            _setting(
                column="coupon-amount",
                value=coupon,
                message="a coupon amount needs a bill-amount",
            )
        )
    return problems


def _setting(*, column: str, message: str, value: str | None = None) -> Problem:
    """A problem of the file's coverage, currency or metadata (not of its rows)."""
    return Problem(column=column, value=value, message=message, kind=ProblemKind.SETTING)


def _account(entry: LedgerEntry | None) -> BillAccount | None:
    """The account (coverage, operator) an object's import settled, when it is known."""
    text = entry.pins.coverage if entry is not None and entry.pins is not None else entry.coverage if entry else None
    with contextlib.suppress(InvalidInputError):
        return BillAccount.from_scope(text) if text else None
    return None


def _source_of(object_id: str) -> str | None:
    """``exports`` or ``uploads``: where the object of an id (``bucket/key#version``) lies."""
    key = object_id.rpartition("#")[0].partition("/")[2]
    match = IMPORTABLE_KEY.fullmatch(key)
    return match["source"] if match else None


def _coverages_of(object_id: str, deps: ImportDependencies) -> Iterable[str]:
    """The coverage of a month lock's owner from before coverages (the migration asks, once): its folder,
    its object's metadata, or its report's currency; both when none tells (a month held, never doubled)."""
    location, _, version = object_id.rpartition("#")
    bucket, _, key = location.partition("/")
    if (folder := ObjectRef(bucket=bucket, key=key, version_id=version).key_coverage()) is not None:
        return [folder]
    head = deps.store.head(key, None if version == "null" else version)
    for facts in (head.metadata if head else {}, deps.store.get_json(report_key(None, version, key)) or {}):
        with contextlib.suppress(InvalidInputError):
            return [parse_coverage(str(facts.get("coverage") or ""))]
        if (of := coverage_of_currency(facts.get("currency"))) is not None:
            return [of]
    return list(COVERAGES)


def dry_run_report(
    stream: BinaryIO,
    *,
    month: str,
    currency: str,
    mapping: Mapping,
    source: str,
    now: datetime | None = None,
    coverage: Coverage = "jp",
    additional_suffix: str = "",
    operator: str | None = None,
) -> tuple[ImportPlan, ImportReport]:
    """Plan a file without sending anything: the charges it would import and the report it would get.

    The charges' ids are the ones the import would give them: the coverage's mark, the operator's (one
    SoracomAccounts lists), then an additional file's ``additional_suffix`` (:func:`additional_id_suffix`);
    the mapping reads it as that operator's bill (``customer.operators``)."""
    id_suffix = charge_id_suffix(coverage, additional_suffix, operator=operator)
    mapping = mapping.for_operator(operator)
    plan = plan_import(stream, month=month, currency=currency, mapping=mapping, source=source, id_suffix=id_suffix)
    moment = now or datetime.now(UTC)
    base: dict[str, Any] = {
        "month": month,
        "coverage": coverage,
        "operator": operator,
        "currency": currency,
        "object": ObjectRef(bucket="-", key=source),
        "created_at": moment,
        "updated_at": moment,
    }
    if plan.problems:
        problems = [Problem.model_validate(p.model_dump()) for p in plan.problems]
        said = guards.diagnosis(plan)
        summary = f"{plan.problem_count} problem(s) in {source}: it would be rejected and nothing imported"
        fields: dict[str, Any] = {
            "status": "REJECTED",
            "reason": EndReason.PROBLEMS,
            "summary": f"{said}. {summary}" if said else summary,
            "diagnosis": said,
            "problem_counts": plan.kinds,
            "problems": problems,
            "problems_not_listed": max(plan.problem_count - len(problems), 0),
            "counts": ReportCounts(rows=plan.rows, problems=plan.problem_count, unmapped_rows=plan.unmapped_rows),
        }
    else:
        fields = {
            "status": "DRY_RUN",
            "summary": f"dry run: {len(plan.charges)} charges ({plan.charges_sum} {currency}) would be imported",
            "counts": ReportCounts(rows=plan.rows, charges=len(plan.charges), packets=len(plan.packets(0))),
            "reconciliation": _reconcile(plan, currency, mapping, None, imported=plan.charges_sum),
            **_totals(plan, mapping),
        }
    return plan, ImportReport.model_validate({**base, **fields})


def _fingerprint(plan: ImportPlan) -> str:
    """What the packets are (which charges, in which packet), whatever session they are sent in."""
    of_frame = getattr(plan.charges, "fingerprint", None)
    if of_frame is not None:  # the fast path says it without building every charge
        return str(of_frame())
    digest = hashlib.sha256()
    for index, packet in enumerate(plan.packets(0)):
        for charge in packet.charges:
            digest.update(f"{index}:{charge.ext_charge_id}:{charge.ext_hash}\n".encode())
    return digest.hexdigest()


def _follow(
    obj: ObjectRef,
    session_id: int,
    key: str,
    deps: ImportDependencies,
    coverage: Coverage | None = None,
    operator: str | None = None,
) -> None:
    _, month = obj.layout()
    request = FollowSessionRequest(
        object_id=obj.object_id,
        month=month,
        coverage=coverage,
        operator=operator,
        report_key=key,
        session=SessionProgress(import_session_id=session_id, status="NEW", month=month, object_id=obj.object_id),
    )
    name = follow_execution_name(obj.object_id, session_id)
    deps.workflows.start(deps.follow_state_machine_arn, name, request.to_event())


def follow_execution_name(object_id: str, session_id: int) -> str:
    """The follow-import-session execution watching ``session_id`` for ``object_id``: unique per object
    version and session (session ids alone may be reused), so a repeated start is a no-op."""
    return f"import-{session_id}-{hashlib.sha256(object_id.encode()).hexdigest()[:16]}"


def _alert(report: ImportReport, key: str, deps: ImportDependencies) -> None:
    alert = alerts.for_report(report, key, import_function=deps.function_name)
    if alert is not None:
        alerts.publish(deps.notifier, alert)


def _report(deps: ImportDependencies, obj: ObjectRef, status: str, summary: str, **fields: object) -> ImportReport:
    now = deps.clock()
    return ImportReport.model_validate(
        {"status": status, "summary": summary, "object": obj, "created_at": now, "updated_at": now, **fields}
    )


def _reconcile(
    plan: ImportPlan, currency: str, mapping: Mapping, bill: BillFacts | None, *, imported: Decimal
) -> Reconciliation:
    """The CSV's sum made into the bill step by step, next to the sum of the charges CloudBlue accepted."""
    return reconcile(
        csv_sum=plan.csv_sum, imported=imported, currency=currency, bill=bill, tax=mapping.reconciliation.tax
    )


def _totals(plan: ImportPlan, mapping: Mapping) -> dict[str, list[Amount] | list[SharedCost]]:
    def amounts(values: dict[str, Decimal], sims: dict[str, int] | None = None) -> list[Amount]:
        devices = plan.devices_per_customer
        return [
            Amount(
                name=name,
                amount=amount,
                sims=sims.get(name, 0) if sims is not None else None,
                devices=devices.get(name) if sims is not None else None,
            )
            for name, amount in sorted(values.items())
        ]

    return {
        "shares": [SharedCost.model_validate(split.model_dump()) for split in plan.shares],
        "per_customer": amounts(plan.per_customer, plan.sims_per_customer),
        "per_subscription": amounts(plan.per_subscription),
        "per_item": amounts(plan.per_item),
        "defaulted": [Amount(name=d.value, amount=d.amount, sims=d.sims) for d in guards.defaulted(plan, mapping)],
    }


class _HashingReader(io.RawIOBase):
    """A raw stream over ``source`` that computes the SHA-256 of everything read through it, calling
    ``tick`` at each read (the attempt's heartbeat)."""

    def __init__(self, source: BinaryIO, tick: Callable[[], None] = lambda: None) -> None:
        self._source = source
        self._digest = hashlib.sha256()
        self._tick = tick

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self._tick()
        data = self._source.read(len(buffer))
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        # Whatever the CSV reader left unread (it stops early on a missing column) counts too.
        for chunk in iter(lambda: self._source.read(1024 * 1024), b""):
            self._digest.update(chunk)
        return self._digest.hexdigest()
