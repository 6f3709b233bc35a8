"""What the alert function receives: a state machine execution that ended badly, or an import that failed for good.

- EventBridge's ``Step Functions Execution Status Change`` event (``source: aws.states``), for an
  execution of either state machine that ended FAILED, TIMED_OUT or ABORTED;
- Lambda's on-failure destination record for an asynchronous invocation of the import function
  whose retries were exhausted (the S3 event it could not import is ``requestPayload``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field

from soracharge.models.export_flow import Payload


class ExecutionStatusDetail(Payload):
    """``detail`` of a Step Functions execution status change (input and output are JSON texts)."""

    execution_arn: str
    state_machine_arn: str
    name: str
    status: Literal["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE"]
    start_date: int | None = None
    stop_date: int | None = None
    input: str | None = None
    error: str | None = None
    cause: str | None = None

    def input_json(self) -> dict[str, Any]:
        """The execution's input, or ``{}`` when it is missing, truncated or not an object."""
        try:
            value = json.loads(self.input or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class ExecutionStatusChange(EventBridgeModel):
    detail: ExecutionStatusDetail


class FailedInvocationContext(Payload):
    request_id: str
    function_arn: str
    condition: str
    approximate_invoke_count: int = Field(ge=0)


class FailedInvocationResponse(BaseModel):
    """The Python runtime's error payload."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    errorType: str = "Unknown"  # the wire's names
    errorMessage: str = ""


class FailedInvocation(Payload):
    """Lambda's on-failure destination record for an asynchronous invocation."""

    version: str
    timestamp: datetime
    request_context: FailedInvocationContext
    request_payload: dict[str, Any]
    response_payload: FailedInvocationResponse | None = None
