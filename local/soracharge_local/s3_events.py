"""S3 notifications to Lambda as AWS delivers them: asynchronous, AWS-shaped, retried twice.

moto builds a reduced event (no ``versionId``, ``sequencer``, ``userIdentity``,
``requestParameters`` or ``responseElements``: Powertools' S3 model rejects it) and invokes the
function synchronously inside the S3 request, swallowing its errors. On AWS the event carries
the object's version and is delivered asynchronously, and a failed invocation is retried twice.
Two private functions of ``moto.s3.notifications`` are replaced to match (moto is pinned; the
engine's tests fail loudly if either disappears):

- ``_get_s3_event`` gets the missing fields added;
- ``_invoke_awslambda`` hands the event to :class:`AsyncInvoker`, which delivers events one at a
  time on its own thread, after the S3 call that caused them has returned.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from moto.awslambda.models import LambdaFunction
from moto.awslambda.utils import get_backend
from moto.s3 import notifications

#: Lambda retries a failed asynchronous invocation twice.
ASYNC_RETRIES = 2


@dataclass
class Delivery:
    function_name: str
    event: dict[str, Any]
    attempts: int = 0
    error: str | None = None
    result: Any = None


@dataclass
class AsyncInvoker:
    """A queue of asynchronous invocations, delivered in order by one worker thread."""

    retry_delay_seconds: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    #: Called with the function, the delivery and the last error payload once the retries are exhausted.
    on_failure: Callable[[LambdaFunction, Delivery, dict[str, Any] | None], None] | None = None

    def __post_init__(self) -> None:
        self._queue: list[tuple[LambdaFunction, Delivery]] = []
        self._functions: dict[str, LambdaFunction] = {}
        self._condition = threading.Condition()
        self._busy = False
        self._worker: threading.Thread | None = None

    def redeliver(self, delivery: Delivery) -> Delivery:
        """Deliver the very same event again (S3 duplicates events; a person may replay one)."""
        return self.submit(self._functions[delivery.function_name], delivery.event)

    def invoke(self, function_name: str, event: dict[str, Any]) -> Delivery:
        """``aws lambda invoke --invocation-type Event`` of a function this invoker has delivered to before."""
        try:
            function = self._functions[function_name]
        except KeyError:
            raise KeyError(f"no asynchronous delivery to {function_name} yet: {sorted(self._functions)}") from None
        return self.submit(function, event)

    def submit(self, function: LambdaFunction, event: dict[str, Any]) -> Delivery:
        delivery = Delivery(function.function_name, event)
        self._functions[function.function_name] = function
        with self._condition:
            self.deliveries.append(delivery)
            self._queue.append((function, delivery))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="lambda-async-invoker", daemon=True)
                self._worker.start()
            self._condition.notify_all()
        return delivery

    def wait_idle(self, timeout_seconds: float = 600) -> None:
        """Block until every submitted event was delivered (or gave up after its retries)."""
        deadline = time.monotonic() + timeout_seconds
        with self._condition:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"asynchronous invocations still pending after {timeout_seconds} s")
                self._condition.wait(remaining)

    def _work(self) -> None:
        while True:
            with self._condition:
                if not self._queue:
                    self._worker = None
                    self._condition.notify_all()
                    return
                function, delivery = self._queue.pop(0)
                self._busy = True
            try:
                self._deliver(function, delivery)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _deliver(self, function: LambdaFunction, delivery: Delivery) -> None:
        for attempt in range(1 + ASYNC_RETRIES):
            if attempt:
                time.sleep(self.retry_delay_seconds)
            delivery.attempts += 1
            headers: dict[str, str] = {}
            payload = function.invoke(json.dumps(delivery.event), {"x-amz-invocation-type": "Event"}, headers)
            try:
                result = json.loads(payload) if payload else None
            except ValueError:
                result = {"errorType": "Runtime.InvalidResponse", "errorMessage": str(payload)[:500]}
            if "x-amz-function-error" not in headers:
                delivery.error, delivery.result = None, result
                return
            delivery.error = f"{result.get('errorType')}: {result.get('errorMessage')}" if result else "error"
        if self.on_failure is not None:
            self.on_failure(function, delivery, result if isinstance(result, dict) else None)


@contextmanager
def aws_shaped_async_s3_events(invoker: AsyncInvoker) -> Iterator[None]:
    """Replace moto's S3-to-Lambda delivery while the context is active."""
    original_event: Callable[..., dict[str, Any]] | None = getattr(notifications, "_get_s3_event", None)
    original_invoke: Callable[..., None] | None = getattr(notifications, "_invoke_awslambda", None)
    if original_event is None or original_invoke is None:
        raise RuntimeError(
            "moto.s3.notifications no longer has _get_s3_event/_invoke_awslambda: the local engine's S3 event "
            "delivery cannot be installed with this moto version (pinned in pyproject.toml)"
        )
    sequence = itertools.count(1)

    def aws_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = original_event(event_name, bucket, key, notification_id)
        for record in event["Records"]:
            record["userIdentity"] = {"principalId": "AWS:AIDAEXAMPLELOCAL"}
            record["requestParameters"] = {"sourceIPAddress": "127.0.0.1"}
            record["responseElements"] = {"x-amz-request-id": "LOCAL", "x-amz-id-2": "LOCAL"}
            record["s3"]["bucket"]["ownerIdentity"] = {"principalId": "AIDAEXAMPLELOCAL"}
            if getattr(key, "version_id", None) and key.version_id != "null":
                record["s3"]["object"]["versionId"] = key.version_id
            record["s3"]["object"]["sequencer"] = f"{next(sequence):018X}"
        return event

    def deliver_later(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        function = get_backend(account_id, region_name).get_function(fn_arn)
        invoker.submit(function, event_body)

    notifications._get_s3_event = aws_event
    notifications._invoke_awslambda = deliver_later
    try:
        yield
    finally:
        notifications._get_s3_event = original_event
        notifications._invoke_awslambda = original_invoke
