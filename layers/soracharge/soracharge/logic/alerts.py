"""Every alert a person receives on the SNS topic: what failed, for which month, and what to do.

Alerts come from four places, and are all written here:

- an export-billing execution that ended FAILED, TIMED_OUT or ABORTED (EventBridge rule -> alert
  function), and a follow-import-session execution that failed before recording its outcome;
- an import whose three attempts failed (the import function's on-failure destination -> alert function);
- an import report a person must act on: REJECTED (bad or unmapped rows), HELD (a second file for
  a month), a reconciliation that does not balance (import function), FAILED_PROCESSED or NOT_RATED
  (the follow-import-session state machine's RecordOutcome);
- the monthly schedule failing to start the export at all (a CloudWatch alarm on its dead-letter
  queue, whose text is in ``template.yaml``).

Each message has the same shape: one line saying what happened, the facts (month, file, session,
error), ``What to do:`` and, where one command fixes it, that command. Re-running is always safe:
a month stored is not stored again, and a file imported is not imported again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus

from soracharge.adapters.notifier import Notifier
from soracharge.errors import InvalidInputError
from soracharge.logic import guards
from soracharge.models.accounts import OPERATOR_ID, BillAccount
from soracharge.models.alerts import ExecutionStatusDetail, FailedInvocation
from soracharge.models.coverage import COVERAGES, CURRENCIES, coverage_label, parse_coverage
from soracharge.models.export_flow import ExportRequest
from soracharge.models.imports import (
    IMPORTABLE_KEY,
    EndReason,
    FollowSessionRequest,
    ImportReport,
    ObjectRef,
    Reconciliation,
    SessionProgress,
)
from soracharge.models.runbook import RUNBOOK_LINE, Remedy
from soracharge.observability import Metric, count, logger

UNKNOWN_MONTH = "unknown month"

#: Problems listed in a rejection alert (the report lists every one).
PROBLEMS_SHOWN = 10

#: Ends of the follow-import-session state machine that its RecordOutcome state alerted already.
FOLLOW_ENDS_ALERTED = frozenset({"ImportSessionFailed", "SessionNotRated"})

#: Said of a command that uses ``--cli-binary-format`` (an AWS CLI v2 option; version 1 sends the payload raw).
NEEDS_CLI_V2 = (
    "{} below need{} AWS CLI v2 (`aws --version` says aws-cli/2): version 1 does not know --cli-binary-format "
    "(with version 1, leave that option out)."
)

_START_AGAIN = "then start the export again (the command below); a month already stored is not stored again."
_START_AGAIN_SENTENCE = "Then" + _START_AGAIN.removeprefix("then")

#: What to do when an export execution failed with this error.
EXPORT_ACTIONS = {
    "BillNotClosedError": (
        "Soracom had not closed the month's bill after 4 days of retries. Check the bill in the Soracom "
        f"console (Billing); once it is closed, {_START_AGAIN}"
    ),
    "BillNotFoundError": (
        "Soracom has no bill for this month: there were no charges, or the month is older than the 18 months "
        "Soracom keeps. There is nothing to import; act only if you expected a bill."
    ),
    "SoracomAuthError": (
        "Soracom refused the AuthKey. Put a valid one in the secret {soracom_secret} "
        "(aws secretsmanager put-secret-value --region {region} --secret-id {soracom_secret} --secret-string "
        '\'{{"authKeyId": "keyId-...", "authKey": "secret-..."}}\'), ' + _START_AGAIN
    ),
    "SoracomRateLimitedError": (
        f"Soracom kept answering 429 (rate limited) through every retry. Wait a few minutes, {_START_AGAIN}"
    ),
    "SoracomUnavailableError": (
        f"Soracom was unavailable or too slow through every retry. Check https://status.soracom.io, {_START_AGAIN}"
    ),
    "SoracomApiError": (
        f"Soracom answered something unexpected (the error says what). {_START_AGAIN_SENTENCE} "
        "If it fails the same way, send the error to Soracom support."
    ),
    "ExportFailed": f"Soracom reported the CSV export as failed. {_START_AGAIN_SENTENCE}",
    "ExportTimedOut": (
        "Soracom's CSV export was still processing after 21 polls (about 2 minutes). Wait a few minutes, "
        + _START_AGAIN
    ),
    "ExportDownloadError": (
        f"Soracom's download link was refused (expired) or the download was cut short. {_START_AGAIN_SENTENCE}"
    ),
    "UnsafeDownloadUrlError": (
        "Soracom's download link pointed outside SORACOM_DOWNLOAD_URL_PATTERNS, so nothing was fetched. If the "
        f"host in the error is legitimate, allow it in that setting (sam deploy), {_START_AGAIN}"
    ),
    "InvalidInputError": (
        'The execution\'s input was wrong (the error names the field). Start it with {{"month": "yyyyMM"}}: a month '
        'that is over and within Soracom\'s last 18 months (and, on a stack of both coverages, its "coverage": '
        '"jp" or "g").'
    ),
    "ConfigurationError": f"A setting of the stack is missing or invalid (the error names it). Fix it, {_START_AGAIN}",
    "StorageError": f"AWS refused a call (S3, DynamoDB, SNS; the error says which). Fix the cause, {_START_AGAIN}",
}
EXPORT_ACTIONS["MonthOutOfRangeError"] = EXPORT_ACTIONS["InvalidInputError"]
EXPORT_ACTIONS["MappingError"] = EXPORT_ACTIONS["ConfigurationError"]

#: What to do when the import of a file failed three times with this error.
IMPORT_ACTIONS = {
    "CloudBlueUnavailableError": (
        "CloudBlue did not answer, or answered 5xx/429, through every retry. Once it is reachable, re-deliver the "
        "file (the command below): the import resumes where it stopped, or starts over in a new session; no "
        "charge is sent twice."
    ),
    "CloudBlueAuthError": (
        "CloudBlue refused the credentials. Put valid ones in the secret {cloudblue_secret} "
        '(\'{{"consumerKey": ..., "consumerSecret": ...}}\' or \'{{"apsToken": ...}}\'), then re-deliver the file '
        "(the command below)."
    ),
    "CloudBlueApiError": (
        "CloudBlue refused a call (the error says why: often a subscription or resource the mapping names). Fix "
        "the cause in CloudBlue or in the mapping, then re-deliver the file (the command below)."
    ),
    "ImportInProgressError": (
        "Another import of the same file or month was still running through every retry. Look at the month's "
        "reports; once that import has ended, re-deliver this file if it is still needed (the command below): if "
        "the month is imported by then, it is recorded as DUPLICATE or HELD and nothing is sent."
    ),
    "ImportSupersededError": (
        "Each attempt was slow enough that another delivery of the same event took the import over (the ledger "
        "refused the slow attempt's writes, so it sent nothing more). Re-deliver the file (the command below): "
        "it returns the import's report once the attempt that took over has ended, and finishes it otherwise."
    ),
    "ImportResumeError": (
        "The last attempt marked the file's CloudBlue session closing (it is the month's bill), and the retry reads "
        "problems in the file with the same pinned mapping: another version of soracharge reads it otherwise. "
        "Nothing was sent again. Deploy the version the file was first imported with, then re-deliver the file "
        "(the command below): the report then records the session as it was closed."
    ),
    "MappingError": (
        "The mapping file is invalid (the error names the line and the field). Fix it and upload it to "
        "s3://{bucket}/config/mapping.yaml, then re-deliver the file (the command below)."
    ),
    "ConfigurationError": (
        "A setting of the import function is missing or invalid (the error names it). Fix it (sam deploy), then "
        "re-deliver the file (the command below)."
    ),
    "ImportTimeBudgetError": (
        "The import ran short of time on each attempt. Re-deliver the file (the command below): it resumes where "
        "it stopped. If it happens again, CloudBlue is answering slowly: check it, or raise ImportConcurrency."
    ),
    "StorageError": (
        "AWS refused a call (S3, DynamoDB, Step Functions; the error says which). Fix the cause, then re-deliver "
        "the file (the command below)."
    ),
    "Sandbox.Timedout": (
        "The import function ran out of its 15 minutes on each attempt. Re-deliver the file (the command below): "
        "it resumes where it stopped. If it happens again, CloudBlue is answering slowly: check it, or raise "
        "ImportConcurrency."
    ),
    "InvalidInputError": (
        "The file or its event could not be used (the error says why: a deleted object, a key outside "
        "exports/<yyyyMM>/ or uploads/<yyyyMM>/). Upload the file where it belongs."
    ),
}


@dataclass(frozen=True)
class Alert:
    """One message to the alerts topic."""

    subject: str
    headline: str
    action: str
    remedy: Remedy
    facts: list[tuple[str, str]] = field(default_factory=list)
    command: str | None = None

    def message(self) -> str:
        """The text people read; its last line names the runbook's row (docs/operate/runbook.md)."""
        width = max((len(name) for name, _ in self.facts), default=0) + 2
        lines = [self.headline, ""]
        lines += [f"{name + ':':<{width}}{value}" for name, value in self.facts]
        lines += ["", f"What to do: {self.action}"]
        if self.command:
            lines += ["", self.command]
        lines += ["", f"{RUNBOOK_LINE}{self.remedy}"]
        return "\n".join(lines)


