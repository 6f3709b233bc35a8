"""The exploration's record (docs/reliability/exploration.jsonl.gz, linked from the Reliability page) is one run's:
each case at most once, all of one commit, and no case failed.

``scripts/explore_protocol.py --results docs/reliability/exploration.jsonl.gz`` writes the file as it runs, a line
per case (the commit that ran it, its number, its failure or none, what its verdict counted).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RECORD = REPO / "docs/reliability/exploration.jsonl.gz"


def _records() -> list[dict[str, Any]]:
    with gzip.open(RECORD, "rt") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def test_the_record_holds_each_case_at_most_once_all_of_one_commit_and_none_failed() -> None:
    records = _records()
    (commit,) = {record["commit"] for record in records}
    (total,) = {record["of"] for record in records}
    numbers = [record["number"] for record in records]
    assert len(set(numbers)) == len(numbers), "a case recorded twice"
    assert set(numbers) <= set(range(total))
    assert [record for record in records if record["failed"]] == []
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
