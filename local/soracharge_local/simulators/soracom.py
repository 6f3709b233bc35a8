"""A Soracom API stand-in: a real HTTP server on loopback for tests and demos.

It answers the four calls soracharge makes, as described by Soracom's OpenAPI (docs/apis/openapi/)
and shared/DESIGN.md section 2, and serves the export's pre-signed download URL::

    POST /v1/auth                          {authKeyId, authKey, tokenTimeoutSeconds?} -> {apiKey, operatorId, token}
    POST /v1/auth/switch_user              {operatorId, userName, tokenTimeoutSeconds? (<= 3600)} with the caller's
                                           headers -> a token of another operator (``operators``) that trusts
                                           the caller's; every call with it acts in that operator (its own bill,
                                           exports and downloads)
    GET  /v1/bills/{yyyyMM}                MonthlyBill (closed: 18 past months, temporary: this month);
                                           amount: the CSV's sum rounded up to 1 JPY / 0.01 USD, less
                                           the coupon (appliedCouponAmount), plus tax when one is set
    POST /v1/bills/{yyyyMM}/export         ?export_mode=async -> {exportedFileId, exportedFilePath}
                                           (no export_mode or sync -> {url}, like the real default)
    GET  /v1/files/exported/{id}           {status: processing} x polls_until_ready, then {status: exported, url}
    GET  /soracom-billing-exports/...csv?X-Amz-...   the detailed-billing CSV (S3-style pre-signed URL)

Every ``/v1`` call but ``/v1/auth`` needs ``X-Soracom-API-Key`` and ``X-Soracom-Token`` from one
successful auth; errors are ``{"code": "ABC1234", "message": ...}``; every JSON ``/v1`` response
carries the ``X-Soracom-Ratelimit-*`` headers. The download URL is checked byte for byte: its
``X-Amz-Signature`` is an HMAC of the raw request target before ``&X-Amz-Signature``, so a client
that re-quotes or normalises the URL gets S3's ``403 SignatureDoesNotMatch``; Soracom or
``Authorization`` headers on it get ``403 AccessDenied``, and so does a URL used after
``url_ttl_seconds``.

Faults are switched on through :class:`SoracomFaults` (``sim.faults``) or over HTTP::

    GET    /_simulator/faults              the current faults
    PUT    /_simulator/faults              merge a JSON object of fault fields (400 on unknown/bad fields)
    DELETE /_simulator/faults              every fault back off
    GET    /_simulator/requests            the recorded requests (credentials redacted)
    DELETE /_simulator/requests            forget them
    POST   /_simulator/expire-tokens       every token issued so far becomes invalid
    PUT    /_simulator/bills/{yyyyMM}      {"state": "closed" | "temporary" | null}; null = 404
    GET    /_simulator/billing             how bills are made: {"coupon", "taxRate", "taxRounding"}
    PUT    /_simulator/billing             merge them: {"coupon": "500"} (a coupon of up to 500 a month),
                                           {"taxRate": "0.10", "taxRounding": "down"} (tax-included bills)
    GET    /_simulator/fired               how many times each fault fired (changed an answer or an outcome)
    DELETE /_simulator/fired               forget those counts

Error codes: ``AUM0001`` (no API key/token), ``AUM0002`` (bad credentials) and ``AGW0005``
(internal error) are codes Soracom is known to send; the others follow the same pattern but are
this simulator's own. Run it by hand with ``python -m soracharge_local.simulators.soracom``.

The server plumbing (start/stop on a daemon thread, ``base_url``, the fault switches, the recorded
requests and their ``/_simulator`` endpoints, the JSON helpers) is shared with the CloudBlue
simulator and lives in :mod:`soracharge_local.simulators.server`; this module is what is Soracom's.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args
from urllib.parse import quote
from xml.sax.saxutils import escape

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from soracharge_local.simulators.server import (
    LoopbackServer,
    Reply,
    json_object,
    json_response,
    raw_request_target,
    run_in_foreground,
)
from soracharge_local.simulators.soracom_data import (
    CURRENCIES,
    BillingCsv,
    Coverage,
    TaxRounding,
    generate_billing_csv,
    parse_year_month,
    payment_transaction_id,
    soracom_bill_amount,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "BillState",
    "BillingRules",
    "ExportOutcome",
    "RecordedRequest",
    "RequestKind",
    "SoracomFaults",
    "SoracomSimulator",
    "main",
]

_log = logging.getLogger(__name__)

BillState = Literal["temporary", "closed"]
ExportOutcome = Literal["exported", "failed", "never"]
RequestKind = Literal[
    "auth", "switchUser", "getBilling", "exportBilling", "getExportedFile", "download", "control", "unknown"
]
#: The longest token Switch User gives (its tokenTimeoutSeconds, Soracom's published maximum).
MAX_SWITCHED_TOKEN_TIMEOUT = 3600

#: ``X-Soracom-Ratelimit-Limit`` advertised per request kind and minute (informational: only the
#: ``rate_limit_next`` fault answers 429).
RATE_LIMIT_PER_MINUTE: Final = 1000
#: Kinds the /v1 faults (rate limit, server error, slow) hit when ``only_kind`` is not set.
API_KINDS: Final[frozenset[str]] = frozenset({"getBilling", "exportBilling", "getExportedFile"})
#: How many past months have a closed bill (Soracom keeps the last 18).
HISTORY_MONTHS: Final = 18
MIN_TOKEN_TIMEOUT: Final = 180
MAX_TOKEN_TIMEOUT: Final = 172_800
DEFAULT_TOKEN_TIMEOUT: Final = 86_400
DOWNLOAD_CHUNK: Final = 64 * 1024
EXPORT_BUCKET: Final = "soracom-billing-exports"

_JSON = "application/json;charset=UTF-8"
_SIGNATURE_MARK = "&X-Amz-Signature="
_AWS_REGIONS: Final[dict[str, str]] = {"jp": "ap-northeast-1", "g": "eu-central-1"}
_REDACTED_HEADERS: Final = frozenset({"x-soracom-token", "x-soracom-api-key", "authorization"})


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


@dataclass
class SoracomFaults:
    """Fault switches, all off by default. Tests set the fields directly; counters count down.

    - ``rate_limit_next``: the next N API requests answer 429 (``Remaining: 0``,
      ``Seconds-Before-Refresh: rate_limit_seconds``).
    - ``server_error_next``: the next N API requests answer 5xx, cycling through a JSON 500, a
      plain-text 502 and a plain-text 503 from "the edge" (500, 502, 500, 503, ...).
    - ``only_kind``: restrict the three switches above and ``slow_seconds`` to one request kind
      (e.g. ``"getExportedFile"``; ``"auth"`` and ``"download"`` are allowed too). When unset
      they hit getBilling, exportBilling and getExportedFile, never auth or downloads.
    - ``slow_seconds``: delay each hit response by this long (to trigger client timeouts).
    - ``export_outcome``: what an export becomes after ``polls_until_ready`` polls:
      ``exported`` (a URL), ``failed`` (no URL), ``never`` (``processing`` forever). Read at
      each poll, so it can be flipped while a client is polling.
    - ``download_server_error_next``: the next N downloads answer S3's 500 InternalError.
    - ``truncate_download``: downloads send the full ``Content-Length`` and half the body, then
      close the connection.
    - ``drop_csv_rows``: downloads serve a complete-looking CSV without its last N rows (a
      truncated export), while the bill still counts them.
    """

    rate_limit_next: int = 0
    rate_limit_seconds: int = 30
    server_error_next: int = 0
    only_kind: str | None = None
    slow_seconds: float = 0.0
    export_outcome: ExportOutcome = "exported"
    download_server_error_next: int = 0
    truncate_download: bool = False
    drop_csv_rows: int = 0

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what ``GET /_simulator/faults`` answers)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BillingRules:
    """How the simulator makes a bill from its CSV beyond rounding up: a coupon, tax (none by default)."""

    coupon: Decimal = Decimal(0)
    tax_rate: Decimal | None = None
    tax_rounding: TaxRounding = "down"

    def to_json(self) -> dict[str, Any]:
        return {
            "coupon": str(self.coupon),
            "taxRate": None if self.tax_rate is None else str(self.tax_rate),
            "taxRounding": self.tax_rounding,
        }


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator answered, as it arrived.

    ``raw_target`` is the request target exactly as sent on the request line (path and query,
    escapes untouched); ``path`` is its decoded path. Header names are lower-cased.
    """

    method: str
    path: str
    raw_target: str
    headers: dict[str, str]
    status: int
    kind: RequestKind

    def to_json(self, *, redact: bool = True) -> dict[str, Any]:
        """A JSON-ready dict; ``redact`` hides credential header values (presence stays visible)."""
        headers = {
            name: ("<redacted>" if redact and name in _REDACTED_HEADERS else value)
            for name, value in self.headers.items()
        }
        return {
            "method": self.method,
            "path": self.path,
            "rawTarget": self.raw_target,
            "headers": headers,
            "status": self.status,
            "kind": self.kind,
        }


