"""A month held for approval, decided on the command line, as a billing team does it locally.

Each ``soracharge`` command is a subprocess with its own local stack: the months before come from the
reports kept in ``--out`` (the local history), as they come from ``reports/`` on AWS.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml
from soracharge.models.months import shift_month
from soracharge_local.history import runs

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import MAPPING, run_cli
from tests.unit.test_local_cli import saved_report
from tests.unit.test_report_html import parse

MONTH_BEFORE = shift_month(LAST_MONTH, -1)


def strict_mapping(tmp_path: Path) -> str:
    """The example mapping with a team's strict review: any customer moving by 1 % is unusual."""
    document = yaml.safe_load(Path(MAPPING).read_text(encoding="utf-8"))
    document["review"] = {"variance": {"change": "0.01", "floor": "0"}, "approval": "unusual"}
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return str(path)


def saved(out: Path, month: str = LAST_MONTH) -> dict[str, Any]:
    """The month's latest report (each command saves its own in a folder of its own)."""
    return dict(json.loads(saved_report(out, month).read_text(encoding="utf-8")))


def test_an_unusual_month_waits_then_approve_sends_exactly_the_preview_once(tmp_path):
    out = tmp_path / "out"
    strict = strict_mapping(tmp_path)
    # Given the month before, imported
    first = run_cli("run", "--month", MONTH_BEFORE, "--mapping", MAPPING, "--out", str(out), timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    # When the month is run with a strict review, it is held: exit 1, nothing sent, the first line says why
    held = run_cli("run", "--month", LAST_MONTH, "--mapping", strict, "--out", str(out), timeout=300)
    assert held.returncode == 1, held.stdout + held.stderr
    assert "History:   1 report(s) of other months" in held.stdout
    preview = saved(out)
    assert preview["status"] == "AWAITING_APPROVAL"
    assert preview["summary"].startswith(f"held for approval: the month is unusual against {MONTH_BEFORE}: ")
    assert "importSessionId" not in preview
    assert "Alert sent to the alerts topic: soracharge" in held.stdout
    assert "held for approval, nothing sent" in held.stdout
    # its last lines are the two commands that decide it, complete: the same mapping, the same --out
    printed = [
        line.strip().split("   (")[0] for line in held.stdout.splitlines() if line.strip().startswith("soracharge ")
    ]
    decide = ["--month", LAST_MONTH, "--by", "YOUR-NAME", "--mapping", strict, "--out", str(out)]
    assert [shlex.split(line) for line in printed[-2:]] == [["soracharge", d, *decide] for d in ("approve", "reject")]
    # And the history page lists both months, the held one waiting
    rows = parse((out / "history.html").read_text(encoding="utf-8")).by_id("months").all("tr", "month-row")
    assert [(r.attrs["data-month"], r.attrs["data-status"]) for r in rows] == [
        (LAST_MONTH, "AWAITING_APPROVAL"),
        (MONTH_BEFORE, "PROCESSED"),
    ]
    # When a person approves it, exactly the packets previewed are sent and rated, and who approved is kept
    approved = run_cli(
        *["Hanako" if word == "YOUR-NAME" else word for word in shlex.split(printed[-2])[1:]], timeout=300
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert (
        f"The plan previewed ({preview['approval']['plan'][:12]}...) is the plan: approve by Hanako" in approved.stdout
    )
    report = saved(out)
    assert report["status"] == "PROCESSED"
    # the preview stays on disk, in the run's folder; the approval's report is in a folder of its own
    assert [f.name.rsplit("-", 1)[1] for f in runs(out / LAST_MONTH)] == ["run", "approve"]
    assert json.loads((runs(out / LAST_MONTH)[0] / "report.json").read_text())["status"] == "AWAITING_APPROVAL"
    assert report["approval"]["decision"] == "approved"
    assert report["approval"]["by"] == "Hanako"
    assert report["approval"]["plan"] == preview["approval"]["plan"]
    assert report["counts"]["charges"] == preview["counts"]["charges"]
    assert report["reconciliation"]["importedSum"] == preview["reconciliation"]["csvSum"]
    assert report["reconciliation"]["balanced"] is True
    # Deciding again is refused: the month is not waiting any more
    again = run_cli("approve", "--month", LAST_MONTH, "--by", "Hanako", "--out", str(out))
    assert again.returncode == 2
    assert "is PROCESSED, not held for approval: nothing to approve" in again.stderr


def test_reject_sends_nothing_and_says_who_rejected_it(tmp_path):
    out = tmp_path / "out"
    strict = strict_mapping(tmp_path)
    assert run_cli("run", "--month", MONTH_BEFORE, "--mapping", MAPPING, "--out", str(out), timeout=300).returncode == 0
    assert run_cli("run", "--month", LAST_MONTH, "--mapping", strict, "--out", str(out), timeout=300).returncode == 1
    rejected = run_cli(
        "reject", "--month", LAST_MONTH, "--by", "Taro", "--mapping", strict, "--out", str(out), timeout=300
    )
    assert rejected.returncode == 1
    report = saved(out)
    assert report["status"] == "REJECTED"
    assert report["reason"] == "review-rejected"
    assert report["summary"].startswith("rejected by Taro after the preview: nothing was sent.")
    assert "rejected after review, nothing sent" in rejected.stdout


def test_a_decision_without_a_preview_or_a_name_is_refused_before_anything_runs(tmp_path):
    nothing = run_cli("approve", "--month", LAST_MONTH, "--by", "Hanako", "--out", str(tmp_path))
    assert nothing.returncode == 2
    assert "no preview to approve:" in nothing.stderr
    unnamed = run_cli("approve", "--month", LAST_MONTH, "--by", " ", "--out", str(tmp_path))
    assert unnamed.returncode == 2
    assert "--by must name who decides" in unnamed.stderr


def test_report_history_writes_every_month_kept_on_one_page(tmp_path):
    out = tmp_path / "out"
    assert run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(out), timeout=300).returncode == 0
    (out / "history.html").unlink()
    done = run_cli("report", "--history", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"History page written to {out / 'history.html'} (1 reports of {out}/)" in done.stdout
    page = parse((out / "history.html").read_text(encoding="utf-8"))
    (row,) = page.by_id("months").all("tr", "month-row")
    (folder,) = runs(out / LAST_MONTH)
    assert row.all("a")[0].attrs["href"] == f"{LAST_MONTH}/{folder.name}/report.html"
