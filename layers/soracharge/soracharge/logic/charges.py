"""From a Soracom billing CSV to CloudBlue charges: :func:`plan_import`.

Aggregation (the mapping's ``aggregation``):

- ``imsi-month`` (default): one charge per (subscriptionId, accountId, resourceId, thing, month), the
  thing being the row's SIM (its imsi), its device (``models/devices.py``), or nothing.
  ``amount`` is Σ quantity over the rows that have one (the number of rows when none has),
  ``totalPrice`` Σ amount, ``unitPrice`` the rows' common unit price (omitted when they differ or
  some row has none). The period is the billed month: ``chargeStartDate`` its first day,
  ``chargeEndDate`` its last (``2026-10-01T00:00:00Z`` / ``2026-10-31T00:00:00Z``, or ``2026-10-01`` /
  ``2026-10-31`` with ``dateFormat: date``). Bill items mapped to the same resource for the same SIM
  share one charge (their names joined with `` | `` in sorted order).
- ``none``: one charge per row, dated with the row's day (``yyyyMMdd``) or the whole month (``yyyyMM``).

``uom``, ``sku`` and ``description`` come from the mapping's item (the first matching ``items`` entry
when several items share a charge); the description is the item's, else the billItemName, followed
by `` (IMSI <imsi>)`` for a SIM's charge, `` (SoraCam camera <id>)`` (the device's kind and id) for a
device's. ``attributes`` are ``{"billItemName", "month"}``, plus ``"imsi"`` for a SIM's charge, or the
device column and its id (``"soraCamDeviceId": "7CDDE9000001"``) for a device's. ``type`` is the
mapping's ``chargeType``, ``currencyCode`` the caller's.
Numbers are exact and in canonical form: no trailing zeros, no exponent (``310``, ``0.3``).

Keys that make every retry and re-run safe (APS has no idempotency header):

- ``extChargeId = "sc-" + yyyyMM + "-" + hex(sha256(identity))[:32]``, where ``identity`` is the UTF-8
  of the compact JSON array of strings ``[month, subscriptionId, accountId or "", resourceId, thing]``
  (the imsi, ``<device column>:<id>``, or ""; ``json.dumps(..., ensure_ascii=False, separators=(",",
  ":"))``), followed with ``aggregation: none`` by ``date, billItemName, occurrence``: the row's date
  text, its item name, and how many earlier rows of the file had the same identity (``"0"``,
  ``"1"``...), so duplicate rows stay distinct but stable. A charge keeps its id when its amounts
  change (a corrected bill). A file imported on purpose beside the month's first one (object metadata
  ``import=additional``: a second bill, or a correction's differences) passes ``id_suffix="a" + 12 hex
  digits of the SHA-256 of its own SHA-256 and object version``
  (``logic/imports.additional_id_suffix``), appended as ``-a…``: its charges never share an id with
  the first file's, nor with an earlier upload's. A Global coverage bill's charges end with ``-g``
  before that (:func:`charge_id_suffix`), so the two coverages' bills of a month never share an id; a
  Japan coverage charge's id has no mark. A bill of an operator SoracomAccounts lists adds the operator's
  mark (``-op0012345678``) after the coverage's: two operators' bills never share an id either.
- ``extHash = hex(sha256(canonical JSON))`` of every other field of the charge: the wire names
  (camelCase) of the fields that are set (``extChargeId`` included), sorted, compact separators,
  non-ASCII kept, UTF-8, every number as the JSON *string* of its canonical text (``"10.2"``,
  ``"100"``). :func:`charge_hash` computes it from a :class:`Charge`; :func:`build_charges` assembles
  the same text faster.

The same file and mapping give the same charges, ids, hashes and packets, byte for byte, on every run.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal, localcontext
from json.encoder import encode_basestring
from typing import Any, BinaryIO, NamedTuple

from soracharge.errors import InvalidInputError
from soracharge.logic import guards, shares
from soracharge.logic.billing_csv import BillingRows, Tally, days_in_month, read_billing_csv
from soracharge.models.accounts import BillAccount
from soracharge.models.charges import EXACT, Charge, ImportPlan, ProblemKind, SharedSplit, canonical_decimal_text
from soracharge.models.coverage import ID_SUFFIXES, Coverage
from soracharge.models.devices import SHARE, describe_thing, split_thing
from soracharge.models.mapping import ItemTarget, Mapping
from soracharge.models.months import parse_month

_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_ID_SUFFIX = re.compile(r"[a-z0-9]{1,16}(-[a-z0-9]{1,16}){0,2}", re.ASCII)


def charge_id_suffix(coverage: Coverage, additional: str = "", *, operator: str | None = None) -> str:
    """The ``id_suffix`` of a bill's charges: ``g`` for Global coverage, then the operator's mark for an
    operator SoracomAccounts lists (``op0012345678``), then an additional file's own."""
    mark = BillAccount(coverage, operator).id_suffix
    return "-".join(part for part in (ID_SUFFIXES[coverage], mark, additional) if part)


