"""The local engine: the real ``template.yaml`` deployed into moto, the real ASL executed.

What happens in :meth:`LocalCloud.start` (shared/DESIGN.md section 5):
1. moto starts with ``stepfunctions.execute_state_machine`` on, so moto interprets the ASL;
2. the in-process Lambda runner replaces moto's Docker runner;
3. ``template.yaml`` is transformed offline by aws-sam-translator (CodeUri, ContentUri and
   DefinitionUri point at zips and files uploaded to an artifacts bucket, as ``sam package``
   would), and moto's CloudFormation builds the stack from it;
4. what moto's CloudFormation skips or cannot do is created by API from the same template: the
   state machine with its ``DefinitionSubstitutions`` applied (in the executing backend), the
   bucket's versioning and public access block, and the Soracom AuthKey secret (with the
   credentials given, so functions read it as in AWS).
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import httpx
from moto import mock_aws
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from soracharge_local.event_routing import EventRouter, execution_status_events
from soracharge_local.lambda_runner import DeployedFunction, InProcessLambdaRunner, applied_environment
from soracharge_local.s3_events import AsyncInvoker, Delivery, aws_shaped_async_s3_events

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_BUCKET = "soracharge-local-artifacts"
#: moto's default account.
ACCOUNT_ID = "123456789012"
TERMINAL_STATUSES = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
#: The import function's logical id (its deployed name starts with the stack's name and this).
IMPORT_FUNCTION = "ImportChargesFunction"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_SUB_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_:.]+)\}")


@dataclass(frozen=True)
class SoracomAccess:
    """What the deployed functions are told about Soracom when run locally.

    ``endpoint`` serves every coverage unless ``endpoints`` names a coverage's own (``{"g": URL}``),
    as ``SORACOM_ENDPOINT`` and ``SORACOM_ENDPOINT_JP``/``_G`` do for the functions.
    """

    endpoint: str
    auth_key_id: str
    auth_key: str
    endpoints: Mapping[str, str] = field(default_factory=dict)
    #: The own AuthKey ``(authKeyId, authKey)`` of each listed operator reached without Switch User: put in
    #: the secret ``<stack>/soracom/<operatorId>``, as a person does in AWS.
    operator_keys: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def endpoint_of(self, coverage: str) -> str:
        return self.endpoints.get(coverage, self.endpoint)


@dataclass(frozen=True)
class CloudBlueAccess:
    """What the deployed functions are told about CloudBlue: OAuth 1.0a consumer or an APS token."""

    endpoint: str
    consumer_key: str | None = None
    consumer_secret: str | None = None
    aps_token: str | None = None
    resource_id: str | None = None
    #: The built-in simulator, started for this command: a fresh CloudBlue, so a fresh ledger too.
    simulated: bool = False

    def secret(self) -> dict[str, str]:
        """The CloudBlueCredentialsSecret's JSON, as a person puts it in AWS."""
        if self.consumer_key and self.consumer_secret:
            return {"consumerKey": self.consumer_key, "consumerSecret": self.consumer_secret}
        if self.aps_token:
            return {"apsToken": self.aps_token}
        raise ValueError("CloudBlue access needs consumer_key and consumer_secret, or aps_token")


#: A CloudBlue nobody answers at: for local runs that only export.
NO_CLOUDBLUE = CloudBlueAccess(endpoint="https://cloudblue.invalid", aps_token="none")  # noqa: S106 - not a secret


@dataclass
class ExecutionResult:
    arn: str
    name: str
    status: str
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    events: list[dict[str, Any]] = field(default_factory=list)

    def states_entered(self) -> list[str]:
        return [e["stateEnteredEventDetails"]["name"] for e in self.events if "stateEnteredEventDetails" in e]


