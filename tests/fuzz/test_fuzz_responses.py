"""Fuzz: Soracom and CloudBlue answering anything give a model or a typed error, never another exception.

Both clients run behind ``httpx.MockTransport``, which serves a scripted list of fuzzed answers
(status 100-599, arbitrary headers, random bytes, random JSON, JSON close to the real schema with
wrong types), in order, the last repeated. Downloads also check the sink holds exactly the bytes served.

The broad tests include the triggers of the bugs this fuzzing found (non-text charsets, undecodable
Content-Encoding, non-ASCII digits in headers, deep JSON, ids unsafe in a URL, non-ASCII tokens); the
regression tests at the end pin each one down with its minimal input.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pydantic import BaseModel, SecretStr
from soracharge.adapters.cloudblue import ApsTokenAuth, CloudBlueClient
from soracharge.adapters.soracom import DownloadedFile, SoracomClient
from soracharge.errors import (
    CloudBlueApiError,
    CloudBlueUnavailableError,
    ExportDownloadError,
    SorachargeError,
    SoracomApiError,
    SoracomRateLimitedError,
)
from soracharge.models.charges import ImportSessionInfo
from soracharge.models.soracom import ExportedFile, ExportStarted, MonthlyBill, SoracomCredentials

from tests.fuzz.strategies import JSON_SCALARS, JSON_VALUES, fuzz, mutated, raises_exactly

CREDENTIALS = SoracomCredentials(auth_key_id="keyId-fuzz", auth_key=SecretStr("secret-fuzz"))
DOWNLOAD_URL = "https://soracom-exports.s3.ap-northeast-1.amazonaws.com/fe_1.csv?X-Amz-Signature=abc"
DOWNLOAD_HOSTS = ["https://soracom-exports.s3.ap-northeast-1.amazonaws.com", "https://other.s3.amazonaws.com"]
RATE_LIMIT = "X-Soracom-Ratelimit-Seconds-Before-Refresh"
DECODERS = ("gzip", "deflate", "br", "zstd")

BILL = {"amount": 28734.56, "currency": "JPY", "state": "closed", "yearMonth": "202610"}
STARTED = {"exportedFileId": "fe_0123456789abcdef", "exportedFilePath": "/files/x.csv"}
EXPORTED = {"status": "exported", "url": DOWNLOAD_URL}
AUTH = {"apiKey": "api-1", "token": "token-1", "operatorId": "OP1"}
SESSION = {"importSessionId": 42, "status": "OPEN", "errorDesc": None, "lastUpdateTime": "2026-11-04T00:00:00Z"}
APS_ERROR = {"code": 409, "type": "com.odin.rating.InvalidSessionStateException", "message": "closed"}
SORACOM_ERROR = {"code": "AUM0001", "message": "bad"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def response(self) -> httpx.Response:
        # A stream, not content=: httpx would otherwise read the body (and set its length) itself.
        return httpx.Response(self.status, headers=list(self.headers), stream=httpx.ByteStream(self.body))


@dataclass
class Script:
    """Serves the answers in order (the last repeated); Soracom's /v1/auth answers ``auth`` first."""

    answers: list[Answer]
    auth: list[Answer] | None = None
    served: list[Answer] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth" and request.url.host == "api.soracom.test":
            if self.auth is None:
                return httpx.Response(200, json=AUTH)
            answer = self.auth.pop(0) if len(self.auth) > 1 else self.auth[0]
        else:
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.served.append(answer)
        return answer.response()


# -- strategies ---------------------------------------------------------------------------------