def publish(notifier: Notifier, alert: Alert) -> None:
    notifier.publish(alert.subject, alert.message())
    count(Metric.ALERTS_PUBLISHED)
    logger.warning("Alert published", extra={"subject": alert.subject})


# -- state machine executions ---------------------------------------------------------------------


def for_execution(
    change: ExecutionStatusDetail,
    *,
    export_state_machine_arn: str,
    soracom_secret: str | None = None,
    coverages: tuple[str, ...] = ("jp",),
) -> Alert | None:
    """The alert for an execution that ended badly; None when there is nothing to say (it succeeded, or
    RecordOutcome already alerted how a session ended). ``coverages`` are the stack's."""
    if change.status in ("RUNNING", "SUCCEEDED", "PENDING_REDRIVE"):
        return None
    if change.state_machine_arn == export_state_machine_arn:
        return _export_failed(change, soracom_secret or "<SoracomAuthKeySecretArn output>", coverages)
    if change.status == "FAILED" and change.error in FOLLOW_ENDS_ALERTED:
        return None
    return _follow_failed(change)


def _export_failed(change: ExecutionStatusDetail, soracom_secret: str, coverages: tuple[str, ...]) -> Alert:
    month = _export_month(change.input_json())
    coverage = _named_coverage(change.input_json().get("coverage"))
    operator = _named_operator(change.input_json().get("operator"))
    if change.status == "TIMED_OUT":
        error, action = "timed out", f"The execution ran longer than its time limit (5 days). {_START_AGAIN_SENTENCE}"
    elif change.status == "ABORTED":
        error, action = "stopped by someone", f"If stopping it was a mistake, {_START_AGAIN}"
    else:
        error = change.error or "States.Runtime"
        template = EXPORT_ACTIONS.get(error, f"Read the error and fix its cause, {_START_AGAIN}")
        action = template.format(soracom_secret=soracom_secret, region=_region(soracom_secret))
    what = f"{change.status.replace('_', ' ').lower()}" + (f" ({change.error})" if change.error else "")
    # A wrong or unreadable month is not started again as it was.
    wrong = change.error in ("InvalidInputError", "MonthOutOfRangeError") or month == UNKNOWN_MONTH
    again = "yyyyMM" if wrong else month
    again_input = {"month": again}
    if coverage or len(coverages) > 1:  # a stack of both: the input must say which bill (a blank to fill)
        again_input["coverage"] = coverage or "|".join(coverages)
    if operator:  # a listed operator's bill: started again for that operator
        again_input["operator"] = operator
    of = _of(coverage, operator)
    return Alert(
        subject=f"soracharge {month}{of}: export {what}",
        headline=f"The export of Soracom's {month} bill{of} {what}: no CSV was stored, so nothing was imported.",
        facts=[
            ("Month", month),
            *_coverage_fact(coverage),
            *([("Operator", operator)] if operator else []),
            ("Error", _error_line(change.error, change.cause)),
            ("Execution", change.execution_arn),
            ("Console", _console_link(change.execution_arn)),
        ],
        action=action,
        remedy=Remedy.NOTHING if change.error == "BillNotFoundError" else Remedy.START_EXPORT,
        command=(
            f"aws stepfunctions start-execution --region {_region(change.state_machine_arn)} "
            f"--state-machine-arn {change.state_machine_arn} "
            f"--name export-{again}{'-' + coverage if coverage else ''}{'-' + operator if operator else ''}"
            "-$(date +%Y%m%dT%H%M%S) "
            f"--input '{json.dumps(again_input)}'"
        ),
    )


