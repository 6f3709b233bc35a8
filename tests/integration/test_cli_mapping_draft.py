"""`soracharge mapping draft` run as a person runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from soracharge.errors import MappingError
from soracharge.models.mapping import parse_mapping
from soracharge_local import history
from soracharge_local.simulators.soracom_data import generate_billing_csv

from tests.integration.test_cli import run_cli as run_stack_cli

SORACHARGE = str(Path(sys.executable).parent / "soracharge")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "mapping.example.yaml"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        [SORACHARGE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def bill(tmp_path: Path) -> Path:
    path = tmp_path / "bill.csv"
    path.write_bytes(generate_billing_csv("202610", coverage="jp", sims=10).content)
    return path


def test_draft_to_stdout_is_a_mapping_skeleton_that_refuses_to_load_until_filled_in(bill):
    done = run_cli("mapping", "draft", str(bill))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# soracharge mapping draft, from {bill}: 1,043 rows")
    data = yaml.safe_load(done.stdout)
    assert data["customer"]["column"] == "customer"
    assert len(data["items"]) == 11  # 13 bill items, two families of two (basicCharge-*, soraCamLicenseCharge-*)
    with pytest.raises(MappingError, match="placeholder not filled in: FILL-IN: CloudBlue subscription for customer"):
        parse_mapping(done.stdout, "draft.yaml")


def filled_in(draft: str) -> str:
    """A draft filled in as a person does: a CloudBlue id for each id, a customer of the CSV for each device."""

    def value(found: re.Match[str]) -> str:
        return '"Acme Logistics"' if "the customer (a key of subscriptions)" in found.group(0) else f'"{uuid.uuid4()}"'

    return re.sub(r'"FILL-IN:(?:[^"\\]|\\.)*"', value, draft)


def test_draft_with_out_writes_the_file_and_says_what_is_in_it(bill, tmp_path):
    out = tmp_path / "drafts" / "draft.yaml"
    done = run_cli("mapping", "draft", str(bill), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"Draft written to {out}: 3 customer values, 13 bill items, 17 FILL-IN placeholders to replace.\n"
    )
    text = out.read_text(encoding="utf-8")
    assert text == run_cli("mapping", "draft", str(bill)).stdout
    assert parse_mapping(filled_in(text), str(out)).customer.column == "customer"


def test_draft_against_the_mapping_in_use_says_nothing_new_in_one_line(bill, tmp_path):
    done = run_cli("mapping", "draft", str(bill), "--mapping", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"# nothing new in {bill} since {EXAMPLE}: every customer value and bill item is mapped\n")
    out = tmp_path / "new.yaml"
    again = run_cli("mapping", "draft", str(bill), "--mapping", str(EXAMPLE), "--out", str(out))
    assert (again.returncode, again.stdout) == (0, done.stdout)
    assert not out.exists()  # nothing to fill in: no file


def test_draft_against_the_mapping_in_use_lists_only_the_new_value_and_item(bill, tmp_path):
    with bill.open("ab") as csv_file:
        csv_file.write("440103000000099,,,,202610,SMS 受信料金,1,5,5,センサー 99,Contoso,\r\n".encode())
    out = tmp_path / "new.yaml"
    done = run_cli("mapping", "draft", str(bill), "--mapping", str(EXAMPLE), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 customer values, 1 bill items, 2 FILL-IN placeholders" in done.stdout
    text = out.read_text(encoding="utf-8")
    assert text.startswith(f"# 1 new customer value, 1 new bill item since {EXAMPLE}\n")
    data = yaml.safe_load(text)
    assert list(data["customer"]["subscriptions"]) == ["Contoso"]
    assert [item["match"] for item in data["items"]] == ["SMS 受信料金"]


def test_a_broken_row_is_refused_with_exit_2_naming_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.csv"
    broken.write_text("imsi,date,billItemName,amount,customer\r\n1,202610,Basic,1,a\r\n2,202610,Basic,1\r\n")
    done = run_cli("mapping", "draft", str(broken))
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"error: {broken}: line 3: the row has 4 fields but the header has 5" in done.stderr


def test_a_csv_without_an_amount_column_is_refused_with_exit_2(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("imsi,date,billItemName\r\n1,202610,Basic\r\n")
    done = run_cli("mapping", "draft", str(other))
    assert done.returncode == 2
    assert f"error: {other}: line 1: no 'amount' column" in done.stderr


def test_an_unreadable_old_mapping_is_refused_with_exit_2_naming_its_line(bill, tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("customer:\n  column: customer\nitems:\n  - match: x\n    resource: tbd\n")
    done = run_cli("mapping", "draft", str(bill), "--mapping", str(old))
    assert done.returncode == 2
    assert f"error: {old}: line 5: items[0].resource: must be a UUID" in done.stderr
    missing = run_cli("mapping", "draft", str(bill), "--mapping", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "cannot read the mapping" in missing.stderr


def test_a_missing_csv_is_refused_by_the_command_line(tmp_path):
    done = run_cli("mapping", "draft", str(tmp_path / "nope.csv"))
    assert done.returncode == 2
    assert "does not exist" in done.stderr


def test_a_filled_draft_imports_the_csv_it_was_drafted_from_with_no_problem_on_the_local_stack(tmp_path):
    # Given a Global coverage bill nobody has a mapping for yet
    month = "202610"
    billing = generate_billing_csv(month, coverage="g", sims=10)
    bill = tmp_path / "global.csv"
    bill.write_bytes(billing.content)
    # When its draft is written, every placeholder filled in with a CloudBlue id, and the file imported
    drafted = run_cli("mapping", "draft", str(bill), "--out", str(tmp_path / "draft.yaml"))
    assert drafted.returncode == 0, drafted.stderr
    text = (tmp_path / "draft.yaml").read_text()
    (tmp_path / "mapping.yaml").write_text(filled_in(text))
    done = run_stack_cli(
        "import", str(bill), "--month", month, "--coverage", "g", "--currency", "USD",
        "--mapping", str(tmp_path / "mapping.yaml"), "--out", str(tmp_path / "out"), timeout=300,
    )  # fmt: skip
    # Then CloudBlue rated every row of it, in USD, with no problem
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(history.bill_report(tmp_path / "out", month, None, "g").path.read_text())
    assert (report["status"], report["coverage"], report["currency"]) == ("PROCESSED", "g", "USD")
    assert report["problems"] == []
    assert report["counts"]["rows"] == billing.rows
    assert Decimal(report["reconciliation"]["importedSum"]) == billing.total
    assert report["object"]["key"] == f"uploads/{month}/g/global.csv"
