"""What the deployed stack will be: schedule, bucket, secret, functions, policies, substitutions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from soracharge.models.export_flow import ExportRequest
from soracharge.models.parsing import parse_input

from tests.template.conftest import REPO, resources_of_type

BUCKET_NAME = {"Fn::Sub": "${AWS::StackName}-data-${AWS::AccountId}"}
BUCKET_ARN = "arn:${AWS::Partition}:s3:::${AWS::StackName}-data-${AWS::AccountId}"


def evaluate(value: Any, translated: dict[str, Any], parameters: dict[str, str]) -> Any:
    """A property as CloudFormation resolves it for these parameters (Ref, Fn::If, Fn::Equals, Fn::Not, Fn::Or)."""
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref" and argument in parameters:
            return parameters[argument]
        if function == "Fn::If":
            condition, then, otherwise = argument
            chosen = evaluate(translated["Conditions"][condition], translated, parameters)
            return evaluate(then if chosen else otherwise, translated, parameters)
        if function == "Fn::Equals":
            left, right = (evaluate(part, translated, parameters) for part in argument)
            return left == right
        if function == "Fn::Not":
            return not evaluate(argument[0], translated, parameters)
        if function == "Fn::Or":
            return any(evaluate(part, translated, parameters) for part in argument)
    return value


def schedules_for(translated: dict[str, Any], coverages: str) -> dict[str | None, str]:
    """What the stack's enabled schedules export for SoracomCoverageType ``coverages``: coverage -> month."""
    parameters = {"SoracomCoverageType": coverages, "ExportScheduleState": "ENABLED", "SoracomAccounts": ""}
    exported: dict[str | None, str] = {}
    for schedule in resources_of_type(translated, "AWS::Scheduler::Schedule").values():
        properties = schedule["Properties"]
        if evaluate(properties["State"], translated, parameters) != "ENABLED":
            continue
        text = evaluate(properties["Target"]["Input"], translated, parameters)
        request = parse_input(
            json.loads(text.replace("<aws.scheduler.scheduled-time>", "2026-11-04T00:00:00Z")), ExportRequest
        )
        assert request.coverage not in exported, "two schedules export the same coverage"
        exported[request.coverage] = request.billing_month()
    return exported


@pytest.mark.parametrize(("coverages", "expected"), [("jp", ["jp"]), ("g", ["g"]), ("jp,g", ["jp", "g"])])
def test_each_coverage_of_the_stack_is_exported_monthly_by_a_schedule_of_its_own(translated, coverages, expected):
    assert schedules_for(translated, coverages) == dict.fromkeys(expected, "202610")


def test_a_schedule_is_off_for_every_coverage_when_the_schedule_state_is_disabled(translated):
    accounts = '[{"operator": "OP0000000002", "coverages": "jp,g", "switchUser": "soracharge"}]'
    parameters = {"SoracomCoverageType": "jp,g", "ExportScheduleState": "DISABLED", "SoracomAccounts": accounts}
    states = [
        evaluate(s["Properties"]["State"], translated, parameters)
        for s in resources_of_type(translated, "AWS::Scheduler::Schedule").values()
    ]
    assert states == ["DISABLED", "DISABLED", "DISABLED"]


@pytest.mark.parametrize(
    ("accounts", "state"), [("", "DISABLED"), ("[]", "DISABLED"), ('[{"operator": "OP0000000002"}]', "ENABLED")]
)
def test_the_accounts_schedule_runs_only_when_soracom_accounts_lists_an_operator(translated, accounts, state):
    (schedule,) = (
        s
        for s in resources_of_type(translated, "AWS::Scheduler::Schedule").values()
        if s["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-monthly-export-accounts"}
    )
    parameters = {"SoracomAccounts": accounts, "ExportScheduleState": "ENABLED"}
    assert evaluate(schedule["Properties"]["State"], translated, parameters) == state
    assert json.loads(schedule["Properties"]["Target"]["Input"]) == {"scheduledTime": "<aws.scheduler.scheduled-time>"}


