"""How a Soracom bill is made from its detailed CSV: the reconciliation, step by step.

Soracom's bill ``amount`` is not the CSV's sum. By Soracom's published billing rules:

1. the CSV's exact sum (Σ ``amount``, every row, discounts and free tier included);
2. rounded **up** to the currency's unit: fractions below ¥1 for Japan coverage (JPY), below
   $0.01 (or €0.01) for Global coverage;
3. less the coupon applied to the month (the bill's ``appliedCouponAmount``);
4. plus tax, where the provider's mapping says Soracom's ``amount`` includes it (a rate and how
   its fraction is rounded; off by default: the API documents no tax field on the bill).

The month is **balanced** when these steps land exactly on the bill's ``amount`` and CloudBlue
accepted exactly the CSV's sum. Anything else is unbalanced, with the difference and the closest
explanation: a setting that would make the steps land (a tax rate, a rounding, the coupon), or
else rows missing from the CSV (short) or rows the bill does not count (over). A difference of
more than the rounding can explain never passes as rounding, as rounding is one exact step.

The charges stay the CSV's: rounding, coupon and tax are explained here, never spread over them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, localcontext

from soracharge.models.imports import Reconciliation, ReconciliationStep
from soracharge.models.mapping import TaxRounding, TaxSettings

#: The unit Soracom rounds a month's total up to, per currency.
CURRENCY_UNITS: dict[str, Decimal] = {"JPY": Decimal(1), "USD": Decimal("0.01"), "EUR": Decimal("0.01")}
#: Tax rates tried when explaining a bill that is tax-included while the mapping sets no tax
#: (Japan's consumption tax, standard and reduced).
LIKELY_TAX_RATES = (Decimal("0.10"), Decimal("0.08"))
_ROUNDING = {"down": ROUND_DOWN, "up": ROUND_CEILING, "half-up": ROUND_HALF_UP}
_EXACT = Context(prec=80)


@dataclass(frozen=True)
class BillFacts:
    """What the export flow stored with the CSV (object metadata): the bill's amount and coupon."""

    amount: Decimal
    applied_coupon_amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class _Candidate:
    """One way of making the bill: rounding, then coupon, then tax."""

    coupon: bool
    tax: TaxSettings | None

    def expected(self, csv_sum: Decimal, currency: str, bill: BillFacts) -> Decimal:
        return _steps(csv_sum, currency, bill, self.tax, coupon=self.coupon)[-1].amount


def reconcile(
    *,
    csv_sum: Decimal,
    imported: Decimal,
    currency: str,
    bill: BillFacts | None,
    tax: TaxSettings | None = None,
) -> Reconciliation:
    """The reconciliation of one file: its steps from the CSV's sum to the bill, and whether they land."""
    with localcontext(_EXACT):
        return _reconcile(csv_sum, imported, currency, bill, tax)


def _reconcile(
    csv_sum: Decimal, imported: Decimal, currency: str, bill: BillFacts | None, tax: TaxSettings | None
) -> Reconciliation:
    accepted_all = imported == csv_sum
    accepted_note = "" if accepted_all else f"; CloudBlue accepted {imported}, not the CSV's {csv_sum}"
    if bill is None:
        return Reconciliation(
            csv_sum=csv_sum,
            imported_sum=imported,
            balanced=accepted_all,
            note="uploaded file: no Soracom bill amount to compare with" + accepted_note,
            steps=[ReconciliationStep(kind="csv-sum", label="CSV sum (Σ amount)", amount=csv_sum)],
        )
    steps = _steps(csv_sum, currency, bill, tax, coupon=True)
    expected = steps[-1].amount
    difference = bill.amount - expected
    if difference == 0:
        note = _how_it_adds_up(steps, currency)
    else:
        note = _closest_explanation(steps, currency, bill, tax, difference)
    return Reconciliation(
        bill_amount=bill.amount,
        coupon_amount=bill.applied_coupon_amount,
        tax_rate=tax.rate if tax is not None else None,
        csv_sum=csv_sum,
        imported_sum=imported,
        expected_bill=expected,
        difference=difference,
        balanced=difference == 0 and accepted_all,
        note=note + accepted_note,
        steps=steps,
    )


def _steps(
    csv_sum: Decimal, currency: str, bill: BillFacts, tax: TaxSettings | None, *, coupon: bool
) -> list[ReconciliationStep]:
    unit = _unit(currency)
    steps = [ReconciliationStep(kind="csv-sum", label="CSV sum (Σ amount)", amount=csv_sum)]
    running = csv_sum.quantize(unit, rounding=ROUND_CEILING) + 0  # + 0: no "-0" when -0.5 rounds up
    steps.append(
        ReconciliationStep(
            kind="rounding", label=f"rounded up to {unit} {currency}", change=running - csv_sum, amount=running
        )
    )
    if coupon and bill.applied_coupon_amount:
        running -= bill.applied_coupon_amount
        steps.append(
            ReconciliationStep(
                kind="coupon", label="less the coupon applied", change=-bill.applied_coupon_amount, amount=running
            )
        )
    if tax is not None:
        added = (running * tax.rate).quantize(unit, rounding=_ROUNDING[tax.rounding])
        running += added
        label = f"plus tax at {_percent(tax.rate)} (rounded {tax.rounding})"
        steps.append(ReconciliationStep(kind="tax", label=label, change=added, amount=running))
    return steps


