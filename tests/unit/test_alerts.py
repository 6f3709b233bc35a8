"""The alerts people read: each names the month, what failed, what to do, and the command that fixes it."""

from __future__ import annotations

import copy
import inspect
import json
import re
import shlex
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from soracharge import errors
from soracharge.logic import alerts
from soracharge.logic.reconciliation import BillFacts, reconcile
from soracharge.models.alerts import ExecutionStatusChange, FailedInvocation
from soracharge.models.charges import ProblemKind
from soracharge.models.imports import EndReason, ImportReport, ObjectRef, Problem, Reconciliation
from soracharge.models.runbook import Remedy

EVENTS = Path(__file__).resolve().parents[2] / "events"
EXPORT_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:soracharge-export-billing"
FOLLOW_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:soracharge-follow-import-session"


def sample(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text()))


def execution(**changes: Any) -> Any:
    event = sample("alert_export_failed.json")
    event["detail"].update(changes)
    return ExecutionStatusChange.model_validate(event).detail


def test_a_failed_export_says_the_month_the_error_what_to_do_and_the_command_that_starts_it_again():
    alert = alerts.for_execution(execution(), export_state_machine_arn=EXPORT_ARN, soracom_secret="arn:secret:soracom")
    assert alert is not None
    # The schedule's scheduledTime 2026-11-04 exports the month before it.
    assert alert.subject == "soracharge 202610: export failed (BillNotClosedError)"
    message = alert.message()
    assert re.search(r"\nMonth: +202610\n", message)
    assert "BillNotClosedError: the bill for 202610 is still temporary" in message
    assert "What to do: Soracom had not closed the month's bill after 4 days of retries" in message
    assert "https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/" in message
    command = shlex.split(alert.command or "")
    assert command[:3] == ["aws", "stepfunctions", "start-execution"]
    assert command[command.index("--state-machine-arn") + 1] == EXPORT_ARN
    assert json.loads(command[command.index("--input") + 1]) == {"month": "202610"}
    assert len(alert.subject) <= 100


def test_a_listed_operators_failed_export_names_it_and_starts_that_operators_export_again():
    given = '{"month": "202610", "coverage": "g", "operator": "OP0000000002"}'
    alert = alerts.for_execution(
        execution(input=given, name="export-202610-g-OP0000000002"), export_state_machine_arn=EXPORT_ARN
    )
    assert alert is not None
    assert (
        alert.subject
        == "soracharge 202610 (operator OP0000000002, Global coverage): export failed (BillNotClosedError)"
    )
    assert ("Operator", "OP0000000002") in alert.facts
    command = shlex.split(alert.command or "")
    again = json.loads(command[command.index("--input") + 1])
    assert again == {"month": "202610", "coverage": "g", "operator": "OP0000000002"}
    assert command[command.index("--name") + 1].startswith("export-202610-g-OP0000000002-")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("SoracomAuthError", "put-secret-value --region us-east-1 --secret-id arn:secret:soracom"),
        ("ExportTimedOut", "still processing after 21 polls"),
        ("ExportFailed", "reported the CSV export as failed"),
        ("UnsafeDownloadUrlError", "SORACOM_DOWNLOAD_URL_PATTERNS"),
        ("BillNotFoundError", "There is nothing to import"),
        ("States.Runtime", "Read the error and fix its cause"),
    ],
)
def test_each_export_error_gets_its_own_advice(error, expected):
    alert = alerts.for_execution(
        execution(error=error, cause="boom"), export_state_machine_arn=EXPORT_ARN, soracom_secret="arn:secret:soracom"
    )
    assert alert is not None
    assert expected in alert.action
    assert f"({error})" in alert.subject


def test_a_wrong_month_is_not_offered_again_as_it_was():
    alert = alerts.for_execution(
        execution(error="MonthOutOfRangeError", input='{"month": "202001"}'), export_state_machine_arn=EXPORT_ARN
    )
    assert alert is not None
    assert alert.subject.startswith("soracharge 202001: export failed")
    assert '{"month": "yyyyMM"}' in (alert.command or "")


