"""What an operator finds in CloudWatch after a month's run, checked on the real flows.

The export state machine, the S3 notification's import and the follow-import-session state machine
run in LocalCloud against the Soracom and CloudBlue simulators, with metrics enabled. What a function
prints to stdout is what Lambda sends to CloudWatch Logs: Powertools' JSON log lines (whose keys the
dashboard's Logs Insights widgets query) and EMF blobs (which CloudWatch turns into the metrics the
dashboard charts). It is captured per invocation and compared with what the simulators received.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO, cast

import pytest
from soracharge import observability
from soracharge.logic.imports import follow_execution_name
from soracharge.models.months import shift_month
from soracharge.observability import Metric
from soracharge_local.engine import ExecutionResult, LocalCloud
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH, full_stack

MAPPING = Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml"
METRIC_NAMES = {metric.value for metric in Metric}
#: The levels the dashboard's "warnings and errors" widget filters on, as Powertools writes them.
WARNING_LEVELS = {"WARNING", "ERROR", "CRITICAL"}
#: A bill item the example mapping has no resource for, and one it maps.
UNMAPPED_ITEM = "SORACOM Arc 月額料金"
MAPPED_ITEM = "smsCharge"


# -- what the functions print ---------------------------------------------------------------------


@dataclass
class Printed:
    """What one invocation of a function printed."""

    function: str
    text: io.StringIO = field(default_factory=io.StringIO)

    def lines(self) -> list[str]:
        return [line for line in self.text.getvalue().splitlines() if line.strip()]


@dataclass
class Output:
    """What the functions printed during one scenario, invocation by invocation."""

    invocations: list[Printed] = field(default_factory=list)

    def objects(self, *functions: str) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for printed in self.invocations
            if not functions or printed.function in functions
            for line in printed.lines()
        ]

    def logs(self, *functions: str) -> list[dict[str, Any]]:
        return [o for o in self.objects(*functions) if "_aws" not in o]

    def emf(self) -> list[dict[str, Any]]:
        return [o for o in self.objects() if "_aws" in o]

    def metric(self, name: str, **dimensions: str) -> list[float]:
        """Every value of ``name`` in the EMF blobs whose dimensions include ``dimensions``."""
        values: list[float] = []
        for blob in self.emf():
            declared = {m["Name"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
            if name in declared and all(blob.get(k) == v for k, v in dimensions.items()):
                value = blob[name]
                values.extend(value if isinstance(value, list) else [value])
        return values

    def total(self, name: str, **dimensions: str) -> float:
        return sum(self.metric(name, **dimensions))

    def invoked(self, function: str) -> int:
        return sum(1 for printed in self.invocations if printed.function == function)


class FunctionStdout(io.StringIO):
    """A stdout that files what is written during each Lambda invocation under that invocation.

    The in-process runner serialises invocations and calls its hooks around each one, so what is
    written between ``invoked`` and ``returned`` (the import's sending threads included) is that
    invocation's output, as its own log stream would hold it on Lambda.
    """

    def __init__(self) -> None:
        super().__init__()
        self.invocations: list[Printed] = []
        self._current: Printed | None = None
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if self._current is None:
                return len(text)  # not a function's output (nothing else here prints to stdout)
            return self._current.text.write(text)

    def invoked(self, function: str, event: object) -> None:
        with self._lock:
            self._current = Printed(function)
            self.invocations.append(self._current)

    def returned(self) -> None:
        with self._lock:
            self._current = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[Output]:
        """Capture stdout while the block runs. Powertools' Logger keeps the stdout it found when
        ``soracharge.observability`` was imported (at collection, under pytest's capture), so its
        handler is pointed here too; EMF blobs are ``print``-ed to the current ``sys.stdout``."""
        handler = observability.logger.registered_handler
        assert isinstance(handler, logging.StreamHandler)
        output = Output()
        start = len(self.invocations)
        previous = handler.setStream(cast(TextIO, self))
        try:
            with contextlib.redirect_stdout(self):
                yield output
        finally:
            if previous is not None:
                handler.setStream(previous)
            output.invocations.extend(self.invocations[start:])


# -- the stack and the three runs -----------------------------------------------------------------


@dataclass
class Stack:
    cloud: LocalCloud
    stdout: FunctionStdout


@dataclass
class MonthRun:
    """The monthly chain: export state machine -> S3 -> import -> follow-import-session."""

    output: Output
    export: ExecutionResult
    csv: bytes
    report: dict[str, Any]
    follow: list[dict[str, Any]]


@dataclass
class Upload:
    output: Output
    body: bytes
    report: dict[str, Any]
    follow: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(soracom: SoracomSimulator, cloudblue: CloudBlueSimulator) -> Iterator[Stack]:
    stdout = FunctionStdout()
    # Metrics enabled: no POWERTOOLS_METRICS_DISABLED, the template's namespace and service.
    with full_stack(soracom, cloudblue, MAPPING) as cloud:
        cloud.runner.before_invoke.append(stdout.invoked)
        cloud.runner.after_invoke.append(stdout.returned)
        yield Stack(cloud, stdout)


def follow_to_end(cloud: LocalCloud, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The history of the follow-import-session execution the import started for its report, once it
    has ended and its status-change event has reached EventBridge (and the alert function, if a rule
    matched: ``cloud.alerts()`` then waits for that invocation)."""
    prefix = cloud.state_machines["FollowImportSessionStateMachine"].replace(":stateMachine:", ":execution:")
    obj = report["object"]
    name = follow_execution_name(f"{obj['bucket']}/{obj['key']}#{obj['versionId']}", report["importSessionId"])
    arn = f"{prefix}:{name}"
    history = list(cloud.follow(arn, timeout_seconds=120))
    deadline = time.monotonic() + 30
    while not any(e.get("detail", {}).get("executionArn") == arn for e in list(cloud.event_router.events)):
        assert time.monotonic() < deadline, f"no status-change event for {arn}"
        time.sleep(0.01)
    return history


def import_of(cloud: LocalCloud, delivered_before: int) -> dict[str, Any]:
    """The one import report of the S3 notification delivered since ``delivered_before``."""
    cloud.async_invocations.wait_idle()
    (delivery,) = cloud.async_invocations.deliveries[delivered_before:]
    assert delivery.error is None, delivery.error
    (report,) = delivery.result["reports"]
    return dict(report)


def upload(cloud: LocalCloud, key: str, body: bytes) -> dict[str, Any]:
    """A person's upload of a CSV (with the bill's currency): the report of its import."""
    before = len(cloud.async_invocations.deliveries)
    cloud.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=body, Metadata={"currency": "JPY"})
    return import_of(cloud, before)


@pytest.fixture(scope="module")
def month_run(stack: Stack) -> MonthRun:
    cloud = stack.cloud
    before = len(cloud.async_invocations.deliveries)
    with stack.stdout.recording() as output:
        export = cloud.run("ExportBillingStateMachine", {"month": LAST_MONTH}, name="observed", timeout_seconds=120)
        assert export.status == "SUCCEEDED", export.cause
        report = import_of(cloud, before)  # the S3 notification of the stored CSV
        follow = follow_to_end(cloud, report)
    assert export.output is not None
    stored = export.output["s3"]
    csv_body = cloud.client("s3").get_object(Bucket=stored["bucket"], Key=stored["key"])["Body"].read()
    return MonthRun(output, export, csv_body, report, follow)


@pytest.fixture(scope="module")
def rejected(stack: Stack, soracom: SoracomSimulator, cloudblue: CloudBlueSimulator) -> Upload:
    """A person's upload with a bill item the mapping does not know: rejected, nothing sent."""
    month = shift_month(LAST_MONTH, -1)
    body = soracom.csv_bytes(month).replace(MAPPED_ITEM.encode(), UNMAPPED_ITEM.encode())
    sessions = len(cloudblue.sessions())
    stack.cloud.alerts()  # drop what earlier runs alerted
    with stack.stdout.recording() as output:
        report = upload(stack.cloud, f"uploads/{month}/unmapped item.csv", body)
        alerts = stack.cloud.alerts()
    assert report["status"] == "REJECTED"
    assert len(cloudblue.sessions()) == sessions
    return Upload(output, body, report, alerts=alerts)


@pytest.fixture(scope="module")
def failed_rating(stack: Stack, soracom: SoracomSimulator, cloudblue: CloudBlueSimulator) -> Upload:
    """An upload imported and closed, which CloudBlue then fails to rate (FAILED_PROCESSED)."""
    month = shift_month(LAST_MONTH, -2)
    body = soracom.csv_bytes(month)
    stack.cloud.alerts()  # drop what earlier runs alerted
    cloudblue.faults.fail_processing = "subscription 6513270e-269e-4d37-b2a7-4de452e6b438 is suspended"
    try:
        with stack.stdout.recording() as output:
            report = upload(stack.cloud, f"uploads/{month}/to be rated.csv", body)
            follow = follow_to_end(stack.cloud, report)
            alerts = stack.cloud.alerts()  # after the alert function's run on the execution's end
    finally:
        cloudblue.faults.fail_processing = None
    return Upload(output, body, report, follow, alerts)


def data_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def states_entered(events: list[dict[str, Any]], state: str) -> int:
    return sum(
        1
        for e in events
        if e["type"] == "TaskStateEntered" and e.get("stateEnteredEventDetails", {}).get("name") == state
    )


def carries(line: dict[str, Any], **keys: object) -> bool:
    return all(line.get(key) == value for key, value in keys.items())


# -- everything printed ----------------------------------------------------------------------------


def test_every_line_the_functions_print_is_json_and_every_metric_is_a_soracharge_metric(
    month_run, rejected, failed_rating
):
    outputs = (month_run.output, rejected.output, failed_rating.output)
    for output in outputs:
        for printed in output.invocations:
            for line in printed.lines():
                assert isinstance(json.loads(line), dict), (printed.function, line)  # Logs Insights finds its fields
    blobs = [blob for output in outputs for blob in output.emf()]
    assert blobs
    emitted = set()
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "Soracharge"
            emitted |= {metric["Name"] for metric in directive["Metrics"]}
    assert emitted <= METRIC_NAMES, emitted - METRIC_NAMES
    # What the three runs must have emitted between them (the dashboard charts every Metric).
    assert emitted >= {
        "ExportPollsNeeded",
        "ExportsStored",
        "ExportBytesStored",
        "RowsRead",
        "ChargesSent",
        "PacketsSent",
        "AmountImported",
        "UnmappedRows",
        "ImportsClosed",
        "ImportsRejected",
        "SessionsAbandoned",
        "SessionPollsNeeded",
        "ImportSessionsProcessed",
        "ImportSessionsFailedProcessed",
        "AlertsPublished",
    }


def test_every_metric_carries_the_dimensions_the_dashboard_queries(month_run, rejected, failed_rating):
    # The dashboard charts Soracharge metrics by service=soracharge (AmountImported: and Currency).
    for output in (month_run.output, rejected.output, failed_rating.output):
        blobs = list(output.emf())
        assert blobs, "no metric was emitted"
        for blob in blobs:
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                names = {metric["Name"] for metric in directive["Metrics"]}
                expected = [["service", "Currency", "Coverage"]] if names == {"AmountImported"} else [["service"]]
                assert directive["Dimensions"] == expected, directive
            assert blob["service"] == "soracharge"


# -- the log keys an operator filters on -----------------------------------------------------------


def test_export_lines_carry_the_month_and_once_started_the_exported_file_id(month_run):
    assert month_run.export.output is not None
    exported_file_id = month_run.export.output["exportedFileId"]
    output = month_run.output
    assert output.invoked("FindExportFunction") == 1  # it logs only a month stored before (a re-run)
    assert output.logs("FindExportFunction") == []
    for function in ("GetBillFunction", "StartExportFunction", "PollExportFunction", "StoreExportFunction"):
        assert output.logs(function), f"{function} logged nothing"
    for function in ("GetBillFunction", "StartExportFunction", "StoreExportFunction"):
        assert all(carries(line, month=LAST_MONTH) for line in output.logs(function)), function
    for function in ("StartExportFunction", "PollExportFunction", "StoreExportFunction"):
        lines = output.logs(function)
        assert all(carries(line, exportedFileId=exported_file_id) for line in lines), (function, lines)


def test_poll_export_lines_carry_the_month(month_run):
    lines = month_run.output.logs("PollExportFunction")
    assert lines
    assert all(carries(line, month=LAST_MONTH) for line in lines)


def test_import_lines_carry_month_object_version_and_once_sent_the_session(month_run):
    obj = month_run.report["object"]
    session_id = month_run.report["importSessionId"]
    lines = month_run.output.logs("ImportChargesFunction")
    assert lines
    for line in lines:
        assert carries(line, month=LAST_MONTH, objectKey=obj["key"], objectVersion=obj["versionId"]), line
    first_sent = next(i for i, line in enumerate(lines) if "importSessionId" in line)
    assert all(carries(line, importSessionId=session_id) for line in lines[first_sent:])
    assert obj["key"].startswith(f"exports/{LAST_MONTH}/")


def test_rejected_upload_lines_are_warnings_carrying_month_and_object(rejected):
    obj = rejected.report["object"]
    lines = rejected.output.logs("ImportChargesFunction")
    messages = [line["message"] for line in lines if line["level"] in WARNING_LEVELS]
    assert "Import rejected" in messages
    assert "Alert published" in messages
    for line in lines:
        assert carries(line, month=rejected.report["month"], objectKey=obj["key"], objectVersion=obj["versionId"])
        assert "importSessionId" not in line  # nothing was sent
    (published,) = [line for line in lines if line["message"] == "Alert published"]
    (alert,) = rejected.alerts
    assert published["subject"] == alert["subject"]


def test_finish_import_lines_carry_month_object_version_and_session(failed_rating):
    obj = failed_rating.report["object"]
    lines = failed_rating.output.logs("FinishImportFunction")
    # FinishImport logs when rating did not end well (it logs nothing for a PROCESSED session), at
    # levels the dashboard's warnings widget shows.
    warnings = {line["message"] for line in lines if line["level"] in WARNING_LEVELS}
    assert warnings >= {"Alert published", "Import session did not end rated"}
    for line in lines:
        assert carries(
            line,
            month=failed_rating.report["month"],
            objectKey=obj["key"],
            objectVersion=obj["versionId"],
            importSessionId=failed_rating.report["importSessionId"],
        ), line
    (published,) = [line for line in lines if line["message"] == "Alert published"]
    assert [alert["subject"] for alert in failed_rating.alerts] == [published["subject"]]


def test_get_import_session_lines_carry_the_month_and_object(month_run):
    obj = month_run.report["object"]
    lines = month_run.output.logs("GetImportSessionFunction")
    assert lines
    assert all(carries(line, month=LAST_MONTH, objectVersion=obj["versionId"]) for line in lines)


# -- the metrics an operator charts ----------------------------------------------------------------


def test_the_months_metrics_are_what_the_simulators_saw(month_run, cloudblue):
    output, report = month_run.output, month_run.report
    session_id = report["importSessionId"]
    assert report["status"] == "CLOSED"
    assert month_run.follow[-1]["type"] == "ExecutionSucceeded"
    # The export: polls until Soracom's CSV was ready, as many as PollExport ran in the execution.
    assert month_run.export.output is not None
    polls = states_entered(month_run.export.events, "PollExport")
    assert polls >= 2
    assert output.metric("ExportPollsNeeded") == [polls] == [month_run.export.output["polls"]]
    assert output.total("ExportsStored") == 1
    assert output.total("ExportBytesStored") == len(month_run.csv) == month_run.export.output["s3"]["size"]
    assert output.metric("ExportsAlreadyStored") == []
    # The import: every data row of the stored CSV read, every charge CloudBlue received counted.
    assert output.total("RowsRead") == len(data_rows(month_run.csv)) > 0
    assert output.total("ChargesSent") == len(cloudblue.charges(session_id)) > 0
    assert output.total("PacketsSent") == cloudblue.session(session_id).packets_accepted
    assert output.total("ImportsClosed") == 1
    assert output.total("SessionsAbandoned") == 0
    assert output.metric("ReconciliationImbalanced") == []
    assert output.metric("UnmappedRows") == []
    (imported,) = output.metric("AmountImported", Currency="JPY")
    assert imported == float(Decimal(report["reconciliation"]["importedSum"]))
    assert Decimal(report["reconciliation"]["importedSum"]) == sum(
        (Decimal(str(c["totalPrice"])) for c in cloudblue.charges(session_id)), Decimal(0)
    )
    assert output.metric("AmountImported", Currency="USD") == output.metric("AmountImported", Currency="EUR") == []
    # Rating: one session rated, after as many polls as GetImportSession ran.
    assert output.total("ImportSessionsProcessed") == 1
    session_polls = states_entered(month_run.follow, "GetImportSession")
    assert output.metric("SessionPollsNeeded") == [session_polls]
    assert session_polls >= 1
    assert output.metric("AlertsPublished") == []


def test_a_rejected_upload_counts_the_rejection_and_its_unmapped_rows(rejected):
    rows = data_rows(rejected.body)
    unmapped = sum(1 for row in rows if row["billItemName"] == UNMAPPED_ITEM)
    assert unmapped > 0
    output = rejected.output
    assert output.metric("ImportsRejected") == [1]
    assert output.metric("UnmappedRows") == [unmapped] == [rejected.report["counts"]["unmappedRows"]]
    assert output.metric("RowsRead") == [len(rows)]
    assert output.metric("AlertsPublished") == [1]
    for nothing_sent in ("ChargesSent", "PacketsSent", "AmountImported", "ImportsClosed"):
        assert output.metric(nothing_sent) == [], nothing_sent


def test_a_session_cloudblue_fails_to_rate_is_counted_and_alerted_once(failed_rating):
    output = failed_rating.output
    assert failed_rating.follow[-1]["type"] == "ExecutionFailed"
    assert output.metric("ImportsClosed") == [1]
    assert output.metric("ImportSessionsFailedProcessed") == [1]
    assert output.metric("ImportSessionsProcessed") == output.metric("ImportSessionsNotRated") == []
    # FinishImport alerts; the alert function sees the execution end ImportSessionFailed and does not again.
    assert output.invoked("AlertFunction") == 1
    assert output.metric("AlertsPublished") == [1]
