"""`soracharge run` and `soracharge import` run as a person runs them: subprocesses, output, exit codes."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

from soracharge_local.simulators import SoracomSimulator

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import run_cli

MAPPING = str(Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml")


def test_run_executes_the_whole_chain_and_prints_a_balanced_reconciliation(tmp_path):
    # The README's first command: export, store, import through the S3 notification, follow, reconcile.
    done = run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for state in ("GetBill", "PollExport", "StoreExport", "ImportCharges", "GetImportSession", "RecordOutcome"):
        assert state in done.stdout
    bill = SoracomSimulator(auth_key_id="x", auth_key="y").bill(LAST_MONTH)
    assert bill is not None
    amount = str(bill["amount"])
    assert re.search(rf"Soracom bill amount +{re.escape(amount)}", done.stdout)
    assert re.search(rf"imported to CloudBlue +{re.escape(amount)}", done.stdout)
    assert re.search(r"balanced +yes", done.stdout)
    report = json.loads((tmp_path / LAST_MONTH / "report.json").read_text())
    assert report["status"] == "PROCESSED"
    assert report["reconciliation"]["importedSum"] == amount


def test_import_dry_run_writes_the_charges_and_the_report_and_sends_nothing(tmp_path):
    csv_file = tmp_path / "october.csv"
    csv_file.write_bytes(SoracomSimulator(auth_key_id="x", auth_key="y").csv_bytes(LAST_MONTH))
    done = run_cli(
        "import", str(csv_file), "--month", LAST_MONTH, "--mapping", MAPPING, "--dry-run", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing was sent" in done.stdout
    charges = [json.loads(line) for line in (tmp_path / LAST_MONTH / "october.charges.jsonl").read_text().splitlines()]
    report = json.loads((tmp_path / LAST_MONTH / "october.report.json").read_text())
    assert report["status"] == "DRY_RUN"
    assert len(charges) == report["counts"]["charges"] > 0
    assert str(sum(Decimal(str(c["totalPrice"])) for c in charges)) == report["reconciliation"]["csvSum"]


def test_import_uploads_the_file_and_follows_it_into_cloudblue(tmp_path):
    csv_file = tmp_path / "october.csv"
    csv_file.write_bytes(SoracomSimulator(auth_key_id="x", auth_key="y").csv_bytes(LAST_MONTH))
    done = run_cli(
        "import", str(csv_file), "--month", LAST_MONTH, "--mapping", MAPPING, "--currency", "JPY",
        "--out", str(tmp_path), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"uploads/{LAST_MONTH}/october.csv" in done.stdout
    assert "Import PROCESSED" in done.stdout


def test_import_of_a_bad_file_exits_1_and_lists_each_problem(tmp_path):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(
        "imsi,date,billItemName,unitPrice,quantity,amount,customer\n"
        f"440103000000001,{LAST_MONTH}01,Mystery fee,1,1,1,Acme Logistics\n"
    )
    done = run_cli(
        "import", str(csv_file), "--month", LAST_MONTH, "--mapping", MAPPING, "--dry-run", "--out", str(tmp_path)
    )
    assert done.returncode == 1
    assert "line 2, column billItemName, value 'Mystery fee'" in done.stdout


def test_run_without_a_mapping_says_how_to_give_one():
    done = run_cli("run", "--month", LAST_MONTH)
    assert done.returncode == 2
    assert "no mapping: pass --mapping FILE or set SORACHARGE_MAPPING" in done.stderr
