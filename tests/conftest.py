"""Session-wide settings of the test suite.

``CHAOS_SEED``: the seed of the chaos cycles drawn for this run (``tests/chaos/test_chaos.py``), and
``EXPLORE_SEED``: the seed of the sample of the exactly-once exploration (``tests/protocol``), unless
given. Drawn here, before pytest-xdist starts its workers, so that every worker collects the same
cases; printed in the report's header with the command that replays them.
"""

from __future__ import annotations

import os
import secrets

import pytest


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
    ]