def near(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """JSON close to ``schema``: the schema itself, or with values of the wrong type, keys gone or added."""
    wrong: st.SearchStrategy[Any] = st.one_of(
        JSON_SCALARS, st.sampled_from([[], {}, "", "0", 1.5, -1, 2**64, "NaN", "1e999", None, True])
    )
    return st.one_of(st.just(schema), mutated(schema, wrong), st.lists(st.just(schema), max_size=2))


def json_body(schemas: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    values = st.one_of(JSON_VALUES, *(near(schema) for schema in schemas))
    return values.map(lambda value: json.dumps(value, allow_nan=True).encode())


def bodies(schemas: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=80),
        json_body(schemas),
        *(st.just(json.dumps(schema).encode()) for schema in schemas),
        st.sampled_from([b"", b"null", b"{", b"[]", b"{}", b"\xff\xfe{", b"<Error><Code>AccessDenied</Code></Error>"]),
        st.integers(500, 3_000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.text(max_size=40).map(lambda text: text.encode("utf-8")),
        json_body(schemas).map(lambda body: b"\xef\xbb\xbf" + body),
        json_body(schemas).map(lambda body: body.decode().encode("utf-16")),
    )


ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
#: Latin-1 header values (httpx decodes header bytes that are not UTF-8 as Latin-1): "²" is isdigit() but no int.
LATIN1 = st.binary(max_size=10).map(lambda raw: raw.decode("latin-1"))
VALUE = st.one_of(
    ASCII, LATIN1, st.sampled_from(["", "0", "-1", "10", "99999999999999999999", " 5", "5 ", "1e3", "²", "1³", "٣"])
)
HEADERS: dict[str, st.SearchStrategy[str]] = {
    "Content-Type": st.one_of(
        st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "text/plain; charset=latin-1",
                "text/plain; charset=no-such-codec",
                "text/html; charset=",
                "application/xml",
                "garbage",
            ]
        ),
        st.sampled_from(["rot13", "hex", "base64", "zlib", "utf-16", "utf-7", "idna", "punycode"]).map(
            lambda codec: f"text/plain; charset={codec}"
        ),
    ),
    "Content-Encoding": st.one_of(
        st.sampled_from(["identity", "", "x-unknown", *DECODERS, "gzip, deflate", "GZIP"]), ASCII
    ),
    "Content-Length": VALUE,
    RATE_LIMIT: VALUE,
    "Retry-After": VALUE,
    "Location": st.one_of(st.sampled_from([*DOWNLOAD_HOSTS, "/relative", "http://169.254.169.254/", ""]), ASCII),
    "X-Anything": LATIN1,
}


def header_bytes(value: str) -> bytes:
    """Latin-1 when it can be (how httpx reads bytes that are not UTF-8 back), else UTF-8."""
    return value.encode("latin-1") if max(map(ord, value), default=0) < 256 else value.encode("utf-8")


@st.composite
def answers(draw: st.DrawFn, schemas: list[dict[str, Any]], statuses: st.SearchStrategy[int] | None = None) -> Answer:
    if statuses is None:
        statuses = st.one_of(st.integers(100, 599), st.sampled_from([200, 200, 200, 201, 204, 400, 401, 404, 429]))
    status = draw(statuses)
    names = draw(st.lists(st.sampled_from(sorted(HEADERS)), unique=True, max_size=4))
    headers = tuple((name.encode(), header_bytes(draw(HEADERS[name]))) for name in names)
    return Answer(status, headers, draw(bodies(schemas)))


def scripts(schemas: list[dict[str, Any]], **kwargs: Any) -> st.SearchStrategy[list[Answer]]:
    return st.lists(answers(schemas, **kwargs), min_size=1, max_size=3)


def compressed(answer: Answer) -> bool:
    """The answer names a Content-Encoding httpx decodes (gzip, deflate...)."""
    return any(
        name.lower() == b"content-encoding" and any(codec in value.decode("latin-1").lower() for codec in DECODERS)
        for name, value in answer.headers
    )


def soracom(script: Script) -> SoracomClient:
    return SoracomClient(
        base_url="https://api.soracom.test", credentials=lambda: CREDENTIALS, transport=httpx.MockTransport(script)
    )


def cloudblue(script: Script, *, resource_id: str | None = "3f2a6c1e-8d4b-4e7a-9c1f-2b5d8e0a7c34") -> CloudBlueClient:
    return CloudBlueClient(
        endpoint="https://cloudblue.test",
        auth=ApsTokenAuth(lambda: SecretStr("aps-token")),
        resource_id=resource_id,
        max_attempts=2,
        max_wait_seconds=0,
        transport=httpx.MockTransport(script),
    )


def note(text: str) -> None:
    """A statistics event, when called from a Hypothesis test (the regression tests are plain ones)."""
    if currently_in_test_context():
        event(text)


def returns_or_raises_typed(call: Callable[[], Any], expected: type | None) -> Any:
    try:
        result = call()
    except SorachargeError as exc:
        note(f"raised {type(exc).__name__}")
        return None
    note("returned")
    if expected is not None:
        assert isinstance(result, expected)
    return result


# -- Soracom --------------------------------------------------------------------------------------

SORACOM_CALLS: dict[str, tuple[Callable[[SoracomClient], BaseModel], type[BaseModel], dict[str, Any]]] = {
    "get_bill": (lambda client: client.get_bill("202610"), MonthlyBill, BILL),
    "start_export": (lambda client: client.start_export("202610"), ExportStarted, STARTED),
    "get_exported_file": (lambda client: client.get_exported_file("fe_0123456789abcdef"), ExportedFile, EXPORTED),
}