def test_timed_out_and_aborted_exports_alert_too_and_successes_do_not():
    timed_out = alerts.for_execution(execution(status="TIMED_OUT", error=None), export_state_machine_arn=EXPORT_ARN)
    aborted = alerts.for_execution(execution(status="ABORTED", error=None), export_state_machine_arn=EXPORT_ARN)
    assert timed_out is not None
    assert "timed out" in timed_out.subject
    assert "time limit" in timed_out.action
    assert aborted is not None
    assert "aborted" in aborted.subject
    assert "stopping it was a mistake" in aborted.action
    assert alerts.for_execution(execution(status="SUCCEEDED", error=None), export_state_machine_arn=EXPORT_ARN) is None


def test_a_follow_execution_whose_end_was_already_alerted_is_not_alerted_twice():
    follow_input = json.dumps(
        {
            "objectId": "b/k#v",
            "month": "202610",
            "reportKey": "reports/202610/v.json",
            "session": {"importSessionId": 7},
        }
    )
    for recorded in ("ImportSessionFailed", "SessionNotRated"):
        change = execution(stateMachineArn=FOLLOW_ARN, error=recorded, input=follow_input)
        assert alerts.for_execution(change, export_state_machine_arn=EXPORT_ARN) is None
    # RecordOutcome itself failing is news: the alert says how to follow the session again.
    change = execution(stateMachineArn=FOLLOW_ARN, error="StorageError", cause="S3 said no", input=follow_input)
    alert = alerts.for_execution(change, export_state_machine_arn=EXPORT_ARN)
    assert alert is not None
    assert alert.subject == "soracharge 202610: could not record how CloudBlue session 7 ended"
    assert "do not import the file again" in alert.headline
    command = shlex.split(alert.command or "")
    assert command[command.index("--state-machine-arn") + 1] == FOLLOW_ARN
    assert json.loads(command[command.index("--input") + 1]) == json.loads(follow_input)


def test_an_import_that_failed_for_good_gives_the_command_that_redelivers_the_same_event():
    record = FailedInvocation.model_validate(sample("alert_import_failed.json"))
    alert = alerts.for_failed_import(record, cloudblue_secret="arn:secret:cloudblue")
    assert alert.subject == "soracharge 202610: import failed (CloudBlueUnavailableError)"
    message = alert.message()
    assert "s3://soracharge-data-123456789012/exports/202610/fe_18a156d382f44892b907f6e31e2c5a9f.csv" in message
    assert "failed 3 times" in message
    assert "Once it is reachable, re-deliver the file" in alert.action
    command = shlex.split(alert.command or "")
    assert command[:3] == ["aws", "lambda", "invoke"]
    assert command[command.index("--invocation-type") + 1] == "Event"
    assert command[command.index("--function-name") + 1].endswith(
        "function:soracharge-ImportChargesFunction-GGDH5V3D9XPG"
    )
    # The payload is the very S3 event that failed: the same object version, so the import resumes.
    assert json.loads(command[command.index("--payload") + 1]) == record.request_payload


def test_an_import_refused_by_cloudblue_credentials_names_the_secret_to_fix():
    event = sample("alert_import_failed.json")
    event["responsePayload"] = {"errorType": "CloudBlueAuthError", "errorMessage": "401 Unauthorized"}
    alert = alerts.for_failed_import(FailedInvocation.model_validate(event), cloudblue_secret="arn:secret:cloudblue")
    assert "arn:secret:cloudblue" in alert.action


def test_every_error_with_advice_is_one_the_flows_raise():
    raised = {name for name, value in inspect.getmembers(errors, inspect.isclass) if issubclass(value, Exception)}
    fail_states = {"ExportFailed", "ExportTimedOut"}  # the export state machine's own Fail states
    assert set(alerts.EXPORT_ACTIONS) <= raised | fail_states
    assert set(alerts.IMPORT_ACTIONS) <= raised | {"Sandbox.Timedout"}  # Lambda's own, for a function that timed out


