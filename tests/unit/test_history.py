"""The history page: every month imported, as a billing team reads it (``reports/history.html``)."""

from __future__ import annotations

from soracharge.logic.history import HISTORY_KEY
from soracharge.models.months import shift_month

from tests.protocol.world import MONTH
from tests.unit.test_import_use_case import run
from tests.unit.test_report_html import parse
from tests.unit.test_review import ITEMS, USUAL, unusual


def test_each_report_published_rewrites_the_page_with_every_month_and_each_customer_over_them(world):
    world.history("202608", USUAL, per_item=ITEMS)
    world.history("202609", USUAL, per_item=ITEMS)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    page = parse(world.store.pages[HISTORY_KEY])
    rows = page.by_id("months").all("tr", "month-row")
    # Newest month first, each with its status and a link to its report, beside the history page
    assert [(row.attrs["data-month"], row.attrs["data-status"]) for row in rows] == [
        (MONTH, "CLOSED"),
        ("202609", "PROCESSED"),
        ("202608", "PROCESSED"),
    ]
    assert rows[0].all("a")[0].attrs["href"] == f"{MONTH}/{obj.version_id}.html"
    assert rows[0].all("td", "csv-sum")[0].text == "41999.3394638 JPY"
    # And each customer over the three months
    customers = {row.attrs["data-customer"]: row for row in page.all("tr", "customer-row")}
    assert [td.text for td in customers["Acme Logistics"].all("td", "amount")] == ["15000", "15000", "15221.5950508"]
    assert len(customers["Acme Logistics"].all("rect")) == 3
    # The rating recorded rewrites it too
    world.follow()
    rows = parse(world.store.pages[HISTORY_KEY]).by_id("months").all("tr", "month-row")
    assert rows[0].attrs["data-status"] == "PROCESSED"


def test_a_month_waiting_for_approval_is_listed_as_waiting(world):
    unusual(world)
    run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    row = parse(world.store.pages[HISTORY_KEY]).by_id("months").all("tr", "month-row")[0]
    assert row.attrs["data-status"] == "AWAITING_APPROVAL"
    assert row.all("td", "approval")[0].text == "waiting"
    assert row.all("td", "imported")[0].text == "—"


def test_the_page_shows_the_last_24_months_whatever_the_bucket_s_age(world):
    # Reports of 30 months before this one: the page reads and lists the latest 24 months only
    for back in range(1, 31):
        world.history(shift_month(MONTH, -back), USUAL, per_item=ITEMS)
    run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    rows = parse(world.store.pages[HISTORY_KEY]).by_id("months").all("tr", "month-row")
    months = [row.attrs["data-month"] for row in rows]
    assert months == [shift_month(MONTH, -back) for back in range(24)]