def test_a_schedule_starts_the_export_monthly_for_the_previous_month(template, translated):
    schedule = next(
        s
        for s in resources_of_type(translated, "AWS::Scheduler::Schedule").values()
        if s["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-monthly-export"}
    )
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == {"Ref": "ExportScheduleExpression"}
    assert template["Parameters"]["ExportScheduleExpression"]["Default"] == "cron(0 0 4 * ? *)"
    assert properties["ScheduleExpressionTimezone"] == "UTC"
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert properties["State"] == {"Ref": "ExportScheduleState"}
    assert properties["Name"] == {"Fn::Sub": "${AWS::StackName}-monthly-export"}
    target = properties["Target"]
    assert target["Arn"] == {"Ref": "ExportBillingStateMachine"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] <= 3
    # Its input, once EventBridge Scheduler fills in the scheduled time, exports the month before.
    assert schedules_for(translated, "jp") == {"jp": "202610"}


@pytest.mark.parametrize(
    ("which", "may"),
    [
        (0, {"Action": "states:StartExecution", "Resource": {"Ref": "ExportBillingStateMachine"}}),
        # The listed operators' schedule invokes the function that starts one export each, nothing else.
        (1, {"Action": "lambda:InvokeFunction", "Resource": {"Fn::GetAtt": ["StartAccountExportsFunction", "Arn"]}}),
        (2, {"Action": "states:StartExecution", "Resource": {"Ref": "ExportBillingStateMachine"}}),
    ],
)
def test_the_schedule_may_only_start_the_export_state_machine(translated, which, may):
    schedule = sorted(
        resources_of_type(translated, "AWS::Scheduler::Schedule").values(),
        key=lambda s: s["Properties"]["Name"]["Fn::Sub"],
    )[which]
    role = translated["Resources"][schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]]
    statements = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statements[0] == {**may, "Effect": "Allow"}
    # ...and put a month it could not start into its dead-letter queue, which alarms.
    assert statements[1:] == [
        {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}
    ]


