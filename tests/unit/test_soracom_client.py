"""The Soracom client against httpx.MockTransport: headers, token reuse, re-auth, error mapping, download."""

import io
import json
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr
from soracharge.adapters.soracom import SoracomClient
from soracharge.errors import (
    BillNotFoundError,
    ExportDownloadError,
    SoracomApiError,
    SoracomAuthError,
    SoracomRateLimitedError,
    SoracomUnavailableError,
    UnsafeDownloadUrlError,
)
from soracharge.models.soracom import SoracomCredentials

CREDENTIALS = SoracomCredentials(auth_key_id="keyId-test", auth_key=SecretStr("secret-test"))
BILL = {"amount": 28734.56, "currency": "JPY", "state": "closed", "yearMonth": "202610", "paymentStatus": "paid"}


class FakeSoracom:
    """A scripted Soracom: answers in order for each path, records every request."""

    def __init__(self, answers: dict[str, list[httpx.Response]] | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[httpx.Request] = []
        self.tokens_issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/auth":
            self.tokens_issued += 1
            return httpx.Response(
                200, json={"apiKey": "api-1", "token": f"token-{self.tokens_issued}", "operatorId": "OP1"}
            )
        queue = self.answers.get(request.url.path)
        if not queue:
            return httpx.Response(500, text="unscripted")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/v1/auth"]


def client_for(fake: FakeSoracom, **kwargs) -> SoracomClient:
    return SoracomClient(
        base_url="https://api.example.test",
        credentials=lambda: CREDENTIALS,
        transport=httpx.MockTransport(fake),
        **kwargs,
    )


def test_authenticates_once_and_sends_both_headers_on_every_call():
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(200, json=BILL)]})
    client = client_for(fake, token_timeout_seconds=3600)

    client.get_bill("202610")
    client.get_bill("202610")

    auth = [r for r in fake.requests if r.url.path == "/v1/auth"]
    assert len(auth) == 1
    assert json.loads(auth[0].content) == {
        "authKeyId": "keyId-test",
        "authKey": "secret-test",
        "tokenTimeoutSeconds": 3600,
    }
    for request in fake.api_requests():
        assert request.headers["X-Soracom-API-Key"] == "api-1"
        assert request.headers["X-Soracom-Token"] == "token-1"


@pytest.mark.parametrize("amount", ["28734.56", "8011.00", "12345678901234567.89", "0.000001", "-12.50"])
def test_the_bill_amount_is_read_as_the_exact_decimal_text(amount):
    body = f'{{"amount": {amount}, "currency": "JPY", "state": "closed", "yearMonth": "202610"}}'.encode()
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(200, content=body)]})
    assert str(client_for(fake).get_bill("202610").amount) == amount


def test_the_bill_amount_is_read_as_an_exact_decimal():
    body = b'{"amount": 28734.56, "currency": "JPY", "state": "closed", "yearMonth": "202610"}'
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(200, content=body)]})
    assert client_for(fake).get_bill("202610").amount == Decimal("28734.56")


def test_the_applied_coupon_is_read_exactly_and_a_bill_without_one_has_none():
    body = b'{"amount": 7772, "appliedCouponAmount": 500.50, "currency": "JPY", "state": "closed"}'
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(200, content=body)]})
    assert str(client_for(fake).get_bill("202610").appliedCouponAmount) == "500.50"
    plain = b'{"amount": 7772, "currency": "JPY", "state": "closed"}'
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(200, content=plain)]})
    assert client_for(fake).get_bill("202610").appliedCouponAmount == 0


def test_a_401_leads_to_one_reauthentication_and_one_retry():
    fake = FakeSoracom(
        {"/v1/bills/202610": [httpx.Response(401, json={"code": "AUT0001"}), httpx.Response(200, json=BILL)]}
    )
    bill = client_for(fake).get_bill("202610")
    assert bill.state == "closed"
    assert fake.tokens_issued == 2
    assert [r.headers["X-Soracom-Token"] for r in fake.api_requests()] == ["token-1", "token-2"]


