"""What the loopback simulators share: serving a WSGI app on a daemon thread, recording, faults, JSON.

:class:`~soracharge_local.simulators.soracom.SoracomSimulator` and
:class:`~soracharge_local.simulators.cloudblue.CloudBlueSimulator` are each a WSGI application (their
``__call__``) built on :class:`LoopbackServer`, which runs it in werkzeug's threaded development
server and gives both the same lifecycle::

    sim.start()          bind (port 0 picks a free one), serve on a daemon thread, return sim.base_url
    sim.stop()           shut down and join the thread (idempotent); base_url stays readable
    with sim: ...        start() and stop() around a block
    sim.serve_forever()  start if needed and block until Ctrl-C (what ``python -m ...`` runs)

:class:`LoopbackServer` also holds what both keep the same way: the lock, the fault switches
(``sim.faults``, ``update_faults``) with their ``/_simulator/faults`` endpoint, and the recorded
requests (``sim.requests``, ``clear_requests``) with their ``/_simulator/requests`` endpoint. What
the simulated services answer, and how requests are routed and recorded, stays in each simulator.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar
from urllib.parse import urlsplit

from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "Faults",
    "LoopbackServer",
    "QuietRequestHandler",
    "Recorded",
    "Reply",
    "json_object",
    "json_response",
    "json_text",
    "raw_request_target",
    "run_in_foreground",
    "stopped_by_signals",
]

_log = logging.getLogger(__name__)


class Faults(Protocol):
    """A simulator's fault switches: a dataclass whose fields are the switches."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what ``GET /_simulator/faults`` answers)."""
        ...


class Recorded(Protocol):
    """One recorded request, as ``GET /_simulator/requests`` lists it."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        ...


FaultsT = TypeVar("FaultsT", bound=Faults)
RecordT = TypeVar("RecordT", bound=Recorded)


class Reply(Exception):
    """Raised inside a handler to answer at once with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, logging to the simulator's logger at DEBUG, with paths only (URLs carry tokens)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._logger().debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        self._logger().log(logging.WARNING if type == "error" else logging.DEBUG, message, *args)

    def _logger(self) -> logging.Logger:
        app = self.server.app
        return app.logger if isinstance(app, LoopbackServer) else _log