def report(status: str, **fields: Any) -> ImportReport:
    moment = datetime(2026, 11, 4, tzinfo=UTC)
    return ImportReport.model_validate(
        {
            "status": status,
            "summary": f"summary of a {status} import",
            "month": "202610",
            "object": ObjectRef(bucket="data", key="uploads/202610/bill.csv", version_id="v1"),
            "currency": "JPY",
            "created_at": moment,
            "updated_at": moment,
            **fields,
        }
    )


def test_a_rejected_file_alert_sums_its_problems_up_by_kind_with_the_first_lines_and_how_to_check_the_fix():
    # Given 42 problems: 40 unmapped items (12 listed in the report, 30 more counted) and 2 dates of another month
    unmapped = ProblemKind.UNMAPPED_ITEM
    problems = [
        Problem(
            line=12 + i, column="billItemName", value=f"Item {i}", message=f"no resource for 'Item {i}'", kind=unmapped
        )
        for i in range(10)
    ] + [Problem(line=90 + i, column="date", message=f"date {i} is outside", kind=ProblemKind.MONTH) for i in range(2)]
    counts = {unmapped: 40, ProblemKind.MONTH: 2}
    alert = alerts.for_report(
        report("REJECTED", problems=problems, problems_not_listed=30, problem_counts=counts), "reports/202610/v1.json"
    )
    assert alert is not None
    assert alert.subject == "soracharge 202610: file rejected, nothing imported"
    message = alert.message()
    # Then a line per kind, the telling kinds first, each with its count and its first three lines
    assert re.search(
        r"Problems: +2 × month: line 90, column date: date 0 is outside; line 91, column date: date 1 is outside\n",
        message,
    )
    assert re.search(
        r"Problems: +40 × unmapped-item: line 12, column billItemName, value 'Item 0': no resource for 'Item 0'; "
        r"line 13, .*; line 14, .*; and 37 more\n",
        message,
    )
    assert "line 15" not in message  # the report has every one
    assert "Every problem: in the report" in message
    assert "Report:" in message
    assert "s3://data/reports/202610/v1.json" in message
    assert "--dry-run" in alert.action


def test_a_held_file_alert_points_to_corrections_as_differences():
    alert = alerts.for_report(report("HELD", duplicate_of="data/exports/202610/fe.csv#v0"), "k")
    assert alert is not None
    assert "held" in alert.subject
    assert "Imported before: data/exports/202610/fe.csv#v0" in alert.message()
    assert "soracharge correction" in alert.action


def test_an_unbalanced_reconciliation_alerts_with_every_step_the_difference_and_the_likely_cause():
    # Given a CSV short of the bill (a truncated export), with a coupon on the bill
    reconciliation = reconcile(
        csv_sum=Decimal("7200.4"),
        imported=Decimal("7200.4"),
        currency="JPY",
        bill=BillFacts(amount=Decimal("7772"), applied_coupon_amount=Decimal("500")),
    )
    alert = alerts.for_report(report("CLOSED", reconciliation=reconciliation, import_session_id=4), "k")

    # Then the alert names each step with its figure, the bill, the difference and the closest explanation
    assert alert is not None
    assert alert.subject == "soracharge 202610: reconciliation does not balance"
    message = alert.message()
    for line in (
        r"CSV sum \(Σ amount\): +7200.4 JPY",
        r"rounded up to 1 JPY: +7201 JPY",
        r"less the coupon applied: +6701 JPY",
        r"The bill these steps make: +6701 JPY",
        r"Soracom bill: +7772 JPY",
        r"Difference \(bill less steps\): +1071 JPY",
        r"Imported: +7200.4 JPY",
    ):
        assert re.search(line, message), line
    assert "short by 1071 JPY" in alert.headline
    assert "the CSV may be incomplete" in alert.headline