def test_a_second_401_is_an_auth_error_not_a_loop():
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(401, json={"code": "AUT0001", "message": "expired"})]})
    with pytest.raises(SoracomAuthError, match=r"getBilling: Soracom rejected a fresh token \(AUT0001: expired\)"):
        client_for(fake).get_bill("202610")
    assert fake.tokens_issued == 2


def test_the_token_is_renewed_before_it_expires():
    now = [0.0]
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(200, json=BILL)]})
    client = client_for(fake, token_timeout_seconds=600, clock=lambda: now[0])
    client.get_bill("202610")
    now[0] = 539.0
    client.get_bill("202610")
    assert fake.tokens_issued == 1
    now[0] = 541.0  # within the 60 s renewal margin of the 600 s token
    client.get_bill("202610")
    assert fake.tokens_issued == 2


def test_refused_credentials_are_an_auth_error_naming_the_key_id_but_not_the_key():
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"code": "AUT0002", "message": "Invalid authKey"})

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(SoracomAuthError) as raised:
        client.get_bill("202610")
    assert "keyId-test" in str(raised.value)
    assert "AUT0002: Invalid authKey" in str(raised.value)
    assert "secret-test" not in str(raised.value)


def test_429_carries_the_seconds_before_refresh_hint():
    limited = httpx.Response(
        429,
        json={"code": "COM0011", "message": "Rate limit exceeded"},
        headers={"X-Soracom-Ratelimit-Remaining": "0", "X-Soracom-Ratelimit-Seconds-Before-Refresh": "42"},
    )
    with pytest.raises(SoracomRateLimitedError, match=r"refreshes in 42 s") as raised:
        client_for(FakeSoracom({"/v1/bills/202610": [limited]})).get_bill("202610")
    assert raised.value.retry_after_seconds == 42


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, json={"code": "COM0001", "message": "Internal"}), r"HTTP 500 \(COM0001: Internal\)"),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), r"HTTP 502 \(HTTP 502 <html>Bad Gateway</html>\)"),
        (httpx.Response(503, text=""), r"HTTP 503 \(HTTP 503\)"),
    ],
)
def test_server_errors_json_or_plain_text_are_transient(response, message):
    with pytest.raises(SoracomUnavailableError, match=message):
        client_for(FakeSoracom({"/v1/bills/202610": [response]})).get_bill("202610")


def test_timeouts_and_refused_connections_are_transient():
    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(time_out)
    )
    with pytest.raises(SoracomUnavailableError, match=r"auth: ReadTimeout"):
        client.get_bill("202610")


def test_404_on_a_bill_is_bill_not_found_with_soracoms_words():
    missing = httpx.Response(404, json={"code": "BIL0001", "message": "No bill"})
    with pytest.raises(BillNotFoundError, match=r"no bill for 202208 \(BIL0001: No bill\)"):
        client_for(FakeSoracom({"/v1/bills/202208": [missing]})).get_bill("202208")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"amount": "lots", "currency": "JPY", "state": "closed", "yearMonth": "202610"}',
        b'{"amount": 1, "currency": "GBP", "state": "closed", "yearMonth": "202610"}',
    ],
)
def test_unexpected_bodies_are_a_typed_api_error(body):
    fake = FakeSoracom({"/v1/bills/202610": [httpx.Response(200, content=body)]})
    with pytest.raises(SoracomApiError, match=r"getBilling: unexpected response body"):
        client_for(fake).get_bill("202610")


def test_the_export_is_always_asked_for_asynchronously():
    started = httpx.Response(200, json={"exportedFileId": "fe_abc", "exportedFilePath": "//files/exported/fe_abc"})
    fake = FakeSoracom({"/v1/bills/202610/export": [started]})
    assert client_for(fake).start_export("202610").exportedFileId == "fe_abc"
    (request,) = fake.api_requests()
    assert request.method == "POST"
    assert request.url.params["export_mode"] == "async"
    assert request.content == b""


def test_an_export_answered_synchronously_is_refused():
    # A server that ignored export_mode=async answers {url}: that is not an async export.
    fake = FakeSoracom({"/v1/bills/202610/export": [httpx.Response(200, json={"url": "https://x"})]})
    with pytest.raises(SoracomApiError, match=r"exportedFileId"):
        client_for(fake).start_export("202610")


