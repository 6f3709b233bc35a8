"""The import use case: one S3 object version becomes charges in one rated CloudBlue session, exactly once.

The CloudBlue session is the unit of atomicity: a session that is never closed is never rated, so
a session whose content is in doubt is given up (left open, never closed) and every charge is sent
again in a new one. Step by step:

1. claim the object version in the ledger; a duplicate S3 event finds it claimed (and fails, to be
   retried) or finished (and returns its report);
2. settle the file's coverage and currency and pin them in the ledger (a retry keeps them, whatever
   the stack's settings became); read and validate the whole file; any bad or unmapped row rejects
   it: nothing is sent and the report lists every problem;
3. take the month's lock, one per coverage (``month_lock_key``): a second file for a month's bill
   already imported is a DUPLICATE (same bytes) or HELD (different bytes: importing it too would
   double the month), unless marked additional; the same bytes closed under the other coverage are
   a DUPLICATE too (``bytes#<yyyyMM>#<sha256>``, taken with the session's closing);
4. open a session (or resume the recorded one), mark each packet in flight, send it, record it
   accepted; a packet whose outcome is unknown (sent, no answer), a plan that changed since the
   session was opened, or packets left in flight by a crashed attempt make the session given up and
   everything sent again in a new one (at most ``MAX_SESSIONS``);
5. close the session, write the report, mark the ledger CLOSED and start the follow-session state
   machine, which records how CloudBlue's rating ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import threading
from collections.abc import Callable
from collections.abc import Mapping as Mapping_
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any, BinaryIO

from soracharge.adapters.cloudblue import ChargesImportManager
from soracharge.adapters.ledger import Ledger, LedgerEntry
from soracharge.adapters.notifier import Notifier
from soracharge.adapters.storage import ReportStore, StoredObject
from soracharge.adapters.workflows import WorkflowStarter
from soracharge.errors import (
    CloudBlueApiError,
    CloudBlueUnavailableError,
    ImportInProgressError,
    ImportResumeError,
    ImportTimeBudgetError,
    InvalidInputError,
)
from soracharge.logic import alerts
from soracharge.logic.charges import charge_id_suffix, plan_import
from soracharge.logic.reconciliation import BillFacts, reconcile
from soracharge.logic.report_html import render_report_html
from soracharge.models.charges import ImportPlan, Packets
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
    HELD_BY_DUPLICATE,
    HELD_FAILED_RATING,
    SAME_BYTES_OTHER_COVERAGE,
    Amount,
    FollowSessionRequest,
    ImportReport,
    ObjectRef,
    Problem,
    Reconciliation,
    ReportCounts,
    SessionProgress,
    report_key,
)
from soracharge.models.mapping import Mapping
from soracharge.observability import Metric, add_amount, count, logger

#: Sessions one file may use before the import gives up (each after an unknown outcome).
MAX_SESSIONS = 3
#: The import stops sending when the function has less time left than this, and its retry resumes.
DEADLINE_MARGIN_SECONDS = 60.0
#: Object metadata (``x-amz-meta-import: additional``) that imports a second file for a month on purpose.
ADDITIONAL_FILE = "additional"


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
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    remaining_seconds: Callable[[], float] = field(default=lambda: math.inf)


def import_object(obj: ObjectRef, deps: ImportDependencies, *, lease_seconds: float) -> ImportReport:
    """Import one object version; return its report (the existing one when it was done before)."""
    logger.append_keys(objectKey=obj.key, objectVersion=obj.version_id)
    try:
        source, month = obj.layout()
    except InvalidInputError as exc:
        report = _report(deps, obj, "REJECTED", str(exc), problems=[Problem(message=str(exc))])
        unsorted_key = report_key(None, obj.version_id, obj.key)
        save_report(deps.store, unsorted_key, report)
        _alert(report, unsorted_key, deps)
        return report
    logger.append_keys(month=month)
    head = deps.store.head(obj.key, obj.version_id)
    if head is None:
        raise InvalidInputError(f"{obj.uri} (version {obj.version_id}) does not exist")
    obj = obj.model_copy(update={"version_id": head.version_id or obj.version_id})
    key = report_key(month, obj.version_id, obj.key)

    claim = deps.ledger.claim(obj.object_id, month=month, lease_seconds=lease_seconds)
    if not claim.granted:
        return _already_claimed(obj, claim.entry, key, deps)
    try:
        return _import_claimed(obj, source, month, head, claim.entry, key, deps)
    except BaseException:
        with contextlib.suppress(Exception):  # a retry may resume at once; a lapsed lease allows it anyway
            deps.ledger.release(obj.object_id)
        raise


def _already_claimed(obj: ObjectRef, entry: LedgerEntry, key: str, deps: ImportDependencies) -> ImportReport:
    logger.info("Object version already claimed", extra={"ledgerStatus": entry.status})
    count(Metric.DUPLICATE_IMPORT_EVENTS)
    if entry.status == "IMPORTING":
        raise ImportInProgressError(
            f"{obj.uri} version {obj.version_id} is being imported by another invocation: this one will be retried"
        )
    if entry.status == "CLOSED" and entry.session_id is not None:
        _follow(obj, entry.session_id, key, deps)  # in case the first run closed the session but died before this
    existing = deps.store.get_json(entry.report_key or key)
    if existing is None:
        raise ImportInProgressError(f"{obj.uri} is {entry.status} in the ledger but its report is not written yet")
    return ImportReport.model_validate(existing)


def _import_claimed(
    obj: ObjectRef,
    source: str,
    month: str,
    head: StoredObject,
    entry: LedgerEntry,
    key: str,
    deps: ImportDependencies,
) -> ImportReport:
    # Everything that can reject the file is checked before anything is sent. A retry keeps the
    # coverage and currency its first attempt settled: the stack's settings may have changed since.
    pinned = entry.coverage is not None and entry.currency is not None
    coverage, problems = (
        (parse_coverage(entry.coverage or ""), []) if pinned else file_coverage(obj, head.metadata, deps.coverages)
    )
    base: dict[str, Any] = {"month": month, "source": source, "coverage": coverage}
    if coverage is None:
        return _reject(obj, entry, key, deps, base, problems, len(problems))
    logger.append_keys(coverage=coverage)
    mapping, mapping_source = deps.mapping(coverage)
    base["mapping"] = mapping_source
    currency, problems = (
        (entry.currency or "", []) if pinned else file_currency(coverage, head.metadata, mapping.currency)
    )
    base["currency"] = currency or None
    if not problems:
        problems = _metadata_problems(currency, head.metadata)
    if problems:
        return _reject(obj, entry, key, deps, base, problems, len(problems))
    if not pinned:
        entry = deps.ledger.pin(obj.object_id, coverage=coverage, currency=currency)
    bill = bill_facts(head.metadata)
    additional = head.metadata.get("import", "").lower() == ADDITIONAL_FILE
    # An additional file's charges get ids of their own (from its bytes), apart from the first file's;
    # a Global bill's charges are marked apart from a Japan bill's.
    own = additional_id_suffix(_sha256_of(deps.store, obj), obj.version_id) if additional else ""
    id_suffix = charge_id_suffix(coverage, own)
    with deps.store.open(obj.key, obj.version_id) as body:
        hashing = _HashingReader(body)
        plan = plan_import(
            io.BufferedReader(hashing),
            month=month,
            currency=currency,
            mapping=mapping,
            source=obj.uri,
            id_suffix=id_suffix,
            reopen=lambda: deps.store.open(obj.key, obj.version_id),  # a file with a problem is read again
        )
        sha256 = hashing.hexdigest()
    base["sha256"] = sha256
    if plan.problems:
        problems = [Problem.model_validate(p.model_dump()) for p in plan.problems]
        return _reject(obj, entry, key, deps, base, problems, plan.problem_count, plan)

    # An additional file's lock is its bytes; a bill's are its coverage's month lock and its bytes.
    bytes_key = None if additional else f"bytes#{month}#{sha256}"
    lock_key, certain = (f"lock#{month}#{sha256}", True) if additional else month_lock_key(month, coverage, entry, deps)
    # The bytes first (a read): a file that ends DUPLICATE never takes a month over from another file.
    if bytes_key is not None and (
        blocked := _bytes_closed_before(obj, entry, bytes_key, lock_key, sha256, key, deps, base)
    ):
        return blocked
    blocked = _take_month(obj, lock_key, sha256, entry, key, deps, base, additional=additional, certain=certain)
    if blocked is not None:
        return blocked

    fingerprint = _fingerprint(plan)
    packets_count = len(plan.packets(0))
    warnings: list[str] = []
    session_id, closed = _resume(obj, entry, fingerprint, packets_count, deps, warnings)
    sessions_used = 1 if session_id is not None else 0  # sessions this invocation works with
    sent_this_run = 0
    while not closed:
        if session_id is None:
            if sessions_used >= MAX_SESSIONS:
                raise CloudBlueUnavailableError(
                    f"gave {MAX_SESSIONS} sessions up in this attempt after outcomes that could not be known: "
                    "stopping; nothing was rated, and Lambda's retry (or a re-delivered event) starts a new session"
                )
            session_id = deps.cloudblue.open_session().import_session_id
            sessions_used += 1
            deps.ledger.record_session(
                obj.object_id,
                session_id,
                packets=packets_count,
                fingerprint=fingerprint,
                report_key=key,
                lock_key=lock_key,
            )
            accepted: frozenset[int] = frozenset()
        else:
            current = deps.ledger.get(obj.object_id)
            accepted = current.accepted if current else frozenset()
        logger.append_keys(importSessionId=session_id)
        packets = plan.packets(session_id)
        to_send = [index for index in range(len(packets)) if index not in accepted]
        logger.info("Sending packets", extra={"packets": len(to_send), "alreadyAccepted": len(accepted)})
        if _send(obj, packets, to_send, deps):
            deps.ledger.abandon_session(obj.object_id, session_id)
            warnings.append(
                _abandoned(session_id, "a packet was sent and no answer came back (its outcome is unknown)")
            )
            session_id = None
            continue
        sent_this_run += len(to_send)
        if not deps.ledger.mark_closing(obj.object_id, session_id, lock_key, bytes_key=bytes_key, sha256=sha256):
            owner = deps.ledger.owner(lock_key)
            if owner is not None and owner.object_id != obj.object_id:
                # The month was taken over while this import was stuck: its session stays open, never rated.
                return _superseded(obj, key, deps, base, owner.object_id)
            holder = deps.ledger.owner(bytes_key) if bytes_key else None
            if holder is not None and holder.object_id != obj.object_id:
                # Another object closed a session with these bytes (under the other coverage) first: this
                # one gives its session up, and a month it took over from a stuck file back to that file.
                deps.ledger.hand_back(lock_key, obj.object_id)
                of = _owner_coverage(holder.object_id, deps)
                return _same_bytes(obj, key, deps, base, holder.object_id, of, left_open=session_id)
            raise ImportInProgressError(
                f"{obj.uri}: session {session_id} is no longer this attempt's (a later attempt of the same file "
                "took it over): this one stops, never closing it"
            )
        deps.cloudblue.close_session(session_id)
        closed = True
    assert session_id is not None

    final = deps.ledger.get(obj.object_id)
    abandoned = list(final.abandoned_sessions) if final else []
    packets = plan.packets(session_id)
    accepted_final = final.accepted if final else frozenset()
    with localcontext(Context(prec=80, traps=[Inexact])):
        imported = sum((packets.total(i) for i in range(len(packets)) if i in accepted_final), Decimal(0))
    counts = ReportCounts(
        rows=plan.rows,
        charges=len(plan.charges),
        packets=len(packets),
        packets_sent_this_run=sent_this_run,
        packets_already_accepted=len(packets) - sent_this_run,
    )
    summary = (
        f"{len(plan.charges)} charges ({plan.charges_sum} {currency}, {coverage_label(coverage)}) imported in "
        f"CloudBlue session {session_id}, closed and waiting for rating"
    )
    report = _report(
        deps,
        obj,
        "CLOSED",
        summary,
        import_session_id=session_id,
        session_status="NEW",
        abandoned_sessions=abandoned,
        counts=counts,
        reconciliation=_reconcile(plan, currency, bill, mapping, imported=imported),
        warnings=warnings,
        **base,
        **_totals(plan),
    )
    save_report(deps.store, key, report)  # before CLOSED: a crash here resumes and writes it
    _alert(report, key, deps)  # before CLOSED too: a failed publish is retried with the rest
    deps.ledger.set_status(obj.object_id, "CLOSED", report_key=key)
    count(Metric.IMPORTS_CLOSED)
    count(Metric.ROWS_READ, plan.rows)
    count(Metric.CHARGES_SENT, len(plan.charges))
    count(Metric.PACKETS_SENT, sent_this_run)
    count(Metric.SESSIONS_ABANDONED, len(warnings))  # every warning is a session given up
    add_amount(Metric.AMOUNT_IMPORTED, imported, currency, coverage)
    if report.reconciliation is not None and not report.reconciliation.balanced:
        count(Metric.RECONCILIATION_IMBALANCED)
    _follow(obj, session_id, key, deps, coverage)
    return report


def save_report(store: ReportStore, key: str, report: ImportReport) -> None:
    """The report's JSON at ``key``, and the page people read beside it (``.html``).

    The page is best effort: the JSON is the record, and a page that cannot be rendered or written
    must never fail an import whose session may be closed already (it is logged and counted).
    """
    store.put_json(key, report.to_event())
    page = key.removesuffix(".json") + ".html"
    try:
        store.put_text(page, render_report_html(report), "text/html; charset=utf-8")
    except Exception:  # noqa: BLE001 - presentation only: the JSON report above holds everything
        logger.exception("The HTML report was not written", extra={"reportKey": page})
        count(Metric.HTML_REPORTS_FAILED)


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


def file_coverage(
    obj: ObjectRef, metadata: dict[str, str], coverages: tuple[Coverage, ...]
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
            return None, [Problem(column="coverage", value=given, message="coverage must be jp or g")]
    if (of_currency := coverage_of_currency(metadata.get("currency"))) is not None:
        named[f"the metadata currency {metadata['currency'].upper()}"] = of_currency
    if len(set(named.values())) > 1:
        said = ", ".join(f"{where} says {coverage_label(coverage)}" for where, coverage in named.items())
        return None, [Problem(column="coverage", value=",".join(sorted(set(named.values()))), message=said)]
    if named:
        (where, coverage), *_ = named.items()
        if coverage in coverages:
            return coverage, []
        exported = " and ".join(coverage_label(c) for c in coverages)
        return None, [
            Problem(
                column="coverage",
                value=coverage,
                message=(
                    f"{where} says {coverage_label(coverage)}, and this stack imports {exported} bills only "
                    f"(SoracomCoverageType {','.join(coverages)}): import it in a stack of {coverage}, or add "
                    f"{coverage} to SoracomCoverageType"
                ),
            )
        ]
    if len(coverages) == 1:
        return coverages[0], []
    return None, [
        Problem(
            column="coverage",
            message=(
                f"this stack imports {' and '.join(coverage_label(c) for c in coverages)} bills and the file names "
                "neither: upload it to uploads/<yyyyMM>/jp/ or uploads/<yyyyMM>/g/, or with the metadata "
                "coverage=jp|g (or currency=JPY|USD|EUR)"
            ),
        )
    ]


def file_currency(coverage: Coverage, metadata: dict[str, str], mapped: str | None) -> tuple[str, list[Problem]]:
    """The bill's currency: the file's metadata, else the mapping's, else the coverage's when it has one
    (Japan: JPY). A Global bill is in USD or EUR, so one named nowhere is a problem, never a guess; so is
    a mapping's currency that is not one of the coverage's: a Japan bill is never USD.
    """
    given = metadata.get("currency", "").strip().upper()
    if given:
        return given, []
    if mapped:
        mapped = mapped.upper()
        if mapped not in CURRENCIES[coverage]:
            return mapped, [
                Problem(
                    column="currency",
                    value=mapped,
                    message=(
                        f"the mapping's currency {mapped} is not {coverage_label(coverage)}'s "
                        f"({', '.join(CURRENCIES[coverage])}): upload the file with the metadata currency=... and "
                        "coverage=..., or use a mapping for this coverage"
                    ),
                )
            ]
        return mapped, []
    if len(CURRENCIES[coverage]) == 1:
        return default_currency(coverage), []
    options = "|".join(CURRENCIES[coverage])
    return "", [
        Problem(
            column="currency",
            message=(
                f"no currency for this file: {coverage_label(coverage)} bills in {' or '.join(CURRENCIES[coverage])}; "
                f"the export flow sets it as object metadata; for an upload, set 'currency' in the mapping or upload "
                f"with the metadata currency={options}"
            ),
        )
    ]


def month_lock_key(month: str, coverage: Coverage, entry: LedgerEntry, deps: ImportDependencies) -> tuple[str, bool]:
    """``lock#<yyyyMM>#<coverage>``, or the ``lock#<yyyyMM>`` a month imported before coverages holds;
    and whether the lock is this coverage's for certain.

    Such a lock is the lock of its owner's coverage (its key's folder, its object's metadata, else
    its report's currency); one whose coverage cannot be told is taken as this coverage's, not for
    certain: a file held (which a person then imports on purpose) is better than a month billed
    twice, and an uncertain lock is never taken over from a stuck owner (which may be the other
    coverage's bill). An object that recorded a lock already keeps it (its retry must find the lock
    it wrote).
    """
    if entry.lock_key is not None:
        return entry.lock_key, True
    legacy = f"lock#{month}"
    owner = deps.ledger.owner(legacy)
    if owner is None:
        return f"lock#{month}#{coverage}", True
    if owner.object_id == entry.object_id:
        return legacy, True
    of = _owner_coverage(owner.object_id, deps)
    if of is None:
        return legacy, False
    return (legacy, True) if of == coverage else (f"lock#{month}#{coverage}", True)


def _owner_coverage(object_id: str, deps: ImportDependencies) -> Coverage | None:
    location, _, version = object_id.rpartition("#")
    bucket, _, owner_key = location.partition("/")
    entry = deps.ledger.get(object_id)
    if entry is not None and entry.coverage is not None:
        return parse_coverage(entry.coverage)
    with contextlib.suppress(ValueError):
        if (folder := ObjectRef(bucket=bucket, key=owner_key, version_id=version).key_coverage()) is not None:
            return folder
    head = deps.store.head(owner_key, None if version == "null" else version)
    if head is not None and (of := _named_coverage(head.metadata)) is not None:
        return of
    report = deps.store.get_json(entry.report_key) if entry is not None and entry.report_key else None
    return _named_coverage(report) if report is not None else None


def _named_coverage(facts: Mapping_[str, Any]) -> Coverage | None:
    """The coverage object metadata or a report names: its ``coverage``, else its ``currency``'s."""
    with contextlib.suppress(InvalidInputError):
        return parse_coverage(str(facts.get("coverage") or ""))
    return coverage_of_currency(facts.get("currency"))


