"""Starting state machines (Step Functions): named executions, so a repeated start is a no-op."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from soracharge.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


class WorkflowStarter(Protocol):
    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str: ...


class StepFunctionsStarter:
    def __init__(self, client: SFNClient) -> None:
        self._sfn = client

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        """Start execution ``name``; if it exists already (a retry), return it instead of starting another."""
        execution_arn = f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
        try:
            response = self._sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
            )
            return str(response["executionArn"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return execution_arn
            raise StorageError(f"cannot start {name} on {state_machine_arn}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot start {name} on {state_machine_arn}: {exc}") from exc
