"""`soracharge run` with both coverages, as a provider with SIMs on both runs it: two bills, each imported once."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import yaml
from soracharge_local.history import REPORT, runs
from soracharge_local.simulators import SoracomSimulator

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JAPAN, GLOBAL = str(EXAMPLES / "mapping.example.yaml"), str(EXAMPLES / "mapping.global.example.yaml")


def csv_sum(body: bytes) -> Decimal:
    rows = csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline=""))
    return sum((Decimal(row["amount"]) for row in rows), Decimal(0))


def test_run_with_both_coverages_imports_each_bill_once_in_its_own_currency_and_a_rerun_does_nothing(tmp_path):
    done = run_cli(
        "run", "--coverage", "jp", "--coverage", "g", "--month", LAST_MONTH, "--month", LAST_MONTH,
        "--mapping", f"jp={JAPAN}", "--mapping", f"g={GLOBAL}", "--out", str(tmp_path), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # Two Soracom hosts, as Soracom has, and an export per coverage
    assert re.search(r"^Soracom: +http://127\.0\.0\.1:\d+ \(Japan coverage\)$", done.stdout, re.MULTILINE)
    assert re.search(r"^Soracom: +http://127\.0\.0\.1:\d+ \(Global coverage\)$", done.stdout, re.MULTILINE)
    assert f"Exporting {LAST_MONTH} (Japan coverage):" in done.stdout
    assert f"Exporting {LAST_MONTH} (Global coverage):" in done.stdout
    assert f"exports/{LAST_MONTH}/jp/fe_" in done.stdout
    assert f"exports/{LAST_MONTH}/g/fe_" in done.stdout
    # Each imported once; the month given again found both stored and did nothing
    assert done.stdout.count("ImportCharges:") == 2
    table = done.stdout[done.stdout.rindex("Bills:") :]
    for coverage in ("jp", "g"):
        assert re.search(rf"{LAST_MONTH} {coverage} +ok +PROCESSED: CloudBlue rated session \d+", table), table
        assert re.search(rf"{LAST_MONTH} {coverage} +ok +PROCESSED \(a re-run: nothing done again\)", table), table

    # Each bill's report, in its folder, in its currency, balanced against its own bill
    simulators = {
        "jp": SoracomSimulator(auth_key_id="x", auth_key="y"),
        "g": SoracomSimulator(coverage="g", auth_key_id="x", auth_key="y"),
    }
    for coverage, currency in (("jp", "JPY"), ("g", "USD")):
        slot = tmp_path / LAST_MONTH / coverage
        # the month given twice: two folders, the run's and the re-run's (which exported nothing: no CSV)
        first, rerun = runs(slot)
        assert (first.name.endswith("-run"), rerun.name.endswith("-run")) == (True, True)
        report = json.loads((first / "report.json").read_text())
        assert json.loads((rerun / "report.json").read_text())["status"] == "PROCESSED"
        assert (report["status"], report["coverage"], report["currency"]) == ("PROCESSED", coverage, currency)
        assert report["reconciliation"]["balanced"] is True
        body = simulators[coverage].csv_bytes(LAST_MONTH)
        assert Decimal(report["reconciliation"]["importedSum"]) == csv_sum(body)
        saved = list(slot.glob("*/fe_*.csv"))
        assert [p.read_bytes() for p in saved] == [body]
        assert saved[0].parent == first

    # And the report page of one coverage is rendered on request
    page = run_cli("report", LAST_MONTH, "--coverage", "g", "--out", str(tmp_path))
    assert page.returncode == 0, page.stderr
    latest = runs(tmp_path / LAST_MONTH / "g")[-1] / REPORT  # the one run's folder of the Global bill
    assert f"HTML report written to {latest.with_suffix('.html')}" in page.stdout
    assert latest.with_suffix(".html").is_file()
    assert "Import PROCESSED" in page.stdout


def test_run_takes_the_stacks_coverages_from_soracom_coverage_type_and_needs_a_mapping_for_each(tmp_path):
    done = run_cli("run", "--month", LAST_MONTH, "--mapping", f"jp={JAPAN}", env={"SORACOM_COVERAGE_TYPE": "jp,g"})
    assert done.returncode == 2
    assert "--mapping names no mapping for Global coverage (g=FILE)" in done.stderr
    wrong = run_cli("run", "--month", LAST_MONTH, "--mapping", JAPAN, "--coverage", "eu")
    assert wrong.returncode == 2
    assert "--coverage: coverage must be 'jp' (Japan, JPY) or 'g' (Global, USD or EUR), got 'eu'" in wrong.stderr


def test_a_dry_run_on_a_stack_of_both_settles_the_coverage_as_the_import_does(tmp_path):
    body = SoracomSimulator(coverage="g", auth_key_id="x", auth_key="y").csv_bytes(LAST_MONTH)
    csv_file = tmp_path / "global.csv"
    csv_file.write_bytes(body)
    mapping = yaml.safe_load(Path(GLOBAL).read_text())
    mapping.pop("currency")  # one mapping for both coverages names no currency
    one = tmp_path / "mapping.yaml"
    one.write_text(yaml.safe_dump(mapping, allow_unicode=True))
    both = {"SORACOM_COVERAGE_TYPE": "jp,g"}
    args = ("import", str(csv_file), "--month", LAST_MONTH, "--mapping", str(one), "--dry-run", "--out", str(tmp_path))

    # Named nowhere: refused, as the import on such a stack rejects it
    done = run_cli(*args, env=both)
    assert done.returncode == 2
    assert "this stack imports Japan coverage and Global coverage bills and the file names neither" in done.stderr

    # Named by its currency: Global's, with Global's charge ids
    done = run_cli(*args, "--currency", "USD", env=both)
    assert done.returncode == 0, done.stdout + done.stderr
    charges = [json.loads(line) for line in (tmp_path / LAST_MONTH / "global.charges.jsonl").read_text().splitlines()]
    assert charges
    assert all(charge["extChargeId"].endswith("-g") for charge in charges)
    assert {charge["currencyCode"] for charge in charges} == {"USD"}