#: A JSON string literal, non-ASCII kept (what ``json.dumps(text, ensure_ascii=False)`` writes), in C.
_json_string: Callable[[str], str] = encode_basestring


def plan_import(
    stream: BinaryIO,
    *,
    month: str,
    currency: str,
    mapping: Mapping,
    source: str = "",
    id_suffix: str = "",
    reopen: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
) -> ImportPlan:
    """Read a detailed billing CSV (streamed, never whole in memory) and plan its import.

    ``month`` is the billed ``yyyyMM``, ``currency`` the bill's (never guessed from the file). The plan
    lists every problem of the file; when there is one, it has no charges.

    The file is read on the fast path first (:mod:`soracharge.logic.billing_frame`: polars, charges
    built a packet at a time); a file it does not take (any problem, or anything it does not handle)
    is read again, from the start, by the pure-Python reader (:mod:`soracharge.logic.billing_csv`),
    which names every problem. That needs the stream again: ``reopen`` opens it anew, else the
    stream must be seekable; otherwise only the pure-Python reader runs.
    """
    month = parse_month(month)
    if not _CURRENCY.fullmatch(currency):
        raise InvalidInputError(f"currency must be an ISO 4217 code of 3 capital letters (JPY), got {currency!r}")
    if id_suffix and not _ID_SUFFIX.fullmatch(id_suffix):
        raise InvalidInputError(
            "id_suffix must be 1-16 lower-case letters or digits (up to three such parts joined by '-'), "
            f"got {id_suffix!r}"
        )
    encoding = guards.encoding_problem(_head(stream))
    if encoding is not None:  # nothing in it can be read as it is: one problem, not one per row
        return _plan(**_EMPTY, month=month, currency=currency, source=source, packet_size=mapping.packet_size,
                     problems=[encoding], problem_count=1, kinds={encoding.kind: 1})  # fmt: skip
    return _checked(_read_plan(stream, month, currency, mapping, source, id_suffix, reopen), mapping)


def _read_plan(
    stream: BinaryIO,
    month: str,
    currency: str,
    mapping: Mapping,
    source: str,
    id_suffix: str,
    reopen: Callable[[], AbstractContextManager[BinaryIO]] | None,
) -> ImportPlan:
    start = stream.tell() if reopen is None and stream.seekable() else None
    if reopen is not None or start is not None:
        plan = _fast_plan(stream, month=month, currency=currency, mapping=mapping, source=source, id_suffix=id_suffix)
        if plan is not None:
            return plan
        if reopen is not None:
            with reopen() as again:
                return _python_plan(again, month, currency, mapping, source, id_suffix)
        stream.seek(start)  # type: ignore[arg-type]
    return _python_plan(stream, month, currency, mapping, source, id_suffix)


def _checked(plan: ImportPlan, mapping: Mapping) -> ImportPlan:
    """The plan with the mistakes only the whole file shows (``logic/guards.py``) first among its problems:
    a plan with any problem has no charges."""
    found = guards.near_misses(plan, mapping)
    if not found:
        return plan
    kinds = dict(plan.kinds)
    kinds[ProblemKind.NEAR_MISS] = len(found)
    return plan.model_copy(
        update={
            "problems": [*found, *plan.problems],
            "problem_count": plan.problem_count + len(found),
            "kinds": kinds,
            "charges": [],
            "charges_sum": Decimal(0),
        }
    )


