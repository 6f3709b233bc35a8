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
from soracharge.adapters.storage import ObjectStore, StoredExports, StoredObject
from soracharge.errors import BillNotClosedError, BillNotFoundError, SoracomApiError
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


def export_key(month: str, exported_file_id: str) -> str:
    """``exports/<yyyyMM>/<exportedFileId>.csv``: the key the import flow listens on."""
    return f"exports/{month}/{exported_file_id}.csv"


def find_stored_export(request: ExportRequest, store: StoredExports) -> ExportLookup:
    """The month's stored export and how its import ended, if the month was exported before.

    The state machine's first step: a re-run of a month already stored (by hand, a second schedule
    delivery, a backfill over months done already) ends here without asking Soracom for anything,
    and says so.
    """
    month = request.billing_month()
    logger.append_keys(month=month)
    existing = store.first(f"exports/{month}/")
    if existing is None or not existing.metadata.get("sha256"):
        return ExportLookup(month=month, summary=f"{month} has not been exported yet")
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
        stored=_stored(existing, already_stored=True),
        import_status=status,
        import_report=key if report is not None else None,
        summary=(
            f"{month} was exported before, to {existing.uri}: nothing was exported, stored or imported again; {outcome}"
        ),
    )


def read_closed_bill(request: ExportRequest, soracom: SoracomApi, today: date) -> BillSummary:
    """getBill: the month's bill, which must be closed before it is exported.

    Policy for a bill that is not final yet (Soracom closes a month 1-3 business days after it
    ends): a ``temporary`` bill, and a 404 for the month that has just ended, raise
    :class:`BillNotClosedError`, which the state machine retries every 6 hours for 4 days. A 404 for
    any older month is final (:class:`BillNotFoundError`): that month had no charge.
    """
    month = ensure_billable(request.billing_month(), today)
    logger.append_keys(month=month)
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
        month=month, amount=bill.amount, applied_coupon_amount=bill.appliedCouponAmount, currency=bill.currency
    )


def start_export(month: str, soracom: SoracomApi) -> ExportProgress:
    """startExport: ask Soracom for the detailed billing CSV, always ``export_mode=async``."""
    logger.append_keys(month=month)
    started = soracom.start_export(month)
    logger.append_keys(exportedFileId=started.exportedFileId)
    logger.info("Export started")
    return ExportProgress(exported_file_id=started.exportedFileId, status="processing", polls=0, month=month)


def poll_export(progress: ExportProgress, soracom: SoracomApi) -> ExportProgress:
    """pollExport: one look at the export; the state machine decides whether to wait and look again."""
    logger.append_keys(month=progress.month, exportedFileId=progress.exported_file_id)
    exported = soracom.get_exported_file(progress.exported_file_id)
    polls = progress.polls + 1
    logger.info("Export polled", extra={"status": exported.status, "polls": polls})
    if exported.status != "processing":
        count(Metric.EXPORT_POLLS_NEEDED, polls)
    return progress.model_copy(update={"status": exported.status, "polls": polls})


def store_export(
    request: StoreExportRequest, soracom: SoracomApi, store: ObjectStore, now: datetime | None = None
) -> StoredExport:
    """storeExport: fetch a fresh download URL, download the CSV at once, store it byte for byte.

    One export per month: if ``exports/<yyyyMM>/`` holds a stored export already (a re-run, a
    second schedule delivery, a retry), nothing is downloaded or written and that export is
    returned, so the import flow never sees a second file for the month. To export a month again,
    delete its objects under ``exports/<yyyyMM>/`` first.

    The file is spooled to local disk while its SHA-256 is computed, then uploaded (multipart above
    8 MiB) with the month, currency, bill amount, coupon and SHA-256 as object metadata, so memory stays
    bounded whatever the file size.
    """
    logger.append_keys(month=request.month, exportedFileId=request.exported_file_id)
    existing = store.first(f"exports/{request.month}/")
    if existing is not None and existing.metadata.get("sha256"):
        logger.info("Month already exported", extra={"key": existing.key})
        return _stored(existing, already_stored=True)

    exported = soracom.get_exported_file(request.exported_file_id)
    if exported.status != "exported" or not exported.url:
        raise SoracomApiError(
            f"export {request.exported_file_id} is {exported.status!r}"
            + ("" if exported.url else " and Soracom gave no url")
            + ": it cannot be downloaded"
        )
    key = export_key(request.month, request.exported_file_id)
    with tempfile.TemporaryDirectory(prefix="soracharge-") as workdir:
        path = Path(workdir) / "export.csv"
        with path.open("wb") as sink:
            downloaded = soracom.download(exported.url, sink)
        metadata = {
            "month": request.month,
            "currency": request.currency,
            "bill-amount": str(request.amount),
            "coupon-amount": str(request.applied_coupon_amount),
            "sha256": downloaded.sha256,
            "exported-file-id": request.exported_file_id,
            "exported-at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "download-url": without_query(exported.url),
        }
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
