"""Deterministic detailed-billing CSVs and monthly bills for the Soracom simulator.

The file imitates Soracom's *Detailed billing CSV* (the one ``exportBilling`` produces) with every
feature the importer must cope with. Same ``(month, coverage, sims, days, operator)`` in, same bytes out.

Encoding: UTF-8 **with BOM**, a header row, CRLF line endings, RFC 4180 quoting (Python's ``csv``
defaults). Columns, in this order (read them by name, as real files add and drop columns)::

    imsi,vpgId,loraDeviceId,soraCamDeviceId,date,billItemName,unitPrice,quantity,amount,name,customer,groupName

===============  ==================================================================================
column           content
===============  ==================================================================================
imsi             15 digits (``44010...`` for ``jp``, ``295050...`` for ``g``); empty on device rows and
                 on charges not tied to a SIM or device (VPG, Harvest, support, free tier)
vpgId            a UUID for SIMs in a VPG (every 4th SIM) and on the VPG's own row, else empty
loraDeviceId     ``d00000000000000N`` on a LoRa device's row, else empty
soraCamDeviceId  ``7CDDE900000N`` on a SoraCam camera's rows, else empty
date             ``yyyyMMdd`` on daily rows, ``yyyyMM`` on monthly, discount and operator rows
billItemName     identifiers, as in Soracom's own material: ``basicCharge-plan-D`` (``jp``) or
                 ``basicCharge-plan01s-active`` (``g``), ``uploadDataCharge-…`` and
                 ``downloadDataCharge-…`` (upload and download are separate rows), ``smsCharge``,
                 ``soraCamLicenseCharge-cloudRecording7``, ``vpgBasicCharge-typeE``...
unitPrice        plain decimal text (never an exponent), negative on the free-tier row; data usage
                 is priced per byte (``0.0000002`` JPY, ``0.000000002`` USD: 0.2 JPY or 0.002 USD a MB)
quantity         plain decimal text; data usage in **bytes**, drawn from 0 to 60,000,000 a day, so
                 quantities (and amounts) rarely repeat from row to row, as in real usage
amount           plain decimal text, always exactly ``unitPrice * quantity`` (up to 9 decimals;
                 trailing zeros past the second decimal dropped); negative on the discount and
                 free-tier rows
name             the SIM's or device's tag ``name``: ``センサー 1``, ``カメラ 1``...
customer         tag ``customer``: ``東京ガス``, ``Acme Logistics``, ``Northwind Traders``; empty for
                 every 5th SIM, every other camera and every LoRa device
groupName        ``Sensors, "Tokyo"`` (a comma and quotes), ``物流トラッカー`` or empty (no group)
===============  ==================================================================================

Rows, in order:

1. per SIM (IMSI) and per day of the month: the basic daily fee, then the upload and the download;
   every 6th SIM carries a second IMSI (a ``planX2`` subscription on the same SIM: same tags), with
   its own basic fee;
2. per SIM: the monthly SMS fee (``yyyyMM``);
3. on the first SIM: a volume discount (``yyyyMM``, negative: 10 % of its basic fees);
4. per SoraCam camera (2, and one more per 20 SIMs): its cloud recording license, and the extra
   days' recording (two items of one camera); per LoRa device (1, and one more per 30 SIMs): its fee;
5. not tied to a SIM or device (empty ``imsi``, device ids and tags): the VPG (with its ``vpgId``),
   Harvest Data, support, and the free tier (negative).

A simulated operator (``operator``) gets its own bill: the same layout, other usage (the seed
includes it); the customer of every row is then the operator's end customer where
``customer_of_operator`` names one.

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
    "loraDeviceId",
    "soraCamDeviceId",
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
GROUPS: Final = ('Sensors, "Tokyo"', "物流トラッカー", "")
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
    second_basic: tuple[str, str]  # a SIM's second IMSI (planX2)
    upload: tuple[str, str]
    download: tuple[str, str]
    sms: tuple[str, str]
    discount: str
    camera: tuple[str, str]
    camera_extra: tuple[str, str]
    lora: tuple[str, str]
    vpg: tuple[str, str, str]  # name, unit price (an hour), quantity (hours)
    harvest: tuple[str, str]
    support: tuple[str, str]
    free_tier: tuple[str, str, str]  # name, unit price (negative), quantity


_ITEMS: Final[dict[str, _BillItems]] = {
    "jp": _BillItems(
        basic=("basicCharge-plan-D", "10"),
        second_basic=("basicCharge-planX2", "8"),
        upload=("uploadDataCharge-plan-D", "0.0000002"),
        download=("downloadDataCharge-plan-D", "0.0000002"),
        sms=("smsCharge", "3"),
        discount="volumeDiscount-iotStarter",
        camera=("soraCamLicenseCharge-cloudRecording7", "990"),
        camera_extra=("soraCamLicenseCharge-cloudRecording7-extraDays", "33"),
        lora=("loraDeviceCharge", "400"),
        vpg=("vpgBasicCharge-typeE", "40", "720"),
        harvest=("soracomHarvestWriteRequestCharge", "0.004"),
        support=("supportCharge-business", "3000"),
        free_tier=("freeTierDataCharge-500MB", "-0.0000002", "500000000"),
    ),
    "g": _BillItems(
        basic=("basicCharge-plan01s-active", "0.06"),
        second_basic=("basicCharge-planX2", "0.05"),
        upload=("uploadDataCharge-plan01s", "0.000000002"),
        download=("downloadDataCharge-plan01s", "0.000000002"),
        sms=("smsCharge", "0.09"),
        discount="volumeDiscount-iotStarter",
        camera=("soraCamLicenseCharge-cloudRecording7", "9.9"),
        camera_extra=("soraCamLicenseCharge-cloudRecording7-extraDays", "0.33"),
        lora=("loraDeviceCharge", "3"),
        vpg=("vpgBasicCharge-typeE", "0.4", "720"),
        harvest=("soracomHarvestWriteRequestCharge", "0.0001"),
        support=("supportCharge-business", "30"),
        free_tier=("freeTierDataCharge-500MB", "-0.000000002", "500000000"),
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


def _seed(coverage: Coverage, month: str, sims: int, operator: str) -> str:
    base = f"soracharge-simulator:{coverage}:{month}:{sims}"
    return f"{base}:{operator}" if operator else base


def _imsi(coverage: Coverage, index: int, operator_index: int = 0) -> str:
    if coverage == "jp":
        return f"44010{3_000_000_000 + operator_index * 10_000_000 + index:010d}"
    return f"295050{900_000_000 + operator_index * 10_000_000 + index:09d}"


def camera_id(index: int, operator_index: int = 0) -> str:
    """The ``soraCamDeviceId`` of the simulator's ``index``-th camera (1-based) of an operator."""
    return f"7CDDE9{operator_index:02X}{index:04X}"