# -- the download ---------------------------------------------------------------------------------

PRESIGNED = (
    "https://soracom-billing.s3.ap-northeast-1.amazonaws.com/OP0012/fe_abc/Detailed%20Billing%2B202610.csv"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIA%2F20261122%2Fap-northeast-1%2Fs3%2Faws4_request"
    "&X-Amz-Security-Token=IQo%2Bb3JpZ2luX2Vj%3D%3D&X-Amz-SignedHeaders=host&X-Amz-Signature=0a1b2c"
)


def test_the_download_uses_the_url_byte_for_byte_with_no_soracom_headers():
    seen: list[httpx.Request] = []
    body = "\ufeffimsi,date,billItemName,amount\r\n001,20261001,基本料金,10\r\n".encode()

    def s3(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(body), headers={"Content-Length": str(len(body))})

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(s3)
    )
    sink = io.BytesIO()
    downloaded = client.download(PRESIGNED, sink)

    assert sink.getvalue() == body
    assert downloaded.size == len(body)
    (request,) = seen
    assert str(request.url) == PRESIGNED
    assert request.url.raw_path.decode() == PRESIGNED.removeprefix(
        "https://soracom-billing.s3.ap-northeast-1.amazonaws.com"
    )
    assert not {"x-soracom-api-key", "x-soracom-token", "authorization"} & {k.lower() for k in request.headers}


def test_a_refused_download_says_the_url_may_have_expired_and_names_only_the_host():
    def expired(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        )

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(expired)
    )
    with pytest.raises(ExportDownloadError, match=r"HTTP 403 \(AccessDenied\).*expired") as raised:
        client.download(PRESIGNED, io.BytesIO())
    assert "X-Amz-Security-Token" not in str(raised.value)
    assert "soracom-billing.s3.ap-northeast-1.amazonaws.com" in str(raised.value)


def test_a_short_body_is_a_transient_error():
    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"abc"), headers={"Content-Length": "10"})

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(short)
    )
    with pytest.raises(SoracomUnavailableError, match=r"cut short: 3 of 10 bytes"):
        client.download(PRESIGNED, io.BytesIO())


def test_a_compressed_download_is_kept_byte_for_byte_as_served():
    import gzip

    served = gzip.compress(b"imsi,amount\r\n001,10\r\n")

    def s3(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return httpx.Response(
            200,
            stream=httpx.ByteStream(served),
            headers={"Content-Encoding": "gzip", "Content-Length": str(len(served))},
        )

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(s3)
    )
    sink = io.BytesIO()
    assert client.download(PRESIGNED, sink).size == len(served)
    assert sink.getvalue() == served


@pytest.mark.parametrize(
    "url",
    [
        "http://soracom-billing.s3.amazonaws.com/f.csv",  # not https
        "https://169.254.169.254/latest/meta-data/",  # the instance metadata service
        "https://internal.example.com/f.csv",
        "https://amazonaws.com.evil.test/f.csv",
    ],
)
def test_a_download_url_off_the_allow_list_is_never_fetched(url):
    fetched: list[httpx.Request] = []

    def anything(request: httpx.Request) -> httpx.Response:
        fetched.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"secret"))

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(anything)
    )
    with pytest.raises(UnsafeDownloadUrlError, match=r"not allowed .*it was not fetched"):
        client.download(url, io.BytesIO())
    assert fetched == []


def test_a_redirect_off_the_allow_list_is_not_followed():
    fetched: list[str] = []

    def redirecting(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url.host))
        return httpx.Response(302, headers={"Location": "http://10.0.0.5/internal"})

    client = SoracomClient(
        base_url="https://x.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(redirecting)
    )
    with pytest.raises(UnsafeDownloadUrlError, match=r"http://10.0.0.5"):
        client.download(PRESIGNED, io.BytesIO())
    assert fetched == ["soracom-billing.s3.ap-northeast-1.amazonaws.com"]
