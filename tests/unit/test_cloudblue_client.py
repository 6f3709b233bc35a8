"""The CloudBlue client: OAuth 1.0a and APS-Token against the simulator, discovery, errors, bounded retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr
from soracharge.adapters.cloudblue import ApsTokenAuth, CloudBlueClient, OAuth1TwoLegged
from soracharge.errors import CloudBlueApiError, CloudBlueAuthError, CloudBlueUnavailableError
from soracharge.models.charges import Charge, ChargesPacket
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator

SUBSCRIPTION = "0d4a4c1e-8e2b-4f3a-9a1b-2c3d4e5f6a7b"
RESOURCE = "7b6a5f4e-3d2c-4b1a-9f8e-7d6c5b4a3f2e"


@pytest.fixture(scope="module")
def simulator() -> Iterator[CloudBlueSimulator]:
    with CloudBlueSimulator() as sim:
        yield sim


@pytest.fixture
def cloudblue(simulator: CloudBlueSimulator) -> CloudBlueSimulator:
    simulator.faults = CloudBlueFaults()
    return simulator


def oauth(sim: CloudBlueSimulator, **kwargs) -> CloudBlueClient:
    auth = OAuth1TwoLegged(sim.consumer_key, SecretStr(sim.consumer_secret))
    return CloudBlueClient(endpoint=sim.base_url, auth=auth, max_wait_seconds=0.01, **kwargs)


def packet(session_id: int, total: str = "10.50", ext: str = "sc-202610-1") -> ChargesPacket:
    charge = Charge(
        type="COS",
        subscription_id=SUBSCRIPTION,
        resource_id=RESOURCE,
        total_price=Decimal(total),
        amount=Decimal("1"),
        currency_code="JPY",
        charge_start_date="2026-10-01T00:00:00Z",
        charge_end_date="2026-10-31T00:00:00Z",
        ext_charge_id=ext,
        ext_hash=f"hash-{ext}",
    )
    return ChargesPacket(import_session_id=session_id, charges=[charge])


def test_a_whole_session_with_oauth_and_a_discovered_resource(cloudblue):
    client = oauth(cloudblue)
    assert client.resource_id == cloudblue.resource_id
    session = client.open_session()
    assert session.status == "OPEN"
    delivery = client.import_charges(packet(session.import_session_id).to_json_bytes())
    assert delivery.attempts == 1
    client.close_session(session.import_session_id)
    assert client.get_session(session.import_session_id).status in ("NEW", "PROCESSING", "PROCESSED")
    (stored,) = cloudblue.charges(session.import_session_id)
    assert stored["totalPrice"] == Decimal("10.50")
    assert all(r.auth == "oauth" for r in cloudblue.requests if r.operation != "control")


def test_an_aps_token_works_and_an_expired_one_is_an_auth_error(cloudblue):
    client = CloudBlueClient(
        endpoint=cloudblue.base_url,
        auth=ApsTokenAuth(lambda: SecretStr(cloudblue.aps_token)),
        resource_id=cloudblue.resource_id,
    )
    assert client.open_session().status == "OPEN"
    cloudblue.expire_tokens()
    try:
        with pytest.raises(CloudBlueAuthError, match=r"openSession: CloudBlue refused the credentials \(HTTP 401"):
            client.open_session()
    finally:
        cloudblue.renew_token(cloudblue.aps_token)


def test_a_wrong_consumer_secret_is_an_auth_error_that_does_not_show_the_secret(cloudblue):
    client = CloudBlueClient(
        endpoint=cloudblue.base_url,
        auth=OAuth1TwoLegged(cloudblue.consumer_key, SecretStr("not-the-secret")),
        resource_id=cloudblue.resource_id,
    )
    with pytest.raises(CloudBlueAuthError) as raised:
        client.open_session()
    assert "not-the-secret" not in str(raised.value)


def test_server_errors_are_retried_a_bounded_number_of_times(cloudblue):
    client = oauth(cloudblue, max_attempts=3, resource_id=cloudblue.resource_id)
    cloudblue.faults.server_error_next = 2
    assert client.open_session().status == "OPEN"
    cloudblue.faults.server_error_next = 3
    before = cloudblue.count("openSession")
    with pytest.raises(CloudBlueUnavailableError, match=r"openSession: CloudBlue answered HTTP 500"):
        client.open_session()
    assert cloudblue.count("openSession") - before == 3


@pytest.mark.parametrize("status", [503, 429])
def test_a_packet_cloudblue_said_it_did_not_take_is_sent_again_byte_for_byte(cloudblue, status):
    client = oauth(cloudblue, resource_id=cloudblue.resource_id)
    session = client.open_session().import_session_id
    body = packet(session).to_json_bytes()
    cloudblue.faults.server_error_next = 1
    cloudblue.faults.server_error_status = status
    cloudblue.faults.only_operation = "importCharges"
    assert client.import_charges(body).attempts == 2
    sent = [r.body for r in cloudblue.requests if r.operation == "importCharges"][-2:]
    assert sent == [body, body]
    assert len(cloudblue.charges(session)) == 1


def test_a_packet_answered_500_after_cloudblue_stored_it_is_never_sent_again(cloudblue):
    # CloudBlue stored it, then answered 500: a 500 does not say it was not taken, so the client stops.
    client = oauth(cloudblue, resource_id=cloudblue.resource_id)
    session = client.open_session().import_session_id
    cloudblue.faults.server_error_next = 1
    cloudblue.faults.server_error_after_processing = True
    cloudblue.faults.only_operation = "importCharges"
    before = cloudblue.count("importCharges")
    with pytest.raises(CloudBlueUnavailableError, match=r"HTTP 500") as raised:
        client.import_charges(packet(session).to_json_bytes())
    assert raised.value.outcome_unknown is True
    assert cloudblue.count("importCharges") - before == 1
    assert len(cloudblue.charges(session)) == 1  # held once: never doubled by a retry


def test_a_packet_whose_outcome_is_unknown_is_not_resent(cloudblue):
    # CloudBlue stored it, then the connection dropped: resending could double it, so the client stops.
    client = oauth(cloudblue, resource_id=cloudblue.resource_id)
    session = client.open_session().import_session_id
    cloudblue.faults.drop_after_processing_next = 1
    before = cloudblue.count("importCharges")
    with pytest.raises(CloudBlueUnavailableError) as raised:
        client.import_charges(packet(session).to_json_bytes())
    assert raised.value.outcome_unknown is True
    assert cloudblue.count("importCharges") - before == 1
    assert len(cloudblue.charges(session)) == 1


@pytest.mark.parametrize(
    ("status", "unknown"), [(429, False), (503, False), (500, True), (501, True), (502, True), (504, True)]
)
def test_only_a_429_or_a_503_says_the_packet_was_not_taken(status, unknown):
    client = CloudBlueClient(
        endpoint="https://cb.test", auth=ApsTokenAuth(lambda: SecretStr("t")), resource_id="r", max_attempts=1,
        transport=httpx.MockTransport(lambda request: httpx.Response(status, text="gateway")),
    )  # fmt: skip
    with pytest.raises(CloudBlueUnavailableError) as raised:
        client.import_charges(b"{}")
    assert raised.value.outcome_unknown is unknown


def test_closing_a_session_a_lost_answer_already_closed_counts_as_closed(cloudblue):
    client = oauth(cloudblue, resource_id=cloudblue.resource_id)
    session = client.open_session().import_session_id
    client.close_session(session)
    client.close_session(session)  # the simulator answers 409: it is NEW already
    assert client.get_session(session).status != "OPEN"


def test_an_aps_validation_error_is_a_typed_api_error_naming_the_problem(cloudblue):
    client = oauth(cloudblue, resource_id=cloudblue.resource_id)
    session = client.open_session().import_session_id
    bad = json.loads(packet(session).to_json_bytes())
    bad["charges"][0]["totalPrice"] = "10.50"  # a string where the APS type says number
    with pytest.raises(CloudBlueApiError, match=r"importCharges: CloudBlue answered HTTP 400") as raised:
        client.import_charges(json.dumps(bad).encode())
    assert raised.value.status == 400
    assert "totalPrice" in str(raised.value)


@pytest.mark.parametrize("field", ["message", "error"])
def test_aps_error_bodies_are_read_whether_they_say_message_or_error(field):
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"code": 409, "type": "com.example.InvalidSessionStateException", field: "Session 7 is NEW, not OPEN"}
        return httpx.Response(409, json=body)

    client = CloudBlueClient(
        endpoint="https://cb.test", auth=ApsTokenAuth(lambda: SecretStr("t")), resource_id="r",
        transport=httpx.MockTransport(answer),
    )  # fmt: skip
    with pytest.raises(CloudBlueApiError, match=r"HTTP 409 InvalidSessionStateException: Session 7 is NEW") as raised:
        client.get_session(7)
    assert raised.value.aps_type == "com.example.InvalidSessionStateException"


@pytest.mark.parametrize("found", [[], [{"aps": {"id": "a"}}, {"aps": {"id": "b"}}]])
def test_discovery_needs_exactly_one_resource(found):
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path.endswith(b"?implementing(http://com.odin.rating/charges-import-manager/1.0)")
        return httpx.Response(200, json=found)

    client = CloudBlueClient(
        endpoint="https://cb.test", auth=ApsTokenAuth(lambda: SecretStr("t")), transport=httpx.MockTransport(answer)
    )
    with pytest.raises(CloudBlueApiError, match=rf"found {len(found)}: set APS_RESOURCE_ID"):
        client.open_session()


def test_a_timeout_after_sending_is_an_unknown_outcome():
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = CloudBlueClient(
        endpoint="https://cb.test", auth=ApsTokenAuth(lambda: SecretStr("t")), resource_id="r",
        max_attempts=2, max_wait_seconds=0.01, transport=httpx.MockTransport(slow),
    )  # fmt: skip
    with pytest.raises(CloudBlueUnavailableError) as raised:
        client.import_charges(b"{}")
    assert raised.value.outcome_unknown is True