def test_reports_that_need_nobody_do_not_alert():
    balanced = Reconciliation(
        bill_amount=Decimal(1), csv_sum=Decimal(1), imported_sum=Decimal(1), balanced=True, note="ok"
    )
    for status in ("SUPERSEDED", "PROCESSED", "DRY_RUN"):  # SUPERSEDED: a report from before the fence
        assert alerts.for_report(report(status), "k") is None, status
    assert alerts.for_report(report("CLOSED", reconciliation=balanced), "k") is None


EXPORT = ObjectRef(bucket="data", key="exports/202610/g/fe_2.csv", version_id="v2")
UPLOAD = ObjectRef(bucket="data", key="uploads/202610/g/bill.csv", version_id="v2")


@pytest.mark.parametrize(
    ("status", "reason", "fields", "remedy", "subject"),
    [
        ("REJECTED", EndReason.PROBLEMS, {}, Remedy.UPLOAD_AGAIN, "file rejected, nothing imported"),
        ("DUPLICATE", EndReason.SAME_BYTES, {}, Remedy.NOTHING, "the same file again, nothing imported"),
        (
            "DUPLICATE",
            EndReason.SAME_BYTES_OTHER_COVERAGE,
            {"source": "exports", "object": EXPORT, "duplicate_of": "data/uploads/202610/jp/bill.csv#v1"},
            Remedy.UPLOAD_ADDITIONAL,
            "the same file was imported as the other coverage's bill",
        ),
        (
            "DUPLICATE",
            EndReason.SAME_BYTES_OTHER_COVERAGE,
            {"source": "uploads", "object": UPLOAD, "duplicate_of": "data/exports/202610/jp/fe_1.csv#v1"},
            Remedy.NOTHING,
            "the same file was imported as the other coverage's bill",
        ),
        (
            "DUPLICATE",
            EndReason.SAME_BYTES_OTHER_COVERAGE,
            {"source": "uploads", "object": UPLOAD, "duplicate_of": "data/uploads/202610/jp/bill.csv#v1"},
            Remedy.UPLOAD_ADDITIONAL,
            "the same file was imported as the other coverage's bill",
        ),
        ("HELD", EndReason.SECOND_FILE, {}, Remedy.IMPORT_DIFFERENCES, "second file for the month held"),
        ("HELD", EndReason.EXPORTED_TWICE, {}, Remedy.NOTHING, "the month was exported twice, imported once"),
        ("HELD", EndReason.FAILED_RATING, {}, Remedy.UPLOAD_ADDITIONAL, "file held, the month's session failed"),
    ],
)
def test_every_end_without_an_import_is_alerted_with_the_action_its_reason_calls_for(
    status, reason, fields, remedy, subject
):
    # Whatever the summary says: the alert is chosen from the status and the reason
    alert = alerts.for_report(report(status, reason=reason, summary="words that mean nothing here", **fields), "k")
    assert alert is not None
    assert alert.remedy is remedy
    assert subject in alert.subject
    assert alert.message().splitlines()[-1] == f"Runbook action: {remedy}"


def test_every_reason_has_an_alert():
    for reason in EndReason:
        assert alerts.for_report(report("HELD", reason=reason), "k") is not None, reason


def test_the_misfiled_copy_s_alert_says_whose_coverage_is_soracom_s_and_never_leaves_a_period_in_the_metadata():
    alert = alerts.for_report(
        report("DUPLICATE", reason=EndReason.SAME_BYTES_OTHER_COVERAGE, coverage="g", currency="USD", source="exports",
               object=EXPORT, duplicate_of="data/uploads/202610/jp/bill.csv#v1"),
        "k",
    )  # fmt: skip
    assert alert is not None
    assert "Soracom's own export" in alert.action
    assert "upload it to uploads/202610/g/ with --metadata import=additional,currency=USD " in alert.action