@fuzz(150)
@given(operation=st.sampled_from(sorted(SORACOM_CALLS)), data=st.data())
def test_soracom_calls_give_a_model_or_a_typed_error(operation, data):
    call, model, schema = SORACOM_CALLS[operation]
    script = Script(data.draw(scripts([schema, SORACOM_ERROR])))
    client = soracom(script)
    returns_or_raises_typed(lambda: call(client), model)
    client.close()


@fuzz(100)
@given(operation=st.sampled_from(sorted(SORACOM_CALLS)), data=st.data())
def test_soracom_auth_answering_anything(operation, data):
    call, model, schema = SORACOM_CALLS[operation]
    auth = data.draw(scripts([AUTH, SORACOM_ERROR]))
    script = Script([Answer(200, (), json.dumps(schema).encode())], auth=auth)
    client = soracom(script)
    returns_or_raises_typed(lambda: call(client), model)
    client.close()


DOWNLOAD_STATUSES = st.one_of(st.integers(100, 599), st.sampled_from([200, 200, 200, 301, 302, 307, 403, 404, 503]))


@fuzz(150)
@given(script=scripts([], statuses=DOWNLOAD_STATUSES).map(Script))
def test_soracom_download_gives_the_served_bytes_or_a_typed_error(script):
    client = soracom(script)
    sink = io.BytesIO()
    downloaded = returns_or_raises_typed(lambda: client.download(DOWNLOAD_URL, sink), None)
    client.close()
    if downloaded is not None:
        served = script.served[-1]
        assert served.status == 200
        assert sink.getvalue() == served.body
        assert downloaded.size == len(served.body)
        assert downloaded.sha256 == hashlib.sha256(served.body).hexdigest()


# -- CloudBlue ------------------------------------------------------------------------------------

CLOUDBLUE_CALLS: dict[str, tuple[Callable[[CloudBlueClient], Any], type | None, dict[str, Any]]] = {
    "open_session": (lambda client: client.open_session(), ImportSessionInfo, SESSION),
    "get_session": (lambda client: client.get_session(42), ImportSessionInfo, SESSION),
    "sessions_by_status": (lambda client: client.sessions_by_status("PROCESSED", limit=5), list, SESSION),
    "import_charges": (lambda client: client.import_charges(b'{"importSessionId":42,"charges":[]}'), None, APS_ERROR),
    "close_session": (lambda client: client.close_session(42), None, SESSION),
}


@fuzz(200)
@given(operation=st.sampled_from(sorted(CLOUDBLUE_CALLS)), data=st.data())
def test_cloudblue_calls_give_a_model_or_a_typed_error(operation, data):
    call, expected, schema = CLOUDBLUE_CALLS[operation]
    script = Script(data.draw(scripts([schema, APS_ERROR, {"error": "x", "message": None}])))
    client = cloudblue(script)
    result = returns_or_raises_typed(lambda: call(client), expected)
    if operation == "sessions_by_status" and result is not None:
        assert all(isinstance(session, ImportSessionInfo) for session in result)
    client.close()


@fuzz(100)
@given(
    found=st.one_of(
        st.lists(
            st.fixed_dictionaries({"aps": st.fixed_dictionaries({"id": st.one_of(st.text(max_size=9), JSON_SCALARS)})}),
            max_size=3,
        ),
        st.lists(near({"aps": {"id": "3f2a6c1e-8d4b-4e7a-9c1f-2b5d8e0a7c34", "type": "x"}}), max_size=2),
        JSON_VALUES,
    ),
    status=st.sampled_from([200, 200, 200, 404, 500]),
)
def test_cloudblue_discovery_gives_a_session_or_a_typed_error(found, status):
    def answer(request: httpx.Request) -> httpx.Response:
        if "implementing" in str(request.url):
            return httpx.Response(status, content=json.dumps(found, allow_nan=True).encode())
        return httpx.Response(200, json=SESSION)

    client = CloudBlueClient(
        endpoint="https://cloudblue.test",
        auth=ApsTokenAuth(lambda: SecretStr("aps-token")),
        max_attempts=1,
        max_wait_seconds=0,
        transport=httpx.MockTransport(answer),
    )
    returns_or_raises_typed(client.open_session, ImportSessionInfo)
    client.close()


