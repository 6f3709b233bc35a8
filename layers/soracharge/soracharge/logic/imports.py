"""The import use case: one S3 object version becomes charges in one CloudBlue session, exactly once.

1. claim the object version in the ledger (a duplicate S3 event finds it claimed or done: no-op);
2. read and validate the whole file (``plan_import``): any bad or unmapped row rejects the file,
   nothing is sent, and the report lists every problem;
3. a file whose bytes were already imported for the month (an export run twice) is a duplicate;
4. open a session (or, after a crash, resume the one the ledger recorded), send the packets with
   bounded concurrency, recording each accepted packet, and skipping those accepted before;
5. close the session, write the report, and start the follow-session state machine, which
   records how CloudBlue's rating ends.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, BinaryIO

from soracharge.adapters.cloudblue import ChargesImportManager
from soracharge.adapters.ledger import Ledger, LedgerEntry
from soracharge.adapters.storage import ReportStore, StoredObject
from soracharge.adapters.workflows import WorkflowStarter
from soracharge.errors import InvalidInputError, SorachargeError
from soracharge.logic.charges import plan_import
from soracharge.models.charges import ChargesPacket, ImportPlan
from soracharge.models.imports import (
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
from soracharge.observability import logger, metrics


@dataclass
class ImportDependencies:
    store: ReportStore
    ledger: Ledger
    cloudblue: ChargesImportManager
    workflows: WorkflowStarter
    mapping: Callable[[], tuple[Mapping, str]]
    follow_state_machine_arn: str
    concurrency: int = 8
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def import_object(obj: ObjectRef, deps: ImportDependencies, *, lease_seconds: float) -> ImportReport:
    """Import one object version; return its report (the existing one for a duplicate event)."""
    logger.append_keys(objectKey=obj.key, objectVersion=obj.version_id)
    try:
        source, month = obj.layout()
    except InvalidInputError as exc:
        report = _report(deps, obj, "REJECTED", str(exc), problems=[Problem(message=str(exc))])
        deps.store.put_json(report_key(None, obj.version_id, obj.key), report.to_event())
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
    except SorachargeError:
        deps.ledger.release(obj.object_id)  # a retry may resume at once
        raise


def _already_claimed(obj: ObjectRef, entry: LedgerEntry, key: str, deps: ImportDependencies) -> ImportReport:
    logger.info("Object version already claimed", extra={"ledgerStatus": entry.status})
    metrics.add_metric(name="DuplicateImportEvents", unit="Count", value=1)
    if entry.status == "CLOSED" and entry.session_id is not None:
        _follow(obj, entry.session_id, key, deps)  # in case the first run closed the session but died before this
    existing = deps.store.get_json(entry.report_key or key)
    if existing is not None:
        return ImportReport.model_validate(existing)
    summary = f"{obj.uri} version {obj.version_id} is being imported by another invocation (ledger: {entry.status})"
    return _report(deps, obj, "CLOSED" if entry.status == "CLOSED" else "DUPLICATE", summary)


def _import_claimed(
    obj: ObjectRef,
    source: str,
    month: str,
    head: StoredObject,
    entry: LedgerEntry,
    key: str,
    deps: ImportDependencies,
) -> ImportReport:
    mapping, mapping_source = deps.mapping()
    currency = head.metadata.get("currency") or mapping.currency
    bill_amount = head.metadata.get("bill-amount")
    base = {"month": month, "source": source, "mapping": mapping_source, "currency": currency}
    if not currency:
        message = (
            "no currency for this file: the export flow sets it as object metadata; for an upload, set "
            "'currency' in the mapping or upload with the metadata currency=JPY|USD|EUR"
        )
        return _reject(obj, key, deps, base, [Problem(message=message)], 1)

    with deps.store.open(obj.key, obj.version_id) as body:
        hashing = _HashingReader(body)
        plan = plan_import(io.BufferedReader(hashing), month=month, currency=currency, mapping=mapping, source=obj.uri)
        sha256 = hashing.hexdigest()
    base["sha256"] = sha256
    if plan.problems:
        problems = [Problem.model_validate(p.model_dump()) for p in plan.problems]
        return _reject(obj, key, deps, base, problems, plan.problem_count, plan)

    session_id = entry.session_id
    if session_id is None:
        owner = deps.ledger.claim_content(month, sha256, obj.object_id)
        if owner != obj.object_id:
            summary = f"the same bytes were already imported for {month} from {owner}: nothing imported again"
            report = _report(deps, obj, "DUPLICATE", summary, duplicate_of=owner, **base)
            deps.store.put_json(key, report.to_event())
            deps.ledger.set_status(obj.object_id, "DUPLICATE", duplicate_of=owner, report_key=key)
            return report
        session_id = deps.cloudblue.open_session().import_session_id
        packets = plan.packets(session_id)
        deps.ledger.record_session(obj.object_id, session_id, len(packets), key)
        logger.append_keys(importSessionId=session_id)
        logger.info("Import session opened", extra={"packets": len(packets), "charges": len(plan.charges)})
    else:
        packets = plan.packets(session_id)
        logger.append_keys(importSessionId=session_id)
        logger.info("Resuming import session", extra={"alreadyAccepted": len(entry.accepted)})

    to_send = [(index, packet) for index, packet in enumerate(packets) if index not in entry.accepted]
    warnings = _send(obj, to_send, deps)
    deps.cloudblue.close_session(session_id)
    deps.ledger.set_status(obj.object_id, "CLOSED", report_key=key)
    metrics.add_metric(name="ChargesSent", unit="Count", value=sum(len(p.charges) for _, p in to_send))
    metrics.add_metric(name="RowsRead", unit="Count", value=plan.rows)

    counts = ReportCounts(
        rows=plan.rows,
        charges=len(plan.charges),
        packets=len(packets),
        packets_sent_this_run=len(to_send),
        packets_already_accepted=len(packets) - len(to_send),
    )
    summary = (
        f"{len(plan.charges)} charges ({plan.charges_sum} {currency}) imported in CloudBlue session {session_id}, "
        "closed and waiting for rating"
    )
    report = _report(
        deps,
        obj,
        "CLOSED",
        summary,
        import_session_id=session_id,
        session_status="NEW",
        counts=counts,
        reconciliation=_reconcile(plan, bill_amount, imported=plan.charges_sum),
        warnings=warnings,
        **base,
        **_totals(plan),
    )
    deps.store.put_json(key, report.to_event())
    _follow(obj, session_id, key, deps)
    return report


def dry_run_report(
    stream: BinaryIO, *, month: str, currency: str, mapping: Mapping, source: str, now: datetime | None = None
) -> tuple[ImportPlan, ImportReport]:
    """Plan a file without sending anything: the charges it would import and the report it would get."""
    plan = plan_import(stream, month=month, currency=currency, mapping=mapping, source=source)
    moment = now or datetime.now(UTC)
    base: dict[str, Any] = {
        "month": month,
        "currency": currency,
        "object": ObjectRef(bucket="-", key=source),
        "created_at": moment,
        "updated_at": moment,
        "counts": ReportCounts(rows=plan.rows, charges=len(plan.charges), problems=plan.problem_count),
    }
    if plan.problems:
        summary = f"{plan.problem_count} problem(s) in {source}: it would be rejected and nothing imported"
        problems = [Problem.model_validate(p.model_dump()) for p in plan.problems]
        report = ImportReport.model_validate(
            {
                **base,
                "status": "REJECTED",
                "summary": summary,
                "problems": problems,
                "problems_not_listed": max(plan.problem_count - len(problems), 0),
            }
        )
    else:
        summary = f"dry run: {len(plan.charges)} charges ({plan.charges_sum} {currency}) would be imported"
        report = ImportReport.model_validate(
            {
                **base,
                "status": "DRY_RUN",
                "summary": summary,
                "counts": ReportCounts(rows=plan.rows, charges=len(plan.charges), packets=len(plan.packets(0))),
                "reconciliation": _reconcile(plan, None, imported=plan.charges_sum),
                **_totals(plan),
            }
        )
    return plan, report


def _send(obj: ObjectRef, packets: list[tuple[int, ChargesPacket]], deps: ImportDependencies) -> list[str]:
    """Send packets with bounded concurrency; stop at the first failure (accepted ones stay recorded)."""
    warnings: list[str] = []
    failed = threading.Event()

    def send(index: int, packet: ChargesPacket) -> None:
        if failed.is_set():  # a packet failed: start no more (a retry resumes from the ledger)
            return
        try:
            delivery = deps.cloudblue.import_charges(packet.to_json_bytes())
        except BaseException:
            failed.set()
            raise
        deps.ledger.record_packet(obj.object_id, index)
        if delivery.resent_after_unknown_outcome:
            warnings.append(
                f"packet {index + 1} was sent again after a connection was lost with its outcome unknown: "
                "if CloudBlue does not ignore a repeated extHash within a session, its "
                f"{len(packet.charges)} charges may be held twice in session {packet.import_session_id}"
            )

    with ThreadPoolExecutor(max_workers=max(1, deps.concurrency), thread_name_prefix="import-charges") as pool:
        futures = [pool.submit(send, index, packet) for index, packet in packets]
        _done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
    return sorted(warnings)


def _follow(obj: ObjectRef, session_id: int, key: str, deps: ImportDependencies) -> None:
    _, month = obj.layout()
    request = FollowSessionRequest(
        object_id=obj.object_id,
        month=month,
        report_key=key,
        session=SessionProgress(import_session_id=session_id, status="NEW"),
    )
    deps.workflows.start(deps.follow_state_machine_arn, f"import-session-{session_id}", request.to_event())


def _reject(
    obj: ObjectRef,
    key: str,
    deps: ImportDependencies,
    base: dict[str, str | None],
    problems: list[Problem],
    problem_count: int,
    plan: ImportPlan | None = None,
) -> ImportReport:
    summary = f"{problem_count} problem(s) in {obj.uri}: nothing was imported; fix the file and upload it again"
    extra = {"counts": ReportCounts(rows=plan.rows, problems=problem_count)} if plan else {}
    report = _report(
        deps,
        obj,
        "REJECTED",
        summary,
        problems=problems,
        problems_not_listed=max(problem_count - len(problems), 0),
        **base,
        **extra,
    )
    deps.store.put_json(key, report.to_event())
    deps.ledger.set_status(obj.object_id, "REJECTED", report_key=key)
    metrics.add_metric(name="ImportsRejected", unit="Count", value=1)
    logger.warning("Import rejected", extra={"problems": problem_count})
    return report


def _report(deps: ImportDependencies, obj: ObjectRef, status: str, summary: str, **fields: object) -> ImportReport:
    now = deps.clock()
    return ImportReport.model_validate(
        {"status": status, "summary": summary, "object": obj, "created_at": now, "updated_at": now, **fields}
    )


def _reconcile(plan: ImportPlan, bill_amount: str | None, *, imported: Decimal) -> Reconciliation:
    bill = Decimal(bill_amount) if bill_amount else None
    balanced = imported == plan.csv_sum and (bill is None or bill == plan.csv_sum)
    if bill is None:
        note = "uploaded file: no Soracom bill amount to compare with"
    elif bill == plan.csv_sum:
        note = "the CSV adds up to the bill"
    else:
        note = f"the CSV adds up to {plan.csv_sum}, the bill says {bill}: check the export"
    return Reconciliation(bill_amount=bill, csv_sum=plan.csv_sum, imported_sum=imported, balanced=balanced, note=note)


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