class LoopbackServer(ABC, Generic[FaultsT, RecordT]):
    """A WSGI application that serves itself on ``http://<host>:<port>``; see the module docstring.

    A subclass (a simulator):

    - implements ``__call__``, the WSGI application, and appends each request it answers with
      :meth:`_record`;
    - builds its URL map with :meth:`_routes`, which adds ``/_simulator/faults`` and
      ``/_simulator/requests``, and hands ``control:*`` endpoints to :meth:`_control`, which
      answers those two and passes the simulator's own to :meth:`_own_control`;
    - says how its ``/_simulator`` errors look (:meth:`_control_error`) and what JSON content type
      it answers with (``json_content_type``);
    - names its serving thread (``thread_name``) and logger (``logger``, also used by the request
      handler) and may log its start its own way (:meth:`_log_started`);
    - passes its initial ``faults`` (a :class:`Faults` dataclass) and ``check_fault(name, value)``,
      which validates one field for :meth:`update_faults`: it returns the value to store or raises
      ``ValueError``.

    ``_lock`` guards the recorded requests and the fault counters; a simulator uses it for its own
    state too.
    """

    #: The name of the thread that serves requests.
    thread_name: ClassVar[str] = "loopback-server"
    #: Where the simulator and its request handler log.
    logger: ClassVar[logging.Logger] = _log
    #: The ``Content-Type`` of the JSON ``/_simulator/*`` answers.
    json_content_type: ClassVar[str] = "application/json"

    def __init__(self, *, host: str, port: int, faults: FaultsT, check_fault: Callable[[str, Any], Any]) -> None:
        self.host = host
        self.port = port
        self._faults = faults
        self._faults_type = type(faults)
        self._check_fault = check_fault
        self._lock = threading.Lock()
        self._requests: list[RecordT] = []
        self._fired: Counter[str] = Counter()
        self._server: BaseWSGIServer | None = None
        self._base_url: str | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request (the WSGI application)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving on a daemon thread; return :attr:`base_url`."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        server = make_server(self.host, self.port, self, threaded=True, request_handler=QuietRequestHandler)
        self._server = server
        # A wildcard listen address is reached through loopback (this binds nothing).
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)  # noqa: S104
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        self._base_url = f"http://{host}:{server.server_port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        self._log_started()
        return self.base_url

    def _log_started(self) -> None:
        """Log that the simulator is listening (once :attr:`base_url` is known)."""
        self.logger.info("%s listening on %s", type(self).__name__, self.base_url)

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def serve_forever(self) -> None:
        """Start if needed and block until Ctrl-C (KeyboardInterrupt), then stop."""
        if self._server is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``, no slash at the end (``SORACOM_ENDPOINT``, ``APS_ENDPOINT``); kept after stop()."""
        if self._base_url is None:
            raise RuntimeError("the simulator was never started: call start() first")
        return self._base_url

    # -- faults ---------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultsT:
        """The live fault switches (mutable)."""
        return self._faults

    @faults.setter
    def faults(self, value: FaultsT) -> None:
        self._faults = value

    def update_faults(self, updates: Mapping[str, Any]) -> FaultsT:
        """Validate ``updates`` (fault field -> value) and apply them all, or none on error."""
        valid = {f.name for f in dataclasses.fields(self._faults_type)}
        checked: dict[str, Any] = {}
        for name, value in updates.items():
            if name not in valid:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(valid))})")
            checked[name] = self._check_fault(name, value)
        with self._lock:
            for name, value in checked.items():
                setattr(self._faults, name, value)
        return self._faults

    # -- faults that fired -----------------------------------------------------------------------

    @property
    def fired(self) -> Counter[str]:
        """How many times each fault fired (changed an answer or an outcome), a copy: the simulators name the keys."""
        with self._lock:
            return Counter(self._fired)

    def clear_fired(self) -> None:
        """Forget how many times the faults fired."""
        with self._lock:
            self._fired.clear()

    def _fire(self, fault: str) -> None:
        with self._lock:
            self._fired[fault] += 1

    # -- recorded requests ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordT]:
        """A snapshot of every request recorded so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests (only them: CloudBlue's ``server_error_on_packets`` keeps counting)."""
        with self._lock:
            self._requests.clear()

    def _record(self, record: RecordT) -> None:
        with self._lock:
            self._requests.append(record)

    # -- routes and /_simulator ----------------------------------------------------------------

    @staticmethod
    def _routes(api: Iterable[Rule], control: Iterable[Rule]) -> Map:
        """The URL map: the ``api`` rules, ``/_simulator/faults`` and ``/_simulator/requests``, then ``control``.

        ``/_simulator`` endpoints are named ``control:<name>`` and answered by :meth:`_control`.
        Paths are matched as sent: no redirect to add or drop a trailing slash, no merged slashes.
        """
        shared = [
            Rule("/_simulator/faults", endpoint="control:faults", methods=["GET", "PUT", "DELETE"]),
            Rule("/_simulator/requests", endpoint="control:requests", methods=["GET", "DELETE"]),
        ]
        return Map([*api, *shared, *control], strict_slashes=False, merge_slashes=False)

    def _control(self, endpoint: str, args: Mapping[str, str], request: Request) -> Response:
        """Answer a ``/_simulator`` request: faults and requests here, the simulator's own in :meth:`_own_control`."""
        if endpoint == "control:faults":
            return self._control_faults(request)
        if endpoint == "control:requests":
            return self._control_requests(request)
        return self._own_control(endpoint, args, request)

    @abstractmethod
    def _own_control(self, endpoint: str, args: Mapping[str, str], request: Request) -> Response:
        """Answer one of the simulator's own ``/_simulator`` endpoints (the ``control`` rules of :meth:`_routes`)."""

    def _control_faults(self, request: Request) -> Response:
        """``GET``, ``PUT`` (merge a JSON object of fields) or ``DELETE`` (all off) ``/_simulator/faults``."""
        if request.method == "PUT":
            body = json_object(request)
            if body is None:
                return self._control_error(400, "SIM0002", "expected a JSON object of fault fields")
            try:
                self.update_faults(body)
            except (TypeError, ValueError) as exc:
                return self._control_error(400, "SIM0003", str(exc))
        elif request.method == "DELETE":
            self.update_faults(self._faults_type().to_json())
        return self._control_json(200, self._faults.to_json())

    def _control_requests(self, request: Request) -> Response:
        """``GET`` or ``DELETE`` (forget them) ``/_simulator/requests``."""
        if request.method == "DELETE":
            self.clear_requests()
        return self._control_json(200, {"requests": [r.to_json() for r in self.requests]})

    def _control_json(self, status: int, body: Any) -> Response:
        return json_response(status, body, content_type=self.json_content_type)

    @abstractmethod
    def _control_error(self, status: int, code: str, message: str) -> Response:
        """A ``/_simulator/*`` error in the simulator's style; ``code`` is a ``SIM000n`` it may show."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def raw_request_target(environ: WSGIEnvironment) -> str:
    """The request target exactly as on the request line (werkzeug's ``RAW_URI``).

    werkzeug stores it through the WSGI "encoding dance" (UTF-8 bytes seen as latin-1); undo it to
    get back the string http.server read (the raw bytes decoded as latin-1).
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str):
        query = environ.get("QUERY_STRING", "")
        return str(environ.get("PATH_INFO", "")) + (f"?{query}" if query else "")
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or ``None`` when it is not one (an empty body included)."""
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def json_text(value: Any) -> str:
    """JSON text in which a ``Decimal`` is written exactly (``28734.56``, ``0.30``: never a float artefact).

    A ``Decimal`` is written in plain notation, never with an exponent (``format(value, "f")``).
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as JSON")
        return format(value, "f")
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}: {json_text(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(json_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None, *, content_type: str = "application/json"
) -> Response:
    """A response with ``body`` as :func:`json_text`."""
    return Response(json_text(body), status=status, headers=dict(headers or {}), content_type=content_type)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def run_in_foreground(server: LoopbackServer[Any, Any]) -> int:
    """The end of a simulator's ``main``: serve until Ctrl-C or SIGTERM, stop, and return the exit status."""
    print("Press Ctrl-C to stop.", flush=True)
    with stopped_by_signals():
        server.serve_forever()
    return 0


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Inside, Ctrl-C (SIGINT) and ``kill <pid>`` (SIGTERM) raise KeyboardInterrupt in the main thread, whatever
    the process inherited: a shell without job control starts a background job (``soracharge simulate &``) with
    SIGINT ignored, and Python then leaves it ignored, so a server started so would not stop on Ctrl-C. The
    handlers before are put back after. Off the main thread (where no handler can be set) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {each: signal.signal(each, _interrupt) for each in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for each, handler in before.items():
            signal.signal(each, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