def _follow_failed(change: ExecutionStatusDetail) -> Alert:
    request = change.input_json()
    month = str(request.get("month", "unknown month"))
    coverage = _named_coverage(request.get("coverage"))
    operator = _named_operator(request.get("operator"))
    session = (request.get("session") or {}).get("importSessionId", "?")
    return Alert(
        subject=f"soracharge {month}{_of(coverage, operator)}: could not record how CloudBlue session {session} ended",
        headline=(
            f"Following CloudBlue import session {session} ({month}) ended {change.status.replace('_', ' ')} before "
            "its outcome was recorded. The charges are in that session already: do not import the file again."
        ),
        facts=[
            ("Month", month),
            *_coverage_fact(coverage),
            ("Import session", str(session)),
            ("Report", str(request.get("reportKey", "-"))),
            ("Error", _error_line(change.error, change.cause)),
            ("Execution", change.execution_arn),
            ("Console", _console_link(change.execution_arn)),
        ],
        action=(
            "Check the session in CloudBlue, fix the error's cause, then follow the session again with the same "
            "input (the command below): it records PROCESSED or FAILED_PROCESSED in the report."
        ),
        remedy=Remedy.FOLLOW_AGAIN,
        command=(
            f"aws stepfunctions start-execution --region {_region(change.state_machine_arn)} "
            f"--state-machine-arn {change.state_machine_arn} "
            f"--name {change.name[:60]}-again-$(date +%s) --input {shlex.quote(change.input or '{}')}"
        ),
    )


