"""Runs moto's Lambda functions in this process instead of in Docker.

moto executes Lambda code only in Docker, which these machines lack. We replace the one private
method ``moto.awslambda.models.LambdaFunction._invoke_lambda`` with a runner that imports the
function's SAM ``Handler`` from its ``CodeUri`` folder and calls it with the event and a context.
An exception becomes the Python runtime's error payload ``{errorMessage, errorType, stackTrace}``
with ``errored=True``, so Step Functions' Retry/Catch see the exception's class name exactly as on
AWS, and Task states, ``lambda.invoke`` and S3 notifications all reach our handlers.

moto is pinned exactly in pyproject.toml; ``tests/integration/test_local_engine.py`` fails loudly
if the patched method disappears or changes its signature.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from moto.awslambda.models import LambdaFunction

#: Variables a function only gets from its own configuration, as in a Lambda sandbox: the caller's
#: shell (a developer's own SORACOM_AUTH_KEY, say) must not leak into a local invocation.
FUNCTION_ONLY_PREFIXES = ("SORACOM_", "APS_", "SORACHARGE_", "IMPORT_", "POWERTOOLS_")

#: The signature the patch replaces; checked when the patch is installed.
EXPECTED_SIGNATURE = "(self, event: 'str | None' = None) -> 'tuple[str, bool, str]'"


@dataclass(frozen=True)
class DeployedFunction:
    """Where a deployed function's code lives on disk, and what its environment adds locally."""

    logical_id: str
    code_dir: Path
    handler: str


@dataclass
class Invocation:
    function: str
    event: Any
    result: Any
    error_type: str | None
    duration_ms: float


@dataclass
class LocalContext:
    """The fields of the Lambda context object that Powertools and our handlers read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


#: Held while an in-process Lambda's variables are set in os.environ (the process's one environment, so one lock
#: for every runner). Code that reads the environment natively on another thread must hold it too: libc's setenv
#: can free the environment a concurrent getenv reads, and polars reads its POLARS_* variables from Rust at each
#: query (a test planning its expected charges while a Lambda ran died of SIGSEGV, twice in five full runs).
ENVIRONMENT_LOCK = threading.RLock()


class InProcessLambdaRunner:
    """Registry of deployed functions plus the replacement for ``_invoke_lambda``.

    Invocations are serialised (one at a time): each runs with its function's environment
    variables applied to ``os.environ``, as a Lambda sandbox would, and settings are read at call
    time, so two functions must not overlap in one process.
    """

    def __init__(self, environment_overrides: Mapping[str, str] | None = None) -> None:
        self.functions: dict[str, DeployedFunction] = {}
        self.environment_overrides = dict(environment_overrides or {})
        self.invocations: list[Invocation] = []
        #: Called with (logical id, event) before each invocation: a seam for tests that inject a
        #: fault at a precise point of a run (a token expiring between two states, say).
        self.before_invoke: list[Callable[[str, Any], None]] = []
        #: Called after each invocation, whatever its outcome (the engine clears per-invocation state).
        self.after_invoke: list[Callable[[], None]] = []
        self._modules: dict[tuple[Path, str], ModuleType] = {}
        #: Held for each invocation, which sets its function's variables in os.environ: whoever reads
        #: os.environ whole on another thread (boto3 creating a client reads the proxy variables) holds it.
        self.environment_lock = ENVIRONMENT_LOCK
        self._original: Callable[..., tuple[str, bool, str]] | None = None

    def register(self, function_name: str, function: DeployedFunction) -> None:
        self.functions[function_name] = function

    @contextmanager
    def installed(self) -> Iterator[InProcessLambdaRunner]:
        original = LambdaFunction.__dict__.get("_invoke_lambda")
        if original is None:
            raise RuntimeError(
                "moto.awslambda.models.LambdaFunction._invoke_lambda is gone: the in-process Lambda "
                "runner cannot be installed with this moto version (pinned in pyproject.toml)"
            )
        signature = str(inspect.signature(original))
        if signature != EXPECTED_SIGNATURE:
            raise RuntimeError(
                f"moto changed LambdaFunction._invoke_lambda to {signature}; the in-process runner "
                f"was written for {EXPECTED_SIGNATURE}"
            )
        runner = self

        def _invoke_lambda(function: LambdaFunction, event: str | None = None) -> tuple[str, bool, str]:
            return runner.invoke(function, event)

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]

    def invoke(self, function: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        deployed = self.functions.get(function.function_name)
        if deployed is None:
            payload = {
                "errorMessage": f"no local code is registered for function {function.function_name}",
                "errorType": "Runtime.HandlerNotFound",
            }
            return json.dumps(payload), True, ""
        if isinstance(event, (str, bytes)):
            event = json.loads(event or "{}")
        context = LocalContext(
            function_name=function.function_name,
            memory_limit_in_mb=int(function.memory_size or 128),
            invoked_function_arn=function.function_arn,
            timeout_seconds=int(function.timeout or 3),
        )
        environment = {
            "AWS_REGION": function.region,
            "AWS_DEFAULT_REGION": function.region,
            **{key: str(value) for key, value in (function.environment_vars or {}).items()},
            **self.environment_overrides,
        }
        started = time.perf_counter()
        # The variables to hide are read from os.environ once the lock is held (a with statement evaluates each
        # item after entering the one before): os.environ is read whole only under it, as it is changed.
        with self.environment_lock, applied_environment(environment, hide=_function_only(environment)):
            for hook in self.before_invoke:
                hook(deployed.logical_id, event)
            try:
                handler = self._handler(deployed)
                result = handler(event, context)
            except Exception as exc:  # noqa: BLE001 - every exception becomes the runtime's error payload
                error = {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "requestId": context.aws_request_id,
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                }
                self._record(deployed, event, error, type(exc).__name__, started)
                return json.dumps(error), True, ""
            finally:
                for after in self.after_invoke:
                    after()
        self._record(deployed, event, result, None, started)
        return json.dumps(result), False, ""

    def _record(self, deployed: DeployedFunction, event: Any, result: Any, error: str | None, started: float) -> None:
        duration = (time.perf_counter() - started) * 1000
        self.invocations.append(Invocation(deployed.logical_id, event, result, error, duration))

    def _handler(self, deployed: DeployedFunction) -> Callable[[Any, Any], Any]:
        module_name, _, attribute = deployed.handler.rpartition(".")
        key = (deployed.code_dir, module_name)
        module = self._modules.get(key)
        if module is None:
            module = load_handler_module(deployed.code_dir, module_name, deployed.logical_id)
            self._modules[key] = module
        handler: Callable[[Any, Any], Any] = getattr(module, attribute)
        return handler


def load_handler_module(code_dir: Path, module_name: str, unique_name: str) -> ModuleType:
    """Import ``<code_dir>/<module_name>.py`` under a unique name (every function has an ``app.py``)."""
    path = code_dir / (module_name.replace(".", "/") + ".py")
    qualified = f"soracharge_functions.{unique_name}.{module_name}"
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import handler module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def _function_only(environment: Mapping[str, str]) -> list[str]:
    """The variables of another function (or of the shell) that this invocation must not see."""
    return [name for name in os.environ if name.startswith(FUNCTION_ONLY_PREFIXES) and name not in environment]


@contextmanager
def applied_environment(values: Mapping[str, str], hide: Iterable[str] = ()) -> Iterator[None]:
    """Set ``values`` (and unset ``hide``) in ``os.environ`` for the duration, then put back what was there."""
    hidden = list(hide)
    saved = {key: os.environ.get(key) for key in [*values, *hidden]}
    for key in hidden:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