# --------------------------------------------------------------------------------------------
# Internal state
# --------------------------------------------------------------------------------------------


@dataclass
class _Token:
    api_key: str
    expires_at: float
    operator_id: str


@dataclass(frozen=True)
class SimulatedOperator:
    """Another operator (account) the simulator bills: reached with Switch User by a user of an operator it
    ``trusts``; its bill is its own (other SIMs and devices, other usage), every row tagged ``customer``
    when one is given (an operator per end customer), of ``sims`` SIMs (the simulator's when None). With
    ``auth_key`` (``(authKeyId, authKey)``), it is also reached with its own AuthKey, as ``POST /v1/auth``."""

    trusts: frozenset[str] = frozenset()
    customer: str | None = None
    sims: int | None = None
    auth_key: tuple[str, str] | None = None


@dataclass(frozen=True)
class _IssuedUrl:
    url: str
    signature: str
    exported_file_id: str
    month: str
    expires_at: float
    operator_id: str


@dataclass
class _Export:
    exported_file_id: str
    month: str
    operator_id: str
    polls: int = 0
    url: _IssuedUrl | None = None


@dataclass
class _RateWindow:
    started: float
    count: int = 0


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class SoracomSimulator(LoopbackServer[SoracomFaults, RecordedRequest]):
    """An api.soracom.io stand-in on ``http://127.0.0.1:<port>``; see the module docstring.

    >>> with SoracomSimulator(today=date(2026, 11, 22)) as sim:  # doctest: +SKIP
    ...     os.environ["SORACOM_ENDPOINT"] = sim.base_url          # no /v1, like soracom-cli

    ``clock`` (a monotonic seconds counter, ``time.monotonic`` by default) times token and URL
    expiry and the rate-limit window; tests may pass a fake one to expire things without waiting.
    ``sleep`` (``time.sleep``) is how the ``slow_seconds`` fault waits; tests may pass one they control
    (one that holds the answer until the test releases it) instead of racing a real delay.

    ``fired`` counts the faults that actually changed an answer or an outcome (not the faults
    armed), keyed by fault field name: ``rate_limit_next``, ``server_error_next``,
    ``slow_seconds`` (a request delayed), ``download_server_error_next``, ``truncate_download``
    and ``drop_csv_rows`` (a download served short), ``export_outcome`` (a poll answered
    ``failed``, or ``processing`` only because of ``never``) and ``expired_token`` (a request
    refused because :meth:`expire_tokens` invalidated its token; a token's own timeout is not a
    fault and is not counted).

    start/stop, ``base_url``, ``faults``/``update_faults`` and ``requests``/``clear_requests`` come
    from :class:`~soracharge_local.simulators.server.LoopbackServer`.
    """

    thread_name = "soracom-simulator"
    logger = _log
    json_content_type = _JSON

    def __init__(
        self,
        *,
        coverage: Coverage = "jp",
        today: date | None = None,
        auth_key_id: str = "keyId-sim",
        auth_key: str = "secret-sim",
        sims: int = 8,
        polls_until_ready: int = 2,
        url_ttl_seconds: int = 3600,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        coupon: Decimal = Decimal(0),
        tax_rate: Decimal | None = None,
        tax_rounding: TaxRounding = "down",
        operators: Mapping[str, SimulatedOperator] | None = None,
    ) -> None:
        if coverage not in CURRENCIES:
            raise ValueError(f"coverage must be 'jp' or 'g', not {coverage!r}")
        if sims < 1:
            raise ValueError("sims must be at least 1")
        if polls_until_ready < 0:
            raise ValueError("polls_until_ready must not be negative")
        if url_ttl_seconds < 0:
            raise ValueError("url_ttl_seconds must not be negative")
        self.coverage: Coverage = coverage
        self.today: date = today if today is not None else datetime.now(UTC).date()
        self.auth_key_id = auth_key_id
        self._auth_key = auth_key
        self.sims = sims
        self.polls_until_ready = polls_until_ready
        self.url_ttl_seconds = url_ttl_seconds
        self.billing = BillingRules()
        super().__init__(host=host, port=port, faults=SoracomFaults(), check_fault=_check_fault)
        self.operator_id = "OP" + f"{int(hashlib.sha256(auth_key_id.encode()).hexdigest(), 16) % 10**10:010d}"
        #: The other operators, reached with Switch User (``POST /v1/auth/switch_user``).
        self.operators: dict[str, SimulatedOperator] = dict(operators or {})
        self._operator_index = {operator: index for index, operator in enumerate(self.operators, 1)}
        self._clock = clock
        self._sleep = sleep
        self.set_billing(
            {"coupon": str(coupon), "taxRate": None if tax_rate is None else str(tax_rate), "taxRounding": tax_rounding}
        )

        self._csv_lock = threading.Lock()
        self._signing_key = secrets.token_bytes(32)
        self._tokens: dict[str, _Token] = {}
        self._exports: dict[str, _Export] = {}
        self._urls: dict[str, _IssuedUrl] = {}
        self._state_overrides: dict[str, BillState | None] = {}
        self._csv_cache: dict[tuple[str, str], BillingCsv] = {}
        self._rate_windows: dict[str, _RateWindow] = {}
        self._server_errors_sent = 0
        self._revoked: set[str] = set()

        self._url_map = self._routes(
            [
                Rule("/v1/auth", endpoint="auth", methods=["POST"]),
                Rule("/v1/auth/switch_user", endpoint="switchUser", methods=["POST"]),
                Rule("/v1/bills/<month>", endpoint="getBilling", methods=["GET"]),
                Rule("/v1/bills/<month>/export", endpoint="exportBilling", methods=["POST"]),
                Rule("/v1/files/exported/<exported_file_id>", endpoint="getExportedFile", methods=["GET"]),
                Rule(
                    f"/{EXPORT_BUCKET}/<operator_id>/<exported_file_id>/<file_name>",
                    endpoint="download",
                    methods=["GET"],
                ),
            ],
            [
                Rule("/_simulator/expire-tokens", endpoint="control:expire-tokens", methods=["POST"]),
                Rule("/_simulator/bills/<month>", endpoint="control:bills", methods=["PUT"]),
                Rule("/_simulator/billing", endpoint="control:billing", methods=["GET", "PUT"]),
                Rule("/_simulator/fired", endpoint="control:fired", methods=["GET", "DELETE"]),
            ],
        )

    def _log_started(self) -> None:
        _log.info("Soracom simulator listening on %s (coverage %s)", self.base_url, self.coverage)

    # -- inspection and control -----------------------------------------------------------------

    @property
    def currency(self) -> str:
        """``JPY`` for the ``jp`` coverage, ``USD`` for ``g``."""
        return CURRENCIES[self.coverage]

    def count(self, kind: RequestKind) -> int:
        """How many requests of ``kind`` were answered (whatever their status)."""
        with self._lock:
            return sum(1 for r in self._requests if r.kind == kind)

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far: the next API call with one answers 401."""
        with self._lock:
            self._revoked.update(self._tokens)
            self._tokens.clear()

    def set_billing(self, changes: Mapping[str, Any] | None) -> None:
        """Merge ``{"coupon", "taxRate", "taxRounding"}`` into how bills are made (``ValueError`` on a bad one)."""
        if changes is None or not set(changes) <= {"coupon", "taxRate", "taxRounding"}:
            raise ValueError('expected an object with "coupon", "taxRate" and/or "taxRounding"')
        with self._lock:
            rules = self.billing
            try:
                coupon = Decimal(str(changes.get("coupon", rules.coupon)))
                rate = changes.get("taxRate", rules.tax_rate)
                tax_rate = None if rate is None else Decimal(str(rate))
            except ArithmeticError:
                raise ValueError("coupon and taxRate must be decimal numbers (as text)") from None
            rounding = changes.get("taxRounding", rules.tax_rounding)
            if not coupon.is_finite() or coupon < 0:
                raise ValueError("coupon must be a non-negative amount")
            if tax_rate is not None and not (tax_rate.is_finite() and 0 < tax_rate < 1):
                raise ValueError("taxRate must be null or between 0 and 1 (0.10 for 10 %)")
            if rounding not in get_args(TaxRounding):
                raise ValueError("taxRounding must be 'down', 'up' or 'half-up'")
            self.billing = BillingRules(coupon=coupon, tax_rate=tax_rate, tax_rounding=rounding)

    def set_bill_state(self, month: str, state: BillState | None) -> None:
        """Force ``month``'s bill to ``closed`` or ``temporary``, or to none at all (404)."""
        parse_year_month(month)
        if state not in (None, "closed", "temporary"):
            raise ValueError(f"state must be 'closed', 'temporary' or None, not {state!r}")
        with self._lock:
            self._state_overrides[month] = state

    def bill_state(self, month: str) -> BillState | None:
        """The state ``month``'s bill is served with, or ``None`` when it answers 404."""
        year, mon = parse_year_month(month)
        with self._lock:
            if month in self._state_overrides:
                return self._state_overrides[month]
        index = year * 12 + mon - 1
        current = self.today.year * 12 + self.today.month - 1
        if index == current:
            return "temporary"
        if current - HISTORY_MONTHS <= index < current:
            return "closed"
        return None

    def csv_bytes(self, month: str, operator: str | None = None) -> bytes:
        """The exact bytes a download of ``month`` serves (UTF-8 BOM included), of the simulator's own operator
        or of ``operator`` (one of :attr:`operators`).

        Any valid month works, even one whose bill answers 404. The current month only has the
        days up to ``today``; other months have every day.
        """
        return self._billing_csv(month, operator or self.operator_id).content

    def bill(self, month: str, operator: str | None = None) -> dict[str, Any] | None:
        """The MonthlyBill served for ``month`` (``amount`` as a ``Decimal``), or ``None`` (404)."""
        state = self.bill_state(month)
        if state is None:
            return None
        with self._lock:
            rules = self.billing
        amount, coupon = soracom_bill_amount(
            self._billing_csv(month, operator or self.operator_id).total,
            self.currency,
            coupon=rules.coupon,
            tax_rate=rules.tax_rate,
            tax_rounding=rules.tax_rounding,
        )
        bill: dict[str, Any] = {
            "amount": amount,
            "appliedCouponAmount": coupon,
            "currency": self.currency,
            "state": state,
            "yearMonth": month,
        }
        if state == "closed":
            bill["paymentStatus"] = "paid"
            bill["paymentTransactionId"] = payment_transaction_id(self.coverage, month)
        return bill

    def _billing_csv(self, month: str, operator: str) -> BillingCsv:
        parse_year_month(month)
        with self._csv_lock:
            cached = self._csv_cache.get((operator, month))
            if cached is None:
                current = f"{self.today:%Y%m}"
                days = self.today.day if month == current else None
                other = self.operators.get(operator)
                cached = generate_billing_csv(
                    month,
                    coverage=self.coverage,
                    sims=self.sims if other is None or other.sims is None else other.sims,
                    days=days,
                    operator="" if other is None else operator,
                    operator_index=self._operator_index.get(operator, 0),
                    customer_of_operator=None if other is None else other.customer,
                )
                self._csv_cache[(operator, month)] = cached
            return cached

    # -- WSGI -------------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        request = Request(environ)
        raw_target = raw_request_target(environ)
        kind: RequestKind = "unknown"
        try:
            endpoint, args = self._url_map.bind_to_environ(environ).match()
            kind = "control" if endpoint.startswith("control:") else cast(RequestKind, endpoint)
            response = self._dispatch(kind, str(endpoint), args, request, raw_target)
        except (NotFound, MethodNotAllowed) as exc:
            kind = "control" if request.path.startswith("/_simulator/") else "unknown"
            response = self._not_routed(request, exc)
        except HTTPException as exc:  # e.g. a redirect werkzeug's routing wants; not expected
            response = exc.get_response(environ)
        headers = {name.lower(): value for name, value in request.headers.items()}
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            raw_target=raw_target,
            headers=headers,
            status=response.status_code,
            kind=kind,
        )
        self._record(record)
        return cast(Iterator[bytes], response(environ, start_response))

    def _dispatch(
        self, kind: RequestKind, endpoint: str, args: Mapping[str, str], request: Request, raw_target: str
    ) -> Response:
        if kind == "control":
            return self._control(endpoint, args, request)
        if kind == "download":
            return self._download(args, request, raw_target)
        return self._api(kind, args, request)

    def _not_routed(self, request: Request, exc: NotFound | MethodNotAllowed) -> Response:
        status = exc.code or 404
        if request.path.startswith("/v1/"):
            code, message = ("COM0002", "Method not allowed") if status == 405 else ("COM0001", "Not found")
            return self._api_error(status, code, message, kind="unknown")
        if request.path.startswith(f"/{EXPORT_BUCKET}/"):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return _json_response(status, {"code": "SIM0001", "message": f"{request.method} {request.path}: no such route"})

    # -- /v1 --------------------------------------------------------------------------------------

    def _api(self, kind: RequestKind, args: Mapping[str, str], request: Request) -> Response:
        faults = self._faults
        targeted = _targeted(kind, faults)
        if targeted and faults.slow_seconds > 0:
            self._fire("slow_seconds")
            self._sleep(faults.slow_seconds)
        try:
            # The edge fails before anything else; the rate limit is per operator, so it comes
            # after authentication (auth itself has no token to check).
            if targeted:
                self._maybe_server_error(kind)
            operator = self._authenticate(request, kind) if kind != "auth" else self.operator_id
            if targeted:
                self._maybe_rate_limit(kind)
            if kind == "auth":
                return self._auth(request)
            if kind == "switchUser":
                return self._switch_user(request, operator)
            if kind == "getBilling":
                return self._get_billing(args["month"], operator)
            if kind == "exportBilling":
                return self._export_billing(args["month"], request, operator)
            return self._get_exported_file(args["exported_file_id"], operator)
        except Reply as reply:
            return reply.response

    def _maybe_server_error(self, kind: RequestKind) -> None:
        with self._lock:
            if self._faults.server_error_next <= 0:
                return
            self._faults.server_error_next -= 1
            self._fired["server_error_next"] += 1
            sequence = self._server_errors_sent
            self._server_errors_sent += 1
        if sequence % 2 == 0:
            raise Reply(self._api_error(500, "AGW0005", "Internal error", kind=kind))
        status, text = (502, "Bad Gateway") if sequence % 4 == 1 else (503, "Service Unavailable")
        # From "the edge": plain text, and no Soracom headers.
        raise Reply(Response(f"{status} {text}\n", status=status, content_type="text/plain; charset=utf-8"))

    def _maybe_rate_limit(self, kind: RequestKind) -> None:
        with self._lock:
            if self._faults.rate_limit_next <= 0:
                return
            self._faults.rate_limit_next -= 1
            self._fired["rate_limit_next"] += 1
            seconds = self._faults.rate_limit_seconds
        headers = {
            "X-Soracom-Ratelimit-Limit": str(RATE_LIMIT_PER_MINUTE),
            "X-Soracom-Ratelimit-Remaining": "0",
            "X-Soracom-Ratelimit-Seconds-Before-Refresh": str(seconds),
        }
        body = {"code": "COM0005", "message": "Too many requests. Please retry after a while."}
        raise Reply(_json_response(429, body, headers))

    def _authenticate(self, request: Request, kind: RequestKind) -> str:
        """The operator the request's token acts in; a 401 reply when it has none valid."""
        api_key = request.headers.get("X-Soracom-API-Key", "")
        token = request.headers.get("X-Soracom-Token", "")
        if not api_key or not token:
            raise Reply(
                self._api_error(401, "AUM0001", "API key and token are required in the request header", kind=kind)
            )
        now = self._clock()
        with self._lock:
            issued = self._tokens.get(token)
            valid = issued is not None and hmac.compare_digest(issued.api_key, api_key) and now < issued.expires_at
            if not valid and issued is None and token in self._revoked:
                self._fired["expired_token"] += 1
        if not valid or issued is None:
            raise Reply(self._api_error(401, "AUM0003", "Invalid or expired API key and token", kind=kind))
        return issued.operator_id

    def _auth(self, request: Request) -> Response:
        body = json_object(request)
        if body is None:
            return self._api_error(400, "COM0003", "The request body must be a JSON object", kind="auth")
        timeout = self._token_timeout(body, DEFAULT_TOKEN_TIMEOUT, MAX_TOKEN_TIMEOUT, "auth")
        key_id, key = body.get("authKeyId"), body.get("authKey")
        keys = [((self.auth_key_id, self._auth_key), self.operator_id)]
        keys += [(other.auth_key, name) for name, other in self.operators.items() if other.auth_key is not None]
        operator = next(
            (
                name
                for (own_id, own_key), name in keys
                if isinstance(key_id, str)
                and isinstance(key, str)
                and hmac.compare_digest(key_id.encode(), own_id.encode())
                and hmac.compare_digest(key.encode(), own_key.encode())
            ),
            None,
        )
        if operator is None:
            _log.info("auth refused for authKeyId %s", key_id if isinstance(key_id, str) else "<missing>")
            return self._api_error(401, "AUM0002", "Invalid authKeyId or authKey supplied.", kind="auth")
        _log.info("auth accepted for authKeyId %s of %s (token valid %d s)", key_id, operator, timeout)
        return self._issue(operator, timeout, "auth")

    def _switch_user(self, request: Request, caller: str) -> Response:
        """``POST /v1/auth/switch_user``: a token of another operator that trusts the caller's operator."""
        body = json_object(request)
        if body is None:
            return self._api_error(400, "COM0003", "The request body must be a JSON object", kind="switchUser")
        target, user = body.get("operatorId"), body.get("userName")
        timeout = self._token_timeout(body, MAX_SWITCHED_TOKEN_TIMEOUT, MAX_SWITCHED_TOKEN_TIMEOUT, "switchUser")
        if not isinstance(target, str) or not isinstance(user, str) or not user:
            return self._api_error(400, "COM0003", "operatorId and userName are required", kind="switchUser")
        other = self.operators.get(target)
        if other is None or caller not in other.trusts:
            _log.info("switch_user refused: %s does not trust %s", target, caller)
            return self._api_error(403, "AUM0019", "The operator does not trust the requester", kind="switchUser")
        _log.info("switch_user accepted: %s into %s as %s (token valid %d s)", caller, target, user, timeout)
        return self._issue(target, timeout, "switchUser")

    def _token_timeout(self, body: dict[str, Any], default: int, most: int, kind: RequestKind) -> int:
        """The body's ``tokenTimeoutSeconds`` (``default`` when absent); a 400 AUM0007 when it is not an integer
        from the least Soracom allows to ``most``."""
        timeout = body.get("tokenTimeoutSeconds", default)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not MIN_TOKEN_TIMEOUT <= timeout <= most:
            raise Reply(
                self._api_error(
                    400,
                    "AUM0007",
                    f"tokenTimeoutSeconds must be an integer from {MIN_TOKEN_TIMEOUT} to {most}",
                    kind=kind,
                )
            )
        return timeout

    def _issue(self, operator: str, timeout: int, kind: RequestKind) -> Response:
        """A new API key and token of ``operator``, valid ``timeout`` seconds: the auth calls' answer."""
        api_key = f"api-{uuid.uuid4()}"
        token = secrets.token_urlsafe(96)
        with self._lock:
            self._tokens[token] = _Token(api_key=api_key, expires_at=self._clock() + timeout, operator_id=operator)
        return self._api_json(200, {"apiKey": api_key, "operatorId": operator, "token": token}, kind=kind)

    def _checked_month(self, month: str, kind: RequestKind) -> str:
        try:
            parse_year_month(month)
        except ValueError:
            raise Reply(self._api_error(400, "BIL0002", f"Invalid yyyyMM: {month}", kind=kind)) from None
        return month

    def _get_billing(self, month: str, operator: str) -> Response:
        self._checked_month(month, "getBilling")
        bill = self.bill(month, operator)
        if bill is None:
            return self._api_error(404, "BIL0001", f"No bill found for {month}", kind="getBilling")
        return self._api_json(200, bill, kind="getBilling")

    def _export_billing(self, month: str, request: Request, operator: str) -> Response:
        self._checked_month(month, "exportBilling")
        mode = request.args.get("export_mode", "sync")
        if mode not in ("async", "sync"):
            return self._api_error(400, "BIL0003", f"Invalid export_mode: {mode}", kind="exportBilling")
        if self.bill_state(month) is None:
            return self._api_error(404, "BIL0001", f"No bill found for {month}", kind="exportBilling")
        export = _Export(exported_file_id=f"fe_{uuid.uuid4().hex}", month=month, operator_id=operator)
        with self._lock:
            self._exports[export.exported_file_id] = export
        _log.info("export %s of %s started (%s)", export.exported_file_id, month, mode)
        if mode == "sync":
            issued = self._issue_url(export)
            return self._api_json(200, {"url": issued.url}, kind="exportBilling")
        body = {
            "exportedFileId": export.exported_file_id,
            "exportedFilePath": f"//files/exported/{export.exported_file_id}",
        }
        return self._api_json(200, body, kind="exportBilling")

    def _get_exported_file(self, exported_file_id: str, operator: str) -> Response:
        with self._lock:
            export = self._exports.get(exported_file_id)
            if export is not None and export.operator_id != operator:
                export = None  # another operator's export: not this operator's to see
            if export is not None:
                export.polls += 1
        if export is None:
            return self._api_error(
                404, "FIL0001", f"Exported file not found: {exported_file_id}", kind="getExportedFile"
            )
        polls = export.polls
        outcome = self._faults.export_outcome
        if polls <= self.polls_until_ready or outcome == "never":
            if polls > self.polls_until_ready:  # ready by now, but for the fault
                self._fire("export_outcome")
            return self._api_json(200, {"status": "processing"}, kind="getExportedFile")
        if outcome == "failed":
            self._fire("export_outcome")
            return self._api_json(200, {"status": "failed"}, kind="getExportedFile")
        issued = self._issue_url(export)
        return self._api_json(200, {"status": "exported", "url": issued.url}, kind="getExportedFile")

    def _issue_url(self, export: _Export) -> _IssuedUrl:
        """The export's download URL: the same one while it is valid, a fresh one after."""
        now = self._clock()
        with self._lock:
            if export.url is not None and now < export.url.expires_at:
                return export.url
        wall = datetime.now(UTC)
        stamp = f"{self.today:%Y%m%d}"
        credential = quote(f"ASIAEXAMPLE/{stamp}/{_AWS_REGIONS[self.coverage]}/s3/aws4_request", safe="")
        # b"\xfb\xef\xff" encodes to "++//"; 31 more bytes make base64 end in "=": the query then
        # holds %2B, %2F and %3D, the escapes a careless client re-quotes.
        session_token = base64.b64encode(b"\xfb\xef\xff" + secrets.token_bytes(31)).decode()
        query = "&".join(
            [
                "X-Amz-Algorithm=AWS4-HMAC-SHA256",
                f"X-Amz-Credential={credential}",
                f"X-Amz-Date={stamp}T{wall:%H%M%S}Z",
                f"X-Amz-Expires={self.url_ttl_seconds}",
                "X-Amz-SignedHeaders=host",
                f"X-Amz-Security-Token={quote(session_token, safe='')}",
            ]
        )
        file_path = f"{export.operator_id}/{export.exported_file_id}/Detailed_Billing_{export.month}.csv"
        signed = f"/{EXPORT_BUCKET}/{file_path}?{query}"
        signature = self._sign(signed)
        issued = _IssuedUrl(
            url=f"{self.base_url}{signed}{_SIGNATURE_MARK}{signature}",
            signature=signature,
            exported_file_id=export.exported_file_id,
            month=export.month,
            expires_at=now + self.url_ttl_seconds,
            operator_id=export.operator_id,
        )
        with self._lock:
            export.url = issued
            self._urls[signature] = issued
        return issued

    def _sign(self, signed: str) -> str:
        return hmac.new(self._signing_key, signed.encode("latin-1"), hashlib.sha256).hexdigest()

    def _rate_headers(self, kind: RequestKind) -> dict[str, str]:
        now = self._clock()
        with self._lock:
            window = self._rate_windows.get(kind)
            if window is None or now - window.started >= 60:
                window = self._rate_windows[kind] = _RateWindow(started=now)
            window.count += 1
            remaining = max(0, RATE_LIMIT_PER_MINUTE - window.count)
            refresh = max(0, math.ceil(window.started + 60 - now))
        return {
            "X-Soracom-Ratelimit-Limit": str(RATE_LIMIT_PER_MINUTE),
            "X-Soracom-Ratelimit-Remaining": str(remaining),
            "X-Soracom-Ratelimit-Seconds-Before-Refresh": str(refresh),
        }

    def _api_json(self, status: int, body: Mapping[str, Any], *, kind: RequestKind) -> Response:
        return _json_response(status, body, self._rate_headers(kind))

    def _api_error(self, status: int, code: str, message: str, *, kind: RequestKind) -> Response:
        return self._api_json(status, {"code": code, "message": message}, kind=kind)

    # -- the pre-signed download ------------------------------------------------------------------

    def _download(self, args: Mapping[str, str], request: Request, raw_target: str) -> Response:
        faults = self._faults
        if faults.only_kind == "download" and faults.slow_seconds > 0:
            self._fire("slow_seconds")
            self._sleep(faults.slow_seconds)
        for header in ("X-Soracom-API-Key", "X-Soracom-Token", "Authorization"):
            if header in request.headers:
                return _s3_error(
                    403,
                    "AccessDenied",
                    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter should be "
                    f"specified (the request also carries {header})",
                )
        issued = self._verify_signature(raw_target)
        if issued is None:
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
                AWSAccessKeyId="ASIAEXAMPLE",
            )
        if self._clock() >= issued.expires_at:
            return _s3_error(
                403,
                "AccessDenied",
                "Request has expired",
                **{"X-Amz-Expires": str(self.url_ttl_seconds), "ServerTime": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"},
            )
        with self._lock:
            fail = self._faults.download_server_error_next > 0
            if fail:
                self._faults.download_server_error_next -= 1
                self._fired["download_server_error_next"] += 1
        if fail:
            return _s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
        content = self.csv_bytes(issued.month, issued.operator_id)
        if faults.drop_csv_rows:
            full = len(content)
            content = _without_last_rows(content, faults.drop_csv_rows)
            if len(content) < full:
                self._fire("drop_csv_rows")
        headers = {
            "Content-Type": "text/csv",
            "Content-Length": str(len(content)),
            "ETag": f'"{hashlib.md5(content, usedforsecurity=False).hexdigest()}"',
            "Accept-Ranges": "bytes",
            "x-amz-request-id": secrets.token_hex(8).upper(),
        }
        end = len(content) // 2 if faults.truncate_download else len(content)
        if end < len(content):
            self._fire("truncate_download")
        _log.info("download of %s (%s): %d of %d bytes", issued.exported_file_id, issued.month, end, len(content))
        return Response(_chunks(content, end), status=200, headers=headers, direct_passthrough=True)

    def _verify_signature(self, raw_target: str) -> _IssuedUrl | None:
        signed, mark, signature = raw_target.rpartition(_SIGNATURE_MARK)
        if not mark or not signature:
            return None
        try:
            expected = self._sign(signed)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected, signature):
            return None
        with self._lock:
            return self._urls.get(signature)

    # -- /_simulator ------------------------------------------------------------------------------

    def _own_control(self, endpoint: str, args: Mapping[str, str], request: Request) -> Response:
        if endpoint == "control:expire-tokens":
            self.expire_tokens()
            return _json_response(200, {"expired": True})
        if endpoint == "control:fired":
            if request.method == "DELETE":
                self.clear_fired()
            return _json_response(200, dict(sorted(self.fired.items())))
        if endpoint == "control:billing":
            if request.method == "PUT":
                try:
                    self.set_billing(json_object(request))
                except ValueError as exc:
                    return _json_response(400, {"code": "SIM0006", "message": str(exc)})
            with self._lock:
                return _json_response(200, self.billing.to_json())
        # control:bills
        body = json_object(request)
        state = None if body is None else body.get("state", "missing")
        if body is None or state not in (None, "closed", "temporary"):
            return _json_response(400, {"code": "SIM0004", "message": 'expected {"state": "closed"|"temporary"|null}'})
        try:
            self.set_bill_state(args["month"], cast(BillState | None, state))
        except ValueError as exc:
            return _json_response(400, {"code": "SIM0005", "message": str(exc)})
        return _json_response(200, {"yearMonth": args["month"], "state": state})

    def _control_error(self, status: int, code: str, message: str) -> Response:
        return _json_response(status, {"code": code, "message": message})


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _targeted(kind: RequestKind, faults: SoracomFaults) -> bool:
    """Whether the /v1 faults apply to a request of ``kind``."""
    if faults.only_kind is not None:
        return kind == faults.only_kind
    return kind in API_KINDS


