"""The local history: the reports ``run``, ``import`` and ``approve`` keep in ``--out`` (``out`` by default).

Layout: ``<out>/<yyyyMM>/report.json`` (and ``report.html``), or ``<out>/<yyyyMM>/<coverage>/report.json``
for a run of two coverages (``<out>/<yyyyMM>/<operatorId>/<coverage>/report.json`` for a listed operator's),
and ``<out>/history.html``, every month on one page
(:func:`soracharge.logic.history.render_history_html`). Each local command deploys a fresh stack,
so before it imports, the reports of the other months are put into the stack's ``reports/`` where
the import reads the months before a month (its variance), as on AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError
from soracharge.errors import InvalidInputError
from soracharge.logic.history import render_history_html
from soracharge.models.imports import ImportReport

from soracharge_local.engine import LocalCloud

HISTORY_PAGE = "history.html"


def kept_reports(out: Path) -> list[tuple[Path, ImportReport]]:
    """Every report kept in ``out`` (one that cannot be read is left out: the page lists what it can)."""
    found = []
    month = "[0-9]" * 6
    for path in sorted(
        [*out.glob(f"{month}/report.json"), *out.glob(f"{month}/*/report.json"), *out.glob(f"{month}/*/*/report.json")]
    ):
        try:
            found.append((path, ImportReport.model_validate(json.loads(path.read_text(encoding="utf-8")))))
        except (OSError, ValueError, ValidationError):
            continue
    return found


def write_history(out: Path) -> Path:
    """``<out>/history.html`` from every report kept in ``out``; the page written."""
    pairs = [(report, path.with_suffix(".html").relative_to(out).as_posix()) for path, report in kept_reports(out)]
    page = out / HISTORY_PAGE
    try:
        out.mkdir(parents=True, exist_ok=True)
        page.write_text(render_history_html(pairs), encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot write the history page to {page}: {exc.strerror or exc}") from None
    return page


def seed(cloud: LocalCloud, out: Path, skip: Iterable[str] = ()) -> int:
    """Put the reports kept in ``out`` (but those of the months in ``skip``, being run now) into the stack's
    ``reports/``, where the import compares a month with the months before it; how many were put."""
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