def lora_device_id(index: int, operator_index: int = 0) -> str:
    """The ``loraDeviceId`` of the simulator's ``index``-th LoRa device (1-based) of an operator."""
    return f"d0000000{operator_index:04x}{index:04x}"


def cameras_of(sims: int) -> int:
    return 2 + sims // 20


def lora_devices_of(sims: int) -> int:
    return 1 + sims // 30


def generate_billing_csv(
    month: str,
    *,
    coverage: Coverage,
    sims: int,
    days: int | None = None,
    operator: str = "",
    operator_index: int = 0,
    customer_of_operator: str | None = None,
) -> BillingCsv:
    """Build the detailed-billing CSV of ``month`` (see the module docstring for its layout).

    ``days`` limits the daily rows to the first ``days`` days (the current month's bill only covers
    the days so far); by default every day of the month is present. ``operator`` (and its index, which
    keeps its SIMs' and devices' ids apart from the other operators') makes another operator's bill;
    ``customer_of_operator`` tags every SIM and device with that one customer.
    """
    if coverage not in _ITEMS:
        raise ValueError(f"unknown coverage {coverage!r} (expected 'jp' or 'g')")
    if sims < 1:
        raise ValueError("sims must be at least 1")
    month_days = days_in_month(month)
    covered_days = month_days if days is None else max(0, min(days, month_days))
    rng = random.Random(_seed(coverage, month, sims, operator))
    items = _ITEMS[coverage]

    upload_name, data_unit_text = items.upload
    download_name, _ = items.download

    basic_name, basic_unit_text = items.basic
    basic_amount = _tidy_amount(Decimal(basic_unit_text))
    basic_amount_text = decimal_text(basic_amount)
    dates = [f"{month}{day:02d}" for day in range(1, covered_days + 1)]
    vpg_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))

    total = Decimal(0)
    rows = 0

    def customer(index: int, untagged: bool) -> str:
        if customer_of_operator is not None:
            return customer_of_operator
        return "" if untagged else CUSTOMERS[index % 3]

    def priced(unit_text: str, quantity: Decimal | int | str) -> tuple[Decimal, str]:
        amount = _tidy_amount(Decimal(unit_text) * Decimal(quantity))
        return amount, decimal_text(amount)

    def body() -> Iterator[list[str]]:
        nonlocal total, rows
        sim_total = Decimal(0)
        for index in range(sims):
            tags = [f"センサー {index + 1}", customer(index, index % 5 == 4), GROUPS[(index // 2) % 3]]
            vpg = vpg_id if index % 4 == 0 else ""
            imsis = [(_imsi(coverage, index, operator_index), basic_name, basic_unit_text, basic_amount_text)]
            if index % 6 == 5:  # a second IMSI on the same SIM (planX2): its own basic fee, the SIM's tags
                second_name, second_unit = items.second_basic
                second_text = decimal_text(_tidy_amount(Decimal(second_unit)))
                imsis.append(
                    (_imsi(coverage, 5_000_000 + index, operator_index), second_name, second_unit, second_text)
                )
            for imsi, fee_name, fee_unit, fee_text in imsis:
                for day in dates:
                    up = rng.randint(0, _MAX_DAILY_BYTES // 3)  # bytes: real usage rarely repeats
                    down = rng.randint(0, _MAX_DAILY_BYTES)
                    up_amount, up_text = priced(data_unit_text, up)
                    down_amount, down_text = priced(data_unit_text, down)
                    sim_total += Decimal(fee_text) + up_amount + down_amount
                    yield [imsi, vpg, "", "", day, fee_name, fee_unit, "1", fee_text, *tags]
                    yield [imsi, vpg, "", "", day, upload_name, data_unit_text, str(up), up_text, *tags]
                    yield [imsi, vpg, "", "", day, download_name, data_unit_text, str(down), down_text, *tags]
                rows += 3 * len(dates)
            imsi = imsis[0][0]

            sms_name, sms_unit = items.sms
            sms_count = rng.randint(0, 40)
            sms_amount, sms_text = priced(sms_unit, sms_count)
            sim_total += sms_amount
            rows += 1
            yield [imsi, vpg, "", "", month, sms_name, sms_unit, str(sms_count), sms_text, *tags]

            if index == 0:
                discount = -(basic_amount * len(dates) / 10).quantize(_CENT)
                if discount:
                    discount_text = decimal_text(discount)
                    sim_total += discount
                    rows += 1
                    yield [imsi, vpg, "", "", month, items.discount, discount_text, "1", discount_text, *tags]
        total += sim_total

        for number in range(1, cameras_of(sims) + 1):
            tags = [f"カメラ {number}", customer(number, number % 2 == 0), ""]
            device = camera_id(number, operator_index)
            for name, unit_text in (items.camera, items.camera_extra):
                quantity = 1 if name == items.camera[0] else rng.randint(1, 30)
                amount, amount_text = priced(unit_text, quantity)
                total += amount
                rows += 1
                yield ["", "", "", device, month, name, unit_text, str(quantity), amount_text, *tags]
        for number in range(1, lora_devices_of(sims) + 1):
            tags = [f"LoRa {number}", customer(number, True), ""]
            amount, amount_text = priced(items.lora[1], 1)
            total += amount
            rows += 1
            yield ["", "", lora_device_id(number, operator_index), "", month, *items.lora, "1", amount_text, *tags]

        operator_rows: list[tuple[str, str, str, str]] = [
            (*items.vpg, vpg_id),
            (items.harvest[0], items.harvest[1], str(rng.randint(1, 500) * 100 * sims), ""),
            (items.support[0], items.support[1], "1", ""),
            (*items.free_tier, ""),
        ]
        for name, unit_text, quantity_text, vpg in operator_rows:
            amount, amount_text = priced(unit_text, quantity_text)
            total += amount
            rows += 1
            yield ["", vpg, "", "", month, name, unit_text, quantity_text, amount_text, "", "", ""]

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