class LocalCloud:
    """The stack of ``template.yaml`` running in moto, in this process.

    ``instant_waits`` makes Wait states and Retry intervals return at once (tests); otherwise
    Wait states really wait and Retry intervals are capped at ``max_retry_sleep_seconds`` so that
    a 6-hour BillNotClosed retry does not hold a local run for days.
    """

    def __init__(
        self,
        *,
        soracom: SoracomAccess,
        cloudblue: CloudBlueAccess = NO_CLOUDBLUE,
        mapping: Path | Mapping[str, Path] | None = None,
        import_on_upload: bool = True,
        stack_name: str = "soracharge",
        region: str = "us-east-1",
        repo_root: Path = REPO_ROOT,
        instant_waits: bool = False,
        max_retry_sleep_seconds: float = 2.0,
        environment: Mapping[str, str] | None = None,
        coverages: tuple[str, ...] = ("jp",),
        accounts: str = "",
    ) -> None:
        self.soracom = soracom
        #: The template's SoracomAccounts: the operators exported besides the stack's own (JSON).
        self.accounts = accounts
        #: The template's SoracomCoverageType: the coverages this stack exports.
        self.coverages = coverages
        self.cloudblue = cloudblue
        self.mapping = mapping
        self.import_on_upload = import_on_upload
        self.async_invocations = AsyncInvoker()
        self.event_router = EventRouter(self.async_invocations, ACCOUNT_ID, region)
        self.async_invocations.on_failure = self.event_router.failed
        self.stack_name = stack_name
        self.region = region
        self.repo_root = repo_root
        self.instant_waits = instant_waits
        self.max_retry_sleep_seconds = max_retry_sleep_seconds
        self.extra_environment = dict(environment or {})
        self.runner = InProcessLambdaRunner()
        # On Lambda each function imports the shared Metrics under its own environment and flushes it
        # every invocation. Here one process serves every function (and tests import the package
        # outside any), so each invocation gets its function's namespace and starts with no metrics.
        self.runner.before_invoke.append(_prepare_powertools)
        self.runner.after_invoke.append(_clear_powertools_metrics)
        self.retry_sleeps: list[float] = []
        self._alerts_queue = ""
        self.resources: dict[str, str] = {}
        self.state_machines: dict[str, str] = {}
        self._definitions: dict[str, Path] = {}
        self._stack = ExitStack()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalCloud:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._stack.enter_context(applied_environment({"AWS_DEFAULT_REGION": self.region}))
            self._stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
            self._stack.enter_context(self.runner.installed())
            self._stack.enter_context(aws_shaped_async_s3_events(self.async_invocations))
            self._stack.enter_context(execution_status_events(self.event_router.execution_ended))
            # Closing runs in reverse: pending S3 events are delivered before the patches go.
            self._stack.callback(self.async_invocations.wait_idle)
            self._stack.enter_context(self._clock_patches())
            self._stack.enter_context(_atomic_dynamodb_calls())
            self._stack.enter_context(_step_functions_clients_under(self.runner.environment_lock))
            self._deploy()
        except BaseException:
            self._stack.close()
            raise

    def stop(self) -> None:
        self._stack.close()

    def client(self, service: str) -> Any:
        with self.runner.environment_lock:  # not while an in-process Lambda changes os.environ
            return boto3.client(service, region_name=self.region)  # type: ignore[call-overload]

    @property
    def bucket(self) -> str:
        return self.resources["DataBucket"]

    # -- running -----------------------------------------------------------------------------

    def start_execution(self, state_machine: str, payload: Mapping[str, Any], name: str | None = None) -> str:
        """Start a named execution (unnamed ones collide in moto) and return its ARN."""
        name = name or f"local-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        response = self.client("stepfunctions").start_execution(
            stateMachineArn=self.state_machines[state_machine], name=name, input=json.dumps(payload)
        )
        return str(response["executionArn"])

    def follow(
        self, execution_arn: str, *, timeout_seconds: float = 600, poll_seconds: float = 0.05
    ) -> Iterator[dict[str, Any]]:
        """Yield the execution's history events as they happen, until it ends."""
        sfn = self.client("stepfunctions")
        seen = 0
        deadline = time.monotonic() + timeout_seconds
        while True:
            status = sfn.describe_execution(executionArn=execution_arn)["status"]
            events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
            yield from events[seen:]
            seen = len(events)
            if status in TERMINAL_STATUSES:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_arn} still {status} after {timeout_seconds} s")
            time.sleep(poll_seconds)

    def run(
        self,
        state_machine: str,
        payload: Mapping[str, Any],
        *,
        name: str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        timeout_seconds: float = 600,
    ) -> ExecutionResult:
        arn = self.start_execution(state_machine, payload, name)
        events = []
        for event in self.follow(arn, timeout_seconds=timeout_seconds):
            events.append(event)
            if on_event is not None:
                on_event(event)
        described = self.client("stepfunctions").describe_execution(executionArn=arn)
        output = described.get("output")
        return ExecutionResult(
            arn=arn,
            name=described["name"],
            status=described["status"],
            output=json.loads(output) if output else None,
            error=described.get("error"),
            cause=described.get("cause"),
            events=events,
        )

    # -- deployment --------------------------------------------------------------------------

    def _deploy(self) -> None:
        template = yaml_parse((self.repo_root / "template.yaml").read_text())
        s3 = self.client("s3")
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
        code_dirs = self._package(template, s3)
        translated = transform(template, {}, _NoManagedPolicies())
        state_machines = {
            logical_id: resource
            for logical_id, resource in translated["Resources"].items()
            if resource["Type"] == "AWS::StepFunctions::StateMachine"
        }
        # moto's CloudFormation would put these in its non-executing backend without their
        # DefinitionSubstitutions: they are created by API below instead, under the names the
        # template gives them, and every reference to them is replaced by that name or ARN.
        names = {
            logical_id: self._resolve(r["Properties"].get("StateMachineName", logical_id))
            for logical_id, r in state_machines.items()
        }
        arns = {
            logical_id: f"arn:aws:states:{self.region}:{ACCOUNT_ID}:stateMachine:{name}"
            for logical_id, name in names.items()
        }
        for logical_id in state_machines:
            del translated["Resources"][logical_id]
        translated = _replace_references(translated, arns, names)
        _drop_monitoring(translated)
        cfn = self.client("cloudformation")
        cfn.create_stack(
            StackName=self.stack_name,
            TemplateBody=json.dumps(translated),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            Parameters=[
                {"ParameterKey": "ApsEndpoint", "ParameterValue": self.cloudblue.endpoint},
                {"ParameterKey": "SoracomCoverageType", "ParameterValue": ",".join(self.coverages)},
                {"ParameterKey": "SoracomAccounts", "ParameterValue": self.accounts},
            ],
        )
        stack = cfn.describe_stacks(StackName=self.stack_name)["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"local stack {self.stack_name} ended {stack['StackStatus']}")
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=self.stack_name):
            for summary in page["StackResourceSummaries"]:
                self.resources[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]

        self._apply_bucket_settings(translated)
        self._route_failures(translated)
        self._listen_to_alerts()
        for logical_id, (code_dir, handler) in code_dirs.items():
            self.runner.register(self.resources[logical_id], DeployedFunction(logical_id, code_dir, handler))
        self.runner.environment_overrides.update(self._function_environment())
        for logical_id, resource in state_machines.items():
            self._create_state_machine(logical_id, resource["Properties"])
        if self.mapping is not None:
            self.put_mapping(self.mapping)

    def import_deliveries(self, since: int = 0) -> list[Delivery]:
        """The import function's S3 event deliveries from ``since`` on (an index into every delivery),
        once all pending ones ended: not the alert function's, which failures cause."""
        self.async_invocations.wait_idle()
        return [d for d in self.async_invocations.deliveries[since:] if IMPORT_FUNCTION in d.function_name]

    def alerts(self) -> list[dict[str, str]]:
        """The alerts published to the stack's alerts topic since the last call (``subject``, ``message``).

        Waits for pending asynchronous invocations first: an alert function runs after the
        execution or import that caused it.
        """
        self.async_invocations.wait_idle()
        sqs = self.client("sqs")
        received: list[dict[str, str]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=self._alerts_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return received
            for message in messages:
                envelope = json.loads(message["Body"])
                received.append({"subject": envelope.get("Subject") or "", "message": envelope["Message"]})
                sqs.delete_message(QueueUrl=self._alerts_queue, ReceiptHandle=message["ReceiptHandle"])

    def _route_failures(self, translated: dict[str, Any]) -> None:
        """Each function's on-failure destination, as its EventInvokeConfig states it."""
        for resource in translated["Resources"].values():
            if resource["Type"] != "AWS::Lambda::EventInvokeConfig":
                continue
            properties = resource["Properties"]
            destination = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
            if destination is not None:
                function = self.resources[properties["FunctionName"]["Ref"]]
                self.event_router.on_failure[function] = self._resolve(destination)

    def _listen_to_alerts(self) -> None:
        """A queue subscribed to the alerts topic, standing in for the people's e-mail subscription."""
        sqs = self.client("sqs")
        self._alerts_queue = sqs.create_queue(QueueName=f"{self.stack_name}-local-alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self._alerts_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.client("sns").subscribe(TopicArn=self.resources["AlertsTopic"], Protocol="sqs", Endpoint=queue_arn)

    def put_mapping(self, path: Path | Mapping[str, Path]) -> str:
        """Upload a mapping file where the template's default SORACHARGE_MAPPING points; or one per
        coverage (``{"jp": path, "g": path}``) to ``config/mapping.<coverage>.yaml``, with the import
        function's SORACHARGE_MAPPING set to ``config/mapping.{coverage}.yaml`` as MappingUri would."""
        s3 = self.client("s3")
        if isinstance(path, Path):
            key = "config/mapping.yaml"
            s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())
            return f"s3://{self.bucket}/{key}"
        for coverage, each in path.items():
            s3.put_object(Bucket=self.bucket, Key=f"config/mapping.{coverage}.yaml", Body=each.read_bytes())
        uri = f"s3://{self.bucket}/config/mapping.{{coverage}}.yaml"
        self.runner.environment_overrides["SORACHARGE_MAPPING"] = uri
        return uri

    def _package(self, template: dict[str, Any], s3: Any) -> dict[str, tuple[Path, str]]:
        """Upload what ``sam package`` would, and point the template at it."""
        code_dirs: dict[str, tuple[Path, str]] = {}
        for logical_id, resource in template["Resources"].items():
            properties = resource.get("Properties", {})
            for key in ("CodeUri", "ContentUri"):
                if isinstance(properties.get(key), str):
                    source = self.repo_root / properties[key]
                    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=f"{logical_id}.zip", Body=_zip(source))
                    properties[key] = f"s3://{ARTIFACTS_BUCKET}/{logical_id}.zip"
                    if key == "CodeUri":
                        code_dirs[logical_id] = (source, properties["Handler"])
            if isinstance(properties.get("DefinitionUri"), str):
                self._definitions[logical_id] = self.repo_root / properties["DefinitionUri"]
                properties["DefinitionUri"] = f"s3://{ARTIFACTS_BUCKET}/{logical_id}.asl.json"
        return code_dirs

    def _function_environment(self) -> dict[str, str]:
        """What locally replaces the AWS-only parts of the functions' environment (secrets moto skips)."""
        secrets = self.client("secretsmanager")
        soracom = secrets.create_secret(
            Name=f"{self.stack_name}-soracom-auth-key",
            SecretString=json.dumps({"authKeyId": self.soracom.auth_key_id, "authKey": self.soracom.auth_key}),
        )
        cloudblue = secrets.create_secret(
            Name=f"{self.stack_name}-cloudblue-credentials", SecretString=json.dumps(self.cloudblue.secret())
        )
        for operator, (key_id, key) in self.soracom.operator_keys.items():  # the names the template's role allows
            secrets.create_secret(
                Name=f"{self.stack_name}/soracom/{operator}",
                SecretString=json.dumps({"authKeyId": key_id, "authKey": key}),
            )
        aps_resource = {"APS_RESOURCE_ID": self.cloudblue.resource_id} if self.cloudblue.resource_id else {}
        hosts = {self.soracom.endpoint, *self.soracom.endpoints.values()}
        own = {f"SORACOM_ENDPOINT_{coverage.upper()}": url for coverage, url in self.soracom.endpoints.items()}
        return {
            "SORACOM_ENDPOINT": self.soracom.endpoint,
            **own,
            # The simulator serves its "pre-signed" URLs itself; a compatible server may do the same.
            "SORACOM_DOWNLOAD_URL_PATTERNS": ",".join(
                ["https://*.amazonaws.com", *sorted(f"{httpx.URL(u).scheme}://{httpx.URL(u).host}" for u in hosts)]
            ),
            "SORACOM_AUTH_SECRET_ID": soracom["ARN"],
            "APS_ENDPOINT": self.cloudblue.endpoint,
            "APS_CREDENTIALS_SECRET_ID": cloudblue["ARN"],
            **aps_resource,
            "SORACHARGE_BUCKET": self.resources["DataBucket"],
            "POWERTOOLS_TRACE_DISABLED": "true",
            **self.extra_environment,
        }

    def _apply_bucket_settings(self, translated: dict[str, Any]) -> None:
        """Bucket properties moto's CloudFormation ignores, applied as the template states them.

        Not the TLS-only bucket policy: moto enforces it and sees in-process calls as not secure
        (on AWS boto3 always uses TLS), so it is checked on the translated template instead.
        """
        s3 = self.client("s3")
        for logical_id, resource in translated["Resources"].items():
            properties = resource.get("Properties", {})
            if resource["Type"] == "AWS::S3::Bucket":
                bucket = self.resources[logical_id]
                if "VersioningConfiguration" in properties:
                    s3.put_bucket_versioning(
                        Bucket=bucket,
                        VersioningConfiguration={"Status": properties["VersioningConfiguration"]["Status"]},
                    )
                if "PublicAccessBlockConfiguration" in properties:
                    s3.put_public_access_block(
                        Bucket=bucket, PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"]
                    )
                lambdas = properties.get("NotificationConfiguration", {}).get("LambdaConfigurations", [])
                if lambdas and self.import_on_upload:
                    s3.put_bucket_notification_configuration(
                        Bucket=bucket,
                        NotificationConfiguration={
                            "LambdaFunctionConfigurations": [
                                {
                                    "LambdaFunctionArn": self._resolve(rule["Function"]),
                                    "Events": [rule["Event"]],
                                    "Filter": {"Key": {"FilterRules": rule["Filter"]["S3Key"]["Rules"]}},
                                }
                                for rule in lambdas
                            ]
                        },
                    )

    def _create_state_machine(self, logical_id: str, properties: dict[str, Any]) -> None:
        definition = self._definitions[logical_id].read_text()
        substitutions = {
            key: self._resolve(value) for key, value in properties.get("DefinitionSubstitutions", {}).items()
        }
        missing = sorted(set(_PLACEHOLDER.findall(definition)) - set(substitutions))
        if missing:
            raise RuntimeError(f"{logical_id}: no DefinitionSubstitutions for {missing}")
        definition = _PLACEHOLDER.sub(lambda match: substitutions[match.group(1)], definition)
        role_arn = self.client("iam").get_role(RoleName=self.resources[properties["RoleArn"]["Fn::GetAtt"][0]])["Role"][
            "Arn"
        ]
        name = self._resolve(properties.get("StateMachineName", logical_id))
        created = self.client("stepfunctions").create_state_machine(
            name=name, definition=definition, roleArn=role_arn, type=properties.get("StateMachineType", "STANDARD")
        )
        self.state_machines[logical_id] = created["stateMachineArn"]

    def _resolve(self, value: Any) -> str:
        """The few intrinsic functions our substitutions and names use."""
        if isinstance(value, str):
            return value
        if "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
            name = self.resources[value["Fn::GetAtt"][0]]
            return str(self.client("lambda").get_function(FunctionName=name)["Configuration"]["FunctionArn"])
        if "Ref" in value:
            return self.resources[value["Ref"]]
        if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            known = {
                **self.resources,
                "AWS::StackName": self.stack_name,
                "AWS::Region": self.region,
                "AWS::AccountId": ACCOUNT_ID,
                "AWS::Partition": "aws",
            }
            return _SUB_VARIABLE.sub(lambda match: known.get(match.group(1), match.group(0)), value["Fn::Sub"])
        raise ValueError(f"cannot resolve {value!r} locally")

    @contextmanager
    def _clock_patches(self) -> Iterator[None]:
        original_wait = WaitFunction._wait_interval
        original_time = retrier_decl.time  # type: ignore[attr-defined]

        def retry_sleep(seconds: float) -> None:
            self.retry_sleeps.append(seconds)
            if not self.instant_waits:
                time.sleep(min(seconds, self.max_retry_sleep_seconds))

        retrier_decl.time = SimpleNamespace(sleep=retry_sleep)  # type: ignore[attr-defined,assignment]
        if self.instant_waits:
            WaitFunction._wait_interval = lambda self, env, wait_seconds: None  # type: ignore[method-assign]
        try:
            yield
        finally:
            retrier_decl.time = original_time  # type: ignore[attr-defined]
            WaitFunction._wait_interval = original_wait  # type: ignore[method-assign]


