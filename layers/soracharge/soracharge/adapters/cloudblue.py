"""The CloudBlue Commerce client (httpx): ChargesImportManager's five operations over APS REST.

Facts it follows (shared/DESIGN.md section 3, docs/apis/charges-import-manager.*):
- operations live under ``/aps/2/resources/{aps-id}/``; the aps-id is ``APS_RESOURCE_ID`` or is
  found once with ``GET /aps/2/resources?implementing(<type>)`` (exactly one result expected);
- authentication is two-legged OAuth 1.0a (consumer key and secret, HMAC-SHA1, signed by
  oauthlib) or an ``APS-Token`` header;
- APS errors are ``{"code", "type", "message"}`` (some tools say ``error``): parsed defensively;
- APS has no idempotency header, and nothing published says CloudBlue drops a repeated ``extHash``.
  Retries are bounded (tenacity) and only for transient failures. ``importCharges`` is sent again
  only when CloudBlue said it did not take it (429, 503) or the connection never opened; a 500, a
  502 or 504, a timeout or a dropped connection after it was sent is raised at once as an outcome
  unknown, and the import gives the session up (``logic/imports.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client  # type: ignore[import-untyped]
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError
from tenacity import Retrying, retry_if_exception, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

import soracharge.observability  # noqa: F401 - keeps httpx's URL logging off
from soracharge.errors import CloudBlueApiError, CloudBlueAuthError, CloudBlueUnavailableError
from soracharge.models.charges import ImportSessionInfo

CHARGES_IMPORT_MANAGER = "http://com.odin.rating/charges-import-manager/1.0"
#: Answers that say CloudBlue did not take a request (rate limited, unavailable): the only ones after which
#: an importCharges is sent again. Any other 5xx, a timeout or a dropped connection once the request was
#: sent leaves its outcome unknown: CloudBlue may hold the packet (APS has no idempotency key).
NOT_TAKEN = frozenset({429, 503})
USER_AGENT = "soracharge/0.1"
ModelT = TypeVar("ModelT", bound=BaseModel)


class OAuth1TwoLegged(httpx.Auth):
    """OAuth 1.0a without a token (two-legged), HMAC-SHA1, signed by oauthlib for each request.

    A JSON body is not part of an OAuth 1.0a signature (only form bodies are), so the signature
    covers the method, the URL and its query, and the oauth_* parameters.
    """

    def __init__(self, consumer_key: str, consumer_secret: SecretStr) -> None:
        self._consumer_key = consumer_key
        self._consumer_secret = consumer_secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        client = Client(
            self._consumer_key,
            client_secret=self._consumer_secret.get_secret_value(),
            signature_method=SIGNATURE_HMAC_SHA1,
        )
        _, headers, _ = client.sign(str(request.url), request.method)
        request.headers["Authorization"] = headers["Authorization"]
        yield request


class ApsTokenAuth(httpx.Auth):
    """A short-lived ``APS-Token`` (5-30 min), read anew for every request so a refreshed token is used."""

    def __init__(self, token: Callable[[], SecretStr]) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["APS-Token"] = self._token().get_secret_value()
        yield request


@dataclass(frozen=True)
class PacketDelivery:
    """How a packet got in: after how many attempts (each earlier one failed with CloudBlue's answer)."""

    attempts: int


class ChargesImportManager(Protocol):
    """What the import use cases need from CloudBlue (tests pass fakes of this)."""

    def open_session(self) -> ImportSessionInfo: ...

    def import_charges(self, packet: bytes) -> PacketDelivery: ...

    def close_session(self, session_id: int) -> None: ...

    def get_session(self, session_id: int) -> ImportSessionInfo: ...

    def sessions_by_status(self, status: str | None = None, limit: int = 100) -> list[ImportSessionInfo]: ...


class _ApsError(BaseModel):
    code: int | str | None = None
    type: str | None = None
    message: str | None = None
    error: str | None = None


class _ApsResource(BaseModel):
    class _Aps(BaseModel):
        # It goes into every URL path: an APS id is a UUID-like token of letters, digits and dashes.
        id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")

    aps: _Aps


class CloudBlueClient:
    """ChargesImportManager over APS REST. Build one per process (see ``soracharge.factories``)."""

    def __init__(
        self,
        *,
        endpoint: str,
        auth: httpx.Auth,
        resource_id: str | None = None,
        timeout_seconds: float = 30.0,
        max_attempts: int = 4,
        max_wait_seconds: float = 8.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._resource_id = resource_id
        self._http = httpx.Client(
            base_url=endpoint.rstrip("/"),
            auth=auth,
            timeout=httpx.Timeout(timeout_seconds),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            transport=transport,
        )
        self._retrying = Retrying(
            stop=stop_after_attempt(max_attempts),
            wait=wait_exponential_jitter(multiplier=0.5, max=max_wait_seconds),
            retry=retry_if_exception_type(CloudBlueUnavailableError),
            reraise=True,
        )
        self._known_failures_retrying = self._retrying.copy(
            retry=retry_if_exception(lambda exc: isinstance(exc, CloudBlueUnavailableError) and not exc.outcome_unknown)
        )

    def close(self) -> None:
        self._http.close()

    # -- operations ------------------------------------------------------------------------

    @property
    def resource_id(self) -> str:
        """The aps-id of ChargesImportManager: configured, or discovered once."""
        if self._resource_id is None:
            self._resource_id = self._discover()
        return self._resource_id

    def open_session(self) -> ImportSessionInfo:
        """openSession. A retry after an unknown outcome can leave an empty OPEN session behind: it holds no charge."""
        response = self._call("POST", "importSessions", operation="openSession")
        return _parse(response, ImportSessionInfo, "openSession")

    def import_charges(self, packet: bytes) -> PacketDelivery:
        """importCharges with a packet's exact JSON bytes (the same bytes on every attempt).

        Retried only when CloudBlue said it did not take it (429, 503) or the connection never opened.
        Any other failure once the packet was sent (a 500, 502 or 504, a timeout, a dropped connection)
        may hide a packet CloudBlue holds: it is raised at once as an unknown outcome, and the caller
        gives the session up rather than risk a second copy.
        """
        url = f"/aps/2/resources/{self.resource_id}/charges"
        attempts = 0
        for attempt in self._known_failures_retrying:
            with attempt:
                attempts += 1
                self._send_once(
                    "POST",
                    url,
                    "importCharges",
                    content=packet,
                    headers={"Content-Type": "application/json"},
                    params=None,
                )
        return PacketDelivery(attempts=attempts)

    def close_session(self, session_id: int) -> None:
        """closeSession; a session that a lost answer already closed counts as closed."""
        try:
            self._call("PUT", f"importSessions/{session_id}", operation="closeSession")
        except CloudBlueApiError as exc:
            if exc.status not in (400, 409) or self.get_session(session_id).status == "OPEN":
                raise

    def get_session(self, session_id: int) -> ImportSessionInfo:
        response = self._call("GET", f"importSessions/{session_id}", operation="getSession")
        return _parse(response, ImportSessionInfo, "getSession")

    def sessions_by_status(self, status: str | None = None, limit: int = 100) -> list[ImportSessionInfo]:
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        response = self._call("GET", "importSessions", operation="getSessionByStatus", params=params)
        try:
            return _SESSIONS.validate_json(response.content)
        except ValidationError as exc:
            raise CloudBlueApiError(
                f"getSessionByStatus: unexpected response body: {exc.error_count()} problems"
            ) from None

    # -- plumbing ---------------------------------------------------------------------------

    def _discover(self) -> str:
        response = self._send("GET", f"/aps/2/resources?implementing({CHARGES_IMPORT_MANAGER})", "discover")
        try:
            found = _RESOURCES.validate_json(response.content)
        except ValidationError:
            raise CloudBlueApiError("discover: the resource list is not a JSON array of APS resources") from None
        if len(found) != 1:
            raise CloudBlueApiError(
                f"discover: expected exactly one resource implementing {CHARGES_IMPORT_MANAGER}, found {len(found)}: "
                "set APS_RESOURCE_ID to the one to use"
            )
        return found[0].aps.id

    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str | int] | None = None,
    ) -> httpx.Response:
        url = f"/aps/2/resources/{self.resource_id}/{path}"
        return self._send(method, url, operation, content=content, headers=headers, params=params)

    def _send(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str | int] | None = None,
    ) -> httpx.Response:
        for attempt in self._retrying:
            with attempt:
                return self._send_once(method, url, operation, content=content, headers=headers, params=params)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _send_once(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        content: bytes | None,
        headers: dict[str, str] | None,
        params: dict[str, str | int] | None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, url, content=content, headers=headers, params=params)
        except httpx.InvalidURL as exc:
            raise CloudBlueApiError(f"{operation}: the request URL is not valid: {exc}") from None
        except httpx.DecodingError as exc:  # sent and answered, but the answer cannot be read: it may say "taken"
            raise CloudBlueUnavailableError(
                f"{operation}: the answer could not be decoded: {exc}", outcome_unknown=True
            ) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # never sent
            raise CloudBlueUnavailableError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:  # sent, but no answer: CloudBlue may have processed it
            raise CloudBlueUnavailableError(f"{operation}: {type(exc).__name__}: {exc}", outcome_unknown=True) from exc
        if response.is_success:
            return response
        detail = _describe_error(response)
        if response.status_code in (401, 403):
            raise CloudBlueAuthError(f"{operation}: CloudBlue refused the credentials ({detail})")
        if response.status_code in NOT_TAKEN:  # CloudBlue says it did not take the request: safe to send again
            raise CloudBlueUnavailableError(f"{operation}: CloudBlue answered {detail}")
        if response.status_code >= 500:  # an internal error, or a gateway's (502, 504): it may have been handled
            raise CloudBlueUnavailableError(f"{operation}: CloudBlue answered {detail}", outcome_unknown=True)
        error = _error_body(response)
        aps_type = error.type if error else None
        raise CloudBlueApiError(
            f"{operation}: CloudBlue answered {detail}", status=response.status_code, aps_type=aps_type
        )


_RESOURCES = TypeAdapter(list[_ApsResource])
_SESSIONS = TypeAdapter(list[ImportSessionInfo])


def _parse(response: httpx.Response, model: type[ModelT], operation: str) -> ModelT:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise CloudBlueApiError(
            f"{operation}: unexpected response body: {problems}", status=response.status_code
        ) from None


def _error_body(response: httpx.Response) -> _ApsError | None:
    try:
        return _ApsError.model_validate_json(response.content)
    except ValidationError:
        return None


def _describe_error(response: httpx.Response) -> str:
    """``HTTP 409 InvalidSessionStateException: message`` from an APS error body, else its start."""
    error = _error_body(response)
    if error is not None and (error.message or error.error or error.type):
        kind = (error.type or "").rsplit(".", 1)[-1]
        text = error.message or error.error or ""
        return f"HTTP {response.status_code} {kind}: {text}".replace(" : ", " ").strip()
    body = response.content.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return f"HTTP {response.status_code}" + (f" {body[:160]}" if body else "")