def _head(stream: BinaryIO) -> bytes:
    """The file's first bytes, left to be read again (a buffered stream's peek, else read and seek back)."""
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return bytes(peek(guards.SNIFF_BYTES)[: guards.SNIFF_BYTES])
    if stream.seekable():
        start = stream.tell()
        head = stream.read(guards.SNIFF_BYTES)
        stream.seek(start)
        return head
    return b""


#: The fields of a plan of a file nothing was read of.
_EMPTY: dict[str, Any] = {
    "rows": 0,
    "charges": [],
    "unmapped_rows": 0,
    "csv_sum": Decimal(0),
    "charges_sum": Decimal(0),
    "per_customer": {},
    "per_subscription": {},
    "per_item": {},
}


def _fast_plan(
    stream: BinaryIO, *, month: str, currency: str, mapping: Mapping, source: str, id_suffix: str
) -> ImportPlan | None:
    # Imported here: billing_frame builds its charges with this module's ChargeBuilder.
    from soracharge.logic.billing_frame import FrameCharges, canonical, read_frame
    from soracharge.logic.polars_engine import pl

    try:
        with localcontext(EXACT):
            read = read_frame(stream, month=month, mapping=mapping, currency=currency)
            if read is None:
                return None
            charges_sum = canonical(read.charges["total"].sum())
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        # e.g. a sum beyond Decimal(38, 18) (the pure-Python reader's integers have no bound), or a fault of
        # polars itself (a panic derives from BaseException): the pure-Python reader reads the file instead.
        return None
    charges = FrameCharges(
        read.charges, month=month, currency=currency, mapping=mapping, id_suffix=id_suffix, splits=read.shares
    )
    return _plan(
        month=month,
        currency=currency,
        source=source,
        rows=read.rows,
        packet_size=mapping.packet_size,
        charges=charges,
        problems=[],
        problem_count=0,
        unmapped_rows=0,
        csv_sum=read.csv_sum,
        charges_sum=charges_sum,
        per_customer=read.per_customer,
        per_subscription=read.per_subscription,
        per_item=read.per_item,
        sims_per_customer=read.sims_per_customer,
        devices_per_customer=read.devices_per_customer,
        shares=read.shares,
        unowned_per_item=read.unowned_per_item,
        per_value=read.per_value,
        device_ids=read.device_ids,
        listed_as_imsis=read.listed_as_imsis,
    )


def _python_plan(
    stream: BinaryIO, month: str, currency: str, mapping: Mapping, source: str, id_suffix: str
) -> ImportPlan:
    with _cyclic_gc_paused(), localcontext(EXACT):
        read = read_billing_csv(stream, month=month, mapping=mapping)
        splits = _shared(read, mapping, currency) if mapping.shared and not read.problem_count else []
        charges = (
            []
            if read.problem_count
            else build_charges(read, mapping=mapping, currency=currency, id_suffix=id_suffix, splits=splits)
        )
        per_subscription = _per_subscription(read, mapping, charges)
        charges_sum = sum((charge.total_price for charge in charges), Decimal(0))
    return _plan(
        month=month,
        currency=currency,
        source=source,
        rows=read.rows,
        packet_size=mapping.packet_size,
        charges=charges,
        problems=read.problems,
        problem_count=read.problem_count,
        unmapped_rows=read.unmapped_rows,
        csv_sum=read.csv_sum,
        charges_sum=charges_sum,
        per_customer=read.per_customer,
        per_subscription=per_subscription,
        per_item=read.per_item,
        sims_per_customer={customer: len(imsis) for customer, imsis in read.sims.items()},
        devices_per_customer={customer: len(things) for customer, things in read.devices.items()},
        kinds=read.kinds,
        other_months=read.other_months,
        shares=splits,
        unowned_per_item=_unowned(read),
        per_value=read.per_value,
        device_ids=sorted(read.device_ids),
        listed_as_imsis=sorted(read.listed_as_imsis),
    )


