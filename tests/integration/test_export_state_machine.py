"""The real export-billing state machine, executed by moto, against the Soracom simulator."""

from __future__ import annotations

import hashlib
import json

import pytest
from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.simulators import SoracomSimulator

from tests.integration.conftest import LAST_MONTH, OLDER_MONTH, count, error_message, export, lambda_failures

BOM = b"\xef\xbb\xbf"


def stored_object(cloud: LocalCloud, key: str) -> tuple[bytes, dict[str, str], str]:
    got = cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key)
    return got["Body"].read(), got["Metadata"], got["ContentType"]


def export_keys(cloud: LocalCloud, month: str) -> list[str]:
    listed = cloud.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix=f"exports/{month}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_an_export_ready_after_n_polls_lands_byte_for_byte_in_s3(cloud, soracom: SoracomSimulator):
    # Given an export that stays "processing" for three polls
    soracom.polls_until_ready = 3

    # When the month is exported
    result = export(cloud, {"month": LAST_MONTH}, "ready-after-polls")

    # Then it succeeds after four polls, each after a 5 s wait
    assert result.status == "SUCCEEDED", error_message(result)
    assert count(result, "WaitStateEntered") == 4
    assert count(result, "TaskStateEntered", "PollExport") == 4
    assert soracom.count("getExportedFile") == 5  # four polls, then StoreExport's fresh download URL
    # and the CSV in S3 is exactly what Soracom served, BOM included, with the bill's facts as metadata
    output = result.output
    assert output is not None
    key = f"exports/{LAST_MONTH}/{output['exportedFileId']}.csv"
    assert output["s3"]["key"] == key
    assert output["s3"]["uri"] == f"s3://{cloud.bucket}/{key}"
    body, metadata, content_type = stored_object(cloud, key)
    served = soracom.csv_bytes(LAST_MONTH)
    assert body == served
    assert body.startswith(BOM)
    bill = soracom.bill(LAST_MONTH)
    assert bill is not None
    assert metadata["month"] == LAST_MONTH
    assert metadata["currency"] == bill["currency"] == output["currency"]
    assert metadata["bill-amount"] == output["amount"]
    assert metadata["sha256"] == hashlib.sha256(served).hexdigest() == output["s3"]["sha256"]
    assert metadata["exported-file-id"] == output["exportedFileId"]
    assert content_type.startswith("text/csv")
    assert output["downloadUrl"].startswith(soracom.base_url)
    assert output["polls"] == 4
    # The pre-signed URL's query (temporary credentials) is in no output and no history event.
    assert "?" not in output["downloadUrl"]
    assert "X-Amz" not in json.dumps(result.events, default=str)


def test_the_bill_amount_in_the_output_is_the_exact_decimal_soracom_sent(cloud, soracom: SoracomSimulator):
    result = export(cloud, {"month": OLDER_MONTH}, "exact-amount")
    assert result.status == "SUCCEEDED", error_message(result)
    assert result.output is not None
    bill = soracom.bill(OLDER_MONTH)
    assert bill is not None
    assert result.output["amount"] == str(bill["amount"])


def test_the_schedule_input_exports_the_previous_month(cloud):
    # Given the input the monthly schedule sends: its scheduled time, on the 4th of this month
    this_month = shift_month(LAST_MONTH, 1)
    scheduled_time = f"{this_month[:4]}-{this_month[4:]}-04T00:00:00Z"
    result = export(cloud, {"scheduledTime": scheduled_time}, "scheduled")
    assert result.status == "SUCCEEDED", error_message(result)
    assert result.output is not None
    assert result.output["month"] == LAST_MONTH


def test_a_failed_export_ends_in_the_export_failed_state(cloud, soracom: SoracomSimulator):
    soracom.faults.export_outcome = "failed"
    result = export(cloud, {"month": LAST_MONTH}, "export-failed")
    assert result.status == "FAILED"
    assert result.error == "ExportFailed"
    assert "reported the detailed billing export as failed" in (result.cause or "")
    assert result.states_entered()[-1] == "ExportFailed"
    assert count(result, "TaskStateEntered", "StoreExport") == 0


def test_an_export_that_never_finishes_fails_after_exactly_21_polls(cloud, soracom: SoracomSimulator):
    soracom.faults.export_outcome = "never"
    result = export(cloud, {"month": OLDER_MONTH}, "export-never")
    assert result.status == "FAILED"
    assert result.error == "ExportTimedOut"
    assert "21 polls" in (result.cause or "")
    assert soracom.count("getExportedFile") == 21
    assert count(result, "TaskStateEntered", "PollExport") == 21
    assert count(result, "WaitStateEntered") == 21
    assert result.states_entered()[-1] == "ExportTimedOut"
    assert count(result, "TaskStateEntered", "StoreExport") == 0


def test_rate_limiting_is_retried_then_succeeds(cloud, soracom: SoracomSimulator):
    soracom.faults.rate_limit_next = 2
    soracom.faults.only_kind = "getBilling"
    result = export(cloud, {"month": LAST_MONTH}, "rate-limited")
    assert result.status == "SUCCEEDED", error_message(result)
    assert lambda_failures(result) == ["SoracomRateLimitedError", "SoracomRateLimitedError"]
    assert len(cloud.retry_sleeps) == 2


