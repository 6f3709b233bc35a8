"""The local CLI's own rules that no run shows by itself."""

from __future__ import annotations

import re

from soracharge_local import cli


def test_two_executions_of_one_month_and_coverage_started_in_the_same_second_get_different_names():
    # A re-run with instant waits starts the second export well inside the second of the first:
    # Step Functions refuses a name it has seen (ExecutionAlreadyExists), so the names must differ.
    names = {cli._execution_name("export", "202611", "g") for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"export-202611-g-\d{8}T\d{6}-[0-9a-f]{6}", name) for name in names)
