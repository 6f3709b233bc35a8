"""The output the docs quote is the output a reader gets: the demo's, run again for the month quoted.

A quoted demo output is a ``text`` block that starts with ``Exporting <yyyyMM>``. The command is run again for that
month (``soracharge run``, the simulators being deterministic per month) and every line of the quote must appear in
the output, in order; ``...`` in a quote stands for lines left out. What changes from run to run is masked on both
sides: the seconds a step took, the export's id, the run folder's time stamp. The quoted month must stay one
Soracom can bill (tests/docs/test_examples.py checks the commands; this, the quote), so a quote is renewed at the
latest when its month leaves Soracom's 18 months.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from soracharge.models.months import ensure_billable

from tests.integration.test_cli import run_cli

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
QUOTE = re.compile(r"^```text\n(?P<body>Exporting (?P<month>\d{6}) .*?)^```", re.M | re.S)
MAPPING = "examples/mapping.example.yaml"
MASKS = (
    (re.compile(r"^ *\d+\.\ds  "), "   <s>  "),  # the seconds of a step
    (re.compile(r"\bfe_[0-9a-f]{4,}(…)?"), "fe_<id>"),  # the export's id, whole or cut
    (re.compile(r"\b\d{8}T\d{6}(\d+)?Z"), "<stamp>"),  # a run folder's time stamp
    (re.compile(r"/tmp/\S+?/out/|(?<![\w/])out/"), "out/"),  # where --out points
)


def quotes() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for block in QUOTE.finditer(page.read_text(encoding="utf-8")):
            found.append((str(page.relative_to(REPO)), block["month"], block["body"]))
    return found


def masked(line: str) -> str:
    for pattern, replacement in MASKS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


QUOTES = quotes()


def test_the_readme_and_the_local_page_quote_the_demo() -> None:
    assert {page for page, _, _ in QUOTES} >= {"README.md", "docs/local/index.md"}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The output of ``soracharge run`` for each month quoted, in a fresh out/ each."""
    runs: dict[str, str] = {}
    for month in sorted({month for _, month, _ in QUOTES}):
        out = tmp_path_factory.mktemp(f"out-{month}") / "out"
        done = run_cli("run", "--month", month, "--mapping", MAPPING, "--out", str(out), timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        runs[month] = done.stdout
    return runs


@pytest.mark.parametrize(("page", "month", "quote"), QUOTES, ids=[f"{page}:{month}" for page, month, _ in QUOTES])
def test_every_quoted_line_is_in_the_output_of_the_same_command_today(
    page: str, month: str, quote: str, outputs: dict[str, str]
) -> None:
    ensure_billable(month, datetime.now(UTC).date())
    actual = [masked(line) for line in outputs[month].splitlines()]
    position = 0
    for line in quote.splitlines():
        if line.strip() in {"", "...", "…"}:
            continue
        wanted = masked(line)
        try:
            position = actual.index(wanted, position) + 1
        except ValueError:
            nearby = "\n".join(actual[max(0, position - 2) : position + 8])
            pytest.fail(
                f"{page} quotes a line `soracharge run --month {month}` no longer prints:\n{line}\n"
                f"(masked: {wanted!r}); the output from there:\n{nearby}"
            )
