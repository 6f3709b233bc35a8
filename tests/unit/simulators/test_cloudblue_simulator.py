"""The CloudBlue simulator is faithful to the charge import facts soracharge relies on (shared/DESIGN.md section 3).

Each test starts its own simulator on loopback and talks to it with httpx, signing requests with
oauthlib exactly as the client under test does: ``Client(key, client_secret=..., signature_method=
SIGNATURE_HMAC_SHA1).sign(url, method, body=None, headers=...)``, the JSON body sent beside the
signature. Session processing runs on a fake monotonic clock; OAuth timestamps are checked against a wall
clock a test may pin, and a slowed answer is held until the test releases it: no test waits for real time to
pass or races a real delay.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import simplejson
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client  # type: ignore[import-untyped, unused-ignore]
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator
from soracharge_local.simulators.aps_type import APS_TYPE

from tests.unit.simulators.held import HeldAnswers

TYPE_ID = "http://com.odin.rating/charges-import-manager/1.0"
RESOURCE_ID = "5f0e9a8c-7d1b-4c2e-9a6f-3b8d2e1c0a47"
CONSUMER_KEY = "soracharge-sim"
CONSUMER_SECRET = "sim-consumer-secret"
APS_TOKEN = "sim-aps-token"
SUBSCRIPTION = "0b6f3c52-1d4e-4a8b-9c7d-2e5f6a7b8c9d"
RESOURCE = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "apis"
#: The wall time a test pins the simulator's clock to (2026-09-21T14:13:20Z).
PINNED_WALL = 1_790_000_000
#: How long the test waits for a held answer to be reached (a broken simulator fails, it does not hang).
HELD_WITHIN_SECONDS = 30


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class WallClock:
    """The simulator's wall clock (what OAuth timestamps are checked against): the real time, or one the test pins."""

    def __init__(self) -> None:
        self.pinned: float | None = None

    def __call__(self) -> float:
        return time.time() if self.pinned is None else self.pinned


