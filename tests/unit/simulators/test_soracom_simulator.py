"""The Soracom simulator is faithful to the API facts soracharge relies on (shared/DESIGN.md section 2).

Each test starts its own simulator on loopback and talks to it with httpx, as the client under
test does. Dates are pinned: "today" is 2026-11-22, so 202610 is the last closed month.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from soracharge_local.simulators import SoracomFaults, SoracomSimulator
from soracharge_local.simulators.soracom_data import COLUMNS

from tests.unit.simulators.held import HeldAnswers

TODAY = date(2026, 11, 22)
CLOSED_MONTH = "202610"
CURRENT_MONTH = "202611"
OLDEST_MONTH = "202505"  # 18 months before 202611
BOM = b"\xef\xbb\xbf"
RATE_HEADERS = (
    "X-Soracom-Ratelimit-Limit",
    "X-Soracom-Ratelimit-Remaining",
    "X-Soracom-Ratelimit-Seconds-Before-Refresh",
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SoracomSimulator]:
    with SoracomSimulator(today=TODAY, polls_until_ready=2, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def api(sim: SoracomSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{sim.base_url}/v1", timeout=5) as client:
        yield client


def authenticate(api: httpx.Client, **extra: object) -> dict[str, str]:
    response = api.post("/auth", json={"authKeyId": "keyId-sim", "authKey": "secret-sim", **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    return {"X-Soracom-API-Key": body["apiKey"], "X-Soracom-Token": body["token"]}


@pytest.fixture
def headers(api: httpx.Client) -> dict[str, str]:
    return authenticate(api)


def start_export(api: httpx.Client, headers: dict[str, str], month: str = CLOSED_MONTH) -> str:
    response = api.post(f"/bills/{month}/export", params={"export_mode": "async"}, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["exportedFileId"])


def poll(api: httpx.Client, headers: dict[str, str], exported_file_id: str) -> httpx.Response:
    return api.get(f"/files/exported/{exported_file_id}", headers=headers)


def export_url(api: httpx.Client, headers: dict[str, str], month: str = CLOSED_MONTH) -> str:
    exported_file_id = start_export(api, headers, month)
    for _ in range(10):
        body = poll(api, headers, exported_file_id).json()
        if body["status"] == "exported":
            return str(body["url"])
    raise AssertionError("the export never finished")


def csv_rows(content: bytes) -> list[dict[str, str]]:
    assert content.startswith(BOM)
    return list(csv.DictReader(io.StringIO(content[len(BOM) :].decode("utf-8"), newline="")))


def amount_sum(content: bytes) -> Decimal:
    reader = csv.reader(io.StringIO(content.removeprefix(BOM).decode("utf-8"), newline=""))
    amount = next(reader).index("amount")
    return sum((Decimal(row[amount]) for row in reader), Decimal(0))


# -- auth ---------------------------------------------------------------------------------------


def test_auth_with_the_valid_key_gives_api_key_operator_and_token(api: httpx.Client) -> None:
    # Given the simulator's credential pair
    # When authenticating
    response = api.post("/auth", json={"authKeyId": "keyId-sim", "authKey": "secret-sim"})

    # Then the answer has the AuthResponse fields, in Soracom's formats
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"api-[0-9a-f-]{36}", body["apiKey"])
    assert re.fullmatch(r"OP\d{10}", body["operatorId"])
    assert len(body["token"]) > 32


@pytest.mark.parametrize(
    "credentials",
    [
        {"authKeyId": "keyId-sim", "authKey": "wrong"},
        {"authKeyId": "keyId-other", "authKey": "secret-sim"},
        {"email": "ops@example.com", "password": "secret-sim"},
    ],
)
def test_auth_with_wrong_credentials_is_a_401_json_error(api: httpx.Client, credentials: dict[str, str]) -> None:
    # When authenticating with anything but the valid pair
    response = api.post("/auth", json=credentials)

    # Then Soracom's error shape comes back
    assert response.status_code == 401
    assert re.fullmatch(r"[A-Z]{3}\d{4}", response.json()["code"])
    assert response.json()["message"]


@pytest.mark.parametrize("timeout", [179, 172_801, 0, "3600", True, 1.5])
def test_auth_rejects_a_token_timeout_outside_180_to_172800_seconds(api: httpx.Client, timeout: object) -> None:
    # When asking for a token lifetime Soracom does not allow
    response = api.post(
        "/auth", json={"authKeyId": "keyId-sim", "authKey": "secret-sim", "tokenTimeoutSeconds": timeout}
    )

    # Then it is a 400
    assert response.status_code == 400
    assert "tokenTimeoutSeconds" in response.json()["message"]


@pytest.mark.parametrize("timeout", [180, 172_800])
def test_auth_accepts_the_token_timeout_bounds(api: httpx.Client, timeout: int) -> None:
    assert api.post(
        "/auth", json={"authKeyId": "keyId-sim", "authKey": "secret-sim", "tokenTimeoutSeconds": timeout}
    ).is_success


def test_auth_never_logs_the_auth_key_or_the_token(api: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    # Given logs captured at every level
    caplog.set_level("DEBUG")

    # When authenticating and using the token
    headers = authenticate(api)
    api.get(f"/bills/{CLOSED_MONTH}", headers=headers)

    # Then neither secret appears in any log line
    assert "secret-sim" not in caplog.text
    assert headers["X-Soracom-Token"] not in caplog.text


def test_calls_without_both_soracom_headers_are_401(api: httpx.Client, headers: dict[str, str]) -> None:
    # Given another valid pair, to mix with the first one
    other = authenticate(api)
    attempts = [
        {},
        {"X-Soracom-API-Key": headers["X-Soracom-API-Key"]},
        {"X-Soracom-Token": headers["X-Soracom-Token"]},
        {"X-Soracom-API-Key": headers["X-Soracom-API-Key"], "X-Soracom-Token": "forged"},
        {"X-Soracom-API-Key": other["X-Soracom-API-Key"], "X-Soracom-Token": headers["X-Soracom-Token"]},
    ]

    # When calling getBilling with missing, wrong or mismatched headers
    statuses = [api.get(f"/bills/{CLOSED_MONTH}", headers=attempt).status_code for attempt in attempts]

    # Then every call is refused, while the real pair works
    assert statuses == [401] * len(attempts)
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 200


def test_expire_tokens_invalidates_every_issued_token(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given a working token
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 200

    # When the simulator expires every token
    sim.expire_tokens()

    # Then the old token gets a 401 JSON error and a new auth works again
    refused = api.get(f"/bills/{CLOSED_MONTH}", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["code"].startswith("AUM")
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=authenticate(api)).status_code == 200


def test_a_token_expires_after_its_timeout(clock: FakeClock, api: httpx.Client) -> None:
    # Given a token asked for 180 seconds
    headers = authenticate(api, tokenTimeoutSeconds=180)

    # When 179 then 180 seconds have passed
    clock.now += 179
    before = api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code
    clock.now += 1
    after = api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code

    # Then it works until its timeout, and not after
    assert (before, after) == (200, 401)


def test_every_v1_response_carries_the_rate_limit_headers(api: httpx.Client, headers: dict[str, str]) -> None:
    responses = [
        api.post("/auth", json={"authKeyId": "keyId-sim", "authKey": "secret-sim"}),
        api.post("/auth", json={"authKeyId": "keyId-sim", "authKey": "nope"}),
        api.get(f"/bills/{CLOSED_MONTH}", headers=headers),
        api.get(f"/bills/{CLOSED_MONTH}"),
        api.get("/bills/209901", headers=headers),
        api.get("/no/such/api", headers=headers),
    ]
    for response in responses:
        assert all(response.headers.get(name, "").isdigit() for name in RATE_HEADERS), response.headers


# -- bills --------------------------------------------------------------------------------------


def test_a_past_month_has_a_closed_paid_bill_whose_amount_is_the_csv_sum_rounded_up_to_the_yen(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # When getting last month's bill
    response = api.get(f"/bills/{CLOSED_MONTH}", headers=headers)

    # Then it is closed and paid, in the coverage's currency
    assert response.status_code == 200
    bill = response.json(parse_float=Decimal)
    assert bill["state"] == "closed"
    assert bill["paymentStatus"] == "paid"
    assert bill["paymentTransactionId"]
    assert bill["currency"] == "JPY"
    assert bill["yearMonth"] == CLOSED_MONTH
    # And its amount is the CSV's exact sum with its fraction below 1 JPY rounded up, as Soracom bills
    total = amount_sum(sim.csv_bytes(CLOSED_MONTH))
    assert total != int(total), "real-shaped usage leaves a fraction of a yen"
    assert bill["amount"] == math.ceil(total)
    assert bill["appliedCouponAmount"] == 0
    assert re.search(r'"amount":\s*(-?[0-9.]+)', response.text).group(1) == str(math.ceil(total))  # type: ignore[union-attr]
    assert sim.bill(CLOSED_MONTH) == {**bill, "amount": math.ceil(total)}


def test_global_coverage_rounds_the_bill_up_to_the_cent() -> None:
    with SoracomSimulator(coverage="g", today=TODAY) as sim:
        total = amount_sum(sim.csv_bytes(CLOSED_MONTH))
        bill = sim.bill(CLOSED_MONTH)
        assert bill is not None
        assert total * 100 != int(total * 100), "real-shaped usage leaves a fraction of a cent"
        assert bill["amount"] == Decimal(math.ceil(total * 100)) / 100
        assert bill["currency"] == "USD"


def test_a_coupon_is_taken_off_the_rounded_bill_and_reported_as_applied() -> None:
    with SoracomSimulator(today=TODAY, coupon=Decimal(500)) as sim:
        total = amount_sum(sim.csv_bytes(CLOSED_MONTH))
        bill = sim.bill(CLOSED_MONTH)
        assert bill is not None
        assert bill["appliedCouponAmount"] == 500
        assert bill["amount"] == math.ceil(total) - 500


def test_a_coupon_larger_than_the_bill_is_applied_only_up_to_the_bill() -> None:
    with SoracomSimulator(today=TODAY, sims=1, coupon=Decimal(1_000_000)) as sim:
        bill = sim.bill(CLOSED_MONTH)
        assert bill is not None
        assert bill["amount"] == 0
        assert bill["appliedCouponAmount"] == math.ceil(amount_sum(sim.csv_bytes(CLOSED_MONTH)))


def test_a_tax_included_bill_adds_the_tax_on_the_rounded_total_less_the_coupon() -> None:
    with SoracomSimulator(today=TODAY, coupon=Decimal(100), tax_rate=Decimal("0.10")) as sim:
        after_coupon = math.ceil(amount_sum(sim.csv_bytes(CLOSED_MONTH))) - 100
        bill = sim.bill(CLOSED_MONTH)
        assert bill is not None
        assert bill["amount"] == after_coupon + after_coupon // 10  # the fraction of a yen of tax rounded down


def test_how_bills_are_made_can_be_read_and_changed_over_http(sim: SoracomSimulator) -> None:
    url = f"{sim.base_url}/_simulator/billing"
    assert httpx.get(url).json() == {"coupon": "0", "taxRate": None, "taxRounding": "down"}

    changed = httpx.put(url, json={"coupon": "250.5", "taxRate": "0.08", "taxRounding": "half-up"})

    assert changed.status_code == 200
    assert changed.json() == {"coupon": "250.5", "taxRate": "0.08", "taxRounding": "half-up"}
    assert sim.bill(CLOSED_MONTH)["appliedCouponAmount"] == Decimal("250.5")  # type: ignore[index]
    for bad in ({"coupon": "-1"}, {"taxRate": "1.5"}, {"taxRounding": "sideways"}, {"vat": 1}, {"coupon": "lots"}):
        response = httpx.put(url, json=bad)
        assert response.status_code == 400, bad
        assert response.json()["code"] == "SIM0006"
    assert httpx.get(url).json()["coupon"] == "250.5"


def test_drop_csv_rows_serves_the_csv_without_its_last_rows_while_the_bill_counts_them(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    full = sim.csv_bytes(CLOSED_MONTH)
    bill_before = sim.bill(CLOSED_MONTH)
    sim.update_faults({"drop_csv_rows": 3})

    exported_file_id = start_export(api, headers)
    url = ""
    for _ in range(5):
        body = api.get(f"/files/exported/{exported_file_id}", headers=headers).json()
        if body["status"] == "exported":
            url = body["url"]
            break
    served = httpx.get(url).content

    assert csv_rows(served) == csv_rows(full)[:-3]
    assert sim.bill(CLOSED_MONTH) == bill_before


def test_the_current_month_has_a_temporary_bill_without_payment_status(
    api: httpx.Client, headers: dict[str, str]
) -> None:
    bill = api.get(f"/bills/{CURRENT_MONTH}", headers=headers).json()
    assert bill["state"] == "temporary"
    assert "paymentStatus" not in bill


def test_the_current_months_csv_only_has_the_days_so_far(sim: SoracomSimulator) -> None:
    days = {row["date"] for row in csv_rows(sim.csv_bytes(CURRENT_MONTH)) if len(row["date"]) == 8}
    assert days == {f"{CURRENT_MONTH}{day:02d}" for day in range(1, TODAY.day + 1)}


@pytest.mark.parametrize(("month", "status"), [(OLDEST_MONTH, 200), ("202504", 404), ("202612", 404)])
def test_only_the_last_18_months_and_this_month_have_a_bill(
    api: httpx.Client, headers: dict[str, str], month: str, status: int
) -> None:
    # When getting a month at the edges of the window
    response = api.get(f"/bills/{month}", headers=headers)

    # Then the oldest kept month exists, older and future months are 404 JSON errors
    assert response.status_code == status
    if status == 404:
        assert re.fullmatch(r"[A-Z]{3}\d{4}", response.json()["code"])


@pytest.mark.parametrize("month", ["2026-10", "202613", "202600", "20261"])
def test_a_malformed_month_is_a_400(api: httpx.Client, headers: dict[str, str], month: str) -> None:
    assert api.get(f"/bills/{month}", headers=headers).status_code == 400


def test_set_bill_state_forces_a_months_state_or_its_absence(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given last month is forced back to temporary
    sim.set_bill_state(CLOSED_MONTH, "temporary")
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).json()["state"] == "temporary"

    # When it is forced to have no bill (not finalized yet)
    sim.set_bill_state(CLOSED_MONTH, None)

    # Then both getBilling and exportBilling answer 404
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 404
    assert api.post(f"/bills/{CLOSED_MONTH}/export?export_mode=async", headers=headers).status_code == 404
    assert sim.bill(CLOSED_MONTH) is None


def test_global_coverage_bills_in_usd() -> None:
    with SoracomSimulator(coverage="g", today=TODAY) as sim:
        assert sim.bill(CLOSED_MONTH)["currency"] == "USD"  # type: ignore[index]
        rows = csv_rows(sim.csv_bytes(CLOSED_MONTH))
        assert rows[0]["imsi"].startswith("295050")


# -- export -------------------------------------------------------------------------------------


def test_an_async_export_is_processing_then_exported_and_downloads_the_csv(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given an async export of last month
    response = api.post(f"/bills/{CLOSED_MONTH}/export", params={"export_mode": "async"}, headers=headers)
    body = response.json()
    assert re.fullmatch(r"fe_[0-9a-f]{32}", body["exportedFileId"])
    assert body["exportedFilePath"] == f"//files/exported/{body['exportedFileId']}"

    # When polling it
    answers = [poll(api, headers, body["exportedFileId"]).json() for _ in range(4)]

    # Then it is processing polls_until_ready times, then exported with the same URL each time
    assert [a["status"] for a in answers] == ["processing", "processing", "exported", "exported"]
    assert "url" not in answers[0]
    url = answers[2]["url"]
    assert answers[3]["url"] == url
    # And a plain GET of the URL, as given, returns the CSV bytes, BOM first
    download = httpx.get(url)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "text/csv"
    assert int(download.headers["Content-Length"]) == len(download.content)
    assert download.content == sim.csv_bytes(CLOSED_MONTH)
    assert download.content.startswith(BOM)
    assert sim.count("getExportedFile") == 4
    assert sim.count("download") == 1


def test_the_download_url_looks_like_a_pre_signed_s3_url(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    url = export_url(api, headers)
    operator_id = api.post("/auth", json={"authKeyId": "keyId-sim", "authKey": "secret-sim"}).json()["operatorId"]
    assert url.startswith(f"{sim.base_url}/soracom-billing-exports/{operator_id}/fe_")
    assert f"/Detailed_Billing_{CLOSED_MONTH}.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&" in url
    assert "X-Amz-Expires=3600" in url
    assert all(escape in url for escape in ("%2B", "%2F", "%3D"))
    assert re.search(r"&X-Amz-Signature=[0-9a-f]{64}$", url)


def test_a_sync_export_answers_the_url_directly(api: httpx.Client, headers: dict[str, str]) -> None:
    for query in ("", "?export_mode=sync"):
        body = api.post(f"/bills/{CLOSED_MONTH}/export{query}", headers=headers).json()
        assert set(body) == {"url"}
        assert httpx.get(body["url"]).status_code == 200


def test_export_of_a_month_without_bill_and_poll_of_an_unknown_id_are_404(
    api: httpx.Client, headers: dict[str, str]
) -> None:
    assert api.post("/bills/202612/export?export_mode=async", headers=headers).status_code == 404
    unknown = poll(api, headers, "fe_00000000000000000000000000000000")
    assert unknown.status_code == 404
    assert unknown.json()["code"]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda url: url.split("?")[0] + "?" + unquote(url.split("?")[1]), id="unquoted"),
        pytest.param(lambda url: url.replace("%2B", "%2b").replace("%2F", "%2f"), id="lower-case-escapes"),
        pytest.param(lambda url: url.replace("%", "%25"), id="quoted-twice"),
        pytest.param(lambda url: url.replace("X-Amz-Expires=3600", "X-Amz-Expires=86400"), id="tampered"),
        pytest.param(lambda url: url + "&extra=1", id="extra-parameter"),
        pytest.param(lambda url: url.split("&X-Amz-Signature=")[0], id="no-signature"),
    ],
)
def test_a_re_quoted_or_altered_url_gets_403_signature_does_not_match(
    api: httpx.Client, headers: dict[str, str], mangle: object
) -> None:
    # Given a download URL changed the way a careless client changes it
    url = export_url(api, headers)
    changed = mangle(url)  # type: ignore[operator]
    assert changed != url

    # When downloading it
    response = httpx.get(changed)

    # Then S3 refuses it with its XML error
    assert response.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in response.text


def test_the_raw_request_target_is_recorded_byte_for_byte(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    url = export_url(api, headers)
    httpx.get(url)
    recorded = sim.requests[-1]
    assert recorded.kind == "download"
    assert recorded.status == 200
    assert sim.base_url + recorded.raw_target == url
    assert "x-soracom-token" not in recorded.headers


@pytest.mark.parametrize("header", ["X-Soracom-API-Key", "X-Soracom-Token", "Authorization"])
def test_a_download_with_soracom_or_authorization_headers_is_403(
    api: httpx.Client, headers: dict[str, str], header: str
) -> None:
    url = export_url(api, headers)
    response = httpx.get(url, headers={header: "anything"})
    assert response.status_code == 403
    assert "<Code>AccessDenied</Code>" in response.text


def test_a_download_url_expires_after_its_ttl(clock: FakeClock, api: httpx.Client, headers: dict[str, str]) -> None:
    # Given a URL valid for 3600 s
    url = export_url(api, headers)

    # When it is used just before and at its expiry
    clock.now += 3599
    before = httpx.get(url)
    clock.now += 1
    after = httpx.get(url)

    # Then it works, then S3 says it has expired
    assert before.status_code == 200
    assert after.status_code == 403
    assert "<Code>AccessDenied</Code>" in after.text
    assert "Request has expired" in after.text


def test_a_poll_after_the_url_expired_issues_a_fresh_url(
    clock: FakeClock, api: httpx.Client, headers: dict[str, str]
) -> None:
    exported_file_id = start_export(api, headers)
    answers = [poll(api, headers, exported_file_id).json() for _ in range(3)]
    clock.now += 3600
    fresh = poll(api, headers, exported_file_id).json()["url"]
    assert fresh != answers[2]["url"]
    assert httpx.get(fresh).status_code == 200


# -- the CSV ------------------------------------------------------------------------------------


def test_the_csv_has_every_feature_the_importer_must_handle(sim: SoracomSimulator) -> None:
    # Given last month's detailed billing CSV
    content = sim.csv_bytes(CLOSED_MONTH)
    text = content[len(BOM) :].decode("utf-8")
    rows = csv_rows(content)

    # Then it has the header row in Soracom's column order, with CRLF line endings
    assert content.startswith(BOM)
    assert text.split("\r\n")[0] == ",".join(COLUMNS)
    assert "\n" not in text.replace("\r\n", "")
    # And daily rows for every day of the month, for at least two bill items per SIM
    daily = [row for row in rows if len(row["date"]) == 8]
    assert {row["date"] for row in daily} == {f"{CLOSED_MONTH}{day:02d}" for day in range(1, 32)}
    first_imsi = rows[0]["imsi"]
    assert len({row["billItemName"] for row in daily if row["imsi"] == first_imsi}) >= 2
    # And monthly rows, negative rows (a discount and a free tier), and rows without a SIM
    assert any(row["date"] == CLOSED_MONTH and row["imsi"] for row in rows)
    negatives = [row for row in rows if Decimal(row["amount"]) < 0]
    assert len(negatives) >= 2
    assert all(row["date"] == CLOSED_MONTH for row in negatives)
    assert any(not row["imsi"] for row in rows)
    # And a tag value with a comma and double quotes, quoted and escaped on disk
    assert any(row["groupName"] == 'Sensors, "Tokyo"' for row in rows)
    assert '"Sensors, ""Tokyo"""' in text
    # And Soracom's identifiers as item names, upload and download as separate rows, Japanese tags
    assert {"uploadDataCharge-plan-D", "downloadDataCharge-plan-D"} <= {row["billItemName"] for row in daily}
    assert all(re.fullmatch(r"[A-Za-z0-9-]+", row["billItemName"]) for row in rows)
    assert any(row["customer"] == "東京ガス" for row in rows)
    assert any(row["name"] == "センサー 1" for row in rows)
    # And about three customers, plus SIMs without one
    sim_rows = [row for row in rows if row["imsi"]]
    assert len({row["customer"] for row in sim_rows} - {""}) == 3
    assert any(row["customer"] == "" for row in sim_rows)
    # And device rows: no imsi, their device column set, some without a customer
    cameras = [row for row in rows if row["soraCamDeviceId"]]
    lora = [row for row in rows if row["loraDeviceId"]]
    assert cameras
    assert lora
    assert all(not row["imsi"] for row in cameras + lora)
    assert any(not row["customer"] for row in cameras)
    # And a SIM with a second IMSI: its own rows, the same tags as its first
    names = {row["imsi"]: row["name"] for row in sim_rows}
    assert len(names) > len(set(names.values()))
    # And the operator's VPG, with its vpgId and no imsi
    (vpg,) = [row for row in rows if row["billItemName"].startswith("vpgBasicCharge")]
    assert vpg["vpgId"]
    assert not vpg["imsi"]