def _unowned(read: BillingRows) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    with localcontext(EXACT):
        for key, tally in read.tallies.items():
            if not tally.customer:
                totals[key[1]] = totals.get(key[1], Decimal(0)) + tally.amount
    return totals


def _shared(read: BillingRows, mapping: Mapping, currency: str) -> list[SharedSplit]:
    """The file's shared costs split (``logic/shares.py``); a cost that cannot be shared is a problem of ``read``."""
    amounts = ((tally.customer, key[1], tally.amount) for key, tally in read.tallies.items())
    splits, problems = shares.split_shared(amounts, mapping, currency, differences=read.differences)
    for problem in problems:
        read.add_problem(None, None, None, problem, ProblemKind.SETTING)
    return splits


def _plan(**fields: Any) -> ImportPlan:
    """The plan either reader made, once its charges are checked to add up to the CSV exactly; its amounts per
    customer are what each customer is charged (its shares of the shared costs included)."""
    if not fields["problem_count"] and fields["charges_sum"] != fields["csv_sum"]:
        raise AssertionError(
            f"Σ totalPrice {fields['charges_sum']} differs from Σ amount {fields['csv_sum']}: a bug, nothing sent"
        )
    if fields.get("shares"):
        fields["per_customer"] = shares.charged_per_customer(fields["per_customer"], fields["shares"])
    # Each figure in one text and each table in one order, whichever reader made it (the Python reader's sums keep
    # the CSV's trailing zeros; polars groups in no set order): the same file gives the same plan, byte for byte.
    for name in ("csv_sum", "charges_sum"):
        fields[name] = _canonical(fields[name])
    for name in ("per_customer", "per_subscription", "per_item", "unowned_per_item", "per_value"):
        if name in fields:
            fields[name] = {key: _canonical(value) for key, value in sorted(fields[name].items())}
    for name in ("sims_per_customer", "devices_per_customer", "other_months"):
        if name in fields:
            fields[name] = dict(sorted(fields[name].items()))
    return ImportPlan(**fields)


def _canonical(value: Decimal) -> Decimal:
    return Decimal(canonical_decimal_text(value))


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a plan is built.

    A plan creates tens of thousands of long-lived objects (tallies, charges) and no reference
    cycle: the collector would walk them again and again for nothing (a quarter of the time spent
    building the charges). Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _per_subscription(read: BillingRows, mapping: Mapping, charges: list[Charge]) -> dict[str, Decimal]:
    """Σ totalPrice per subscription: of the charges, or (a file with problems, no charges) of the rows that mapped."""
    totals: dict[str, Decimal] = {}
    if charges:
        for charge in charges:
            totals[charge.subscription_id] = totals.get(charge.subscription_id, Decimal(0)) + charge.total_price
        return totals
    for key, tally in read.tallies.items():
        if shares.is_shared(tally.customer, key[1], mapping):
            continue  # a cost a rule shares out by a basis: no subscription's own, and not split in a refused file
        target = mapping.target_of(tally.customer, key[1])
        if target is not None:  # None: a customer the mapping has no subscription for (a problem of the file)
            totals[target.subscription] = totals.get(target.subscription, Decimal(0)) + tally.amount
    return totals


