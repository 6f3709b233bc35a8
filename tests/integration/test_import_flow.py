"""The import flow in moto: an S3 upload becomes charges in the CloudBlue simulator, exactly once."""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from soracharge.logic.imports import follow_execution_name
from soracharge.models.mapping import parse_mapping
from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.s3_events import Delivery
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator, SoracomSimulator

from tests import reference
from tests.integration.conftest import LAST_MONTH, follows_ended, full_stack
from tests.planning import planned

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_MAPPING = REPO / "examples" / "mapping.example.yaml"


@pytest.fixture(scope="module")
def importing(soracom: SoracomSimulator, cloudblue: CloudBlueSimulator) -> Iterator[LocalCloud]:
    environment = {"POWERTOOLS_METRICS_DISABLED": "true", "APS_MAX_ATTEMPTS": "2"}
    with full_stack(soracom, cloudblue, EXAMPLE_MAPPING, environment) as cloud:
        yield cloud


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with no CloudBlue faults, the example mapping and the default concurrency, and
    leaves no follow-import-session execution running (one it started must not meet the next test's faults)."""
    if "importing" not in request.fixturenames:
        yield
        return
    cloudblue: CloudBlueSimulator = request.getfixturevalue("cloudblue")
    cloud: LocalCloud = request.getfixturevalue("importing")
    cloudblue.faults = CloudBlueFaults()
    cloudblue.ignore_repeated_ext_hash = False  # as CloudBlue may: a double shows as one
    cloud.put_mapping(EXAMPLE_MAPPING)
    cloud.runner.environment_overrides.pop("IMPORT_CONCURRENCY", None)
    yield
    follows_ended(cloud)


def use_mapping(cloud: LocalCloud, tmp_path: Path, **changes: Any) -> None:
    mapping = yaml.safe_load(EXAMPLE_MAPPING.read_text())
    mapping.update(changes)
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True))
    cloud.put_mapping(path)


def upload(cloud: LocalCloud, key: str, body: bytes, currency: str | None = "JPY") -> Delivery:
    """Put a file in the bucket, wait for the S3 notification's import, return that delivery."""
    before = len(cloud.async_invocations.deliveries)
    metadata = {"currency": currency} if currency else {}
    cloud.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=body, Metadata=metadata)
    (delivery,) = cloud.import_deliveries(before)
    return delivery


def redeliver(cloud: LocalCloud, delivery: Delivery) -> Delivery:
    """S3 sends the very same event again (duplicates are normal), or someone replays it."""
    before = len(cloud.async_invocations.deliveries)
    cloud.async_invocations.redeliver(delivery)
    (again,) = cloud.import_deliveries(before)
    return again


def follow(cloud: LocalCloud, report: dict[str, Any]) -> dict[str, Any]:
    """The last history event of the follow-import-session execution of an import report."""
    arn = cloud.state_machines["FollowImportSessionStateMachine"].replace(":stateMachine:", ":execution:")
    obj = report["object"]
    name = follow_execution_name(f"{obj['bucket']}/{obj['key']}#{obj['versionId']}", report["importSessionId"])
    events = list(cloud.follow(f"{arn}:{name}", timeout_seconds=120))
    return dict(events[-1])


def report_of(cloud: LocalCloud, delivery: Delivery) -> dict[str, Any]:
    (report,) = delivery.result["reports"]
    key = f"reports/{report['month']}/{report['object']['versionId']}.json"
    return dict(json.loads(cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key)["Body"].read()))


def expected_charges(body: bytes, month: str, packet_size: int | None = None) -> dict[str, Decimal]:
    mapping = parse_mapping(EXAMPLE_MAPPING.read_text(), "example")
    if packet_size:
        mapping = mapping.model_copy(update={"packet_size": packet_size})
    plan = planned(io.BytesIO(body), month=month, currency="JPY", mapping=mapping)
    return {c.ext_charge_id or "": c.total_price for c in plan.charges}


def assert_what_the_csv_makes(cloudblue: CloudBlueSimulator, session_id: int, body: bytes) -> None:
    """The session holds what the CSV makes, worked out apart from the import (tests/reference.py): Σ, each
    subscription, resource and SIM or device, each shared pool (the plan's ids alone would compare the import
    with itself)."""
    mapping = EXAMPLE_MAPPING.read_text(encoding="utf-8")
    assert reference.lacking(body, mapping, "JPY", cloudblue.charges(session_id)) == []


