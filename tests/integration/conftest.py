"""Integration fixtures: the Soracom simulator and the template deployed into moto (in-process Lambdas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from soracharge.models.months import previous_month, shift_month
from soracharge_local.engine import CloudBlueAccess, ExecutionResult, LocalCloud, SoracomAccess
from soracharge_local.simulators import CloudBlueSimulator, SoracomFaults, SoracomSimulator

SIM_AUTH_KEY_ID = "keyId-integration"
SIM_AUTH_KEY = "secret-integration-do-not-log"

#: The month a monthly run exports today, and one safely in the past (a 404 there is final).
LAST_MONTH = previous_month(datetime.now(UTC))
OLDER_MONTH = shift_month(LAST_MONTH, -3)


@pytest.fixture(scope="module")
def soracom() -> Iterator[SoracomSimulator]:
    with SoracomSimulator(auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY, polls_until_ready=2) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def global_soracom() -> Iterator[SoracomSimulator]:
    """A Global coverage (USD) simulator whose bill takes a 1.5 USD coupon off, beside the Japan one."""
    with SoracomSimulator(
        coverage="g", auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY, polls_until_ready=2, coupon=Decimal("1.5")
    ) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def cloudblue() -> Iterator[CloudBlueSimulator]:
    with CloudBlueSimulator() as simulator:
        yield simulator


def full_stack(
    soracom: SoracomSimulator,
    cloudblue: CloudBlueSimulator,
    mapping: Path | dict[str, Path],
    environment: dict[str, str] | None = None,
    coverages: tuple[str, ...] | None = None,
) -> LocalCloud:
    """The whole template in moto, talking to both simulators, imports on (enter it with ``with``).

    The stack's coverage is the simulator's unless ``coverages`` are given."""
    return LocalCloud(
        coverages=coverages or (soracom.coverage,),
        soracom=SoracomAccess(endpoint=soracom.base_url, auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY),
        cloudblue=CloudBlueAccess(
            endpoint=cloudblue.base_url, consumer_key=cloudblue.consumer_key, consumer_secret=cloudblue.consumer_secret
        ),
        mapping=mapping,
        instant_waits=True,
        environment=environment,
    )


@pytest.fixture(scope="module")
def cloud(soracom: SoracomSimulator) -> Iterator[LocalCloud]:
    access = SoracomAccess(endpoint=soracom.base_url, auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY)
    # Export tests only: the import flow (and its S3 notification) is tested in test_import_flow.py.
    with LocalCloud(
        soracom=access,
        instant_waits=True,
        import_on_upload=False,
        environment={"POWERTOOLS_METRICS_DISABLED": "true"},
    ) as local_cloud:
        yield local_cloud


@pytest.fixture(autouse=True)
def _fresh_run(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with no faults, no recorded requests and no hooks."""
    if "cloud" not in request.fixturenames:
        yield
        return
    soracom: SoracomSimulator = request.getfixturevalue("soracom")
    cloud: LocalCloud = request.getfixturevalue("cloud")
    soracom.faults = SoracomFaults()
    soracom.polls_until_ready = 2
    soracom.clear_requests()
    cloud.retry_sleeps.clear()
    # Keep the engine's own hooks; drop those an earlier test added.
    cloud.runner.before_invoke[:] = [h for h in cloud.runner.before_invoke if h.__module__ == "soracharge_local.engine"]
    empty_prefix(cloud, "exports/")
    yield


def follows_ended(cloud: LocalCloud) -> None:
    """Wait until every follow-import-session execution has ended, and what its end caused (an alert) was delivered.

    A module's tests share one stack: a follow a test started must not outlive it, or it meets the next test's
    faults (CloudBlue down) and alerts in that test. Call it when a test that imports ends."""
    cloud.async_invocations.wait_idle()  # the imports that start them
    sfn = cloud.client("stepfunctions")
    arn = cloud.state_machines["FollowImportSessionStateMachine"]
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn, statusFilter="RUNNING"):
        for execution in page["executions"]:
            list(cloud.follow(execution["executionArn"], timeout_seconds=120))
    cloud.async_invocations.wait_idle()


def empty_prefix(cloud: LocalCloud, prefix: str) -> None:
    """Delete every version under ``prefix`` (a month is exported once: tests start with none)."""
    s3 = cloud.client("s3")
    listed = s3.list_object_versions(Bucket=cloud.bucket, Prefix=prefix)
    for version in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
        s3.delete_object(Bucket=cloud.bucket, Key=version["Key"], VersionId=version["VersionId"])


def export(cloud: LocalCloud, payload: dict[str, Any], name: str) -> ExecutionResult:
    return cloud.run("ExportBillingStateMachine", payload, name=name, timeout_seconds=120)


def lambda_failures(result: ExecutionResult) -> list[str]:
    return [
        e["lambdaFunctionFailedEventDetails"]["error"] for e in result.events if e["type"] == "LambdaFunctionFailed"
    ]


def error_message(result: ExecutionResult) -> str:
    return str(json.loads(result.cause or "{}").get("errorMessage", result.cause))


def count(result: ExecutionResult, event_type: str, state: str | None = None) -> int:
    return sum(
        1
        for e in result.events
        if e["type"] == event_type and (state is None or e["stateEnteredEventDetails"]["name"] == state)
    )