def build_charges(
    read: BillingRows, *, mapping: Mapping, currency: str, id_suffix: str, splits: Sequence[SharedSplit]
) -> list[Charge]:
    """The charges of a file read without problems, sorted by ``extChargeId``: the rows' own, and the
    ``splits`` of the costs shared out (``logic/shares.py``), one charge per customer's share.

    One loop per charge with local names only: a 1,000,000-row file has tens of thousands of charges.
    """
    month = read.month
    customer_for = mapping.target_of
    item_for = mapping.item_for
    # identity -> the (billItemName, item, tally) that make the charge, in file order.
    groups: dict[tuple[str, ...], list[tuple[str, ItemTarget, Tally]]] = {}
    occurrences: dict[tuple[str, ...], int] = {}
    for key, tally in read.tallies.items():
        name = key[1]
        if splits and shares.is_shared(tally.customer, name, mapping):
            continue  # shared out: its charges are the shares
        customer = customer_for(tally.customer, name)
        item = item_for(name)
        # Only rows that mapped are tallied:
        assert customer is not None
        assert item is not None
        identity: tuple[str, ...] = (month, customer.subscription, customer.account or "", item.resource, tally.thing)
        if not read.aggregated:  # key: customer, item, imsi, unitPrice, device ids..., date, line
            identity = (*identity, key[-2], name)
            occurrence = occurrences.get(identity, 0)
            occurrences[identity] = occurrence + 1
            identity = (*identity, str(occurrence))
        members = groups.get(identity)
        if members is None:
            groups[identity] = [(name, item, tally)]
        else:
            members.append((name, item, tally))

    rank = {id(item): index for index, item in enumerate(mapping.items)}
    builder = ChargeBuilder(
        month=month, currency=currency, mapping=mapping, id_suffix=id_suffix, notes=shares.notes(splits)
    )
    charges = []
    for identity, members in groups.items():
        if len(members) == 1:
            name, item, tally = members[0]
            total = tally.amount
            amount = tally.quantity if tally.rows != tally.missing_quantity else Decimal(tally.rows)
            unit_price = tally.unit_price
        else:
            name, item, total, amount, unit_price = _merged(members, rank)
        charges.append(builder.build(identity, name, item, total, amount, unit_price))
    for split in splits:
        charges += [builder.build(*share) for share in share_rows(split, mapping, rank, month)]
    charges.sort(key=_by_ext_charge_id)
    return charges


#: What a share's charge is built of: ``ChargeBuilder.build``'s arguments (identity, name, item, total, amount, price).
ShareRow = tuple[tuple[str, ...], str, ItemTarget, Decimal, Decimal, Decimal]


def share_rows(split: SharedSplit, mapping: Mapping, rank: dict[int, int], month: str) -> list[ShareRow]:
    """What :meth:`ChargeBuilder.build` makes each share's charge of (none for a share of 0): quantity 1, the
    share its price; its description says its basis (``shares.notes``)."""
    name = " | ".join(split.items)
    items = [item for item in map(mapping.item_for, split.items) if item is not None]
    item = min(items, key=lambda item: rank[id(item)])
    rows: list[ShareRow] = []
    for line in split.lines:
        if not line.amount:
            continue
        target = mapping.customer_for(line.customer)
        assert target is not None  # a share goes to a customer that maps
        thing = f"{SHARE}:{line.customer}"
        identity: tuple[str, ...] = (month, target.subscription, target.account or "", split.resource, thing)
        rows.append((identity, name, item, line.amount, Decimal(1), line.amount))
    return rows


