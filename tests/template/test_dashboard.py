"""The CloudWatch dashboard: valid JSON charting exactly the metrics soracharge emits, every function's
errors, both state machines' failures, the schedule's alarm and the functions' logs."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from soracharge.models.coverage import CURRENCIES
from soracharge.models.imports import report_key
from soracharge.observability import Metric

from tests.template.conftest import REPO, resources_of_type

NAMESPACE = "Soracharge"
SERVICE = ("service", "soracharge")
DAY = 86400
#: Metrics whose useful statistic is the largest value (how many polls a run needed), not a sum.
MAXIMA = {Metric.EXPORT_POLLS_NEEDED.value, Metric.SESSION_POLLS_NEEDED.value}
LOG_KEYS = ("@timestamp", "level", "month", "objectKey", "objectVersion", "importSessionId", "message")
SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
PSEUDO_PARAMETERS = {"AWS::AccountId", "AWS::Partition", "AWS::Region", "AWS::StackName", "AWS::URLSuffix"}


def resolve_sub(text: str) -> str:
    """An ``Fn::Sub`` text with each ``${Name}`` replaced by ``<Name>`` (``${!Literal}`` by ``${Literal}``)."""

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        return "${" + name[1:] + "}" if name.startswith("!") else f"<{name}>"

    return SUB_VARIABLE.sub(placeholder, text)


def sub_text(dashboard: dict[str, Any]) -> str:
    text = dashboard["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str), "DashboardBody is !Sub of one JSON text"
    return text


@pytest.fixture(scope="module")
def dashboard(translated: dict[str, Any]) -> dict[str, Any]:
    resource = translated["Resources"]["Dashboard"]
    assert resource["Type"] == "AWS::CloudWatch::Dashboard"
    return dict(resource["Properties"])


@pytest.fixture(scope="module")
def body(dashboard: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(resolve_sub(sub_text(dashboard))))


def widgets(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [w for w in body["widgets"] if w["type"] == kind]


class Series:
    """One line of a metric widget's ``metrics``: namespace, name, dimensions and the statistic shown."""

    def __init__(self, widget: dict[str, Any], row: list[Any]) -> None:
        options = row[-1] if isinstance(row[-1], dict) else {}
        values = row[:-1] if options else row
        assert all(isinstance(v, str) and v != "." for v in values), f"write every series out in full: {row}"
        self.namespace, self.name = values[0], values[1]
        pairs = values[2:]
        assert len(pairs) % 2 == 0, f"dimensions come in name/value pairs: {row}"
        self.dimensions = tuple(pairs)
        self.dimension_map = dict(zip(pairs[::2], pairs[1::2], strict=True))
        self.stat = options.get("stat", widget["properties"].get("stat"))
        self.widget = widget


def series(body: dict[str, Any]) -> Iterator[Series]:
    for widget in widgets(body, "metric"):
        for row in widget["properties"]["metrics"]:
            yield Series(widget, row)


def soracharge_series(body: dict[str, Any]) -> list[Series]:
    return [s for s in series(body) if s.namespace == NAMESPACE]


def test_the_body_is_json_showing_daily_sums_over_the_last_90_days(dashboard, body):
    assert dashboard["DashboardName"] == {"Fn::Sub": "${AWS::StackName}-soracharge"}
    # The flows run once a month: a 90-day range shows the last runs, a day per point keeps each visible.
    assert body["start"] == "-P90D"
    assert body["periodOverride"] == "inherit"
    for widget in widgets(body, "metric"):
        assert widget["properties"]["period"] == DAY, widget["properties"]["title"]
        assert widget["properties"]["region"] == "<AWS::Region>"
        assert widget["properties"]["metrics"], widget["properties"]["title"]


def test_every_variable_names_a_resource_or_a_pseudo_parameter(dashboard, translated):
    names = set(SUB_VARIABLE.findall(sub_text(dashboard)))
    assert names
    for name in names - PSEUDO_PARAMETERS:
        logical_id, _, attribute = name.partition(".")
        assert logical_id in translated["Resources"], name
        assert attribute in ("", "Arn"), name


def test_it_charts_exactly_the_metrics_soracharge_emits(body):
    # A metric added to Metric without a chart, or a chart of a metric nobody emits, fails here.
    charted = {s.name for s in soracharge_series(body)}
    assert charted == {metric.value for metric in Metric}


def test_every_soracharge_series_has_the_dimensions_it_is_emitted_with(body):
    amounts = []
    for line in soracharge_series(body):
        if line.name == Metric.AMOUNT_IMPORTED:
            assert line.dimensions[:2] == SERVICE
            assert line.dimensions[2::2] == ("Currency", "Coverage")
            amounts.append((line.dimension_map["Coverage"], line.dimension_map["Currency"]))
        else:
            assert line.dimensions == SERVICE, line.name
    # AmountImported: one series per coverage and currency a bill may be in, each summed.
    assert sorted(amounts) == sorted((coverage, c) for coverage, currencies in CURRENCIES.items() for c in currencies)


