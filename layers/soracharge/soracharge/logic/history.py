"""The history page: every month and coverage imported, on one self-contained HTML page.

Written beside the reports (``reports/history.html`` in the data bucket, each time a report is
published; ``<out>/history.html`` by the local CLI) from the reports themselves: one row per file
(bill, CSV sum, imported, balanced, status, approval, a link to its report) and, per coverage, each
customer's amount over the months imported (the ``CLOSED`` and ``PROCESSED`` files of each month).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from soracharge.logic import variance
from soracharge.logic.report_html import Trend, banner, decimal_text, page_template, trends
from soracharge.models.accounts import BillAccount
from soracharge.models.imports import ImportReport, Variance
from soracharge.models.mapping import VarianceSettings

#: Where the page goes in the data bucket (its links are relative to it).
HISTORY_KEY = "reports/history.html"


@dataclass(frozen=True)
class HistoryRow:
    month: str
    coverage: str
    file: str
    link: str
    status: str
    kind: str
    currency: str
    bill: str | None
    csv_sum: str | None
    imported: str | None
    balanced: bool | None
    approval: str


def render_history_html(reports: Iterable[tuple[ImportReport, str]]) -> str:
    """The page for ``(report, link to its HTML page)`` pairs: newest month first, then the charts."""
    listed = sorted(
        reports,
        key=lambda pair: (str(pair[0].month or ""), pair[0].operator or "", pair[0].coverage or "", pair[1]),
        reverse=True,
    )
    rows = [_row(report, link) for report, link in listed]
    charts: list[tuple[str, str, Variance, list[Trend]]] = []
    accounts = {BillAccount(report.coverage or "jp", report.operator) for report, _ in listed}
    for account in sorted(accounts, key=lambda a: (a.operator or "", a.coverage)):
        months = variance.history(
            [r for r, _ in listed], account.coverage, "999999", shown=None, operator=account.operator
        )
        if not months:
            continue
        last = months[-1]
        over = variance.compare(last.month, last.per_customer, last.per_item, months[:-1], VarianceSettings(), "")
        currency = next(
            (r.currency or "" for r, _ in listed if BillAccount(r.coverage or "jp", r.operator) == account), ""
        )
        charts.append((account.label, currency, over, _trends(over)))
    return page_template("history.html.jinja").render(rows=rows, charts=charts)


def _trends(over: Variance) -> list[Trend]:
    return trends(over.model_copy(update={"flags": []}))  # the page shows amounts, not the review's flags


def _row(report: ImportReport, link: str) -> HistoryRow:
    rec = report.reconciliation
    approval = report.approval
    said = "-"
    if approval is not None:
        said = {
            "pending": "waiting",
            "approved": f"approved by {approval.by}",
            "rejected": f"rejected by {approval.by}",
        }[approval.decision]
    return HistoryRow(
        month=str(report.month or "?"),
        coverage=BillAccount(report.coverage, report.operator).label if report.coverage else "",
        file=report.object.key,
        link=link,
        status=report.status,
        kind=banner(report)[0],
        currency=report.currency or "",
        bill=decimal_text(rec.bill_amount) if rec is not None and rec.bill_amount is not None else None,
        csv_sum=decimal_text(rec.csv_sum) if rec is not None else None,
        imported=decimal_text(rec.imported_sum) if rec is not None and report.status != "AWAITING_APPROVAL" else None,
        balanced=rec.balanced if rec is not None and report.status not in ("AWAITING_APPROVAL", "REJECTED") else None,
        approval=said,
    )
