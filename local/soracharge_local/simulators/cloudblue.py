"""A CloudBlue Commerce brand-endpoint stand-in: a real HTTP server on loopback for tests and demos.

It serves the APS type ``ChargesImportManager`` (docs/apis/charges-import-manager.*, embedded
in :mod:`soracharge_local.simulators.aps_type`) and resource discovery, as shared/DESIGN.md section 3
describes them::

    GET  /aps/2/resources?implementing(<type>)                   discover -> [{"aps": {id, type, status}}]
    POST /aps/2/resources/{aps-id}/importSessions                openSession -> ImportSessionInfo (OPEN)
    GET  /aps/2/resources/{aps-id}/importSessions?status=&limit= getSessionByStatus -> [ImportSessionInfo]
    GET  /aps/2/resources/{aps-id}/importSessions/{sessionId}    getSession -> ImportSessionInfo
    PUT  /aps/2/resources/{aps-id}/importSessions/{sessionId}    closeSession: OPEN -> NEW (200, empty body)
    POST /aps/2/resources/{aps-id}/charges                       importCharges(ChargesPacket) (200, empty body)

Every call needs credentials: OAuth 1.0a two-legged HMAC-SHA1 (``Authorization: OAuth ...``,
verified with oauthlib against the request as received: method, base string URI from the
``Host`` header and the raw path, the raw query and the header's parameters; a consumer key it
knows, a timestamp within 300 s of its wall clock, a nonce it has not seen, and
``oauth_body_hash`` when one is sent) or ``APS-Token: <token>`` (the one valid token, until it
expires). Errors are APS error bodies ``{"code": <status>, "type": "...Exception", "message": ...}``.

After closeSession a session is ``NEW``, ``PROCESSING`` once half of ``processing_seconds`` has
passed on ``clock``, then ``PROCESSED`` (or ``FAILED_PROCESSED`` with ``errorDesc`` when the
``fail_processing`` fault was set at close, or when one of its charges named a subscription that
was inactive at close: ``Subscription <id> is not active``); states are computed when read.
Inactive subscriptions are CloudBlue's configuration, not a fault: ``deactivate_subscription`` and
``activate_subscription`` (the fix in CloudBlue) switch them, and resetting the faults leaves them.
``importCharges`` bodies are checked strictly against the type (:func:`aps_type.check_charges_packet`);
a packet is stored whole or not at all, numbers as ``Decimal``. A charge whose non-empty ``extHash``
the session already holds is stored again, as a real CloudBlue may (nothing in its published type
promises to drop repeats): a packet sent twice is a double, and shows as one. Tests that want the
kinder behaviour ask for it (``ignore_repeated_ext_hash=True``, ``--ignore-repeated-ext-hash``).

Faults are switched on through :class:`CloudBlueFaults` (``sim.faults``) or over HTTP::

    GET    /_simulator/faults              the current faults
    PUT    /_simulator/faults              merge a JSON object of fault fields (400 on unknown/bad fields)
    DELETE /_simulator/faults              every fault back off
    GET    /_simulator/requests            the recorded requests (credentials redacted)
    DELETE /_simulator/requests            forget them
    GET    /_simulator/sessions            every session with its charges (money as exact JSON numbers)
    PUT    /_simulator/sessions/{id}       {"status": ..., "errorDesc"?: ...} forces a session's status
    POST   /_simulator/expire-tokens       the APS token stops working (401)
    POST   /_simulator/renew-token         the APS token works again for token_ttl_seconds -> {"token": ...}
    GET    /_simulator/subscriptions       the inactive subscriptions: {"inactive": [id, ...]} (sorted)
    PUT    /_simulator/subscriptions/{id}  {"active": false} deactivates it, {"active": true} activates it
    GET    /_simulator/fired               how many times each fault fired (changed an answer or an outcome)
    DELETE /_simulator/fired               forget those counts

The ``type`` names in error bodies are this simulator's guesses in CloudBlue's style (rating
engine errors as Java class names, APS controller errors as ``APS::Util::Exception``): a client
must not branch on them. Run it by hand with ``python -m soracharge_local.simulators.cloudblue``.

The server plumbing (start/stop on a daemon thread, ``base_url``, the fault switches, the recorded
requests and their ``/_simulator`` endpoints, the JSON helpers) is shared with the Soracom
simulator and lives in :mod:`soracharge_local.simulators.server`; this module is what is CloudBlue's.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, cast, get_args
from urllib.parse import unquote, urlsplit

from oauthlib.oauth1.rfc5849 import signature as oauth_signature  # type: ignore[import-untyped, unused-ignore]
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from soracharge_local.simulators.aps_type import (
    SESSION_STATUSES,
    TYPE_ID,
    JsonBodyError,
    check_charges_packet,
    load_json,
    stored_charge,
)
from soracharge_local.simulators.server import (
    LoopbackServer,
    Reply,
    json_object,
    json_response,
    raw_request_target,
    run_in_foreground,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "AuthMode",
    "CloudBlueFaults",
    "CloudBlueSimulator",
    "Operation",
    "RecordedRequest",
    "SessionView",
    "main",
]

_log = logging.getLogger(__name__)

AuthMode = Literal["oauth", "token", "both"]
Operation = Literal[
    "discover",
    "openSession",
    "getSessionByStatus",
    "getSession",
    "closeSession",
    "importCharges",
    "control",
    "unknown",
]

#: The operations the faults can target (``only_operation``); ``control`` and ``unknown`` are never hit.
API_OPERATIONS: Final[frozenset[str]] = frozenset(
    {"discover", "openSession", "getSessionByStatus", "getSession", "closeSession", "importCharges"}
)
#: How far an ``oauth_timestamp`` may be from the simulator's wall clock.
OAUTH_TIMESTAMP_WINDOW: Final = 300
#: ``limit`` of getSessionByStatus when none is given (the APS type's default).
DEFAULT_LIMIT: Final = 100
DEFAULT_RESOURCE_ID: Final = "5f0e9a8c-7d1b-4c2e-9a6f-3b8d2e1c0a47"

# Error types (informational; see the module docstring).
_CONTROLLER_ERROR: Final = "APS::Util::Exception"
_STATE_ERROR: Final = "com.parallels.rating.exception.InvalidSessionStateException"
_SESSION_NOT_FOUND: Final = "com.parallels.rating.exception.ImportSessionNotFoundException"
_VALIDATION_ERROR: Final = "com.parallels.rating.exception.ChargeValidationException"
_BAD_REQUEST: Final = "com.parallels.rating.exception.InvalidRequestException"
_INTERNAL_ERROR: Final = "com.parallels.rating.exception.RatingEngineException"

_JSON = "application/json"
_REDACTED: Final = "<redacted>"
_SENSITIVE_HEADERS: Final = frozenset({"authorization", "aps-token"})
_TERMINAL: Final = frozenset({"PROCESSED", "FAILED_PROCESSED", "REPORTED"})
#: What the gateway in front of CloudBlue (nginx, an ELB) writes after the status code.
_GATEWAY_REASONS: Final[Mapping[int, str]] = {502: "Bad Gateway", 504: "Gateway Time-out"}


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


@dataclass
class CloudBlueFaults:
    """Fault switches, all off by default. Tests set the fields directly; counters count down.

    - ``server_error_next``: the next N API requests (of ``only_operation`` when set) answer a
      500 APS error before anything else (no auth check, nothing stored), or, with
      ``server_error_after_processing``, after CloudBlue handled them (an importCharges stored, a
      session opened or closed): the client cannot tell the two apart, so a 500 is an outcome unknown.
    - ``server_error_on_packets``: the k-th importCharges requests (1-based, every importCharges
      request the simulator ever received, whatever its outcome, one the gateway answered too;
      ``clear_requests`` does not reset the count) answer ``server_error_status`` without storing anything.
    - ``drop_after_processing_next``: the next N importCharges requests that succeed are stored,
      then their connection is closed with no HTTP response at all.
    - ``slow_seconds``: answer every API request (of ``only_operation`` when set) this much later.
      The work is done first: an importCharges the client gave up on was stored.
    - ``gateway_error_next``: the next N API requests (of ``only_operation`` when set) are answered
      by the gateway in front of CloudBlue (a load balancer) instead of CloudBlue: status
      ``gateway_status`` with nginx's small HTML page (``Content-Type: text/html``), not an APS
      error. The client sent the request and knows no answer to it.
    - ``server_error_after_processing``: see ``server_error_next``.
    - ``server_error_status``: what ``server_error_next`` answers: 500 (an internal error: the request may
      or may not have been handled), 503 (unavailable) or 429 (rate limited). A 503 or a 429 is CloudBlue
      saying it did not take the request: it is answered before anything is handled, whatever
      ``server_error_after_processing`` says.
    - ``gateway_status``: 502 (Bad Gateway) or 504 (Gateway Time-out).
    - ``gateway_after_processing``: when false, CloudBlue never sees a request the gateway answers
      (nothing stored, opened or closed; answered at once, not slowed); when true, CloudBlue
      handles it first (an importCharges is stored, a session opened or closed) and only its
      answer is lost on the way back and replaced by the gateway's.
    - ``only_operation``: restrict ``server_error_next``, ``gateway_error_next`` and
      ``slow_seconds`` to one operation.
    - ``fail_processing``: when non-empty, sessions closed from now on end ``FAILED_PROCESSED``
      with this ``errorDesc`` (it wins over an inactive subscription).
    - ``error_field_name``: the key of the message in error bodies (``message``; some tools see
      ``error``).
    """

    server_error_next: int = 0
    server_error_after_processing: bool = False
    server_error_status: int = 500
    server_error_on_packets: list[int] = field(default_factory=list)
    drop_after_processing_next: int = 0
    slow_seconds: float = 0.0
    gateway_error_next: int = 0
    gateway_status: int = 502
    gateway_after_processing: bool = False
    only_operation: str | None = None
    fail_processing: str | None = None
    error_field_name: str = "message"

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what ``GET /_simulator/faults`` answers)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received, as it arrived, and how it was answered.

    ``raw_target`` is the request target exactly as sent (path and query, escapes untouched);
    ``path`` is its decoded path. Header names are lower-cased; the values of ``Authorization``
    and ``APS-Token`` are replaced by ``<redacted>`` (an OAuth header keeps its scheme:
    ``OAuth <redacted>``). ``auth`` says which credential was accepted (``None``: none was, or
    none was checked). ``dropped`` is true when the connection was closed without a response;
    ``status`` is then what the request would have been answered.
    """

    method: str
    path: str
    raw_target: str
    headers: dict[str, str]
    status: int
    operation: Operation
    auth: Literal["oauth", "token"] | None = None
    body: bytes = b""
    dropped: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the body as text)."""
        return {
            "method": self.method,
            "path": self.path,
            "rawTarget": self.raw_target,
            "headers": dict(self.headers),
            "status": self.status,
            "operation": self.operation,
            "auth": self.auth,
            "body": self.body.decode("utf-8", errors="replace"),
            "dropped": self.dropped,
        }


@dataclass(frozen=True)
class SessionView:
    """A snapshot of one import session (its status evaluated at the time of the snapshot).

    The first four fields are ImportSessionInfo's, with the APS names.

    ``charges`` are the charges stored, in arrival order, as parsed (``number`` fields as
    ``Decimal``); ``closed_at``/``opened_at`` are readings of the simulator's ``clock``.
    """

    importSessionId: int
    status: str
    errorDesc: str | None
    lastUpdateTime: str
    packets_accepted: int
    charges: list[dict[str, Any]]
    duplicates_ignored: int
    opened_at: float
    closed_at: float | None

    def info(self) -> dict[str, Any]:
        """The ImportSessionInfo the API answers for this session."""
        info: dict[str, Any] = {
            "importSessionId": self.importSessionId,
            "status": self.status,
            "lastUpdateTime": self.lastUpdateTime,
        }
        if self.errorDesc is not None:
            info["errorDesc"] = self.errorDesc
        return info

    def to_json(self) -> dict[str, Any]:
        """Everything, for ``GET /_simulator/sessions`` (money stays ``Decimal``: write it with exact JSON)."""
        return {
            **self.info(),
            "errorDesc": self.errorDesc,
            "packetsAccepted": self.packets_accepted,
            "duplicatesIgnored": self.duplicates_ignored,
            "openedAt": self.opened_at,
            "closedAt": self.closed_at,
            "charges": self.charges,
        }


# --------------------------------------------------------------------------------------------
# Internal state
# --------------------------------------------------------------------------------------------


@dataclass
class _Session:
    session_id: int
    opened_at: float
    updated_wall: float
    closed_at: float | None = None
    closed_wall: float | None = None
    fail_reason: str | None = None
    forced: tuple[str, str | None, float] | None = None  # status, errorDesc, wall time
    packets_accepted: int = 0
    duplicates_ignored: int = 0
    charges: list[dict[str, Any]] = field(default_factory=list)
    hashes: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _SignedRequest:
    """What oauthlib's ``verify_hmac_sha1`` reads from a request."""

    uri: str
    http_method: str
    params: list[tuple[str, str]]
    signature: str


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class CloudBlueSimulator(LoopbackServer[CloudBlueFaults, RecordedRequest]):
    """A CloudBlue Commerce brand endpoint on ``http://127.0.0.1:<port>``; see the module docstring.

    >>> with CloudBlueSimulator() as sim:  # doctest: +SKIP
    ...     os.environ["APS_ENDPOINT"] = sim.base_url

    ``clock`` (monotonic seconds, ``time.monotonic`` by default) times the APS token's life and
    session processing; tests may pass a fake one. ``wall_clock`` (``time.time``) is what OAuth
    timestamps are checked against and what ``lastUpdateTime`` shows. ``sleep`` (``time.sleep``) is
    how the ``slow_seconds`` fault waits; tests may pass one they control (one that holds the answer
    until the test releases it) instead of racing a real delay. ``require_uuids`` makes
    ``subscriptionId``, ``accountId`` and ``resourceId`` of charges APS UUIDs.

    ``fired`` counts the faults that actually changed an answer or an outcome (not the faults
    armed), keyed by fault field name: ``server_error_next``, ``server_error_on_packets``,
    ``drop_after_processing_next``, ``gateway_error_next`` (a request answered by the gateway),
    ``slow_seconds`` (a request delayed), ``fail_processing`` and ``inactive_subscription`` (a
    session closed to end ``FAILED_PROCESSED`` because of it) and ``expired_token`` (a request
    refused 401 because the APS token had expired: ``expire_tokens`` or ``token_ttl_seconds``).

    start/stop, ``base_url``, ``faults``/``update_faults`` and ``requests``/``clear_requests`` come
    from :class:`~soracharge_local.simulators.server.LoopbackServer`.
    """

    thread_name = "cloudblue-simulator"
    logger = _log
    json_content_type = _JSON

    def __init__(
        self,
        *,
        auth: AuthMode = "both",
        consumer_key: str = "soracharge-sim",
        consumer_secret: str = "sim-consumer-secret",  # noqa: S107 (a simulator's published credential)
        aps_token: str = "sim-aps-token",  # noqa: S107
        token_ttl_seconds: float = 1800,
        resource_id: str = DEFAULT_RESOURCE_ID,
        processing_seconds: float = 0.0,
        ignore_repeated_ext_hash: bool = False,
        require_uuids: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if auth not in get_args(AuthMode):
            raise ValueError(f"auth must be 'oauth', 'token' or 'both', not {auth!r}")
        if not consumer_key or not consumer_secret or not aps_token:
            raise ValueError("consumer_key, consumer_secret and aps_token must not be empty")
        if not token_ttl_seconds > 0:
            raise ValueError("token_ttl_seconds must be positive")
        if not 0 <= processing_seconds < math.inf:
            raise ValueError("processing_seconds must be a non-negative number")
        self.auth: AuthMode = auth
        self.consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self._aps_token = aps_token
        self.token_ttl_seconds = token_ttl_seconds
        self.resource_id = resource_id
        self.processing_seconds = float(processing_seconds)
        self.ignore_repeated_ext_hash = ignore_repeated_ext_hash
        self.require_uuids = require_uuids
        super().__init__(host=host, port=port, faults=CloudBlueFaults(), check_fault=_check_fault)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep

        self._token_expires_at = clock() + token_ttl_seconds
        self._nonces: dict[tuple[str, str], int] = {}
        self._sessions: dict[int, _Session] = {}
        self._session_ids = itertools.count(1)
        self._import_requests = 0
        self._inactive: set[str] = set()

        prefix = "/aps/2/resources/<aps_id>"
        self._url_map = self._routes(
            [
                Rule("/aps/2/resources", endpoint="discover", methods=["GET"]),
                Rule(f"{prefix}/importSessions", endpoint="sessions", methods=["GET", "POST"]),
                Rule(f"{prefix}/importSessions/<session_id>", endpoint="session", methods=["GET", "PUT"]),
                Rule(f"{prefix}/charges", endpoint="importCharges", methods=["POST"]),
            ],
            [
                Rule("/_simulator/sessions", endpoint="control:sessions", methods=["GET"]),
                Rule("/_simulator/sessions/<session_id>", endpoint="control:session", methods=["PUT"]),
                Rule("/_simulator/expire-tokens", endpoint="control:expire-tokens", methods=["POST"]),
                Rule("/_simulator/renew-token", endpoint="control:renew-token", methods=["POST"]),
                Rule("/_simulator/subscriptions", endpoint="control:subscriptions", methods=["GET"]),
                Rule("/_simulator/subscriptions/<subscription_id>", endpoint="control:subscription", methods=["PUT"]),
                Rule("/_simulator/fired", endpoint="control:fired", methods=["GET", "DELETE"]),
            ],
        )

    def _log_started(self) -> None:
        _log.info("CloudBlue simulator listening on %s (auth %s)", self.base_url, self.auth)

    # -- inspection and control -----------------------------------------------------------------

    @property
    def consumer_secret(self) -> str:
        """The OAuth consumer secret (for the code under test; never logged)."""
        return self._consumer_secret

    @property
    def aps_token(self) -> str:
        """The one APS token this simulator accepts (while it has not expired)."""
        return self._aps_token

    def expire_tokens(self) -> None:
        """The APS token stops working at once (401) until :meth:`renew_token`."""
        with self._lock:
            self._token_expires_at = -math.inf

    def renew_token(self, token: str | None = None) -> str:
        """Make ``token`` (default: the current one) the valid APS token for ``token_ttl_seconds``; return it."""
        if token is not None and not token:
            raise ValueError("the token must not be empty")
        with self._lock:
            if token is not None:
                self._aps_token = token
            self._token_expires_at = self._clock() + self.token_ttl_seconds
            return self._aps_token

    def deactivate_subscription(self, subscription_id: str) -> None:
        """Make a subscription inactive in CloudBlue: sessions closed from now on whose charges name it fail.

        Such a session ends ``FAILED_PROCESSED`` with ``errorDesc`` ``Subscription <id> is not
        active`` (the first such ``subscriptionId`` in charge order). Ids are compared as written.
        """
        _check_subscription_id(subscription_id)
        with self._lock:
            self._inactive.add(subscription_id)

    def activate_subscription(self, subscription_id: str) -> None:
        """The fix in CloudBlue: sessions closed from now on rate this subscription's charges again.

        A session closed while it was inactive stays ``FAILED_PROCESSED``.
        """
        _check_subscription_id(subscription_id)
        with self._lock:
            self._inactive.discard(subscription_id)

    @property
    def inactive_subscriptions(self) -> frozenset[str]:
        """The subscriptions made inactive (CloudBlue's configuration: resetting the faults keeps them)."""
        with self._lock:
            return frozenset(self._inactive)

    def count(self, operation: Operation) -> int:
        """How many recorded requests were of ``operation`` (whatever their outcome)."""
        with self._lock:
            return sum(1 for r in self._requests if r.operation == operation)

    def sessions(self) -> list[SessionView]:
        """Every import session, oldest first."""
        now = self._clock()
        with self._lock:
            return [self._view(s, now) for s in self._sessions.values()]

    def session_ids(self) -> list[int]:
        """Every import session's id, oldest first (without the copies of their charges a view makes)."""
        with self._lock:
            return list(self._sessions)

    def session(self, session_id: int) -> SessionView:
        """One import session; ``KeyError`` when there is none with this id."""
        now = self._clock()
        with self._lock:
            return self._view(self._sessions[session_id], now)

    def charges(self, session_id: int | None = None) -> list[dict[str, Any]]:
        """Every stored charge, in arrival order: of one session, or of all sessions when ``None``."""
        if session_id is not None:
            return self.session(session_id).charges
        return [charge for view in self.sessions() for charge in view.charges]

    def set_session_status(self, session_id: int, status: str, error_desc: str | None = None) -> SessionView:
        """Force a session's status (e.g. ``REPORTED``); it stays there. ``KeyError`` for an unknown id."""
        if status not in SESSION_STATUSES:
            raise ValueError(f"status must be one of {', '.join(SESSION_STATUSES)}, not {status!r}")
        now = self._clock()
        with self._lock:
            session = self._sessions[session_id]
            session.forced = (status, error_desc, self._wall_clock())
            return self._view(session, now)

    # -- sessions ---------------------------------------------------------------------------------

    def _state(self, session: _Session, now: float) -> tuple[str, str | None, float]:
        """(status, errorDesc, wall time of the last change) of ``session`` at ``now``."""
        if session.forced is not None:
            return session.forced
        if session.closed_at is None or session.closed_wall is None:
            return "OPEN", None, session.updated_wall
        elapsed = now - session.closed_at
        total = self.processing_seconds
        if elapsed >= total:
            if session.fail_reason:
                return "FAILED_PROCESSED", session.fail_reason, session.closed_wall + total
            return "PROCESSED", None, session.closed_wall + total
        if elapsed >= total / 2:
            return "PROCESSING", None, session.closed_wall + total / 2
        return "NEW", None, session.closed_wall

    def _info(self, session: _Session, now: float) -> dict[str, Any]:
        """The session's ImportSessionInfo at ``now`` (call with the lock held)."""
        status, error, updated = self._state(session, now)
        info: dict[str, Any] = {
            "importSessionId": session.session_id,
            "status": status,
            "lastUpdateTime": _wall_text(updated),
        }
        if error is not None:
            info["errorDesc"] = error
        return info

    def _view(self, session: _Session, now: float) -> SessionView:
        status, error, updated = self._state(session, now)
        return SessionView(
            importSessionId=session.session_id,
            status=status,
            errorDesc=error,
            lastUpdateTime=_wall_text(updated),
            packets_accepted=session.packets_accepted,
            charges=[stored_charge(c) for c in session.charges],
            duplicates_ignored=session.duplicates_ignored,
            opened_at=session.opened_at,
            closed_at=session.closed_at,
        )

    # -- WSGI -------------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        request = Request(environ)
        raw_target = raw_request_target(environ)
        body = request.get_data(cache=True)
        operation: Operation = "unknown"
        auth: Literal["oauth", "token"] | None = None
        drop = False
        try:
            endpoint, args = self._url_map.bind_to_environ(environ).match()
            operation = _operation(str(endpoint), request.method)
            if operation == "control":
                response = self._control(str(endpoint), args, request)
            else:
                response, auth, drop = self._api(operation, args, request, raw_target, body)
        except (NotFound, MethodNotAllowed) as exc:
            operation = "control" if request.path.startswith("/_simulator/") else "unknown"
            response = self._not_routed(request, exc)
        except HTTPException as exc:  # e.g. a redirect werkzeug's routing wants; not expected
            response = exc.get_response(environ)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            raw_target=raw_target,
            headers={name.lower(): _redacted(name, value) for name, value in request.headers.items()},
            status=response.status_code,
            operation=operation,
            auth=auth,
            body=body,
            dropped=drop,
        )
        self._record(record)
        if drop:
            _drop_connection(environ)
        return cast(Iterator[bytes], response(environ, start_response))

    def _not_routed(self, request: Request, exc: NotFound | MethodNotAllowed) -> Response:
        status = exc.code or 404
        if request.path.startswith("/_simulator/"):
            return _json_response(status, {"message": f"{request.method} {request.path}: no such route"})
        message = "Method not allowed" if status == 405 else f"No such resource path: {request.path}"
        return self._error(status, _CONTROLLER_ERROR, message)

    def _error(self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
        body = {"code": status, "type": error_type, self._faults.error_field_name: message}
        return _json_response(status, body, headers)

    # -- the API ----------------------------------------------------------------------------------

    def _api(
        self, operation: Operation, args: Mapping[str, str], request: Request, raw_target: str, body: bytes
    ) -> tuple[Response, Literal["oauth", "token"] | None, bool]:
        faults = self._faults
        targeted = operation in API_OPERATIONS and faults.only_operation in (None, operation)
        packet = 0
        if operation == "importCharges":
            with self._lock:
                self._import_requests += 1
                packet = self._import_requests
        auth: Literal["oauth", "token"] | None = None
        drop = False
        gateway = self._maybe_gateway_error() if targeted else None
        if gateway is not None and not gateway[1]:
            _log.info("%s: %d from the gateway, not passed on (gateway_error_next)", operation, gateway[0])
            return _gateway_response(gateway[0]), None, False
        server_error_after = False
        try:
            if targeted:
                server_error_after = self._maybe_server_error(operation)
            if packet and packet in faults.server_error_on_packets:
                _log.info("importCharges request #%d: %d (server_error_on_packets)", packet, faults.server_error_status)
                self._fire("server_error_on_packets")
                raise Reply(self._server_error(faults.server_error_status))
            auth = self._authenticate(request, raw_target, body)
            if operation == "discover":
                response = self._discover(raw_target)
            else:
                if args["aps_id"].lower() != self.resource_id.lower():
                    raise Reply(self._error(404, _CONTROLLER_ERROR, f"Resource {args['aps_id']} not found"))
                response = self._operation(operation, args, request, body)
        except Reply as reply:
            response = reply.response
        if server_error_after:  # handled by CloudBlue, which then answered 500 all the same
            _log.info(
                "%s: handled (%d), then answered 500 (server_error_after_processing)", operation, response.status_code
            )
            response = self._error(500, _INTERNAL_ERROR, "Internal server error")
        if gateway is not None:  # handled by CloudBlue; its answer is lost on the way back
            _log.info(
                "%s: handled (%d), answered %d by the gateway (gateway_error_next)",
                operation,
                response.status_code,
                gateway[0],
            )
            response = _gateway_response(gateway[0])
        if operation == "importCharges" and response.status_code == 200:
            with self._lock:
                drop = self._faults.drop_after_processing_next > 0
                if drop:
                    self._faults.drop_after_processing_next -= 1
                    self._fired["drop_after_processing_next"] += 1
            if drop:
                _log.info("importCharges request #%d: stored, connection dropped (drop_after_processing_next)", packet)
        if targeted and faults.slow_seconds > 0:
            self._fire("slow_seconds")
            self._sleep(faults.slow_seconds)
        return response, auth, drop

    def _operation(self, operation: Operation, args: Mapping[str, str], request: Request, body: bytes) -> Response:
        if operation == "openSession":
            return self._open_session()
        if operation == "getSessionByStatus":
            return self._sessions_by_status(request)
        if operation == "importCharges":
            return self._import_charges(request, body)
        session_id = _session_id(args["session_id"])
        if session_id is None:
            return self._error(400, _BAD_REQUEST, f"sessionId must be an integer, got {args['session_id']!r}")
        if operation == "getSession":
            return self._get_session(session_id)
        return self._close_session(session_id)

    def _maybe_gateway_error(self) -> tuple[int, bool] | None:
        """(status, after processing) when the gateway answers this request (``gateway_error_next``), else None."""
        with self._lock:
            faults = self._faults
            if faults.gateway_error_next <= 0:
                return None
            faults.gateway_error_next -= 1
            self._fired["gateway_error_next"] += 1
            return faults.gateway_status, faults.gateway_after_processing

    def _maybe_server_error(self, operation: Operation) -> bool:
        """Answer 500 now (``server_error_next``), or return True to answer it after handling the request."""
        with self._lock:
            if self._faults.server_error_next <= 0:
                return False
            self._faults.server_error_next -= 1
            self._fired["server_error_next"] += 1
            status = self._faults.server_error_status
            if status == 500 and self._faults.server_error_after_processing:
                return True
        _log.info("%s: %d (server_error_next)", operation, status)
        raise Reply(self._server_error(status))

    def _server_error(self, status: int) -> Response:
        if status == 429:
            return self._error(429, _CONTROLLER_ERROR, "Too many requests", {"Retry-After": "1"})
        if status == 503:
            return self._error(503, _CONTROLLER_ERROR, "Service temporarily unavailable", {"Retry-After": "1"})
        return self._error(500, _INTERNAL_ERROR, "Internal server error")

    def _discover(self, raw_target: str) -> Response:
        query = raw_target.partition("?")[2]
        terms = _rql_terms(unquote(query))
        if terms is None:
            return self._error(400, _CONTROLLER_ERROR, f"Cannot parse RQL query: {unquote(query)!r}")
        resources: list[dict[str, Any]] = [{"aps": {"id": self.resource_id, "type": TYPE_ID, "status": "aps:ready"}}]
        offset, limit = 0, len(resources)
        for name, arguments in terms:
            if name == "implementing" and len(arguments) == 1:
                if arguments[0] != TYPE_ID:
                    resources = []
            elif name == "limit" and 1 <= len(arguments) <= 2 and all(_is_digits(a) for a in arguments):
                numbers = [int(a) for a in arguments]
                offset, limit = (0, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
            else:
                return self._error(400, _CONTROLLER_ERROR, f"Unsupported RQL operator: {name}({','.join(arguments)})")
        total = len(resources)
        page = resources[offset : offset + limit]
        content_range = f"items {offset}-{offset + len(page) - 1}/{total}" if page else f"items */{total}"
        return _json_response(200, page, {"Content-Range": content_range})

    def _open_session(self) -> Response:
        now, wall = self._clock(), self._wall_clock()
        with self._lock:
            session = _Session(session_id=next(self._session_ids), opened_at=now, updated_wall=wall)
            self._sessions[session.session_id] = session
            view = self._view(session, now)
        _log.info("import session %d opened", session.session_id)
        return _json_response(200, view.info())

    def _sessions_by_status(self, request: Request) -> Response:
        status = request.args.get("status", "")
        limit_text = request.args.get("limit", "")
        if status and status not in SESSION_STATUSES:
            return self._error(
                400, _BAD_REQUEST, f"status must be one of {', '.join(SESSION_STATUSES)}, got {status!r}"
            )
        limit = DEFAULT_LIMIT
        if limit_text:
            if not _is_digits(limit_text):
                return self._error(400, _BAD_REQUEST, f"limit must be a non-negative integer, got {limit_text!r}")
            limit = int(limit_text)
        now = self._clock()
        with self._lock:  # each session's state only: a view would copy every charge it holds
            infos = [self._info(s, now) for s in self._sessions.values()]
        return _json_response(200, [info for info in infos if not status or info["status"] == status][:limit])

    def _get_session(self, session_id: int) -> Response:
        try:
            view = self.session(session_id)
        except KeyError:
            return self._error(404, _SESSION_NOT_FOUND, f"Import session {session_id} not found")
        return _json_response(200, view.info())

    def _session_if_open(self, session_id: int, now: float, action: str) -> _Session | Response:
        """The session if it exists and is OPEN, else the APS error to answer (call with the lock held)."""
        session = self._sessions.get(session_id)
        if session is None:
            return self._error(404, _SESSION_NOT_FOUND, f"Import session {session_id} not found")
        status = self._state(session, now)[0]
        if status != "OPEN":
            return self._error(
                409, _STATE_ERROR, f"Import session {session_id} is in status {status}, not OPEN: cannot {action}"
            )
        return session

    def _close_session(self, session_id: int) -> Response:
        now, wall = self._clock(), self._wall_clock()
        with self._lock:
            session = self._session_if_open(session_id, now, "close it")
            if isinstance(session, Response):
                return session
            session.closed_at, session.closed_wall = now, wall
            reason, cause = self._faults.fail_processing or None, "fail_processing"
            if reason is None:
                inactive = next(
                    (c["subscriptionId"] for c in session.charges if c.get("subscriptionId") in self._inactive), None
                )
                if inactive is not None:
                    reason, cause = f"Subscription {inactive} is not active", "inactive_subscription"
            session.fail_reason = reason
            if reason is not None:
                self._fired[cause] += 1
        _log.info("import session %d closed (%d charges)", session_id, len(session.charges))
        return _empty_response()

    def _import_charges(self, request: Request, body: bytes) -> Response:
        content_type = request.mimetype
        if content_type != "application/json":
            return self._error(
                415, _BAD_REQUEST, f"Content-Type must be application/json, got {content_type or 'none'}"
            )
        try:
            packet = load_json(body)
        except JsonBodyError as exc:
            return self._error(400, _VALIDATION_ERROR, f"Cannot read the ChargesPacket: {exc}")
        problems = check_charges_packet(packet, require_uuids=self.require_uuids)
        if problems:
            shown = "; ".join(str(p) for p in problems[:20])
            more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
            return self._error(400, _VALIDATION_ERROR, f"Invalid ChargesPacket: {shown}{more}")
        session_id: int = packet["importSessionId"]
        now, wall = self._clock(), self._wall_clock()
        with self._lock:
            session = self._session_if_open(session_id, now, "import")
            if isinstance(session, Response):
                return session
            stored = ignored = 0
            for charge in packet["charges"]:
                ext_hash = charge.get("extHash")
                if ext_hash and ext_hash in session.hashes and self.ignore_repeated_ext_hash:
                    ignored += 1
                    continue
                if ext_hash:
                    session.hashes.add(ext_hash)
                session.charges.append(stored_charge(charge))
                stored += 1
            session.packets_accepted += 1
            session.duplicates_ignored += ignored
            session.updated_wall = wall
        _log.info("import session %d: packet of %d charges (%d repeated extHash ignored)", session_id, stored, ignored)
        return _empty_response()

    # -- authentication ---------------------------------------------------------------------------

    def _authenticate(self, request: Request, raw_target: str, body: bytes) -> Literal["oauth", "token"]:
        """The credential that authenticates ``request``, or a 401 reply.

        Every credential presented must be valid and of an accepted mode (a client sending a bad
        token beside a good signature has a bug worth seeing).
        """
        authorization = request.headers.get("Authorization")
        token = request.headers.get("APS-Token")
        oauth = authorization is not None and authorization[:6].lower() == "oauth "
        if authorization is not None and not oauth:
            self._unauthorized("the Authorization header must use the OAuth scheme")
        if not oauth and token is None:
            self._unauthorized("no credentials: send an OAuth 1.0a Authorization header or an APS-Token header")
        mode: Literal["oauth", "token"] = "oauth"
        if token is not None:
            if self.auth == "oauth":
                self._unauthorized("APS-Token authentication is not enabled on this endpoint")
            self._check_token(token)
            mode = "token"
        if oauth and authorization is not None:
            if self.auth == "token":
                self._unauthorized("OAuth authentication is not enabled on this endpoint")
            self._check_oauth(request, raw_target, body, authorization)
            mode = "oauth"
        return mode

    def _unauthorized(self, reason: str) -> NoReturn:
        _log.info("401: %s", reason)
        headers = {"WWW-Authenticate": 'OAuth realm="aps"'} if self.auth != "token" else None
        raise Reply(self._error(401, _CONTROLLER_ERROR, f"Unauthorized request: {reason}", headers))

    def _check_token(self, token: str) -> None:
        now = self._clock()
        with self._lock:
            valid = hmac.compare_digest(token.encode(), self._aps_token.encode())
            expired = now >= self._token_expires_at
        if not valid:
            self._unauthorized("invalid APS token")
        if expired:
            self._fire("expired_token")
            self._unauthorized("the APS token has expired")

    def _check_oauth(self, request: Request, raw_target: str, body: bytes, authorization: str) -> None:
        raw_path, _, raw_query = raw_target.partition("?")
        if raw_path.startswith(("http://", "https://")):  # absolute-form target
            raw_path = urlsplit(raw_path).path
        try:
            params = [
                (str(name), str(value))
                for name, value in oauth_signature.collect_parameters(
                    uri_query=raw_query, headers={"Authorization": authorization}, exclude_oauth_signature=False
                )
            ]
        except (ValueError, TypeError):
            self._unauthorized("malformed OAuth Authorization header or query")
        protocol: dict[str, str] = {}
        for name, value in params:
            if name.startswith("oauth_"):
                if name in protocol:
                    self._unauthorized(f"duplicate OAuth parameter {name}")
                protocol[name] = value
        missing = [
            name
            for name in (
                "oauth_consumer_key",
                "oauth_signature_method",
                "oauth_timestamp",
                "oauth_nonce",
                "oauth_signature",
            )
            if not protocol.get(name)
        ]
        if missing:
            self._unauthorized(f"missing OAuth parameters: {', '.join(missing)}")
        if protocol["oauth_signature_method"] != "HMAC-SHA1":
            self._unauthorized(f"unsupported oauth_signature_method {protocol['oauth_signature_method']!r}")
        if protocol.get("oauth_version", "1.0") != "1.0":
            self._unauthorized(f"unsupported oauth_version {protocol['oauth_version']!r}")
        if protocol.get("oauth_token"):
            self._unauthorized("two-legged OAuth takes no oauth_token")
        key = protocol["oauth_consumer_key"]
        if not hmac.compare_digest(key.encode(), self.consumer_key.encode()):
            self._unauthorized(f"unknown consumer key {key!r}")
        timestamp_text = protocol["oauth_timestamp"]
        now = self._wall_clock()
        if not _is_digits(timestamp_text) or abs(int(timestamp_text) - now) > OAUTH_TIMESTAMP_WINDOW:
            self._unauthorized(f"oauth_timestamp {timestamp_text} is more than {OAUTH_TIMESTAMP_WINDOW} s off")
        host = (
            request.headers.get("Host") or f"{request.environ.get('SERVER_NAME')}:{request.environ.get('SERVER_PORT')}"
        )
        try:
            signed = _SignedRequest(
                uri=str(oauth_signature.base_string_uri(f"http://{host}{raw_path or '/'}")),
                http_method=request.method,
                params=[(name, value) for name, value in params if name != "oauth_signature"],
                signature=protocol["oauth_signature"],
            )
            valid = bool(oauth_signature.verify_hmac_sha1(signed, client_secret=self._consumer_secret))
        except ValueError:
            valid = False
        if not valid:
            self._unauthorized("invalid OAuth signature")
        if "oauth_body_hash" in protocol:
            expected = base64.b64encode(hashlib.sha1(body).digest()).decode()  # noqa: S324 (OAuth body hash)
            if not hmac.compare_digest(expected, protocol["oauth_body_hash"]):
                self._unauthorized("oauth_body_hash does not match the body")
        nonce = (key, protocol["oauth_nonce"])
        with self._lock:
            self._nonces = {k: t for k, t in self._nonces.items() if t >= now - 2 * OAUTH_TIMESTAMP_WINDOW}
            replayed = nonce in self._nonces
            self._nonces[nonce] = int(timestamp_text)
        if replayed:
            self._unauthorized("oauth_nonce already used (replayed request)")

    # -- /_simulator ------------------------------------------------------------------------------

    def _own_control(self, endpoint: str, args: Mapping[str, str], request: Request) -> Response:
        if endpoint == "control:sessions":
            return _json_response(200, {"sessions": [s.to_json() for s in self.sessions()]})
        if endpoint == "control:session":
            body = json_object(request)
            session_id = _session_id(args["session_id"])
            error_desc = None if body is None else body.get("errorDesc")
            if body is None or session_id is None or not isinstance(error_desc, str | None):
                return _json_response(400, {"message": 'expected {"status": ..., "errorDesc"?: ...}'})
            try:
                view = self.set_session_status(session_id, str(body.get("status")), error_desc)
            except KeyError:
                return _json_response(404, {"message": f"no import session {session_id}"})
            except ValueError as exc:
                return _json_response(400, {"message": str(exc)})
            return _json_response(200, view.to_json())
        if endpoint == "control:expire-tokens":
            self.expire_tokens()
            return _json_response(200, {"expired": True})
        if endpoint == "control:subscriptions":
            return _json_response(200, {"inactive": sorted(self.inactive_subscriptions)})
        if endpoint == "control:subscription":
            return self._control_subscription(args["subscription_id"], json_object(request))
        if endpoint == "control:fired":
            if request.method == "DELETE":
                self.clear_fired()
            return _json_response(200, dict(sorted(self.fired.items())))
        # control:renew-token
        return _json_response(200, {"token": self.renew_token(), "ttlSeconds": self.token_ttl_seconds})

    def _control_subscription(self, subscription_id: str, body: dict[str, Any] | None) -> Response:
        """``PUT /_simulator/subscriptions/{id}`` with ``{"active": true|false}``."""
        expected = 'expected {"active": true} or {"active": false}'
        if body is None:
            return _json_response(400, {"message": f"the body is not a JSON object: {expected}"})
        unknown = sorted(set(body) - {"active"})
        if unknown:
            return _json_response(400, {"message": f"unknown field(s) {', '.join(unknown)}: {expected}"})
        if "active" not in body:
            return _json_response(400, {"message": f'"active" is missing: {expected}'})
        active = body["active"]
        if not isinstance(active, bool):
            return _json_response(400, {"message": f'"active" must be true or false, not {json.dumps(active)}'})
        try:
            if active:
                self.activate_subscription(subscription_id)
            else:
                self.deactivate_subscription(subscription_id)
        except ValueError as exc:
            return _json_response(400, {"message": str(exc)})
        return _json_response(200, {"subscriptionId": subscription_id, "active": active})

    def _control_error(self, status: int, code: str, message: str) -> Response:
        return _json_response(status, {"message": message})  # no SIM000n code: the body has the message only


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _operation(endpoint: str, method: str) -> Operation:
    if endpoint.startswith("control:"):
        return "control"
    if endpoint == "sessions":
        return "openSession" if method == "POST" else "getSessionByStatus"
    if endpoint == "session":
        return "closeSession" if method == "PUT" else "getSession"
    return cast(Operation, endpoint)  # discover, importCharges


_COUNTERS: Final = frozenset({"server_error_next", "drop_after_processing_next", "gateway_error_next"})


def _check_fault(name: str, value: Any) -> Any:
    if name in _COUNTERS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer")
        return value
    if name == "server_error_on_packets":
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
        ):
            raise ValueError("server_error_on_packets must be a list of positive integers (1-based)")
        return list(value)
    if name == "slow_seconds":
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError("slow_seconds must be a non-negative number")
        return float(value)
    if name == "only_operation":
        if value is not None and value not in API_OPERATIONS:
            raise ValueError(f"only_operation must be null or one of {', '.join(sorted(API_OPERATIONS))}")
        return value
    if name == "fail_processing":
        if value is not None and not isinstance(value, str):
            raise ValueError("fail_processing must be null or a string")
        return value
    if name == "server_error_status":
        if not isinstance(value, int) or isinstance(value, bool) or value not in (429, 500, 503):
            raise ValueError(f"server_error_status must be 429, 500 or 503, not {json.dumps(value)}")
        return value
    if name == "gateway_status":
        if not isinstance(value, int) or isinstance(value, bool) or value not in _GATEWAY_REASONS:
            raise ValueError(f"gateway_status must be 502 or 504, not {json.dumps(value)}")
        return value
    if name in ("gateway_after_processing", "server_error_after_processing"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if not isinstance(value, str) or not value:  # error_field_name
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _check_subscription_id(subscription_id: str) -> None:
    if not isinstance(subscription_id, str) or not subscription_id:
        raise ValueError("the subscription id must be a non-empty string")


def _rql_terms(query: str) -> list[tuple[str, list[str]]] | None:
    """The top-level ``name(arg,...)`` terms of an RQL query joined by ``&`` or ``,``; None if malformed.

    Arguments are kept as text (a type id holds ``/`` and ``:``, never parentheses or commas).
    """
    terms: list[tuple[str, list[str]]] = []
    position = 0
    while position < len(query):
        open_at = query.find("(", position)
        close_at = query.find(")", open_at + 1) if open_at >= 0 else -1
        name = query[position:open_at] if open_at >= 0 else ""
        if close_at < 0 or not name.isidentifier() or "(" in query[open_at + 1 : close_at]:
            return None
        inner = query[open_at + 1 : close_at]
        terms.append((name, inner.split(",") if inner else []))
        position = close_at + 1
        if position < len(query):
            if query[position] not in "&,":
                return None
            position += 1
            if position == len(query):
                return None
    return terms


def _session_id(text: str) -> int | None:
    return int(text) if _is_digits(text) and len(text) < 19 else None


def _is_digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²`` and other digits ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _redacted(name: str, value: str) -> str:
    if name.lower() not in _SENSITIVE_HEADERS:
        return value
    if name.lower() == "authorization" and value[:6].lower() == "oauth ":
        return f"OAuth {_REDACTED}"
    return _REDACTED


def _drop_connection(environ: WSGIEnvironment) -> None:
    """Close the client's connection without a byte of response, then tell werkzeug it was dropped.

    werkzeug's dev server puts the socket in ``werkzeug.socket``; shutting it down sends a FIN, so
    the client reads end-of-stream where the status line should be (httpx: RemoteProtocolError
    "Server disconnected without sending a response"). Raising ``ConnectionAbortedError`` before
    ``start_response`` makes werkzeug treat the request as a dropped connection and write nothing.
    """
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("connection dropped on purpose (drop_after_processing_next)")


def _wall_text(seconds: float) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%SZ}"


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, body, headers, content_type=_JSON)


