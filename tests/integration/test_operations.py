"""Operating a month as the runbook says: alerts people act on, no-op re-runs, re-deliveries, corrections.

The whole stack runs in moto with both simulators. Each test checks what a person would: the alert
on the topic, the execution's output, the report, the charges CloudBlue holds.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from soracharge.logic.corrections import Allocation, write_differences
from soracharge.logic.imports import follow_execution_name
from soracharge.models.mapping import parse_mapping
from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.s3_events import Delivery
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator, SoracomFaults, SoracomSimulator

from tests import reference
from tests.integration.conftest import LAST_MONTH, follows_ended, full_stack

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_MAPPING = REPO / "examples" / "mapping.example.yaml"


@pytest.fixture(scope="module")
def stack(soracom: SoracomSimulator, cloudblue: CloudBlueSimulator) -> Iterator[LocalCloud]:
    environment = {"POWERTOOLS_METRICS_DISABLED": "true", "APS_MAX_ATTEMPTS": "2"}
    with full_stack(soracom, cloudblue, EXAMPLE_MAPPING, environment) as cloud:
        yield cloud


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with no faults and no alert pending, and ends with no follow-import-session execution
    running (one it started must not meet the next test's faults, CloudBlue down, and alert there) and no
    alert left unread (what its own imports alerted, even once it had ended, is its business)."""
    if "stack" not in request.fixturenames:
        yield
        return
    cloud: LocalCloud = request.getfixturevalue("stack")
    request.getfixturevalue("cloudblue").faults = CloudBlueFaults()
    request.getfixturevalue("soracom").faults = SoracomFaults()
    cloud.alerts()  # start with none pending
    yield
    follows_ended(cloud)
    unread = cloud.alerts()
    assert unread == [], f"alerts the test did not read: {[alert['subject'] for alert in unread]}"


def export_and_import(cloud: LocalCloud, month: str, name: str) -> tuple[dict[str, Any], list[Delivery]]:
    before = len(cloud.async_invocations.deliveries)
    result = cloud.run("ExportBillingStateMachine", {"month": month}, name=name, timeout_seconds=120)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    return result.output or {}, cloud.import_deliveries(before)


def upload(cloud: LocalCloud, key: str, body: bytes, **metadata: str) -> Delivery:
    before = len(cloud.async_invocations.deliveries)
    cloud.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=body, Metadata=metadata)
    (delivery,) = cloud.import_deliveries(before)
    return delivery


def rated(cloud: LocalCloud, delivery: Delivery) -> dict[str, Any]:
    """Follow the delivery's session to its end; the report then."""
    (report,) = delivery.result["reports"]
    return followed(cloud, report)


def followed(cloud: LocalCloud, report: dict[str, Any]) -> dict[str, Any]:
    """Follow the session of an import's report to its end (its follow-import-session execution); the report then."""
    obj = report["object"]
    arn = cloud.state_machines["FollowImportSessionStateMachine"].replace(":stateMachine:", ":execution:")
    name = follow_execution_name(f"{obj['bucket']}/{obj['key']}#{obj['versionId']}", report["importSessionId"])
    list(cloud.follow(f"{arn}:{name}", timeout_seconds=120))
    key = f"reports/{report['month']}/{obj['versionId']}.json"
    return dict(json.loads(cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key)["Body"].read()))


def command_line(message: str) -> str:
    """The alert's command: its one line that starts with ``aws ``."""
    (line,) = [line for line in message.splitlines() if line.startswith("aws ")]
    return line


def test_running_a_month_again_is_a_no_op_that_says_so(stack, soracom, cloudblue):
    month = shift_month(LAST_MONTH, -1)
    output, deliveries = export_and_import(stack, month, "first-run")
    (delivery,) = deliveries
    assert rated(stack, delivery)["status"] == "PROCESSED"
    charges_before = cloudblue.count("importCharges")
    soracom.clear_requests()

    # When the month is started again (a person, a second schedule delivery, a backfill over it)
    again, deliveries = export_and_import(stack, month, "second-run")

    # Then nothing is exported, stored or imported, and the output says where the month stands
    assert again["alreadyExported"] is True
    assert again["s3"]["versionId"] == output["s3"]["versionId"]
    assert f"{month} (Japan coverage) was exported before, to {output['s3']['uri']}" in again["summary"]
    assert "nothing was exported, stored or imported again" in again["summary"]
    assert "its import is PROCESSED" in again["summary"]
    assert deliveries == []
    assert soracom.count("getBilling") == soracom.count("exportBilling") == 0  # Soracom not even asked
    assert cloudblue.count("importCharges") == charges_before
    assert stack.alerts() == []


