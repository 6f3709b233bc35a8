"""The import report as one self-contained HTML page: what a person opens instead of reading the JSON.

:func:`render_report_html` turns an :class:`ImportReport` into a page with no external resource and
no script (inline CSS, an inline SVG chart), so it can be mailed, attached or opened from S3 as is.
Amounts are shown exactly as the report's decimals (``format(amount, "f")``, never through a float);
totals are exact decimal sums. Names and problem values come from CSV files, so the template is
rendered with autoescaping on.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext
from functools import cache

import jinja2

from soracharge.models.accounts import BillAccount
from soracharge.models.imports import Amount, ImportReport, Variance

#: How the console and the page name the rows whose customer column is empty.
NO_CUSTOMER = "(no customer tag)"
NO_NAME = "(empty)"

#: Each status: its colour class on the page and what it means, in a few words.
STATUS_KINDS: dict[str, tuple[str, str]] = {
    "PROCESSED": ("ok", "CloudBlue rated the imported charges"),
    "CLOSED": ("pending", "imported; the session is closed and waiting for CloudBlue's rating"),
    "DRY_RUN": ("info", "dry run: nothing was sent to CloudBlue"),
    "DUPLICATE": ("warn", "the same bytes were imported before: nothing was imported again"),
    "HELD": ("error", "held: nothing was imported, a person has to decide what to do with this file"),
    "AWAITING_APPROVAL": ("warn", "held for approval: nothing was sent; a person approves or rejects the preview"),
    "SUPERSEDED": ("error", "superseded: another file took the month over, nothing of this one is rated"),
    "REJECTED": ("error", "rejected: nothing was imported; fix the file and upload it again"),
    "FAILED_PROCESSED": ("error", "CloudBlue failed to rate the session"),
    "NOT_RATED": ("error", "the session was not seen rated: check it in CloudBlue"),
}

#: What ``duplicate_of`` means for each status that sets it.
_OTHER_FILE_LABELS = {
    "DUPLICATE": "Same bytes already imported from",
    "HELD": "Month already imported from",
    "SUPERSEDED": "Superseded by",
}

# The chart's geometry, in CSS pixels: a label column, the bars' span, room for the amount beside them.
CHART_LABEL_WIDTH = 230
CHART_SPAN = 420
CHART_TEXT_WIDTH = 190
CHART_ROW_HEIGHT = 28
CHART_BAR_HEIGHT = 18
CHART_PADDING = 8
#: Room for a bar's label, in columns: a wide (CJK) character takes two.
_LABEL_COLUMNS = 30
_PIXEL = Decimal("0.01")
_EXACT = Context(prec=200)


@dataclass(frozen=True)
class AmountRow:
    key: str
    name: str
    unnamed: bool
    amount: str
    negative: bool


@dataclass(frozen=True)
class AmountTable:
    element_id: str
    title: str
    heading: str
    rows: list[AmountRow]
    total: str


@dataclass(frozen=True)
class Bar:
    key: str
    name: str
    label: str
    unnamed: bool
    amount: str
    negative: bool
    x: str
    width: str
    y: str
    text_x: str
    baseline: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    zero_x: str
    bar_height: int
    bars: list[Bar]


#: How bad each kind of banner is: the page shows the worst of its status and what else it found.
_SEVERITY = {"ok": 0, "info": 1, "pending": 2, "warn": 3, "error": 4}


def banner(report: ImportReport) -> tuple[str, str]:
    """The report's colour kind and its words: the worst of its status (the rating's outcome), its
    reconciliation and anything else a person must look at, so a month that does not balance is never green."""
    kind, meaning = STATUS_KINDS.get(report.status, ("error", ""))
    findings: list[tuple[str, str]] = []
    reconciliation = report.reconciliation
    if reconciliation is not None and not reconciliation.balanced and report.status != "DRY_RUN":
        findings.append(("error", f"but it does not reconcile with Soracom's bill: {reconciliation.note}"))
    variance, approval = report.variance, report.approval
    if variance is not None and variance.unusual and report.status not in ("AWAITING_APPROVAL", "REJECTED"):
        approved = approval is not None and approval.decision == "approved"
        findings.append(
            (
                "info" if approved else "warn",
                f"the month is unusual against {variance.compared_with} ({len(variance.flags)} change(s) past the "
                "review thresholds)",
            )
        )
    if approval is not None and approval.decision == "approved":
        findings.append(("ok", f"approved by {approval.by}"))
    for found_kind, words in findings:
        if _SEVERITY[found_kind] > _SEVERITY[kind]:
            kind = found_kind
        meaning = f"{meaning}; {words}"
    return kind, meaning


def render_report_html(report: ImportReport) -> str:
    """The report as a self-contained HTML page (UTF-8, inline CSS and SVG, no script)."""
    kind, meaning = banner(report)
    local_file = report.object.bucket == "-"  # a dry run of a file on a person's machine
    return page_template("report.html.jinja").render(
        report=report,
        status_kind=kind,
        status_meaning=meaning,
        file_location=report.object.key if local_file else report.object.uri,
        local_file=local_file,
        other_file_label=_OTHER_FILE_LABELS.get(report.status, "Other file"),
        currency=report.currency or "",
        # The bill's account: "Global coverage", or "operator OP0000000002, Global coverage" for a listed operator's
        coverage=BillAccount(report.coverage, report.operator).label if report.coverage else "",
        created=_moment(report.created_at),
        updated=_moment(report.updated_at),
        tables=[
            _table("totals-per-customer", "Totals per customer", "Customer", report.per_customer, NO_CUSTOMER),
            _table("totals-per-subscription", "Totals per subscription", "Subscription", report.per_subscription),
            _table("totals-per-item", "Totals per bill item", "Bill item", report.per_item),
        ],
        chart=_chart(report.per_customer),
        trends=trends(report.variance) if report.variance is not None else [],
        has_totals=bool(report.per_customer or report.per_subscription or report.per_item),
    )


@cache
def page_template(name: str) -> jinja2.Template:
    """A page of ``soracharge/templates`` (autoescaped: names and values come from CSV files)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("soracharge", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["decimal"] = decimal_text
    return environment.get_template(name)


def decimal_text(value: Decimal) -> str:
    """An amount exactly as the report holds it, in plain notation (``0.0000001``, never ``1E-7``)."""
    return format(value, "f")


def exact_sum(values: Sequence[Decimal]) -> Decimal:
    with localcontext(_EXACT):
        return sum(values, Decimal(0))


def _table(element_id: str, title: str, heading: str, amounts: list[Amount], unnamed: str = NO_NAME) -> AmountTable:
    rows = [
        AmountRow(
            key=entry.name,
            name=entry.name or unnamed,
            unnamed=not entry.name,
            amount=decimal_text(entry.amount),
            negative=entry.amount < 0,
        )
        for entry in amounts
    ]
    total = decimal_text(exact_sum([entry.amount for entry in amounts]))
    return AmountTable(element_id=element_id, title=title, heading=heading, rows=rows, total=total)


def _chart(amounts: list[Amount]) -> Chart:
    """Horizontal bars from a common zero line: positive amounts to its right, negative ones to its left.

    Every bar's length is ``|amount|`` times one scale, so lengths compare exactly like the amounts.
    """
    with localcontext(_EXACT):
        most_positive = max((entry.amount for entry in amounts if entry.amount > 0), default=Decimal(0))
        most_negative = max((-entry.amount for entry in amounts if entry.amount < 0), default=Decimal(0))
        extent = most_positive + most_negative
        scale = Decimal(CHART_SPAN) / extent if extent else Decimal(0)
        zero_x = Decimal(CHART_LABEL_WIDTH) + most_negative * scale
        bars = []
        for index, entry in enumerate(amounts):
            width = (abs(entry.amount) * scale).quantize(_PIXEL)
            negative = entry.amount < 0
            top = CHART_PADDING + index * CHART_ROW_HEIGHT
            name = entry.name or NO_CUSTOMER
            label = _fit(name, _LABEL_COLUMNS)
            # The amount goes right of the bar's end, or right of the zero line for a bar drawn leftwards.
            text_x = zero_x + 6 if negative else zero_x + width + 6
            bars.append(
                Bar(
                    key=entry.name,
                    name=name,
                    label=label,
                    unnamed=not entry.name,
                    amount=decimal_text(entry.amount),
                    negative=negative,
                    x=decimal_text((zero_x - width if negative else zero_x).quantize(_PIXEL)),
                    width=decimal_text(width),
                    y=str(top + (CHART_ROW_HEIGHT - CHART_BAR_HEIGHT) // 2),
                    text_x=decimal_text(text_x.quantize(_PIXEL)),
                    baseline=str(top + CHART_ROW_HEIGHT // 2 + 5),
                )
            )
        return Chart(
            width=CHART_LABEL_WIDTH + CHART_SPAN + CHART_TEXT_WIDTH,
            height=2 * CHART_PADDING + CHART_ROW_HEIGHT * len(amounts),
            zero_x=decimal_text(zero_x.quantize(_PIXEL)),
            bar_height=CHART_BAR_HEIGHT,
            bars=bars,
        )


@dataclass(frozen=True)
class SparkBar:
    css: str
    x: int
    y: str
    width: int
    height: str
    title: str


@dataclass(frozen=True)
class Trend:
    """One customer's row of the month-over-month table: its amounts and a small column chart of them."""

    key: str
    name: str
    unnamed: bool
    flagged: bool
    amounts: list[str | None]
    bars: list[SparkBar]
    width: int
    height: int


SPARK_COLUMN = 14
SPARK_HEIGHT = 24


def trends(variance: Variance) -> list[Trend]:
    """Each customer's amounts over the variance's months, with columns scaled to its own largest amount."""
    flagged = {flag.name for flag in variance.flags if flag.kind != "new-item"}
    last = len(variance.months) - 1
    trends = []
    for series in variance.per_customer:
        with localcontext(_EXACT):
            top = max((abs(a) for a in series.amounts if a is not None), default=Decimal(0))
            bars = []
            for index, amount in enumerate(series.amounts):
                if amount is None or top == 0:
                    continue
                height = (abs(amount) / top * (SPARK_HEIGHT - 2)).quantize(_PIXEL)
                css = "negative" if amount < 0 else "now" if index == last else "past"
                bars.append(
                    SparkBar(
                        css=css,
                        x=index * SPARK_COLUMN,
                        y=decimal_text(Decimal(SPARK_HEIGHT) - height),
                        width=SPARK_COLUMN - 3,
                        height=decimal_text(height),
                        title=f"{variance.months[index]}: {decimal_text(amount)}",
                    )
                )
        trends.append(
            Trend(
                key=series.name,
                name=series.name or NO_CUSTOMER,
                unnamed=not series.name,
                flagged=series.name in flagged,
                amounts=[None if a is None else decimal_text(a) for a in series.amounts],
                bars=bars,
                width=SPARK_COLUMN * len(variance.months),
                height=SPARK_HEIGHT,
            )
        )
    return trends


def _fit(text: str, columns: int) -> str:
    """``text`` cut to ``columns`` (wide characters count two), with ``…`` when it was cut."""
    widths = [2 if unicodedata.east_asian_width(character) in ("W", "F") else 1 for character in text]
    if sum(widths) <= columns:
        return text
    used, kept = 1, []  # the ellipsis takes one
    for character, width in zip(text, widths, strict=True):
        if used + width > columns:
            break
        used += width
        kept.append(character)
    return "".join(kept) + "…"


def _moment(value: datetime) -> tuple[str, str]:
    """``(machine-readable ISO 8601, what a person reads)``, in UTC when the time has a zone."""
    if value.tzinfo is None:
        return value.isoformat(), value.strftime("%Y-%m-%d %H:%M:%S")
    utc = value.astimezone(UTC)
    return utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC")