def _metadata_problems(currency: str, metadata: dict[str, str]) -> list[Problem]:
    problems = []
    if currency not in {c for currencies in CURRENCIES.values() for c in currencies}:
        problems.append(Problem(column="currency", value=currency, message="currency must be JPY, USD or EUR"))
    for name, what in (("bill-amount", "the bill amount"), ("coupon-amount", "the coupon amount")):
        value = metadata.get(name)
        if not value:
            continue
        try:
            if not Decimal(value).is_finite():
                raise InvalidOperation
        except InvalidOperation:
            problems.append(Problem(column=name, value=value, message=f"{what} is not a number"))
    if metadata.get("coupon-amount") and not metadata.get("bill-amount"):
        coupon = metadata["coupon-amount"]
        problems.append(Problem(column="coupon-amount", value=coupon, message="a coupon amount needs a bill-amount"))
    return problems


def _take_month(
    obj: ObjectRef,
    lock_key: str,
    sha256: str,
    entry: LedgerEntry,
    key: str,
    deps: ImportDependencies,
    base: dict[str, Any],
    *,
    additional: bool,
    certain: bool = True,
) -> ImportReport | None:
    """Own the month's bill (or this file's bytes, for an additional file), or say why this file must not be sent."""
    owner = deps.ledger.lock(lock_key, obj.object_id, sha256)
    if owner.object_id == obj.object_id:
        return None
    if entry.lock_key == lock_key:
        # This object owned the month, and a later file took it over while this one was stuck: its
        # session was never closed, so nothing of it is rated. Stop here.
        return _superseded(obj, key, deps, base, owner.object_id)
    previous = deps.ledger.get(owner.object_id)
    if previous is not None and previous.status == "FAILED_PROCESSED":
        # CloudBlue failed to rate the owner's session: none of it is rated. The runbook imports the
        # file again as an additional file, which may take the lock over (its charge ids are its own).
        if additional and deps.ledger.take_over(lock_key, owner.object_id, obj.object_id, sha256):
            logger.warning("Took over from a session CloudBlue failed to rate", extra={"previous": owner.object_id})
            return None
        summary = (
            f"{HELD_FAILED_RATING} {owner.object_id} (FAILED_PROCESSED), which has this "
            f"month's lock: nothing was imported. Once the cause is fixed in CloudBlue, upload the file again "
            f"with the metadata import={ADDITIONAL_FILE}, unless the month was imported again since (a file "
            f"uploaded with import={ADDITIONAL_FILE} after the failure: see the month's reports)"
        )
        return _finish_without_import(obj, key, deps, base, "HELD", summary, owner.object_id)
    if previous is not None and previous.status == "IMPORTING":
        if previous.closing_session is None:
            if not certain:
                raise ImportInProgressError(
                    f"{obj.uri}: {owner.object_id} holds {lock_key}, written before coverages, and is still importing "
                    "(or stuck); its coverage cannot be told, so its month is not taken over: re-deliver its own "
                    "event first (its alert gives the command), then this file's"
                )
            if deps.ledger.take_over(lock_key, owner.object_id, obj.object_id, sha256):
                logger.warning("Took the month over from a stuck import", extra={"previousOwner": owner.object_id})
                return None
            raise ImportInProgressError(f"{obj.uri}: {owner.object_id} is importing the same month right now")
        # The owner began closing its session: if CloudBlue has it closed, the month is imported
        # (whatever the owner's ledger says); if not, the owner's own retry will close it.
        if deps.cloudblue.get_session(previous.closing_session).status == "OPEN":
            raise ImportInProgressError(
                f"{obj.uri}: {owner.object_id} was closing session {previous.closing_session} for the same month: "
                "its own retry finishes it; this file will be retried"
            )
    if owner.sha256 == sha256:
        return _same_bytes(obj, key, deps, base, owner.object_id, _owner_coverage(owner.object_id, deps))
    if previous is not None and previous.status == "DUPLICATE":
        summary = (
            f"{HELD_BY_DUPLICATE} {owner.object_id}, a DUPLICATE of a file imported as another coverage's bill: "
            "nothing was imported. Look at the month's reports: if this coverage's bill was imported since (with "
            f"import={ADDITIONAL_FILE}, as that file's alert says), nothing is to be done; if not, upload this file "
            f"again with the metadata import={ADDITIONAL_FILE}"
        )
        return _finish_without_import(obj, key, deps, base, "HELD", summary, owner.object_id)
    summary = (
        f"a different file for {base['month']} was already imported from {owner.object_id}; importing this one "
        "too would bill the month twice, so nothing was imported. If it replaces the first file, import only "
        "the differences (see the README's runbook); if it is a second bill for the month, upload it again with "
        f"the metadata import={ADDITIONAL_FILE}"
    )
    return _finish_without_import(obj, key, deps, base, "HELD", summary, owner.object_id)