def test_two_accounts_exports_alike_to_the_byte_are_two_bills_a_person_checks_before_importing_the_second():
    """One operator is never exported under two names, so Soracom's exports of two operators that are the same
    bytes are two bills: the second is held until a person checks both in Soracom's console."""
    listed = ObjectRef(bucket="data", key="exports/202610/OP0000000002/g/fe_3.csv", version_id="v3")
    alert = alerts.for_report(
        report("DUPLICATE", reason=EndReason.SAME_BYTES_OTHER_COVERAGE, coverage="g", currency="USD", source="exports",
               object=listed, operator="OP0000000002", duplicate_of="data/exports/202610/g/fe_2.csv#v2"),
        "k",
    )  # fmt: skip
    assert alert is not None
    assert alert.subject == (
        "soracharge 202610 (operator OP0000000002, Global coverage): the same file was imported as another "
        "operator's or coverage's bill"
    )
    assert "Check in the Soracom console that both accounts billed these amounts" in alert.action
    assert "upload it to uploads/202610/OP0000000002/g/ with --metadata import=additional,currency=USD" in alert.action
    assert ("Operator", "OP0000000002") in alert.facts
    assert alert.remedy is Remedy.UPLOAD_ADDITIONAL


def test_failed_processed_and_not_rated_sessions_say_what_to_do():
    failed = alerts.for_report(report("FAILED_PROCESSED", import_session_id=9, error_desc="no such subscription"), "k")
    assert failed is not None
    assert re.search(r"errorDesc: +no such subscription", failed.message())
    assert "import=additional" in failed.action
    not_rated = alerts.for_report(report("NOT_RATED", import_session_id=9), "k")
    assert not_rated is not None
    assert "Do not import the file again" in not_rated.action


def test_samples_in_events_are_what_the_handler_reads():
    # The handler tells the two shapes apart by EventBridge's detail-type.
    assert "detail-type" in sample("alert_export_failed.json")
    assert "detail-type" not in sample("alert_import_failed.json")
    broken = copy.deepcopy(sample("alert_import_failed.json"))
    del broken["requestContext"]
    with pytest.raises(ValueError, match="requestContext"):
        FailedInvocation.model_validate(broken)


def test_commands_survive_a_key_with_an_apostrophe_when_pasted_into_a_shell():
    event = sample("alert_import_failed.json")
    event["requestPayload"]["Records"][0]["s3"]["object"]["key"] = "uploads/202610/O'Neil+bill.csv"
    alert = alerts.for_failed_import(FailedInvocation.model_validate(event))
    command = shlex.split(alert.command or "")
    assert json.loads(command[command.index("--payload") + 1]) == event["requestPayload"]
    follow_input = json.dumps({"objectId": "b/uploads/202610/O'Neil bill.csv#v", "month": "202610",
                               "reportKey": "k", "session": {"importSessionId": 7}})  # fmt: skip
    change = execution(stateMachineArn=FOLLOW_ARN, error="StorageError", input=follow_input)
    followed = alerts.for_execution(change, export_state_machine_arn=EXPORT_ARN)
    assert followed is not None
    command = shlex.split(followed.command or "")
    assert json.loads(command[command.index("--input") + 1]) == json.loads(follow_input)


def test_an_export_whose_month_cannot_be_read_offers_a_placeholder_not_a_broken_command():
    alert = alerts.for_execution(
        execution(status="ABORTED", error=None, input="{"), export_state_machine_arn=EXPORT_ARN
    )
    assert alert is not None
    command = shlex.split(alert.command or "")
    assert json.loads(command[command.index("--input") + 1]) == {"month": "yyyyMM"}


def test_sns_subjects_are_printable_ascii_under_100_characters():
    from soracharge.adapters.notifier import sns_subject

    assert (
        sns_subject("soracharge 202610: 東京ガス\nfailed" + "x" * 200)
        == ("soracharge 202610: ???? failed" + "x" * 200)[:99]
    )
    assert sns_subject("\n") == "soracharge alert"


