"""The import report as an HTML page: what a person reading it sees, for every status.

The page is parsed (stdlib ``html.parser``) and read as a person reads it: the text of a table's
cells, the bars of the chart, the problems' lines. tests/browser opens the same pages in Chromium.
"""

from __future__ import annotations

import csv as csv_module
import io
import json
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from soracharge.errors import InvalidInputError
from soracharge.logic.imports import dry_run_report
from soracharge.logic.reconciliation import BillFacts, reconcile
from soracharge.logic.report_html import CHART_SPAN, NO_CUSTOMER, render_report_html
from soracharge.models.imports import ImportReport, ReportStatus
from soracharge.models.mapping import parse_mapping
from soracharge_local.cli import app
from soracharge_local.reports import default_html_path, load_report
from soracharge_local.simulators import SoracomSimulator
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
MONTH = "202610"
CUSTOMERS = {"": "4352.18", "Acme Logistics": "1118.28", "Northwind Traders": "1153.24", "東京ガス": "1647.58"}
CUSTOMERS_TOTAL = "8271.28"
HOSTILE = '<script>alert("owned")</script>'


# -- reports a test starts from ----------------------------------------------------------------


def processed_report(**overrides: Any) -> ImportReport:
    """A PROCESSED export of 202610 as the import and the follow-session flow write it."""
    data: dict[str, Any] = {
        "status": "PROCESSED",
        "summary": "CloudBlue rated session 7: 28 charges",
        "month": MONTH,
        "object": {
            "bucket": "soracharge-data-123456789012",
            "key": f"exports/{MONTH}/fe_0123456789abcdef.csv",
            "versionId": "69436c52-c8b4-4cb2-b827-c42ed3a69843",
        },
        "source": "exports",
        "sha256": "67624bd73badfc35ba07f50fc07b1269ce951bb9cbb6d9f482ce0a55b7178b57",
        "currency": "JPY",
        "mapping": "s3://soracharge-data-123456789012/config/mapping.yaml",
        "importSessionId": 7,
        "abandonedSessions": [],
        "sessionStatus": "PROCESSED",
        "counts": {"rows": 508, "charges": 28, "packets": 1, "packetsSentThisRun": 1, "problems": 0},
        "reconciliation": {
            "billAmount": CUSTOMERS_TOTAL,
            "csvSum": CUSTOMERS_TOTAL,
            "importedSum": CUSTOMERS_TOTAL,
            "balanced": True,
            "note": "the CSV adds up to the bill",
        },
        "perCustomer": [{"name": name, "amount": amount} for name, amount in CUSTOMERS.items()],
        "perSubscription": [
            {"name": "6513270e-269e-4d37-b2a7-4de452e6b438", "amount": "1647.58"},
            {"name": "6b0d549b-6f03-475a-9600-a35a099950d8", "amount": "1153.24"},
            {"name": "8d116ece-1738-47d9-bd9c-172411e20b8f", "amount": "4352.18"},
            {"name": "9531985d-5d9d-49f8-9818-e811892f902b", "amount": "1118.28"},
        ],
        "perItem": [
            {"name": "SMS 送信料金", "amount": "555"},
            {"name": "サポート月額料金 (Business)", "amount": "3000"},
            {"name": "データ通信料金 (plan-D)", "amount": "2367.28"},
            {"name": 'ボリュームディスカウント "IoT スターター, 10%"', "amount": "-31"},
            {"name": "基本料金 (plan-D)", "amount": "2480.00"},
            {"name": "無料利用枠 (データ通信 500MB)", "amount": "-100"},
        ],
        "createdAt": "2026-11-02T09:00:00Z",
        "updatedAt": "2026-11-02T09:01:30Z",
    }
    data.update(overrides)
    return ImportReport.model_validate(data)


