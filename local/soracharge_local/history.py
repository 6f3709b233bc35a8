"""The local history: the reports ``run``, ``import`` and ``approve`` keep in ``--out`` (``out`` by default).

Each command saves what it made for a bill in a folder of its own, named after the time it saved it
(UTC) and the command, so no command overwrites what an earlier one saved::

    <out>/<yyyyMM>/<yyyyMMddTHHmmssZ>-<command>/report.json   (and report.html; run's: the CSV exported too)
    <out>/<yyyyMM>/<coverage>/<stamp>-<command>/...             (a run of two coverages)
    <out>/<yyyyMM>/<operatorId>/<coverage>/<stamp>-<command>/... (a listed operator's bill)

``<command>`` is ``run``, ``import``, ``approve`` or ``reject``; a second folder of the same bill in the
same second is ``<stamp>-2-<command>`` (then ``-3-``...). The folder a command's run folders sit in is its
*slot*, where the next command on the bill saves.

Which bill a report is of is what the report says (month, operator, coverage: :class:`Saved`), never the
folder it is in: :func:`bill_report` finds a bill's newest report wherever it was saved, and refuses
when a coverage must be named. A ``report.json`` of the layout before run folders counts as its bill's
oldest. ``<out>/history.html`` is every month on one page (:func:`soracharge.logic.history.render_history_html`):
the newest report of each file imported for each bill (:func:`kept_reports`), linked to its page.

Each local command deploys a fresh stack, so before it imports, those reports of the other months are
put into the stack's ``reports/`` where the import reads the months before a month (its variance), as
on AWS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from soracharge.errors import InvalidInputError
from soracharge.logic.history import render_history_html
from soracharge.models.coverage import Coverage
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


@dataclass(frozen=True)
class Saved:
    """A report a command saved in ``out``, and which bill it is of (read from the report, not from its folder)."""

    path: Path
    report: ImportReport
    month: str
    #: Where it sorts among the reports saved: its run folder's (time, number); one saved before run folders first.
    order: tuple[str, int]

    @property
    def bill(self) -> tuple[str, str | None, Coverage]:
        """(month, the listed operator or None for the stack's own, coverage)."""
        return (self.month, self.report.operator, self.report.coverage or "jp")

    @property
    def slot(self) -> Path:
        """The folder its run folder is in (where the next command on this bill saves)."""
        return self.path.parent.parent if run_order(self.path.parent) else self.path.parent


def saved_reports(out: Path, month: str | None = None) -> list[Saved]:
    """Every report saved in ``out`` (in ``out/<month>/`` only, given ``month``), oldest first; one that cannot be
    read is left out (the history page lists what it can; a decision needs its bill's report to be readable)."""
    folders = [out / month] if month else sorted(p for p in out.glob("[0-9]" * 6) if p.is_dir())
    found = []
    for folder in folders:
        for path in folder.rglob(REPORT) if folder.is_dir() else ():
            try:
                report = ImportReport.model_validate(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, ValidationError):
                continue
            found.append(Saved(path, report, report.month or folder.name, run_order(path.parent) or ("", 0)))
    return sorted(found, key=lambda saved: (saved.order, str(saved.path)))


def bill_report(out: Path, month: str, operator: str | None, coverage: str | None) -> Saved:
    """The newest report of one bill of ``month`` saved in ``out``: the stack's own operator's (``operator`` None)
    or a listed operator's, of ``coverage``, known by what each report says it is of, wherever it was saved.

    With no coverage named, the operator's bills of the month must all be of one coverage: InvalidInputError
    when they are of both (a decision is never taken on a guess), or when none is saved.
    """
    whose = f"operator {operator}'s" if operator else "the stack's own operator's"
    candidates = [
        saved
        for saved in saved_reports(out, month)
        if saved.report.operator == operator and coverage in (None, saved.bill[2])
    ]
    if not candidates:
        which = f"{coverage} bill" if coverage else "bill"
        raise InvalidInputError(
            f"{out / month} holds no report of {whose} {which} of {month} ('soracharge run' and 'soracharge import' "
            "save each in a folder of its own there, <yyyyMMddTHHmmssZ>-<command>/report.json)"
        )
    coverages = sorted({saved.bill[2] for saved in candidates})
    if len(coverages) > 1:
        raise InvalidInputError(
            f"{out / month} holds {whose} bills of {month} of both coverages ({', '.join(coverages)}): "
            "name the one with --coverage jp|g"
        )
    return candidates[-1]


def kept_reports(out: Path) -> list[tuple[Path, ImportReport]]:
    """What ``out`` holds of each bill as it stands: the newest report of each file imported for it (the same
    file run again counts once, at its newest; a second file of a bill, ``--additional``, counts as on AWS)."""
    newest: dict[tuple[str, str | None, Coverage, str], Saved] = {}
    for saved in saved_reports(out):
        newest[(*saved.bill, saved.report.sha256 or saved.report.object.key)] = saved
    return [(saved.path, saved.report) for saved in sorted(newest.values(), key=lambda saved: str(saved.path))]


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
        # {put}: two slots may hold run folders of one name (the same second), each report its own key
        key = f"reports/{report.month}/kept-{operator}{report.coverage or 'jp'}-{path.parent.name}-{put}.json"
        s3.put_object(Bucket=cloud.bucket, Key=key, Body=json.dumps(report.to_event()).encode())
        put += 1
    return put