def held(cloudblue: CloudBlueSimulator, session_id: int) -> list[tuple[str, Decimal]]:
    return sorted((c["extChargeId"], c["totalPrice"]) for c in cloudblue.charges(session_id))


def test_an_upload_becomes_exactly_the_expected_charges_in_a_rated_session(importing, soracom, cloudblue):
    # Given the detailed billing CSV of a month, uploaded by a person
    month = shift_month(LAST_MONTH, -1)
    body = soracom.csv_bytes(month)

    delivery = upload(importing, f"uploads/{month}/october billing.csv", body)

    # Then CloudBlue holds exactly the charges the file maps to, once, in one closed session
    assert delivery.error is None
    (first,) = delivery.result["reports"]
    session_id = first["importSessionId"]
    expected = expected_charges(body, month)
    assert held(cloudblue, session_id) == sorted(expected.items())
    assert_what_the_csv_makes(cloudblue, session_id, body)
    # (the charges are the CSV's exact sum; Soracom's bill is that sum rounded up to the yen)
    assert math.ceil(sum(expected.values())) == soracom.bill(month)["amount"] != sum(expected.values())
    assert all(c["currencyCode"] == "JPY" and c["type"] == "COS" for c in cloudblue.charges(session_id))
    # and the session is followed to PROCESSED, which the report records with a balanced reconciliation
    assert follow(importing, first)["type"] == "ExecutionSucceeded"
    assert cloudblue.session(session_id).status == "PROCESSED"
    report = report_of(importing, delivery)
    assert report["status"] == "PROCESSED"
    csv_sum = reference.expected(body, EXAMPLE_MAPPING.read_text(encoding="utf-8"), "JPY").total
    assert Decimal(report["reconciliation"]["csvSum"]) == Decimal(report["reconciliation"]["importedSum"]) == csv_sum
    assert report["reconciliation"]["balanced"] is True
    assert report["object"]["key"] == f"uploads/{month}/october billing.csv"


def test_the_same_s3_event_twice_imports_once(importing, soracom, cloudblue):
    month = shift_month(LAST_MONTH, -2)
    first = upload(importing, f"uploads/{month}/twice.csv", soracom.csv_bytes(month))
    sessions_before = len(cloudblue.sessions())
    packets_before = cloudblue.count("importCharges")

    again = redeliver(importing, first)

    assert again.error is None
    (report,) = again.result["reports"]
    assert report["importSessionId"] == first.result["reports"][0]["importSessionId"]
    assert len(cloudblue.sessions()) == sessions_before
    assert cloudblue.count("importCharges") == packets_before  # nothing sent again
    session_id = report["importSessionId"]
    assert held(cloudblue, session_id) == sorted(expected_charges(soracom.csv_bytes(month), month).items())
    assert_what_the_csv_makes(cloudblue, session_id, soracom.csv_bytes(month))


def test_the_same_bytes_uploaded_again_for_the_month_are_a_recorded_duplicate(importing, soracom, cloudblue):
    month = shift_month(LAST_MONTH, -3)
    first = upload(importing, f"uploads/{month}/a.csv", soracom.csv_bytes(month))
    sessions = len(cloudblue.sessions())

    second = upload(importing, f"uploads/{month}/copy-of-a.csv", soracom.csv_bytes(month))

    (report,) = second.result["reports"]
    assert report["status"] == "DUPLICATE"
    assert (
        report["duplicateOf"]
        == first.result["reports"][0]["object"]["bucket"]
        + f"/uploads/{month}/a.csv#"
        + (first.result["reports"][0]["object"]["versionId"])
    )
    assert len(cloudblue.sessions()) == sessions