def test_csv_money_is_plain_decimal_text_and_amount_is_unit_price_times_quantity(sim: SoracomSimulator) -> None:
    for row in csv_rows(sim.csv_bytes(CLOSED_MONTH)):
        for column in ("unitPrice", "quantity", "amount"):
            assert re.fullmatch(r"-?\d+(\.\d+)?", row[column]), row
        assert Decimal(row["unitPrice"]) * Decimal(row["quantity"]) == Decimal(row["amount"]), row


def test_the_base_url_stays_readable_after_stop_and_start_refuses_twice() -> None:
    simulator = SoracomSimulator(today=TODAY)
    with pytest.raises(RuntimeError):
        _ = simulator.base_url
    with simulator:
        url = simulator.base_url
        with pytest.raises(RuntimeError):
            simulator.start()
    assert simulator.base_url == url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_simulator/faults")


def test_the_csv_is_deterministic() -> None:
    # Given two separate simulators with the same settings
    first = SoracomSimulator(today=TODAY, sims=5)
    second = SoracomSimulator(today=TODAY, sims=5)

    # Then they serve the same bytes and bill, and other months or sizes differ
    assert first.csv_bytes(CLOSED_MONTH) == second.csv_bytes(CLOSED_MONTH)
    assert first.bill(CLOSED_MONTH) == second.bill(CLOSED_MONTH)
    assert first.csv_bytes(CLOSED_MONTH) != first.csv_bytes("202609")
    assert first.csv_bytes(CLOSED_MONTH) != SoracomSimulator(today=TODAY, sims=6).csv_bytes(CLOSED_MONTH)


