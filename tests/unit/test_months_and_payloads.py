"""Billing months and the state machine's payload models."""

from datetime import date, datetime
from decimal import Decimal

import pytest
from soracharge.errors import InvalidInputError, MonthOutOfRangeError
from soracharge.models.export_flow import BillSummary, ExportProgress, ExportRequest, StoreExportRequest
from soracharge.models.months import ensure_billable, months_between, parse_month, previous_month
from soracharge.models.parsing import parse_input

TODAY = date(2026, 11, 22)


@pytest.mark.parametrize("month", ["202208", "199912", "203001"])
def test_well_formed_months_are_accepted(month):
    assert parse_month(month) == month


@pytest.mark.parametrize("month", ["2022-08", "20228", "202213", "202200", "2022081", "abcdef", ""])
def test_malformed_months_are_refused_with_the_value_named(month):
    with pytest.raises(InvalidInputError, match=r"yyyyMM") as raised:
        parse_month(month)
    assert repr(month) in str(raised.value)


def test_previous_month_crosses_the_year_and_reads_times_in_utc():
    assert previous_month(date(2026, 1, 4)) == "202512"
    # 00:30 on 1 Dec in Tokyo is still 30 Nov in UTC: the month before is October.
    tokyo = datetime.fromisoformat("2026-12-01T00:30:00+09:00")
    assert previous_month(tokyo) == "202610"


def test_the_billable_window_is_the_18_months_before_the_current_one():
    assert ensure_billable("202610", TODAY) == "202610"
    assert ensure_billable("202505", TODAY) == "202505"
    assert len(months_between("202505", "202610")) == 18


def test_the_current_month_is_refused_as_not_over_yet():
    with pytest.raises(MonthOutOfRangeError, match=r"202611 is not over yet.*latest month Soracom can bill is 202610"):
        ensure_billable("202611", TODAY)


def test_a_month_older_than_18_months_is_refused_naming_the_earliest():
    with pytest.raises(MonthOutOfRangeError, match=r"202504 is older than the 18 months.*earliest.*202505"):
        ensure_billable("202504", TODAY)


def test_the_schedule_input_bills_the_month_before_the_scheduled_time():
    request = parse_input({"scheduledTime": "2026-11-04T00:00:00Z"}, ExportRequest)
    assert request.billing_month() == "202610"


def test_an_explicit_month_wins_over_the_scheduled_time():
    request = parse_input({"month": "202608", "scheduledTime": "2026-11-04T00:00:00Z"}, ExportRequest)
    assert request.billing_month() == "202608"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, r'give "month" \(yyyyMM\) or "scheduledTime"'),
        ({"month": "2026-10"}, r"month: month must be yyyyMM"),
        ({"scheduledTime": "2026-11-04T00:00:00"}, r"scheduledTime: .*timezone"),
    ],
)
def test_bad_state_machine_input_names_the_field(event, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_input(event, ExportRequest)


def test_amounts_travel_as_exact_decimal_strings():
    bill = BillSummary(
        month="202610",
        amount=Decimal("28734.10"),
        applied_coupon_amount=Decimal("500.00"),
        currency="JPY",
        coverage="jp",
    )
    assert bill.to_event() == {
        "month": "202610",
        "amount": "28734.10",
        "appliedCouponAmount": "500.00",
        "currency": "JPY",
        "coverage": "jp",
        "operator": None,  # the stack's own operator: null, as the ASL passes $.bill.operator on
    }
    parsed = parse_input(bill.to_event(), BillSummary)
    assert (parsed.amount, parsed.applied_coupon_amount) == (Decimal("28734.10"), Decimal("500.00"))


def test_a_store_export_request_from_before_the_coupon_was_passed_on_means_no_coupon():
    request = parse_input(
        {"month": "202610", "amount": "28734", "currency": "JPY", "exportedFileId": "fe_1"}, StoreExportRequest
    )
    assert request.applied_coupon_amount == 0


def test_export_progress_uses_the_state_machine_field_names():
    progress = ExportProgress(exported_file_id="fe_1", status="processing", polls=0)
    assert progress.to_event() == {"exportedFileId": "fe_1", "status": "processing", "polls": 0}


def test_an_export_request_names_its_coverage_or_none():
    assert parse_input({"month": "202610", "coverage": "g"}, ExportRequest).coverage == "g"
    assert parse_input({"month": "202610"}, ExportRequest).coverage is None
    with pytest.raises(InvalidInputError, match=r"coverage: Input should be 'jp' or 'g'"):
        parse_input({"month": "202610", "coverage": "eu"}, ExportRequest)


def test_a_store_export_request_from_before_coverages_names_none():
    """An execution started before the update: StoreExport takes the stack's own coverage then."""
    request = parse_input(
        {"month": "202610", "amount": "28734", "currency": "JPY", "exportedFileId": "fe_1"}, StoreExportRequest
    )
    assert request.coverage is None
