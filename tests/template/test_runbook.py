"""The runbook is one list: the docs' runbook table, the actions alerts name, and what the chaos harness does.

Every alert ends with ``Runbook action: <action>`` (``soracharge.models.runbook.Remedy``); the table of
docs/operate/runbook.md, "When something goes wrong (runbook)", gives each row its action; ``tests/chaos/runbook.py``
performs each action exactly as the alert states it. A new action, a row without one, or an action
the harness cannot perform fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from soracharge.models.runbook import Remedy

from tests.chaos.runbook import PERFORMERS

REPO = Path(__file__).resolve().parents[2]


RUNBOOK = REPO / "docs" / "operate" / "runbook.md"


def runbook_rows() -> list[list[str]]:
    page = RUNBOOK.read_text(encoding="utf-8")
    section = page.split("# When something goes wrong (runbook)\n", 1)[1].split("\n#", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    header, *rows = table
    assert header.rstrip(" |").endswith("runbook action (the alert's last line)"), header
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_every_row_of_the_runbook_names_one_action():
    for cells in runbook_rows():
        assert re.fullmatch(r"`[a-z-]+`", cells[-1]), f"a runbook row without its action: {cells[0]}"


def test_the_runbook_the_alerts_actions_and_the_chaos_harness_are_one_list():
    in_docs = {cells[-1].strip("`") for cells in runbook_rows()}
    assert in_docs == {remedy.value for remedy in Remedy}
    assert set(PERFORMERS) == set(Remedy)
