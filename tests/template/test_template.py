"""What the deployed stack will be: schedule, bucket, secret, functions, policies, substitutions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from soracharge.models.export_flow import ExportRequest
from soracharge.models.parsing import parse_input

from tests.template.conftest import REPO, resources_of_type

BUCKET_NAME = {"Fn::Sub": "${AWS::StackName}-data-${AWS::AccountId}"}


def test_a_schedule_starts_the_export_monthly_for_the_previous_month(template, translated):
    (schedule,) = resources_of_type(translated, "AWS::Scheduler::Schedule").values()
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
    payload = json.loads(target["Input"].replace("<aws.scheduler.scheduled-time>", "2026-11-04T00:00:00Z"))
    assert parse_input(payload, ExportRequest).billing_month() == "202610"


def test_the_schedule_may_only_start_the_export_state_machine(translated):
    schedule = next(iter(resources_of_type(translated, "AWS::Scheduler::Schedule").values()))
    role = translated["Resources"][schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]]
    statements = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statements == [
        {"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": "ExportBillingStateMachine"}}
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
    assert set(functions) == {"GetBillFunction", "StartExportFunction", "PollExportFunction", "StoreExportFunction"}
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


def test_the_soracom_auth_key_lives_in_secrets_manager_and_only_its_readers_may_read_it(translated):
    (secret,) = resources_of_type(translated, "AWS::SecretsManager::Secret").values()
    assert "SecretString" not in secret["Properties"]  # no key in the template
    for name, role in resources_of_type(translated, "AWS::IAM::Role").items():
        statements = [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert "*" not in actions, name
            if any(a.startswith("secretsmanager:") for a in actions):
                assert statement["Resource"] == {
                    "Fn::Sub": ["${secretArn}", {"secretArn": {"Ref": "SoracomAuthKeySecret"}}]
                }


def test_only_store_export_may_write_and_only_under_exports(translated):
    writers = {}
    for name, role in resources_of_type(translated, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if any(a.startswith("s3:") for a in actions):
                    writers[name] = statement["Resource"]
    assert writers == {
        "StoreExportFunctionRole": {
            "Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-data-${AWS::AccountId}/exports/*"
        }
    }


def test_the_state_machine_gets_every_substitution_its_definition_uses(translated, export_asl):
    (machine,) = resources_of_type(translated, "AWS::StepFunctions::StateMachine").values()
    substitutions: dict[str, Any] = machine["Properties"]["DefinitionSubstitutions"]
    text = (REPO / "statemachine" / "export_billing.asl.json").read_text()
    used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))
    assert used == set(substitutions)
    for key, value in substitutions.items():
        logical_id = value["Fn::GetAtt"][0]
        assert translated["Resources"][logical_id]["Type"] == "AWS::Lambda::Function", key
        assert key == f"{logical_id}Arn"
    assert machine["Properties"]["StateMachineType"] == "STANDARD"
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}


def test_the_state_machine_may_invoke_exactly_its_four_functions(translated):
    role = translated["Resources"]["ExportBillingStateMachineRole"]
    invoked = set()
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Action"] == ["lambda:InvokeFunction"]
            invoked.add(json.dumps(statement["Resource"]["Fn::Sub"][1]["functionName"]))
    assert invoked == {
        json.dumps({"Ref": f"{name}Function"}) for name in ("GetBill", "StartExport", "PollExport", "StoreExport")
    }


def test_events_folder_has_a_valid_sample_for_each_function_and_the_state_machine():
    from soracharge.models.export_flow import ExportProgress, StartExportRequest, StoreExportRequest

    models: dict[str, Any] = {
        "export_billing_manual.json": ExportRequest,
        "export_billing_schedule.json": ExportRequest,
        "get_bill.json": ExportRequest,
        "start_export.json": StartExportRequest,
        "poll_export.json": ExportProgress,
        "store_export.json": StoreExportRequest,
    }
    events = Path(REPO / "events")
    assert {p.name for p in events.glob("*.json")} == set(models)
    for name, model in models.items():
        parse_input(json.loads((events / name).read_text()), model)
