"""The HTML import report opened in real headless Chromium: what a person sees once the page is rendered.

Debian's Chromium (``make browser`` installs it) is driven through playwright's sync API; playwright's
own browser download is not used. One browser serves the whole module; each test opens its pages in
a fresh context and fails on any console error, script error, dialog or request beyond the page itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, sync_playwright
from soracharge.logic.report_html import NO_CUSTOMER, render_report_html
from soracharge.models.imports import ImportReport

from tests.unit.test_report_html import CUSTOMERS, HOSTILE, MONTH, processed_report, rejected_report

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and quiet: without the background-networking flags Chromium keeps calling home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SORACHARGE = str(Path(sys.executable).parent / "soracharge")
RED = "rgb(207, 34, 46)"
GREEN = "rgb(26, 127, 55)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM} and it is missing: run 'make browser' "
            "(as root it installs Debian's chromium with apt-get)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def opened(browser: Browser, path: Path) -> Iterator[Page]:
    """``path`` in a fresh page; after the block, nothing went wrong while it was open."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    trouble: list[str] = []
    requested: list[str] = []
    page.on("console", lambda message: trouble.append(f"console {message.type}: {message.text}"))
    page.on("pageerror", lambda error: trouble.append(f"script error: {error}"))
    page.on("requestfailed", lambda request: trouble.append(f"request failed: {request.url} ({request.failure})"))

    def dialog_opened(dialog: Dialog) -> None:  # alert() from a value that should have been text
        trouble.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", dialog_opened)
    page.on("request", lambda request: requested.append(request.url))
    try:
        response = page.goto(path.as_uri(), wait_until="load")
        assert response is not None
        assert response.ok
        yield page
    finally:
        context.close()
    assert trouble == []
    assert requested == [path.as_uri()], "the page must not load anything but itself"


#: In the page: the characters of an element's text that its font (the element's computed font, fallbacks
#: included) draws as the missing-glyph box, or as nothing. Each non-ASCII character is drawn alone on a canvas
#: with that font and compared, pixel for pixel, with U+10FFFD (a private-use code point no font has a glyph for,
#: so it is always drawn as the missing-glyph box) and with a space. Without a font for a script (no CJK font
#: installed: Japanese names are "tofu"), its characters come out identical to U+10FFFD.
UNDRAWN_CHARACTERS = r"""
(element) => {
    const style = getComputedStyle(element);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 64;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    const draw = (text) => {
        context.clearRect(0, 0, 64, 64);
        context.font = `${style.fontStyle} ${style.fontWeight} 40px ${style.fontFamily}`;
        context.textBaseline = "top";
        context.fillStyle = "black";
        context.fillText(text, 8, 8);
        return context.getImageData(0, 0, 64, 64).data.join(",");
    };
    const missing = draw("\u{10FFFD}");
    const blank = draw(" ");
    return Array.from(element.textContent.trim())
        .filter((character) => character.codePointAt(0) > 0x7f)
        .filter((character) => [missing, blank].includes(draw(character)));
}
"""


def undrawn_characters(locator: Locator) -> list[str]:
    """The characters of the element's text that are drawn as missing-glyph boxes (or not at all)."""
    return list(locator.evaluate(UNDRAWN_CHARACTERS))


def write_page(report: ImportReport, folder: Path, name: str) -> Path:
    path = folder / f"{name}.html"
    path.write_text(render_report_html(report), encoding="utf-8")
    return path


def texts(locator: Locator) -> list[str]:
    return [text.strip() for text in locator.all_inner_texts()]


def svg_texts(locator: Locator) -> list[str]:
    """SVG has no innerText: its text elements' content, as drawn."""
    return [(text or "").strip() for text in locator.all_text_contents()]


def style(locator: Locator, prop: str) -> str:
    return str(locator.evaluate(f"element => getComputedStyle(element).{prop}"))


def bar_widths(page: Page) -> dict[str, tuple[Decimal, float, float]]:
    """Each chart bar as ``{name: (amount, rendered width, rendered left edge)}``, in CSS pixels."""
    bars = {}
    for bar in page.locator("#chart-per-customer rect.bar").all():
        box = bar.bounding_box()
        assert box is not None, "a bar is not rendered"
        amount = Decimal(bar.get_attribute("data-amount") or "")
        bars[bar.get_attribute("data-name") or ""] = (amount, box["width"], box["x"])
    return bars


def assert_proportional(bars: dict[str, tuple[Decimal, float, float]]) -> None:
    """Every bar is visible and as long as its amount says, against the longest one, within 1.5 px."""
    amount_max, width_max, _ = max(bars.values(), key=lambda bar: abs(bar[0]))
    for name, (amount, width, _) in bars.items():
        assert width > 0, f"the bar of {name!r} has no width"
        expected = float(abs(amount) / abs(amount_max)) * width_max
        assert abs(width - expected) <= 1.5, f"{name!r}: {amount} is drawn {width:.2f} px long, expected {expected:.2f}"


