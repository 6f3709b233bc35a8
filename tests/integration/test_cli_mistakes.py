"""A billing engineer's ordinary mistakes, tried on the command line as a new user makes them: each is refused
before anything is sent, with a first line that names the cause, exit code 1, and nothing imported.

Each case imports a file into a fresh local stack (``soracharge import``, no dry run: the import function
runs as on AWS) and reads what the person reads: the first line of the outcome and the saved report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from soracharge.models.months import shift_month

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import MAPPING, run_cli
from tests.integration.test_cli_operations import SIMULATOR
from tests.unit.test_local_cli import saved_report

BILL = SIMULATOR.csv_bytes(LAST_MONTH)


def _mapping_with(old: str, new: str) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        path = folder / "mapping.yaml"
        text = Path(MAPPING).read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return str(path)

    return write


def _one_row_of(amount: str) -> bytes:
    lines = BILL.decode("utf-8-sig").splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    for column, value in (("unitPrice", amount), ("quantity", "1"), ("amount", amount)):
        row[header.index(column)] = value
    return ("\ufeff" + "\r\n".join([lines[0], ",".join(row), *lines[2:]]) + "\r\n").encode()


#: (what the person got wrong, the file, the month given, the mapping, extra options, the first line's words)
MISTAKES = [
    pytest.param(
        BILL,
        LAST_MONTH,
        _mapping_with('"東京ガス":', '"東京ガス ":'),
        [],
        "the mapping says '東京ガス ', the CSV has '東京ガス' (1,836.3890102 JPY, 3 SIMs): it would go to "
        "the default subscription",
        id="a customer value with a trailing space",
    ),
    pytest.param(
        BILL,
        LAST_MONTH,
        None,
        ["--currency", "USD"],
        "the bill's currency is not the same everywhere",
        id="--currency USD on a JPY mapping",
    ),
    pytest.param(
        BILL.decode("utf-8-sig").encode("cp932"),
        LAST_MONTH,
        None,
        [],
        "this file is Shift_JIS (CP932, what Excel in Japan saves as CSV), not UTF-8",
        id="a file Excel saved in Shift_JIS",
    ),
    pytest.param(
        BILL,
        shift_month(LAST_MONTH, -1),
        None,
        [],
        f"it is {LAST_MONTH}'s bill; did you mean the month {LAST_MONTH}?",
        id="the file of another month",
    ),
    pytest.param(
        BILL,
        LAST_MONTH,
        _mapping_with('match: "smsCharge"', 'match: "SMSCharge"'),
        [],
        "the mapping's item 'SMSCharge' matches no bill item, and the CSV has 'smsCharge'",
        id="a match in the wrong case",
    ),
    pytest.param(
        _one_row_of("1000000000000"),
        LAST_MONTH,
        None,
        [],
        "line 2, column amount, value '1000000000000': amount 1000000000000 is beyond what one row may reach",
        id="an amount of 1e12 on one row",
    ),
]


@pytest.mark.parametrize(("body", "month", "mapping", "options", "said"), MISTAKES)
def test_a_mistake_is_refused_before_anything_is_sent_naming_its_cause_first(
    tmp_path: Path, body: bytes, month: str, mapping: Callable[[Path], str] | None, options: list[str], said: str
) -> None:
    file = tmp_path / "bill.csv"
    file.write_bytes(body)
    out = tmp_path / "out"
    done = run_cli(
        "import", str(file), "--month", month, "--mapping", mapping(tmp_path) if mapping else MAPPING,
        *options, "--out", str(out), timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    outcome = next(line for line in done.stdout.splitlines() if line.startswith("Import "))
    assert outcome.startswith("Import REJECTED: "), outcome
    assert said in outcome, outcome
    report = json.loads(saved_report(out, month).read_text(encoding="utf-8"))
    assert report["status"] == "REJECTED"
    assert "importSessionId" not in report  # no session was opened: nothing was sent
    assert "\x00" not in done.stdout  # nothing unprintable reaches the terminal
