"""Checks of statemachine/*.asl.json that need no AWS: moto's ASL parser, reachability, the loop's exits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

from tests.template.conftest import REPO

DEFINITIONS = sorted((REPO / "statemachine").glob("*.asl.json"))


def successors(state: dict[str, Any]) -> set[str]:
    found = {state[k] for k in ("Next", "Default") if k in state}
    found |= {choice["Next"] for choice in state.get("Choices", [])}
    found |= {catcher["Next"] for catcher in state.get("Catch", [])}
    return found


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_moto_parses_the_definition(path: Path):
    # With each ${Placeholder} substituted as CloudFormation would (by a function ARN).
    definition = re.sub(
        r"\$\{([A-Za-z0-9_]+)\}", r"arn:aws:lambda:us-east-1:123456789012:function:\1", path.read_text()
    )
    program, _ = AmazonStateLanguageParser.parse(definition)
    assert program is not None


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.name)
def test_every_transition_exists_and_every_state_is_reachable(path: Path):
    asl = json.loads(path.read_text())
    states: dict[str, dict[str, Any]] = asl["States"]
    for name, state in states.items():
        assert successors(state) <= set(states), f"{name} goes to a state that does not exist"
    reached, frontier = set(), [asl["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name not in reached:
            reached.add(name)
            frontier.extend(successors(states[name]))
    assert reached == set(states), f"unreachable: {set(states) - reached}"


def test_the_polling_loop_waits_5_s_and_has_success_failure_and_exhausted_exits(export_asl):
    states = export_asl["States"]
    assert states["WaitForExport"] == {**states["WaitForExport"], "Type": "Wait", "Seconds": 5, "Next": "PollExport"}
    choice = states["IsExportReady"]
    routes = {c.get("StringEquals") or "loop": c["Next"] for c in choice["Choices"]}
    assert routes == {"exported": "StoreExport", "failed": "ExportFailed", "loop": "WaitForExport"}
    (loop,) = [c for c in choice["Choices"] if "And" in c]
    assert {"Variable": "$.export.polls", "NumericLessThan": 21} in loop["And"]  # the first poll and 20 retries
    assert choice["Default"] == "ExportTimedOut"
    assert states["ExportFailed"]["Type"] == states["ExportTimedOut"]["Type"] == "Fail"


def test_every_task_retries_transient_errors_boundedly(export_asl):
    for name, state in export_asl["States"].items():
        if state["Type"] != "Task":
            continue
        retried = {error for retrier in state["Retry"] for error in retrier["ErrorEquals"]}
        # Every task but the first talks to Soracom; the first only reads S3.
        assert ("StorageError" if name == "FindStoredExport" else "SoracomUnavailableError") in retried, name
        assert "Lambda.ServiceException" in retried, name
        assert "States.ALL" not in retried, name
        for retrier in state["Retry"]:
            assert 1 <= retrier["MaxAttempts"] <= 16, name


def test_the_session_following_loop_is_bounded_and_every_end_is_recorded():
    asl = json.loads((REPO / "statemachine" / "follow_import_session.asl.json").read_text())
    states = asl["States"]
    assert states["WaitForRating"]["Seconds"] == 30
    choice = states["IsSessionRated"]
    (loop,) = [c for c in choice["Choices"] if c["Next"] == "WaitForRating"]
    assert {"Variable": "$.session.polls", "NumericLessThan": 120} in loop["And"]
    assert choice["Default"] == "RecordOutcome"  # no end after 120 polls is recorded (and alerted) too
    ends = states["WasImportRated"]
    assert {c["StringEquals"]: c["Next"] for c in ends["Choices"]} == {
        "PROCESSED": "ImportRated",
        "FAILED_PROCESSED": "ImportSessionFailed",
    }
    assert ends["Default"] == "SessionNotRated"
    assert states["ImportSessionFailed"]["Type"] == states["SessionNotRated"]["Type"] == "Fail"
    retried = {e for r in states["GetImportSession"]["Retry"] for e in r["ErrorEquals"]}
    assert "CloudBlueUnavailableError" in retried
    # whatever still fails is recorded and alerted as not rated, never dropped silently
    assert states["GetImportSession"]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "RecordOutcome"}
    ]
