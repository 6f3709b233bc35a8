"""Session-wide settings of the test suite.

``CHAOS_SEED``: the seed of the chaos cycles drawn for this run (``tests/chaos/test_chaos.py``), and
``EXPLORE_SEED``: the seed of the sample of the exactly-once exploration (``tests/protocol``), unless
given. Drawn here, before pytest-xdist starts its workers, so that every worker collects the same
cases; printed in the report's header with the command that replays them.

Hypothesis runs derandomised (the profile ``ci``): every run, CI's included, tries the same examples, with no
deadline (a busy machine never fails a test) and no example database; a failure prints the blob that replays
it. ``SORACHARGE_HYPOTHESIS=explore`` draws new examples instead (the fuzz tests: ``SORACHARGE_FUZZ_RANDOM``).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("SORACHARGE_HYPOTHESIS", "ci"))


@pytest.fixture(autouse=True)
def _logger_levels_restored() -> Iterator[None]:
    """Every logger's level as it was before the test: a test may quiet a logger for its own run (the chaos
    harness sets the functions' Logger to ERROR), and a later test on the same worker must not inherit it."""
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    levels = [(lg, lg.level, lg.disabled) for lg in loggers]
    yield
    for lg, level, disabled in levels:
        lg.setLevel(level)
        lg.disabled = disabled


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("CHAOS_SEED", str(secrets.randbelow(1_000_000)))
    os.environ.setdefault("EXPLORE_SEED", str(secrets.randbelow(1_000_000)))


def pytest_report_header(config: pytest.Config) -> list[str]:
    seed, explore = os.environ["CHAOS_SEED"], os.environ["EXPLORE_SEED"]
    return [
        f"chaos: cycles on seed {seed}, drawn for this run (CHAOS_SEED={seed} runs them again; one cycle: "
        f".venv/bin/python scripts/chaos.py --seed {seed} --start C --cycles 1 --verbose)",
        f"exactly-once exploration: a sample drawn with seed {explore} (EXPLORE_SEED={explore} runs it again; "
        "every case: .venv/bin/python scripts/explore_protocol.py)",
        f"hypothesis: profile {settings.get_current_profile_name()} (derandomised: the same examples every run; "
        "SORACHARGE_HYPOTHESIS=explore draws new ones)",
    ]