def _named_coverage(value: object) -> str | None:
    """``jp`` or ``g`` when ``value`` is one (an execution's input, a key's folder), else None."""
    return value if value in COVERAGES else None


def _operator_of(object_id: str | None) -> str | None:
    """The operator folder of an object id's key (``<bucket>/exports/<yyyyMM>/<operatorId>/...#<version>``)."""
    if not object_id:
        return None
    with contextlib.suppress(InvalidInputError):
        return ObjectRef.from_object_id(object_id).key_operator()
    return None


def _named_operator(value: object) -> str | None:
    """An operator id when ``value`` is one (an execution's input), else None."""
    return value if isinstance(value, str) and OPERATOR_ID.fullmatch(value) else None


def _of(coverage: str | None, operator: str | None = None) -> str:
    """`` (Global coverage)`` (`` (operator OP0012345678, Global coverage)``) after a month in a subject or a
    headline, when the coverage is known."""
    if not coverage:
        return f" (operator {operator})" if operator else ""
    return f" ({BillAccount(parse_coverage(coverage), operator).label})"


def _currency(report: ImportReport) -> str:
    """The currency to upload a file again with: the report's, else its coverage's when it has one; never a guess."""
    if report.currency:
        return report.currency
    options = CURRENCIES[report.coverage] if report.coverage else ("JPY", "USD", "EUR")
    return "|".join(options)


def _coverage_fact(coverage: str | None) -> list[tuple[str, str]]:
    return [("Coverage", f"{coverage} ({coverage_label(coverage)})")] if coverage else []


def _export_month(execution_input: dict[str, Any]) -> str:
    try:
        return ExportRequest.model_validate(execution_input).billing_month()
    except ValueError:
        return UNKNOWN_MONTH


# -- an import that failed for good ----------------------------------------------------------------


def for_failed_import(record: FailedInvocation, *, cloudblue_secret: str | None = None) -> Alert:
    """The alert for an S3 event the import function failed to import three times."""
    review = record.request_payload.get("review")
    if isinstance(review, dict):  # a person's approval: its object named by id
        location, _, version = str(review.get("objectId", "?/?#")).rpartition("#")
        bucket, _, key = location.partition("/")
    else:
        s3 = ((record.request_payload.get("Records") or [{}])[0] or {}).get("s3", {})
        bucket = str(s3.get("bucket", {}).get("name", "?"))
        key = unquote_plus(str(s3.get("object", {}).get("key", "?")))  # S3 events carry the key URL-encoded
        version = s3.get("object", {}).get("versionId")
    match = IMPORTABLE_KEY.fullmatch(key)
    month = match["month"] if match else "unknown month"
    coverage = _named_coverage(match["coverage"] if match else None)
    operator = _named_operator(match["operator"] if match else None)
    of = _of(coverage, operator)
    operator_fact = [("Operator", operator)] if operator else []
    response = record.response_payload
    error_type = response.errorType if response else record.request_context.condition
    error_message = response.errorMessage if response else ""
    template = IMPORT_ACTIONS.get(
        error_type, "Read the error and fix its cause, then re-deliver the file (the command below)."
    )
    if isinstance(review, dict) and error_type == "InvalidInputError":
        return Alert(
            subject=f"soracharge {month}{of}: decision refused, nothing decided",
            headline=guards.printable(f"The decision on s3://{bucket}/{key} was refused: {error_message}."),
            facts=[
                ("Month", month),
                *_coverage_fact(coverage),
                *operator_fact,
                ("File", f"s3://{bucket}/{key}"),
                ("Version", str(version or "-")),
                ("Decision", guards.printable(f"{review.get('decision', '?')} by {review.get('by', '?')}")),
            ],
            action=(
                "Nothing was decided and nothing was sent by it. The error says why (another plan than the "
                "preview's, a file never held, or a decision recorded already): read the file's latest report, and "
                "decide with the command of its latest alert, if it is still waiting."
            ),
            remedy=Remedy.NOTHING,
        )
    payload = json.dumps(record.request_payload, separators=(",", ":"), ensure_ascii=False)
    return Alert(
        subject=f"soracharge {month}{of}: import failed ({error_type})",
        headline=(
            f"The import of s3://{bucket}/{key} failed {record.request_context.approximate_invoke_count} times. "
            "Do not upload the file again: once the cause is fixed, re-deliver this same event (the command "
            "below); the import resumes where it stopped, and never sends a session it closed already again."
        ),
        facts=[
            ("Month", month),
            *_coverage_fact(coverage),
            *operator_fact,
            ("File", f"s3://{bucket}/{key}"),
            ("Version", str(version or "-")),
            ("Error", _error_line(error_type, error_message)),
            ("Function", record.request_context.function_arn),
        ],
        action=template.format(
            cloudblue_secret=cloudblue_secret or "<CloudBlueCredentialsSecretArn output>", bucket=bucket
        )
        + " "
        + NEEDS_CLI_V2.format("The command", "s"),
        remedy=Remedy.UPLOAD_AGAIN if error_type == "InvalidInputError" else Remedy.REDELIVER_EVENT,
        command=(
            f"aws lambda invoke --region {_region(record.request_context.function_arn)} --invocation-type Event "
            "--cli-binary-format raw-in-base64-out "
            f"--function-name {record.request_context.function_arn.removesuffix(':$LATEST')} "
            f"--payload {shlex.quote(payload)} /dev/null"
        ),
    )


