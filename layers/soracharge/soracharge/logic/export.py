"""The export flow's use cases, one per state of statemachine/export_billing.asl.json.

This is the Arazzo workflow ``export-monthly-billing`` (getBill, startExport, pollExport) with
what the document leaves out: authentication (in the client), ``status: failed``, and storing the
file. The polling loop itself (Wait 5 s, at most 21 polls) lives in the state machine.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

from soracharge.adapters.soracom import SoracomApi
from soracharge.adapters.storage import ExportFolders, ObjectStore, StoredExports, StoredObject
from soracharge.adapters.workflows import WorkflowStarter
from soracharge.errors import BillNotClosedError, BillNotFoundError, InvalidInputError, SoracomApiError
from soracharge.models.accounts import Account, BillAccount, account_coverages, listed_operators
from soracharge.models.coverage import CURRENCIES, Coverage, coverage_label, coverage_of_currency, only_coverage
from soracharge.models.export_flow import (
    BillSummary,
    ExportLookup,
    ExportProgress,
    ExportRequest,
    StoredExport,
    StoreExportRequest,
)
from soracharge.models.imports import report_key
from soracharge.models.months import ensure_billable, previous_month
from soracharge.observability import Metric, count, logger, metrics

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


def export_key(
    month: str, exported_file_id: str, coverage: Coverage, *, nested: bool, operator: str | None = None
) -> str:
    """Where the import flow finds a month's CSV: ``exports/<yyyyMM>/<exportedFileId>.csv`` on a stack
    that exports one coverage (the layout of every stack before coverages),
    ``exports/<yyyyMM>/<coverage>/<exportedFileId>.csv`` (``nested``) on one that exports both, and
    ``exports/<yyyyMM>/<operatorId>/<coverage>/<exportedFileId>.csv`` for an operator SoracomAccounts lists."""
    if operator is not None:
        folder = f"exports/{month}/{operator}/{coverage}/"
    else:
        folder = f"exports/{month}/{coverage}/" if nested else f"exports/{month}/"
    return f"{folder}{exported_file_id}.csv"


def request_coverage(coverage: Coverage | None, coverages: tuple[Coverage, ...], what: str) -> Coverage:
    """The coverage a payload names, else the stack's own when it exports one."""
    return coverage if coverage is not None else only_coverage(coverages, what)


def request_account(
    coverage: Coverage | None,
    operator: str | None,
    coverages: tuple[Coverage, ...],
    accounts: tuple[Account, ...],
    what: str,
) -> BillAccount:
    """The bill a payload names: the stack's own operator on ``coverage`` (else its only coverage), or an
    operator ``SoracomAccounts`` lists on one of its coverages. Any other is refused, naming it: a bill of an
    operator the stack does not list is never exported (it may be another stack's)."""
    if operator is None:
        return BillAccount(request_coverage(coverage, coverages, what))
    listed = account_coverages(accounts, operator)
    if listed is None:
        raise InvalidInputError(
            f"{what} names operator {operator}, which is not one of this stack's accounts (SoracomAccounts lists "
            f"{listed_operators(accounts)}): add it to SoracomAccounts, or export it from the stack that lists it"
        )
    chosen = request_coverage(coverage, listed, f"{what} (operator {operator})")
    if chosen not in listed:
        raise InvalidInputError(
            f"{what} names operator {operator} on {coverage_label(chosen)}, and SoracomAccounts lists it on "
            f"{' and '.join(coverage_label(c) for c in listed)} only"
        )
    return BillAccount(chosen, operator)


def stored_export(
    store: ExportFolders, month: str, coverage: Coverage, operator: str | None = None
) -> StoredObject | None:
    """The month's stored export of ``coverage`` (of ``operator``), in either layout (:func:`export_key`), or None.

    ``exports/<yyyyMM>/<coverage>/`` holds only that coverage's; a file right under
    ``exports/<yyyyMM>/`` is the coverage its metadata names (``coverage``, else its ``currency``),
    and one naming neither counts as this coverage's: better a month not exported again than twice.
    A listed operator's export is only ever in its own folder, ``exports/<yyyyMM>/<operatorId>/<coverage>/``.
    """
    if operator is not None:
        own = store.first(f"exports/{month}/{operator}/{coverage}/")
        return own if own is not None and own.metadata.get("sha256") else None
    nested = store.first(f"exports/{month}/{coverage}/")
    if nested is not None and nested.metadata.get("sha256"):
        return nested
    for obj in store.children(f"exports/{month}/"):
        if not obj.metadata.get("sha256"):
            continue
        of = obj.metadata.get("coverage") or coverage_of_currency(obj.metadata.get("currency"))
        if of is None or of == coverage:
            return obj
    return None