@pytest.mark.parametrize("kind", ["getBilling", "exportBilling", "getExportedFile"])
def test_server_errors_are_retried_on_every_step(cloud, soracom: SoracomSimulator, kind):
    soracom.faults.server_error_next = 2
    soracom.faults.only_kind = kind
    soracom.faults.download_server_error_next = 1
    result = export(cloud, {"month": LAST_MONTH}, f"server-errors-{kind}")
    assert result.status == "SUCCEEDED", error_message(result)
    assert lambda_failures(result) == ["SoracomUnavailableError"] * 3  # two API errors, one download error


def test_a_month_exported_twice_is_stored_once(cloud, soracom: SoracomSimulator):
    # Given the month was exported already (a re-run, or the schedule delivering twice)
    first = export(cloud, {"month": LAST_MONTH}, "twice-first")
    again = export(cloud, {"month": LAST_MONTH}, "twice-again")
    assert first.status == again.status == "SUCCEEDED"
    assert first.output is not None
    assert again.output is not None
    # Then the second run stored nothing new and points at the first file
    assert again.output["s3"]["key"] == first.output["s3"]["key"]
    assert again.output["s3"]["alreadyStored"] is True
    versions = cloud.client("s3").list_object_versions(Bucket=cloud.bucket, Prefix=f"exports/{LAST_MONTH}/")
    assert len(versions["Versions"]) == 1
    assert soracom.count("download") == 1


def test_a_broken_download_that_never_heals_fails_with_the_reason(cloud, soracom: SoracomSimulator):
    soracom.faults.truncate_download = True
    result = export(cloud, {"month": LAST_MONTH}, "truncated-download")
    assert result.status == "FAILED"
    assert result.error == "SoracomUnavailableError"
    assert "download from 127.0.0.1" in error_message(result)
    assert lambda_failures(result) == ["SoracomUnavailableError"] * 6  # the first try and 5 retries


def test_a_token_expiring_mid_run_is_renewed_once(cloud, soracom: SoracomSimulator):
    # Given every token expires just before the first poll
    def expire_before_first_poll(function: str, event: object) -> None:
        if function == "PollExportFunction" and soracom.count("getExportedFile") == 0:
            soracom.expire_tokens()

    cloud.runner.before_invoke.append(expire_before_first_poll)

    result = export(cloud, {"month": LAST_MONTH}, "token-expiry")

    # Then the poll was refused once, the client authenticated again, and the run went on
    assert result.status == "SUCCEEDED", error_message(result)
    refused = [r for r in soracom.requests if r.status == 401]
    assert [r.kind for r in refused] == ["getExportedFile"]
    kinds = [r.kind for r in soracom.requests]
    after_refusal = kinds[kinds.index("getExportedFile") + 1 :]
    assert after_refusal[:2] == ["auth", "getExportedFile"]
    assert lambda_failures(result) == []


def test_a_month_without_a_bill_fails_at_once_with_bill_not_found(cloud, soracom: SoracomSimulator):
    soracom.set_bill_state(OLDER_MONTH, None)
    try:
        result = export(cloud, {"month": OLDER_MONTH}, "bill-not-found")
    finally:
        soracom.set_bill_state(OLDER_MONTH, "closed")
    assert result.status == "FAILED"
    assert result.error == "BillNotFoundError"
    assert f"no bill for {OLDER_MONTH}" in error_message(result)
    assert lambda_failures(result) == ["BillNotFoundError"]
    assert soracom.count("exportBilling") == 0


def test_a_bill_not_closed_is_retried_every_6_hours_for_4_days_then_fails(cloud, soracom: SoracomSimulator):
    soracom.set_bill_state(LAST_MONTH, "temporary")
    try:
        result = export(cloud, {"month": LAST_MONTH}, "bill-not-closed")
    finally:
        soracom.set_bill_state(LAST_MONTH, "closed")
    assert result.status == "FAILED"
    assert result.error == "BillNotClosedError"
    assert f"the bill for {LAST_MONTH} is still 'temporary'" in error_message(result)
    assert cloud.retry_sleeps == [21600.0] * 16
    assert soracom.count("exportBilling") == 0


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ({"month": "2022-08"}, "InvalidInputError", "month: month must be yyyyMM"),
        ({"month": "202208"}, "MonthOutOfRangeError", "older than the 18 months"),
        ({}, "InvalidInputError", 'give "month"'),
    ],
)
def test_bad_input_fails_at_once_naming_what_is_wrong(cloud, soracom: SoracomSimulator, payload, error, message):
    result = export(cloud, payload, f"bad-input-{error}-{len(payload)}")
    assert result.status == "FAILED"
    assert result.error == error
    assert message in error_message(result)
    assert soracom.requests == []


def test_a_big_export_is_streamed_into_a_multipart_upload(cloud, soracom: SoracomSimulator):
    # Given a bill with 2,000 SIMs (a CSV of more than 8 MiB, boto3's multipart threshold)
    month = shift_month(LAST_MONTH, -5)
    soracom.sims = 2000
    try:
        result = export(cloud, {"month": month}, "big-export")
    finally:
        soracom.sims = 8
    assert result.status == "SUCCEEDED", error_message(result)
    assert result.output is not None
    key = result.output["s3"]["key"]
    head = cloud.client("s3").head_object(Bucket=cloud.bucket, Key=key)
    served = soracom.csv_bytes(month)
    assert len(served) > 8 * 1024 * 1024
    assert head["ContentLength"] == len(served) == result.output["s3"]["size"]
    assert "-" in head["ETag"]  # a multipart upload's ETag is "<md5 of part md5s>-<parts>"
    body, metadata, _ = stored_object(cloud, key)
    assert body == served
    assert metadata["sha256"] == hashlib.sha256(served).hexdigest()
    assert export_keys(cloud, month) == [key]