# -- reports a person must act on -------------------------------------------------------------------


@dataclass(frozen=True)
class _Reported:
    """What every report alert says of its file: where it is, its month and coverage, where to upload it."""

    report: ImportReport
    key: str
    import_function: str = "<ImportChargesFunction>"

    @property
    def bill(self) -> str:
        """The subject's month, and its coverage when known."""
        return f"{self.report.month or 'unknown month'}{_of(self.report.coverage, self.report.operator)}"

    @property
    def where(self) -> list[tuple[str, str]]:
        report = self.report
        return [
            ("Month", report.month or "unknown"),
            *_coverage_fact(report.coverage),
            *([("Operator", report.operator)] if report.operator else []),
            ("File", f"{report.object.uri} (version {report.object.version_id or '-'})"),
            ("Report", f"s3://{report.object.bucket}/{self.key} (and .html beside it)"),
        ]

    @property
    def uploads(self) -> str:
        """Where a person uploads the file again: its coverage's folder, so the import needs no guess."""
        month, coverage = self.report.month or "unknown month", self.report.coverage
        operator = f"{self.report.operator}/" if self.report.operator else ""
        return f"uploads/{month}/{operator}{coverage}/" if coverage else f"uploads/{month}/{operator}"

    @property
    def local_options(self) -> str:
        """The options naming the bill to a local command (``--operator OP… --coverage g``)."""
        operator = f" --operator {self.report.operator}" if self.report.operator else ""
        return f"{operator} --coverage {self.report.coverage}" if self.report.coverage else operator

    @property
    def additional(self) -> str:
        return f"--metadata import=additional,currency={_currency(self.report)}"


def for_report(
    report: ImportReport,
    report_key: str,
    follow_state_machine_arn: str | None = None,
    *,
    import_function: str = "<ImportChargesFunction>",
) -> Alert | None:
    """The alert an import report calls for, or None (imported and balanced, dry run...).

    Every file that ended without importing (REJECTED, HELD, DUPLICATE) is alerted, with the action its
    ``reason`` calls for: the text is chosen from the report's status and reason, never from its summary.
    """
    reported = _Reported(report, report_key, import_function)
    if report.status in _DEFAULT_REASONS:
        return _NOT_IMPORTED[report.reason or _DEFAULT_REASONS[report.status]](reported)
    if report.status == "FAILED_PROCESSED":
        return _failed_rating(reported)
    if report.status == "NOT_RATED":
        return _not_rated(reported, follow_state_machine_arn)
    reconciliation = report.reconciliation
    if report.status == "CLOSED" and reconciliation is not None and not reconciliation.balanced:
        return _unbalanced(reported, reconciliation)
    return None


def _rejected(reported: _Reported) -> Alert:
    report = reported.report
    total = len(report.problems) + report.problems_not_listed
    shown = guards.summary(report.problems, report.problem_counts, total)[:PROBLEMS_SHOWN]
    return Alert(
        subject=f"soracharge {reported.bill}: file rejected, nothing imported",
        headline=guards.printable(f"{report.summary}."),
        facts=[*reported.where, *(("Problems", line) for line in shown), ("Every problem", "in the report")],
        action=(
            "Fix the mapping (a bill item or customer it does not know) or the file (each problem names its line, "
            "column and value). Check the fix with `soracharge import FILE --month MONTH --mapping MAPPING "
            "--dry-run`, upload a new mapping to config/mapping.yaml if it changed, then upload the file again: "
            "a new object version is a new import. For a file of the export flow, copy it to "
            f"{reported.uploads} with its currency (--metadata currency={_currency(report)})."
        )
        if report.month
        else (
            "Upload the file again where files go: uploads/<yyyyMM>/<name>.csv, in the folder of the month it "
            "bills, with --metadata currency=JPY|USD|EUR. Nothing was imported from here."
        ),
        remedy=Remedy.UPLOAD_AGAIN,
    )