def test_a_file_under_a_key_that_names_no_month_is_alerted_with_where_files_go():
    moment = datetime(2026, 11, 4, tzinfo=UTC)
    report = ImportReport.model_validate(
        {"status": "REJECTED", "summary": "s3://data/uploads/2026-10/bill.csv is not where an importable CSV goes",
         "object": ObjectRef(bucket="data", key="uploads/2026-10/bill.csv", version_id="v"),
         "created_at": moment, "updated_at": moment}
    )  # fmt: skip
    alert = alerts.for_report(report, "reports/unsorted/v.json")
    assert alert is not None
    assert "uploads/<yyyyMM>/<name>.csv" in alert.action


def test_two_exports_of_one_month_say_nothing_is_to_be_done():
    alert = alerts.for_report(
        report("HELD", reason=EndReason.EXPORTED_TWICE, source="exports",
               object=ObjectRef(bucket="data", key="exports/202610/fe_2.csv", version_id="v"),
               duplicate_of="data/exports/202610/fe_1.csv#v1"),
        "k",
    )  # fmt: skip
    assert alert is not None
    assert "exported twice" in alert.subject
    assert "do not import this file too" in alert.action


def test_a_session_not_rated_comes_with_the_command_that_follows_it_again():
    alert = alerts.for_report(report("NOT_RATED", import_session_id=9), "reports/202610/v1.json", FOLLOW_ARN)
    assert alert is not None
    command = shlex.split(alert.command or "")
    assert command[command.index("--state-machine-arn") + 1] == FOLLOW_ARN
    assert json.loads(command[command.index("--input") + 1]) == {
        "objectId": "data/uploads/202610/bill.csv#v1",
        "month": "202610",
        "reportKey": "reports/202610/v1.json",
        "session": {"importSessionId": 9, "status": "NEW"},
    }


def test_every_alert_ends_with_the_runbook_action_to_take_and_a_reader_finds_the_facts_and_command_again():
    from tests.chaos.runbook import ReceivedAlert

    follow_input = json.dumps(
        {"objectId": "d/k#v", "month": "202610", "reportKey": "r", "session": {"importSessionId": 7}}
    )
    reconciliation = Reconciliation(
        balanced=False, csv_sum=Decimal(100), bill_amount=Decimal(90), imported_sum=Decimal(100), note="over by 10"
    )
    made = {
        Remedy.START_EXPORT: alerts.for_execution(execution(), export_state_machine_arn=EXPORT_ARN),
        Remedy.REDELIVER_EVENT: alerts.for_failed_import(
            FailedInvocation.model_validate(sample("alert_import_failed.json"))
        ),
        Remedy.UPLOAD_AGAIN: alerts.for_report(report("REJECTED"), "k"),
        Remedy.UPLOAD_ADDITIONAL: alerts.for_report(
            report("FAILED_PROCESSED", import_session_id=9, error_desc="x"), "k"
        ),
        Remedy.IMPORT_DIFFERENCES: alerts.for_report(report("CLOSED", reconciliation=reconciliation), "k"),
        Remedy.FOLLOW_AGAIN: alerts.for_execution(
            execution(stateMachineArn=FOLLOW_ARN, error="StorageError", input=follow_input),
            export_state_machine_arn=EXPORT_ARN,
        ),
        Remedy.NOTHING: alerts.for_execution(execution(error="BillNotFoundError"), export_state_machine_arn=EXPORT_ARN),
    }
    held_after_failure = alerts.for_report(report("HELD", reason=EndReason.FAILED_RATING), "k")
    assert held_after_failure is not None
    assert held_after_failure.remedy is Remedy.UPLOAD_ADDITIONAL
    assert "import=additional" in held_after_failure.action
    for remedy, alert in made.items():
        assert alert is not None, remedy
        assert alert.message().splitlines()[-1] == f"Runbook action: {remedy}"
        read = ReceivedAlert.read(alert.subject, alert.message())
        assert read.remedy is remedy
        assert read.command == alert.command
        assert read.month == "202610", alert.message()
        assert read.action == alert.action