def test_the_bucket_is_private_encrypted_versioned_and_tls_only(translated):
    bucket = translated["Resources"]["DataBucket"]
    properties = bucket["Properties"]
    assert properties["BucketName"] == BUCKET_NAME
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert bucket["DeletionPolicy"] == "Retain"
    policy = translated["Resources"]["DataBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "DataBucket"}
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {json.dumps(r, sort_keys=True) for r in deny["Resource"]} == {
        json.dumps({"Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-data-${AWS::AccountId}"}, sort_keys=True),
        json.dumps(
            {"Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-data-${AWS::AccountId}/*"}, sort_keys=True
        ),
    }


def test_functions_never_refer_to_the_bucket_by_ref(translated):
    # A Ref/GetAtt to the bucket from a function would make the stack circular once the import
    # function's S3 event source lives on the bucket: functions use the bucket's name string.
    for name, function in resources_of_type(translated, "AWS::Lambda::Function").items():
        assert '"DataBucket"' not in json.dumps(function), name


def test_every_function_runs_a_handler_that_exists_with_the_shared_layer_and_powertools_settings(template, translated):
    functions = {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {
        "FindExportFunction",
        "GetBillFunction",
        "StartExportFunction",
        "PollExportFunction",
        "StoreExportFunction",
        "StartAccountExportsFunction",
        "ImportChargesFunction",
        "GetImportSessionFunction",
        "FinishImportFunction",
        "AlertFunction",
    }
    for name, function in functions.items():
        code_dir = REPO / function["Properties"]["CodeUri"]
        module, _, handler = function["Properties"]["Handler"].rpartition(".")
        assert f"def {handler}(" in (code_dir / f"{module}.py").read_text(), name
    globals_ = template["Globals"]["Function"]
    assert globals_["Layers"] == [{"Ref": "SharedLayer"}]
    assert globals_["Tracing"] == "Active"
    assert globals_["Runtime"] in ("python3.12", "python3.13")
    environment = globals_["Environment"]["Variables"]
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"} <= set(environment)
    assert environment["SORACOM_AUTH_SECRET_ID"] == {"Ref": "SoracomAuthKeySecret"}
    for function in resources_of_type(translated, "AWS::Lambda::Function").values():
        assert function["Properties"]["TracingConfig"] == {"Mode": "Active"}


def test_the_layer_is_built_from_the_locked_requirements(template):
    layer = template["Resources"]["SharedLayer"]
    assert layer["Metadata"]["BuildMethod"] == template["Globals"]["Function"]["Runtime"]
    content = REPO / layer["Properties"]["ContentUri"]
    assert (content / "soracharge" / "__init__.py").is_file()
    requirements = (content / "requirements.txt").read_text()
    for pinned in ("aws-lambda-powertools==", "httpx==", "pydantic==", "pydantic-settings==", "boto3=="):
        assert pinned in requirements


def role_statements(translated: dict[str, Any], role: str) -> list[dict[str, Any]]:
    policies = translated["Resources"][role]["Properties"].get("Policies", [])
    return [statement for policy in policies for statement in policy["PolicyDocument"]["Statement"]]


def actions_of(statement: dict[str, Any]) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_secrets_hold_no_value_in_the_template_and_only_their_readers_may_read_them(translated):
    secrets = resources_of_type(translated, "AWS::SecretsManager::Secret")
    assert set(secrets) == {"SoracomAuthKeySecret", "CloudBlueCredentialsSecret"}
    for secret in secrets.values():
        assert "SecretString" not in secret["Properties"]  # a random placeholder until a person puts the value
    readers: dict[str, set[str]] = {}
    for role in resources_of_type(translated, "AWS::IAM::Role"):
        for statement in role_statements(translated, role):
            assert "*" not in actions_of(statement), role
            if any(a.startswith("secretsmanager:") for a in actions_of(statement)):
                arn = statement["Resource"]["Fn::Sub"][1]["secretArn"]
                secret = arn.get("Ref") or arn["Fn::Sub"]
                readers.setdefault(secret, set()).add(role)
    exporters = {f"{n}FunctionRole" for n in ("GetBill", "StartExport", "PollExport", "StoreExport")}
    # A listed operator's own AuthKey: only secrets named <stack>/soracom/<operatorId>, read by the exporters.
    accounts = (
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${AWS::StackName}/soracom/*"
    )
    assert readers == {
        "SoracomAuthKeySecret": exporters,
        accounts: exporters,
        "CloudBlueCredentialsSecret": {"ImportChargesFunctionRole", "GetImportSessionFunctionRole"},
    }


def test_each_role_reaches_only_its_own_prefixes_of_the_data_bucket(translated):
    s3_access: dict[str, dict[str, set[str]]] = {}
    for role in resources_of_type(translated, "AWS::IAM::Role"):
        for statement in role_statements(translated, role):
            actions = [a for a in actions_of(statement) if a.startswith("s3:")]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                for action in actions:
                    s3_access.setdefault(role, {}).setdefault(action, set()).add(resource["Fn::Sub"])
    assert s3_access == {
        "StoreExportFunctionRole": {
            "s3:PutObject": {f"{BUCKET_ARN}/exports/*"},
            "s3:GetObject": {f"{BUCKET_ARN}/exports/*"},
            "s3:AbortMultipartUpload": {f"{BUCKET_ARN}/exports/*"},
            "s3:ListBucket": {BUCKET_ARN},
        },
        "ImportChargesFunctionRole": {
            "s3:GetObject": {f"{BUCKET_ARN}/{p}/*" for p in ("exports", "uploads", "config", "reports", "ledger")},
            "s3:GetObjectVersion": {f"{BUCKET_ARN}/{p}/*" for p in ("exports", "uploads", "config")},
            "s3:PutObject": {f"{BUCKET_ARN}/reports/*", f"{BUCKET_ARN}/ledger/*"},
            "s3:ListBucket": {BUCKET_ARN},
        },
        "FinishImportFunctionRole": {  # the report the ledger names, and the rating's staged beside it
            "s3:GetObject": {f"{BUCKET_ARN}/reports/*", f"{BUCKET_ARN}/ledger/reports/*"},
            "s3:PutObject": {f"{BUCKET_ARN}/reports/*", f"{BUCKET_ARN}/ledger/reports/*"},
            "s3:ListBucket": {BUCKET_ARN},
        },
        "FindExportFunctionRole": {
            "s3:GetObject": {f"{BUCKET_ARN}/exports/*", f"{BUCKET_ARN}/reports/*"},
            "s3:ListBucket": {BUCKET_ARN},
        },
    }
    prefixes = {
        "StoreExportFunctionRole": "exports/*",
        "ImportChargesFunctionRole": ["exports/*", "uploads/*", "config/*", "reports/*", "ledger/*"],
        "FinishImportFunctionRole": ["reports/*", "ledger/reports/*"],
        "FindExportFunctionRole": ["exports/*", "reports/*"],
    }
    for role, prefix in prefixes.items():
        (listing,) = [s for s in role_statements(translated, role) if s["Action"] == "s3:ListBucket"]
        assert listing["Condition"] == {"StringLike": {"s3:prefix": prefix}}, role


def test_csv_uploads_under_exports_and_uploads_trigger_the_import(translated):
    rules = translated["Resources"]["DataBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert [(r["Event"], r["Function"], r["Filter"]["S3Key"]["Rules"]) for r in rules] == [
        (
            "s3:ObjectCreated:*",
            {"Fn::GetAtt": ["ImportChargesFunction", "Arn"]},
            [{"Name": "prefix", "Value": prefix}, {"Name": "suffix", "Value": ".csv"}],
        )
        for prefix in ("exports/", "uploads/")
    ]
    invoke = translated["Resources"]["ImportChargesFunctionEventInvokeConfig"]["Properties"]
    assert invoke["MaximumRetryAttempts"] == 2
    # After its retries, the S3 event goes to the alert function (which says what to do).
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["AlertFunction", "Arn"]}


def test_the_ledger_and_the_alerts_topic_are_encrypted(translated):
    table = translated["Resources"]["LedgerTable"]
    assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True}
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Retain"
    # A customer-managed key that CloudWatch alarms may use: they cannot publish to alias/aws/sns.
    assert translated["Resources"]["AlertsTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertsKey"}
    key = translated["Resources"]["AlertsKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    (cloudwatch,) = [s for s in key["KeyPolicy"]["Statement"] if s["Principal"].get("Service")]
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    # Every role that publishes to the topic may use the key.
    for role in resources_of_type(translated, "AWS::IAM::Role"):
        statements = role_statements(translated, role)
        if any("sns:Publish" in actions_of(s) for s in statements):
            (encrypt,) = [s for s in statements if "kms:GenerateDataKey" in actions_of(s)]
            assert encrypt["Resource"] == {"Fn::GetAtt": ["AlertsKey", "Arn"]}, role


def test_failed_or_timed_out_executions_of_both_state_machines_reach_the_alert_function(translated):
    from moto.events.models import EventPattern

    (rule,) = resources_of_type(translated, "AWS::Events::Rule").values()
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["AlertFunction", "Arn"]}
    pattern = rule["Properties"]["EventPattern"]
    machines = pattern["detail"]["stateMachineArn"]
    assert machines == [{"Ref": "ExportBillingStateMachine"}, {"Ref": "FollowImportSessionStateMachine"}]
    # The pattern as EventBridge sees it once the two ARNs are resolved.
    resolved = {**pattern, "detail": {**pattern["detail"], "stateMachineArn": ["arn:export", "arn:follow"]}}
    matcher = EventPattern.load(json.dumps(resolved))

    def event(status: str, machine: str = "arn:export") -> Any:
        return {
            "source": "aws.states",
            "detail-type": "Step Functions Execution Status Change",
            "detail": {"status": status, "stateMachineArn": machine},
        }

    for status in ("FAILED", "TIMED_OUT", "ABORTED"):
        assert matcher.matches_event(event(status)), status
        assert matcher.matches_event(event(status, "arn:follow")), status
    for status in ("RUNNING", "SUCCEEDED"):
        assert not matcher.matches_event(event(status)), status
    assert not matcher.matches_event(event("FAILED", "arn:someone-else"))


def test_a_month_the_schedule_could_not_start_raises_an_alarm_on_the_alerts_topic(translated):
    for schedule in resources_of_type(translated, "AWS::Scheduler::Schedule").values():
        dead_letters = schedule["Properties"]["Target"]["DeadLetterConfig"]["Arn"]
        assert dead_letters == {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}
    alarm = translated["Resources"]["ScheduleFailedAlarm"]["Properties"]
    assert alarm["AlarmActions"] == [{"Ref": "AlertsTopic"}]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "QueueName"]}}
    ]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    # The alarm's text is what a person reads in the e-mail: what happened and the commands that fix it.
    description = alarm["AlarmDescription"]["Fn::Sub"]
    assert len(description) <= 1024
    for needed in (
        "What to do",
        "aws sqs receive-message",
        "aws stepfunctions start-execution",
        '{"month": "yyyyMM", "coverage": "jp|g"}',
    ):
        assert needed in description


#: What the README's runbook and the alerts tell an operator to use by name, and the resource each output names.
OPERATOR_OUTPUTS = {
    "DataBucketName": {"Ref": "DataBucket"},  # $BUCKET
    "ExportBillingStateMachineArn": {"Ref": "ExportBillingStateMachine"},  # $EXPORT, "start the month again"
    "FollowImportSessionStateMachineArn": {"Ref": "FollowImportSessionStateMachine"},  # "follow it again"
    "ImportChargesFunctionName": {"Ref": "ImportChargesFunction"},  # aws lambda invoke --function-name <ImportCharges>
    "ScheduleDeadLetterQueueUrl": {"Ref": "ScheduleDeadLetterQueue"},  # aws sqs receive-message --queue-url <queue>
    "AlertsTopicArn": {"Ref": "AlertsTopic"},
    "LedgerTableName": {"Ref": "LedgerTable"},
    "SoracomAuthKeySecretArn": {"Ref": "SoracomAuthKeySecret"},
    "CloudBlueCredentialsSecretArn": {"Ref": "CloudBlueCredentialsSecret"},
}


def test_every_name_the_runbook_uses_is_an_output_and_every_output_says_what_it_is(template, translated):
    outputs = template["Outputs"]
    for name, value in OPERATOR_OUTPUTS.items():
        assert outputs[name]["Value"] == value, name
    assert "DashboardUrl" in outputs
    for name, output in outputs.items():
        description = output.get("Description", "")
        assert description.strip(), f"the output {name} has no Description"
        assert len(description) <= 1024, name  # CloudFormation's limit
    # Ref of an SQS queue is its URL, what `aws sqs receive-message --queue-url` takes (its ARN would be refused).
    assert translated["Resources"]["ScheduleDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    assert translated["Outputs"]["ScheduleDeadLetterQueueUrl"]["Value"] == {"Ref": "ScheduleDeadLetterQueue"}
    # The import function after the SAM transform: Ref of an AWS::Lambda::Function is its name.
    assert translated["Resources"]["ImportChargesFunction"]["Type"] == "AWS::Lambda::Function"


@pytest.mark.parametrize(
    ("machine", "definition", "functions"),
    [
        (
            "ExportBillingStateMachine",
            "export_billing",
            ("FindExport", "GetBill", "StartExport", "PollExport", "StoreExport"),
        ),
        ("FollowImportSessionStateMachine", "follow_import_session", ("GetImportSession", "FinishImport")),
    ],
)
def test_each_state_machine_gets_every_substitution_and_may_invoke_exactly_its_functions(
    translated, machine, definition, functions
):
    properties = translated["Resources"][machine]["Properties"]
    substitutions: dict[str, Any] = properties["DefinitionSubstitutions"]
    text = (REPO / "statemachine" / f"{definition}.asl.json").read_text()
    assert set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text)) == set(substitutions)
    assert substitutions == {f"{f}FunctionArn": {"Fn::GetAtt": [f"{f}Function", "Arn"]} for f in functions}
    assert properties["StateMachineType"] == "STANDARD"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    invoked = set()
    for statement in role_statements(translated, f"{machine}Role"):
        assert statement["Action"] == ["lambda:InvokeFunction"]
        invoked.add(statement["Resource"]["Fn::Sub"][1]["functionName"]["Ref"])
    assert invoked == {f"{f}Function" for f in functions}


def test_events_folder_has_a_valid_sample_for_each_function_and_each_state_machine(template):
    from aws_lambda_powertools.utilities.parser.models import S3Model
    from soracharge.models.alerts import ExecutionStatusChange, FailedInvocation
    from soracharge.models.export_flow import ExportProgress, StartExportRequest, StoreExportRequest
    from soracharge.models.imports import FollowSessionRequest, SessionProgress

    # Every function and state machine of the template: its sample events and the model that reads them.
    samples: dict[str, dict[str, Any]] = {
        "ExportBillingStateMachine": {
            "export_billing_manual.json": ExportRequest,
            "export_billing_schedule.json": ExportRequest,
        },
        "FindExportFunction": {"find_export.json": ExportRequest},
        "GetBillFunction": {"get_bill.json": ExportRequest},
        "StartExportFunction": {"start_export.json": StartExportRequest},
        "PollExportFunction": {"poll_export.json": ExportProgress},
        "StoreExportFunction": {"store_export.json": StoreExportRequest},
        "StartAccountExportsFunction": {"start_account_exports.json": ExportRequest},
        "ImportChargesFunction": {"import_charges_s3_put.json": S3Model},
        "FollowImportSessionStateMachine": {"follow_import_session.json": FollowSessionRequest},
        "GetImportSessionFunction": {"get_import_session.json": SessionProgress},
        "FinishImportFunction": {"finish_import.json": FollowSessionRequest},
        "AlertFunction": {
            "alert_export_failed.json": ExecutionStatusChange,
            "alert_import_failed.json": FailedInvocation,
        },
    }
    runnable = {
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine")
    }
    assert set(samples) == runnable
    events = Path(REPO / "events")
    files = {name: model for per_resource in samples.values() for name, model in per_resource.items()}
    assert {p.name for p in events.glob("*.json")} - {"env.example.json"} == set(files)
    for name, model in files.items():
        parse_input(json.loads((events / name).read_text()), model)
    # The docs show how to use each of them.
    page = (REPO / "docs" / "local" / "events.md").read_text(encoding="utf-8")
    for resource, per_resource in samples.items():
        for name in per_resource:
            assert f"events/{name}" in page, f"docs/local/events.md never shows events/{name} ({resource})"


def test_least_privilege_no_wildcards_in_any_role(translated):
    # Every inline statement names its actions and its resources; the only managed policies are
    # Lambda's basic logging and X-Ray tracing (whose PutTraceSegments has no resource to scope).
    allowed_managed = {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }
    for name, role in resources_of_type(translated, "AWS::IAM::Role").items():
        assert set(role["Properties"].get("ManagedPolicyArns", [])) <= allowed_managed, name
        for statement in role_statements(translated, name):
            assert statement["Effect"] == "Allow", name
            for action in actions_of(statement):
                assert "*" not in action, f"{name}: {action}"
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert "*" not in resources, name
            assert all(json.dumps(r) != '"*"' for r in resources), name
