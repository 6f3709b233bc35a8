"""Deterministic detailed-billing CSVs and monthly bills for the Soracom simulator.

The file imitates Soracom's *Detailed billing CSV* (the one ``exportBilling`` produces) with every
feature the importer must cope with. Same ``(month, coverage, sims, days)`` in, same bytes out.

Encoding: UTF-8 **with BOM**, a header row, CRLF line endings, RFC 4180 quoting (Python's ``csv``
defaults). Columns, in this order (read them by name, as real files add and drop columns)::

    imsi,vpgId,date,billItemName,unitPrice,quantity,amount,name,customer,groupName

==============  ==================================================================================
column          content
==============  ==================================================================================
imsi            15 digits (``44010...`` for ``jp``, ``295050...`` for ``g``); empty for charges
                not tied to a SIM (Harvest, support, free tier)
vpgId           a UUID for SIMs in a VPG (every 4th SIM), else empty
date            ``yyyyMMdd`` on daily rows, ``yyyyMM`` on monthly, discount and free-tier rows
billItemName    Japanese names for ``jp``, English for ``g``; the discount's name holds a comma and
                double quotes (so it is quoted and its quotes doubled)
unitPrice       plain decimal text (never an exponent), negative on the free-tier row; data usage
                is priced per byte (``0.0000002`` JPY, ``0.000000002`` USD: 0.2 JPY or 0.002 USD a MB)
quantity        plain decimal text; data usage in **bytes**, drawn from 0 to 60,000,000 a day, so
                quantities (and amounts) rarely repeat from row to row, as in real usage
amount          plain decimal text, always exactly ``unitPrice * quantity`` (up to 9 decimals;
                trailing zeros past the second decimal dropped); negative on the discount and
                free-tier rows
name            SIM tag ``name``: ``センサー 1``, ``センサー 2``, ...
customer        SIM tag ``customer``: ``東京ガス``, ``Acme Logistics``, ``Northwind Traders``;
                empty for every 5th SIM
groupName       ``Sensors, Tokyo`` (a comma), ``物流トラッカー`` or empty (no group)
==============  ==================================================================================

Rows, in order:

1. per SIM and per day of the month: the basic daily fee, then the data usage;
2. per SIM: the monthly SMS fee (``yyyyMM``);
3. on the first SIM: a volume discount (``yyyyMM``, negative: 10 % of its basic fees);
4. not tied to a SIM (empty ``imsi`` and tags): Harvest Data, support, and the free tier
   (negative).

The sum of the ``amount`` column (:attr:`BillingCsv.total`) is exact and has fractions below the
currency's unit. The bill is made from it as Soracom makes its bills (:func:`soracom_bill_amount`):
rounded **up** to the unit (1 JPY, 0.01 USD), less the coupon applied, plus tax where the simulator
is told the bill includes it. So the bill's ``amount`` is, as on a real month, not the CSV's sum.
"""

from __future__ import annotations

import calendar
import csv
import io
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Final, Literal

Coverage = Literal["jp", "g"]

COLUMNS: Final = (
    "imsi",
    "vpgId",
    "date",
    "billItemName",
    "unitPrice",
    "quantity",
    "amount",
    "name",
    "customer",
    "groupName",
)
CUSTOMERS: Final = ("東京ガス", "Acme Logistics", "Northwind Traders")
GROUPS: Final = ("Sensors, Tokyo", "物流トラッカー", "")
CURRENCIES: Final[dict[str, str]] = {"jp": "JPY", "g": "USD"}

_YEAR_MONTH = re.compile(r"^(\d{4})(0[1-9]|1[0-2])$")
_CENT = Decimal("0.01")
_MAX_DAILY_BYTES = 60_000_000  # up to 60 MB a day
#: What Soracom rounds a month's total up to (its published billing rules).
BILL_UNITS: Final[dict[str, Decimal]] = {"JPY": Decimal(1), "USD": _CENT, "EUR": _CENT}
TaxRounding = Literal["down", "up", "half-up"]
_TAX_ROUNDING: Final = {"down": ROUND_DOWN, "up": ROUND_CEILING, "half-up": ROUND_HALF_UP}