# -- regressions: bugs this fuzzing found (each raised an untyped exception at cb3dea5) ---------

DOWNLOAD_HOST = "soracom-exports.s3.ap-northeast-1.amazonaws.com"


def soracom_answering(answer: Answer) -> tuple[SoracomClient, Script]:
    script = Script([answer])
    return soracom(script), script


@pytest.mark.parametrize("hint", [b"\xb2", b"\xb9", b"1\xb3"])
def test_rate_limit_hint_with_non_ascii_digits(hint):
    # Was: ValueError, '²'.isdigit() is True but int('²') fails (SoracomClient._call on a 429).
    # A 429 stays a rate limit (the state machine's Retry matches SoracomRateLimitedError), without a hint.
    client, script = soracom_answering(Answer(429, ((RATE_LIMIT.encode(), hint),), b""))
    with raises_exactly(SoracomRateLimitedError, "^getBilling: Soracom rate limit reached$") as info:
        client.get_bill("202610")
    assert info.value.retry_after_seconds is None
    assert len(script.served) == 1, "the client never retries on its own"


def test_download_content_length_with_non_ascii_digits():
    # Was: ValueError from int(Content-Length) after isdigit() (SoracomClient.download).
    # A length that is not a number is no length: the bytes served are the file.
    client, script = soracom_answering(Answer(200, ((b"Content-Length", b"\xb2"),), b"ab"))
    sink = io.BytesIO()
    downloaded = client.download(DOWNLOAD_URL, sink)
    assert sink.getvalue() == b"ab"
    assert downloaded == DownloadedFile(size=2, sha256=hashlib.sha256(b"ab").hexdigest())
    assert len(script.served) == 1


def decoding(operation: str) -> str:
    return f"^{operation}: the answer could not be decoded: Error -3 while decompressing data: "


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
@pytest.mark.parametrize(
    ("status", "call", "error", "message"),
    [
        pytest.param(
            200,
            lambda script: soracom(script).get_bill("202610"),
            SoracomApiError,
            decoding("getBilling"),
            id="get_bill",
        ),
        pytest.param(
            200,
            lambda script: soracom(script).start_export("202610"),
            SoracomApiError,
            decoding("exportBilling"),
            id="start_export",
        ),
        pytest.param(
            403,
            lambda script: soracom(script).download(DOWNLOAD_URL, io.BytesIO()),
            ExportDownloadError,
            f"^download from {re.escape(DOWNLOAD_HOST)} answered a body that cannot be decoded$",
            id="download-403",
        ),
        pytest.param(
            200,
            lambda script: cloudblue(script).open_session(),
            CloudBlueUnavailableError,
            decoding("openSession"),
            id="open_session",
        ),
        pytest.param(
            200,
            lambda script: cloudblue(script).import_charges(b"{}"),
            CloudBlueUnavailableError,
            decoding("importCharges"),
            id="import_charges",
        ),
        pytest.param(
            200,
            lambda script: cloudblue(script).sessions_by_status(),
            CloudBlueUnavailableError,
            decoding("getSessionByStatus"),
            id="sessions_by_status",
        ),
    ],
)
def test_undecodable_content_encoding(encoding, status, call, error, message):
    # Was: httpx.DecodingError (a RequestError, not a TransportError) out of both clients.
    script = Script([Answer(status, ((b"Content-Encoding", encoding),), b"not compressed at all")])
    with raises_exactly(error, message) as info:
        call(script)
    if isinstance(info.value, CloudBlueUnavailableError):
        # Sent, and answered 200: CloudBlue may have done it (taken the packet, opened a session), so the
        # outcome is unknown: a packet is never sent again into that session (it is given up).
        assert info.value.outcome_unknown
    else:
        assert getattr(info.value, "status", None) is None
    # importCharges is never asked again after an unknown outcome; openSession and the reads are, as after a
    # 500, up to the client's 2 attempts (a second openSession may leave an empty OPEN session: no charge)
    asked = 2 if isinstance(info.value, CloudBlueUnavailableError) and "importCharges" not in message else 1
    assert len(script.served) == asked