def _how_it_adds_up(steps: list[ReconciliationStep], currency: str) -> str:
    """``the bill is the CSV's sum rounded up (+0.72 JPY), less the 500 JPY coupon, plus 10% tax (+777 JPY)``."""
    parts = []
    for step in steps[1:]:
        change = step.change or Decimal(0)
        if step.kind == "rounding":
            parts.append(f"the bill is the CSV's sum rounded up ({_signed(change, currency)})")
        elif step.kind == "coupon":
            parts.append(f"less the {_plain(-change)} {currency} coupon")
        elif step.kind == "tax":
            parts.append(f"{step.label} ({_signed(change, currency)})")
    return ", ".join(parts)


def _closest_explanation(
    steps: list[ReconciliationStep], currency: str, bill: BillFacts, tax: TaxSettings | None, difference: Decimal
) -> str:
    """What the difference most likely is: a setting that would make the steps land, else missing or extra rows."""
    off = f"{_plain(abs(difference))} {currency}"
    csv_sum, rounded = steps[0].amount, steps[1].amount
    if bill.applied_coupon_amount > rounded:
        return (
            f"the coupon applied ({_plain(bill.applied_coupon_amount)} {currency}) is more than the CSV's rounded "
            f"total ({_plain(rounded)} {currency}): Soracom applies a coupon up to the month's charges, so the CSV "
            "may lack rows or the bill's coupon is not this month's; check the export"
        )
    for candidate, advice in _alternatives(tax, bill):
        if candidate.expected(csv_sum, currency, bill) == bill.amount:
            return f"the bill is {off} {'above' if difference > 0 else 'below'} the steps, but it matches {advice}"
    if difference > 0:
        return (
            f"short by {off}: the bill counts more than the CSV holds, so the CSV may be incomplete (a truncated "
            "export, or rows missing); check the export"
        )
    return (
        f"over by {off}: the CSV holds more than the bill counts (rows of another month or account, rows "
        "given twice, or a coupon or credit the bill does not show); check the export"
    )


def _alternatives(tax: TaxSettings | None, bill: BillFacts) -> Iterator[tuple[_Candidate, str]]:
    if tax is None:
        for rate in LIKELY_TAX_RATES:
            for rounding in _ROUNDING:
                yield (
                    _Candidate(coupon=True, tax=TaxSettings(rate=rate, rounding=rounding)),
                    f"tax at {_percent(rate)} on top: if Soracom's amount includes tax, set "
                    f'reconciliation.tax.rate: "{rate}" (and tax.rounding: {rounding}) in the mapping',
                )
    else:
        yield (
            _Candidate(coupon=True, tax=None),
            "no tax: Soracom's amount has none, remove reconciliation.tax from the mapping",
        )
        for rounding in _ROUNDING:
            if rounding != tax.rounding:
                yield (
                    _Candidate(coupon=True, tax=tax.model_copy(update={"rounding": rounding})),
                    f"tax rounded {rounding}: set reconciliation.tax.rounding: {rounding} in the mapping",
                )
    if bill.applied_coupon_amount:
        yield (
            _Candidate(coupon=False, tax=tax),
            f"the bill before its {_plain(bill.applied_coupon_amount)} coupon: the bill's amount may not include "
            "the coupon Soracom reported",
        )


def _unit(currency: str) -> Decimal:
    """The unit Soracom rounds ``currency`` to. A bill is only ever in JPY, USD or EUR (the import refuses any
    other currency before it plans), so another one here is a caller's mistake: refused, never a guessed unit."""
    if currency not in CURRENCY_UNITS:
        raise ValueError(f"Soracom bills in {', '.join(CURRENCY_UNITS)}, not {currency!r}: no rounding unit for it")
    return CURRENCY_UNITS[currency]


def _percent(rate: Decimal) -> str:
    return f"{_plain(rate * 100)}%"


def _plain(value: Decimal) -> str:
    """Plain decimal text without trailing zeros past the point (``500``, ``0.72``), never an exponent."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _signed(amount: Decimal, currency: str) -> str:
    return f"{'+' if amount >= 0 else '-'}{_plain(abs(amount))} {currency}"


__all__ = ["CURRENCY_UNITS", "BillFacts", "TaxRounding", "TaxSettings", "reconcile"]