def _bytes_closed_before(
    obj: ObjectRef,
    entry: LedgerEntry,
    bytes_key: str,
    lock_key: str,
    sha256: str,
    key: str,
    deps: ImportDependencies,
    base: dict[str, Any],
) -> ImportReport | None:
    """DUPLICATE when these bytes were imported for the month already, under either coverage (the
    ``bytes#`` record of a closed session, or a month lock of the same bytes, from before the record)."""
    if entry.closing_session is not None:
        return None  # this file's own session was marked closing by its last attempt: it finishes it
    month = base["month"]
    locks = [bytes_key, f"lock#{month}", *(f"lock#{month}#{c}" for c in COVERAGES)]
    for closed in (deps.ledger.owner(lock) for lock in locks):
        if closed is None or closed.object_id == obj.object_id or closed.sha256 != sha256:
            continue
        other = deps.ledger.get(closed.object_id)
        if not _closed_a_session(other):
            continue  # not closed (still importing, or it imported nothing): the month's lock settles it
        failed = other is not None and other.status == "FAILED_PROCESSED"
        of = _owner_coverage(closed.object_id, deps)
        if failed and of in (None, base["coverage"]):
            continue  # CloudBlue rated none of it: this coverage's lock says how to import it again
        if failed:
            summary = (
                f"{HELD_FAILED_RATING} {closed.object_id} (FAILED_PROCESSED), the same bytes imported as the "
                f"{coverage_label(of or 'jp')} bill: nothing was imported. Once the cause is fixed in CloudBlue, "
                f"upload the file again, to its coverage's folder, with the metadata import={ADDITIONAL_FILE}"
            )
            if entry.session_id is not None:  # opened by a previous attempt of this file: never closed
                summary += f". {_given_up(obj, entry.session_id, deps, 'the last attempt opened it')}"
            return _finish_without_import(
                obj, key, deps, base, "HELD", summary, closed.object_id, abandoned=entry.session_id is not None
            )
        deps.ledger.hand_back(lock_key, obj.object_id)  # a month an earlier attempt took over goes back
        if of not in (None, base["coverage"]):
            # Imported as the other coverage's bill: this file keeps its own coverage's month if no file
            # has it (never taken over), so that coverage's bill is held, not imported beside the runbook's.
            deps.ledger.lock(lock_key, obj.object_id, sha256)
        return _same_bytes(obj, key, deps, base, closed.object_id, of, left_open=entry.session_id)
    return None