_COUNTERS: Final = frozenset(
    {"rate_limit_next", "rate_limit_seconds", "server_error_next", "download_server_error_next", "drop_csv_rows"}
)
_KINDS: Final = frozenset(get_args(RequestKind))


def _check_fault(name: str, value: Any) -> Any:
    if name in _COUNTERS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer")
        return value
    if name == "slow_seconds":
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError("slow_seconds must be a non-negative number")
        return float(value)
    if name == "only_kind":
        if value is not None and value not in _KINDS:
            raise ValueError(f"only_kind must be null or one of {', '.join(sorted(_KINDS))}")
        return value
    if name == "export_outcome":
        if value not in get_args(ExportOutcome):
            raise ValueError("export_outcome must be 'exported', 'failed' or 'never'")
        return value
    if not isinstance(value, bool):  # truncate_download
        raise ValueError(f"{name} must be true or false")
    return value


def _json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, body, headers, content_type=_JSON)


def _s3_error(status: int, code: str, message: str, **extra: str) -> Response:
    fields = [("Code", code), ("Message", message), *extra.items()]
    fields += [
        ("RequestId", secrets.token_hex(8).upper()),
        ("HostId", base64.b64encode(secrets.token_bytes(48)).decode()),
    ]
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields)
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'
    return Response(body, status=status, content_type="application/xml")