def find_stored_export(
    request: ExportRequest,
    store: StoredExports,
    coverages: tuple[Coverage, ...],
    accounts: tuple[Account, ...] = (),
) -> ExportLookup:
    """The month's stored export and how its import ended, if the month was exported before.

    The state machine's first step: a re-run of a month already stored (by hand, a second schedule
    delivery, a backfill over months done already) ends here without asking Soracom for anything,
    and says so. It also settles the coverage the rest of the execution exports.
    """
    month = request.billing_month()
    account = request_account(request.coverage, request.operator, coverages, accounts, "the execution's input")
    coverage, operator = account.coverage, account.operator
    logger.append_keys(month=month, coverage=coverage, operator=operator)
    existing = stored_export(store, month, coverage, operator)
    if existing is None:
        return ExportLookup(
            month=month,
            coverage=coverage,
            operator=operator,
            summary=f"{month} ({account.label}) has not been exported yet",
        )
    key = report_key(month, existing.version_id, existing.key)
    report = store.get_json(key)
    if report is None:
        status, outcome = (
            None,
            (
                f"its import report {key} is not written: the import may be running, or it failed for good (look for "
                "an 'import failed' alert and run its command, which re-delivers the file)"
            ),
        )
    else:
        status = str(report.get("status"))
        session = report.get("importSessionId")
        outcome = f"its import is {status}" + (f" (CloudBlue session {session})" if session is not None else "")
        outcome += f": {report.get('summary', '')}; report s3://{existing.bucket}/{key}"
        if status in ("REJECTED", "HELD"):
            outcome += f" (if the month was then imported from another file, its report is under reports/{month}/)"
    logger.info("Month already exported", extra={"key": existing.key, "importStatus": status})
    count(Metric.EXPORTS_ALREADY_STORED)
    return ExportLookup(
        month=month,
        coverage=coverage,
        operator=operator,
        stored=_stored(existing, already_stored=True),
        import_status=status,
        import_report=key if report is not None else None,
        summary=(
            f"{month} ({account.label}) was exported before, to {existing.uri}: nothing was exported, "
            f"stored or imported again; {outcome}"
        ),
    )


def read_closed_bill(
    request: ExportRequest,
    soracom: SoracomApi,
    today: date,
    coverage: Coverage | None = None,
    operator: str | None = None,
) -> BillSummary:
    """getBill: the month's bill, which must be closed before it is exported.

    Policy for a bill that is not final yet (Soracom closes a month 1-3 business days after it
    ends): a ``temporary`` bill, and a 404 for the month that has just ended, raise
    :class:`BillNotClosedError`, which the state machine retries every 6 hours for 4 days. A 404 for
    any older month is final (:class:`BillNotFoundError`): that month had no charge. ``coverage`` is
    the one ``soracom`` talks to (the request's, settled by the caller).
    """
    month = ensure_billable(request.billing_month(), today)
    coverage = coverage or request.coverage or "jp"
    logger.append_keys(month=month, coverage=coverage)
    try:
        bill = soracom.get_bill(month)
    except BillNotFoundError as exc:
        if month == previous_month(today):
            raise BillNotClosedError(
                f"Soracom has no bill for {month} yet: a month closes 1-3 business days after it ends "
                f"(a month without any charge never gets one). Soracom said: {exc}"
            ) from exc
        raise
    if bill.yearMonth is not None and bill.yearMonth != month:
        raise SoracomApiError(f"getBilling for {month} answered the bill of {bill.yearMonth}")
    if bill.currency not in CURRENCIES[coverage]:
        name = coverage_label(coverage)
        raise SoracomApiError(
            f"Soracom's {month} bill for {name} is in {bill.currency}, but {name} bills in "
            f"{' or '.join(CURRENCIES[coverage])}: the API reached is another coverage's (check "
            f"SORACOM_ENDPOINT and SORACOM_ENDPOINT_{coverage.upper()}, or the execution's coverage)"
        )
    if bill.state != "closed":
        raise BillNotClosedError(
            f"the bill for {month} is still {bill.state!r} (amount so far {bill.amount} {bill.currency}): "
            "Soracom closes a month 1-3 business days after it ends"
        )
    logger.info(
        "Bill is closed",
        extra={"amount": str(bill.amount), "currency": bill.currency, "coupon": str(bill.appliedCouponAmount)},
    )
    return BillSummary(
        month=month,
        amount=bill.amount,
        applied_coupon_amount=bill.appliedCouponAmount,
        currency=bill.currency,
        coverage=coverage,
        operator=operator,
    )


def start_export(
    month: str, soracom: SoracomApi, coverage: Coverage = "jp", operator: str | None = None
) -> ExportProgress:
    """startExport: ask Soracom for the detailed billing CSV, always ``export_mode=async``."""
    logger.append_keys(month=month, coverage=coverage, operator=operator)
    started = soracom.start_export(month)
    logger.append_keys(exportedFileId=started.exportedFileId)
    logger.info("Export started")
    return ExportProgress(
        exported_file_id=started.exportedFileId,
        status="processing",
        polls=0,
        month=month,
        coverage=coverage,
        operator=operator,
    )