@dataclass(frozen=True)
class _BillItems:
    """The names and unit prices of one coverage's bill items."""

    basic: tuple[str, str]
    data: tuple[str, str]
    sms: tuple[str, str]
    discount: str
    harvest: tuple[str, str]
    support: tuple[str, str]
    free_tier: tuple[str, str, str]  # name, unit price (negative), quantity


_ITEMS: Final[dict[str, _BillItems]] = {
    "jp": _BillItems(
        basic=("基本料金 (plan-D)", "10"),
        data=("データ通信料金 (plan-D)", "0.0000002"),
        sms=("SMS 送信料金", "3"),
        discount='ボリュームディスカウント "IoT スターター, 10%"',
        harvest=("SORACOM Harvest Data 書き込みリクエスト料金", "0.004"),
        support=("サポート月額料金 (Business)", "3000"),
        free_tier=("無料利用枠 (データ通信 500MB)", "-0.0000002", "500000000"),
    ),
    "g": _BillItems(
        basic=("Basic fee (plan01s)", "0.06"),
        data=("Data usage (plan01s)", "0.000000002"),
        sms=("SMS fee", "0.09"),
        discount='Volume discount "IoT Starter, 10%"',
        harvest=("Soracom Harvest Data write requests", "0.0001"),
        support=("Support plan (Business)", "30"),
        free_tier=("Free tier (data 500MB)", "-0.000000002", "500000000"),
    ),
}


@dataclass(frozen=True)
class BillingCsv:
    """One generated detailed-billing file and what a bill needs to know about it."""

    month: str
    content: bytes
    total: Decimal
    rows: int


def parse_year_month(text: str) -> tuple[int, int]:
    """Return ``(year, month)`` for a ``yyyyMM`` string; raise ``ValueError`` otherwise."""
    match = _YEAR_MONTH.fullmatch(text)
    if match is None:
        raise ValueError(f"not a yyyyMM month: {text!r}")
    return int(match.group(1)), int(match.group(2))


def days_in_month(month: str) -> int:
    """Number of days of a ``yyyyMM`` month."""
    year, mon = parse_year_month(month)
    return calendar.monthrange(year, mon)[1]


def decimal_text(value: Decimal) -> str:
    """Plain decimal text of ``value``: never an exponent (``format(Decimal('1E-7'), 'f')``)."""
    return format(value, "f")


def _tidy_amount(value: Decimal) -> Decimal:
    """Keep two decimals when the value fits in them, else drop trailing zeros only."""
    cents = value.quantize(_CENT)
    if cents == value:
        return cents
    return value.normalize()


def _seed(coverage: Coverage, month: str, sims: int) -> str:
    return f"soracharge-simulator:{coverage}:{month}:{sims}"


def _imsi(coverage: Coverage, index: int) -> str:
    if coverage == "jp":
        return f"44010{3_000_000_000 + index:010d}"
    return f"295050{900_000_000 + index:09d}"