def _month_text(index: int) -> str:
    """``yyyyMM`` of a month counted as ``year * 12 + month - 1``."""
    return f"{index // 12:04d}{index % 12 + 1:02d}"


def _without_last_rows(content: bytes, rows: int) -> bytes:
    """The CSV without its last ``rows`` rows, header kept (generated fields hold no line break: a line is a row)."""
    lines = content.splitlines(keepends=True)
    return b"".join(lines[: max(1, len(lines) - rows)])


def _chunks(content: bytes, end: int) -> Iterator[bytes]:
    """Stream ``content[:end]`` in chunks (stopping early leaves the client short of Content-Length)."""
    for start in range(0, end, DOWNLOAD_CHUNK):
        yield content[start : min(start + DOWNLOAD_CHUNK, end)]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator in the foreground until Ctrl-C (``python -m soracharge_local.simulators.soracom``)."""
    parser = argparse.ArgumentParser(
        prog="python -m soracharge_local.simulators.soracom",
        description="A local Soracom API stand-in (auth, bills, async export, pre-signed download).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (0 picks a free one; default 8080)")
    parser.add_argument("--coverage", choices=["jp", "g"], default="jp", help="jp: JPY bills, g: USD bills")
    parser.add_argument("--today", type=date.fromisoformat, default=None, help="the simulator's date, YYYY-MM-DD")
    parser.add_argument("--sims", type=int, default=8, help="SIMs in the generated CSVs (2000 gives ~15 MB)")
    parser.add_argument("--polls-until-ready", type=int, default=2, help="'processing' answers per export")
    parser.add_argument("--url-ttl-seconds", type=int, default=3600, help="validity of download URLs")
    parser.add_argument("--coupon", type=Decimal, default=Decimal(0), help="coupon taken off each bill (default 0)")
    parser.add_argument("--tax-rate", type=Decimal, default=None, help="bills include tax at this rate (e.g. 0.10)")
    parser.add_argument("--auth-key-id", default="keyId-sim")
    parser.add_argument("--auth-key", default="secret-sim")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    sim = SoracomSimulator(
        coverage=args.coverage,
        today=args.today,
        auth_key_id=args.auth_key_id,
        auth_key=args.auth_key,
        sims=args.sims,
        polls_until_ready=args.polls_until_ready,
        url_ttl_seconds=args.url_ttl_seconds,
        host=args.host,
        port=args.port,
        coupon=args.coupon,
        tax_rate=args.tax_rate,
    )
    base_url = sim.start()
    current = sim.today.year * 12 + sim.today.month - 1
    print(f"Soracom simulator on {base_url} (coverage {sim.coverage}, {sim.currency}, today {sim.today})")
    print(f"  SORACOM_ENDPOINT={base_url}")
    print(f"  SORACOM_COVERAGE_TYPE={sim.coverage}")
    print(f"  SORACOM_AUTH_KEY_ID={sim.auth_key_id}")
    print(f"  SORACOM_AUTH_KEY={args.auth_key}")
    print(
        f"  bills: {_month_text(current - HISTORY_MONTHS)}..{_month_text(current - 1)} closed, "
        f"{_month_text(current)} temporary"
    )
    print(f"  faults: GET/PUT/DELETE {base_url}/_simulator/faults; requests: GET {base_url}/_simulator/requests")
    return run_in_foreground(sim)


if __name__ == "__main__":
    raise SystemExit(main())