def _closed_a_session(entry: LedgerEntry | None) -> bool:
    """Whether an object closed (or is closing) a CloudBlue session: rated, or being rated. An entry
    that cannot be read counts as closed: better a file not imported (and said so) than a month twice."""
    if entry is None or entry.closing_session is not None:
        return True
    return entry.status in ("CLOSED", "PROCESSED", "FAILED_PROCESSED", "NOT_RATED")


def _same_bytes(
    obj: ObjectRef,
    key: str,
    deps: ImportDependencies,
    base: dict[str, Any],
    other: str,
    of: Coverage | None,
    left_open: int | None = None,
) -> ImportReport:
    """DUPLICATE of ``other`` (whose coverage is ``of``, when it can be told), giving ``left_open`` up."""
    summary = f"the same bytes were already imported for the month from {other}: nothing imported again"
    if of is not None and of != base["coverage"]:
        summary = (
            f"{SAME_BYTES_OTHER_COVERAGE} {coverage_label(of)} bill, from {other}: nothing imported again. One of "
            "the two names the wrong coverage"
        )
    if left_open is not None:
        summary += f". {_given_up(obj, left_open, deps, 'that file closed its session first')}"
    return _finish_without_import(obj, key, deps, base, "DUPLICATE", summary, other, abandoned=left_open is not None)