def rejected_report(**overrides: Any) -> ImportReport:
    """An uploaded file with three problems listed and 12 more counted."""
    data: dict[str, Any] = {
        "status": "REJECTED",
        "summary": f"15 problem(s) in s3://soracharge-data-123456789012/uploads/{MONTH}/bill.csv: nothing was imported",
        "month": MONTH,
        "object": {"bucket": "soracharge-data-123456789012", "key": f"uploads/{MONTH}/bill.csv", "versionId": "v1"},
        "source": "uploads",
        "currency": "JPY",
        "counts": {"rows": 508, "problems": 15, "unmappedRows": 1},
        "problems": [
            {"line": 3, "column": "amount", "value": "abc", "message": "amount 'abc' is not a plain decimal number"},
            {"line": 66, "column": "customer", "value": "Globex", "message": "no subscription for customer 'Globex'"},
            {"line": 412, "column": "date", "value": "", "message": "date is empty"},
        ],
        "problemsNotListed": 12,
        "createdAt": "2026-11-02T09:00:00Z",
        "updatedAt": "2026-11-02T09:00:00Z",
    }
    data.update(overrides)
    return ImportReport.model_validate(data)


#: The month against 202608 and 202609: one customer moved past the thresholds, one appeared.
VARIANCE: dict[str, Any] = {
    "months": ["202608", "202609", "202610"],
    "comparedWith": "202609",
    "change": "0.5",
    "floor": "1000",
    "flags": [
        {
            "kind": "moved",
            "name": "Acme",
            "previous": "1000.00",
            "amount": "5000.00",
            "message": 'customer "Acme" moved from 1,000.00 JPY in 202609 to 5,000.00 JPY (+400%)',
        },
        {"kind": "appeared", "name": "Initech", "amount": "12.00", "message": 'customer "Initech" appeared'},
    ],
    "perCustomer": [
        {"name": "Acme", "amounts": ["900.00", "1000.00", "5000.00"]},
        {"name": "Globex", "amounts": ["300", None, "310"]},
        {"name": "Initech", "amounts": [None, None, "12.00"]},
    ],
}


def report_for(status: str) -> ImportReport:
    """A report as the import leaves it in ``status`` (what each status carries, and nothing more)."""
    if status == "REJECTED":
        return rejected_report()
    other = "soracharge-data-123456789012/exports/202610/fe_first.csv#v0"
    without_import: dict[str, Any] = {
        "importSessionId": None,
        "sessionStatus": None,
        "reconciliation": None,
        "perCustomer": [],
        "perSubscription": [],
        "perItem": [],
        "counts": {},
    }
    variants: dict[str, dict[str, Any]] = {
        "PROCESSED": {},
        "CLOSED": {"sessionStatus": "NEW", "summary": "28 charges (8271.28 JPY) imported in session 7, closed"},
        "DRY_RUN": {"summary": "dry run: 28 charges (8271.28 JPY) would be imported", "importSessionId": None},
        "FAILED_PROCESSED": {
            "sessionStatus": "FAILED_PROCESSED",
            "summary": "CloudBlue failed to rate session 7: subscription not found",
            "errorDesc": "subscription 8d116ece-1738-47d9-bd9c-172411e20b8f not found",
        },
        "NOT_RATED": {"sessionStatus": "PROCESSING", "summary": "CloudBlue had not rated session 7 after 240 polls"},
        "DUPLICATE": {**without_import, "summary": "the same bytes were already imported", "duplicateOf": other},
        "HELD": {**without_import, "summary": "a different file for 202610 was already imported", "duplicateOf": other},
        "SUPERSEDED": {**without_import, "summary": "superseded", "duplicateOf": other},
        "AWAITING_APPROVAL": {
            "importSessionId": None,
            "sessionStatus": None,
            "reason": "review",
            "summary": "held for approval: the month is unusual against 202609",
            "variance": VARIANCE,
            "approval": {"askedBecause": "unusual", "plan": "ab" * 32, "decision": "pending"},
        },
    }
    return processed_report(status=status, **variants[status])


# -- reading the page as a person does -----------------------------------------------------------