def poll_export(progress: ExportProgress, soracom: SoracomApi) -> ExportProgress:
    """pollExport: one look at the export; the state machine decides whether to wait and look again."""
    logger.append_keys(
        month=progress.month,
        coverage=progress.coverage,
        operator=progress.operator,
        exportedFileId=progress.exported_file_id,
    )
    exported = soracom.get_exported_file(progress.exported_file_id)
    polls = progress.polls + 1
    logger.info("Export polled", extra={"status": exported.status, "polls": polls})
    if exported.status != "processing":
        count(Metric.EXPORT_POLLS_NEEDED, polls)
    return progress.model_copy(update={"status": exported.status, "polls": polls})


def store_export(
    request: StoreExportRequest,
    soracom: SoracomApi,
    store: ObjectStore,
    now: datetime | None = None,
    coverages: tuple[Coverage, ...] = ("jp",),
    accounts: tuple[Account, ...] = (),
) -> StoredExport:
    """storeExport: fetch a fresh download URL, download the CSV at once, store it byte for byte.

    One export per month and coverage: if the month's export of the coverage is stored already (a
    re-run, a second schedule delivery, a retry; :func:`stored_export`), nothing is downloaded or
    written and that export is returned, so the import flow never sees a second file for it. To
    export a month again, delete its CSV under ``exports/<yyyyMM>/`` first.

    The file is spooled to local disk while its SHA-256 is computed, then uploaded (multipart above
    8 MiB) with the month, coverage, currency, bill amount, coupon and SHA-256 as object metadata, so
    memory stays bounded whatever the file size. ``coverages`` are the stack's: with more than one
    the key has a folder per coverage (:func:`export_key`).
    """
    account = request_account(request.coverage, request.operator, coverages, accounts, "StoreExport's input")
    coverage, operator = account.coverage, account.operator
    logger.append_keys(
        month=request.month, coverage=coverage, operator=operator, exportedFileId=request.exported_file_id
    )
    existing = stored_export(store, request.month, coverage, operator)
    if existing is not None:
        logger.info("Month already exported", extra={"key": existing.key})
        return _stored(existing, already_stored=True)

    exported = soracom.get_exported_file(request.exported_file_id)
    if exported.status != "exported" or not exported.url:
        raise SoracomApiError(
            f"export {request.exported_file_id} is {exported.status!r}"
            + ("" if exported.url else " and Soracom gave no url")
            + ": it cannot be downloaded"
        )
    key = export_key(request.month, request.exported_file_id, coverage, nested=len(coverages) > 1, operator=operator)
    with tempfile.TemporaryDirectory(prefix="soracharge-") as workdir:
        path = Path(workdir) / "export.csv"
        with path.open("wb") as sink:
            downloaded = soracom.download(exported.url, sink)
        metadata = {
            "month": request.month,
            "coverage": coverage,
            "currency": request.currency,
            "bill-amount": str(request.amount),
            "coupon-amount": str(request.applied_coupon_amount),
            "sha256": downloaded.sha256,
            "exported-file-id": request.exported_file_id,
            "exported-at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "download-url": without_query(exported.url),
        }
        if operator is not None:
            metadata["operator"] = operator
        stored = store.upload_file(path, key, metadata=metadata, content_type=CSV_CONTENT_TYPE)
    logger.info("Export stored", extra={"key": key, "size": downloaded.size})
    count(Metric.EXPORTS_STORED)
    metrics.add_metric(name=Metric.EXPORT_BYTES_STORED.value, unit="Bytes", value=downloaded.size)
    return _stored(stored, already_stored=False)


def without_query(url: str) -> str:
    """The URL without its query: a pre-signed URL's query holds temporary credentials."""
    return url.split("?", 1)[0]


def _stored(obj: StoredObject, *, already_stored: bool) -> StoredExport:
    return StoredExport(
        bucket=obj.bucket,
        key=obj.key,
        version_id=obj.version_id,
        size=obj.size,
        sha256=obj.metadata["sha256"],
        uri=obj.uri,
        download_url=obj.metadata.get("download-url", ""),
        already_stored=already_stored,
    )


def start_account_exports(
    request: ExportRequest, accounts: tuple[Account, ...], workflows: WorkflowStarter, state_machine_arn: str
) -> list[dict[str, str]]:
    """The monthly schedule of the operators ``SoracomAccounts`` lists: one export execution per operator and
    coverage, each named after its bill (``export-<yyyyMM>-<coverage>-<operatorId>``), so a schedule delivered
    twice starts nothing twice; each then runs, fails and is retried on its own, as a coverage's always did.
    The stack's own operator keeps its own schedules."""
    month = request.billing_month()
    started = []
    for account in accounts:
        for coverage in account.coverages:
            name = f"export-{month}-{coverage}-{account.operator}"
            payload = {"month": month, "coverage": coverage, "operator": account.operator}
            arn = workflows.start(state_machine_arn, name, payload)
            started.append({"operator": account.operator, "coverage": coverage, "executionArn": arn})
    logger.info("Account exports started", extra={"month": month, "executions": len(started)})
    return started
