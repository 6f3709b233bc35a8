"""From a Soracom billing CSV to CloudBlue charges: :func:`plan_import`.

Aggregation (the mapping's ``aggregation``):

- ``imsi-month`` (default): one charge per (subscriptionId, accountId, resourceId, imsi, month).
  ``amount`` is Σ quantity over the rows that have one (the number of rows when none has),
  ``totalPrice`` Σ amount, ``unitPrice`` the rows' common unit price (omitted when they differ or
  have none). The period is the billed month: ``chargeStartDate`` its first day, ``chargeEndDate`` its
  last (``2026-10-01T00:00:00Z`` / ``2026-10-31T00:00:00Z``, or ``2026-10-01`` / ``2026-10-31`` with
  ``dateFormat: date``). Bill items mapped to the same resource for the same SIM share one charge.
- ``none``: one charge per row, dated with the row's day (``yyyyMMdd``) or the whole month (``yyyyMM``).

``uom``, ``sku`` and ``description`` come from the mapping's item (of the first matching ``items``
entry when several items share a charge); the description defaults to the billItemName, and ends
with `` (IMSI <imsi>)`` when the charge is a SIM's. ``attributes`` are ``{"billItemName", "month"}``
plus ``"imsi"`` for a SIM's charge (several names are joined with `` | `` in sorted order).

Keys that make every retry and re-run safe (APS has no idempotency header):

- ``extChargeId = "sc-" + yyyyMM + "-" + sha256(identity)[:32]`` (hex), where ``identity`` is the UTF-8
  of the compact JSON array ``[month, subscriptionId, accountId or "", resourceId, imsi]``, followed
  with ``aggregation: none`` by ``date, billItemName, occurrence``: the row's date text, its item name,
  and how many earlier rows of the file had the same identity (0, 1, ...), so duplicate rows stay
  distinct but stable.
- ``extHash = sha256(canonical JSON of every other field of the charge)`` (hex): the wire names
  (camelCase) of the fields that are set, sorted, compact separators, non-ASCII kept, UTF-8, every
  number as the JSON string of its canonical text (trailing zeros dropped: ``"10.2"``, ``"100"``).

The same file and mapping give the same charges, ids, hashes and packets, byte for byte, on every run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, BinaryIO

from soracharge.errors import InvalidInputError
from soracharge.logic.billing_csv import BillingRows, Tally, days_in_month, read_billing_csv
from soracharge.models.charges import Charge, ImportPlan, canonical_decimal_text
from soracharge.models.mapping import ItemTarget, Mapping
from soracharge.models.months import parse_month

_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)


def plan_import(stream: BinaryIO, *, month: str, currency: str, mapping: Mapping, source: str = "") -> ImportPlan:
    """Read a detailed billing CSV (streamed, never whole in memory) and plan its import.

    ``month`` is the billed ``yyyyMM``, ``currency`` the bill's (never guessed from the file). The plan
    lists every problem of the file; when there is one, it has no charges.
    """
    month = parse_month(month)
    if not _CURRENCY.fullmatch(currency):
        raise InvalidInputError(f"currency must be an ISO 4217 code of 3 capital letters (JPY), got {currency!r}")
    read = read_billing_csv(stream, month=month, mapping=mapping)
    per_subscription = _per_subscription(read, mapping)
    charges = [] if read.problem_count else build_charges(read, mapping=mapping, currency=currency)
    charges_sum = sum((charge.total_price for charge in charges), Decimal(0))
    if not read.problem_count and charges_sum != read.csv_sum:
        raise AssertionError(f"Σ totalPrice {charges_sum} differs from Σ amount {read.csv_sum}: a bug, nothing sent")
    return ImportPlan(
        month=month,
        currency=currency,
        source=source,
        rows=read.rows,
        packet_size=mapping.packet_size,
        charges=charges,
        problems=read.problems,
        problem_count=read.problem_count,
        csv_sum=read.csv_sum,
        charges_sum=charges_sum,
        per_customer=read.per_customer,
        per_subscription=per_subscription,
        per_item=read.per_item,
    )


def _per_subscription(read: BillingRows, mapping: Mapping) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for key, tally in read.tallies.items():
        target = mapping.customer_for(key[0])
        assert target is not None  # only rows that mapped are tallied
        totals[target.subscription] = totals.get(target.subscription, Decimal(0)) + tally.amount
    return totals


@dataclass
class _ChargeTotals:
    """The tallies that become one charge."""

    imsi: str
    day: str
    item: ItemTarget
    item_rank: int
    names: set[str] = field(default_factory=set)
    amount: Decimal = Decimal(0)
    quantity: Decimal = Decimal(0)
    rows: int = 0
    quantity_rows: int = 0
    unit_prices: set[Decimal] = field(default_factory=set)
    unit_price_missing: bool = False

    def add(self, name: str, item: ItemTarget, rank: int, tally: Tally) -> None:
        self.names.add(name)
        if rank < self.item_rank:
            self.item, self.item_rank = item, rank
        self.amount += tally.amount
        self.quantity += tally.quantity
        self.rows += tally.rows
        self.quantity_rows += tally.quantity_rows
        if tally.same_unit_price and tally.unit_price is not None:
            self.unit_prices.add(tally.unit_price)
        else:
            self.unit_price_missing = True

    def unit_price(self, first: Decimal | None) -> Decimal | None:
        if self.unit_price_missing or len(self.unit_prices) != 1:
            return None
        return first


def build_charges(read: BillingRows, *, mapping: Mapping, currency: str) -> list[Charge]:
    """The charges of a file read without problems, sorted by ``extChargeId``."""
    month = read.month
    rank = {id(item): index for index, item in enumerate(mapping.items)}
    groups: dict[tuple[str, ...], _ChargeTotals] = {}
    first_unit_price: dict[tuple[str, ...], Decimal | None] = {}
    occurrences: dict[tuple[str, ...], int] = {}
    for key, tally in read.tallies.items():  # file order: the order of each key's first row
        customer_value, name, imsi = key[0], key[1], key[2]
        customer = mapping.customer_for(customer_value)
        item = mapping.item_for(name)
        assert customer is not None, "only rows that mapped are tallied"
        assert item is not None, "only rows that mapped are tallied"
        identity: tuple[str, ...] = (month, customer.subscription, customer.account or "", item.resource, imsi)
        day = month
        if not read.aggregated:
            day = key[3]
            identity = (*identity, day, name)
            occurrence = occurrences.get(identity, 0)
            occurrences[identity] = occurrence + 1
            identity = (*identity, str(occurrence))
        group = groups.get(identity)
        if group is None:
            group = groups[identity] = _ChargeTotals(imsi=imsi, day=day, item=item, item_rank=rank[id(item)])
            first_unit_price[identity] = tally.unit_price
        group.add(name, item, rank[id(item)], tally)

    period = _Period(month, mapping.date_format)
    charges = []
    for identity, group in groups.items():
        subscription, account = identity[1], identity[2] or None
        names = sorted(group.names)
        name_text = " | ".join(names)
        description = group.item.description or name_text
        attributes = {"billItemName": name_text, "month": month}
        if group.imsi:
            description += f" (IMSI {group.imsi})"
            attributes["imsi"] = group.imsi
        start, end = period.bounds(group.day)
        fields: dict[str, Any] = {
            "type": mapping.charge_type,
            "subscriptionId": subscription,
            "accountId": account,
            "resourceId": identity[3],
            "unitPrice": group.unit_price(first_unit_price[identity]),
            "totalPrice": group.amount,
            "amount": group.quantity if group.quantity_rows else Decimal(group.rows),
            "currencyCode": currency,
            "uom": group.item.uom,
            "chargeStartDate": start,
            "chargeEndDate": end,
            "description": description,
            "sku": group.item.sku,
            "extChargeId": ext_charge_id(identity),
            "attributes": attributes,
        }
        fields = {key: value for key, value in fields.items() if value is not None}
        fields["extHash"] = _hash_of_wire(fields)
        charges.append(Charge.model_validate(fields))
    charges.sort(key=lambda charge: charge.ext_charge_id or "")
    return charges


def ext_charge_id(identity: Iterable[str]) -> str:
    """``sc-<yyyyMM>-<first 32 hex of sha256 over the compact JSON array of the identity>``."""
    parts = list(identity)
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return f"sc-{parts[0]}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}"


def charge_hash(charge: Charge) -> str:
    """``extHash`` of a charge: sha256 hex of the canonical JSON of every field but ``extHash``."""
    return _hash_of_wire(charge.model_dump(by_alias=True, exclude_none=True, exclude={"ext_hash"}))


def _hash_of_wire(wire: dict[str, Any]) -> str:
    canonical = {
        key: canonical_decimal_text(value) if isinstance(value, Decimal) else value
        for key, value in wire.items()
        if key != "extHash"
    }
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Period:
    """chargeStartDate and chargeEndDate texts of a month or of one of its days."""

    def __init__(self, month: str, date_format: str) -> None:
        self.month = month
        self.suffix = "T00:00:00Z" if date_format == "date-time" else ""
        self.first = self._text(month + "01")
        self.last = self._text(f"{month}{days_in_month(month):02d}")

    def _text(self, day: str) -> str:
        return f"{day[:4]}-{day[4:6]}-{day[6:8]}{self.suffix}"

    def bounds(self, day: str) -> tuple[str, str]:
        if len(day) == 6:
            return self.first, self.last
        text = self._text(day)
        return text, text
