"""The local engine itself: the moto patch it relies on, and functions invoked with events/*.json."""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from moto.awslambda.models import LambdaFunction
from soracharge_local.engine import LocalCloud
from soracharge_local.lambda_runner import InProcessLambdaRunner
from soracharge_local.simulators import SoracomSimulator

from tests.integration.conftest import LAST_MONTH

REPO = Path(__file__).resolve().parents[2]


def test_moto_is_pinned_exactly_to_the_version_the_patch_was_written_for():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["optional-dependencies"]["local"] if d.startswith("moto")]
    assert pin.endswith(f"=={version('moto')}")


def test_installing_the_runner_fails_loudly_if_moto_drops_the_patched_method(monkeypatch):
    monkeypatch.delattr(LambdaFunction, "_invoke_lambda")
    with pytest.raises(RuntimeError, match=r"_invoke_lambda is gone"), InProcessLambdaRunner().installed():
        pass


def test_installing_the_runner_fails_loudly_if_the_method_changes_shape(monkeypatch):
    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", lambda self, event, context: None)
    with (
        pytest.raises(RuntimeError, match=r"moto changed LambdaFunction._invoke_lambda"),
        InProcessLambdaRunner().installed(),
    ):
        pass


def invoke(cloud: LocalCloud, logical_id: str, event: dict[str, object]) -> tuple[dict[str, object], str | None]:
    response = cloud.client("lambda").invoke(FunctionName=cloud.resources[logical_id], Payload=json.dumps(event))
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def sample_event(name: str, **changes: object) -> dict[str, object]:
    event: dict[str, object] = json.loads((REPO / "events" / name).read_text())
    event.update(changes)
    return event


def test_get_bill_answers_the_sample_event_with_the_closed_bill(cloud, soracom: SoracomSimulator):
    payload, error = invoke(cloud, "GetBillFunction", sample_event("get_bill.json", month=LAST_MONTH))
    bill = soracom.bill(LAST_MONTH)
    assert error is None
    assert bill is not None
    assert payload == {
        "month": LAST_MONTH,
        "amount": str(bill["amount"]),
        "appliedCouponAmount": str(bill["appliedCouponAmount"]),
        "currency": bill["currency"],
        "coverage": "jp",
        "operator": None,  # the stack's own operator
    }


def test_start_then_poll_export_with_the_sample_events(cloud, soracom: SoracomSimulator):
    started, error = invoke(cloud, "StartExportFunction", sample_event("start_export.json", month=LAST_MONTH))
    assert error is None
    assert started["status"] == "processing"
    assert started["polls"] == 0
    polled, error = invoke(cloud, "PollExportFunction", sample_event("poll_export.json", **started))
    assert error is None
    assert polled == {**started, "polls": 1}


def test_a_failing_function_returns_the_python_runtime_error_payload(cloud):
    payload, error = invoke(cloud, "PollExportFunction", sample_event("poll_export.json", exportedFileId="fe_unknown"))
    assert error is not None
    assert payload["errorType"] == "SoracomApiError"
    assert "Soracom does not know the export fe_unknown" in str(payload["errorMessage"])
    assert isinstance(payload["stackTrace"], list)


def test_the_soracom_auth_key_is_read_from_the_stack_secret(cloud):
    # The functions get no key in their environment: only the secret's ARN, as in AWS.
    secret_id = cloud.runner.environment_overrides["SORACOM_AUTH_SECRET_ID"]
    assert secret_id.startswith("arn:aws:secretsmanager:")
    assert "SORACOM_AUTH_KEY" not in cloud.runner.environment_overrides
    secret = json.loads(cloud.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
    assert set(secret) == {"authKeyId", "authKey"}


def test_the_local_bucket_is_versioned_and_blocks_public_access_as_the_template_says(cloud):
    s3 = cloud.client("s3")
    assert s3.get_bucket_versioning(Bucket=cloud.bucket)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=cloud.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