class _NoManagedPolicies:
    """aws-sam-translator asks for AWS managed policy ARNs only when a template names one by short name."""

    def load(self) -> dict[str, str]:
        return {}


def _zip(source: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(source))
    return buffer.getvalue()


def _replace_references(value: Any, arns: Mapping[str, str], names: Mapping[str, str]) -> Any:
    """Every ``Ref`` to, and ``GetAtt`` of, a state machine in ``arns`` becomes its ARN or name, also
    as ``${Logical}`` or ``${Logical.Name}`` inside an ``Fn::Sub`` text."""
    if isinstance(value, dict):
        if len(value) == 1 and value.get("Ref") in arns:
            return arns[value["Ref"]]
        get_att = value.get("Fn::GetAtt")
        if len(value) == 1 and isinstance(get_att, list) and get_att[0] in arns:
            return {"Arn": arns, "Name": names}[get_att[1]][get_att[0]]
        sub = value.get("Fn::Sub")
        if len(value) == 1 and isinstance(sub, str):
            return {"Fn::Sub": _SUB_VARIABLE.sub(lambda match: _sub_reference(match, arns, names), sub)}
        return {key: _replace_references(item, arns, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_references(item, arns, names) for item in value]
    return value


#: Resources moto's CloudFormation has no model of, which nothing runs locally: they are checked on the
#: translated template (tests/template/), not deployed here.
_NOT_DEPLOYED_LOCALLY = frozenset({"AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard"})


def _drop_monitoring(translated: dict[str, Any]) -> None:
    """Remove the alarms and dashboards, and the outputs that name them (a reference would not resolve)."""
    dropped = {
        logical_id
        for logical_id, resource in translated["Resources"].items()
        if resource["Type"] in _NOT_DEPLOYED_LOCALLY
    }
    for logical_id in dropped:
        del translated["Resources"][logical_id]
    outputs = translated.get("Outputs", {})
    for name, output in list(outputs.items()):
        text = json.dumps(output)
        if any(f'"{d}"' in text or f"${{{d}" in text for d in dropped):
            del outputs[name]


def _sub_reference(match: re.Match[str], arns: Mapping[str, str], names: Mapping[str, str]) -> str:
    logical, _, attribute = match.group(1).partition(".")
    if logical in arns and attribute in ("", "Arn"):
        return arns[logical]
    if logical in names and attribute == "Name":
        return names[logical]
    return match.group(0)


def _prepare_powertools(function: str, event: object) -> None:
    import sys

    observability = sys.modules.get("soracharge.observability")
    if observability is not None:
        # On Lambda the package is imported under the function's environment, which sets these once.
        service = os.environ.get("POWERTOOLS_SERVICE_NAME")
        observability.metrics.namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
        observability.metrics.service = service
        # A Lambda invocation starts with no metrics; here code run outside any function (tests calling
        # the use cases directly) may have added some to the process's shared set.
        observability.metrics.clear_metrics()
        observability.logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL") or "INFO")
        if service:
            # The Logger restores its default keys (service included) at each clear_state; Powertools is pinned.
            observability.logger.service = service
            observability.logger._default_log_keys["service"] = service


def _clear_powertools_metrics() -> None:
    import sys

    observability = sys.modules.get("soracharge.observability")
    if observability is not None:
        observability.metrics.clear_metrics()


@contextmanager
def _step_functions_clients_under(lock: Any) -> Iterator[None]:
    """moto's Step Functions threads create their clients (a Task's Lambda client...) holding ``lock``, as
    :meth:`LocalCloud.client` does: creating a boto3 client reads os.environ whole (urllib's proxy variables)
    while an in-process Lambda on another thread sets and restores its variables there. Unlocked, a Task read a
    variable a Lambda had just removed (KeyError) and failed without its function running: a follow execution
    ended NOT_RATED, "could not follow session N to its end: Exception: '<variable>'"."""
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = getattr(boto_client, "boto3")  # noqa: B009 (moto does not export it)

    def client(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return original.client(*args, **kwargs)

    setattr(boto_client, "boto3", SimpleNamespace(client=client))  # noqa: B010
    try:
        yield
    finally:
        setattr(boto_client, "boto3", original)  # noqa: B010


@contextmanager
def _atomic_dynamodb_calls() -> Iterator[None]:
    """Make each DynamoDB call atomic, as on AWS: moto's in-memory tables are not thread-safe (the import
    sends packets from several threads, each recording itself in the ledger)."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    names = ("update_item", "put_item", "get_item", "transact_write_items", "delete_item", "query", "scan")
    originals = {name: getattr(DynamoDBBackend, name) for name in names}

    def atomic(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return call

    for name, method in originals.items():
        setattr(DynamoDBBackend, name, atomic(method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(DynamoDBBackend, name, method)
