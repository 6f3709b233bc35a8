"""A month held for approval in the deployed template (moto, in-process Lambdas): the alert's command decides it.

The alert is read as a person reads it off the topic; its ``aws lambda invoke`` command is given to the
import function as Lambda would be given it (``--invocation-type Event``), and the follow-import-session
state machine then watches the session to its rating.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.chaos.runbook import ReceivedAlert
from tests.integration.conftest import LAST_MONTH, full_stack
from tests.integration.test_import_flow import (
    EXAMPLE_MAPPING,
    assert_what_the_csv_makes,
    expected_charges,
    follow,
    held,
    report_of,
    upload,
)

MONTH = shift_month(LAST_MONTH, -4)


@pytest.fixture(scope="module")
def reviewing(soracom: SoracomSimulator, cloudblue: CloudBlueSimulator, tmp_path_factory) -> Iterator[LocalCloud]:
    mapping = yaml.safe_load(EXAMPLE_MAPPING.read_text(encoding="utf-8"))
    mapping["review"] = {"approval": "always"}  # every month waits for a person
    path = tmp_path_factory.mktemp("mapping") / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
    with full_stack(soracom, cloudblue, path, {"POWERTOOLS_METRICS_DISABLED": "true"}) as cloud:
        yield cloud


def alerts_about(cloud: LocalCloud, key: str) -> list[ReceivedAlert]:
    return [ReceivedAlert.read(a["subject"], a["message"]) for a in cloud.alerts() if key in a["message"]]


def decide(cloud: LocalCloud, alert: ReceivedAlert, decision: str, by: str) -> dict[str, Any]:
    """The alert's command for ``decision``, run with ``by`` for YOUR NAME; the import's report."""
    (command,) = [c for c in alert.commands if f'"decision":"{decision}"' in c]
    words = shlex.split(command.replace("YOUR NAME", by))
    assert words[:3] == ["aws", "lambda", "invoke"]
    assert words[words.index("--invocation-type") + 1] == "Event"
    function = words[words.index("--function-name") + 1]
    before = len(cloud.async_invocations.deliveries)
    cloud.async_invocations.invoke(function, json.loads(words[words.index("--payload") + 1]))
    (delivery,) = cloud.import_deliveries(before)
    assert delivery.error is None, delivery.error
    (report,) = delivery.result["reports"]
    return dict(report)


def test_a_held_month_is_sent_exactly_as_previewed_once_the_alert_s_approve_command_runs(reviewing, soracom, cloudblue):
    body = soracom.csv_bytes(MONTH)
    sessions_before = len(cloudblue.sessions())
    key = f"uploads/{MONTH}/held.csv"
    preview = report_of(reviewing, upload(reviewing, key, body))
    # Held: nothing sent, the alert gives both commands
    assert preview["status"] == "AWAITING_APPROVAL"
    assert len(cloudblue.sessions()) == sessions_before
    (alert,) = alerts_about(reviewing, key)
    assert alert.subject == f"soracharge {MONTH} (Japan coverage): held for approval, nothing sent"
    assert len(alert.commands) == 2
    # Approved: the import sends exactly the file's charges, once, and the follow state machine sees them rated
    report = decide(reviewing, alert, "approve", "Hanako")
    assert report["status"] == "CLOSED"
    assert report["approval"]["by"] == "Hanako"
    assert held(cloudblue, report["importSessionId"]) == sorted(expected_charges(body, MONTH).items())
    assert_what_the_csv_makes(cloudblue, report["importSessionId"], body)
    assert follow(reviewing, report)["type"] == "ExecutionSucceeded"
    final = json.loads(
        reviewing.client("s3")
        .get_object(Bucket=reviewing.bucket, Key=f"reports/{MONTH}/{preview['object']['versionId']}.json")["Body"]
        .read()
    )
    assert final["status"] == "PROCESSED"
    assert final["approval"]["decision"] == "approved"
    # The same command again sends nothing more
    again = decide(reviewing, alert, "approve", "Hanako")
    assert again["importSessionId"] == report["importSessionId"]
    assert len(cloudblue.sessions()) == sessions_before + 1
    # And the history page beside the reports lists the month
    page = reviewing.client("s3").get_object(Bucket=reviewing.bucket, Key="reports/history.html")["Body"].read()
    assert f'data-month="{MONTH}" data-status="PROCESSED"' in page.decode()


def test_the_reject_command_ends_the_month_with_nothing_sent(reviewing, soracom, cloudblue):
    month = shift_month(MONTH, -1)
    key = f"uploads/{month}/rejected.csv"
    sessions_before = len(cloudblue.sessions())
    preview = report_of(reviewing, upload(reviewing, key, soracom.csv_bytes(month)))
    assert preview["status"] == "AWAITING_APPROVAL"
    (alert,) = alerts_about(reviewing, key)
    report = decide(reviewing, alert, "reject", "Taro")
    assert report["status"] == "REJECTED"
    assert report["reason"] == "review-rejected"
    assert len(cloudblue.sessions()) == sessions_before
    assert [a.subject for a in alerts_about(reviewing, key)][-1].endswith("rejected after review, nothing sent")
