"""The Reliability page's figures of the whole exploration are the recorded run's: its results file holds one result
of each case, all of one commit, and the page quotes what they add up to and names that commit.

``scripts/explore_protocol.py --results docs/reliability/exploration.jsonl.gz`` wrote the file, a line per case
(its number, its failure or none, what its verdict counted); the page's text block is that run's summary.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RECORD = REPO / "docs/reliability/exploration.jsonl.gz"
PAGE = REPO / "docs/reliability/index.md"


def _records() -> list[dict[str, Any]]:
    with gzip.open(RECORD, "rt") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _block(total: int) -> str:
    """The page's text block of the run over ``total`` cases."""
    blocks: list[str] = re.findall(r"```text\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [block for block in blocks if f"{total} cases in all" in block]
    return block


def _quoted(block: str, label: str) -> int:
    found = re.search(rf"^{re.escape(label)}\s+(\d+)", block, re.MULTILINE)
    assert found, f"the Reliability page's block quotes no {label!r}"
    return int(found[1])


def test_the_record_holds_every_case_once_of_one_commit_and_none_failed() -> None:
    records = _records()
    (commit,) = {record["commit"] for record in records}
    (total,) = {record["of"] for record in records}
    numbers = sorted(record["number"] for record in records)
    assert numbers == list(range(total)), "a case missing or recorded twice: the run did not finish"
    assert [record for record in records if record["failed"]] == []
    assert re.fullmatch(r"[0-9a-f]{40}", commit)


def test_the_page_quotes_the_records_sums_and_names_its_commit() -> None:
    records = _records()
    counts: Counter[str] = Counter()
    for record in records:
        counts.update(record["counts"])
    block = _block(records[0]["of"])

    assert f"{len(records)} cases in all" in block
    assert f"commit {records[0]['commit'][:7]}" in block
    assert _quoted(block, "cases run:") == len(records) - counts["n/a"]
    assert f"(and {counts['n/a']} that do not arise" in block
    assert _quoted(block, "charges lost:") == counts["lost"]
    assert _quoted(block, "charges doubled:") == counts["doubled"]
    assert _quoted(block, "files ended without an alert:") == counts["unalerted"]
    assert _quoted(block, "files stuck:") == counts["stuck"]
    assert _quoted(block, "reports naming a session never closed:") == counts["untruthful"]
    assert _quoted(block, "failing cases:") == sum(1 for record in records if record["failed"])