def test_a_2000_sim_csv_is_over_8_mb_and_its_usage_quantities_rarely_repeat() -> None:
    sim = SoracomSimulator(today=TODAY, sims=2000)
    content = sim.csv_bytes(CLOSED_MONTH)
    assert len(content) > 8 * 1024 * 1024
    assert sim.bill(CLOSED_MONTH)["amount"] == math.ceil(amount_sum(content))  # type: ignore[index]
    usage = [row["quantity"] for row in csv_rows(content) if row["billItemName"].startswith("downloadDataCharge")]
    assert len(usage) == (2000 + 2000 // 6) * 31  # every IMSI, every day (every 6th SIM has two IMSIs)
    assert len(set(usage)) > 0.95 * len(usage)


# -- faults -------------------------------------------------------------------------------------


def test_rate_limit_next_answers_429_with_the_refresh_hint(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given the next two API requests are rate limited
    sim.faults.rate_limit_next = 2
    sim.faults.rate_limit_seconds = 7

    # When auth and three getBilling calls are made
    auth = api.post("/auth", json={"authKeyId": "keyId-sim", "authKey": "secret-sim"})
    answers = [api.get(f"/bills/{CLOSED_MONTH}", headers=headers) for _ in range(3)]

    # Then auth is not affected, two calls get 429 with Soracom's headers, the third passes
    assert auth.status_code == 200
    assert [a.status_code for a in answers] == [429, 429, 200]
    limited = answers[0]
    assert limited.headers["X-Soracom-Ratelimit-Remaining"] == "0"
    assert limited.headers["X-Soracom-Ratelimit-Seconds-Before-Refresh"] == "7"
    assert limited.json()["code"]
    assert sim.faults.rate_limit_next == 0


def test_server_error_next_alternates_json_500_and_plain_text_from_the_edge(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given the next four API requests fail
    sim.faults.server_error_next = 4

    # When calling five times
    answers = [api.get(f"/bills/{CLOSED_MONTH}", headers=headers) for _ in range(5)]

    # Then JSON 500s alternate with plain-text 502/503, then the API answers again
    assert [a.status_code for a in answers] == [500, 502, 500, 503, 200]
    assert answers[0].json()["code"] == "AGW0005"
    assert answers[1].headers["Content-Type"].startswith("text/plain")
    with pytest.raises(json.JSONDecodeError):
        answers[1].json()


def test_export_outcome_failed_ends_in_failed_without_url(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    sim.faults.export_outcome = "failed"
    exported_file_id = start_export(api, headers)
    answers = [poll(api, headers, exported_file_id).json() for _ in range(4)]
    assert [a["status"] for a in answers] == ["processing", "processing", "failed", "failed"]
    assert all("url" not in a for a in answers)


def test_export_outcome_never_stays_processing(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given exports never finish
    sim.faults.export_outcome = "never"
    exported_file_id = start_export(api, headers)

    # When polling 30 times, then the fault is lifted
    answers = [poll(api, headers, exported_file_id).json()["status"] for _ in range(30)]
    sim.faults.export_outcome = "exported"

    # Then it was processing all along, and is exported at the next poll
    assert set(answers) == {"processing"}
    assert poll(api, headers, exported_file_id).json()["status"] == "exported"


def test_download_server_error_next_answers_500_then_the_file(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    url = export_url(api, headers)
    sim.faults.download_server_error_next = 1
    first, second = httpx.get(url), httpx.get(url)
    assert first.status_code == 500
    assert "<Code>InternalError</Code>" in first.text
    assert second.status_code == 200


def test_truncate_download_is_detected_by_httpx(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given downloads are cut half-way
    url = export_url(api, headers)
    sim.faults.truncate_download = True

    # When downloading, then the client sees a broken transfer, not a short file
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)


def test_only_kind_targets_one_request_kind(sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]) -> None:
    # Given faults restricted to getExportedFile
    sim.faults.only_kind = "getExportedFile"
    sim.faults.rate_limit_next = 1
    sim.faults.server_error_next = 1

    # When running the flow
    bill = api.get(f"/bills/{CLOSED_MONTH}", headers=headers)
    exported_file_id = start_export(api, headers)
    polls = [poll(api, headers, exported_file_id).status_code for _ in range(3)]

    # Then only the polls were hit (the edge error first, then the rate limit)
    assert bill.status_code == 200
    assert polls == [500, 429, 200]


def test_slow_seconds_makes_a_client_time_out(clock: FakeClock) -> None:
    held = HeldAnswers()
    with (
        SoracomSimulator(today=TODAY, polls_until_ready=2, clock=clock, sleep=held) as sim,
        httpx.Client(base_url=f"{sim.base_url}/v1", timeout=5) as api,
    ):
        try:
            # Given getBilling answers late: held until the test releases it
            headers = authenticate(api)
            sim.faults.slow_seconds = 0.3
            sim.faults.only_kind = "getBilling"

            # Then a client that stops waiting times out
            with pytest.raises(httpx.ReadTimeout):
                api.get(f"/bills/{CLOSED_MONTH}", headers=headers, timeout=httpx.Timeout(5, read=0.05))
            # and other kinds are not slowed: an export is answered while the bill's answer is still held
            assert held.holding.wait(30)
            assert api.post(f"/bills/{CLOSED_MONTH}/export?export_mode=async", headers=headers).is_success
            assert held.delays == [0.3]
        finally:
            held.release()


# -- faults that fired --------------------------------------------------------------------------


def test_fired_counts_faults_that_fired_not_faults_armed(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given five server errors armed, and a delay aimed at exports only
    sim.faults.server_error_next = 5
    sim.faults.download_server_error_next = 2

    # When making two requests, then lifting the errors and slowing exports while only reading bills
    answers = [api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code for _ in range(2)]
    sim.faults.server_error_next = 0
    sim.faults.slow_seconds = 5
    sim.faults.only_kind = "exportBilling"
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 200

    # Then two server errors fired, not five, and neither the delay nor the download errors
    assert answers == [500, 502]
    assert sim.fired == {"server_error_next": 2}
    assert sim.fired["slow_seconds"] == 0
    assert sim.fired["download_server_error_next"] == 0


def test_fired_counts_every_kind_of_fault_once_per_changed_answer(
    clock: FakeClock, sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given an export ready for download, and each fault used once (drop_csv_rows twice)
    url = export_url(api, headers)
    sim.faults.rate_limit_next = 1
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 429
    sim.faults.slow_seconds = 0.01
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 200
    sim.faults.slow_seconds = 0
    sim.faults.download_server_error_next = 1
    assert httpx.get(url).status_code == 500
    sim.faults.truncate_download = True
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)
    sim.faults.truncate_download = False
    sim.faults.drop_csv_rows = 1
    assert httpx.get(url).status_code == 200
    assert httpx.get(url).status_code == 200
    sim.faults.drop_csv_rows = 0
    assert httpx.get(url).content == sim.csv_bytes(CLOSED_MONTH)

    # When the simulator expires the tokens, and a token times out on its own
    short = authenticate(api, tokenTimeoutSeconds=180)
    sim.expire_tokens()
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 401
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=short).status_code == 401
    fresh = authenticate(api, tokenTimeoutSeconds=180)
    clock.now += 180
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=fresh).status_code == 401

    # Then each fault counted the answers it changed; the token's own timeout is not a fault
    assert sim.fired == {
        "rate_limit_next": 1,
        "slow_seconds": 1,
        "download_server_error_next": 1,
        "truncate_download": 1,
        "drop_csv_rows": 2,
        "expired_token": 2,
    }


@pytest.mark.parametrize(("outcome", "extra_polls", "fired"), [("failed", 2, 2), ("never", 3, 3)])
def test_export_outcome_fires_only_on_polls_it_changed(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str], outcome: str, extra_polls: int, fired: int
) -> None:
    # Given an export whose first two polls are "processing" anyway (polls_until_ready=2)
    sim.update_faults({"export_outcome": outcome})
    exported_file_id = start_export(api, headers)

    # When polling 2 + n times
    answers = [poll(api, headers, exported_file_id).json()["status"] for _ in range(2 + extra_polls)]

    # Then only the polls after the second were changed by the fault
    assert answers[:2] == ["processing", "processing"]
    assert set(answers[2:]) == {"processing" if outcome == "never" else "failed"}
    assert sim.fired == {"export_outcome": fired}


def test_fired_is_a_copy_served_over_http_and_cleared(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given two rate limits that fired
    sim.faults.rate_limit_next = 2
    api.get(f"/bills/{CLOSED_MONTH}", headers=headers)
    api.get(f"/bills/{CLOSED_MONTH}", headers=headers)

    # When reading the counts, changing the copy, and reading them over HTTP
    fired = sim.fired
    fired["rate_limit_next"] = 99
    served = httpx.get(f"{sim.base_url}/_simulator/fired")

    # Then the simulator's counts are untouched, and they can be cleared in code or over HTTP
    assert served.json() == {"rate_limit_next": 2}
    assert sim.fired == {"rate_limit_next": 2}
    sim.clear_fired()
    assert httpx.get(f"{sim.base_url}/_simulator/fired").json() == {}
    sim.faults.rate_limit_next = 1
    api.get(f"/bills/{CLOSED_MONTH}", headers=headers)
    assert httpx.delete(f"{sim.base_url}/_simulator/fired").json() == {}
    assert sim.fired == {}


# -- HTTP control endpoints ---------------------------------------------------------------------


def test_faults_can_be_read_merged_and_reset_over_http(sim: SoracomSimulator) -> None:
    with httpx.Client(base_url=f"{sim.base_url}/_simulator") as control:
        # Given the faults are all off
        assert control.get("/faults").json() == SoracomFaults().to_json()

        # When two fields are set over HTTP
        updated = control.put("/faults", json={"rate_limit_next": 3, "only_kind": "getExportedFile"})

        # Then they are merged into the live faults
        assert updated.status_code == 200
        assert updated.json()["rate_limit_next"] == 3
        assert sim.faults.rate_limit_next == 3
        assert sim.faults.only_kind == "getExportedFile"
        assert sim.faults.export_outcome == "exported"

        # And bad updates are refused whole, and DELETE turns every fault off
        for bad in ({"no_such_fault": 1}, {"rate_limit_next": -1}, {"export_outcome": "maybe"}, [1]):
            assert control.put("/faults", json=bad).status_code == 400
        assert control.delete("/faults").json() == SoracomFaults().to_json()
        assert sim.faults == SoracomFaults()


def test_recorded_requests_are_listed_over_http_without_credentials(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    # Given an auth and a getBilling
    api.get(f"/bills/{CLOSED_MONTH}", headers=headers)

    # When listing the recorded requests
    listed = httpx.get(f"{sim.base_url}/_simulator/requests").json()["requests"]

    # Then each has its kind and status, and credentials are redacted
    assert [(r["kind"], r["status"]) for r in listed] == [("auth", 200), ("getBilling", 200)]
    assert listed[1]["rawTarget"] == f"/v1/bills/{CLOSED_MONTH}"
    assert listed[1]["headers"]["x-soracom-token"] == "<redacted>"
    assert headers["X-Soracom-Token"] not in json.dumps(listed)
    assert sim.count("control") == 1


def test_tokens_can_be_expired_and_bill_states_set_over_http(
    sim: SoracomSimulator, api: httpx.Client, headers: dict[str, str]
) -> None:
    assert httpx.post(f"{sim.base_url}/_simulator/expire-tokens").status_code == 200
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=headers).status_code == 401

    fresh = authenticate(api)
    assert httpx.put(f"{sim.base_url}/_simulator/bills/{CLOSED_MONTH}", json={"state": None}).status_code == 200
    assert api.get(f"/bills/{CLOSED_MONTH}", headers=fresh).status_code == 404
    assert httpx.put(f"{sim.base_url}/_simulator/bills/{CLOSED_MONTH}", json={"state": "odd"}).status_code == 400


def test_the_module_runs_on_its_own_and_stops_on_ctrl_c() -> None:
    # Given the simulator started as `python -m ... --port 0`
    source_root = Path(__file__).resolve().parents[3] / "local"
    process = subprocess.Popen(
        [sys.executable, "-m", "soracharge_local.simulators.soracom", "--port", "0", "--today", "2026-11-22"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(source_root), "PATH": ""},
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first_line)
        assert match, first_line
        # When it is called, then it answers; Ctrl-C stops it cleanly
        assert httpx.get(f"{match.group(0)}/_simulator/faults", timeout=5).status_code == 200
        printed = "".join(process.stdout.readline() for _ in range(4))
        assert "SORACOM_AUTH_KEY_ID=keyId-sim" in printed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