def generate_billing_csv(month: str, *, coverage: Coverage, sims: int, days: int | None = None) -> BillingCsv:
    """Build the detailed-billing CSV of ``month`` (see the module docstring for its layout).

    ``days`` limits the daily rows to the first ``days`` days (the current month's bill only covers
    the days so far); by default every day of the month is present.
    """
    if coverage not in _ITEMS:
        raise ValueError(f"unknown coverage {coverage!r} (expected 'jp' or 'g')")
    if sims < 1:
        raise ValueError("sims must be at least 1")
    month_days = days_in_month(month)
    covered_days = month_days if days is None else max(0, min(days, month_days))
    rng = random.Random(_seed(coverage, month, sims))
    items = _ITEMS[coverage]

    data_name, data_unit_text = items.data
    data_unit = Decimal(data_unit_text)

    basic_name, basic_unit_text = items.basic
    basic_amount = _tidy_amount(Decimal(basic_unit_text))
    basic_amount_text = decimal_text(basic_amount)
    dates = [f"{month}{day:02d}" for day in range(1, covered_days + 1)]
    vpg_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))

    total = Decimal(0)
    rows = 0

    def body() -> Iterator[list[str]]:
        nonlocal total, rows
        sim_total = Decimal(0)
        for index in range(sims):
            imsi = _imsi(coverage, index)
            tags = [
                f"センサー {index + 1}",
                "" if index % 5 == 4 else CUSTOMERS[index % 3],
                GROUPS[(index // 2) % 3],
            ]
            vpg = vpg_id if index % 4 == 0 else ""
            for day in dates:
                used = rng.randint(0, _MAX_DAILY_BYTES)  # bytes: real usage rarely repeats
                quantity_text = str(used)
                amount = _tidy_amount(data_unit * used)
                amount_text = decimal_text(amount)
                sim_total += basic_amount + amount
                yield [imsi, vpg, day, basic_name, basic_unit_text, "1", basic_amount_text, *tags]
                yield [imsi, vpg, day, data_name, data_unit_text, quantity_text, amount_text, *tags]
            rows += 2 * len(dates)

            sms_name, sms_unit = items.sms
            sms_count = Decimal(rng.randint(0, 40))
            sms_amount = _tidy_amount(Decimal(sms_unit) * sms_count)
            sim_total += sms_amount
            rows += 1
            yield [imsi, vpg, month, sms_name, sms_unit, str(sms_count), decimal_text(sms_amount), *tags]

            if index == 0:
                discount = -(basic_amount * len(dates) / 10).quantize(_CENT)
                if discount:
                    discount_text = decimal_text(discount)
                    sim_total += discount
                    rows += 1
                    yield [imsi, vpg, month, items.discount, discount_text, "1", discount_text, *tags]
        total += sim_total

        operator_rows: list[tuple[str, str, str]] = [
            (items.harvest[0], items.harvest[1], str(rng.randint(1, 500) * 100 * sims)),
            (items.support[0], items.support[1], "1"),
            items.free_tier,
        ]
        for name, unit_text, quantity_text in operator_rows:
            amount = _tidy_amount(Decimal(unit_text) * Decimal(quantity_text))
            total += amount
            rows += 1
            yield ["", "", month, name, unit_text, quantity_text, decimal_text(amount), "", "", ""]

    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)  # QUOTE_MINIMAL, lineterminator "\r\n"
    writer.writerow(COLUMNS)
    writer.writerows(body())
    return BillingCsv(month=month, content=buffer.getvalue().encode("utf-8"), total=total, rows=rows)


def soracom_bill_amount(
    total: Decimal,
    currency: str,
    *,
    coupon: Decimal = Decimal(0),
    tax_rate: Decimal | None = None,
    tax_rounding: TaxRounding = "down",
) -> tuple[Decimal, Decimal]:
    """``(amount, appliedCouponAmount)`` of the bill whose detailed CSV sums to ``total``.

    As Soracom bills: the total rounded up to the currency's unit, less the coupon (never more than
    the rounded total: a coupon's rest stays on it), plus tax on what is left when ``tax_rate`` is
    given (its fraction rounded to the unit by ``tax_rounding``).
    """
    unit = BILL_UNITS[currency]
    rounded = total.quantize(unit, rounding=ROUND_CEILING)
    applied = max(Decimal(0), min(coupon, rounded))
    amount = rounded - applied
    if tax_rate is not None:
        amount += (amount * tax_rate).quantize(unit, rounding=_TAX_ROUNDING[tax_rounding])
    return amount, applied


def payment_transaction_id(coverage: Coverage, month: str) -> str:
    """A stable, realistic-looking ``paymentTransactionId`` (17 digits, ``_``, a UUID)."""
    rng = random.Random(f"payment:{coverage}:{month}")
    digits = "".join(str(rng.randint(0, 9)) for _ in range(17))
    return f"{digits}_{uuid.UUID(int=rng.getrandbits(128), version=4)}"
