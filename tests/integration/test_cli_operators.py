"""`soracharge run --accounts`, as a provider billing three Soracom operators runs it: six bills a month,
each imported once, each decided on its own when held for approval."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import run_cli
from tests.unit.test_local_cli import saved_report
from tests.unit.test_report_html import parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JAPAN, GLOBAL = str(EXAMPLES / "mapping.example.yaml"), str(EXAMPLES / "mapping.global.example.yaml")
ACCOUNTS = json.dumps(
    [
        {"operator": "OP0000000002", "coverages": "jp,g", "switchUser": "soracharge"},
        {"operator": "OP0000000003", "coverages": "jp,g"},
    ]
)
BILLS = ["jp", "g", "OP0000000002/jp", "OP0000000002/g", "OP0000000003/jp", "OP0000000003/g"]


def test_three_operators_on_both_coverages_are_six_bills_each_imported_once_and_a_rerun_does_nothing(tmp_path):
    done = run_cli(
        "run", "--month", LAST_MONTH, "--month", LAST_MONTH, "--coverage", "jp", "--coverage", "g",
        "--mapping", f"jp={JAPAN}", "--mapping", f"g={GLOBAL}", "--accounts", ACCOUNTS, "--out", str(tmp_path),
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "Soracom:   operator OP0000000002 on jp,g (switched into as soracharge)" in done.stdout
    assert "Soracom:   operator OP0000000003 on jp,g (its own AuthKey)" in done.stdout
    assert done.stdout.count("ImportCharges:") == 6
    table = done.stdout[done.stdout.rindex("Bills:") :]
    for bill in BILLS:
        assert re.search(rf"{LAST_MONTH} {bill} +ok +PROCESSED: CloudBlue rated session \d+", table), table
        assert re.search(rf"{LAST_MONTH} {bill} +ok +PROCESSED \(a re-run: nothing done again\)", table), table
        report = json.loads(saved_report(tmp_path, LAST_MONTH, bill).read_text())
        assert report["reconciliation"]["balanced"] is True
        assert report.get("operator") == (bill.split("/")[0] if "/" in bill else None)
    # Six sessions, one per bill
    sessions = {json.loads(saved_report(tmp_path, LAST_MONTH, bill).read_text())["importSessionId"] for bill in BILLS}
    assert len(sessions) == 6
    # The history page lists every bill, each operator's by its name
    rows = parse((tmp_path / "history.html").read_text(encoding="utf-8")).by_id("months").all("tr", "month-row")
    assert len(rows) == 6
    page = (tmp_path / "history.html").read_text(encoding="utf-8")
    assert "operator OP0000000003, Global coverage" in page


def test_an_operators_bill_held_for_approval_is_approved_on_its_own(tmp_path):
    always = yaml.safe_load(Path(JAPAN).read_text(encoding="utf-8"))
    always["review"] = {"approval": "always"}
    del always["customer"]["operators"]  # OP0000000003 is not exported here: a mapping naming it is refused
    mapping = tmp_path / "always.yaml"
    mapping.write_text(yaml.safe_dump(always, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    accounts = json.dumps([{"operator": "OP0000000002", "coverages": "jp", "switchUser": "soracharge"}])
    held = run_cli(
        "run", "--month", LAST_MONTH, "--mapping", str(mapping), "--accounts", accounts, "--out", str(out),
        timeout=300,
    )  # fmt: skip
    assert held.returncode == 1, held.stdout[-3000:] + held.stderr
    assert (
        f"soracharge approve --month {LAST_MONTH} --operator OP0000000002 --coverage jp --by YOUR-NAME" in held.stdout
    )
    held_report = saved_report(out, LAST_MONTH, "OP0000000002/jp")
    preview = json.loads(held_report.read_text())
    assert (preview["status"], preview["operator"]) == ("AWAITING_APPROVAL", "OP0000000002")

    approved = run_cli(
        "approve", "--month", LAST_MONTH, "--operator", "OP0000000002", "--coverage", "jp", "--by", "Hanako",
        "--mapping", str(mapping),
        "--out", str(out), timeout=300,
    )  # fmt: skip
    assert approved.returncode == 0, approved.stdout[-3000:] + approved.stderr
    decided = saved_report(out, LAST_MONTH, "OP0000000002/jp")
    assert decided.parent.name.endswith("-approve")
    assert f"Report saved to {decided} and {decided.with_suffix('.html')}" in approved.stdout
    report = json.loads(decided.read_text())
    assert (report["status"], report["approval"]["by"]) == ("PROCESSED", "Hanako")
    assert json.loads(held_report.read_text())["status"] == "AWAITING_APPROVAL"  # the preview is kept
    assert report["approval"]["plan"] == preview["approval"]["plan"]
    # The stack's own bill of the month is still held: deciding one bill decides no other
    own = json.loads(saved_report(out, LAST_MONTH, "jp").read_text())
    assert own["status"] == "AWAITING_APPROVAL"


def test_a_dry_run_of_an_operators_file_takes_its_coverage_from_soracom_accounts_or_asks(tmp_path):
    from soracharge_local.simulators import SoracomSimulator
    from soracharge_local.simulators.soracom import SimulatedOperator

    simulator = SoracomSimulator(
        coverage="g",
        auth_key_id="x",
        auth_key="y",
        operators={"OP0000000003": SimulatedOperator(customer="Northwind Traders")},
    )
    bill = tmp_path / "op3.csv"
    bill.write_bytes(simulator.csv_bytes(LAST_MONTH, "OP0000000003"))
    args = ("import", str(bill), "--month", LAST_MONTH, "--operator", "OP0000000003", "--mapping", GLOBAL, "--dry-run")
    one = run_cli(
        *args, "--out", str(tmp_path), env={"SORACOM_ACCOUNTS": '[{"operator": "OP0000000003", "coverages": "g"}]'}
    )
    assert one.returncode == 0, one.stdout + one.stderr
    report = json.loads((tmp_path / LAST_MONTH / "OP0000000003" / "op3.report.json").read_text())
    assert (report["coverage"], report["operator"], report["status"]) == ("g", "OP0000000003", "DRY_RUN")
    charges = (tmp_path / LAST_MONTH / "OP0000000003" / "op3.charges.jsonl").read_text().splitlines()
    assert charges
    assert all(json.loads(line)["extChargeId"].endswith("-g-op0000000003") for line in charges)
    both = run_cli(*args, env={"SORACOM_ACCOUNTS": '[{"operator": "OP0000000003", "coverages": "jp,g"}]'})
    assert both.returncode == 2
    assert "SORACOM_ACCOUNTS lists OP0000000003 on jp and g: give --coverage jp|g" in both.stderr
