"""The local history: the reports ``run``, ``import`` and ``approve`` keep in ``--out`` (``out`` by default).

Each command saves what it made for a bill in a folder of its own, named after the time it saved it
(UTC) and the command, so no command overwrites what an earlier one saved::

    <out>/<yyyyMM>/<yyyyMMddTHHmmssZ>-<command>/report.json   (and report.html; run's: the CSV exported too)
    <out>/<yyyyMM>/<coverage>/<stamp>-<command>/...             (a run of two coverages)
    <out>/<yyyyMM>/<operatorId>/<coverage>/<stamp>-<command>/... (a listed operator's bill)

``<command>`` is ``run``, ``import``, ``approve`` or ``reject``; a second folder of the same bill in the
same second is ``<stamp>-2-<command>`` (then ``-3-``...). The folder a command's run folders sit in
(``<out>/<yyyyMM>/``, ``.../<coverage>/``, ``.../<operatorId>/<coverage>/``) is the bill's *slot*; the
slot's newest run folder holding a report is the bill as it stands, as the single ``report.json`` of
the slot was before run folders (such a file, left by an earlier version, counts as the slot's oldest).

``<out>/history.html`` is every month on one page (:func:`soracharge.logic.history.render_history_html`):
each slot's newest report, linked to its page. Each local command deploys a fresh stack, so before it
imports, those reports of the other months are put into the stack's ``reports/`` where the import
reads the months before a month (its variance), as on AWS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from soracharge.errors import InvalidInputError
from soracharge.logic.history import render_history_html
from soracharge.models.imports import ImportReport

from soracharge_local.engine import LocalCloud

HISTORY_PAGE = "history.html"
REPORT = "report.json"
#: A command's folder: ``<yyyyMMddTHHmmssZ>-<command>``, or ``<stamp>-<n>-<command>`` for the n-th of a slot in
#: that second.
RUN_FOLDER = re.compile(r"(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>[0-9]+))?-(?P<command>[a-z]+)")
_STAMP = "%Y%m%dT%H%M%SZ"


def run_order(folder: Path) -> tuple[str, int] | None:
    """Where a run folder sorts among its slot's (the time it was made, then its number); None: not a run folder."""
    named = RUN_FOLDER.fullmatch(folder.name)
    return (named["stamp"], int(named["n"] or 1)) if named else None


def runs(slot: Path) -> list[Path]:
    """The run folders of ``slot``, oldest first."""
    if not slot.is_dir():
        return []
    found = [(order, path) for path in slot.iterdir() if path.is_dir() and (order := run_order(path)) is not None]
    return [path for _, path in sorted(found)]


def new_run_folder(slot: Path, command: str, now: datetime | None = None) -> Path:
    """A new folder in ``slot`` for what ``command`` saves, made here: never one another command made (a second
    one in the same second gets the next number), and never sorting before the slot's newest (a clock set back
    takes the newest's time)."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(_STAMP)
    try:
        slot.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot make {slot}: {exc.strerror or exc}") from None
    orders = [order for path in runs(slot) if (order := run_order(path)) is not None]
    newest = max(orders, default=None)
    if newest is not None and newest[0] >= stamp:
        stamp, number = newest[0], newest[1] + 1
    else:
        number = 1
    while True:
        folder = slot / (f"{stamp}-{command}" if number == 1 else f"{stamp}-{number}-{command}")
        try:
            folder.mkdir()
        except FileExistsError:  # another command took it meanwhile
            number += 1
            continue
        except OSError as exc:
            raise InvalidInputError(f"cannot make {folder}: {exc.strerror or exc}") from None
        return folder


def latest_report(slot: Path) -> Path | None:
    """The report of ``slot``'s newest run folder that holds one (else the slot's own ``report.json``, which an
    earlier version saved there), or None."""
    for folder in reversed(runs(slot)):
        if (folder / REPORT).is_file():
            return folder / REPORT
    return slot / REPORT if (slot / REPORT).is_file() else None


def slots_with_reports(folder: Path) -> list[Path]:
    """The slots directly in ``folder`` (its coverage folders, or an operator's) that hold a report."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and run_order(p) is None and latest_report(p) is not None)


def kept_reports(out: Path) -> list[tuple[Path, ImportReport]]:
    """Each bill's report as it stands, in ``out``: every slot's newest (one that cannot be read is left out:
    the page lists what it can)."""
    found = []
    for slot in _slots(out):
        path = latest_report(slot)
        if path is None:
            continue
        try:
            found.append((path, ImportReport.model_validate(json.loads(path.read_text(encoding="utf-8")))))
        except (OSError, ValueError, ValidationError):
            continue
    return found


def write_history(out: Path) -> Path:
    """``<out>/history.html`` from each bill's report as it stands in ``out``; the page written."""
    pairs = [(report, path.with_suffix(".html").relative_to(out).as_posix()) for path, report in kept_reports(out)]
    page = out / HISTORY_PAGE
    try:
        out.mkdir(parents=True, exist_ok=True)
        page.write_text(render_history_html(pairs), encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot write the history page to {page}: {exc.strerror or exc}") from None
    return page


def seed(cloud: LocalCloud, out: Path, skip: Iterable[str] = ()) -> int:
    """Put each bill's report as it stands in ``out`` (but those of the months in ``skip``, being run now) into
    the stack's ``reports/``, where the import compares a month with the months before it; how many were put."""
    skipped = set(skip)
    s3 = cloud.client("s3")
    put = 0
    for path, report in kept_reports(out):
        if report.month is None or report.month in skipped:
            continue
        operator = f"{report.operator}-" if report.operator else ""
        key = f"reports/{report.month}/kept-{operator}{report.coverage or 'jp'}-{path.parent.name}.json"
        s3.put_object(Bucket=cloud.bucket, Key=key, Body=json.dumps(report.to_event()).encode())
        put += 1
    return put


def _slots(out: Path) -> list[Path]:
    """Every slot in ``out``: ``<yyyyMM>/``, ``<yyyyMM>/<folder>/`` and ``<yyyyMM>/<folder>/<folder>/`` (run folders
    are not slots)."""
    month = "[0-9]" * 6
    candidates = [*out.glob(month), *out.glob(f"{month}/*"), *out.glob(f"{month}/*/*")]
    return sorted(
        path
        for path in candidates
        if path.is_dir() and not any(run_order(Path(part)) for part in path.relative_to(out).parts)
    )
