"""Following a closed import session until CloudBlue's rating ends (statemachine/follow_import_session.asl.json).

CloudBlue moves a closed session NEW -> PROCESSING -> PROCESSED, or FAILED_PROCESSED with an
``errorDesc``. The state machine polls with :func:`poll_session` and ends with
:func:`finish_import`, which records the end in the report and the ledger and alerts people
through SNS when rating failed or never finished.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from soracharge.adapters.cloudblue import ChargesImportManager
from soracharge.adapters.ledger import Ledger
from soracharge.adapters.notifier import Notifier
from soracharge.adapters.storage import ReportStore
from soracharge.errors import InvalidInputError
from soracharge.logic import alerts, publishing
from soracharge.models.accounts import BillAccount
from soracharge.models.imports import FollowSessionRequest, ImportOutcome, ImportReport, ObjectRef, SessionProgress
from soracharge.observability import Metric, count, logger

RATED = frozenset({"PROCESSED", "REPORTED"})
_OUTCOME_METRICS = {
    "PROCESSED": Metric.SESSIONS_PROCESSED,
    "FAILED_PROCESSED": Metric.SESSIONS_FAILED_PROCESSED,
    "NOT_RATED": Metric.SESSIONS_NOT_RATED,
}


def poll_session(progress: SessionProgress, cloudblue: ChargesImportManager) -> SessionProgress:
    """One look at the session; the state machine waits and looks again while it is not rated."""
    _log_keys(progress.month, progress.object_id, progress.import_session_id)
    session = cloudblue.get_session(progress.import_session_id)
    polls = progress.polls + 1
    logger.info("Import session polled", extra={"status": session.status, "polls": polls})
    return progress.model_copy(update={"status": session.status, "polls": polls, "error_desc": session.error_desc})


def _log_keys(month: str | None, object_id: str | None, session_id: int) -> None:
    """``month``, ``objectKey``, ``objectVersion`` and ``importSessionId``, as every import log line has them."""
    location, _, version = (object_id or "").rpartition("#")
    logger.append_keys(
        month=month,
        objectKey=location.partition("/")[2] or None,
        objectVersion=version or None,
        importSessionId=session_id,
    )


def finish_import(
    request: FollowSessionRequest,
    store: ReportStore,
    ledger: Ledger,
    notifier: Notifier,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    follow_state_machine_arn: str | None = None,
) -> ImportOutcome:
    """Record how rating ended in the report and the ledger; alert when it failed or never ended."""
    session = request.session
    _log_keys(request.month, request.object_id, session.import_session_id)
    status: Literal["PROCESSED", "FAILED_PROCESSED", "NOT_RATED"]
    if request.failure is not None:
        status = "NOT_RATED"
    elif session.status in RATED:
        status = "PROCESSED"
    elif session.status == "FAILED_PROCESSED":
        status = "FAILED_PROCESSED"
    else:
        status = "NOT_RATED"
    # The report the ledger names (reports/ is its projection, and may lag it); one from before staged reports
    entry = ledger.get(request.object_id)
    named = entry.report_key if entry is not None else None
    existing = (store.get_json(named) if named else None) or store.get_json(request.report_key)
    if existing is None:
        raise InvalidInputError(f"no report at {request.report_key} for import session {session.import_session_id}")
    report = ImportReport.model_validate(existing)
    summary = {
        "PROCESSED": f"CloudBlue rated session {session.import_session_id}: {report.counts.charges} charges",
        "FAILED_PROCESSED": (
            f"CloudBlue failed to rate session {session.import_session_id}: "
            f"{session.error_desc or 'no errorDesc given'}"
        ),
        "NOT_RATED": (
            f"could not follow session {session.import_session_id} to its end: {request.failure.error}: "
            f"{_message(request.failure.cause)}"
            if request.failure
            else f"CloudBlue had not rated session {session.import_session_id} after {session.polls} polls "
            f"(last status {session.status})"
        ),
    }[status]
    updated = report.model_copy(
        update={
            "status": status,
            "summary": summary,
            "session_status": session.status,
            "error_desc": session.error_desc,
            "updated_at": clock(),
        }
    )
    obj = ObjectRef.from_object_id(request.object_id)
    staged = (
        f"{publishing.STAGED_REPORTS}{request.month}/{obj.version_id}/rating-{session.import_session_id}-{status}.json"
    )
    store.put_json(staged, updated.to_event())
    # The month's record of the file's bill: the account its import pinned (its scope), else the request's
    scope = (entry.pins.coverage if entry is not None and entry.pins is not None else None) or BillAccount(
        request.coverage or "jp", request.operator
    ).scope
    recorded = ledger.record_rating(
        request.object_id, status, report_key=staged, read=named, month_key=f"month#{request.month}#{scope}"
    )
    if not recorded:  # another finish recorded first (a follow run again, a retry): what the ledger says stands
        logger.warning("A rating was recorded by another finish first", extra={"status": status})
    elif status != "PROCESSED":
        logger.warning("Import session did not end rated", extra={"status": status, "errorDesc": session.error_desc})
    published = publishing.publish(
        obj, store, ledger, notifier, alert=lambda report, key: alerts.for_report(report, key, follow_state_machine_arn)
    )
    if published.status in ("PROCESSED", "FAILED_PROCESSED", "NOT_RATED"):
        status = published.status
    count(Metric.SESSION_POLLS_NEEDED, session.polls)
    count(_OUTCOME_METRICS[status])
    return ImportOutcome(
        status=status,
        import_session_id=session.import_session_id,
        report_key=request.report_key,
        error_desc=session.error_desc,
    )


def _message(cause: str | None) -> str:
    """The errorMessage of a Lambda error's cause, or the cause itself."""
    try:
        return str(json.loads(cause or "{}").get("errorMessage", cause))
    except (ValueError, AttributeError):
        return cause or ""