def test_a_failed_export_of_one_coverage_names_it_and_starts_that_coverage_again():
    change = execution(input=json.dumps({"scheduledTime": "2026-11-04T00:00:00Z", "coverage": "g"}))
    alert = alerts.for_execution(change, export_state_machine_arn=EXPORT_ARN, coverages=("jp", "g"))
    assert alert is not None
    assert alert.subject == "soracharge 202610 (Global coverage): export failed (BillNotClosedError)"
    assert re.search(r"\nCoverage: +g \(Global coverage\)\n", alert.message())
    command = shlex.split(alert.command or "")
    assert json.loads(command[command.index("--input") + 1]) == {"month": "202610", "coverage": "g"}
    assert command[command.index("--name") + 1].startswith("export-202610-g-")


def test_a_report_alert_of_a_global_bill_names_its_coverage_and_its_upload_folder():
    failed = report(
        "FAILED_PROCESSED",
        coverage="g",
        currency="USD",
        import_session_id=7,
        error_desc="Subscription is not active",
        object=ObjectRef(bucket="data", key="exports/202610/g/fe_1.csv", version_id="v1"),
    )
    alert = alerts.for_report(failed, "reports/202610/v1.json")
    assert alert is not None
    assert alert.subject == "soracharge 202610 (Global coverage): CloudBlue failed to rate session 7"
    assert "upload it to uploads/202610/g/ with --metadata import=additional,currency=USD" in alert.message()
    assert re.search(r"\nCoverage: +g \(Global coverage\)\n", alert.message())


def test_an_import_of_a_coverage_folder_that_failed_for_good_names_the_coverage():
    record = FailedInvocation.model_validate(sample("alert_import_failed.json"))
    payload = copy.deepcopy(record.request_payload)
    payload["Records"][0]["s3"]["object"]["key"] = "exports/202610/g/fe_1.csv"
    alert = alerts.for_failed_import(record.model_copy(update={"request_payload": payload}))
    assert alert.subject == "soracharge 202610 (Global coverage): import failed (CloudBlueUnavailableError)"


@pytest.mark.parametrize(
    ("coverage", "currency"), [("jp", "currency=JPY"), ("g", "currency=USD|EUR"), (None, "currency=JPY|USD|EUR")]
)
def test_an_alert_about_a_file_of_no_known_currency_says_which_ones_to_choose_from_never_a_guess(coverage, currency):
    alert = alerts.for_report(report("HELD", currency=None, coverage=coverage), "reports/202610/v1.json")
    assert alert is not None
    assert f"--metadata import=additional,{currency} " in alert.message()


def test_every_error_an_import_can_end_with_has_its_own_advice():
    import_errors = {
        "CloudBlueUnavailableError", "CloudBlueAuthError", "CloudBlueApiError", "ImportInProgressError",
        "ImportSupersededError", "ImportResumeError", "ImportTimeBudgetError", "StorageError", "MappingError",
        "ConfigurationError", "InvalidInputError",
    }  # fmt: skip
    assert import_errors <= set(alerts.IMPORT_ACTIONS)
    event = sample("alert_import_failed.json")
    event["responsePayload"] = {"errorType": "ImportSupersededError", "errorMessage": "a later attempt took over"}
    alert = alerts.for_failed_import(FailedInvocation.model_validate(event))
    assert "another delivery of the same event took the import over" in alert.action
    assert alert.remedy is Remedy.REDELIVER_EVENT