def _gateway_response(status: int) -> Response:
    """The gateway's answer in front of CloudBlue: nginx's HTML error page, not an APS error."""
    title = f"{status} {_GATEWAY_REASONS.get(status, 'Bad Gateway')}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    response = Response(page, status=status)
    response.headers["Content-Type"] = "text/html"
    return response


def _empty_response() -> Response:
    response = Response(b"", status=200)
    del response.headers["Content-Type"]
    return response


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator in the foreground until Ctrl-C (``python -m soracharge_local.simulators.cloudblue``)."""
    parser = argparse.ArgumentParser(
        prog="python -m soracharge_local.simulators.cloudblue",
        description="A local CloudBlue Commerce stand-in (ChargesImportManager APS API, OAuth 1.0a and APS-Token).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (0 picks a free one; default 8081)")
    parser.add_argument("--auth", choices=list(get_args(AuthMode)), default="both", help="accepted credentials")
    parser.add_argument("--consumer-key", default="soracharge-sim")
    parser.add_argument("--consumer-secret", default="sim-consumer-secret")
    parser.add_argument("--aps-token", default="sim-aps-token")
    parser.add_argument("--token-ttl-seconds", type=float, default=1800, help="life of the APS token (default 1800)")
    parser.add_argument("--resource-id", default=DEFAULT_RESOURCE_ID, help="aps.id of the ChargesImportManager")
    parser.add_argument(
        "--processing-seconds", type=float, default=2.0, help="closed session to PROCESSED (default 2; NEW, PROCESSING)"
    )
    parser.add_argument(
        "--ignore-repeated-ext-hash",
        action="store_true",
        help="drop a charge whose extHash the session holds (kinder than CloudBlue promises: it keeps them by default)",
    )
    parser.add_argument("--no-require-uuids", action="store_true", help="accept ids of charges that are not UUIDs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    sim = CloudBlueSimulator(
        auth=args.auth,
        consumer_key=args.consumer_key,
        consumer_secret=args.consumer_secret,
        aps_token=args.aps_token,
        token_ttl_seconds=args.token_ttl_seconds,
        resource_id=args.resource_id,
        processing_seconds=args.processing_seconds,
        ignore_repeated_ext_hash=args.ignore_repeated_ext_hash,
        require_uuids=not args.no_require_uuids,
        host=args.host,
        port=args.port,
    )
    base_url = sim.start()
    print(f"CloudBlue simulator on {base_url} (auth {sim.auth}, ChargesImportManager {sim.resource_id})")
    print(f"  APS_ENDPOINT={base_url}")
    print(f"  APS_RESOURCE_ID={sim.resource_id}")
    if sim.auth != "token":
        print(f"  APS_OAUTH_CONSUMER_KEY={sim.consumer_key}")
        print(f"  APS_OAUTH_CONSUMER_SECRET={sim.consumer_secret}")
    if sim.auth != "oauth":
        print(f"  APS_TOKEN={sim.aps_token}  (valid {sim.token_ttl_seconds:g} s; POST /_simulator/renew-token)")
    print(f"  faults: GET/PUT/DELETE {base_url}/_simulator/faults; sessions: GET {base_url}/_simulator/sessions")
    return run_in_foreground(sim)


if __name__ == "__main__":
    raise SystemExit(main())