def _resume(
    obj: ObjectRef,
    entry: LedgerEntry,
    fingerprint: str,
    packets_count: int,
    deps: ImportDependencies,
    warnings: list[str],
) -> tuple[int | None, bool]:
    """The session to go on with (None: open a new one) and whether it is closed already."""
    session_id = entry.session_id
    if session_id is None:
        return None, False
    if entry.closing_session == session_id and deps.cloudblue.get_session(session_id).status == "OPEN":
        # The last attempt sent every packet and marked the session closing: finish that, never send
        # into it again nor give it up (its own close may still be on its way to CloudBlue).
        if entry.fingerprint != fingerprint:
            warnings.append(
                f"session {session_id} was marked closing by the last attempt with the packets planned then; the "
                "file now plans other packets (was the mapping changed?): it was closed as it was sent"
            )
        deps.cloudblue.close_session(session_id)
        return session_id, True
    # CloudBlue first: a session closed already is rated (or being rated) whatever this attempt plans,
    # so it is never given up and sent again, even when the plan now differs (another mapping, or
    # the other reader of the file): that would bill the month twice.
    status = deps.cloudblue.get_session(session_id).status
    if status != "OPEN":
        sent = entry.packets if entry.packets is not None else packets_count
        if len(entry.accepted) >= sent and not entry.unconfirmed:
            if entry.fingerprint != fingerprint:
                warnings.append(
                    f"session {session_id} was closed by the last attempt with the packets planned then; the file "
                    "now plans other packets (was the mapping changed?): CloudBlue rates what was sent, and this "
                    "report's sums are of the plan as it is now"
                )
            return session_id, True  # closed by the last attempt just before it stopped
        missing = sorted(i + 1 for i in set(range(sent)) - entry.accepted)
        raise CloudBlueApiError(
            f"session {session_id} is {status}, but packets {missing} of {obj.uri} were never sent to it: "
            "CloudBlue will rate it without them; import the missing charges as a correction"
        )
    reason = None
    if entry.fingerprint != fingerprint:
        reason = "the file's packets are not the ones planned when it was opened (was the mapping changed?)"
    elif entry.unconfirmed:
        reason = f"packets {sorted(i + 1 for i in entry.unconfirmed)} were being sent when the last attempt stopped"
    if reason is not None:
        deps.ledger.abandon_session(obj.object_id, session_id)
        warnings.append(_abandoned(session_id, reason))
        return None, False
    return session_id, False


