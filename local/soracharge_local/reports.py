"""``soracharge report``: an import report JSON (saved by the CLI or copied from S3) as an HTML page.

Every way a report file can be unusable (missing, unreadable, not JSON, not an import report) is an
:class:`InvalidInputError` whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError
from soracharge.errors import InvalidInputError
from soracharge.logic.report_html import banner, render_report_html
from soracharge.models.imports import ImportReport

#: Validation errors listed in a message before "and N more".
_ERRORS_SHOWN = 5
_COLOURS = {"ok": "green", "pending": "blue", "info": "blue", "warn": "yellow", "error": "red"}


def default_html_path(report_path: Path) -> Path:
    """The page beside its JSON, named after it: ``report.json`` -> ``report.html``, ``<version>.json`` ->
    ``<version>.html`` (so reports sharing a folder do not overwrite each other's page)."""
    return report_path.with_suffix(".html")


def load_report(path: Path) -> ImportReport:
    """Read and validate an import report JSON file."""
    if not path.exists():
        raise InvalidInputError(
            f"{path} does not exist: 'soracharge run' and 'soracharge import' save each report in a folder of its "
            "own, <out>/<yyyyMM>/<yyyyMMddTHHmmssZ>-<command>/report.json (a dry run saves <name>.report.json); pass "
            "--report PATH for another report JSON, for example one copied from S3 reports/<yyyyMM>/<version>.json"
        )
    if path.is_dir():
        raise InvalidInputError(f"{path} is a directory, not an import report JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not UTF-8 text (byte {exc.start}): it is not an import report") from None
    except OSError as exc:
        raise InvalidInputError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} is not an import report: it holds a JSON {type(data).__name__}, not an object")
    try:
        return ImportReport.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"{path} is not a valid import report: {describe_errors(exc)}") from None


def describe_errors(error: ValidationError) -> str:
    """The first validation errors as ``field.path: message``, joined with ``; ``."""
    details = error.errors(include_url=False)
    shown = [f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}" for item in details]
    text = "; ".join(shown[:_ERRORS_SHOWN])
    if len(shown) > _ERRORS_SHOWN:
        text += f"; and {len(shown) - _ERRORS_SHOWN} more"
    return text


def write_report_html(report: ImportReport, destination: Path) -> Path:
    """Render the report and write the page (creating its folder); return where it went."""
    page = render_report_html(report)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot write the HTML report to {destination}: {exc.strerror or exc}") from None
    return destination


def month_mismatch(report: ImportReport, month: str, source: Path) -> str | None:
    """A warning when the report read is for another month than the one asked for."""
    if report.month is not None and report.month != month:
        return f"{source} is the report for {report.month}, not {month}"
    return None


def status_colour(report: ImportReport) -> str:
    """The terminal colour the CLI shows a report in, as the page colours its banner."""
    return _COLOURS[banner(report)[0]]
