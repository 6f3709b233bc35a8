"""Backfills, re-runs and corrections with the `soracharge` CLI, run as a person runs it (subprocesses)."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path

from soracharge.models.months import months_between, shift_month
from soracharge_local.history import runs
from soracharge_local.simulators import SoracomSimulator

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import run_cli

MAPPING = str(Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml")
SIMULATOR = SoracomSimulator(auth_key_id="x", auth_key="y")


def test_export_backfills_a_range_and_a_month_given_again_is_not_exported_again(tmp_path):
    first, last = shift_month(LAST_MONTH, -3), shift_month(LAST_MONTH, -1)
    done = run_cli("export", "--from", first, "--to", last, "--month", last, "--out", str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    months = months_between(first, last)
    # Each month of the range was stored once; the repeated month ran first and was found stored at the end.
    table = done.stdout[done.stdout.rindex("Months:") :]
    assert re.search(rf"{last} +ok +stored: s3://soracharge-data-123456789012/exports/{last}/fe_", table)
    for month in months:
        assert re.search(rf"{month} +ok +stored: ", table), month
        assert (tmp_path / f"{month}.csv").read_bytes() == SIMULATOR.csv_bytes(month)
    assert re.search(rf"{last} +ok +already stored, not exported again", table)
    assert done.stdout.count("ok  FindStoredExport") == len(months) + 1
    assert done.stdout.count("StoreExport: stored") == len(months)


def test_a_backfill_beyond_soracom_s_18_months_runs_nothing_and_names_each_month():
    done = run_cli("export", "--from", "202401", "--to", "202406")
    assert done.returncode == 2
    assert "nothing was run" in done.stderr
    for month in months_between("202401", "202406"):
        assert f"month {month} is older than the 18 months Soracom keeps bills for" in done.stderr
    assert "the earliest month it can export today is" in done.stderr
    assert "Exporting" not in done.stdout


def test_a_range_given_backwards_is_refused():
    done = run_cli("export", "--from", LAST_MONTH, "--to", shift_month(LAST_MONTH, -2))
    assert done.returncode == 2
    assert f"--to {shift_month(LAST_MONTH, -2)} is before --from {LAST_MONTH}" in done.stderr


def test_run_twice_for_a_month_imports_it_once_and_the_second_says_nothing_was_done(tmp_path):
    done = run_cli("run", "--month", LAST_MONTH, "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(tmp_path),
                   timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ImportCharges:") == 1
    assert f"Nothing to do: {LAST_MONTH} (Japan coverage) was exported before" in done.stdout
    assert "nothing was exported, stored or imported again; its import is PROCESSED" in done.stdout
    assert re.search(rf"{LAST_MONTH} +ok +PROCESSED \(a re-run: nothing done again\)", done.stdout)
    # The report, as JSON and as the page people read: the run's and the re-run's, each in a folder of its own
    first, rerun = runs(tmp_path / LAST_MONTH)
    assert (first.name.endswith("-run"), rerun.name.endswith("-run")) == (True, True)  # runs(): oldest first
    page = (first / "report.html").read_text()
    report = json.loads((first / "report.json").read_text())
    assert report["reconciliation"]["importedSum"] in page
    assert [len(list(f.glob("fe_*.csv"))) for f in (first, rerun)] == [1, 0]  # the re-run exported nothing
    assert json.loads((rerun / "report.json").read_text())["object"] == report["object"]


def test_a_correction_is_written_as_differences_and_imports_as_an_additional_file(tmp_path):
    month = shift_month(LAST_MONTH, -1)
    imported = tmp_path / "imported.csv"
    imported.write_bytes(SIMULATOR.csv_bytes(month))
    rows = list(csv.reader(io.StringIO(imported.read_bytes().decode("utf-8-sig"))))
    amount_at, quantity_at, unit_at = (rows[0].index(c) for c in ("amount", "quantity", "unitPrice"))
    raised = next(i for i, row in enumerate(rows[1:], 1) if Decimal(row[unit_at]) > 0)
    extra = Decimal(rows[raised][unit_at]) * 10  # one row corrected upwards: 10 more units at its price
    rows[raised][quantity_at] = str(Decimal(rows[raised][quantity_at]) + 10)
    rows[raised][amount_at] = str(Decimal(rows[raised][amount_at]) + extra)
    removed_at = 2 if raised != 2 else 3
    removed_amount = Decimal(rows[removed_at][amount_at])
    del rows[removed_at]  # one row that should not have been billed
    corrected = tmp_path / "corrected.csv"
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(rows)
    corrected.write_bytes(("\ufeff" + text.getvalue()).encode())
    differences = tmp_path / "differences.csv"

    # Written without the mapping, the differences hold the two rows; their import is refused, as the
    # mapping shares costs out (the VPG's shares move with any customer's amount): nothing would be sent
    raw = tmp_path / "raw.csv"
    done = run_cli("correction", str(imported), str(corrected), "--month", month, "--out", str(raw))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(0 added, 1 removed, 1 changed)" in done.stdout
    assert len(raw.read_bytes().decode("utf-8-sig").splitlines()) == 3  # the header and the two differences
    refused = run_cli("import", str(raw), "--month", month, "--mapping", MAPPING, "--additional", "--dry-run",
                      "--out", str(tmp_path / "refused"))  # fmt: skip
    assert refused.returncode == 1
    assert "these differences were written without the mapping, which shares costs out" in refused.stdout

    done = run_cli("correction", str(imported), str(corrected), "--month", month, "--mapping", MAPPING,
                   "--out", str(differences))  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Differences written to" in done.stdout
    assert "1 removed" in done.stdout  # the row taken back; the changed one and the customers' moved shares
    assert "--additional" in done.stdout
    assert "--metadata import=additional" in done.stdout
    header, *rows = differences.read_bytes().decode("utf-8-sig").splitlines()
    assert header.endswith(",soracharge.differences.shares-allocated.JPY")
    assert len(rows) >= 2

    # The differences dry-run cleanly with the mapping, as charges of their own.
    checked = run_cli("import", str(differences), "--month", month, "--mapping", MAPPING, "--additional", "--dry-run",
                      "--out", str(tmp_path))  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    charges = [json.loads(line) for line in (tmp_path / month / "differences.charges.jsonl").read_text().splitlines()]
    assert charges
    assert all(re.fullmatch(r"sc-\d{6}-[0-9a-f]{32}-a[0-9a-f]{12}", c["extChargeId"]) for c in charges)
    assert sum(Decimal(str(c["totalPrice"])) for c in charges) == extra - removed_amount


def test_a_corrected_file_whose_row_does_not_add_up_is_refused_naming_the_line(tmp_path):
    imported = tmp_path / "imported.csv"
    imported.write_bytes(SIMULATOR.csv_bytes(LAST_MONTH))
    rows = list(csv.reader(io.StringIO(imported.read_bytes().decode("utf-8-sig"))))
    amount_at, unit_at = rows[0].index("amount"), rows[0].index("unitPrice")
    typo = next(i for i, row in enumerate(rows[1:], 1) if Decimal(row[unit_at]) > 0)
    rows[typo][amount_at] = str(Decimal(rows[typo][amount_at]) + 100)  # the amount alone changed: a typo
    corrected = tmp_path / "corrected.csv"
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(rows)
    corrected.write_bytes(("\ufeff" + text.getvalue()).encode())
    done = run_cli("correction", str(imported), str(corrected), "--month", LAST_MONTH, "--out", str(tmp_path / "d.csv"))
    assert done.returncode == 2
    assert f"corrected.csv, line {typo + 1}, column amount: amount " in done.stderr
    assert "is not unitPrice × quantity" in done.stderr
    assert not (tmp_path / "d.csv").exists()


def test_the_same_file_twice_has_no_differences(tmp_path):
    imported = tmp_path / "a.csv"
    imported.write_bytes(SIMULATOR.csv_bytes(LAST_MONTH))
    done = run_cli("correction", str(imported), str(imported), "--month", LAST_MONTH, "--out", str(tmp_path / "d.csv"))
    assert done.returncode == 0, done.stderr
    assert "No differences: there is nothing to import." in done.stdout
    assert not (tmp_path / "d.csv").exists()


def test_a_broken_corrected_file_is_refused_with_its_line(tmp_path):
    imported = tmp_path / "a.csv"
    imported.write_bytes(SIMULATOR.csv_bytes(LAST_MONTH))
    broken = tmp_path / "b.csv"
    rows = imported.read_bytes().decode("utf-8-sig").splitlines()
    header = rows[0].split(",")
    row = rows[1].split(",")
    row[header.index("amount")] = "12,5"  # a comma for a decimal point: one field too many
    broken.write_text("\r\n".join([rows[0], ",".join(row)]) + "\r\n")
    done = run_cli("correction", str(imported), str(broken), "--month", LAST_MONTH, "--out", str(tmp_path / "d.csv"))
    assert done.returncode == 2
    assert f"{broken}, line 2: {len(header) + 1} fields where the header has {len(header)}" in done.stderr
    assert not (tmp_path / "d.csv").exists()
    assert not (tmp_path / "d.csv.partial").exists()