class ChargeBuilder:
    """Builds one charge (its extChargeId, extHash and JSON pieces) at a time: the same bytes from either reader.

    ``identity`` is ``(month, subscriptionId, accountId or "", resourceId, thing)``, followed with
    ``aggregation: none`` by ``(date, billItemName, occurrence)`` (see the module docstring).
    """

    __slots__ = (
        "_charge_type",
        "_currency",
        "_month",
        "_month_end",
        "_month_start",
        "_notes",
        "_shapes",
        "_suffix",
        "_time",
    )

    #: Distinct shapes kept at most (a shape is shared by the charges of one subscription, resource and item).
    SHAPES_KEPT = 50_000

    def __init__(
        self,
        *,
        month: str,
        currency: str,
        mapping: Mapping,
        id_suffix: str,
        notes: dict[tuple[str, str], str],
    ) -> None:
        self._month = month
        #: What a charge says of its thing, by (resource, thing), where it is not what describe_thing says.
        self._notes = notes
        self._currency = currency
        self._charge_type = mapping.charge_type
        self._suffix = f"-{id_suffix}" if id_suffix else ""  # an additional file's (plan_import checks it)
        self._time = "T00:00:00Z" if mapping.date_format == "date-time" else ""
        self._month_start = f"{month[:4]}-{month[4:]}-01{self._time}"
        self._month_end = f"{month[:4]}-{month[4:]}-{days_in_month(month):02d}{self._time}"
        # The JSON texts shared by the charges of one subscription, resource, item, unit price and period.
        self._shapes: dict[tuple[object, ...], _Shape] = {}

    @property
    def month(self) -> str:
        return self._month

    def build(
        self,
        identity: tuple[str, ...],
        name: str,
        item: ItemTarget,
        total: Decimal,
        amount: Decimal,
        unit_price: Decimal | None,
    ) -> Charge:
        """The charge of ``identity``: ``total`` its totalPrice, ``amount`` its quantity, all Decimals canonical.
        Its description names its thing as the builder's ``notes`` say (a share's basis), else as
        :func:`describe_thing` does."""
        month, currency = self._month, self._currency
        _, subscription, account, resource, thing = identity[:5]
        if unit_price is not None and unit_price * amount != total:
            unit_price = None  # e.g. a discount row priced per unit but billed as a lump: no misleading unitPrice
        if len(identity) > 5 and len(identity[5]) == 8:  # aggregation none, a daily row: that day
            day = identity[5]
            start = end = f"{day[:4]}-{day[4:6]}-{day[6:]}{self._time}"
        else:  # the billed month
            start, end = self._month_start, self._month_end
        shapes = self._shapes
        shape_key = (subscription, account, resource, name, id(item), unit_price, start)
        shape = shapes.get(shape_key)
        if shape is None:
            if len(shapes) >= self.SHAPES_KEPT:
                shapes.clear()
            shape = shapes[shape_key] = _Shape.of(
                identity, name, item, unit_price, start, end, currency, self._charge_type
            )
        description = item.description or name
        # The thing's attribute, before or after "month" in the attributes' sorted keys.
        before_month = after_month = ""
        attributes = {"billItemName": name, "month": month}
        if thing:
            note = self._notes.get((resource, thing))
            description = f"{description} ({note or describe_thing(thing)})"
            device = split_thing(thing)
            key, value = device if device is not None else ("imsi", thing)
            attributes[key] = value
            if key < "month":
                before_month = f"{_json_string(key)}:{_json_string(value)},"
            else:
                after_month = f",{_json_string(key)}:{_json_string(value)}"
        # extChargeId, as ext_charge_id() computes it.
        if len(identity) == 5:
            identity_json = f"{shape.identity_head}{_json_string(thing)}]"
        else:
            identity_json = "[" + ",".join(map(_json_string, identity)) + "]"
        ext_id = f"sc-{month}-{hashlib.sha256(identity_json.encode()).hexdigest()[:32]}{self._suffix}"
        # The Decimals are canonical already (billing_csv.unscaled), but str() writes an exponent below 1E-6.
        amount_text, total_text = str(amount), str(total)
        if "E" in amount_text:
            amount_text = canonical_decimal_text(amount)
        if "E" in total_text:
            total_text = canonical_decimal_text(total)
        # The canonical JSON of every field but extHash (keys sorted), as charge_hash() computes it.
        canonical = (
            f"{shape.head}{amount_text}{shape.after_amount}{before_month}{shape.month}{after_month}"
            f"{shape.after_attributes}"
            f'{_json_string(description)},"extChargeId":"{ext_id}{shape.after_ext_id}{total_text}{shape.tail}'
        )
        return Charge.from_trusted(
            {
                "type": self._charge_type,
                "subscription_id": subscription,
                "account_id": account or None,
                "resource_id": resource,
                "unit_price": unit_price,
                "total_price": total,
                "amount": amount,
                "currency_code": currency,
                "uom": item.uom,
                "charge_start_date": start,
                "charge_end_date": end,
                "duration": None,
                "duration_uom": None,
                "description": description,
                "sku": item.sku,
                "mpn": None,
                "po_number": None,
                "ext_charge_id": ext_id,
                "ext_hash": hashlib.sha256(canonical.encode()).hexdigest(),
                "attributes": attributes,
            }
        )


