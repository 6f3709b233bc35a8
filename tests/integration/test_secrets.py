"""Known secret values never appear in logs, reports, errors or state machine outputs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import TextIO, cast

import pytest
from soracharge import observability
from soracharge_local.engine import CloudBlueAccess, LocalCloud, SoracomAccess
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH

SORACOM_KEY = "SECRET-soracom-authkey-4f2a9c"
CLOUDBLUE_SECRET = "SECRET-cloudblue-consumer-7d1e3b"
MAPPING = Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml"


def everything_the_stack_said(cloud: LocalCloud) -> str:
    """Every execution's history and output, every object in the bucket but the CSVs, every delivery."""
    sfn, s3 = cloud.client("stepfunctions"), cloud.client("s3")
    parts = []
    for arn in cloud.state_machines.values():
        for execution in sfn.list_executions(stateMachineArn=arn)["executions"]:
            parts.append(json.dumps(sfn.describe_execution(executionArn=execution["executionArn"]), default=str))
            history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
            parts.append(json.dumps(history["events"], default=str))
    for item in s3.list_objects_v2(Bucket=cloud.bucket).get("Contents", []):
        if not item["Key"].endswith(".csv") and item["Key"] != "config/mapping.yaml":
            parts.append(s3.get_object(Bucket=cloud.bucket, Key=item["Key"])["Body"].read().decode())
    for delivery in cloud.async_invocations.deliveries:
        parts.append(json.dumps([delivery.result, delivery.error], default=str))
    for invocation in cloud.runner.invocations:
        parts.append(json.dumps([invocation.event, invocation.result], default=str))
    return "\n".join(parts)


@pytest.mark.parametrize("soracom_key_works", [True, False])
def test_no_secret_reaches_logs_reports_errors_or_outputs(capfd, caplog, soracom_key_works):
    # Our loggers, httpx's and the simulators' at DEBUG (botocore's own DEBUG dumps every request body,
    # secrets included, and is never turned on by soracharge).
    for name in ("soracharge", "soracharge_local", "httpx", "httpcore"):
        caplog.set_level("DEBUG", logger=name)
    # Powertools' Logger writes to the stdout it found when soracharge.observability was imported
    # (under pytest's capture, which capfd then misses): its handler is pointed here for the run.
    functions_printed = io.StringIO()
    handler = observability.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(cast(TextIO, functions_printed))
    try:
        with (
            contextlib.redirect_stdout(functions_printed),
            SoracomSimulator(auth_key_id="keyId-secret-test", auth_key=SORACOM_KEY) as soracom,
            CloudBlueSimulator(consumer_key="ck-secret-test", consumer_secret=CLOUDBLUE_SECRET) as cloudblue,
        ):
            sent_key = SORACOM_KEY if soracom_key_works else SORACOM_KEY + "-wrong"
            with LocalCloud(
                soracom=SoracomAccess(endpoint=soracom.base_url, auth_key_id="keyId-secret-test", auth_key=sent_key),
                cloudblue=CloudBlueAccess(
                    endpoint=cloudblue.base_url, consumer_key="ck-secret-test", consumer_secret=CLOUDBLUE_SECRET
                ),
                mapping=MAPPING,
                instant_waits=True,
                environment={"POWERTOOLS_LOG_LEVEL": "DEBUG"},
            ) as cloud:
                result = cloud.run("ExportBillingStateMachine", {"month": LAST_MONTH}, name="secrets")
                cloud.async_invocations.wait_idle()
                if soracom_key_works:
                    assert result.status == "SUCCEEDED"
                    (delivery,) = cloud.async_invocations.deliveries
                    (report,) = delivery.result["reports"]
                    assert report["status"] == "CLOSED"
                    arn = cloud.state_machines["FollowImportSessionStateMachine"]
                    for execution in cloud.client("stepfunctions").list_executions(stateMachineArn=arn)["executions"]:
                        list(cloud.follow(execution["executionArn"], timeout_seconds=60))
                else:
                    assert result.error == "SoracomAuthError"
                    assert "keyId-secret-test" in (result.cause or "")  # the error names the key id, not the key
                said = everything_the_stack_said(cloud) + json.dumps(cloud.alerts(), ensure_ascii=False)
    finally:
        handler.setStream(previous)
    printed = functions_printed.getvalue()
    assert '"function_name"' in printed  # the functions' own JSON log lines were seen
    logs = capfd.readouterr()
    for text in (said, printed, logs.out, logs.err, caplog.text):
        assert SORACOM_KEY not in text
        assert CLOUDBLUE_SECRET not in text
    assert "X-Amz-Signature" not in said  # nor the pre-signed URL's credentials