def test_counts_are_summed_and_polls_needed_are_maxima(body):
    for line in soracharge_series(body):
        assert line.stat == ("Maximum" if line.name in MAXIMA else "Sum"), line.name


def test_every_function_has_its_errors_and_throttles_charted(template, translated, body):
    functions = set(resources_of_type(template, "AWS::Serverless::Function"))
    assert len(functions) >= 9
    for function in functions:
        assert translated["Resources"][function]["Type"] == "AWS::Lambda::Function"
    for metric in ("Errors", "Throttles"):
        charted = [s for s in series(body) if s.namespace == "AWS/Lambda" and s.name == metric]
        assert all(s.dimensions[0] == "FunctionName" and s.stat == "Sum" for s in charted)
        assert sorted(s.dimension_map["FunctionName"] for s in charted) == sorted(f"<{f}>" for f in functions)


def test_both_state_machines_failures_are_charted(template, body):
    state_machines = set(resources_of_type(template, "AWS::Serverless::StateMachine"))
    assert state_machines == {"ExportBillingStateMachine", "FollowImportSessionStateMachine"}
    charted = {
        (s.dimension_map["StateMachineArn"], s.name)
        for s in series(body)
        if s.namespace == "AWS/States" and s.stat == "Sum"
    }
    for state_machine in state_machines:
        for metric in ("ExecutionsFailed", "ExecutionsTimedOut"):
            assert (f"<{state_machine}>", metric) in charted  # Ref of a state machine is its ARN
    export = {metric for arn, metric in charted if arn == "<ExportBillingStateMachine>"}
    assert export >= {"ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}


def test_the_alarm_widget_shows_the_schedule_failed_alarm(translated, body):
    (alarm,) = widgets(body, "alarm")
    assert alarm["properties"]["alarms"] == ["<ScheduleFailedAlarm.Arn>"]
    assert translated["Resources"]["ScheduleFailedAlarm"]["Type"] == "AWS::CloudWatch::Alarm"


def test_the_log_widgets_query_the_log_groups_of_existing_functions(template, body):
    functions = set(resources_of_type(template, "AWS::Serverless::Function"))
    queries: dict[frozenset[str], str] = {}
    for widget in widgets(body, "log"):
        query = widget["properties"]["query"]
        groups = re.findall(r"SOURCE '([^']*)'", query)
        assert groups, query
        names = set()
        for group in groups:
            found = re.fullmatch(r"/aws/lambda/<(\w+)>", group)
            assert found is not None, group
            assert found.group(1) in functions, group
            names.add(found.group(1))
        queries[frozenset(names)] = query
    warnings = queries[frozenset({"ImportChargesFunction", "FinishImportFunction"})]
    # Powertools' JSON lines: the keys every import and finish-import line carries, warnings and above.
    fields = re.search(r"\| fields ([^|]*)", warnings)
    assert fields is not None
    assert [f.strip() for f in fields.group(1).split(",")] == list(LOG_KEYS)
    assert 'filter level in ["WARNING", "ERROR", "CRITICAL"]' in warnings
    assert "sort @timestamp desc" in warnings
    (alerts,) = [q for names, q in queries.items() if "AlertFunction" in names]
    assert 'filter message = "Alert published"' in alerts  # what soracharge.logic.alerts.publish logs
    assert {"ImportChargesFunction", "FinishImportFunction"} <= next(n for n in queries if "AlertFunction" in n)


def test_the_text_on_top_says_what_it_shows_and_where_the_reports_are(body):
    first = body["widgets"][0]
    assert first["type"] == "text"
    assert (first["x"], first["y"], first["width"]) == (0, 0, 24)
    markdown = first["properties"]["markdown"]
    assert report_key("202610", "v1", "exports/202610/f.csv").startswith("reports/202610/")
    assert "s3://<AWS::StackName>-data-<AWS::AccountId>/reports/<yyyyMM>/" in markdown
    assert "When something goes wrong (runbook)" in markdown
    runbook = REPO / "docs" / "operate" / "runbook.md"
    assert runbook.read_text(encoding="utf-8").startswith("# When something goes wrong (runbook)\n")
    assert "docs/operate/runbook.md" in markdown


def test_widgets_fit_the_grid_without_overlapping(body):
    cells: dict[tuple[int, int], int] = {}
    for index, widget in enumerate(body["widgets"]):
        x, y, width, height = widget["x"], widget["y"], widget["width"], widget["height"]
        assert min(x, y) >= 0, widget
        assert min(width, height) >= 1, widget
        assert x + width <= 24, widget
        for cell in itertools.product(range(x, x + width), range(y, y + height)):
            assert cell not in cells, f"widgets {cells.get(cell)} and {index} overlap at {cell}"
            cells[cell] = index


def test_an_output_links_to_the_dashboard(template):
    assert template["Outputs"]["DashboardUrl"]["Value"] == {
        "Fn::Sub": "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}"
        "#dashboards:name=${Dashboard}"
    }


def test_cfn_lint_passes():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # .venv/bin/cfn-lint, as `make template-check` runs it
    done = subprocess.run(  # noqa: S603
        [str(cfn_lint), "template.yaml"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
