"""Every AWS call a function makes in a local run is one its role (template.yaml, as deployed) allows.

moto does not enforce IAM, so a function that starts writing to a new S3 prefix, or calling a new
action, passes every local test and fails on AWS with AccessDenied. Here each call the functions make
while a month runs through both flows (and a rejected file, a held one and an additional one) is
recorded with the function that made it, and checked against the policies of that function's role,
read back from the deployed stack: its actions, its resources, and its ``s3:prefix`` conditions.
"""

from __future__ import annotations

import ast
import fnmatch
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import botocore.client
from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH, full_stack

REPO = Path(__file__).resolve().parents[2]
MAPPING = REPO / "examples" / "mapping.example.yaml"
#: Where the functions' code lives: a call with one of these files on its stack is a function's.
CODE = (str(REPO / "layers" / "soracharge"), str(REPO / "functions"))
#: The IAM action an API operation needs (the operations the functions call).
ACTIONS = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
}


@contextmanager
def recorded_calls(cloud: LocalCloud) -> Iterator[list[tuple[str, str, str, dict[str, Any]]]]:
    """(function, service, operation, parameters) of every AWS call made inside an invocation."""
    calls: list[tuple[str, str, str, dict[str, Any]]] = []
    running: list[str] = []
    original = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]

    def recording(client: Any, operation: str, params: dict[str, Any]) -> Any:
        # A function's call (its code on the stack), not the engine's or the test's on another thread.
        if running and any(frame.filename.startswith(CODE) for frame in traceback.extract_stack()):
            calls.append((running[-1], client.meta.service_model.service_name, operation, dict(params)))
        return original(client, operation, params)

    cloud.runner.before_invoke.append(lambda logical_id, event: running.append(logical_id))

    def ended() -> None:
        if running:
            running.pop()

    cloud.runner.after_invoke.append(ended)
    with mock.patch.object(botocore.client.BaseClient, "_make_api_call", recording):
        yield calls


def statements(cloud: LocalCloud, function: str) -> list[dict[str, Any]]:
    iam = cloud.client("iam")
    role = cloud.resources[f"{function}Role"]
    found: list[dict[str, Any]] = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):  # moto keeps the document as CloudFormation gave it: a Python literal
            document = ast.literal_eval(document)
        found += document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]]
    return found


def needed(service: str, operation: str, params: dict[str, Any], cloud: LocalCloud) -> list[tuple[str, str]]:
    """(action, resource ARN) pairs the call needs."""
    region, account = cloud.region, "123456789012"
    if service == "s3":
        action = ACTIONS.get((service, operation), f"s3:{operation}")
        if action == "s3:GetObject" and params.get("VersionId"):
            action = "s3:GetObjectVersion"
        key = f"/{params['Key']}" if "Key" in params else ""
        return [(action, f"arn:aws:s3:::{params['Bucket']}{key}")]
    if service == "dynamodb":
        if operation == "TransactWriteItems":  # each item needs its own action
            kinds = {
                "Put": "PutItem",
                "Update": "UpdateItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
            }
            return [
                (f"dynamodb:{kinds[kind]}", f"arn:aws:dynamodb:{region}:{account}:table/{body['TableName']}")
                for item in params["TransactItems"]
                for kind, body in item.items()
            ]
        return [(f"dynamodb:{operation}", f"arn:aws:dynamodb:{region}:{account}:table/{params['TableName']}")]
    if service == "sns":
        return [(f"sns:{operation}", params["TopicArn"])]
    if service == "stepfunctions":  # StartExecution names its state machine, DescribeExecution its execution
        return [(f"states:{operation}", params.get("stateMachineArn") or params["executionArn"])]
    return [(f"{service}:{operation}", "*")]


def allowed(granted: list[dict[str, Any]], action: str, resource: str, params: dict[str, Any]) -> bool:
    for statement in granted:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement.get("Effect") != "Allow" or not any(fnmatch.fnmatchcase(action, a) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) or fnmatch.fnmatchcase(resource, f"{r}*") for r in resources):
            continue
        prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if prefixes is not None:
            wanted = params.get("Prefix", "")
            if not any(fnmatch.fnmatchcase(wanted, p) for p in ([prefixes] if isinstance(prefixes, str) else prefixes)):
                continue
        return True
    return False


def test_every_aws_call_a_function_makes_while_a_month_runs_is_allowed_by_its_role(
    soracom: SoracomSimulator, cloudblue: CloudBlueSimulator
) -> None:
    month = shift_month(LAST_MONTH, -9)
    with full_stack(soracom, cloudblue, MAPPING, {"POWERTOOLS_METRICS_DISABLED": "true"}) as cloud:
        with recorded_calls(cloud) as calls:
            # A month through both flows, a second file (held), an additional one, a rejected one
            result = cloud.run("ExportBillingStateMachine", {"month": month}, name="permissions", timeout_seconds=300)
            assert result.status == "SUCCEEDED", result.cause
            s3 = cloud.client("s3")
            body = soracom.csv_bytes(month)
            for key, metadata, data in (
                (f"uploads/{month}/second.csv", {"currency": "JPY"}, body.replace(b"\r\n", b"\n")),
                (f"uploads/{month}/extra.csv", {"currency": "JPY", "import": "additional"}, body),
                (f"uploads/{month}/bad.csv", {"currency": "JPY"}, b"imsi,amount\n1,x\n"),
            ):
                s3.put_object(Bucket=cloud.bucket, Key=key, Body=data, Metadata=metadata)
            cloud.async_invocations.wait_idle()
            sfn = cloud.client("stepfunctions")
            follow = cloud.state_machines["FollowImportSessionStateMachine"]
            for execution in sfn.list_executions(stateMachineArn=follow)["executions"]:
                for _ in cloud.follow(execution["executionArn"]):  # to its end: FinishImport ran
                    pass

        functions = {function for function, _, _, _ in calls}
        assert {"ImportChargesFunction", "StoreExportFunction", "FinishImportFunction"} <= functions
        refused = sorted(
            {
                f"{function}: {action} on {resource}"
                for function, service, operation, params in calls
                # Secrets: moto's CloudFormation skips them (their ARN is unresolved in the role); the template
                # tests check who reads them.
                if service != "secretsmanager"
                for action, resource in needed(service, operation, params, cloud)
                if not allowed(statements(cloud, function), action, resource, params)
            }
        )
    assert refused == []