def test_a_decision_that_failed_is_told_apart_from_an_import_that_failed():
    review = {
        "objectId": "data/uploads/202610/jp/a.csv#v1",
        "plan": "ab" * 32,
        "decision": "approve",
        "by": "Hanako",
    }
    # Refused (another plan, never held, decided already): nothing to re-deliver, and no upload to make
    refused = sample("alert_import_failed.json")
    refused["requestPayload"] = {"review": review}
    refused["responsePayload"] = {"errorType": "InvalidInputError", "errorMessage": "the plan abab... is not the one"}
    alert = alerts.for_failed_import(FailedInvocation.model_validate(refused))
    assert alert.subject == "soracharge 202610 (Japan coverage): decision refused, nothing decided"
    assert alert.remedy is Remedy.NOTHING
    assert alert.command is None
    assert "approve by Hanako" in alert.message()
    # Failed while the approved import ran (CloudBlue down): the same decision is re-delivered, and resumes
    failed = sample("alert_import_failed.json")
    failed["requestPayload"] = {"review": review}
    alert = alerts.for_failed_import(FailedInvocation.model_validate(failed))
    assert alert.remedy is Remedy.REDELIVER_EVENT
    command = shlex.split(alert.command or "")
    assert json.loads(command[command.index("--payload") + 1]) == {"review": review}
    assert "File:" in alert.message()
    assert "s3://data/uploads/202610/jp/a.csv" in alert.message()


def test_every_aws_command_an_alert_gives_names_the_stack_s_region_and_says_when_it_needs_aws_cli_v2(monkeypatch):
    # The stack's region as the function knows it (Lambda sets AWS_REGION); an ARN's region is its resource's.
    monkeypatch.setenv("AWS_REGION", "ap-northeast-1")
    tokyo = {arn: arn.replace(":us-east-1:", ":ap-northeast-1:") for arn in (EXPORT_ARN, FOLLOW_ARN)}
    failed = sample("alert_import_failed.json")
    failed["requestContext"]["functionArn"] = failed["requestContext"]["functionArn"].replace(
        ":us-east-1:", ":ap-northeast-1:"
    )
    follow_input = json.dumps(
        {"objectId": "d/k#v", "month": "202610", "reportKey": "r", "session": {"importSessionId": 7}}
    )
    made = [
        alerts.for_execution(
            execution(stateMachineArn=tokyo[EXPORT_ARN], error="SoracomAuthError"),
            export_state_machine_arn=tokyo[EXPORT_ARN],
            soracom_secret="arn:aws:secretsmanager:ap-northeast-1:123456789012:secret:soracom-AbCdEf",
        ),
        alerts.for_execution(
            execution(stateMachineArn=tokyo[FOLLOW_ARN], error="StorageError", input=follow_input),
            export_state_machine_arn=tokyo[EXPORT_ARN],
        ),
        alerts.for_failed_import(FailedInvocation.model_validate(failed)),
        alerts.for_report(report("NOT_RATED", import_session_id=9), "k", tokyo[FOLLOW_ARN]),
        alerts.for_report(report("NOT_RATED", import_session_id=9), "k"),  # the ARN unknown: a placeholder
        alerts.for_report(
            report("AWAITING_APPROVAL", approval={"askedBecause": "always", "plan": "ab" * 32, "monthVersion": 2}),
            "k",
            import_function="soracharge-ImportChargesFunction-X",  # the function's name (no region in it)
        ),
    ]
    commands = 0
    for alert in made:
        assert alert is not None
        message = alert.message()
        lines = [line for line in message.splitlines() if "aws " in line]
        assert lines, message
        for line in lines:
            # Every AWS CLI command, in the command block or in the text, names the region to run it in.
            for command in re.findall(r"aws [a-z0-9-]+ [a-z0-9-]+ [^)]*", line):
                words = shlex.split(command.removesuffix(")"))
                assert words[words.index("--region") + 1] == "ap-northeast-1", command
                commands += 1
        if "--cli-binary-format" in message:
            assert "need AWS CLI v2" in alert.action or "needs AWS CLI v2" in alert.action, message
            assert "version 1 does not know --cli-binary-format" in alert.action
        else:
            assert "AWS CLI v2" not in message
    assert commands == 8  # secretsmanager + start-execution, start-execution, invoke, start-execution x2, invoke x2