def _same_bytes(reported: _Reported) -> Alert:
    return Alert(
        subject=f"soracharge {reported.bill}: the same file again, nothing imported",
        headline=f"{reported.report.summary}.",
        facts=[*reported.where, ("Imported before", reported.report.duplicate_of or "-")],
        action=(
            "Nothing: these bytes were imported for the month already (an export run twice, a file uploaded twice, "
            "an object copied onto itself). No charge was sent twice, and none is missing."
        ),
        remedy=Remedy.NOTHING,
    )


def _same_bytes_other_coverage(reported: _Reported) -> Alert:
    report = reported.report
    this, other = report.source, _source(report.duplicate_of)
    facts = [*reported.where, ("Imported before", report.duplicate_of or "-")]
    subject = f"soracharge {reported.bill}: the same file was imported as the other coverage's bill"
    if report.operator or _operator_of(report.duplicate_of):
        subject = f"soracharge {reported.bill}: the same file was imported as another operator's or coverage's bill"
    if this == "exports" and other == "exports":
        # Soracom's own exports of two accounts: one operator is never exported under two names (each client
        # refuses a credential of an operator exported under another), so these are two bills alike to the byte.
        return Alert(
            subject=subject,
            headline=f"{report.summary}.",
            facts=facts,
            action=(
                "Both files are Soracom's own exports, of two different bills (operators or coverages) that are the "
                "same byte for byte (bills of the same fees and no SIM, for instance): this one was not imported. "
                "Check in the Soracom console that both accounts billed these amounts this month; if they did, "
                f"import this one: upload it to {reported.uploads} with {reported.additional} (nothing else to add)."
            ),
            remedy=Remedy.UPLOAD_ADDITIONAL,
        )
    if this == "uploads" and other == "exports":
        return Alert(
            subject=subject,
            headline=f"{report.summary}.",
            facts=facts,
            action=(
                "Nothing: the file imported before is Soracom's own export of that coverage's bill (its coverage is "
                "Soracom's), so this upload names the wrong coverage. No charge was sent twice."
            ),
            remedy=Remedy.NOTHING,
        )
    told = (
        "This file is Soracom's own export of this coverage's bill (its coverage is Soracom's), so the file "
        "imported before was uploaded under the wrong coverage: import this one"
        if this == "exports"
        else "Tell which coverage the CSV is by its bill items (Global's are in English, such as 'Basic fee "
        "(plan01s)'; Japan's in Japanese). If this file names the right one (the file imported before was "
        "uploaded under the wrong coverage), import this one"
    )
    return Alert(
        subject=subject,
        headline=f"{report.summary}.",
        facts=facts,
        action=(
            f"{told}: upload it to {reported.uploads} with {reported.additional} (nothing else to add). The file "
            "imported before stays imported as its coverage's bill until that coverage's own bill comes: that file "
            "is then held, and its "
            "alert's differences (soracharge correction) replace the wrong import. If that coverage has no bill this "
            "month, undo the wrong import with a correction (docs/operate/corrections.md: its differences against "
            "a file with its header only). If the file imported before names the right coverage, nothing."
        ),
        remedy=Remedy.UPLOAD_ADDITIONAL,
    )


def _second_file(reported: _Reported) -> Alert:
    report = reported.report
    return Alert(
        subject=f"soracharge {reported.bill}: second file for the month held, nothing imported",
        headline=f"{report.summary}.",
        facts=[*reported.where, ("Imported before", report.duplicate_of or "-")],
        action=(
            "If this file corrects the one imported (or the one imported was the wrong file), import only the "
            "differences: `soracharge correction IMPORTED.csv CORRECTED.csv --month MONTH --mapping MAPPING` writes "
            "them (add --also-imported for each differences file imported for the month since), then upload that "
            f"file to {reported.uploads} with {reported.additional} (docs/operate/corrections.md). If it is a second "
            "bill for the month, upload it again with the metadata import=additional. Otherwise, nothing: no charge "
            "was sent."
        ),
        remedy=Remedy.IMPORT_DIFFERENCES,
    )


def _exported_twice(reported: _Reported) -> Alert:
    return Alert(
        subject=f"soracharge {reported.bill}: the month was exported twice, imported once",
        headline=(
            f"{reported.report.summary}. Two exports of the same month ran (two executions at once): the first "
            "file was imported, this one was not."
        ),
        facts=[*reported.where, ("Imported", reported.report.duplicate_of or "-")],
        action="Nothing: do not import this file too, it would bill the month twice.",
        remedy=Remedy.NOTHING,
    )