def test_a_crash_after_some_packets_resumes_in_the_same_session_without_resending(
    importing, soracom, cloudblue, tmp_path
):
    # Given packets of 5 charges sent one at a time, and CloudBlue refusing every attempt at packets 3 and on
    # (503: it says it did not take them)
    month = shift_month(LAST_MONTH, -4)
    body = soracom.csv_bytes(month)
    use_mapping(importing, tmp_path, packetSize=5)
    importing.runner.environment_overrides["IMPORT_CONCURRENCY"] = "1"
    already = cloudblue.count("importCharges")
    cloudblue.faults.server_error_status = 503
    cloudblue.faults.server_error_on_packets = list(range(already + 3, already + 9))  # 2 attempts x 3 invocations

    failed = upload(importing, f"uploads/{month}/crash.csv", body)

    # Then the import failed after the first and the two retry invocations, with two packets accepted
    assert failed.attempts == 3
    assert failed.error is not None
    assert "CloudBlueUnavailableError" in failed.error
    (session,) = [s for s in cloudblue.sessions() if s.status == "OPEN" and s.packets_accepted == 2]

    # When the event is delivered again (CloudBlue is back)
    retried = redeliver(importing, failed)

    # Then the same session got the remaining packets only: nothing lost, nothing doubled
    assert retried.error is None
    (report,) = retried.result["reports"]
    assert report["importSessionId"] == session.importSessionId
    expected = expected_charges(body, month, packet_size=5)
    assert held(cloudblue, session.importSessionId) == sorted(expected.items())
    assert_what_the_csv_makes(cloudblue, session.importSessionId, body)
    assert report["counts"]["packetsAlreadyAccepted"] == 2
    assert report["counts"]["packetsSentThisRun"] == report["counts"]["packets"] - 2
    assert cloudblue.session(session.importSessionId).duplicates_ignored == 0


@pytest.mark.parametrize("ignores_repeats", [True, False])
def test_a_connection_dropped_after_cloudblue_took_a_packet_never_doubles_it(
    importing, soracom, cloudblue, ignores_repeats
):
    # Given CloudBlue stores the first packet, then drops the connection without answering
    month = shift_month(LAST_MONTH, -5 - int(ignores_repeats))
    body = soracom.csv_bytes(month)
    cloudblue.ignore_repeated_ext_hash = ignores_repeats
    cloudblue.faults.drop_after_processing_next = 1

    delivery = upload(importing, f"uploads/{month}/dropped.csv", body)

    # Then that session is given up, never closed (so never rated), and every charge went to a new
    # session, which holds each charge exactly once, whether or not CloudBlue ignores repeated extHash
    assert delivery.error is None
    (report,) = delivery.result["reports"]
    (abandoned,) = report["abandonedSessions"]
    expected = expected_charges(body, month)
    assert held(cloudblue, report["importSessionId"]) == sorted(expected.items())
    assert_what_the_csv_makes(cloudblue, report["importSessionId"], body)
    assert cloudblue.session(report["importSessionId"]).duplicates_ignored == 0
    assert cloudblue.session(abandoned).status == "OPEN"
    assert cloudblue.session(abandoned).closed_at is None
    (warning,) = report["warnings"]
    assert f"session {abandoned} was given up and left open, never closed" in warning
    assert "outcome is unknown" in warning
    assert Decimal(report["reconciliation"]["importedSum"]) == sum(expected.values())


def test_a_bad_file_imports_nothing_and_the_report_lists_every_problem(importing, cloudblue):
    month = shift_month(LAST_MONTH, -7)
    body = (
        "\ufeffimsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"
        f"440103000000001,{month}01,basicCharge-plan-D,10,1,10,Acme Logistics\r\n"
        f"440103000000001,{month}02,basicCharge-plan-D,10,1,ten,Acme Logistics\r\n"
        f"440103000000001,{month}03,Unheard-of item,10,1,10,Acme Logistics\r\n"
    ).encode()
    sessions = len(cloudblue.sessions())

    delivery = upload(importing, f"uploads/{month}/bad.csv", body)

    assert delivery.error is None
    report = report_of(importing, delivery)
    assert report["status"] == "REJECTED"
    assert len(cloudblue.sessions()) == sessions
    problems = {(p["line"], p["column"], p["value"]) for p in report["problems"]}
    assert problems == {(3, "amount", "ten"), (4, "billItemName", "Unheard-of item")}