def _send(obj: ObjectRef, packets: Packets, indexes: list[int], deps: ImportDependencies) -> bool:
    """Send packets with bounded concurrency; True when an outcome was unknown (the session must be given up).

    Each packet is marked in flight in the ledger before it is sent and recorded accepted after,
    so an attempt that dies in between leaves a trace the next attempt sees. Sending stops at the
    first failure, and before the function runs out of time. Each packet is built by the thread
    that sends it, so only ``concurrency`` packets are ever in memory.
    """
    stop, unknown = threading.Event(), threading.Event()

    def send(index: int) -> None:
        if stop.is_set():
            return
        try:
            if deps.remaining_seconds() < DEADLINE_MARGIN_SECONDS:
                raise ImportTimeBudgetError(f"stopped sending {obj.uri} with too little time left; the retry resumes")
            body = packets[index].to_json_bytes()
            deps.ledger.mark_in_flight(obj.object_id, index)
            try:
                deps.cloudblue.import_charges(body)
            except (CloudBlueUnavailableError, CloudBlueApiError) as exc:
                if getattr(exc, "outcome_unknown", False):
                    unknown.set()
                    stop.set()
                    return
                deps.ledger.unmark_in_flight(obj.object_id, index)  # CloudBlue answered: it did not take it
                raise
            # Anything failing from here on leaves the packet in flight: the next attempt gives the session up.
            deps.ledger.record_packet(obj.object_id, index)
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


