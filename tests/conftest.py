"""Session-wide settings of the test suite.

``CHAOS_SEED``: the seed of the chaos cycles drawn for this run (``tests/chaos/test_chaos.py``), unless
given. Drawn here, before pytest-xdist starts its workers, so that every worker collects the same
cycles; printed in the report's header with the command that replays a cycle of it.
"""

from __future__ import annotations

import os
import secrets

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("CHAOS_SEED", str(secrets.randbelow(1_000_000)))


def pytest_report_header(config: pytest.Config) -> list[str]:
    seed = os.environ["CHAOS_SEED"]
    return [
        f"chaos: cycles on seed {seed}, drawn for this run (CHAOS_SEED={seed} runs them again; one cycle: "
        f".venv/bin/python scripts/chaos.py --seed {seed} --start C --cycles 1 --verbose)"
    ]