def test_a_processed_report_shows_each_customer_total_exactly_right_aligned_with_their_sum(
    browser: Browser, tmp_path: Path
):
    with opened(browser, write_page(processed_report(), tmp_path, "processed")) as page:
        table = page.locator("#totals-per-customer")
        assert texts(table.locator("tbody td.name")) == [NO_CUSTOMER, "Acme Logistics", "Northwind Traders", "東京ガス"]
        assert texts(table.locator("tbody td.amount")) == [f"{amount} JPY" for amount in CUSTOMERS.values()]
        assert texts(table.locator("tfoot tr.total")) == ["Total\t8271.28 JPY"]
        assert style(table.locator("tbody td.amount").first, "textAlign") == "right"
        assert texts(page.locator("#totals-per-item tfoot td.amount")) == ["8271.28 JPY"]
        assert texts(page.locator("#totals-per-subscription tfoot td.amount")) == ["8271.28 JPY"]
        assert page.locator("#status").inner_text() == "PROCESSED"
        assert style(page.locator("#status"), "backgroundColor") == GREEN
        assert page.locator("#summary").inner_text() == "CloudBlue rated session 7: 28 charges"


def test_japanese_customer_names_are_drawn_as_text_not_as_missing_glyph_boxes(browser: Browser, tmp_path: Path):
    # Needs a CJK font (Debian: fonts-noto-cjk, which make browser installs): without one, Chromium draws
    # each Japanese character as an empty box, and the names a billing team reads are unreadable.
    with opened(browser, write_page(processed_report(), tmp_path, "japanese")) as page:
        # The check itself sees a missing glyph: a private-use character put in a cell is reported
        control = page.locator("#totals-per-customer tbody td.name").first
        control.evaluate(r"cell => { cell.textContent = 'A\u{10FFFD}\u{E000}' }")
        assert undrawn_characters(control) == ["\U0010fffd", "\ue000"]
        cell = page.locator("#totals-per-customer tbody td.name", has_text="東京ガス")
        assert cell.inner_text().strip() == "東京ガス"
        label = page.locator("#chart-per-customer text", has_text="東京ガス")
        assert label.count() == 1
        assert (undrawn_characters(cell), undrawn_characters(label)) == ([], []), (
            "Chromium draws the Japanese customer name as missing-glyph boxes: no CJK font is installed "
            "(fc-list :lang=ja lists none). Install one: apt-get install fonts-noto-cjk (make browser does)"
        )


def test_the_reconciliation_row_says_whether_the_sums_balance(browser: Browser, tmp_path: Path):
    unbalanced = processed_report(
        reconciliation={
            "billAmount": "8300",
            "csvSum": "8271.28",
            "importedSum": "8271.28",
            "balanced": False,
            "note": "the CSV adds up to 8271.28, the bill says 8300: check the export",
        }
    )
    with opened(browser, write_page(processed_report(), tmp_path, "balanced")) as page:
        row = page.locator("#reconciliation-balanced")
        assert row.inner_text().split("\t") == ["Balanced", "yes", "the CSV adds up to the bill"]
        assert style(row.locator("td.balanced-yes"), "color") == GREEN
        assert texts(page.locator("#reconciliation td.amount")) == ["8271.28 JPY"] * 3
    with opened(browser, write_page(unbalanced, tmp_path, "unbalanced")) as page:
        row = page.locator("#reconciliation-balanced")
        assert row.inner_text().split("\t") == [
            "Balanced",
            "NO",
            "the CSV adds up to 8271.28, the bill says 8300: check the export",
        ]
        assert style(row.locator("td.balanced-no"), "color") == RED
        assert page.locator("#reconciliation-bill td.amount").inner_text() == "8300 JPY"


def test_chart_bars_are_as_long_as_their_amounts_and_labelled_with_them(browser: Browser, tmp_path: Path):
    with opened(browser, write_page(processed_report(), tmp_path, "chart")) as page:
        bars = bar_widths(page)
        assert {name: amount for name, (amount, _, _) in bars.items()} == {k: Decimal(v) for k, v in CUSTOMERS.items()}
        assert_proportional(bars)
        labels = page.locator("#chart-per-customer text.bar-amount")
        assert svg_texts(labels) == [f"{amount} JPY" for amount in CUSTOMERS.values()]
        assert svg_texts(page.locator("#chart-per-customer text.bar-label")) == [
            NO_CUSTOMER,
            "Acme Logistics",
            "Northwind Traders",
            "東京ガス",
        ]
        # Each amount is written just right of its own bar, on the same row.
        for bar, label in zip(page.locator("#chart-per-customer rect.bar").all(), labels.all(), strict=True):
            bar_box, label_box = bar.bounding_box(), label.bounding_box()
            assert bar_box is not None
            assert label_box is not None
            assert bar_box["x"] + bar_box["width"] <= label_box["x"] <= bar_box["x"] + bar_box["width"] + 10
            assert abs((bar_box["y"] + bar_box["height"] / 2) - (label_box["y"] + label_box["height"] / 2)) < 4