def _given_up(obj: ObjectRef, session_id: int, deps: ImportDependencies, reason: str) -> str:
    """Give a session up for a file that ends without importing: it is never closed, so never rated."""
    deps.ledger.abandon_session(obj.object_id, session_id)
    return (
        f"session {session_id} was given up and left open, never closed (CloudBlue does not rate an open "
        f"session): {reason}. Do not close session {session_id}."
    )


def _abandoned(session_id: int, reason: str) -> str:
    return (
        f"session {session_id} was given up and left open, never closed (CloudBlue does not rate an open "
        f"session): {reason}. Every charge was sent again in a new session. Do not close session {session_id}."
    )


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
    obj: ObjectRef, session_id: int, key: str, deps: ImportDependencies, coverage: Coverage | None = None
) -> None:
    _, month = obj.layout()
    request = FollowSessionRequest(
        object_id=obj.object_id,
        month=month,
        coverage=coverage,
        report_key=key,
        session=SessionProgress(import_session_id=session_id, status="NEW", month=month, object_id=obj.object_id),
    )
    name = follow_execution_name(obj.object_id, session_id)
    deps.workflows.start(deps.follow_state_machine_arn, name, request.to_event())


def follow_execution_name(object_id: str, session_id: int) -> str:
    """The follow-import-session execution watching ``session_id`` for ``object_id``: unique per object
    version and session (session ids alone may be reused), so a repeated start is a no-op."""
    return f"import-{session_id}-{hashlib.sha256(object_id.encode()).hexdigest()[:16]}"


def _superseded(obj: ObjectRef, key: str, deps: ImportDependencies, base: dict[str, Any], owner: str) -> ImportReport:
    summary = f"superseded by {owner}, which took the month over while this import was stuck"
    return _finish_without_import(obj, key, deps, base, "SUPERSEDED", summary, owner)


def _finish_without_import(
    obj: ObjectRef,
    key: str,
    deps: ImportDependencies,
    base: dict[str, Any],
    status: str,
    summary: str,
    other: str,
    *,
    abandoned: bool = False,
) -> ImportReport:
    current = _not_closing_meanwhile(obj, deps, status)
    sessions = list(current.abandoned_sessions) if abandoned and current else []
    report = _report(deps, obj, status, summary, duplicate_of=other, abandoned_sessions=sessions, **base)
    save_report(deps.store, key, report)
    _alert(report, key, deps)
    count(_NOT_IMPORTED_METRICS[status])
    _end(obj, deps, status, duplicate_of=other, report_key=key)
    logger.warning("File not imported", extra={"status": status, "other": other})
    return report


def _not_closing_meanwhile(obj: ObjectRef, deps: ImportDependencies, status: str) -> LedgerEntry | None:
    """The object's entry, read before a report that says nothing was imported: a stale attempt of this
    file may have marked a session closing meanwhile (then it is being imported, and its retry records it)."""
    current = deps.ledger.get(obj.object_id)
    if current is not None and current.closing_session is not None:
        raise _closing_meanwhile(obj, status)
    return current


def _end(obj: ObjectRef, deps: ImportDependencies, status: str, **fields: str) -> None:
    """Record an end that imported nothing, unless another attempt marked a session closing meanwhile."""
    if not deps.ledger.end_without_import(obj.object_id, status, **fields):  # type: ignore[arg-type]
        raise _closing_meanwhile(obj, status)


def _closing_meanwhile(obj: ObjectRef, status: str) -> ImportInProgressError:
    return ImportInProgressError(
        f"{obj.uri}: another attempt of this file marked its session closing meanwhile: it is not recorded "
        f"{status}; its retry finishes the import"
    )


def _locks_held(obj: ObjectRef, entry: LedgerEntry, deps: ImportDependencies, base: dict[str, Any]) -> set[str]:
    """The locks an earlier attempt of this file may have taken: the one it recorded, else the ones it would take."""
    locks = {entry.lock_key} if entry.lock_key else set()
    if base.get("coverage") and base.get("sha256"):
        locks.add(f"lock#{base['month']}#{base['sha256']}")
        locks.add(month_lock_key(base["month"], base["coverage"], entry, deps)[0])
    return locks