def test_an_export_that_fails_alerts_with_the_month_the_reason_and_the_command(stack, soracom):
    month = shift_month(LAST_MONTH, -2)
    soracom.faults.export_outcome = "failed"

    result = stack.run("ExportBillingStateMachine", {"month": month}, name="export-fails", timeout_seconds=120)

    assert result.status == "FAILED"
    (alert,) = stack.alerts()
    assert alert["subject"] == f"soracharge {month}: export failed (ExportFailed)"
    assert re.search(rf"\nMonth: +{month}\n", alert["message"])
    assert "Soracom reported the CSV export as failed" in alert["message"]
    assert alert["message"].endswith("\nRunbook action: start-export")
    command = shlex.split(command_line(alert["message"]))
    assert command[command.index("--state-machine-arn") + 1] == stack.state_machines["ExportBillingStateMachine"]

    # And the command it gives, run once Soracom is fine again, exports the month
    soracom.faults.export_outcome = "exported"
    payload = json.loads(command[command.index("--input") + 1])
    again = stack.run("ExportBillingStateMachine", payload, name="export-after-alert", timeout_seconds=120)
    assert again.status == "SUCCEEDED"
    assert (again.output or {})["s3"]["key"].startswith(f"exports/{month}/")


def test_an_import_that_fails_for_good_alerts_and_the_alert_s_command_redelivers_it_exactly_once(
    stack, soracom, cloudblue
):
    month = shift_month(LAST_MONTH, -3)
    body = soracom.csv_bytes(month)
    cloudblue.faults.server_error_next = 1000  # CloudBlue down through every attempt

    failed = upload(stack, f"uploads/{month}/down.csv", body, currency="JPY")

    assert failed.attempts == 3
    assert failed.error is not None
    (alert,) = stack.alerts()
    assert alert["subject"] == f"soracharge {month}: import failed (CloudBlueUnavailableError)"
    assert f"s3://{stack.bucket}/uploads/{month}/down.csv" in alert["message"]
    assert alert["message"].endswith("\nRunbook action: redeliver-event")
    command = shlex.split(command_line(alert["message"]))
    assert command[:3] == ["aws", "lambda", "invoke"]

    # When CloudBlue is back and the alert's command is run (the same S3 event, the same object version)
    cloudblue.faults = CloudBlueFaults()
    stack.client("lambda").invoke(
        FunctionName=command[command.index("--function-name") + 1],
        InvocationType="Event",
        Payload=command[command.index("--payload") + 1].encode(),
    )
    stack.async_invocations.wait_idle()

    # Then the file is imported, once, in a closed session that CloudBlue rates (its follow execution ended)
    version = failed.event["Records"][0]["s3"]["object"]["versionId"]
    key = f"reports/{month}/{version}.json"
    report = json.loads(stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read())
    assert report["status"] in ("CLOSED", "PROCESSED")
    assert followed(stack, report)["status"] == "PROCESSED"
    # and CloudBlue holds what the CSV makes, worked out apart from the import (tests/reference.py)
    mapping = EXAMPLE_MAPPING.read_text(encoding="utf-8")
    assert reference.lacking(body, mapping, "JPY", cloudblue.charges(report["importSessionId"])) == []
    # and nobody is alerted again (no other test's follow execution runs: each ends with its test)
    assert stack.alerts() == []


def test_a_rejected_upload_alerts_with_each_problem_and_its_line(stack, soracom):
    month = shift_month(LAST_MONTH, -4)
    lines = soracom.csv_bytes(month).decode("utf-8-sig").splitlines()
    item_at = lines[0].split(",").index("billItemName")
    row = lines[5].split(",")
    row[item_at] = "Mystery roaming fee"
    lines[5] = ",".join(row)
    body = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()

    delivery = upload(stack, f"uploads/{month}/with-unknown-item.csv", body, currency="JPY")

    (report,) = delivery.result["reports"]
    assert report["status"] == "REJECTED"
    (alert,) = stack.alerts()
    assert alert["subject"] == f"soracharge {month} (Japan coverage): file rejected, nothing imported"
    assert "line 6, column billItemName, value 'Mystery roaming fee'" in alert["message"]
    assert "--dry-run" in alert["message"]