_BLOCKS = frozenset({"td", "th", "tr", "li", "p", "div", "section", "table", "thead", "tbody", "tfoot", "h1", "h2"})


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text inside, whitespace collapsed (what a reader sees, roughly)."""
        parts = [
            child if isinstance(child, str) else f" {child.text} " if child.tag in _BLOCKS else child.text
            for child in self.children
        ]
        return " ".join("".join(parts).split())

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> typing.Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def all(self, tag: str, cls: str | None = None) -> list[Element]:
        return [e for e in self.iter() if e.tag == tag and (cls is None or cls in e.classes)]

    def by_id(self, element_id: str) -> Element:
        found = [e for e in self.iter() if e.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def has_id(self, element_id: str) -> bool:
        return any(e.attrs.get("id") == element_id for e in self.iter())


class _TreeBuilder(HTMLParser):
    VOID = frozenset({"meta", "br", "link", "img", "input", "hr", "col", "base", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements: " + ", ".join(e.tag for e in builder.stack[1:])
    return builder.root


def table_rows(page: Element, table_id: str) -> dict[str, str]:
    """A totals table as ``{name as shown: amount as shown}``, the total row under ``"Total"``."""
    rows = {}
    for row in page.by_id(table_id).all("tr"):
        cells = [cell for cell in row.children if isinstance(cell, Element) and cell.tag in ("td", "th")]
        if row.attrs.get("data-name") is not None or "total" in row.classes:
            rows[cells[0].text] = cells[1].text
    return rows


def render(report: ImportReport) -> Element:
    return parse(render_report_html(report))


# -- what the page shows --------------------------------------------------------------------------


def test_each_customer_total_appears_exactly_with_its_currency_and_their_sum_in_a_total_row():
    page = render(processed_report())
    assert table_rows(page, "totals-per-customer") == {
        NO_CUSTOMER: "4352.18 JPY",
        "Acme Logistics": "1118.28 JPY",
        "Northwind Traders": "1153.24 JPY",
        "東京ガス": "1647.58 JPY",
        "Total": "8271.28 JPY",
    }
    assert table_rows(page, "totals-per-subscription")["Total"] == "8271.28 JPY"
    items = table_rows(page, "totals-per-item")
    assert items["基本料金 (plan-D)"] == "2480.00 JPY"  # the decimal's own text: trailing zeros kept
    assert items['ボリュームディスカウント "IoT スターター, 10%"'] == "-31 JPY"
    assert items["Total"] == "8271.28 JPY"
    # Amounts are right-aligned: the amount cells carry the class the stylesheet aligns right.
    assert all("amount" in cell.classes for cell in page.by_id("totals-per-customer").all("td")[1::2])


def test_amounts_and_totals_are_exact_decimals_never_floats():
    tiny = [{"name": "a", "amount": "0.1"}, {"name": "b", "amount": "0.2"}, {"name": "c", "amount": "1E-7"}]
    huge = [{"name": "x", "amount": "12345678901234567890.12"}, {"name": "y", "amount": "0.01"}]
    page = render(processed_report(perItem=tiny, perSubscription=huge))
    items = table_rows(page, "totals-per-item")
    assert items == {"a": "0.1 JPY", "b": "0.2 JPY", "c": "0.0000001 JPY", "Total": "0.3000001 JPY"}
    assert table_rows(page, "totals-per-subscription")["Total"] == "12345678901234567890.13 JPY"


def test_the_page_leads_with_month_status_and_summary_then_file_session_counts_and_times():
    page = render(processed_report(abandonedSessions=[5, 6], warnings=["session 5 was given up and left open"]))
    assert page.by_id("month").text == MONTH
    status = page.by_id("status")
    assert (status.text, status.attrs["data-status"]) == ("PROCESSED", "PROCESSED")
    assert "status-ok" in status.classes
    assert page.by_id("summary").text == "CloudBlue rated session 7: 28 charges"
    assert (
        page.by_id("file-location").text == "s3://soracharge-data-123456789012/exports/202610/fe_0123456789abcdef.csv"
    )
    assert page.by_id("file-version").text == "69436c52-c8b4-4cb2-b827-c42ed3a69843"
    assert page.by_id("import-session").text == "7"
    assert page.by_id("session-status").text == "PROCESSED"
    assert "5, 6" in page.by_id("abandoned-sessions").text
    assert page.by_id("warnings").text == "session 5 was given up and left open"
    counts = {cell.attrs["data-count"]: cell.text for cell in page.all("td") if "data-count" in cell.attrs}
    assert counts == {
        "rows": "508",
        "charges": "28",
        "packets": "1",
        "packets-sent-this-run": "1",
        "packets-already-accepted": "0",
        "problems": "0",
    }
    assert page.by_id("created-at").text == "2026-11-02 09:00:00 UTC"
    assert page.by_id("updated-at").attrs["datetime"] == "2026-11-02T09:01:30+00:00"


def test_reconciliation_shows_bill_csv_and_imported_sums_and_whether_they_balance():
    page = render(processed_report())
    assert page.by_id("reconciliation-bill").text == "Soracom bill amount 8271.28 JPY"
    assert page.by_id("reconciliation-csv").text == "CSV sum 8271.28 JPY"
    assert page.by_id("reconciliation-imported").text == "Imported to CloudBlue 8271.28 JPY"
    balanced = page.by_id("reconciliation-balanced")
    assert (balanced.attrs["data-balanced"], balanced.text) == ("true", "Balanced yes the CSV adds up to the bill")

    off = {
        "billAmount": "8300",
        "csvSum": CUSTOMERS_TOTAL,
        "importedSum": CUSTOMERS_TOTAL,
        "balanced": False,
        "note": "the CSV adds up to 8271.28, the bill says 8300: check the export",
    }
    page = render(processed_report(reconciliation=off))
    unbalanced = page.by_id("reconciliation-balanced")
    assert unbalanced.attrs["data-balanced"] == "false"
    assert unbalanced.text == "Balanced NO the CSV adds up to 8271.28, the bill says 8300: check the export"
    assert "balanced-no" in unbalanced.all("td")[0].classes

    uploaded = {**off, "billAmount": None, "balanced": True, "note": "uploaded file: no Soracom bill amount"}
    assert render(processed_report(reconciliation=uploaded)).by_id("reconciliation-bill").text == (
        "Soracom bill amount —"
    )


def test_reconciliation_shows_each_step_from_the_csv_sum_to_the_bill_with_its_figure():
    # Given a report whose bill is the CSV's sum rounded up, less a coupon
    steps = reconcile(
        csv_sum=Decimal("8271.2834567"),
        imported=Decimal("8271.2834567"),
        currency="JPY",
        bill=BillFacts(amount=Decimal("7772"), applied_coupon_amount=Decimal("500")),
    )
    page = render(processed_report(reconciliation=steps.model_dump(mode="json", by_alias=True)))

    # Then each step is a row with its change and where it lands, then the bill, balanced
    shown = [
        (row.attrs["data-kind"], row.attrs["data-change"], row.text) for row in page.all("tr", "reconciliation-step")
    ]
    assert shown == [
        ("rounding", "0.7165433", "rounded up to 1 JPY 8272 JPY +0.7165433"),
        ("coupon", "-500", "less the coupon applied 7772 JPY -500"),
    ]
    assert page.by_id("reconciliation-expected").text == "The bill these steps make 7772 JPY"
    assert page.by_id("reconciliation-bill").text == "Soracom bill amount 7772 JPY"
    assert page.by_id("reconciliation-balanced").attrs["data-balanced"] == "true"
    assert not page.has_id("reconciliation-difference")

    # And a bill the steps do not make shows the difference
    short = reconcile(
        csv_sum=Decimal("7000"), imported=Decimal("7000"), currency="JPY", bill=BillFacts(amount=Decimal("7772"))
    )
    page = render(processed_report(reconciliation=short.model_dump(mode="json", by_alias=True)))
    assert page.by_id("reconciliation-difference").text == "Difference (bill less steps) 772 JPY"
    assert page.by_id("reconciliation-balanced").text.startswith("Balanced NO short by 772 JPY")


def test_the_chart_has_one_bar_per_customer_with_its_amount_and_length_proportional_to_it():
    page = render(processed_report())
    bars = page.by_id("chart-per-customer").all("rect", "bar")
    assert [(bar.attrs["data-name"], bar.attrs["data-amount"]) for bar in bars] == list(CUSTOMERS.items())
    widths = {bar.attrs["data-name"]: Decimal(bar.attrs["width"]) for bar in bars}
    assert widths[""] == CHART_SPAN  # the largest amount spans the chart
    for name, amount in CUSTOMERS.items():
        assert abs(widths[name] - Decimal(amount) / Decimal("4352.18") * CHART_SPAN) <= Decimal("0.01")
    written = [text.text for text in page.by_id("chart-per-customer").all("text", "bar-amount")]
    assert written == [f"{amount} JPY" for amount in CUSTOMERS.values()]
    labels = [text.text for text in page.by_id("chart-per-customer").all("text", "bar-label")]
    assert labels == [NO_CUSTOMER, "Acme Logistics", "Northwind Traders", "東京ガス"]


def test_a_negative_amount_is_a_distinct_bar_drawn_left_of_the_zero_line():
    customers = [{"name": "Acme", "amount": "300"}, {"name": "Refunded Co", "amount": "-100.50"}]
    page = render(processed_report(perCustomer=customers))
    chart = page.by_id("chart-per-customer")
    zero = Decimal(chart.all("line", "zero")[0].attrs["x1"])
    positive, negative = chart.all("rect", "bar")
    assert "positive" in positive.classes
    assert "negative" in negative.classes
    assert Decimal(positive.attrs["x"]) == zero
    assert Decimal(negative.attrs["x"]) + Decimal(negative.attrs["width"]) == zero
    assert abs(Decimal(negative.attrs["width"]) / Decimal(positive.attrs["width"]) - Decimal("100.50") / 300) < Decimal(
        "0.0001"
    )
    assert [text.text for text in chart.all("text", "bar-amount")] == ["300 JPY", "-100.50 JPY"]
    assert table_rows(page, "totals-per-customer") == {
        "Acme": "300 JPY",
        "Refunded Co": "-100.50 JPY",
        "Total": "199.50 JPY",
    }
    refunded = page.by_id("totals-per-customer").all("td", "negative")
    assert [cell.text for cell in refunded] == ["-100.50 JPY"]


def test_rows_without_a_customer_tag_are_named_as_the_console_names_them():
    page = render(processed_report(perCustomer=[{"name": "", "amount": "12"}]))
    (cell,) = [td for td in page.by_id("totals-per-customer").all("td") if "name" in td.classes]
    assert cell.text == "(no customer tag)"
    assert "unnamed" in cell.classes
    assert page.by_id("chart-per-customer").all("text", "bar-label")[0].text == "(no customer tag)"


def test_a_rejected_report_lists_every_problem_with_its_line_column_value_and_message_and_no_totals():
    page = render(rejected_report())
    assert page.by_id("status").text == "REJECTED"
    assert "status-error" in page.by_id("status").classes
    rows = page.by_id("problems").all("tr", "problem")
    seen = [[cell.text for cell in row.all("td")] for row in rows]
    assert seen == [
        ["3", "amount", "abc", "amount 'abc' is not a plain decimal number"],
        ["66", "customer", "Globex", "no subscription for customer 'Globex'"],
        ["412", "date", "(empty)", "date is empty"],
    ]
    assert [row.attrs["data-line"] for row in rows] == ["3", "66", "412"]
    assert page.by_id("problems-not-listed").text == "12 more problems not listed."
    assert "Problems (15)" in page.text
    counts = {cell.attrs["data-count"]: cell.text for cell in page.all("td") if "data-count" in cell.attrs}
    assert (counts["rows"], counts["problems"], counts["unmapped-rows"]) == ("508", "15", "1")
    for absent in ("totals-per-customer", "chart-per-customer", "reconciliation"):
        assert not page.has_id(absent)
    assert page.by_id("no-totals").text.startswith("No totals: the file was rejected")


def test_a_problem_about_the_whole_file_says_file_instead_of_a_line():
    problem = {"column": "currency", "message": "no currency for this file"}
    page = render(rejected_report(problems=[problem], problemsNotListed=0, counts={}, month=None))
    assert not page.has_id("month")  # a file outside exports/<yyyyMM>/ or uploads/<yyyyMM>/ names no month
    (row,) = page.by_id("problems").all("tr", "problem")
    assert [cell.text for cell in row.all("td")] == ["file", "currency", "—", "no currency for this file"]
    assert not page.has_id("problems-not-listed")
    assert "Problems (1)" in page.text


def test_names_and_values_from_the_csv_are_shown_as_text_never_run_as_markup():
    report = processed_report(
        summary=f"summary {HOSTILE}",
        perCustomer=[{"name": HOSTILE, "amount": "10"}, {"name": 'A "quoted" & <b>bold</b> name', "amount": "5"}],
        warnings=[f"warning {HOSTILE}"],
        problems=[{"line": 9, "column": "customer", "value": HOSTILE, "message": f"unmapped {HOSTILE}"}],
    )
    source = render_report_html(report)
    page = parse(source)
    assert "<script" not in source.lower()
    assert "<b>" not in source
    assert page.all("script") == []
    assert page.all("b") == []
    assert table_rows(page, "totals-per-customer")[HOSTILE] == "10 JPY"
    assert table_rows(page, "totals-per-customer")['A "quoted" & <b>bold</b> name'] == "5 JPY"
    assert page.by_id("chart-per-customer").all("rect", "bar")[0].attrs["data-name"] == HOSTILE
    assert page.by_id("summary").text == f"summary {HOSTILE}"
    assert [cell.text for cell in page.by_id("problems").all("td")][2:] == [HOSTILE, f"unmapped {HOSTILE}"]
    assert page.by_id("warnings").text == f"warning {HOSTILE}"


@pytest.mark.parametrize("status", typing.get_args(ReportStatus))
def test_every_status_renders_with_its_colour_and_what_it_carries(status: str):
    report = report_for(status)
    page = render(report)
    badge = page.by_id("status")
    assert (badge.text, badge.attrs["data-status"]) == (status, status)
    expected_kind = {
        "PROCESSED": "ok",
        "CLOSED": "pending",
        "DRY_RUN": "info",
        "DUPLICATE": "warn",
        "AWAITING_APPROVAL": "warn",
    }.get(status, "error")
    assert f"status-{expected_kind}" in badge.classes
    assert page.by_id("summary").text == report.summary
    if report.duplicate_of:
        assert report.duplicate_of in page.by_id("duplicate-of").text
    if report.error_desc:
        assert page.by_id("error-desc").text == report.error_desc
    if report.per_customer:
        assert table_rows(page, "totals-per-customer")["Total"] == f"{CUSTOMERS_TOTAL} JPY"
        assert len(page.by_id("chart-per-customer").all("rect", "bar")) == len(CUSTOMERS)
    else:
        assert page.by_id("no-totals").text.endswith("nothing was imported from this file.")
        assert not page.has_id("chart-per-customer")


def test_the_page_is_self_contained_utf8_with_no_script_and_no_external_resource():
    source = render_report_html(processed_report())
    page = parse(source)
    assert source.startswith("<!DOCTYPE html>")
    assert page.all("meta")[0].attrs == {"charset": "utf-8"}
    assert [e.tag for e in page.iter() if e.tag in ("script", "link", "img", "iframe", "object")] == []
    assert [e.tag for e in page.iter() if {"src", "href"} & e.attrs.keys()] == []
    addresses = source.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
    assert "http://" not in addresses
    assert "https://" not in addresses
    assert source.count("url(") == source.count("url(#negative-hatch)") == 1  # the SVG's own pattern


def test_a_dry_run_of_the_simulators_csv_renders_the_totals_the_plan_computed():
    mapping = parse_mapping((REPO / "examples" / "mapping.example.yaml").read_text(), "example")
    today = datetime(2026, 11, 22, tzinfo=UTC).date()
    csv = SoracomSimulator(auth_key_id="k", auth_key="s", today=today).csv_bytes(MONTH)
    plan, report = dry_run_report(io.BytesIO(csv), month=MONTH, currency="JPY", mapping=mapping, source="bill.csv")
    page = render(report)
    assert page.by_id("status").text == "DRY_RUN"
    shown = table_rows(page, "totals-per-customer")
    assert shown.pop("Total") == f"{plan.charges_sum} JPY"
    assert shown == {(name or NO_CUSTOMER): f"{format(amount, 'f')} JPY" for name, amount in plan.per_customer.items()}
    rows = list(csv_module.DictReader(io.StringIO(csv.decode("utf-8-sig"), newline="")))
    acme_devices = {device for device, name in mapping.customer.devices.items() if name == "Acme Logistics"}

    def acme_owns(row: dict[str, str]) -> bool:
        device = row["loraDeviceId"] or row["soraCamDeviceId"]
        return row["customer"] == "Acme Logistics" or (not row["customer"] and device in acme_devices)

    acme_own = sum((Decimal(row["amount"]) for row in rows if acme_owns(row)), Decimal(0))
    assert acme_devices, "the example mapping gives a device to Acme Logistics"
    # the shared costs: one table per cost, its shares adding up to it
    tables = [table for table in page.all("table") if "shared-cost" in table.classes]
    assert [table.attrs["data-items"] for table in tables] == ["freeTierDataCharge-500MB", "vpgBasicCharge-typeE"]
    acme_shares = Decimal(0)
    for table in tables:
        shares, total = [], None
        for row in table.all("tr"):
            cells = [cell for cell in row.children if isinstance(cell, Element) and cell.tag == "td"]
            if row.attrs.get("data-name") is not None:
                shares.append(Decimal(cells[2].attrs["data-amount"]))
                if row.attrs["data-name"] == "Acme Logistics":
                    acme_shares += shares[-1]
            elif "total" in row.classes:
                total = Decimal(cells[1].attrs["data-amount"])
        assert len(shares) == 3
        assert sum(shares) == total != 0
    # what Acme is charged: its own rows (its devices' included) and its shares
    assert shown["Acme Logistics"] == f"{acme_own + acme_shares} JPY"
    assert page.by_id("file-location").text == "bill.csv"
    assert page.by_id("reconciliation-imported").text == f"Would be imported {plan.charges_sum} JPY"


# -- the report command's input ---------------------------------------------------------------


def test_load_report_reads_what_the_cli_saves_and_names_the_file_and_the_fault(tmp_path: Path):
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(processed_report().to_event()))
    assert load_report(saved) == processed_report()
    assert default_html_path(saved) == tmp_path / "report.html"
    assert default_html_path(tmp_path / "v123.json") == tmp_path / "v123.html"

    cases = {
        "missing.json": (None, "missing.json does not exist"),
        "broken.json": ('{"status": ', "broken.json is not valid JSON: Expecting value at line 1, column 12"),
        "list.json": ("[]", "list.json is not an import report: it holds a JSON list"),
        "other.json": ('{"status": "DONE"}', "other.json is not a valid import report: status: Input should be"),
        "latin1.json": (b"\xff\xfe", "latin1.json is not UTF-8 text"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(InvalidInputError) as caught:
            load_report(path)
        assert str(path) in str(caught.value)
        assert message in str(caught.value)


def test_the_report_command_writes_the_page_beside_the_json_and_prints_the_summary(tmp_path: Path):
    # The month's latest report: run and import save each in a folder of their own (the older one is left alone)
    older = tmp_path / "out" / MONTH / "20261104T000000Z-run"
    folder = tmp_path / "out" / MONTH / "20261104T000000Z-2-import"
    for each in (older, folder):
        each.mkdir(parents=True)
    (older / "report.json").write_text(json.dumps(processed_report(summary="the run's").to_event()))
    (folder / "report.json").write_text(json.dumps(processed_report().to_event()))
    done = CliRunner().invoke(app, ["report", MONTH, "--out", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert not (older / "report.html").exists()
    page = folder / "report.html"
    assert f"HTML report written to {page}" in done.output
    assert "Import PROCESSED: CloudBlue rated session 7: 28 charges" in done.output
    assert table_rows(parse(page.read_text(encoding="utf-8")), "totals-per-customer")["Acme Logistics"] == (
        "1118.28 JPY"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2026-10"], "error: month must be yyyyMM"),
        ([MONTH], f"{MONTH} holds no report"),
        (["--report", "{tmp}/broken.json"], "broken.json is not valid JSON"),
        (["--report", "{tmp}/missing.json"], "missing.json does not exist"),
    ],
)
def test_the_report_command_refuses_bad_input_with_exit_code_2(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "broken.json").write_text("{")
    arguments = ["report", *(arg.replace("{tmp}", str(tmp_path)) for arg in args), "--out", str(tmp_path)]
    done = CliRunner().invoke(app, arguments)
    assert done.exit_code == 2
    assert message in done.output
    assert not list(tmp_path.glob("*.html"))


def test_a_processed_month_that_does_not_balance_is_not_green_and_says_why_at_the_top():
    # Given CloudBlue rated the month, but the CSV falls short of Soracom's bill by 798 JPY
    unbalanced = processed_report(
        reconciliation={
            "billAmount": "9069",
            "csvSum": CUSTOMERS_TOTAL,
            "importedSum": CUSTOMERS_TOTAL,
            "expectedBill": "8272",
            "difference": "797",
            "balanced": False,
            "note": "short by 797 JPY: the CSV may be incomplete",
        }
    )
    page = render_report_html(unbalanced)
    # Then the banner at the top is the error colour and names the imbalance, next to the rating's outcome
    banner = page[page.index('<div class="banner') : page.index("</div>", page.index('<div class="banner'))]
    assert 'class="banner status-error"' in banner
    assert (
        "CloudBlue rated the imported charges; but it does not reconcile with Soracom&#39;s bill: short by 797"
        in banner
    )
    # And a balanced one stays green
    assert 'class="banner status-ok"' in render_report_html(processed_report())


def test_a_month_held_for_approval_shows_why_the_decision_pending_and_each_customer_over_the_months():
    # Given the preview of a month held because a customer moved past the thresholds
    page = render(report_for("AWAITING_APPROVAL"))
    # Then the banner is the warning colour, the approval says it waits, and the plan approved is named
    assert "status-warn" in page.by_id("status-banner").classes
    assert page.by_id("approval-decision").attrs["data-decision"] == "pending"
    assert page.by_id("approval-plan").text == "ab" * 32
    # And the variance lists each flag, and shows each customer's amount per month with a column per month
    flags = [li.text for li in page.by_id("variance-flags").all("li")]
    assert flags[0].startswith('customer "Acme" moved from 1,000.00 JPY')
    rows = {row.attrs["data-customer"]: row for row in page.by_id("variance").all("tr", "variance-row")}
    assert set(rows) == {"Acme", "Globex", "Initech"}
    assert "flagged" in rows["Acme"].classes
    assert "flagged" not in rows["Globex"].classes
    assert [td.text for td in rows["Globex"].all("td", "amount")] == ["300", "—", "310"]
    # The chart draws a column for each month with an amount, the latest one apart, scaled to the customer's own
    acme = rows["Acme"].all("rect")
    assert [r.attrs["class"] for r in acme] == ["past", "past", "now"]
    assert acme[2].attrs["height"] == "22.00"
    assert len(rows["Globex"].all("rect")) == 2


def test_an_approved_unusual_month_says_who_approved_it_at_the_top():
    report = processed_report(
        variance=VARIANCE,
        approval={"askedBecause": "unusual", "plan": "ab" * 32, "decision": "approved", "by": "Hanako"},
    )
    page = render(report)
    banner = page.by_id("status-banner").text
    # Not plain green: unusual, but a person looked (info); the words say both
    assert "status-info" in page.by_id("status-banner").classes
    assert "unusual against 202609 (2 change(s)" in banner
    assert "approved by Hanako" in banner
    assert page.by_id("approval-by").text == "Hanako"


def test_an_unusual_month_imported_without_approval_is_not_green():
    # review.approval: off imports an unusual month at once; the page still says it at the top
    page = render(processed_report(variance=VARIANCE))
    assert "status-warn" in page.by_id("status-banner").classes
    assert "unusual against 202609" in page.by_id("status-banner").text


def test_a_preview_never_says_its_charges_were_imported():
    page = render(
        report_for("AWAITING_APPROVAL").model_copy(update={"reconciliation": processed_report().reconciliation})
    )
    assert page.by_id("reconciliation-imported").text.startswith("Sent once approved ")