def _reject(
    obj: ObjectRef,
    entry: LedgerEntry,
    key: str,
    deps: ImportDependencies,
    base: dict[str, Any],
    problems: list[Problem],
    problem_count: int,
    plan: ImportPlan | None = None,
) -> ImportReport:
    summary = f"{problem_count} problem(s) in {obj.uri}: nothing was imported; fix the file and upload it again"
    if entry.session_id is not None:
        # A retry that finds problems the first attempt did not (the mapping changed in between).
        status: str = deps.cloudblue.get_session(entry.session_id).status
        if status == "OPEN" and entry.closing_session == entry.session_id:
            # Its last attempt sent every packet and marked it closing: close it as it was sent.
            deps.cloudblue.close_session(entry.session_id)
            status = "closed now, as the last attempt marked it"
        if status != "OPEN":
            first = problems[0].message if problems else "?"
            raise ImportResumeError(
                f"{obj.uri}: CloudBlue session {entry.session_id} was closed by the last attempt (it is {status}: "
                f"CloudBlue rates it), but this attempt reads {problem_count} problem(s) in the file (first: {first}), "
                "most likely because the mapping changed since: nothing was sent again. Put back the mapping the "
                "session was imported with, then re-deliver the event, so the report records the session"
            )
        summary += f". {_given_up(obj, entry.session_id, deps, 'the last attempt opened it; the file is rejected now')}"
    if entry.attempts > 1:  # a retry: hand back the month it may hold (it imported nothing)
        for lock in _locks_held(obj, entry, deps, base):
            deps.ledger.release_lock(lock, obj.object_id)
    current = _not_closing_meanwhile(obj, deps, "REJECTED") if entry.attempts > 1 or entry.session_id else None
    abandoned = list(current.abandoned_sessions) if current and entry.session_id is not None else []
    extra = (
        {"counts": ReportCounts(rows=plan.rows, problems=problem_count, unmapped_rows=plan.unmapped_rows)}
        if plan
        else {}
    )
    report = _report(
        deps,
        obj,
        "REJECTED",
        summary,
        abandoned_sessions=abandoned,
        problems=problems,
        problems_not_listed=max(problem_count - len(problems), 0),
        **base,
        **extra,
    )
    save_report(deps.store, key, report)
    _alert(report, key, deps)
    _end(obj, deps, "REJECTED", report_key=key)
    count(Metric.IMPORTS_REJECTED)
    if plan is not None:
        count(Metric.ROWS_READ, plan.rows)
        count(Metric.UNMAPPED_ROWS, plan.unmapped_rows)
    logger.warning("Import rejected", extra={"problems": problem_count})
    return report


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
) -> tuple[ImportPlan, ImportReport]:
    """Plan a file without sending anything: the charges it would import and the report it would get.

    The charges' ids are the ones the import would give them: the coverage's mark, then an
    additional file's ``additional_suffix`` (:func:`additional_id_suffix`)."""
    id_suffix = charge_id_suffix(coverage, additional_suffix)
    plan = plan_import(stream, month=month, currency=currency, mapping=mapping, source=source, id_suffix=id_suffix)
    moment = now or datetime.now(UTC)
    base: dict[str, Any] = {
        "month": month,
        "coverage": coverage,
        "currency": currency,
        "object": ObjectRef(bucket="-", key=source),
        "created_at": moment,
        "updated_at": moment,
    }
    if plan.problems:
        problems = [Problem.model_validate(p.model_dump()) for p in plan.problems]
        fields: dict[str, Any] = {
            "status": "REJECTED",
            "summary": f"{plan.problem_count} problem(s) in {source}: it would be rejected and nothing imported",
            "problems": problems,
            "problems_not_listed": max(plan.problem_count - len(problems), 0),
            "counts": ReportCounts(rows=plan.rows, problems=plan.problem_count, unmapped_rows=plan.unmapped_rows),
        }
    else:
        fields = {
            "status": "DRY_RUN",
            "summary": f"dry run: {len(plan.charges)} charges ({plan.charges_sum} {currency}) would be imported",
            "counts": ReportCounts(rows=plan.rows, charges=len(plan.charges), packets=len(plan.packets(0))),
            "reconciliation": _reconcile(plan, currency, None, mapping, imported=plan.charges_sum),
            **_totals(plan),
        }
    return plan, ImportReport.model_validate({**base, **fields})


_NOT_IMPORTED_METRICS = {
    "DUPLICATE": Metric.IMPORTS_DUPLICATE,
    "HELD": Metric.IMPORTS_HELD,
    "SUPERSEDED": Metric.IMPORTS_SUPERSEDED,
}


def _alert(report: ImportReport, key: str, deps: ImportDependencies) -> None:
    alert = alerts.for_report(report, key)
    if alert is not None:
        alerts.publish(deps.notifier, alert)


def _report(deps: ImportDependencies, obj: ObjectRef, status: str, summary: str, **fields: object) -> ImportReport:
    now = deps.clock()
    return ImportReport.model_validate(
        {"status": status, "summary": summary, "object": obj, "created_at": now, "updated_at": now, **fields}
    )


def _reconcile(
    plan: ImportPlan, currency: str, bill: BillFacts | None, mapping: Mapping, *, imported: Decimal
) -> Reconciliation:
    """The CSV's sum made into the bill step by step, next to the sum of the charges CloudBlue accepted."""
    return reconcile(
        csv_sum=plan.csv_sum, imported=imported, currency=currency, bill=bill, tax=mapping.reconciliation.tax
    )


def _totals(plan: ImportPlan) -> dict[str, list[Amount]]:
    def amounts(values: dict[str, Decimal]) -> list[Amount]:
        return [Amount(name=name, amount=amount) for name, amount in sorted(values.items())]

    return {
        "per_customer": amounts(plan.per_customer),
        "per_subscription": amounts(plan.per_subscription),
        "per_item": amounts(plan.per_item),
    }


class _HashingReader(io.RawIOBase):
    """A raw stream over ``source`` that computes the SHA-256 of everything read through it."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        # Whatever the CSV reader left unread (it stops early on a missing column) counts too.
        for chunk in iter(lambda: self._source.read(1024 * 1024), b""):
            self._digest.update(chunk)
        return self._digest.hexdigest()