def _held_failed_rating(reported: _Reported) -> Alert:
    return Alert(
        subject=f"soracharge {reported.bill}: file held, the month's session failed to rate",
        headline=f"{reported.report.summary}.",
        facts=[*reported.where, ("Failed to rate", reported.report.duplicate_of or "-")],
        action=(
            "Fix the cause in CloudBlue (the errorDesc of the failed session's alert and report), then upload "
            f"the file again to {reported.uploads} with {reported.additional}: it is imported with charge ids of its "
            "own. Once one file is imported so, the month's later files stay held: do not import them too."
        ),
        remedy=Remedy.UPLOAD_ADDITIONAL,
    )


def review_command(function_name: str, object_id: str, plan: str, version: int, decision: str) -> str:
    """The command that approves or rejects an import held for approval (``YOUR NAME``: who decides)."""
    payload = json.dumps(
        {"review": {"objectId": object_id, "plan": plan, "version": version, "decision": decision, "by": "YOUR NAME"}},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return (
        f"aws lambda invoke --region {_region(function_name)} --invocation-type Event "
        f"--cli-binary-format raw-in-base64-out --function-name {function_name} "
        f"--payload {shlex.quote(payload)} /dev/null"
    )


def _awaiting_approval(reported: _Reported) -> Alert:
    report = reported.report
    approval, variance = report.approval, report.variance
    plan = approval.plan if approval else "-"
    version = approval.month_version if approval else 0
    flags = [flag.message for flag in variance.flags] if variance else []
    commands = {
        decision: review_command(reported.import_function, report.object.object_id, plan, version, decision)
        for decision in ("approve", "reject")
    }
    return Alert(
        subject=f"soracharge {reported.bill}: held for approval, nothing sent",
        headline=guards.printable(f"{report.summary}."),
        facts=[
            *reported.where,
            ("Charges", f"{report.counts.charges} ({_money(_charges_sum(report), report.currency)})"),
            *(("Unusual", guards.printable(line)) for line in flags[:PROBLEMS_SHOWN]),
            ("Plan", plan),
        ],
        action=(
            "Read the preview (the report: every charge per customer, the reconciliation, the month against the "
            "months before). If it is right, approve it with the first command below (put your name for YOUR "
            "NAME): exactly the charges previewed are sent, once. If it is not, reject it with the second; "
            "nothing is sent, then fix the file or the mapping and upload it again. Locally: `soracharge approve "
            f"--month {report.month or 'MONTH'}{reported.local_options} --by NAME` (or `reject`). "
            + NEEDS_CLI_V2.format("The commands", "")
        ),
        remedy=Remedy.APPROVE,
        command=f"{commands['approve']}\n\n{commands['reject']}",
    )


def _review_rejected(reported: _Reported) -> Alert:
    report = reported.report
    by = report.approval.by if report.approval and report.approval.by else "a person"
    return Alert(
        subject=f"soracharge {reported.bill}: rejected after review, nothing sent",
        headline=guards.printable(f"{report.summary}."),
        facts=[*reported.where, ("Rejected by", guards.printable(by))],
        action=(
            "Fix what the review found (the file or the mapping), then upload the file again to "
            f"{reported.uploads}: a new object version is a new import, previewed again."
        ),
        remedy=Remedy.UPLOAD_AGAIN,
    )


def _charges_sum(report: ImportReport) -> Decimal | None:
    return report.reconciliation.csv_sum if report.reconciliation else None


_NOT_IMPORTED = {
    EndReason.PROBLEMS: _rejected,
    EndReason.SAME_BYTES: _same_bytes,
    EndReason.SAME_BYTES_OTHER_COVERAGE: _same_bytes_other_coverage,
    EndReason.SECOND_FILE: _second_file,
    EndReason.EXPORTED_TWICE: _exported_twice,
    EndReason.FAILED_RATING: _held_failed_rating,
    EndReason.REVIEW: _awaiting_approval,
    EndReason.REVIEW_REJECTED: _review_rejected,
}
#: The reason of a report written before reasons were recorded.
_DEFAULT_REASONS = {
    "REJECTED": EndReason.PROBLEMS,
    "DUPLICATE": EndReason.SAME_BYTES,
    "HELD": EndReason.SECOND_FILE,
    "AWAITING_APPROVAL": EndReason.REVIEW,
}


def _failed_rating(reported: _Reported) -> Alert:
    report = reported.report
    return Alert(
        subject=f"soracharge {reported.bill}: CloudBlue failed to rate session {report.import_session_id}",
        headline=f"{report.summary}.",
        facts=[
            *reported.where,
            ("Import session", str(report.import_session_id)),
            ("errorDesc", report.error_desc or "-"),
        ],
        action=(
            "Read errorDesc and fix the cause in CloudBlue (often a subscription or resource the mapping names). "
            "The session's charges were not rated: import the file again as an additional file (upload it to "
            f"{reported.uploads} with {reported.additional})."
        ),
        remedy=Remedy.UPLOAD_ADDITIONAL,
    )


def _not_rated(reported: _Reported, follow_state_machine_arn: str | None) -> Alert:
    report = reported.report
    command = None
    if report.month and report.import_session_id is not None:
        # The input the import started the follow state machine with (defaults left out: short to paste).
        request = FollowSessionRequest(
            object_id=report.object.object_id,
            month=report.month,
            coverage=report.coverage,
            operator=report.operator,
            report_key=reported.key,
            session=SessionProgress(import_session_id=report.import_session_id, status="NEW"),
        )
        follow_input = request.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
        command = (
            f"aws stepfunctions start-execution --region {_region(follow_state_machine_arn)} --state-machine-arn "
            f"{follow_state_machine_arn or '<FollowImportSessionStateMachineArn>'} "
            f"--name follow-{report.import_session_id}-again-$(date +%s) "
            f"--input {shlex.quote(json.dumps(follow_input, ensure_ascii=False))}"
        )
    return Alert(
        subject=f"soracharge {reported.bill}: session {report.import_session_id} not rated",
        headline=f"{report.summary}.",
        facts=[*reported.where, ("Import session", str(report.import_session_id))],
        action=(
            f"Check session {report.import_session_id} in CloudBlue's rating engine: its charges are in it "
            "already, closed. Do not import the file again. Once CloudBlue has rated it (or failed to), follow "
            "it again with the command below: it records the outcome in the report (and alerts on a failure)."
        ),
        remedy=Remedy.FOLLOW_AGAIN,
        command=command,
    )


def _unbalanced(reported: _Reported, reconciliation: Reconciliation) -> Alert:
    report = reported.report
    return Alert(
        subject=f"soracharge {reported.bill}: reconciliation does not balance",
        headline=f"The {reported.bill} import does not reconcile: {reconciliation.note}.",
        facts=[
            *reported.where,
            *((step.label, _money(step.amount, report.currency)) for step in reconciliation.steps),
            ("The bill these steps make", _money(reconciliation.expected_bill, report.currency)),
            ("Soracom bill", _money(reconciliation.bill_amount, report.currency)),
            ("Difference (bill less steps)", _money(reconciliation.difference, report.currency)),
            ("Imported", _money(reconciliation.imported_sum, report.currency)),
            ("Import session", str(report.import_session_id)),
        ],
        action=(
            "Compare the bill in the Soracom console with the CSV (rounding up, the coupon and any tax are "
            "already accounted for above). If the CSV is incomplete, get a complete one and import only the "
            "differences (`soracharge correction`, docs/operate/corrections.md: upload them to "
            f"{reported.uploads} with {reported.additional}); the charges imported so far are correct for the rows "
            "the CSV has. If the "
            "explanation names a mapping setting (tax), set it: the next month reconciles with it."
        ),
        remedy=Remedy.IMPORT_DIFFERENCES,
    )


def _source(object_id: str | None) -> str | None:
    """``exports`` or ``uploads``: the folder of an object id (``bucket/key#version``)."""
    match = IMPORTABLE_KEY.fullmatch((object_id or "").rpartition("#")[0].partition("/")[2])
    return match["source"] if match else None


def _money(amount: Decimal | None, currency: str | None) -> str:
    return "-" if amount is None else f"{format(amount, 'f')} {currency or ''}".rstrip()


def _error_line(error: str | None, cause: str | None) -> str:
    message = cause or ""
    try:  # a Lambda error's cause is the runtime's JSON payload
        decoded = json.loads(message)
        if isinstance(decoded, dict) and "errorMessage" in decoded:
            message = str(decoded["errorMessage"])
    except ValueError:
        pass
    return f"{error or 'unknown'}: {message}" if message else (error or "unknown")


def _region(arn: str | None) -> str:
    """The region an alert's command names (``--region``): the ARN's own, when it is an ARN (the resource lives
    there), else the stack's: the function's ``AWS_REGION`` (Lambda always sets it; locally, moto's region)."""
    parts = (arn or "").split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[3]:
        return parts[3]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "<region>"


def _console_link(execution_arn: str) -> str:
    region = execution_arn.split(":")[3] if execution_arn.count(":") >= 4 else "us-east-1"
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"
