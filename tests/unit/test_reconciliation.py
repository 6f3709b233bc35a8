"""The reconciliation knows how a Soracom bill is made: rounded up, less the coupon, plus tax if set.

A month is balanced only when those steps land exactly on the bill; anything else is unbalanced,
with the difference and the closest explanation. The bills here are made by the simulator's own
rule (``soracom_bill_amount``), written apart from the code under test.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st
from soracharge.logic.reconciliation import BillFacts, reconcile
from soracharge.models.mapping import TaxRounding, TaxSettings
from soracharge_local.simulators.soracom_data import soracom_bill_amount

D = Decimal


def reconciled(csv_sum: str, bill: str | None, currency: str = "JPY", coupon: str = "0", **kwargs):
    facts = None if bill is None else BillFacts(amount=D(bill), applied_coupon_amount=D(coupon))
    imported = kwargs.pop("imported", csv_sum)
    return reconcile(csv_sum=D(csv_sum), imported=D(imported), currency=currency, bill=facts, **kwargs)


def test_a_jpy_bill_that_is_the_csv_sum_rounded_up_to_the_yen_balances_and_says_why():
    result = reconciled("8271.2834567", "8272")

    assert result.balanced
    assert result.expected_bill == D(8272)
    assert result.difference == 0
    assert [(s.kind, s.change, s.amount) for s in result.steps] == [
        ("csv-sum", None, D("8271.2834567")),
        ("rounding", D("0.7165433"), D(8272)),
    ]
    assert result.note == "the bill is the CSV's sum rounded up (+0.7165433 JPY)"


def test_a_usd_bill_is_rounded_up_to_the_cent_not_the_dollar():
    assert reconciled("151.2301", "151.24", currency="USD").balanced
    assert not reconciled("151.2301", "152", currency="USD").balanced
    assert reconciled("151.2301", "151.24", currency="USD").steps[1].label == "rounded up to 0.01 USD"


def test_a_sum_without_a_fraction_is_not_rounded_at_all():
    result = reconciled("8272.000", "8272")
    assert result.balanced
    assert result.steps[1].change == 0


def test_a_coupon_is_taken_off_after_rounding_and_named_in_the_steps_and_the_note():
    result = reconciled("8271.28", "7772", coupon="500")

    assert result.balanced
    assert result.coupon_amount == D(500)
    steps = [(s.kind, s.amount) for s in result.steps]
    assert steps == [("csv-sum", D("8271.28")), ("rounding", 8272), ("coupon", 7772)]
    assert result.steps[2].change == D(-500)
    assert "less the 500 JPY coupon" in result.note


def test_tax_set_in_the_mapping_is_added_on_what_the_coupon_left_rounded_as_set():
    tax = TaxSettings(rate=D("0.10"), rounding="down")
    result = reconciled("8271.28", "8549", coupon="500", tax=tax)  # 7772 + 777.2 rounded down

    assert result.balanced
    assert result.tax_rate == D("0.10")
    assert result.steps[-1].kind == "tax"
    assert result.steps[-1].change == D(777)
    assert "plus tax at 10% (rounded down) (+777 JPY)" in result.note
    assert not reconciled("8271.28", "8550", coupon="500", tax=tax).balanced  # 777.2 is not rounded up


def test_tax_off_by_default_and_a_bill_with_tax_is_unbalanced_with_the_setting_that_would_explain_it():
    result = reconciled("8271.28", "8549", coupon="500")

    assert not result.balanced
    assert result.difference == D(777)
    assert "matches tax at 10% on top" in result.note
    assert 'reconciliation.tax.rate: "0.10"' in result.note


def test_tax_on_while_the_bill_has_none_is_unbalanced_and_says_so():
    result = reconciled("8271.28", "8272", tax=TaxSettings(rate=D("0.10")))

    assert not result.balanced
    assert result.difference == D(-827)
    assert "matches no tax" in result.note


def test_a_truncated_csv_is_short_of_the_bill_and_the_note_says_the_csv_may_be_incomplete():
    result = reconciled("7020.55", "8272")

    assert not result.balanced
    assert result.difference == D(1251)
    assert result.note.startswith("short by 1251 JPY")
    assert "the CSV may be incomplete" in result.note


@pytest.mark.parametrize(("bill", "difference"), [("8273", 1), ("8271", -1), ("8272.01", D("0.01"))])
def test_a_bill_off_by_more_than_the_rounding_never_passes_as_rounding(bill, difference):
    result = reconciled("8271.28", bill)

    assert not result.balanced
    assert result.difference == D(difference)


def test_a_csv_over_the_bill_is_unbalanced_and_names_rows_the_bill_does_not_count():
    result = reconciled("9000.10", "8272", currency="JPY")

    assert not result.balanced
    assert result.note.startswith("over by 729 JPY")


def test_a_bill_equal_to_the_exact_unrounded_sum_is_not_how_soracom_bills_and_is_unbalanced():
    result = reconciled("8271.28", "8271.28")
    assert not result.balanced
    assert result.difference == D("-0.72")


def test_a_bill_that_did_not_take_the_reported_coupon_off_is_explained_as_such():
    result = reconciled("8271.28", "8272", coupon="500")
    assert not result.balanced
    assert "before its 500 coupon" in result.note


def test_charges_cloudblue_did_not_all_accept_unbalance_even_a_bill_that_matches():
    result = reconciled("8271.28", "8272", imported="8000")
    assert not result.balanced
    assert result.difference == 0
    assert "CloudBlue accepted 8000, not the CSV's 8271.28" in result.note


def test_an_uploaded_file_without_a_bill_balances_on_what_cloudblue_accepted():
    result = reconciled("100.5", None)
    assert result.balanced
    assert result.bill_amount is None
    assert result.expected_bill is None
    assert [s.kind for s in result.steps] == ["csv-sum"]
    assert not reconciled("100.5", None, imported="100").balanced


cents = st.decimals(min_value=D("-1000"), max_value=D("10000000"), places=9, allow_nan=False, allow_infinity=False)


@given(
    total=cents,
    currency=st.sampled_from(["JPY", "USD", "EUR"]),
    coupon=st.decimals(min_value=0, max_value=D(5000), places=2),
    tax=st.sampled_from([None, TaxSettings(rate=D("0.10")), TaxSettings(rate=D("0.08"), rounding="half-up")]),
)
def test_every_bill_made_as_soracom_makes_it_balances_and_any_other_bill_does_not(total, currency, coupon, tax):
    # Given a bill made by the simulator's rule (rounded up, coupon applied, tax if any)
    rate = None if tax is None else tax.rate
    rounding: TaxRounding = "down" if tax is None else tax.rounding
    amount, applied = soracom_bill_amount(total, currency, coupon=coupon, tax_rate=rate, tax_rounding=rounding)
    settings = tax
    facts = BillFacts(amount=amount, applied_coupon_amount=applied)

    # Then it reconciles, and the same bill one unit (or one ten-thousandth) off never does
    assert reconcile(csv_sum=total, imported=total, currency=currency, bill=facts, tax=settings).balanced
    for off in (D(1), D("-0.01"), D("0.0001")):
        wrong = BillFacts(amount=amount + off, applied_coupon_amount=applied)
        result = reconcile(csv_sum=total, imported=total, currency=currency, bill=wrong, tax=settings)
        assert not result.balanced
        assert result.difference == off


def test_a_negative_sum_that_rounds_up_to_zero_shows_zero_not_minus_zero():
    result = reconciled("-0.5", "0")
    assert result.balanced
    assert format(result.steps[1].amount, "f") == "0"


def test_a_coupon_larger_than_the_csvs_rounded_total_is_named_as_such_not_as_a_short_csv():
    result = reconciled("100.2", "0", coupon="500")
    assert not result.balanced
    assert "the coupon applied (500 JPY) is more than the CSV's rounded total (101 JPY)" in result.note


def test_cloudblue_accepting_more_than_the_csv_a_doubled_packet_unbalances_the_month():
    # A packet CloudBlue took twice: it holds twice its charges, more than the CSV and the bill
    result = reconciled("8271.28", "8272", imported="16542.56")
    assert not result.balanced
    assert result.difference == 0  # the CSV itself makes the bill: only what CloudBlue accepted is wrong
    assert "CloudBlue accepted 16542.56, not the CSV's 8271.28" in result.note
    assert not reconciled("100.5", None, imported="100.51").balanced  # a file without a bill: the same


DOWN = TaxSettings(rate=D("0.10"), rounding="down")


@pytest.mark.parametrize(
    ("csv_sum", "bill", "currency", "coupon", "tax", "note"),
    [
        pytest.param(
            "8271.28", "8549", "JPY", "500", None,
            "the bill is 777 JPY above the steps, but it matches tax at 10% on top: if Soracom's amount includes "
            'tax, set reconciliation.tax.rate: "0.10" (and tax.rounding: down) in the mapping',
            id="tax-included-bill-rounded-down",
        ),
        pytest.param(
            "8271.28", "8550", "JPY", "500", None,
            "the bill is 778 JPY above the steps, but it matches tax at 10% on top: if Soracom's amount includes "
            'tax, set reconciliation.tax.rate: "0.10" (and tax.rounding: up) in the mapping',
            id="tax-included-bill-rounded-up",
        ),
        pytest.param(
            "8271.28", "7772", "JPY", "500", DOWN,
            "the bill is 777 JPY below the steps, but it matches no tax: Soracom's amount has none, remove "
            "reconciliation.tax from the mapping",
            id="tax-set-but-the-bill-has-none",
        ),
        pytest.param(
            "8271.28", "8550", "JPY", "500", DOWN,
            "the bill is 1 JPY above the steps, but it matches tax rounded up: set reconciliation.tax.rounding: up "
            "in the mapping",
            id="tax-rounded-the-other-way",
        ),
        pytest.param(
            "8271.28", "9099", "JPY", "500", DOWN,
            "the bill is 550 JPY above the steps, but it matches the bill before its 500 coupon: the bill's amount "
            "may not include the coupon Soracom reported",
            id="coupon-not-taken-off-a-taxed-bill",
        ),
        pytest.param(
            "100.2", "0", "JPY", "500", None,
            "the coupon applied (500 JPY) is more than the CSV's rounded total (101 JPY): Soracom applies a coupon "
            "up to the month's charges, so the CSV may lack rows or the bill's coupon is not this month's; check "
            "the export",
            id="coupon-above-the-total",
        ),
        pytest.param(
            "100.2", "5", "JPY", "101", None,
            "short by 5 JPY: the bill counts more than the CSV holds, so the CSV may be incomplete (a truncated "
            "export, or rows missing); check the export",
            id="coupon-equal-to-the-total-is-not-above-it",
        ),
        pytest.param(
            "151.2301", "151.74", "USD", "0", None,
            "short by 0.5 USD: the bill counts more than the CSV holds, so the CSV may be incomplete (a truncated "
            "export, or rows missing); check the export",
            id="short-by-less-than-one-dollar",
        ),
        pytest.param(
            "9000.10", "8272", "JPY", "0", None,
            "over by 729 JPY: the CSV holds more than the bill counts (rows of another month or account, rows "
            "given twice, or a coupon or credit the bill does not show); check the export",
            id="over",
        ),
        pytest.param(
            "8271.28", "8549", "JPY", "500", DOWN,
            "the bill is the CSV's sum rounded up (+0.72 JPY), less the 500 JPY coupon, plus tax at 10% "
            "(rounded down) (+777 JPY)",
            id="balanced-every-step",
        ),
        pytest.param(
            "8272.000", "8272", "JPY", "0", None,
            "the bill is the CSV's sum rounded up (+0 JPY)",
            id="balanced-nothing-to-round",
        ),
        pytest.param(
            "8271.9999999", "8272", "JPY", "0", None,
            "the bill is the CSV's sum rounded up (+0.0000001 JPY)",
            id="balanced-a-tiny-fraction-written-plainly",
        ),
        pytest.param(
            "-100.5", "-110", "JPY", "0", DOWN,
            "the bill is the CSV's sum rounded up (+0.5 JPY), plus tax at 10% (rounded down) (-10 JPY)",
            id="balanced-a-month-of-credits",
        ),
    ],
)  # fmt: skip
def test_the_note_a_person_reads_says_word_for_word_why_the_month_does_or_does_not_balance(
    csv_sum, bill, currency, coupon, tax, note
):
    assert reconciled(csv_sum, bill, currency=currency, coupon=coupon, tax=tax).note == note


def test_an_uploaded_file_says_it_has_no_bill_and_its_one_step_is_the_csv_sum():
    result = reconciled("100.5", None)
    assert result.note == "uploaded file: no Soracom bill amount to compare with"
    assert [(s.kind, s.label, s.amount) for s in result.steps] == [("csv-sum", "CSV sum (Σ amount)", D("100.5"))]


def test_the_reconciliation_is_exact_whatever_decimal_precision_the_caller_has_set():
    with localcontext(prec=6):
        result = reconciled("8271.2834567", "8272")
    assert result.balanced
    assert result.steps[1].change == D("0.7165433")


def test_a_bill_in_a_currency_soracom_does_not_bill_in_is_refused_not_rounded_by_a_guess():
    with pytest.raises(ValueError, match=r"^Soracom bills in JPY, USD, EUR, not 'GBP': no rounding unit for it$"):
        reconciled("100.2", "101", currency="GBP")
