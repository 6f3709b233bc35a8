"""The local CLI's own rules that no run shows by itself."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from soracharge.errors import InvalidInputError
from soracharge_local import cli, console, history
from soracharge_local.cli import app
from typer.testing import CliRunner

from tests.unit.test_report_html import CUSTOMERS, MONTH, processed_report


def test_two_executions_of_one_month_and_coverage_started_in_the_same_second_get_different_names(monkeypatch):
    # A re-run with instant waits starts the second export well inside the second of the first:
    # Step Functions refuses a name it has seen (ExecutionAlreadyExists), so the names must differ.
    second = datetime(2026, 12, 1, 9, 30, 5, tzinfo=UTC)

    class Stopped(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Stopped:
            return cls.fromtimestamp(second.timestamp(), tz)

    monkeypatch.setattr(cli, "datetime", Stopped)  # every name in the same second, however slow the machine
    names = {cli._execution_name("export", "202611", "g") for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"export-202611-g-20261201T093005-[0-9a-f]{6}", name) for name in names)


# -- soracharge report: a month, or --report FILE, exactly one --------------------------------------


def saved_report(out: Path, month: str, bill: str | None = None) -> Path:
    """The latest report the commands saved in ``out`` for a bill of ``month``, known by what the reports say (as
    ``report``, ``approve`` and ``reject`` know it): ``bill`` as a run of several bills names its folder (``jp``,
    ``OP0000000002/g``), None for the only bill."""
    operator, _, coverage = (bill or "").rpartition("/")
    return history.bill_report(out, month, operator or None, coverage or None).path


def write_report(path: Path, **overrides: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(processed_report(**overrides).to_event(), ensure_ascii=False), encoding="utf-8")
    return path


def test_report_renders_a_report_file_given_alone_without_a_month(tmp_path: Path):
    # As the README offers it: `soracharge report --report FILE`, for a report copied from S3
    saved = write_report(tmp_path / "reports" / MONTH / "69436c52.json")
    done = CliRunner().invoke(app, ["report", "--report", str(saved), "--out", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        f"HTML report written to {saved.with_suffix('.html')}",
        "Import PROCESSED: CloudBlue rated session 7: 28 charges",
    ]
    assert "<html" in saved.with_suffix(".html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [],
            "error: give the month (soracharge report 202610) or a report JSON (soracharge report --report FILE), "
            "or --history for every month",
        ),
        ([MONTH, "--report", "{file}"], f"error: give the month {MONTH} or --report {{file}}, not both"),
        (["--report", "{file}", "--coverage", "g"], "error: --coverage pick a month's report in"),
        (["--report", "{file}", "--operator", "OP0000000002"], "error: --operator pick a month's report in"),
        (
            ["--history", MONTH],
            f"error: --history writes every month's page: give it alone, not with the month {MONTH}",
        ),
        (["--history", "--report", "{file}"], "error: --history writes every month's page: give it alone"),
    ],
)
def test_report_refuses_both_a_month_and_a_file_or_neither_saying_what_is_wrong(tmp_path: Path, args, message):
    saved = write_report(tmp_path / "copied.json")
    arguments = ["report", *(arg.replace("{file}", str(saved)) for arg in args), "--out", str(tmp_path / "out")]
    done = CliRunner().invoke(app, arguments)
    assert done.exit_code == 2, done.output
    assert message.replace("{file}", str(saved)) in done.output
    assert "Missing argument" not in done.output
    assert not list(tmp_path.rglob("*.html"))


def test_report_help_offers_the_month_or_a_file():
    done = CliRunner().invoke(app, ["report", "--help"], terminal_width=200)
    assert done.exit_code == 0
    assert "report [OPTIONS] [MONTH]" in done.output
    assert re.search(r"--report +FILE +Any import report JSON, instead of a month", done.output), done.output
    assert "Or --report FILE (not both)." in done.output


# -- the local history: each command's reports and CSV in a folder of its own -------------------------


def test_two_commands_of_one_bill_in_the_same_second_get_two_folders_in_the_order_they_ran(tmp_path: Path):
    frozen = datetime(2026, 12, 6, 10, 15, 30, 123456, tzinfo=UTC)
    slot = tmp_path / MONTH
    made = [history.new_run_folder(slot, command, now=frozen) for command in ("run", "import", "run", "approve")]
    assert [p.name for p in made] == [
        "20261206T101530Z-run",
        "20261206T101530Z-2-import",
        "20261206T101530Z-3-run",
        "20261206T101530Z-4-approve",
    ]
    assert all(p.is_dir() for p in made)
    assert history.runs(slot) == made
    # A clock set back never makes a later command's folder sort before an earlier one's
    earlier = history.new_run_folder(slot, "reject", now=frozen - timedelta(hours=1))
    assert earlier.name == "20261206T101530Z-5-reject"
    assert history.runs(slot)[-1] == earlier
    # A later second starts its count again
    later = history.new_run_folder(slot, "run", now=frozen + timedelta(seconds=1))
    assert later.name == "20261206T101531Z-run"
    assert history.runs(slot)[-1] == later


def test_each_bill_stands_at_its_latest_report_and_the_history_page_links_it(tmp_path: Path):
    out = tmp_path / "out"
    legacy = write_report(out / "202609" / "report.json", month="202609")  # saved by an earlier version
    run = write_report(out / MONTH / "20261206T101530Z-run" / "report.json", summary="the run's")
    (run.parent / "fe_0123.csv").write_text("imsi\n")
    imported = write_report(out / MONTH / "20261206T101530Z-2-import" / "report.json", summary="the import's")
    global_run = write_report(out / MONTH / "g" / "20261206T101500Z-run" / "report.json", coverage="g")
    assert history.bill_report(out, MONTH, None, "jp").path == imported
    assert history.bill_report(out, "202609", None, None).path == legacy
    kept = [path for path, _ in history.kept_reports(out)]
    assert kept == [legacy, imported, global_run]  # one per bill's file: the run's report is kept on disk, not listed
    assert run.is_file()
    page = history.write_history(out).read_text(encoding="utf-8")
    assert f'href="{MONTH}/20261206T101530Z-2-import/report.html"' in page
    assert f'href="{MONTH}/g/20261206T101500Z-run/report.html"' in page
    assert 'href="202609/report.html"' in page
    assert "20261206T101530Z-run/report.html" not in page


# -- which bill a command acts on: known by what its reports say, never by where they were saved ---------


def held_report(path: Path, **overrides: Any) -> Path:
    """A preview held for approval (AWAITING_APPROVAL, with its plan), saved at ``path``."""
    data = processed_report(**overrides).to_event()
    data.update(status="AWAITING_APPROVAL", approval={"plan": "p" * 64, "monthVersion": 1, "askedBecause": "always"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_approve_of_a_coverage_with_no_preview_is_refused_though_another_coverage_is_held(tmp_path: Path):
    # `run --coverage g` saved its held Global bill in out/<month>/<stamp>-run/: approving the Japan bill must
    # not decide it (as a person who reviewed one bill would otherwise approve another)
    out = tmp_path / "out"
    held_report(out / MONTH / "20261206T101530Z-run" / "report.json", coverage="g", currency="USD")
    done = CliRunner().invoke(app, ["approve", "--month", MONTH, "--coverage", "jp", "--by", "Taro", "--out", str(out)])
    assert done.exit_code == 2, done.output
    assert f"no preview to approve: {out / MONTH} holds no report of the stack's own operator's jp bill" in done.output
    assert "The preview to approve" not in done.output


def test_a_decision_without_a_coverage_is_refused_when_the_month_holds_bills_of_both(tmp_path: Path):
    out = tmp_path / "out"
    held_report(out / MONTH / "jp" / "20261206T101530Z-run" / "report.json", coverage="jp")
    held_report(out / MONTH / "g" / "20261206T101530Z-run" / "report.json", coverage="g", currency="USD")
    for command in ("approve", "reject"):
        done = CliRunner().invoke(app, [command, "--month", MONTH, "--by", "Taro", "--out", str(out)])
        assert done.exit_code == 2, done.output
        assert "bills of 202610 of both coverages (g, jp): name the one with --coverage jp|g" in done.output
    done = CliRunner().invoke(app, ["report", MONTH, "--out", str(out)])
    assert done.exit_code == 2, done.output
    assert "of both coverages (g, jp)" in done.output


def test_a_listed_operators_bill_is_found_wherever_its_import_saved_it(tmp_path: Path):
    out = tmp_path / "out"
    own = write_report(out / MONTH / "20261206T101500Z-run" / "report.json", summary="own")
    theirs = write_report(
        out / MONTH / "20261206T101530Z-import" / "report.json", operator="OP0000000003", summary="theirs"
    )
    assert history.bill_report(out, MONTH, None, None).path == own  # the newer operator's import is not the own bill
    assert history.bill_report(out, MONTH, "OP0000000003", None).path == theirs
    assert history.bill_report(out, MONTH, "OP0000000003", "jp").path == theirs
    with pytest.raises(InvalidInputError, match="no report of operator OP0000000003's g bill"):
        history.bill_report(out, MONTH, "OP0000000003", "g")


def test_one_bill_saved_in_two_places_counts_once_and_a_second_file_of_it_counts_too(tmp_path: Path):
    # A one-coverage run saves in out/<month>/, a two-coverage run in out/<month>/jp/: the same Japan bill,
    # the same file. The months compared with a month hold it once (at its newest), as AWS holds its one report.
    out = tmp_path / "out"
    write_report(out / MONTH / "20261206T101500Z-run" / "report.json")
    newest = write_report(out / MONTH / "jp" / "20261206T101530Z-run" / "report.json", coverage="jp")
    additional = write_report(out / MONTH / "20261206T101600Z-import" / "report.json", sha256="a" * 64)
    assert sorted(path for path, _ in history.kept_reports(out)) == sorted([newest, additional])


def test_a_file_is_refused_for_the_preview_of_an_export(tmp_path: Path):
    # --file uploads the person's file in place of what was previewed: only for a preview of an uploaded file
    out = tmp_path / "out"
    held_report(out / MONTH / "20261206T101530Z-run" / "report.json")  # source: exports
    other = tmp_path / "other.csv"
    other.write_text("imsi\n")
    done = CliRunner().invoke(
        app, ["approve", "--month", MONTH, "--by", "Taro", "--file", str(other), "--out", str(out)]
    )
    assert done.exit_code == 2, done.output
    assert f"previews an export (exports/{MONTH}/fe_0123456789abcdef.csv), not a file a person gave" in done.output


# -- the report on the terminal ---------------------------------------------------------------------


def test_the_per_customer_amounts_line_up_on_a_terminal_whatever_script_the_names_are_in(capsys):
    # 東京ガス takes eight terminal columns, not four: padded by characters, its amount stood four columns right
    # of the others. A customer value with a control character (an ANSI escape pasted into a tag) is escaped.
    report: dict[str, Any] = processed_report().to_event()
    report["perCustomer"] = [*report["perCustomer"], {"name": "Evil\x1b[2J Corp", "amount": "1.00"}]
    console.print_report(report)
    shown = capsys.readouterr().out.splitlines()
    table = shown[shown.index("Per customer:") + 1 :][:5]
    assert [line.split()[-1] for line in table] == [*CUSTOMERS.values(), "1.00"]
    assert {cell_len(line) for line in table} == {2 + 28 + 1 + 14}
    assert table[0].startswith("  (no customer tag) ")
    assert table[4].startswith("  Evil\\x1b[2J Corp ")
    assert "\x1b" not in "".join(shown)
