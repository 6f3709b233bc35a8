"""The real client against the Soracom simulator over loopback HTTP."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from datetime import date

import pytest
from pydantic import SecretStr
from soracharge.adapters.soracom import SoracomClient
from soracharge.errors import (
    BillNotFoundError,
    ExportDownloadError,
    SoracomAuthError,
    SoracomRateLimitedError,
    SoracomUnavailableError,
)
from soracharge.models.soracom import SoracomCredentials
from soracharge_local.simulators import SoracomFaults, SoracomSimulator

TODAY = date(2026, 11, 22)
KEY = SoracomCredentials(auth_key_id="keyId-unit", auth_key=SecretStr("secret-unit-never-logged"))


@pytest.fixture(scope="module")
def simulator() -> Iterator[SoracomSimulator]:
    with SoracomSimulator(today=TODAY, auth_key_id="keyId-unit", auth_key="secret-unit-never-logged") as sim:
        yield sim


@pytest.fixture
def soracom(simulator: SoracomSimulator) -> SoracomSimulator:
    simulator.faults = SoracomFaults()
    simulator.polls_until_ready = 1
    simulator.clear_requests()
    return simulator


def client(sim: SoracomSimulator, credentials: SoracomCredentials = KEY, **kwargs) -> SoracomClient:
    # The simulator serves its "pre-signed" URLs itself, on http://127.0.0.1.
    return SoracomClient(
        base_url=sim.base_url, credentials=lambda: credentials, download_url_patterns=("http://127.0.0.1",), **kwargs
    )


def test_the_whole_export_from_bill_to_bytes(soracom):
    api = client(soracom)
    bill = api.get_bill("202610")
    assert bill.state == "closed"
    assert bill.amount == soracom.bill("202610")["amount"]
    started = api.start_export("202610")
    assert api.get_exported_file(started.exportedFileId).status == "processing"
    ready = api.get_exported_file(started.exportedFileId)
    assert ready.status == "exported"
    assert ready.url is not None
    sink = io.BytesIO()
    downloaded = api.download(ready.url, sink)
    assert sink.getvalue() == soracom.csv_bytes("202610")
    assert downloaded.size == len(sink.getvalue())
    assert soracom.count("auth") == 1
    (download,) = [r for r in soracom.requests if r.kind == "download"]
    assert download.status == 200  # the signature over the raw URL verified: it was used byte for byte
    assert not {"x-soracom-api-key", "x-soracom-token"} & set(download.headers)


def test_a_temporary_bill_and_a_missing_month(soracom):
    api = client(soracom)
    assert api.get_bill("202611").state == "temporary"
    with pytest.raises(BillNotFoundError, match=r"no bill for 202001"):
        api.get_bill("202001")


def test_expired_tokens_are_renewed_once(soracom):
    api = client(soracom)
    api.get_bill("202610")
    soracom.expire_tokens()
    api.get_bill("202609")
    assert [r.kind for r in soracom.requests] == ["auth", "getBilling", "getBilling", "auth", "getBilling"]
    assert [r.status for r in soracom.requests][2] == 401


def test_wrong_credentials(soracom):
    wrong = SoracomCredentials(auth_key_id="keyId-unit", auth_key=SecretStr("nope"))
    with pytest.raises(SoracomAuthError, match=r"refused AuthKey keyId-unit \(HTTP 401"):
        client(soracom, wrong).get_bill("202610")


def test_rate_limiting_carries_the_simulators_hint(soracom):
    soracom.faults.rate_limit_next = 1
    soracom.faults.rate_limit_seconds = 17
    soracom.faults.only_kind = "getBilling"
    with pytest.raises(SoracomRateLimitedError) as raised:
        client(soracom).get_bill("202610")
    assert raised.value.retry_after_seconds == 17


def test_server_errors_in_json_and_plain_text(soracom):
    soracom.faults.server_error_next = 2
    soracom.faults.only_kind = "getBilling"
    api = client(soracom)
    messages = []
    for _ in range(2):
        with pytest.raises(SoracomUnavailableError) as raised:
            api.get_bill("202610")
        messages.append(str(raised.value))
    assert any("HTTP 500" in m for m in messages)
    assert any("HTTP 502" in m or "HTTP 503" in m for m in messages)
    assert api.get_bill("202610").state == "closed"


def test_a_slow_soracom_times_out_as_unavailable():
    # Given Soracom's slowed answers are held until the test releases them (the simulator's sleep): the
    # client's timeout always comes first, however fast or slow this machine is
    released = threading.Event()

    def hold(seconds: float) -> None:
        released.wait(60)  # only a bound for a test that failed before releasing it

    with SoracomSimulator(
        today=TODAY, auth_key_id="keyId-unit", auth_key="secret-unit-never-logged", sleep=hold
    ) as sim:
        sim.faults.slow_seconds = 0.5
        try:
            with pytest.raises(SoracomUnavailableError, match=r"Timeout"):
                client(sim, timeout_seconds=0.1).get_bill("202610")
        finally:
            released.set()


def test_a_truncated_download_is_unavailable_and_a_forbidden_one_is_a_download_error(soracom):
    api = client(soracom)
    started = api.start_export("202609")
    api.get_exported_file(started.exportedFileId)
    url = api.get_exported_file(started.exportedFileId).url
    assert url is not None
    soracom.faults.truncate_download = True
    with pytest.raises(SoracomUnavailableError, match=r"download from 127.0.0.1"):
        api.download(url, io.BytesIO())
    soracom.faults.truncate_download = False
    tampered = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200")
    with pytest.raises(ExportDownloadError, match=r"HTTP 403 \(SignatureDoesNotMatch\)"):
        api.download(tampered, io.BytesIO())


def test_no_secret_reaches_the_logs(soracom, caplog):
    caplog.set_level(logging.DEBUG)
    api = client(soracom)
    started = api.start_export("202610")
    api.get_exported_file(started.exportedFileId)
    url = api.get_exported_file(started.exportedFileId).url
    assert url is not None
    api.download(url, io.BytesIO())
    assert "secret-unit-never-logged" not in caplog.text
    assert "X-Amz-Signature" not in caplog.text