def test_a_negative_amount_is_drawn_left_of_the_zero_line_in_another_colour(browser: Browser, tmp_path: Path):
    customers = [
        {"name": "Acme", "amount": "300"},
        {"name": "Refunded Co", "amount": "-100.50"},
        {"name": "Tiny", "amount": "3"},
    ]
    with opened(browser, write_page(processed_report(perCustomer=customers), tmp_path, "negative")) as page:
        bars = bar_widths(page)
        assert_proportional(bars)
        zero = page.locator("#chart-per-customer line.zero").bounding_box()
        assert zero is not None
        _, width, left = bars["Refunded Co"]
        assert abs(left + width - zero["x"]) <= 1.5  # it ends at the zero line...
        assert abs(bars["Acme"][2] - zero["x"]) <= 1.5  # ...where the positive ones start
        positive = page.locator('#chart-per-customer rect.bar[data-name="Acme"]')
        negative = page.locator('#chart-per-customer rect.bar[data-name="Refunded Co"]')
        assert style(positive, "fill") != style(negative, "fill")
        assert style(negative, "stroke") == RED
        assert page.locator('#totals-per-customer tr[data-name="Refunded Co"] td.amount').inner_text() == "-100.50 JPY"
        assert page.locator("#totals-per-customer tfoot td.amount").inner_text() == "202.50 JPY"


def test_a_rejected_report_shows_each_problem_line_and_no_totals(browser: Browser, tmp_path: Path):
    with opened(browser, write_page(rejected_report(), tmp_path, "rejected")) as page:
        assert page.locator("#status").inner_text() == "REJECTED"
        assert style(page.locator("#status"), "backgroundColor") == RED
        problems = page.locator("#problems tbody tr")
        assert texts(problems.locator("td.line")) == ["3", "66", "412"]
        assert problems.first.inner_text().split("\t") == [
            "3",
            "amount",
            "abc",
            "amount 'abc' is not a plain decimal number",
        ]
        assert page.locator("#problems-not-listed").inner_text() == "12 more problems not listed."
        assert page.locator("#totals-per-customer").count() == 0
        assert page.locator("#chart-per-customer").count() == 0
        assert page.locator("#no-totals").is_visible()


def test_markup_in_csv_values_is_shown_as_text_and_never_runs(browser: Browser, tmp_path: Path):
    report = processed_report(
        perCustomer=[{"name": HOSTILE, "amount": "10"}],
        problems=[{"line": 9, "column": "customer", "value": HOSTILE, "message": "unmapped customer"}],
    )
    with opened(browser, write_page(report, tmp_path, "hostile")) as page:  # a dialog would fail the test
        assert page.locator("#totals-per-customer tbody td.name").inner_text() == HOSTILE
        assert page.locator("#problems td.value").inner_text() == HOSTILE
        assert page.locator("script").count() == 0


def test_the_report_command_writes_a_page_chromium_renders_with_the_reports_totals(browser: Browser, tmp_path: Path):
    saved = tmp_path / "reports" / f"{MONTH}" / "69436c52.json"  # as copied from S3 reports/<yyyyMM>/<version>.json
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(processed_report().to_event(), ensure_ascii=False, indent=2), encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SORACOM_", "APS_"))}
    done = subprocess.run(  # noqa: S603 - our own console script
        [SORACHARGE, "report", "--report", str(saved)],  # a report JSON alone, no month
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    page_path = saved.with_suffix(".html")
    assert done.stdout.splitlines() == [
        f"HTML report written to {page_path}",
        "Import PROCESSED: CloudBlue rated session 7: 28 charges",
    ]
    with opened(browser, page_path) as page:
        assert texts(page.locator("#totals-per-customer tbody td.amount")) == [f"{a} JPY" for a in CUSTOMERS.values()]
        assert page.locator("#totals-per-customer tfoot td.amount").inner_text() == "8271.28 JPY"
        assert page.locator("#reconciliation-balanced td.balanced-yes").inner_text() == "yes"
        assert_proportional(bar_widths(page))
        screenshot = tmp_path / "report.png"
        page.screenshot(path=screenshot, full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
