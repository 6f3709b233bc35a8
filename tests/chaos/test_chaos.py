"""Chaos cycles (tests/chaos/harness.py): each charge reaches CloudBlue exactly once, or the run stops with
an alert naming its runbook action, and doing that action (as the alert states it) completes exactly.

Every cycle runs the whole month end to end under moto with the simulators and 0-3 faults drawn from its
seed and number: fixed cycles, and cycles of a seed drawn for each run (``CHAOS_SEED``, printed in the
report's header). ``scripts/chaos.py --seed S --start C --cycles 1 --verbose`` replays one cycle (a failing
cycle's message gives the command); ``scripts/chaos.py --cycles 1000`` runs a thousand on a fresh seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ChaosWorld, Cycle

#: The fixed cycles CI runs: (seed, cycle number). Seed 2024's first cycles, then the cycles that make every
#: fault of the catalogue fire at least once (a fault armed for a stage the run never reaches does not fire;
#: chosen by the faults that fired over cycles 0-159, with the catalogue's 20 kinds, review.approval the last).
CI_CYCLES = [(2024, index) for index in [*range(13), 13, 18, 22, 24, 27, 28, 33, 53, 64]]

#: Cycles that once found a product bug, kept (drawn from the catalogue of today: a cycle's faults change when
#: the catalogue grows, so these are now other cycles; the scenarios themselves have tests of their own).
#: Then: the import killed after closeSession but before the ledger recorded CLOSED, and a re-delivery took
#: the stuck month over and imported every charge again (fixed: a session being closed blocks any takeover).
REGRESSIONS = [(35, 6), (7, 163), (11, 22), (11, 68)]


#: Cycles of a seed drawn for each run (tests/conftest.py prints it): cycles nobody has tuned to.
FRESH_SEED = int(os.environ.get("CHAOS_SEED", "0"))
FRESH_CYCLES = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosWorld]:
    workdir: Path = tmp_path_factory.mktemp("chaos")
    with ChaosWorld(workdir) as chaos_world:
        yield chaos_world


def _params() -> list[Any]:
    fixed = [pytest.param(seed, index, id=f"seed{seed}-cycle{index}") for seed, index in [*CI_CYCLES, *REGRESSIONS]]
    fresh = [
        pytest.param(FRESH_SEED, index, id=f"fresh-seed{FRESH_SEED}-cycle{index}") for index in range(FRESH_CYCLES)
    ]
    return fixed + fresh


@pytest.mark.parametrize(("seed", "index"), _params())
def test_a_cycle_imports_each_charge_exactly_once_or_fails_with_a_reason_and_reruns_exactly(world, seed, index):
    result = Cycle(world, seed, index).run()
    replay = f"replay: .venv/bin/python scripts/chaos.py --seed {seed} --start {index} --cycles 1 --verbose"
    result.notes.append(replay)

    assert result.harness_error is None, result.describe()
    assert result.lost == 0, result.describe()
    assert result.doubled == 0, result.describe()
    assert result.held_sum == result.expected_sum, result.describe()
    assert result.against_csv == [], result.describe()  # what the CSV makes, worked out apart from the import
    assert not result.failed_without_reason, result.describe()
    assert result.rerun_ok is not False, result.describe()
    assert result.first_run_ok or result.signals, result.describe()  # a run that did not complete said so
    assert all(signal.reason.strip() for signal in result.signals), result.describe()


@pytest.mark.parametrize("rating_fault", ["cloudblue.failed_processed", "cloudblue.failed_until_fixed"])
def test_a_kill_after_the_close_then_a_session_cloudblue_fails_to_rate_is_recovered_by_the_alerts_actions(
    world, rating_fault
):
    # Issue 11: seed 4242 once lost 28 charges here, because the harness recovered by its own guess
    # (re-delivering the event, copying the object onto itself) instead of the alert's action.
    for index in range(3):
        cycle = Cycle(world, 4242, 900 + index, faults=["lambda.killed", rating_fault], kill_point="after_close")
        result = cycle.run()
        assert result.harness_error is None, result.describe()
        assert {"lambda.killed", rating_fault} <= result.fired, result.describe()
        assert any(rerun.startswith("upload-additional") for rerun in result.reruns), result.describe()
        assert (result.lost, result.doubled, result.held_sum) == (0, 0, result.expected_sum), result.describe()
        assert result.against_csv == [], result.describe()
        assert result.rerun_ok, result.describe()
        assert not result.failed_without_reason, result.describe()
