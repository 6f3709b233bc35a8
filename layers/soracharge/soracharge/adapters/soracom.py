"""The Soracom API client (httpx): auth, getBilling, exportBilling, getExportedFile, the download.

Facts it follows (shared/DESIGN.md section 2):
- ``POST /v1/auth`` gives ``apiKey`` and ``token``; every later call sends both
  ``X-Soracom-API-Key`` and ``X-Soracom-Token``. The token is reused while it is valid, and a 401
  leads to exactly one re-authentication and one more try.
- A client acts in one operator (:class:`OperatorAccess`): the credential's own, checked against the
  operator it is configured for, or another one that trusts it, through Switch User
  (``POST /v1/auth/switch_user``, a token of at most an hour, renewed before it lapses). An answer
  for another operator than the one asked for is refused: a bill is never read from a guess.
- Every call has a timeout. This client never retries on its own beyond that one re-auth: retries
  are the state machine's ``Retry`` policies, bounded and visible in the execution history.
- The export's download URL is pre-signed: it is used byte for byte (httpx keeps existing
  ``%XX`` escapes), with a plain GET and no Soracom headers, and never logged (it carries a token).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import BinaryIO, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

import soracharge.observability  # noqa: F401 - keeps httpx's URL logging off
from soracharge.errors import (
    BillNotFoundError,
    ExportDownloadError,
    SoracomApiError,
    SoracomAuthError,
    SoracomRateLimitedError,
    SoracomUnavailableError,
    UnsafeDownloadUrlError,
)
from soracharge.models.soracom import (
    AuthRequest,
    AuthResponse,
    ExportedFile,
    ExportStarted,
    MonthlyBill,
    SoracomCredentials,
    SoracomErrorBody,
    SwitchUserRequest,
)

ModelT = TypeVar("ModelT", bound=BaseModel)

USER_AGENT = "soracharge/0.1 (+https://github.com/soracharge)"
#: A token is renewed this long before Soracom would expire it.
TOKEN_RENEWAL_MARGIN_SECONDS = 60
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
#: A pre-signed URL is normally fetched directly; a compatible server may redirect a few times.
MAX_DOWNLOAD_REDIRECTS = 3


class SoracomApi(Protocol):
    """What the export use cases need from Soracom (tests pass fakes of this)."""

    def get_bill(self, month: str) -> MonthlyBill: ...

    def start_export(self, month: str) -> ExportStarted: ...

    def get_exported_file(self, exported_file_id: str) -> ExportedFile: ...

    def download(self, url: str, sink: BinaryIO) -> DownloadedFile: ...


@dataclass(frozen=True)
class DownloadedFile:
    size: int
    sha256: str


@dataclass(frozen=True)
class OperatorAccess:
    """The operator a client acts in: ``operator_id`` (checked against what Soracom answers; None: the
    credential's own, whichever it is), reached through Switch User as ``switch_user`` when given."""

    operator_id: str | None = None
    switch_user: str | None = None
    #: The operators the credential's own must not be, each with why: those the stack exports under another
    #: name (SoracomAccounts' for the stack's own AuthKey; the stack's own operator for a listed one's AuthKey).
    #: One operator's bill exported under two names would be billed twice.
    never: Callable[[], Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.switch_user is not None and not self.operator_id:
            raise ValueError("Switch User needs the operator id to switch into")


#: The longest token Switch User gives (Soracom's published limit).
MAX_SWITCHED_TOKEN_SECONDS = 3600


@dataclass
class _Token:
    api_key: str
    token: str
    renew_at: float
    operator_id: str = ""


class SoracomClient:
    """A synchronous Soracom API client. Build one per process (see ``soracharge.factories``)."""

    def __init__(
        self,
        *,
        base_url: str,
        credentials: Callable[[], SoracomCredentials],
        timeout_seconds: float = 10.0,
        download_timeout_seconds: float = 60.0,
        token_timeout_seconds: int = 3600,
        download_url_patterns: tuple[str, ...] = ("https://*.amazonaws.com",),
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        operator: OperatorAccess | None = None,
    ) -> None:
        self._credentials = credentials
        self._operator = operator or OperatorAccess()
        self._token_timeout_seconds = token_timeout_seconds
        self._clock = clock
        self._token: _Token | None = None
        self._download_url_patterns = download_url_patterns
        self._api = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/v1",
            timeout=httpx.Timeout(timeout_seconds),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            transport=transport,
        )
        # A separate client for the pre-signed URL: no base URL, no Soracom headers, few redirects.
        self._files = httpx.Client(
            timeout=httpx.Timeout(download_timeout_seconds, connect=timeout_seconds),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            follow_redirects=True,
            max_redirects=MAX_DOWNLOAD_REDIRECTS,
            transport=transport,
            event_hooks={"request": [self._check_download_target]},  # every hop, redirects included
        )

    def close(self) -> None:
        self._api.close()
        self._files.close()

    # -- operations ------------------------------------------------------------------------

    def get_bill(self, month: str) -> MonthlyBill:
        response = self._call("GET", f"/bills/{month}", operation="getBilling")
        if response.status_code == 404:
            raise BillNotFoundError(
                f"Soracom has no bill for {month} ({_describe_error(response)}): the month had no "
                "charge, is not finalized yet, or is older than the 18 months Soracom keeps"
            )
        return _parse(response, MonthlyBill, "getBilling")

    def start_export(self, month: str) -> ExportStarted:
        response = self._call(
            "POST", f"/bills/{month}/export", params={"export_mode": "async"}, operation="exportBilling"
        )
        if response.status_code == 404:
            raise BillNotFoundError(f"Soracom has no bill to export for {month} ({_describe_error(response)})")
        return _parse(response, ExportStarted, "exportBilling")

    def get_exported_file(self, exported_file_id: str) -> ExportedFile:
        response = self._call("GET", f"/files/exported/{exported_file_id}", operation="getExportedFile")
        if response.status_code == 404:
            raise SoracomApiError(
                f"Soracom does not know the export {exported_file_id} ({_describe_error(response)})",
                status=404,
            )
        return _parse(response, ExportedFile, "getExportedFile")

    def download(self, url: str, sink: BinaryIO) -> DownloadedFile:
        """Stream the exported file into ``sink`` in bounded memory; return its size and SHA-256.

        The URL (and every redirect) must match one of the allowed ``scheme://host`` globs, so an
        answer that points elsewhere (an internal address, say) is never fetched.
        """
        digest = hashlib.sha256()
        size = 0
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL:
            raise UnsafeDownloadUrlError("the export's download URL is not a URL") from None
        try:
            with self._files.stream("GET", url) as response:
                if response.status_code >= 500:
                    raise SoracomUnavailableError(f"download from {host} answered HTTP {response.status_code}")
                if response.status_code != 200:
                    response.read()
                    raise ExportDownloadError(
                        f"download from {host} was refused with HTTP {response.status_code} "
                        f"({_s3_error_code(response)}): the URL may have expired; run the export again"
                    )
                # iter_raw: the bytes as served, byte for byte (no Content-Encoding decoding).
                for chunk in response.iter_raw(DOWNLOAD_CHUNK_BYTES):
                    digest.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
                expected = response.headers.get("Content-Length")
        except UnsafeDownloadUrlError:
            raise
        except httpx.DecodingError:
            raise ExportDownloadError(f"download from {host} answered a body that cannot be decoded") from None
        except httpx.TooManyRedirects:
            raise ExportDownloadError(
                f"download from {host} redirected more than {MAX_DOWNLOAD_REDIRECTS} times"
            ) from None
        except httpx.TransportError as exc:  # includes timeouts and connections closed mid-body
            raise SoracomUnavailableError(f"download from {host} failed: {type(exc).__name__}: {exc}") from exc
        if expected is not None and expected.isascii() and expected.isdigit() and int(expected) != size:
            raise SoracomUnavailableError(f"download from {host} was cut short: {size} of {expected} bytes")
        return DownloadedFile(size=size, sha256=digest.hexdigest())

    # -- plumbing ---------------------------------------------------------------------------

    def _check_download_target(self, request: httpx.Request) -> None:
        target = f"{request.url.scheme}://{request.url.host}".lower()
        if not any(fnmatch.fnmatchcase(target, pattern) for pattern in self._download_url_patterns):
            raise UnsafeDownloadUrlError(
                f"the export's download URL points at {target}, which is not allowed "
                f"(SORACOM_DOWNLOAD_URL_PATTERNS: {', '.join(self._download_url_patterns)}): it was not fetched"
            )

    def _call(self, method: str, path: str, *, operation: str, params: dict[str, str] | None = None) -> httpx.Response:
        """Send an authenticated call; re-authenticate once on 401; map transport and 5xx errors."""
        response = self._send(method, path, params, operation, self._current_token())
        if response.status_code == 401:
            self._token = None
            response = self._send(method, path, params, operation, self._current_token())
            if response.status_code == 401:
                raise SoracomAuthError(f"{operation}: Soracom rejected a fresh token ({_describe_error(response)})")
        if response.status_code == 429:
            hint = response.headers.get("X-Soracom-Ratelimit-Seconds-Before-Refresh", "")
            retry_after = int(hint) if hint.isascii() and hint.isdigit() else None
            raise SoracomRateLimitedError(
                f"{operation}: Soracom rate limit reached"
                + (f", it refreshes in {retry_after} s" if retry_after is not None else ""),
                retry_after_seconds=retry_after,
            )
        if response.status_code >= 500:
            raise SoracomUnavailableError(
                f"{operation}: Soracom answered HTTP {response.status_code} ({_describe_error(response)})"
            )
        return response

    def _send(
        self, method: str, path: str, params: dict[str, str] | None, operation: str, token: _Token
    ) -> httpx.Response:
        headers = {"X-Soracom-API-Key": token.api_key, "X-Soracom-Token": token.token}
        try:
            return self._api.request(method, path, params=params, headers=headers)
        except httpx.InvalidURL as exc:
            raise SoracomApiError(f"{operation}: the request URL is not valid: {exc}") from None
        except httpx.DecodingError as exc:
            raise SoracomApiError(f"{operation}: the answer could not be decoded: {exc}") from None
        except httpx.TransportError as exc:
            raise SoracomUnavailableError(f"{operation}: {type(exc).__name__}: {exc}") from exc

    def operator_id(self) -> str:
        """The operator this client acts in, as Soracom answered (authenticating first when needed)."""
        return self._current_token().operator_id

    def _current_token(self) -> _Token:
        if self._token is None or self._clock() >= self._token.renew_at:
            self._token = self._authenticate()
        return self._token

    def _authenticate(self) -> _Token:
        credentials = self._credentials()
        body = AuthRequest(
            authKeyId=credentials.auth_key_id,
            authKey=credentials.auth_key.get_secret_value(),
            tokenTimeoutSeconds=self._token_timeout_seconds,
        )
        started = self._clock()
        issued = self._post_auth(
            "/auth",
            body.model_dump(),
            "auth",
            f"auth: Soracom refused AuthKey {credentials.auth_key_id}",
            (400, 401, 403),
        )
        wanted = self._operator
        why = (wanted.never() if wanted.never is not None else {}).get(issued.operatorId or "")
        if why is not None:
            raise SoracomAuthError(
                f"auth: AuthKey {credentials.auth_key_id} belongs to operator {issued.operatorId}, {why}: its bill "
                "exported under two names would be billed twice. Correct SoracomAccounts or the AuthKey secret. "
                "Nothing was read"
            )
        if wanted.switch_user is not None:
            return self._switch(issued, wanted)
        if wanted.operator_id is not None and issued.operatorId != wanted.operator_id:
            raise SoracomAuthError(
                f"auth: AuthKey {credentials.auth_key_id} belongs to operator {issued.operatorId}, not "
                f"{wanted.operator_id} (the account it is configured for): nothing was read"
            )
        lifetime = max(self._token_timeout_seconds - TOKEN_RENEWAL_MARGIN_SECONDS, 0)
        return _Token(
            api_key=issued.apiKey, token=issued.token, renew_at=started + lifetime, operator_id=issued.operatorId or ""
        )

    def _switch(self, root: AuthResponse, wanted: OperatorAccess) -> _Token:
        """Switch User into ``wanted.operator_id``: a token of that operator, of at most an hour."""
        assert wanted.operator_id is not None, "checked by OperatorAccess"
        assert wanted.switch_user is not None, "only called to switch"
        seconds = min(self._token_timeout_seconds, MAX_SWITCHED_TOKEN_SECONDS)
        body = SwitchUserRequest(
            operatorId=wanted.operator_id, userName=wanted.switch_user, tokenTimeoutSeconds=seconds
        )
        started = self._clock()
        refused = (
            f"switch_user: operator {wanted.operator_id} refused user {wanted.switch_user!r} of operator "
            f"{root.operatorId}"
        )
        issued = self._post_auth(
            "/auth/switch_user", body.model_dump(), "switchUser", refused, (400, 401, 403, 404), root=root
        )
        if issued.operatorId != wanted.operator_id:
            raise SoracomAuthError(
                f"switch_user: asked for operator {wanted.operator_id}, Soracom answered for {issued.operatorId}: "
                "nothing was read"
            )
        lifetime = max(seconds - TOKEN_RENEWAL_MARGIN_SECONDS, 0)
        return _Token(
            api_key=issued.apiKey, token=issued.token, renew_at=started + lifetime, operator_id=issued.operatorId or ""
        )

    def _post_auth(
        self,
        path: str,
        body: dict[str, object],
        operation: str,
        refused: str,
        refusals: tuple[int, ...],
        root: AuthResponse | None = None,
    ) -> AuthResponse:
        """An auth call (``/auth``, or ``/auth/switch_user`` with the ``root`` token): its answer, or the typed
        error of its failure (``refused``, with Soracom's reason, for a status of ``refusals``)."""
        headers = {"X-Soracom-API-Key": root.apiKey, "X-Soracom-Token": root.token} if root is not None else None
        name = "switch_user" if root is not None else "auth"
        try:
            response = self._api.post(path, json=body, headers=headers)
        except httpx.DecodingError as exc:
            raise SoracomApiError(f"{name}: the answer could not be decoded: {exc}") from None
        except httpx.TransportError as exc:
            raise SoracomUnavailableError(f"{name}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in refusals:
            reason = f"(HTTP {response.status_code}, {_describe_error(response)})"
            raise SoracomAuthError(f"{refused} {reason}" + (": does it trust it?" if root is not None else ""))
        if response.status_code == 429:
            raise SoracomRateLimitedError(f"{name}: Soracom rate limit reached")
        if response.status_code >= 500:
            raise SoracomUnavailableError(f"{name}: Soracom answered HTTP {response.status_code}")
        return _parse(response, AuthResponse, operation)


def _parse(response: httpx.Response, model: type[ModelT], operation: str) -> ModelT:
    if not response.is_success:
        error = _error_body(response)
        raise SoracomApiError(
            f"{operation}: Soracom answered HTTP {response.status_code} ({_describe_error(response)})",
            status=response.status_code,
            code=error.code if error else None,
        )
    try:
        # parse_float=Decimal: a JSON number's text becomes a Decimal as written (8011.00 stays 8011.00).
        body = json.loads(response.content, parse_float=Decimal)
        return model.model_validate(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, absurd nesting
        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
        else:
            problems = f"not usable JSON ({type(exc).__name__})"
        raise SoracomApiError(
            f"{operation}: unexpected response body: {problems}", status=response.status_code
        ) from None


def _error_body(response: httpx.Response) -> SoracomErrorBody | None:
    try:
        return SoracomErrorBody.model_validate_json(response.content)
    except ValidationError:
        return None


def _describe_error(response: httpx.Response) -> str:
    """``CODE: message`` from a JSON error body, else the start of a plain-text body."""
    error = _error_body(response)
    if error is not None and (error.code or error.message):
        return ": ".join(part for part in (error.code, error.message) if part)
    text = _body_text(response).strip().replace("\n", " ")
    return f"HTTP {response.status_code}" + (f" {text[:120]}" if text else "")


def _s3_error_code(response: httpx.Response) -> str:
    """The ``<Code>`` of an S3-style XML error body, if there is one."""
    text = _body_text(response)
    start, end = text.find("<Code>"), text.find("</Code>")
    if 0 <= start < end:
        return text[start + len("<Code>") : end]
    return f"HTTP {response.status_code}"


def _body_text(response: httpx.Response) -> str:
    """The body as text whatever charset the answer claims (``response.text`` fails on a bogus one)."""
    return response.content.decode("utf-8", errors="replace")