def charge(**overrides: Any) -> dict[str, Any]:
    """A valid Charge; ``None`` as an override removes the field."""
    base: dict[str, Any] = {
        "type": "COS",
        "subscriptionId": SUBSCRIPTION,
        "resourceId": RESOURCE,
        "unitPrice": Decimal("0.1"),
        "totalPrice": Decimal("1.5"),
        "amount": 15,
        "currencyCode": "JPY",
        "uom": "units",
        "chargeStartDate": "2026-10-01T00:00:00Z",
        "chargeEndDate": "2026-10-31T23:59:59Z",
        "description": "plan-D basic charge",
        "extChargeId": "202610:440101234567890:basic",
        "extHash": "hash-basic",
        "attributes": {"imsi": "440101234567890"},
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def json_body(value: Any) -> bytes:
    """JSON with Decimals written as exact numbers (as the client under test writes money)."""
    return simplejson.dumps(value, use_decimal=True).encode()


class Aps:
    """An APS client for the tests: every request signed with oauthlib (or sent with a token)."""

    def __init__(self, sim: CloudBlueSimulator, *, key: str = CONSUMER_KEY, secret: str = CONSUMER_SECRET) -> None:
        self.sim = sim
        self.root = f"{sim.base_url}/aps/2/resources/{sim.resource_id}"
        self.key = key
        self.secret = secret
        self.http = httpx.Client(timeout=5)

    def oauth(self, **extra: Any) -> Client:
        return Client(self.key, client_secret=self.secret, signature_method=SIGNATURE_HMAC_SHA1, **extra)

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        client: Client | None = None,
        token: str | None = None,
        timeout: float | httpx.Timeout = 5,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = body if isinstance(body, bytes) else json_body(body)
        if token is not None:
            headers["APS-Token"] = token
            return self.http.request(method, url, headers=headers, content=content, timeout=timeout)
        uri, signed, _ = (client or self.oauth()).sign(url, method, body=None, headers=headers)
        return self.http.request(method, uri, headers=signed, content=content, timeout=timeout)

    def discover(self, query: str) -> httpx.Response:
        return self.request("GET", f"{self.sim.base_url}/aps/2/resources?{query}")

    def open_session(self) -> int:
        response = self.request("POST", f"{self.root}/importSessions")
        assert response.status_code == 200, response.text
        return int(response.json()["importSessionId"])

    def import_charges(self, session_id: Any, charges: list[Any], **kwargs: Any) -> httpx.Response:
        return self.request(
            "POST", f"{self.root}/charges", {"importSessionId": session_id, "charges": charges}, **kwargs
        )

    def close(self, session_id: int) -> httpx.Response:
        return self.request("PUT", f"{self.root}/importSessions/{session_id}")

    def get(self, session_id: int | str) -> httpx.Response:
        return self.request("GET", f"{self.root}/importSessions/{session_id}")

    def by_status(self, query: str = "") -> httpx.Response:
        return self.request("GET", f"{self.root}/importSessions{query}")


def assert_aps_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """``response`` is an APS error body with ``status``; its message holds every fragment."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status
    assert body["type"].endswith("Exception")
    message = str(body["message"])
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def sim(clock: FakeClock, wall: WallClock) -> Iterator[CloudBlueSimulator]:
    with CloudBlueSimulator(processing_seconds=10, clock=clock, wall_clock=wall) as simulator:
        yield simulator


@pytest.fixture
def aps(sim: CloudBlueSimulator) -> Iterator[Aps]:
    client = Aps(sim)
    yield client
    client.http.close()


# -- discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(f"implementing({TYPE_ID})", id="as-written"),
        pytest.param("implementing%28http%3A%2F%2Fcom.odin.rating%2Fcharges-import-manager%2F1.0%29", id="encoded"),
    ],
)
def test_discovery_answers_a_one_element_array_with_the_resource_id(aps: Aps, query: str) -> None:
    # When looking up the resource implementing the ChargesImportManager type (an RQL query, signed)
    response = aps.discover(query)

    # Then the answer is a JSON array of one resource, whose aps.id is the configured one
    assert response.status_code == 200, response.text
    assert response.json() == [{"aps": {"id": RESOURCE_ID, "type": TYPE_ID, "status": "aps:ready"}}]


def test_discovery_of_another_type_is_an_empty_array_and_bad_rql_a_400(aps: Aps) -> None:
    assert aps.discover("implementing(http://com.odin.rating/other-type/1.0)").json() == []
    assert aps.discover(f"implementing({TYPE_ID}),limit(0,1)").json()[0]["aps"]["id"] == RESOURCE_ID
    assert_aps_error(aps.discover("implementing(unclosed"), 400, "RQL")


def test_an_unknown_resource_id_is_a_404(aps: Aps, sim: CloudBlueSimulator) -> None:
    response = aps.request(
        "POST", f"{sim.base_url}/aps/2/resources/00000000-0000-4000-8000-000000000000/importSessions"
    )
    assert_aps_error(response, 404, "00000000-0000-4000-8000-000000000000")
    assert sim.sessions() == []


# -- authentication -----------------------------------------------------------------------------


def test_a_request_signed_with_oauthlib_is_accepted_and_recorded_without_its_signature(
    aps: Aps, sim: CloudBlueSimulator
) -> None:
    # When opening a session with an OAuth 1.0a two-legged HMAC-SHA1 signature
    session_id = aps.open_session()

    # Then it worked, and the record says OAuth was used but shows no signature
    assert sim.session(session_id).status == "OPEN"
    recorded = sim.requests[-1]
    assert (recorded.operation, recorded.status, recorded.auth) == ("openSession", 200, "oauth")
    assert recorded.headers["authorization"] == "OAuth <redacted>"


@pytest.mark.parametrize(
    ("key", "secret", "extra", "reason"),
    [
        pytest.param(CONSUMER_KEY, "wrong-secret", {}, "signature", id="wrong-secret"),
        pytest.param("someone-else", CONSUMER_SECRET, {}, "consumer key", id="unknown-key"),
        pytest.param(CONSUMER_KEY, CONSUMER_SECRET, {"timestamp": -310}, "timestamp", id="stale"),
        pytest.param(CONSUMER_KEY, CONSUMER_SECRET, {"timestamp": +310}, "timestamp", id="future"),
        pytest.param(CONSUMER_KEY, CONSUMER_SECRET, {"resource_owner_key": "tok"}, "oauth_token", id="three-legged"),
    ],
)
def test_bad_oauth_is_a_401_aps_error(
    aps: Aps, sim: CloudBlueSimulator, wall: WallClock, key: str, secret: str, extra: dict[str, Any], reason: str
) -> None:
    # When signing with a wrong secret, an unknown key, a timestamp over 300 s off (the simulator's wall clock
    # pinned: how long the request takes changes nothing) or a token
    if "timestamp" in extra:
        wall.pinned = PINNED_WALL
        extra = {"timestamp": str(PINNED_WALL + extra["timestamp"])}
    client = Client(key, client_secret=secret, signature_method=SIGNATURE_HMAC_SHA1, **extra)
    response = aps.request("POST", f"{aps.root}/importSessions", client=client)

    # Then the endpoint refuses it with an APS error, and opens nothing
    assert_aps_error(response, 401, reason)
    assert sim.sessions() == []


@pytest.mark.parametrize("skew", [-290, 290])
def test_a_timestamp_within_300_seconds_is_accepted(aps: Aps, wall: WallClock, skew: int) -> None:
    wall.pinned = PINNED_WALL  # how long the request takes changes nothing
    client = aps.oauth(timestamp=str(PINNED_WALL + skew))
    assert aps.request("POST", f"{aps.root}/importSessions", client=client).status_code == 200


def test_a_replayed_nonce_is_refused(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given two requests signed with the same nonce
    first = aps.request("POST", f"{aps.root}/importSessions", client=aps.oauth(nonce="n0nce-1234567890"))
    second = aps.request("POST", f"{aps.root}/importSessions", client=aps.oauth(nonce="n0nce-1234567890"))

    # Then only the first one counts
    assert first.status_code == 200
    assert_aps_error(second, 401, "nonce")
    assert len(sim.sessions()) == 1


def test_the_signature_covers_method_path_and_query(aps: Aps) -> None:
    # Given a request signed for one URL and method
    uri, headers, _ = aps.oauth().sign(f"{aps.root}/importSessions?status=OPEN", "GET", body=None, headers={})

    # When sending it to another query, or with another method
    other_query = aps.http.get(uri.replace("status=OPEN", "status=NEW"), headers=headers)
    uri, headers, _ = aps.oauth().sign(f"{aps.root}/importSessions", "GET", body=None, headers={})
    other_method = aps.http.post(uri, headers=headers)

    # Then the signature does not match
    assert_aps_error(other_query, 401, "signature")
    assert_aps_error(other_method, 401, "signature")


def test_a_body_hash_from_oauthlib_is_checked_against_the_body(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given a client that signs the JSON body too (oauthlib then adds oauth_body_hash)
    session_id = aps.open_session()
    body = json_body({"importSessionId": session_id, "charges": [charge()]}).decode()
    headers = {"Content-Type": "application/json"}
    uri, signed, _ = aps.oauth().sign(f"{aps.root}/charges", "POST", body=body, headers=headers)
    assert "oauth_body_hash" in signed["Authorization"]

    # When sending that body, and another body under the same kind of signature
    accepted = aps.http.post(uri, headers=signed, content=body)
    uri, signed, _ = aps.oauth().sign(f"{aps.root}/charges", "POST", body=body, headers=headers)
    tampered = aps.http.post(uri, headers=signed, content=body.replace("1.5", "9.5"))

    # Then only the body that was hashed is accepted
    assert accepted.status_code == 200, accepted.text
    assert_aps_error(tampered, 401, "body")
    assert [c["totalPrice"] for c in sim.charges(session_id)] == [Decimal("1.5")]


def test_requests_without_credentials_or_with_another_scheme_are_401(aps: Aps) -> None:
    assert_aps_error(aps.http.post(f"{aps.root}/importSessions"), 401)
    basic = aps.http.post(f"{aps.root}/importSessions", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_aps_error(basic, 401, "OAuth")


def test_the_aps_token_is_accepted_until_it_expires(clock: FakeClock, aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given the simulator's token, valid 1800 s
    url = f"{aps.root}/importSessions"

    # When using it at once, with a wrong value, just before and at its expiry
    at_once = aps.request("POST", url, token=APS_TOKEN)
    wrong = aps.request("POST", url, token="forged")
    clock.now += 1799
    before = aps.request("GET", url, token=APS_TOKEN)
    clock.now += 1
    after = aps.request("GET", url, token=APS_TOKEN)

    # Then it works until its life ends, and a wrong token never does
    assert at_once.status_code == 200
    assert sim.requests[0].auth == "token"
    assert sim.requests[0].headers["aps-token"] == "<redacted>"
    assert_aps_error(wrong, 401, "token")
    assert before.status_code == 200
    assert_aps_error(after, 401, "expired")


def test_expire_tokens_stops_the_token_until_it_is_renewed(aps: Aps, sim: CloudBlueSimulator) -> None:
    url = f"{aps.root}/importSessions"
    assert aps.request("GET", url, token=APS_TOKEN).status_code == 200
    sim.expire_tokens()
    assert_aps_error(aps.request("GET", url, token=APS_TOKEN), 401)
    assert aps.request("GET", url).status_code == 200  # OAuth is not affected
    assert sim.renew_token() == APS_TOKEN
    assert aps.request("GET", url, token=APS_TOKEN).status_code == 200
    assert sim.renew_token("fresh-token") == "fresh-token"
    assert_aps_error(aps.request("GET", url, token=APS_TOKEN), 401)
    assert aps.request("GET", url, token="fresh-token").status_code == 200


def test_auth_mode_oauth_refuses_tokens_and_token_mode_refuses_oauth() -> None:
    for mode, refused in (("oauth", "token"), ("token", "oauth")):
        with CloudBlueSimulator(auth=mode) as sim:  # type: ignore[arg-type]
            aps = Aps(sim)
            url = f"{aps.root}/importSessions"
            by_token = aps.request("GET", url, token=APS_TOKEN)
            by_oauth = aps.request("GET", url)
            accepted, refused_response = (by_oauth, by_token) if refused == "token" else (by_token, by_oauth)
            assert accepted.status_code == 200, mode
            assert_aps_error(refused_response, 401, "not enabled")


def test_a_bad_token_beside_a_good_signature_is_still_refused(aps: Aps) -> None:
    uri, headers, _ = aps.oauth().sign(f"{aps.root}/importSessions", "GET", body=None, headers={})
    assert_aps_error(aps.http.get(uri, headers={**headers, "APS-Token": "forged"}), 401)


def test_no_secret_reaches_the_logs(aps: Aps, caplog: pytest.LogCaptureFixture) -> None:
    # Given logs captured at every level
    caplog.set_level(logging.DEBUG)

    # When calling with both kinds of credentials, good and bad
    aps.open_session()
    aps.request("GET", f"{aps.root}/importSessions", token=APS_TOKEN)
    aps.request("GET", f"{aps.root}/importSessions", token="wrong-token-value")

    # Then neither the consumer secret nor a token appears in any simulator log line
    simulator_lines = [r.getMessage() for r in caplog.records if r.name.startswith("soracharge_local")]
    assert simulator_lines
    for line in simulator_lines:
        assert CONSUMER_SECRET not in line
        assert APS_TOKEN not in line
        assert "wrong-token-value" not in line


# -- session lifecycle --------------------------------------------------------------------------


def test_a_session_goes_open_new_processing_processed(clock: FakeClock, aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given an open session that receives two packets
    response = aps.request("POST", f"{aps.root}/importSessions")
    opened = response.json()
    assert opened["status"] == "OPEN"
    assert isinstance(opened["importSessionId"], int)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", opened["lastUpdateTime"])
    session_id = opened["importSessionId"]
    first = aps.import_charges(session_id, [charge(extHash="a"), charge(extHash="b")])
    second = aps.import_charges(session_id, [charge(extHash="c")])
    assert (first.status_code, first.content, second.status_code) == (200, b"", 200)
    assert aps.get(session_id).json()["status"] == "OPEN"

    # When it is closed, and time passes (processing takes 10 s)
    closed = aps.close(session_id)
    statuses = [aps.get(session_id).json()["status"]]
    for step in (4.9, 0.1, 4.9, 0.1):
        clock.now += step
        statuses.append(aps.get(session_id).json()["status"])

    # Then closeSession answers 200 with no body, and the session moves NEW -> PROCESSING -> PROCESSED
    assert (closed.status_code, closed.content) == (200, b"")
    assert statuses == ["NEW", "NEW", "PROCESSING", "PROCESSING", "PROCESSED"]
    view = sim.session(session_id)
    assert (view.status, view.errorDesc, view.packets_accepted, len(view.charges)) == ("PROCESSED", None, 2, 3)
    assert [c["extHash"] for c in view.charges] == ["a", "b", "c"]
    assert view.closed_at == 1000.0
    assert "errorDesc" not in aps.get(session_id).json()


def test_fail_processing_ends_a_session_failed_processed_with_its_error(
    clock: FakeClock, aps: Aps, sim: CloudBlueSimulator
) -> None:
    # Given a session closed while the rating engine is set to fail
    session_id = aps.open_session()
    aps.import_charges(session_id, [charge()])
    sim.faults.fail_processing = "Subscription 0b6f3c52 not found"
    aps.close(session_id)

    # When processing is over
    clock.now += 10
    info = aps.get(session_id).json()

    # Then the session is FAILED_PROCESSED and says why; a session closed later without the fault succeeds
    assert info["status"] == "FAILED_PROCESSED"
    assert info["errorDesc"] == "Subscription 0b6f3c52 not found"
    sim.faults.fail_processing = None
    other = aps.open_session()
    aps.close(other)
    clock.now += 10
    assert sim.session(other).status == "PROCESSED"


def test_processing_seconds_zero_is_processed_at_once() -> None:
    with CloudBlueSimulator() as sim:
        aps = Aps(sim)
        session_id = aps.open_session()
        aps.import_charges(session_id, [charge()])
        aps.close(session_id)
        assert aps.get(session_id).json()["status"] == "PROCESSED"


def test_get_session_by_status_filters_and_limits(clock: FakeClock, aps: Aps) -> None:
    # Given three open sessions and two closed ones
    ids = [aps.open_session() for _ in range(5)]
    aps.close(ids[0])
    aps.close(ids[1])

    # When listing by status, with and without a limit
    everything = aps.by_status().json()
    open_ones = aps.by_status("?status=OPEN").json()
    limited = aps.by_status("?status=OPEN&limit=2").json()
    new_ones = aps.by_status("?status=NEW&limit=10").json()

    # Then the filter and limit apply, and every item is an ImportSessionInfo
    assert [s["importSessionId"] for s in everything] == ids
    assert [s["importSessionId"] for s in open_ones] == ids[2:]
    assert [s["importSessionId"] for s in limited] == ids[2:4]
    assert [s["importSessionId"] for s in new_ones] == ids[:2]
    assert {s["status"] for s in new_ones} == {"NEW"}
    assert aps.by_status("?status=PROCESSED").json() == []
    assert_aps_error(aps.by_status("?status=DONE"), 400, "status")
    assert_aps_error(aps.by_status("?limit=-1"), 400, "limit")


def test_closing_twice_is_a_409_naming_the_status_and_changes_nothing(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given a closed session
    session_id = aps.open_session()
    aps.close(session_id)
    before = sim.session(session_id)

    # When closing it again
    again = aps.close(session_id)

    # Then it is a 409 naming its status, which stays as it was
    assert_aps_error(again, 409, "NEW")
    assert again.json()["type"] == "com.parallels.rating.exception.InvalidSessionStateException"
    assert sim.session(session_id) == before


def test_importing_into_a_closed_session_is_a_409_and_stores_nothing(aps: Aps, sim: CloudBlueSimulator) -> None:
    session_id = aps.open_session()
    aps.close(session_id)
    assert_aps_error(aps.import_charges(session_id, [charge()]), 409, "NEW")
    assert sim.charges() == []
    assert sim.session(session_id).packets_accepted == 0


def test_unknown_and_malformed_session_ids(aps: Aps) -> None:
    assert_aps_error(aps.get(999), 404, "999")
    assert_aps_error(aps.close(999), 404, "999")
    assert_aps_error(aps.import_charges(999, [charge()]), 404, "999")
    assert_aps_error(aps.get("abc"), 400, "sessionId")


# -- importCharges validation -------------------------------------------------------------------

REQUIRED = [
    "type",
    "subscriptionId",
    "resourceId",
    "totalPrice",
    "amount",
    "currencyCode",
    "chargeStartDate",
    "chargeEndDate",
]


@pytest.mark.parametrize("field", REQUIRED)
def test_a_charge_without_a_required_field_is_a_400_and_the_packet_is_not_stored(
    aps: Aps, sim: CloudBlueSimulator, field: str
) -> None:
    # Given a packet whose second charge lacks a required field
    session_id = aps.open_session()
    bad = charge(extHash="second")
    del bad[field]

    # When importing it
    response = aps.import_charges(session_id, [charge(), bad])

    # Then it is a 400 naming the charge and the field, and not even the valid first charge is stored
    assert_aps_error(response, 400, f"charges[1].{field}", "required")
    assert sim.charges() == []
    assert sim.session(session_id).packets_accepted == 0


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("totalPrice", "1.50", "expected a number"),
        ("amount", "15", "expected a number"),
        ("unitPrice", True, "expected a number"),
        ("duration", [1], "expected a number"),
        ("type", "NEW", "COS, CHARGE, MSRP"),
        ("type", "cos", "COS, CHARGE, MSRP"),
        ("chargeStartDate", "2026/10/01", "date"),
        ("chargeStartDate", "2026-10-01T00:00:00", "date"),  # no offset
        ("chargeEndDate", "2026-02-30", "date"),
        ("chargeEndDate", "20261031", "date"),
        ("chargeEndDate", "2026-09-30", "before chargeStartDate"),
        ("currencyCode", "jpy", "three upper-case letters"),
        ("currencyCode", "YEN!", "three upper-case letters"),
        ("subscriptionId", 42, "expected a string"),
        ("subscriptionId", "customer-1", "UUID"),
        ("resourceId", "", "empty"),
        ("description", 7, "expected a string"),
        ("attributes", ["imsi"], "expected an object"),
        ("totalPrice", None, "required"),
        ("colour", "blue", "unknown field"),
    ],
)
def test_a_charge_breaking_the_aps_type_is_a_400_naming_index_and_field(
    aps: Aps, sim: CloudBlueSimulator, field: str, value: Any, fragment: str
) -> None:
    # Given a packet whose third charge has one bad field
    session_id = aps.open_session()
    bad = charge(extHash="third")
    bad[field] = value

    # When importing it
    response = aps.import_charges(session_id, [charge(extHash="first"), charge(extHash="second"), bad])

    # Then the 400 names the charge index and the field, and nothing of the packet is stored
    assert_aps_error(response, 400, f"charges[2].{field}", fragment)
    assert response.json()["type"] == "com.parallels.rating.exception.ChargeValidationException"
    assert sim.charges() == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"importSessionId": 1, "charges": []}, "charges: must not be empty"),
        ({"importSessionId": "1", "charges": [charge()]}, "importSessionId: expected an integer"),
        ({"importSessionId": 1.0, "charges": [charge()]}, "importSessionId: expected an integer"),
        ({"importSessionId": True, "charges": [charge()]}, "importSessionId: expected an integer"),
        ({"charges": [charge()]}, "importSessionId: is required"),
        ({"importSessionId": 1}, "charges: is required"),
        ({"importSessionId": 1, "charges": {"0": charge()}}, "charges: expected an array"),
        ({"importSessionId": 1, "charges": ["COS"]}, "charges[0]: expected a Charge object"),
        ({"importSessionId": 1, "charges": [charge()], "dryRun": True}, "dryRun: unknown field"),
        ([charge()], "expected a ChargesPacket object"),
    ],
)
def test_a_malformed_packet_is_a_400(aps: Aps, sim: CloudBlueSimulator, body: Any, fragment: str) -> None:
    assert aps.open_session() == 1
    assert_aps_error(aps.request("POST", f"{aps.root}/charges", body), 400, fragment)
    assert sim.charges() == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"importSessionId": 1, "charges": [', "not valid JSON"),
        (b'{"importSessionId": 1, "importSessionId": 1, "charges": []}', "twice"),
        (b'{"importSessionId": 1, "charges": [{"totalPrice": NaN}]}', "NaN"),
        (b'{"importSessionId": 1, "charges": ["\xff"]}', "UTF-8"),
    ],
)
def test_a_body_that_is_not_strict_json_is_a_400(aps: Aps, content: bytes, fragment: str) -> None:
    aps.open_session()
    assert_aps_error(aps.request("POST", f"{aps.root}/charges", content), 400, fragment)


def test_a_body_that_is_not_declared_json_is_a_415(aps: Aps) -> None:
    session_id = aps.open_session()
    uri, headers, _ = aps.oauth().sign(f"{aps.root}/charges", "POST", body=None, headers={})
    response = aps.http.post(uri, headers=headers, content=json_body({"importSessionId": session_id, "charges": []}))
    assert_aps_error(response, 415, "application/json")


def test_the_validation_error_lists_every_problem(aps: Aps) -> None:
    session_id = aps.open_session()
    response = aps.import_charges(session_id, [charge(amount="1"), charge(currencyCode="yen")])
    assert_aps_error(response, 400, "charges[0].amount", "charges[1].currencyCode")


def test_dates_may_be_plain_days_or_date_times_with_offsets(aps: Aps, sim: CloudBlueSimulator) -> None:
    session_id = aps.open_session()
    charges = [
        charge(chargeStartDate="2026-10-01", chargeEndDate="2026-10-31", extHash="days"),
        charge(chargeStartDate="2026-10-01T09:00:00+09:00", chargeEndDate="2026-10-31T23:59:59.999Z", extHash="times"),
    ]
    assert aps.import_charges(session_id, charges).status_code == 200
    assert len(sim.charges(session_id)) == 2


def test_require_uuids_false_accepts_other_ids() -> None:
    with CloudBlueSimulator(require_uuids=False) as sim:
        aps = Aps(sim)
        session_id = aps.open_session()
        assert aps.import_charges(session_id, [charge(subscriptionId="1000123")]).status_code == 200


# -- money and repeated charges -----------------------------------------------------------------


def test_money_is_stored_as_exact_decimals(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given two charges of 0.1 and 0.2 (which floats cannot sum to 0.3) and a long integer price
    session_id = aps.open_session()
    big = Decimal("12345678901234567890.123456789")
    charges = [charge(totalPrice=Decimal("0.1"), extHash="a"), charge(totalPrice=Decimal("0.2"), extHash="b")]
    aps.import_charges(session_id, [*charges, charge(totalPrice=big, amount=3, extHash="c")])

    # When summing what was stored
    stored = sim.charges(session_id)
    total = sum((c["totalPrice"] for c in stored[:2]), Decimal(0))

    # Then the sum is exactly 0.3, every number is a Decimal, and nothing lost digits
    assert total == Decimal("0.3")
    assert all(isinstance(c[name], Decimal) for c in stored for name in ("totalPrice", "amount", "unitPrice"))
    assert stored[2]["totalPrice"] == big
    assert stored[2]["amount"] == Decimal(3)


def test_a_repeated_ext_hash_is_stored_again_as_cloudblue_may(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given a packet accepted once
    session_id = aps.open_session()
    packet = [charge(extHash="h1"), charge(extHash="h2")]
    aps.import_charges(session_id, packet)

    # When the same packet is sent again (a retry)
    again = aps.import_charges(session_id, packet)

    # Then CloudBlue holds it twice: nothing it publishes promises to drop a repeat
    assert again.status_code == 200
    view = sim.session(session_id)
    assert [c["extHash"] for c in view.charges] == ["h1", "h2", "h1", "h2"]
    assert view.duplicates_ignored == 0


def test_asked_to_be_kinder_it_ignores_a_repeated_ext_hash_within_a_session() -> None:
    with CloudBlueSimulator(ignore_repeated_ext_hash=True) as sim:
        aps = Aps(sim)
        session_id = aps.open_session()
        packet = [charge(extHash="h1"), charge(extHash="h2"), charge(extHash="")]
        aps.import_charges(session_id, packet)
        aps.import_charges(session_id, [*packet, charge(extHash="h3"), charge(extHash="h3")])
        view = sim.session(session_id)
        assert [c["extHash"] for c in view.charges] == ["h1", "h2", "", "", "h3"]
        assert view.duplicates_ignored == 3
        # And another session does not share the hashes
        other = aps.open_session()
        aps.import_charges(other, [charge(extHash="h1")])
        assert len(sim.charges(other)) == 1


def test_views_are_copies(aps: Aps, sim: CloudBlueSimulator) -> None:
    session_id = aps.open_session()
    aps.import_charges(session_id, [charge()])
    sim.charges(session_id)[0]["totalPrice"] = Decimal(999)
    assert sim.charges(session_id)[0]["totalPrice"] == Decimal("1.5")


# -- faults -------------------------------------------------------------------------------------


def test_server_error_next_answers_500_and_stores_nothing(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given the next two requests fail
    session_id = aps.open_session()
    sim.faults.server_error_next = 2

    # When importing three times
    answers = [aps.import_charges(session_id, [charge(extHash=f"h{i}")]) for i in range(3)]

    # Then two 500 APS errors, then success; only the third packet is stored
    assert [a.status_code for a in answers] == [500, 500, 200]
    assert_aps_error(answers[0], 500)
    assert [c["extHash"] for c in sim.charges()] == ["h2"]
    assert sim.faults.server_error_next == 0


def test_server_error_on_packets_fails_the_kth_import_requests(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given the 2nd and 4th importCharges requests of the simulator's life fail
    sim.faults.server_error_on_packets = [2, 4]
    session_id = aps.open_session()

    # When sending four packets
    answers = [aps.import_charges(session_id, [charge(extHash=f"p{i}")]).status_code for i in range(1, 5)]

    # Then those two answer 500 and store nothing; other operations are not counted
    assert answers == [200, 500, 200, 500]
    assert [c["extHash"] for c in sim.charges()] == ["p1", "p3"]
    assert sim.count("importCharges") == 4


def test_drop_after_processing_stores_the_packet_and_closes_the_connection(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given the next importCharges is processed and then its connection dropped
    session_id = aps.open_session()
    sim.faults.drop_after_processing_next = 1

    # When importing, the client sees a dropped connection, not an HTTP status
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        aps.import_charges(session_id, [charge(extHash="dropped")])

    # Then the packet was stored all the same, and the next import is answered normally
    assert [c["extHash"] for c in sim.charges()] == ["dropped"]
    recorded = sim.requests[-1]
    assert (recorded.operation, recorded.status, recorded.dropped) == ("importCharges", 200, True)
    assert aps.import_charges(session_id, [charge(extHash="next")]).status_code == 200
    assert sim.faults.drop_after_processing_next == 0


def test_slow_seconds_with_only_operation_delays_one_operation_after_doing_the_work() -> None:
    held = HeldAnswers()
    with CloudBlueSimulator(sleep=held) as sim:
        aps = Aps(sim)
        try:
            # Given importCharges answers late: held until the test releases it
            session_id = aps.open_session()
            sim.faults.slow_seconds = 0.3
            sim.faults.only_operation = "importCharges"

            # When the client gives up waiting for the answer
            with pytest.raises(httpx.ReadTimeout):
                aps.import_charges(session_id, [charge(extHash="late")], timeout=httpx.Timeout(5, read=0.05))

            # Then the packet was stored anyway, before the answer was held (the danger a retry must handle)
            assert held.holding.wait(HELD_WITHIN_SECONDS)
            assert [c["extHash"] for c in sim.charges()] == ["late"]
            # and other calls are not slowed: getSession is answered while importCharges's answer is still held
            assert aps.get(session_id).status_code == 200
            assert held.delays == [0.3]
            assert sim.fired["slow_seconds"] == 1
        finally:
            held.release()
            aps.http.close()


def test_only_operation_targets_server_errors(aps: Aps, sim: CloudBlueSimulator) -> None:
    sim.faults.only_operation = "closeSession"
    sim.faults.server_error_next = 1
    session_id = aps.open_session()
    assert aps.import_charges(session_id, [charge()]).status_code == 200
    assert aps.close(session_id).status_code == 500
    assert sim.session(session_id).status == "OPEN"
    assert aps.close(session_id).status_code == 200


def test_error_field_name_renames_the_message(aps: Aps, sim: CloudBlueSimulator) -> None:
    sim.faults.error_field_name = "error"
    body = aps.get(999).json()
    assert set(body) == {"code", "type", "error"}
    assert "999" in body["error"]


# -- gateway errors (502/504: sent, no answer known) ---------------------------------------------

OTHER_SUBSCRIPTION = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
GATEWAY_TITLES = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}


def assert_gateway_error(response: httpx.Response, status: int) -> None:
    """``response`` is the gateway's HTML page with ``status``, not an APS error."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "text/html"
    assert response.text.startswith(f"<html>\r\n<head><title>{GATEWAY_TITLES[status]}</title></head>")
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_before_processing_is_an_html_page_and_stores_nothing(
    aps: Aps, sim: CloudBlueSimulator, status: int
) -> None:
    # Given the gateway answers the next importCharges itself, without passing it on
    session_id = aps.open_session()
    put = httpx.put(
        f"{sim.base_url}/_simulator/faults",
        json={"gateway_error_next": 1, "gateway_status": status, "only_operation": "importCharges"},
    )
    assert put.status_code == 200, put.text

    # When importing a packet, then the same packet again
    first = aps.import_charges(session_id, [charge(extHash="g1")])
    stored_after_first = sim.charges(session_id)
    retry = aps.import_charges(session_id, [charge(extHash="g1")])

    # Then the first answer is the gateway's HTML page and CloudBlue never saw it: the retry is stored once
    assert_gateway_error(first, status)
    assert stored_after_first == []
    assert retry.status_code == 200
    view = sim.session(session_id)
    assert ([c["extHash"] for c in view.charges], view.packets_accepted, view.duplicates_ignored) == (["g1"], 1, 0)
    assert sim.faults.gateway_error_next == 0
    assert sim.requests[-2].status == status


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_after_processing_stores_the_packet_but_loses_the_answer(
    aps: Aps, sim: CloudBlueSimulator, status: int
) -> None:
    # Given CloudBlue handles the next importCharges, and the gateway loses its answer on the way back
    session_id = aps.open_session()
    sim.faults.gateway_error_next = 1
    sim.faults.gateway_status = status
    sim.faults.gateway_after_processing = True

    # When importing a packet, then retrying it as a client that does not know the outcome
    first = aps.import_charges(session_id, [charge(extHash="g1")])
    stored_after_first = [c["extHash"] for c in sim.charges(session_id)]
    retry = aps.import_charges(session_id, [charge(extHash="g1")])

    # Then the client saw the gateway's error, but the packet was stored; the retry stores it again (a double)
    assert_gateway_error(first, status)
    assert stored_after_first == ["g1"]
    assert retry.status_code == 200
    view = sim.session(session_id)
    assert ([c["extHash"] for c in view.charges], view.packets_accepted) == (["g1", "g1"], 2)


@pytest.mark.parametrize(("after_processing", "stored"), [(False, []), (True, ["s1"])])
def test_a_server_error_before_or_after_processing_answers_the_same_500(
    aps: Aps, sim: CloudBlueSimulator, after_processing: bool, stored: list[str]
) -> None:
    session_id = aps.open_session()
    sim.faults.server_error_next = 1
    sim.faults.server_error_after_processing = after_processing

    answer = aps.import_charges(session_id, [charge(extHash="s1")])

    assert answer.status_code == 500
    assert answer.json()["type"] == "com.parallels.rating.exception.RatingEngineException"
    assert [c["extHash"] for c in sim.charges(session_id)] == stored
    assert sim.fired["server_error_next"] == 1


@pytest.mark.parametrize("status", [503, 429])
def test_a_503_or_a_429_says_it_did_not_take_the_request_even_after_processing_was_asked(
    aps: Aps, sim: CloudBlueSimulator, status: int
) -> None:
    session_id = aps.open_session()
    sim.faults.server_error_next = 1
    sim.faults.server_error_status = status
    sim.faults.server_error_after_processing = True

    answer = aps.import_charges(session_id, [charge(extHash="s1")])

    assert answer.status_code == status
    assert answer.headers["Retry-After"] == "1"
    assert sim.charges(session_id) == []


@pytest.mark.parametrize(("after_processing", "status_seen"), [(False, "OPEN"), (True, "NEW")])
def test_a_gateway_error_on_close_session_closes_it_only_after_processing(
    aps: Aps, sim: CloudBlueSimulator, after_processing: bool, status_seen: str
) -> None:
    session_id = aps.open_session()
    sim.faults.only_operation = "closeSession"
    sim.faults.gateway_error_next = 1
    sim.faults.gateway_after_processing = after_processing
    assert_gateway_error(aps.close(session_id), 502)
    assert aps.get(session_id).json()["status"] == status_seen


def test_gateway_error_next_counts_down_and_only_operation_targets_it(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given the next two API requests, whatever the operation, meet the gateway
    sim.faults.gateway_error_next = 2

    # When opening sessions three times
    answers = [aps.request("POST", f"{aps.root}/importSessions") for _ in range(3)]

    # Then two gateway errors and one session opened
    assert [a.status_code for a in answers] == [502, 502, 200]
    assert len(sim.sessions()) == 1
    assert sim.faults.gateway_error_next == 0

    # And restricted to getSession, other operations pass while the counter waits
    sim.faults.only_operation = "getSession"
    sim.faults.gateway_error_next = 1
    session_id = aps.open_session()
    assert aps.import_charges(session_id, [charge()]).status_code == 200
    assert sim.faults.gateway_error_next == 1
    assert_gateway_error(aps.get(session_id), 502)
    assert aps.get(session_id).status_code == 200


def test_gateway_faults_are_validated_over_http(sim: CloudBlueSimulator) -> None:
    with httpx.Client(base_url=f"{sim.base_url}/_simulator") as control:
        # When setting a gateway status other than 502 or 504, or a bad flag or counter
        refused = [
            control.put("/faults", json=bad)
            for bad in (
                {"gateway_status": 503},
                {"gateway_status": "504"},
                {"gateway_status": True},
                {"gateway_after_processing": "yes"},
                {"gateway_error_next": -1},
                {"gateway_error_next": 1, "gateway_status": 500},
            )
        ]

        # Then each is a 400 saying what is wrong, and nothing changed
        assert [r.status_code for r in refused] == [400] * len(refused)
        assert refused[0].json()["message"] == "gateway_status must be 502 or 504, not 503"
        assert "true or false" in refused[3].json()["message"]
        assert sim.faults == CloudBlueFaults()

        # And valid values are merged, and DELETE turns them off
        body = {"gateway_error_next": 3, "gateway_status": 504, "gateway_after_processing": True}
        assert control.put("/faults", json=body).json() | body == control.get("/faults").json()
        assert (sim.faults.gateway_error_next, sim.faults.gateway_status, sim.faults.gateway_after_processing) == (
            3,
            504,
            True,
        )
        control.delete("/faults")
        assert sim.faults == CloudBlueFaults()


# -- inactive subscriptions (a FAILED_PROCESSED fixed in CloudBlue) -----------------------------


def close_and_process(aps: Aps, clock: FakeClock, charges: list[dict[str, Any]]) -> int:
    """Open a session, import ``charges``, close it and let processing finish; its id."""
    session_id = aps.open_session()
    assert aps.import_charges(session_id, charges).status_code == 200
    assert aps.close(session_id).status_code == 200
    clock.now += 10
    return session_id


def test_an_inactive_subscription_fails_sessions_closed_until_it_is_activated(
    clock: FakeClock, aps: Aps, sim: CloudBlueSimulator
) -> None:
    # Given a session closed before anything changed, then a subscription made inactive in CloudBlue
    closed_before = aps.open_session()
    aps.import_charges(closed_before, [charge(extHash="before")])
    aps.close(closed_before)
    sim.deactivate_subscription(SUBSCRIPTION)

    # When a session with one of its charges is closed, and one without any
    failed = close_and_process(
        aps, clock, [charge(subscriptionId=OTHER_SUBSCRIPTION, extHash="a"), charge(extHash="b")]
    )
    unaffected = close_and_process(aps, clock, [charge(subscriptionId=OTHER_SUBSCRIPTION, extHash="c")])

    # Then the first ends FAILED_PROCESSED naming the subscription; the others are rated
    info = aps.get(failed).json()
    assert (info["status"], info["errorDesc"]) == ("FAILED_PROCESSED", f"Subscription {SUBSCRIPTION} is not active")
    assert aps.get(unaffected).json()["status"] == "PROCESSED"
    assert aps.get(closed_before).json()["status"] == "PROCESSED"  # decided at close

    # And resetting the faults does not fix CloudBlue's configuration
    sim.faults = CloudBlueFaults()
    assert httpx.delete(f"{sim.base_url}/_simulator/faults").status_code == 200
    assert sim.inactive_subscriptions == frozenset({SUBSCRIPTION})
    still_failing = close_and_process(aps, clock, [charge(extHash="d")])
    assert aps.get(still_failing).json()["status"] == "FAILED_PROCESSED"

    # When the subscription is activated (the fix in CloudBlue) and the charges are sent in a new session
    sim.activate_subscription(SUBSCRIPTION)
    fixed = close_and_process(aps, clock, [charge(subscriptionId=OTHER_SUBSCRIPTION, extHash="a"), charge(extHash="b")])

    # Then the new session is PROCESSED while the old one stays FAILED_PROCESSED
    assert sim.inactive_subscriptions == frozenset()
    fixed_info = aps.get(fixed).json()
    assert (fixed_info["status"], "errorDesc" in fixed_info) == ("PROCESSED", False)
    assert sim.session(failed).status == "FAILED_PROCESSED"
    assert sim.session(failed).errorDesc == f"Subscription {SUBSCRIPTION} is not active"


def test_the_first_inactive_subscription_in_charge_order_is_named(
    clock: FakeClock, aps: Aps, sim: CloudBlueSimulator
) -> None:
    sim.deactivate_subscription(SUBSCRIPTION)
    sim.deactivate_subscription(OTHER_SUBSCRIPTION)
    session_id = close_and_process(
        aps, clock, [charge(subscriptionId=OTHER_SUBSCRIPTION, extHash="a"), charge(extHash="b")]
    )
    assert aps.get(session_id).json()["errorDesc"] == f"Subscription {OTHER_SUBSCRIPTION} is not active"


def test_fail_processing_wins_over_an_inactive_subscription(
    clock: FakeClock, aps: Aps, sim: CloudBlueSimulator
) -> None:
    sim.deactivate_subscription(SUBSCRIPTION)
    sim.faults.fail_processing = "Rating engine unavailable"
    session_id = close_and_process(aps, clock, [charge()])
    info = aps.get(session_id).json()
    assert (info["status"], info["errorDesc"]) == ("FAILED_PROCESSED", "Rating engine unavailable")
    assert sim.fired == {"fail_processing": 1}


def test_subscriptions_are_listed_and_switched_over_http(clock: FakeClock, aps: Aps, sim: CloudBlueSimulator) -> None:
    with httpx.Client(base_url=f"{sim.base_url}/_simulator") as control:
        # Given no subscription is inactive
        assert control.get("/subscriptions").json() == {"inactive": []}

        # When two are deactivated over HTTP and one activated again
        off = control.put(f"/subscriptions/{SUBSCRIPTION}", json={"active": False})
        control.put(f"/subscriptions/{OTHER_SUBSCRIPTION}", json={"active": False})
        listed = control.get("/subscriptions").json()
        on = control.put(f"/subscriptions/{OTHER_SUBSCRIPTION}", json={"active": True})

        # Then the list is sorted, and what is inactive fails sessions closed meanwhile
        assert off.json() == {"subscriptionId": SUBSCRIPTION, "active": False}
        assert listed == {"inactive": sorted([SUBSCRIPTION, OTHER_SUBSCRIPTION])}
        assert on.json() == {"subscriptionId": OTHER_SUBSCRIPTION, "active": True}
        assert control.get("/subscriptions").json() == {"inactive": [SUBSCRIPTION]}
        session_id = close_and_process(aps, clock, [charge()])
        assert aps.get(session_id).json()["errorDesc"] == f"Subscription {SUBSCRIPTION} is not active"

        # And bodies other than {"active": true|false} are 400s naming what is wrong
        for bad, fragment in (
            ({}, '"active" is missing'),
            ({"active": "false"}, '"active" must be true or false, not "false"'),
            ({"active": None}, '"active" must be true or false, not null'),
            ({"active": True, "reason": "fixed"}, "unknown field(s) reason"),
            ([False], "not a JSON object"),
        ):
            response = control.put(f"/subscriptions/{SUBSCRIPTION}", json=bad)
            assert response.status_code == 400, bad
            assert fragment in response.json()["message"], response.json()
        assert control.put(f"/subscriptions/{SUBSCRIPTION}", content=b"{").status_code == 400
        assert sim.inactive_subscriptions == frozenset({SUBSCRIPTION})


# -- faults that fired --------------------------------------------------------------------------


def test_fired_counts_faults_that_fired_not_faults_armed(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given faults armed more than they will be used, or aimed at an operation not called
    session_id = aps.open_session()
    sim.faults.server_error_next = 5
    sim.faults.drop_after_processing_next = 3
    sim.faults.server_error_on_packets = [9]

    # When making two requests, then the server errors are lifted and a slowed operation is not called
    answers = [aps.get(session_id).status_code for _ in range(2)]
    sim.faults.server_error_next = 0
    sim.faults.slow_seconds = 5
    sim.faults.only_operation = "closeSession"
    aps.get(session_id)

    # Then only the two server errors fired
    assert answers == [500, 500]
    assert sim.fired == {"server_error_next": 2}
    assert sim.fired["slow_seconds"] == 0
    assert sim.fired["drop_after_processing_next"] == 0


def test_fired_counts_every_kind_of_fault_once_per_changed_outcome(
    clock: FakeClock, aps: Aps, sim: CloudBlueSimulator
) -> None:
    # Given one of each fault, each used once
    session_id = aps.open_session()
    sim.faults.server_error_on_packets = [1]
    aps.import_charges(session_id, [charge(extHash="p1")])  # 500
    sim.faults.drop_after_processing_next = 1
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        aps.import_charges(session_id, [charge(extHash="p2")])
    sim.faults.gateway_error_next = 1
    aps.get(session_id)
    sim.faults.server_error_next = 1
    aps.get(session_id)
    sim.faults.slow_seconds = 0.01
    sim.faults.only_operation = "getSession"
    aps.get(session_id)
    sim.faults = CloudBlueFaults(fail_processing="Rating engine unavailable")
    close_and_process(aps, clock, [charge()])
    sim.faults = CloudBlueFaults()
    sim.deactivate_subscription(SUBSCRIPTION)
    close_and_process(aps, clock, [charge()])
    sim.expire_tokens()
    aps.request("GET", f"{aps.root}/importSessions", token=APS_TOKEN)
    aps.request("GET", f"{aps.root}/importSessions", token="forged")  # not expired: not counted

    # Then each counted once
    assert sim.fired == {
        "server_error_on_packets": 1,
        "drop_after_processing_next": 1,
        "gateway_error_next": 1,
        "server_error_next": 1,
        "slow_seconds": 1,
        "fail_processing": 1,
        "inactive_subscription": 1,
        "expired_token": 1,
    }


def test_fired_is_a_copy_served_over_http_and_cleared(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given two gateway errors that fired
    sim.faults.gateway_error_next = 2
    aps.request("GET", f"{aps.root}/importSessions")
    aps.request("GET", f"{aps.root}/importSessions")

    # When reading the counts, changing the copy, and reading them over HTTP
    fired = sim.fired
    fired["gateway_error_next"] = 99
    served = httpx.get(f"{sim.base_url}/_simulator/fired")

    # Then the simulator's counts are untouched, and they can be cleared in code or over HTTP
    assert served.json() == {"gateway_error_next": 2}
    assert sim.fired == {"gateway_error_next": 2}
    sim.clear_fired()
    assert httpx.get(f"{sim.base_url}/_simulator/fired").json() == {}
    sim.faults.gateway_error_next = 1
    aps.request("GET", f"{aps.root}/importSessions")
    assert httpx.delete(f"{sim.base_url}/_simulator/fired").json() == {}
    assert sim.fired == {}


# -- HTTP control endpoints ---------------------------------------------------------------------


def test_faults_can_be_read_merged_and_reset_over_http(sim: CloudBlueSimulator) -> None:
    with httpx.Client(base_url=f"{sim.base_url}/_simulator") as control:
        # Given the faults are all off
        assert control.get("/faults").json() == CloudBlueFaults().to_json()

        # When fields are set over HTTP
        updated = control.put(
            "/faults",
            json={"server_error_on_packets": [3], "only_operation": "getSession", "error_field_name": "error"},
        )

        # Then they are merged into the live faults
        assert updated.status_code == 200
        assert sim.faults.server_error_on_packets == [3]
        assert sim.faults.only_operation == "getSession"
        assert sim.faults.error_field_name == "error"
        assert sim.faults.slow_seconds == 0

        # And bad updates are refused whole, and DELETE turns every fault off
        for bad in (
            {"no_such_fault": 1},
            {"server_error_next": -1},
            {"server_error_status": 502},
            {"server_error_after_processing": "yes"},
            {"server_error_on_packets": [0]},
            {"only_operation": "deleteEverything"},
            {"error_field_name": ""},
            {"slow_seconds": 1, "drop_after_processing_next": "1"},
            [1],
        ):
            assert control.put("/faults", json=bad).status_code == 400, bad
        assert sim.faults.slow_seconds == 0
        assert control.delete("/faults").json() == CloudBlueFaults().to_json()
        assert sim.faults == CloudBlueFaults()


def test_sessions_are_listed_over_http_with_exact_money(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given a session with a charge of 0.1
    session_id = aps.open_session()
    aps.import_charges(session_id, [charge(totalPrice=Decimal("0.1"))])

    # When listing sessions over HTTP
    response = httpx.get(f"{sim.base_url}/_simulator/sessions")

    # Then money is a JSON number written exactly, with the session's counters
    assert '"totalPrice": 0.1,' in response.text
    listed = response.json(parse_float=Decimal)["sessions"]
    assert listed[0]["importSessionId"] == session_id
    assert listed[0]["status"] == "OPEN"
    assert listed[0]["packetsAccepted"] == 1
    assert listed[0]["charges"][0]["totalPrice"] == Decimal("0.1")


def test_a_session_status_can_be_forced_over_http(aps: Aps, sim: CloudBlueSimulator) -> None:
    session_id = aps.open_session()
    forced = httpx.put(f"{sim.base_url}/_simulator/sessions/{session_id}", json={"status": "REPORTED"})
    assert forced.status_code == 200
    assert aps.get(session_id).json()["status"] == "REPORTED"
    assert httpx.put(f"{sim.base_url}/_simulator/sessions/{session_id}", json={"status": "DONE"}).status_code == 400
    assert httpx.put(f"{sim.base_url}/_simulator/sessions/99", json={"status": "NEW"}).status_code == 404


def test_recorded_requests_are_listed_over_http_without_credentials(aps: Aps, sim: CloudBlueSimulator) -> None:
    # Given an OAuth call and a token call
    aps.open_session()
    aps.request("GET", f"{aps.root}/importSessions", token=APS_TOKEN)

    # When listing the recorded requests
    listed = httpx.get(f"{sim.base_url}/_simulator/requests").json()["requests"]

    # Then each has its operation, status and auth, and no credential appears
    assert [(r["operation"], r["status"], r["auth"]) for r in listed] == [
        ("openSession", 200, "oauth"),
        ("getSessionByStatus", 200, "token"),
    ]
    assert listed[0]["rawTarget"] == f"/aps/2/resources/{RESOURCE_ID}/importSessions"
    assert APS_TOKEN not in json.dumps(listed)
    assert "oauth_signature" not in json.dumps(listed)
    assert sim.count("control") == 1
    assert httpx.delete(f"{sim.base_url}/_simulator/requests").json() == {"requests": []}


def test_tokens_can_be_expired_and_renewed_over_http(aps: Aps, sim: CloudBlueSimulator) -> None:
    url = f"{aps.root}/importSessions"
    assert httpx.post(f"{sim.base_url}/_simulator/expire-tokens").status_code == 200
    assert aps.request("GET", url, token=APS_TOKEN).status_code == 401
    assert httpx.post(f"{sim.base_url}/_simulator/renew-token").json()["token"] == APS_TOKEN
    assert aps.request("GET", url, token=APS_TOKEN).status_code == 200


def test_unknown_paths_and_methods_are_aps_errors(aps: Aps, sim: CloudBlueSimulator) -> None:
    assert_aps_error(aps.request("GET", f"{aps.root}/nothing"), 404)
    assert_aps_error(aps.request("DELETE", f"{aps.root}/importSessions/1"), 405)
    assert sim.count("unknown") == 2


def test_the_base_url_stays_readable_after_stop_and_start_refuses_twice() -> None:
    simulator = CloudBlueSimulator()
    with pytest.raises(RuntimeError):
        _ = simulator.base_url
    with simulator:
        url = simulator.base_url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with pytest.raises(RuntimeError):
            simulator.start()
    assert simulator.base_url == url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_simulator/faults")


def test_the_embedded_aps_type_is_the_reference_one() -> None:
    path = REFERENCE / "charges-import-manager.aps-type.json"
    assert path.is_file(), f"{path} is missing: CI and developers have ../shared beside the repository"
    assert json.loads(path.read_text()) == APS_TYPE


def test_the_module_runs_on_its_own_and_stops_on_ctrl_c() -> None:
    # Given the simulator started as `python -m ... --port 0`
    source_root = Path(__file__).resolve().parents[3] / "local"
    process = subprocess.Popen(
        [sys.executable, "-m", "soracharge_local.simulators.cloudblue", "--port", "0"],
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
        # When it is called, then it answers and printed what a client needs; Ctrl-C stops it cleanly
        printed = "".join(process.stdout.readline() for _ in range(5))
        assert f"APS_ENDPOINT={match.group(0)}\n" in printed
        assert f"APS_OAUTH_CONSUMER_KEY={CONSUMER_KEY}" in printed
        assert f"APS_OAUTH_CONSUMER_SECRET={CONSUMER_SECRET}" in printed
        assert f"APS_TOKEN={APS_TOKEN}" in printed
        response = httpx.get(
            f"{match.group(0)}/aps/2/resources?implementing({TYPE_ID})", headers={"APS-Token": APS_TOKEN}, timeout=5
        )
        assert response.json()[0]["aps"]["id"] == RESOURCE_ID
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_session_ids_list_every_session_oldest_first_as_its_views_do(aps: Aps, sim: CloudBlueSimulator) -> None:
    first, second = aps.open_session(), aps.open_session()
    aps.import_charges(second, [charge()])

    assert sim.session_ids() == [first, second]
    assert sim.session_ids() == [view.importSessionId for view in sim.sessions()]