def test_a_file_of_the_coverage_the_stack_does_not_import_is_rejected_and_a_japan_one_is_jpy(
    importing, soracom, cloudblue, tmp_path
):
    month = shift_month(LAST_MONTH, -8)
    mapping = yaml.safe_load(EXAMPLE_MAPPING.read_text())
    mapping.pop("currency", None)
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True))
    importing.put_mapping(path)

    # This stack exports Japan coverage: a file in a Global folder is not its bill
    delivery = upload(importing, f"uploads/{month}/g/global.csv", soracom.csv_bytes(month), currency=None)

    report = report_of(importing, delivery)
    assert (report["status"], report.get("coverage")) == ("REJECTED", None)
    assert (
        "the key's folder says Global coverage, and this stack imports Japan coverage bills only "
        "(SoracomCoverageType jp)"
    ) in report["problems"][0]["message"]
    # A Japan bill is always JPY: imported, and rated once its session is followed to the end (the report's
    # status is not read before: the follow execution may have recorded PROCESSED already, or not yet)
    delivery = upload(importing, f"uploads/{month}/no-currency.csv", soracom.csv_bytes(month), currency=None)
    (imported,) = delivery.result["reports"]
    assert follow(importing, imported)["type"] == "ExecutionSucceeded"
    report = report_of(importing, delivery)
    assert (report["status"], report["coverage"], report["currency"]) == ("PROCESSED", "jp", "JPY")


def test_failed_processing_alerts_the_topic_and_lands_in_the_report(importing, soracom, cloudblue):
    # Given a subscriber to the alerts topic, and CloudBlue failing to rate the next session
    sqs, sns = importing.client("sqs"), importing.client("sns")
    queue_url = sqs.create_queue(QueueName="alerts-reader")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=importing.resources["AlertsTopic"], Protocol="sqs", Endpoint=queue_arn)
    cloudblue.faults.fail_processing = "Subscription 4bd6c1f3 is not active"
    month = shift_month(LAST_MONTH, -9)

    delivery = upload(importing, f"uploads/{month}/fails.csv", soracom.csv_bytes(month))
    (first,) = delivery.result["reports"]
    ended = follow(importing, first)

    # Then the follow state machine fails with the reason, the report says so, and a person is alerted
    assert ended["type"] == "ExecutionFailed"
    assert ended["executionFailedEventDetails"]["error"] == "ImportSessionFailed"
    report = report_of(importing, delivery)
    assert report["status"] == "FAILED_PROCESSED"
    assert report["errorDesc"] == "Subscription 4bd6c1f3 is not active"
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    alert = json.loads(message["Body"])
    assert (
        alert["Subject"]
        == f"soracharge {month} (Japan coverage): CloudBlue failed to rate session {first['importSessionId']}"
    )
    assert "Subscription 4bd6c1f3 is not active" in alert["Message"]
    assert re.search(rf"\nImport session: +{first['importSessionId']}\n", alert["Message"])
    assert "What to do:" in alert["Message"]


def test_a_key_outside_the_layout_gets_a_report_saying_where_files_go(importing, cloudblue):
    # uploads/ without a month folder is not importable (the S3 filter still sends it: prefix and suffix match)
    delivery = upload(importing, "uploads/loose-file.csv", b"imsi,date\r\n")
    (report,) = delivery.result["reports"]
    assert report["status"] == "REJECTED"
    assert "use exports/<yyyyMM>/<name>.csv or uploads/<yyyyMM>/<name>.csv" in report["summary"]


def test_losing_cloudblue_while_following_is_recorded_and_alerted_not_silent(importing, soracom, cloudblue):
    sqs, sns = importing.client("sqs"), importing.client("sns")
    queue_url = sqs.create_queue(QueueName="alerts-follow")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=importing.resources["AlertsTopic"], Protocol="sqs", Endpoint=queue_arn)
    month = shift_month(LAST_MONTH, -10)

    # Given CloudBlue answers every getSession with 500, from before the upload: the follow state machine the
    # import starts may poll at once (the import itself never asks for the session it closed)
    cloudblue.faults = CloudBlueFaults(server_error_next=1000, only_operation="getSession")
    try:
        delivery = upload(importing, f"uploads/{month}/unfollowed.csv", soracom.csv_bytes(month))
        assert delivery.error is None
        (first,) = delivery.result["reports"]
        ended = follow(importing, first)
    finally:
        cloudblue.faults = CloudBlueFaults()

    # Then the retries run out, the Catch records NOT_RATED with the reason, and a person is told
    assert ended["type"] == "ExecutionFailed"
    assert ended["executionFailedEventDetails"]["error"] == "SessionNotRated"
    report = report_of(importing, delivery)
    assert report["status"] == "NOT_RATED"
    assert "could not follow session" in report["summary"]
    assert "CloudBlueUnavailableError" in report["summary"]
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert "could not follow session" in json.loads(message["Body"])["Message"]
