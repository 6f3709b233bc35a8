"""Where AWS sends what a function or an execution did: EventBridge rules and Lambda destinations.

moto records EventBridge rules and Lambda's EventInvokeConfig but delivers neither to a Lambda
function, and its Step Functions never emit status-change events. On AWS:

- when an execution ends, EventBridge receives a ``Step Functions Execution Status Change`` event
  (``source: aws.states``) and hands it to the targets of every rule whose pattern matches it,
  invoking a Lambda target asynchronously;
- when an asynchronous invocation fails after its retries, Lambda sends an on-failure record
  (``requestContext``, ``requestPayload``, ``responseContext``, ``responsePayload``) to the
  function's on-failure destination: another function (invoked asynchronously) or an SNS topic.

:func:`execution_status_events` replaces one method of moto's execution worker (moto is pinned; it
fails loudly if the method disappears) so every execution that ends calls back with its AWS-shaped
event; :class:`EventRouter` matches it against the stack's rules with moto's own pattern matcher,
and builds the on-failure records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import boto3
from moto.awslambda.models import LambdaFunction
from moto.awslambda.utils import get_backend
from moto.events.models import events_backends
from moto.stepfunctions.parser.backend import execution as moto_execution

from soracharge_local.s3_events import AsyncInvoker, Delivery

#: The statuses EventBridge reports when an execution ends.
_ENDED = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def _status(execution: Any) -> str:
    status = execution.exec_status
    return str(getattr(status, "value", status))  # moto's ExecutionStatus is a str Enum


def _millis(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment else None


def status_change_event(execution: Any, account_id: str, region: str) -> dict[str, Any]:
    """The EventBridge event AWS emits for an execution that ended, from moto's execution object."""
    status = _status(execution)
    described = execution.to_describe_output()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [execution.exec_arn],
        "detail": {
            "executionArn": execution.exec_arn,
            "stateMachineArn": execution.state_machine.arn,
            "name": execution.name,
            "status": status,
            "startDate": _millis(execution.start_date),
            "stopDate": _millis(execution.stop_date),
            "input": described.get("input"),
            "output": described.get("output"),
            "inputDetails": {"included": True},
            "outputDetails": {"included": True} if described.get("output") else None,
            "error": described.get("error"),
            "cause": described.get("cause"),
        },
    }


@contextmanager
def execution_status_events(on_end: Callable[[Any], None]) -> Iterator[None]:
    """Call ``on_end(execution)`` whenever a moto execution ends, after its status is set."""
    communication = getattr(moto_execution, "BaseExecutionWorkerCommunication", None)
    original = getattr(communication, "terminated", None)
    if communication is None or original is None:
        raise RuntimeError(
            "moto.stepfunctions.parser.backend.execution.BaseExecutionWorkerCommunication.terminated is gone: the "
            "local engine cannot emit execution status events with this moto version (pinned in pyproject.toml)"
        )

    def terminated(self: Any) -> None:
        original(self)
        if _status(self.execution) in _ENDED:
            on_end(self.execution)

    communication.terminated = terminated
    try:
        yield
    finally:
        communication.terminated = original


class EventRouter:
    """Delivers EventBridge events to Lambda targets, and failed async invocations to their destinations."""

    def __init__(self, invoker: AsyncInvoker, account_id: str, region: str) -> None:
        self.invoker = invoker
        self.account_id = account_id
        self.region = region
        #: function name -> on-failure destination ARN (from the template's EventInvokeConfig).
        self.on_failure: dict[str, str] = {}
        #: Events put on the bus, whether or not a rule matched (tests look at them).
        self.events: list[dict[str, Any]] = []

    def execution_ended(self, execution: Any) -> None:
        self.put(status_change_event(execution, self.account_id, self.region))

    def put(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to the Lambda targets of every enabled rule of the default bus that matches it."""
        self.events.append(event)
        bus = events_backends[self.account_id][self.region].event_buses["default"]
        for rule in list(bus.rules.values()):
            if rule.state != "ENABLED" or not rule.event_pattern.matches_event(cast(Any, event)):
                continue
            for target in rule.targets:
                if ":lambda:" in target["Arn"]:
                    self.invoker.submit(self._function(target["Arn"]), event)

    def failed(self, function: LambdaFunction, delivery: Delivery, response: dict[str, Any] | None) -> None:
        """Send an async invocation whose retries were exhausted to the function's on-failure destination."""
        destination = self.on_failure.get(function.function_name)
        if destination is None:
            return
        record = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"{function.function_arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": delivery.attempts,
            },
            "requestPayload": delivery.event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": response,
        }
        if ":lambda:" in destination:
            self.invoker.submit(self._function(destination), record)
        elif ":sns:" in destination:
            sns = boto3.client("sns", region_name=self.region)
            sns.publish(TopicArn=destination, Message=json.dumps(record))
        else:
            raise NotImplementedError(f"on-failure destination {destination} is not a function or a topic")

    def _function(self, arn: str) -> LambdaFunction:
        return get_backend(self.account_id, self.region).get_function(arn)