def test_an_export_whose_csv_does_not_add_up_to_the_bill_alerts(stack, soracom):
    month = shift_month(LAST_MONTH, -5)
    body = soracom.csv_bytes(month)
    metadata = {"currency": "JPY", "bill-amount": "99999.99", "sha256": "0" * 64}

    delivery = upload(stack, f"exports/{month}/fe_handmade.csv", body, **metadata)

    (report,) = delivery.result["reports"]
    assert report["reconciliation"]["balanced"] is False
    (alert,) = stack.alerts()
    assert alert["subject"] == f"soracharge {month} (Japan coverage): reconciliation does not balance"
    assert re.search(r"Soracom bill: +99999.99 JPY", alert["message"])


def test_a_corrected_file_is_held_and_its_differences_bring_cloudblue_to_the_corrected_charges(
    stack, soracom, cloudblue, tmp_path
):
    # Given a month imported from Soracom's CSV
    month = shift_month(LAST_MONTH, -6)
    original = soracom.csv_bytes(month)
    first = upload(stack, f"uploads/{month}/original.csv", original, currency="JPY")
    first_report = rated(stack, first)
    assert first_report["status"] == "PROCESSED"

    # and a corrected CSV: one amount raised, one row gone, one row added
    lines = original.decode("utf-8-sig").splitlines()
    header = lines[0].split(",")
    amount_at, quantity_at, unit_at = (header.index(c) for c in ("amount", "quantity", "unitPrice"))
    raised = lines[3].split(",")
    raised[quantity_at] = str(Decimal(raised[quantity_at]) + 5)  # 5 more units at its price
    raised[amount_at] = str(Decimal(raised[amount_at]) + Decimal(raised[unit_at]) * 5)
    assert Decimal(raised[unit_at]) > 0
    corrected_lines = [lines[0], *lines[1:3], ",".join(raised), *lines[5:], lines[7]]
    corrected = ("\ufeff" + "\r\n".join(corrected_lines) + "\r\n").encode()

    # When the corrected file itself is uploaded, it is held (importing it whole would double the month)
    held = upload(stack, f"uploads/{month}/corrected.csv", corrected, currency="JPY")
    (held_report,) = held.result["reports"]
    assert held_report["status"] == "HELD"
    (alert,) = stack.alerts()
    assert "soracharge correction" in alert["message"]

    # When its differences are imported as an additional file
    differences = io.StringIO()
    # (written as the alert says, with the mapping: the month's shared costs are compared per customer)
    allocation = Allocation(parse_mapping(EXAMPLE_MAPPING.read_text(), "example"), month, "JPY")
    written = write_differences(
        [("a", io.BytesIO(original))], ("b", io.BytesIO(corrected)), differences, allocation=allocation
    )
    assert written.rows_written >= 2
    body = differences.getvalue().encode("utf-8-sig")
    delta = upload(stack, f"uploads/{month}/differences.csv", body, currency="JPY", **{"import": "additional"})
    delta_report = rated(stack, delta)

    # Then CloudBlue rates, over both sessions, exactly the corrected file's charges
    assert delta_report["status"] == "PROCESSED"
    sessions = [first_report["importSessionId"], delta_report["importSessionId"]]
    # (what the corrected CSV makes, worked out apart from the import, tests/reference.py: per subscription, resource
    # and SIM or device, the differences stating the shares per customer)
    both_sessions = [c for session in sessions for c in cloudblue.charges(session)]
    text = EXAMPLE_MAPPING.read_text(encoding="utf-8")
    assert reference.lacking(corrected, text, "JPY", both_sessions, corrected=True) == []
    # and the differences are charges of their own: no id of the first session's is reused
    first_ids = {c["extChargeId"] for c in cloudblue.charges(sessions[0])}
    assert not first_ids & {c["extChargeId"] for c in cloudblue.charges(sessions[1])}
    assert Decimal(delta_report["reconciliation"]["csvSum"]) == written.difference_sum