@pytest.mark.parametrize("charset", [b"rot13", b"hex", b"base64", b"zlib"])
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(
            lambda script: soracom(script).get_bill("202610"),
            SoracomApiError,
            re.escape("getBilling: Soracom answered HTTP 400 (HTTP 400 not-base64!)"),
            id="soracom-get_bill",
        ),
        pytest.param(
            lambda script: soracom(script).download(DOWNLOAD_URL, io.BytesIO()),
            ExportDownloadError,
            re.escape(
                f"download from {DOWNLOAD_HOST} was refused with HTTP 400 (HTTP 400): "
                "the URL may have expired; run the export again"
            ),
            id="soracom-download",
        ),
        pytest.param(
            lambda script: cloudblue(script).get_session(42),
            CloudBlueApiError,
            re.escape("getSession: CloudBlue answered HTTP 400 not-base64!"),
            id="cloudblue-get_session",
        ),
    ],
)
def test_charset_naming_a_non_text_codec(charset, call, error, message):
    # Was: TypeError/AssertionError/binascii.Error from response.text in _describe_error/_s3_error_code.
    # The body is read as UTF-8 whatever the charset says, and the 400 is named.
    script = Script([Answer(400, ((b"Content-Type", b"text/plain; charset=" + charset),), b"not-base64!")])
    with raises_exactly(error, f"^{message}$") as info:
        call(script)
    assert getattr(info.value, "status", 400) == 400
    assert len(script.served) == 1


def test_soracom_deeply_nested_json_body():
    # Was: RecursionError from json.loads in soracom._parse (it caught ValueError only).
    client, _ = soracom_answering(Answer(200, (), b"[" * 100_000))
    expected = "getBilling: unexpected response body: not usable JSON (RecursionError)"
    with raises_exactly(SoracomApiError, f"^{re.escape(expected)}$") as info:
        client.get_bill("202610")
    assert info.value.status == 200


@pytest.mark.parametrize("resource_id", ["a\x00b", "a\nb", "x" * 70_000])
@pytest.mark.parametrize("client", ["cloudblue-discovery", "soracom-exported-file"])
def test_ids_from_answers_that_are_not_url_safe(resource_id, client):
    # Was: httpx.InvalidURL (not an httpx.HTTPError) when an id from an answer went into a URL path.
    if client == "soracom-exported-file":
        # poll_export passes Soracom's exportedFileId (any non-empty string) to get_exported_file.
        soracom_client, script = soracom_answering(Answer(200, (), json.dumps(EXPORTED).encode()))
        with raises_exactly(SoracomApiError, "^getExportedFile: the request URL is not valid: ") as info:
            soracom_client.get_exported_file(resource_id)
        assert info.value.status is None
        assert script.served == [], "nothing is sent to a URL that is not valid"
        return

    # Discovery refuses the id, so no request is ever built with it.
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if "implementing" in str(request.url):
            return httpx.Response(200, json=[{"aps": {"id": resource_id}}])
        return httpx.Response(200, json=SESSION)

    cloudblue_client = CloudBlueClient(
        endpoint="https://cloudblue.test",
        auth=ApsTokenAuth(lambda: SecretStr("aps-token")),
        max_attempts=1,
        max_wait_seconds=0,
        transport=httpx.MockTransport(answer),
    )
    with raises_exactly(CloudBlueApiError, "^discover: the resource list is not a JSON array of APS resources$"):
        cloudblue_client.open_session()
    assert [request.url.path for request in requests] == ["/aps/2/resources"], "only the discovery was sent"


@pytest.mark.parametrize(
    ("issued", "field_name"),
    [({"apiKey": "\u0080", "token": "t"}, "apiKey"), ({"apiKey": "a", "token": "トークン"}, "token")],
    ids=["apiKey", "token"],
)
def test_auth_token_that_is_not_ascii(issued, field_name):
    # Was: UnicodeEncodeError when httpx put a non-ASCII apiKey/token into a header.
    script = Script([Answer(200, (), json.dumps(BILL).encode())], auth=[Answer(200, (), json.dumps(issued).encode())])
    expected = f"^auth: unexpected response body: {field_name}: String should match pattern "
    with raises_exactly(SoracomApiError, expected) as info:
        soracom(script).get_bill("202610")
    assert info.value.status == 200
    assert len(script.served) == 1, "the bill is never asked for with that token"


# Regression: _authenticate once let httpx.DecodingError escape on an undecodable Content-Encoding.
@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
def test_auth_answer_that_cannot_be_decoded(encoding):
    auth = Answer(200, ((b"Content-Encoding", encoding),), b"not compressed at all")
    script = Script([Answer(200, (), json.dumps(BILL).encode())], auth=[auth])
    with raises_exactly(SoracomApiError, decoding("auth")) as info:
        soracom(script).get_bill("202610")
    assert info.value.status is None
    assert script.served == [auth], "the bill is never asked for without a token"
