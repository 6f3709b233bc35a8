"""`soracharge run` and `soracharge import` run as a person runs them: subprocesses, output, exit codes."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from decimal import Decimal
from pathlib import Path

from soracharge_local.history import runs
from soracharge_local.simulators import SoracomSimulator

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import run_cli
from tests.unit.test_report_html import parse

MAPPING = str(Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml")


def csv_sum(content: bytes) -> Decimal:
    rows = csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline=""))
    return sum((Decimal(row["amount"]) for row in rows), Decimal(0))


def test_run_executes_the_whole_chain_and_prints_a_balanced_reconciliation(tmp_path):
    # The README's first command: export, store, import through the S3 notification, follow, reconcile.
    done = run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for state in ("GetBill", "PollExport", "StoreExport", "ImportCharges", "GetImportSession", "RecordOutcome"):
        assert state in done.stdout
    simulator = SoracomSimulator(auth_key_id="x", auth_key="y")
    bill = simulator.bill(LAST_MONTH)
    assert bill is not None
    total = str(csv_sum(simulator.csv_bytes(LAST_MONTH)))
    # The bill is the CSV's sum rounded up to the yen: the steps show it, and CloudBlue got the CSV's sum
    assert re.search(rf"CSV sum \(Σ amount\) +{re.escape(total)}\n", done.stdout), done.stdout
    assert re.search(rf"rounded up to 1 JPY +\+0\.\d+ +{bill['amount']}\n", done.stdout), done.stdout
    assert re.search(rf"Soracom bill amount +{bill['amount']}\n", done.stdout)
    assert re.search(rf"imported to CloudBlue +{re.escape(total)}\n", done.stdout)
    assert re.search(r"balanced +yes \(the bill is the CSV's sum rounded up", done.stdout)
    # The run's CSV and report, in a folder of the run's own, printed where they went
    (folder,) = runs(tmp_path / LAST_MONTH)
    assert re.fullmatch(r"\d{8}T\d{6}Z-run", folder.name)
    assert f"Report saved to {folder / 'report.json'} and {folder / 'report.html'}\n" in done.stdout
    (saved,) = folder.glob("fe_*.csv")
    assert f"Saved a copy to {saved}\n" in done.stdout
    assert saved.read_bytes() == simulator.csv_bytes(LAST_MONTH)
    report = json.loads((folder / "report.json").read_text())
    assert report["status"] == "PROCESSED"
    assert report["reconciliation"]["importedSum"] == total


def test_a_run_then_an_import_then_a_run_of_one_month_each_keep_their_reports_in_a_folder_named_after_them(tmp_path):
    # A run, then its CSV imported, then the month run again: three commands of one month, one out/
    out = ("--out", str(tmp_path))
    first = run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, *out, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    (run_folder,) = runs(tmp_path / LAST_MONTH)
    (csv_file,) = run_folder.glob("fe_*.csv")
    imported = run_cli("import", str(csv_file), "--month", LAST_MONTH, "--mapping", MAPPING, "--currency", "JPY",
                       *out, timeout=300)  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    again = run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, *out, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr

    # Then each command's report is on disk, in a folder that says which command made it, in the order they ran
    folders = runs(tmp_path / LAST_MONTH)
    assert [re.sub(r"^\d{8}T\d{6}Z(-\d+)?-", "", f.name) for f in folders] == ["run", "import", "run"]
    assert folders[0] == run_folder
    for folder, done in zip(folders, (first, imported, again), strict=True):
        assert f"Report saved to {folder / 'report.json'} and {folder / 'report.html'}\n" in done.stdout
        assert (folder / "report.html").is_file()
    reports = [json.loads((f / "report.json").read_text()) for f in folders]
    assert [r["object"]["key"].split("/")[0] for r in reports] == ["exports", "uploads", "exports"]
    assert [r["status"] for r in reports] == ["PROCESSED", "PROCESSED", "PROCESSED"]
    # Each run's CSV is in its own folder (the import's file is the person's own: not copied)
    assert [len(list(f.glob("*.csv"))) for f in folders] == [1, 0, 1]
    assert not list((tmp_path / LAST_MONTH).glob("*.csv"))
    # And the history page lists the month once, as it stands: its latest report
    (row,) = parse((tmp_path / "history.html").read_text(encoding="utf-8")).by_id("months").all("tr", "month-row")
    assert row.all("a")[0].attrs["href"] == f"{LAST_MONTH}/{folders[-1].name}/report.html"


def test_import_dry_run_writes_the_charges_and_the_report_and_sends_nothing(tmp_path):
    csv_file = tmp_path / "october.csv"
    csv_file.write_bytes(SoracomSimulator(auth_key_id="x", auth_key="y").csv_bytes(LAST_MONTH))
    done = run_cli(
        "import", str(csv_file), "--month", LAST_MONTH, "--mapping", MAPPING, "--dry-run", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing was sent" in done.stdout
    charges = [json.loads(line) for line in (tmp_path / LAST_MONTH / "october.charges.jsonl").read_text().splitlines()]
    report = json.loads((tmp_path / LAST_MONTH / "october.report.json").read_text())  # a dry run: beside the month
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


def run_against(server: SoracomSimulator, out: Path, mapping: str = MAPPING) -> subprocess.CompletedProcess[str]:
    """``soracharge run`` for last month against ``server``, named by SORACOM_ENDPOINT as any real server would be."""
    env = {
        "SORACOM_ENDPOINT": server.base_url,
        "SORACOM_COVERAGE_TYPE": server.coverage,
        "SORACOM_AUTH_KEY_ID": "keyId-server",
        "SORACOM_AUTH_KEY": "key-server",
    }
    return run_cli("run", "--month", LAST_MONTH, "--mapping", mapping, "--out", str(out), env=env, timeout=300)


def test_run_against_a_soracom_server_whose_bill_is_rounded_up_less_a_coupon_balances_and_names_the_coupon(tmp_path):
    # Given a Soracom-compatible server billing the CSV's sum rounded up, less a 500 JPY coupon
    with SoracomSimulator(auth_key_id="keyId-server", auth_key="key-server", coupon=Decimal(500)) as server:
        bill = server.bill(LAST_MONTH)
        assert bill is not None
        done = run_against(server, tmp_path)

    # Then the run exits 0, its reconciliation shows the coupon step and says it balances
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"less the coupon applied +-500 +{bill['amount']}\n", done.stdout), done.stdout
    assert re.search(r"balanced +yes \(.*less the 500 JPY coupon\)", done.stdout)
    assert "Alert sent" not in done.stdout


def test_run_against_a_soracom_server_serving_the_csv_without_some_rows_ends_unbalanced_and_exits_1(tmp_path):
    # Given a server whose export lacks its last 3 rows while its bill counts them
    with SoracomSimulator(auth_key_id="keyId-server", auth_key="key-server") as server:
        server.update_faults({"drop_csv_rows": 3})
        done = run_against(server, tmp_path)

    # Then it exits 1, says by how much it is short and raises the alert
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"difference \(bill - steps\) +\d+\n", done.stdout), done.stdout
    assert re.search(r"balanced +NO \(short by \d+ JPY: .*the CSV may be incomplete", done.stdout)
    assert (
        f"Alert sent to the alerts topic: soracharge {LAST_MONTH} (Japan coverage): reconciliation does not balance"
        in done.stdout
    )


def test_run_against_a_global_coverage_server_reconciles_in_usd_and_exits_0_or_1_as_for_jpy(tmp_path):
    # Given a Global coverage server (USD bills, rounded up to the cent, less a $1.50 coupon)
    global_mapping = str(Path(MAPPING).with_name("mapping.global.example.yaml"))
    with SoracomSimulator(coverage="g", auth_key_id="keyId-server", auth_key="key-server", coupon=Decimal("1.5")) as s:
        balanced = run_against(s, tmp_path / "balanced", global_mapping)
        s.update_faults({"drop_csv_rows": 3})
        short = run_against(s, tmp_path / "short", global_mapping)

    # Then the complete month exits 0, balanced to the cent, naming the coupon
    assert balanced.returncode == 0, balanced.stdout + balanced.stderr
    assert re.search(r"rounded up to 0\.01 USD +\+0\.\d+ ", balanced.stdout)
    assert re.search(r"balanced +yes \(.*less the 1\.5 USD coupon\)", balanced.stdout)
    # And the month served without rows exits 1, short in USD, with the alert
    assert short.returncode == 1, short.stdout + short.stderr
    assert re.search(r"balanced +NO \(short by [0-9.]+ USD: ", short.stdout)
    assert (
        f"Alert sent to the alerts topic: soracharge {LAST_MONTH} (Global coverage): reconciliation does not balance"
        in short.stdout
    )