class _Shape(NamedTuple):
    """Pieces of the canonical JSON (and of the identity JSON) that many charges share.

    A charge's canonical JSON is ``head amount after_amount [thing,] month [,thing] after_attributes
    description ,"extChargeId":"id after_ext_id totalPrice tail``: keys in sorted order, as
    :func:`charge_hash` (the thing's attribute, ``imsi`` or a device column, sorts before or after ``month``).
    """

    identity_head: str
    head: str
    after_amount: str
    month: str
    after_attributes: str
    after_ext_id: str
    tail: str

    @classmethod
    def of(
        cls,
        identity: tuple[str, ...],
        name: str,
        item: ItemTarget,
        unit_price: Decimal | None,
        start: str,
        end: str,
        currency: str,
        charge_type: str,
    ) -> _Shape:
        month, subscription, account, resource = identity[:4]
        js = _json_string
        account_json = f'"accountId":{js(account)},' if account else ""
        sku_json = f'"sku":{js(item.sku)},' if item.sku is not None else ""
        unit_price_json = f'"unitPrice":{js(canonical_decimal_text(unit_price))},' if unit_price is not None else ""
        return cls(
            identity_head=f"[{js(month)},{js(subscription)},{js(account)},{js(resource)},",
            head=f'{{{account_json}"amount":"',
            after_amount=f'","attributes":{{"billItemName":{js(name)},',
            month=f'"month":{js(month)}',
            after_attributes=(
                f'}},"chargeEndDate":{js(end)},"chargeStartDate":{js(start)},'
                f'"currencyCode":{js(currency)},"description":'
            ),
            after_ext_id=f'","resourceId":{js(resource)},{sku_json}"subscriptionId":{js(subscription)},"totalPrice":"',
            tail=f'","type":{js(charge_type)},{unit_price_json}"uom":{js(item.uom)}}}',
        )


def _by_ext_charge_id(charge: Charge) -> str:
    return charge.ext_charge_id or ""


def _merged(
    members: list[tuple[str, ItemTarget, Tally]], rank: dict[int, int]
) -> tuple[str, ItemTarget, Decimal, Decimal, Decimal | None]:
    """Several bill items of one SIM mapped to the same resource (or unit prices that differ): one charge.

    Its billItemName joins the names (sorted, `` | ``), its item is the first matching ``items`` entry,
    its amount sums the quantities of the rows that have one (counts the rows when none has), and
    it has a unit price only when every row has the same one.
    """
    name = " | ".join(sorted({member[0] for member in members}))
    item = min((member[1] for member in members), key=lambda item: rank[id(item)])
    tallies = [member[2] for member in members]
    unit_prices = {tally.unit_price for tally in tallies}
    unit_price = unit_prices.pop() if len(unit_prices) == 1 else None
    quantity_rows = sum(tally.quantity_rows for tally in tallies)
    quantities = (tally.quantity for tally in tallies) if quantity_rows else (Decimal(t.rows) for t in tallies)
    # Canonical, as a single tally's sums are: -3571.3 + 10.3 is Decimal('-3561.0'), written -3561.
    total = Decimal(canonical_decimal_text(sum((tally.amount for tally in tallies), Decimal(0))))
    return name, item, total, Decimal(canonical_decimal_text(sum(quantities, Decimal(0)))), unit_price


def ext_charge_id(identity: Iterable[str]) -> str:
    """``sc-<yyyyMM>-<first 32 hex of sha256 over the compact JSON array of the identity>``."""
    parts = list(identity)
    # The same text as json.dumps(parts, ensure_ascii=False, separators=(",", ":")), faster.
    text = "[" + ",".join(map(_json_string, parts)) + "]"
    return f"sc-{parts[0]}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}"


def charge_hash(charge: Charge) -> str:
    """``extHash`` of a charge: sha256 hex of the canonical JSON of every field but ``extHash``."""
    wire = charge.model_dump(by_alias=True, exclude_none=True, exclude={"ext_hash"})
    canonical = {
        key: canonical_decimal_text(value) if isinstance(value, Decimal) else value for key, value in wire.items()
    }
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
