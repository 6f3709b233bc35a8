"""A mapping file's skeleton, drafted from a detailed billing CSV (``soracharge mapping draft``).

:func:`summarize_billing_csv` reads the CSV once, streamed (never whole in memory), and totals its
rows exactly (Decimal) per bill item and per value of every column that may name the customer: the
columns that are not Soracom's own billing columns (:data:`BILLING_COLUMNS`), that is the SIM tag
columns and ``groupName``. :func:`draft_mapping` writes from it a commented YAML mapping whose
CloudBlue ids are ``FILL-IN:`` placeholders (:data:`~soracharge.models.mapping.PLACEHOLDER_PREFIX`):
:func:`~soracharge.models.mapping.parse_mapping` refuses it, naming each one, until all are filled in.

Given the mapping already in use, the draft holds only what that mapping lacks: the customer values
it does not list and the bill items none of its ``items`` matches (its own :meth:`Mapping.item_for`).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact
from typing import BinaryIO, Final

from soracharge.errors import InvalidInputError
from soracharge.logic.billing_csv import (
    AMOUNT,
    BILL_ITEM,
    DATE,
    IMSI,
    QUANTITY,
    UNIT_PRICE,
    no_header,
    number_problem,
    ragged_row,
    shown,
)
from soracharge.models.devices import DEVICE_COLUMNS, describe_thing, device_thing
from soracharge.models.mapping import PLACEHOLDER_PREFIX, Mapping

#: Soracom's own columns of the detailed billing CSV: never a customer. Every other column is a SIM
#: tag (one column per tag) or the SIM group (``groupName``), so it may name the customer.
BILLING_COLUMNS: Final = frozenset(
    {IMSI, DATE, BILL_ITEM, UNIT_PRICE, QUANTITY, AMOUNT, "iccid", "simId", "vpgId", "currency", "taxIncluded"}
    | set(DEVICE_COLUMNS)
)
#: Soracom's SIM tag holding each SIM's own label: one value per SIM, not a customer.
SIM_NAME_TAG: Final = "name"
#: Values of a candidate column shown in the draft's comments (the largest amounts first).
SHOWN_VALUES: Final = 50
#: Bill item families whose names vary (a discount per campaign, a free tier per allowance): the glob
#: suggested when it matches two or more of the file's items.
FAMILY_GLOBS: Final = (
    "volumeDiscount-*",
    "freeTierDataCharge-*",
    "ボリュームディスカウント*",
    "無料利用枠 *",
    "Volume discount*",
    "Free tier *",
)

#: Exact sums: far more digits than any amount has; an inexact addition raises rather than rounds.
_EXACT = Context(prec=400, traps=[Inexact])
_ZERO = Decimal(0)


@dataclass
class Tally:
    """Rows and their exact amount (and the sum of their absolute amounts, to rank by size)."""

    rows: int = 0
    amount: Decimal = _ZERO
    magnitude: Decimal = _ZERO

    def add(self, amount: Decimal) -> None:
        self.rows += 1
        self.amount = _EXACT.add(self.amount, amount)
        self.magnitude = _EXACT.add(self.magnitude, abs(amount))


@dataclass
class ValueTally(Tally):
    """A customer candidate value's rows, and whether more than one SIM (IMSI) carries it."""

    imsi: str | None = None
    several_sims: bool = False


@dataclass
class DeviceTally(Tally):
    """A device's rows, and the candidate columns that name something on any of them."""

    tagged: set[str] = field(default_factory=set)


@dataclass
class ColumnSummary:
    """A column that may name the customer: its values (``""`` for the rows where it is empty)."""

    name: str
    values: dict[str, ValueTally] = field(default_factory=dict)

    @property
    def named(self) -> dict[str, ValueTally]:
        """The non-empty values."""
        return {value: tally for value, tally in self.values.items() if value}

    @property
    def covered(self) -> Decimal:
        """Σ |amount| of the rows with a value."""
        return sum((tally.magnitude for value, tally in self.values.items() if value), _ZERO)

    @property
    def labels_sims(self) -> bool:
        """Each value is on one SIM only (the SIM's own name, an id): a label, not a customer."""
        named = self.named
        if self.name == SIM_NAME_TAG:
            return True
        return len(named) >= 2 and all(tally.imsi is not None and not tally.several_sims for tally in named.values())


@dataclass
class BillingSummary:
    """A detailed billing CSV read to the end: its rows' totals per bill item and per candidate value."""

    source: str
    rows: int = 0
    total: Tally = field(default_factory=Tally)
    items: dict[str, Tally] = field(default_factory=dict)  # in the order first seen
    columns: list[ColumnSummary] = field(default_factory=list)
    #: Each device (``<device column>:<id>``), in the order first seen.
    devices: dict[str, DeviceTally] = field(default_factory=dict)

    def untagged_devices(self, column: str) -> dict[str, DeviceTally]:
        """The devices none of whose rows names anything in ``column``: their customer must come from the mapping."""
        return {thing: tally for thing, tally in self.devices.items() if column not in tally.tagged}

    def column(self, name: str) -> ColumnSummary | None:
        return next((column for column in self.columns if column.name == name), None)


def summarize_billing_csv(stream: BinaryIO, source: str) -> BillingSummary:
    """Read ``stream`` (bytes, incrementally, in one pass) and total it; ``source`` names it in errors.

    UTF-8 with or without a BOM, CRLF or LF line ends, RFC 4180 quoting. Raises
    :class:`~soracharge.errors.InvalidInputError` naming the file and line for a file without a
    header, ``billItemName`` or ``amount`` column, a row with another field count than the header, an
    amount that is not a plain decimal number, or text that CSV cannot read.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        return _summarize(text, source)
    finally:
        text.detach()  # the caller owns the stream


def _summarize(text: Iterable[str], source: str) -> BillingSummary:
    reader = csv.reader(text)
    summary = BillingSummary(source=source)
    line = 1
    try:
        header = next(reader, None)
        if header is None or not any(name.strip() for name in header):
            raise InvalidInputError(f"{source}: {no_header(blank=header is not None)}")
        names = [name.strip() for name in header]
        for required in (BILL_ITEM, AMOUNT):
            if required not in names:
                listed = ", ".join(shown(name) for name in names)
                raise InvalidInputError(
                    f"{source}: line 1: no {required!r} column, so not a detailed billing CSV; the header has: {listed}"
                )
        width = len(names)
        i_item, i_amount = names.index(BILL_ITEM), names.index(AMOUNT)
        i_imsi = names.index(IMSI) if IMSI in names else None
        candidates = [(index, name) for index, name in enumerate(names) if name and name not in BILLING_COLUMNS]
        columns = [ColumnSummary(name) for _, name in candidates]
        summary.columns = columns
        picks = [(index, column.values) for (index, _), column in zip(candidates, columns, strict=True)]
        device_columns = [(names.index(name), name) for name in DEVICE_COLUMNS if name in names]
        devices = summary.devices
        items = summary.items
        total = summary.total
        line = reader.line_num + 1
        for row in reader:
            first_line, line = line, reader.line_num + 1
            if not row:  # a blank line
                continue
            if len(row) != width:
                raise InvalidInputError(f"{source}: line {first_line}: {ragged_row(len(row), width)}")
            amount = _amount(row[i_amount], source, first_line)
            summary.rows += 1
            total.add(amount)
            item = row[i_item]
            tally = items.get(item)
            if tally is None:
                tally = items[item] = Tally()
            tally.add(amount)
            imsi = row[i_imsi] if i_imsi is not None else ""
            for index, values in picks:
                value = row[index]
                value_tally = values.get(value)
                if value_tally is None:
                    value_tally = values[value] = ValueTally(imsi=imsi or None)
                elif imsi and not value_tally.several_sims and value_tally.imsi != imsi:
                    if value_tally.imsi is None:
                        value_tally.imsi = imsi
                    else:
                        value_tally.several_sims = True
                value_tally.add(amount)
            device = next(((name, row[index]) for index, name in device_columns if row[index]), None)
            if device is not None and not imsi:
                thing = device_thing(*device)
                device_tally = devices.get(thing)
                if device_tally is None:
                    device_tally = devices[thing] = DeviceTally()
                device_tally.add(amount)
                device_tally.tagged.update(name for (index, name) in candidates if row[index])
    except csv.Error as exc:
        raise InvalidInputError(f"{source}: line {line}: the CSV cannot be read from this line on: {exc}") from None
    return summary


def _amount(text: str, source: str, line: int) -> Decimal:
    """The amount as the import reads it (the same rule and words: ``billing_csv.number_problem``)."""
    problem = number_problem(AMOUNT, text)
    if problem is not None:
        raise InvalidInputError(f"{source}: line {line}: {shown(problem)}")
    return Decimal(text)


# -- choosing the customer column ----------------------------------------------------------------


def rank_customer_columns(summary: BillingSummary) -> list[ColumnSummary]:
    """The candidate columns, the likeliest customer column first.

    A column whose values each label one SIM (the ``name`` tag, an id) comes last; first comes the
    one with the most distinct non-empty values, then the one whose values cover the most amount
    (Σ |amount| of the rows with a value), then the first in the header.
    """
    return sorted(
        summary.columns,
        key=lambda column: (column.labels_sims, -len(column.named), -column.covered, summary.columns.index(column)),
    )


# -- bill item families ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemEntry:
    """An ``items[]`` entry of the draft: an exact name, or a glob and the items it covers."""

    match: str
    covers: tuple[str, ...]

    @property
    def is_glob(self) -> bool:
        return self.covers != (self.match,)


def glob_escape(text: str) -> str:
    """``text`` as a glob matching itself only (``*``, ``?`` and ``[`` in brackets)."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


def _family_globs(name: str) -> Iterator[tuple[str, bool]]:
    """The globs suggested for an item: ``(glob, is a known family)``."""
    for glob in FAMILY_GLOBS:
        if _glob_matches(glob, name):
            yield glob, True
    prefix, paren, _ = name.partition(" (")
    if paren and prefix.strip():
        yield f"{glob_escape(prefix)} *", False
    head, dash, _ = name.partition("-")  # an identifier's family: basicCharge-plan-D, basicCharge-planX2
    if dash and head and " " not in head:
        yield f"{glob_escape(head)}-*", False


def _glob_matches(glob: str, name: str) -> bool:
    return re.match(fnmatch.translate(glob), name) is not None


def item_entries(names: Iterable[str]) -> list[ItemEntry]:
    """The draft's ``items`` for these bill item names (in their order): globs for families of 2 or more.

    A glob is kept only when it matches two or more of the names and none that another kept glob
    covers, so that every name is matched by exactly one entry whatever their order.
    """
    ordered = list(dict.fromkeys(names))
    suggestions: dict[str, bool] = {}
    for name in ordered:
        for glob, family in _family_globs(name):
            suggestions[glob] = suggestions.get(glob, False) or family
    covered_by = {glob: tuple(name for name in ordered if _glob_matches(glob, name)) for glob in suggestions}
    claimed: dict[str, str] = {}
    for glob in sorted(covered_by, key=lambda glob: (-len(covered_by[glob]), not suggestions[glob], glob)):
        covers = covered_by[glob]
        if len(covers) >= 2 and not any(name in claimed for name in covers):
            claimed.update(dict.fromkeys(covers, glob))
    entries: list[ItemEntry] = []
    emitted: set[str] = set()
    for name in ordered:
        owner = claimed.get(name)
        if owner is None:
            entries.append(ItemEntry(match=name, covers=(name,)))
        elif owner not in emitted:
            emitted.add(owner)
            entries.append(ItemEntry(match=owner, covers=covered_by[owner]))
    return entries


# -- the draft --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """The YAML text of a draft, and what it holds."""

    text: str
    customer_values: int
    bill_items: int
    placeholders: int

    @property
    def nothing_new(self) -> bool:
        return self.customer_values == 0 and self.bill_items == 0


def placeholder(what: str) -> str:
    """A value the user must write, e.g. ``FILL-IN: CloudBlue subscription for customer "東京ガス"``."""
    return f"{PLACEHOLDER_PREFIX} {what}"


def draft_mapping(summary: BillingSummary, old: Mapping | None = None, old_source: str = "") -> Draft:
    """The mapping skeleton for ``summary``'s CSV; with ``old``, only what ``old`` lacks."""
    if old is not None:
        return _draft_additions(summary, old, old_source)
    return _Writer(summary).full()


class _Writer:
    def __init__(self, summary: BillingSummary) -> None:
        self.summary = summary
        self.lines: list[str] = []
        self.placeholders = 0

    def out(self, *lines: str) -> None:
        self.lines.extend(lines)

    def fill_in(self, what: str) -> str:
        self.placeholders += 1
        return _quoted(placeholder(what))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def full(self) -> Draft:
        summary = self.summary
        ranked = rank_customer_columns(summary)
        chosen = ranked[0] if ranked else None
        self.out(
            f"# soracharge mapping draft, from {_one_line(summary.source)}: {summary.rows:,} rows, amounts sum to "
            f"{_money(summary.total.amount)}.",
            f"# Replace each value that starts with {PLACEHOLDER_PREFIX} with a CloudBlue APS UUID: soracharge refuses",
            "# this file, naming each one left, until then. Then check it on the CSV, sending nothing:",
            "#   soracharge import FILE.csv --month yyyyMM --mapping THIS-FILE.yaml --dry-run",
            "# examples/README.md explains every field.",
            "",
            "# The bill's currency, only for files uploaded without the bill's metadata: JPY, USD or EUR.",
            "# currency: JPY",
            "",
        )
        self._candidates(ranked, chosen)
        self._customer(chosen)
        self.out("")
        names = _item_names(summary.items)
        entries = item_entries(names)
        self._items(entries)
        self.out(
            "",
            "# COS (cost of sale: what Soracom bills you; the default), CHARGE or MSRP.",
            "chargeType: COS",
            "# chargeStartDate / chargeEndDate: date-time (2026-10-01T00:00:00Z, the default) or date (2026-10-01).",
            "dateFormat: date-time",
            "# imsi-month (the default): one charge per subscription, resource, SIM and month; none: one per row.",
            "aggregation: imsi-month",
            "# Charges sent per importCharges call (1 to 5000).",
            "packetSize: 500",
        )
        values = len(chosen.named) if chosen else 0
        return Draft(self.text(), values, len(names), self.placeholders)

    def _candidates(self, ranked: list[ColumnSummary], chosen: ColumnSummary | None) -> None:
        summary = self.summary
        self.out("# Candidate customer columns: every column that is not one of Soracom's billing columns (the SIM")
        self.out("# tag columns and groupName), each with its values, their rows and amounts, largest first.")
        if not ranked:
            self.out("#   (none: the CSV has no tag nor group column; tag the SIMs, or write the column below)")
        for column in ranked:
            named = column.named
            empty = column.values.get("")
            share = _share(column.covered, summary.total.magnitude)
            what = f"{len(named):,} value{'s' if len(named) != 1 else ''}, on rows holding {share} of the amount"
            if empty is not None:
                what += f"; empty on {_rows(empty.rows)} (amount {_money(empty.amount)})"
            if column.labels_sims:
                what += "; each value is on one SIM only: a SIM label, not a customer"
            mark = "   <- chosen" if column is chosen else ""
            self.out("#", f"#   {_one_line(column.name)}: {what}{mark}")
            shown = sorted(named.items(), key=lambda pair: (-pair[1].amount, pair[0]))
            for value, tally in shown[:SHOWN_VALUES]:
                self.out(f"#     {_quoted(_one_line(value))}: {_rows(tally.rows)}, amount {_money(tally.amount)}")
            if len(shown) > SHOWN_VALUES:
                self.out(f"#     ... and {len(shown) - SHOWN_VALUES:,} more")
        self.out("")
        if chosen is not None:
            self.out(
                f"# Chosen: {_one_line(chosen.name)}, of the columns whose values are shared by several SIMs the one",
                "# with the most distinct values (then: covering the most amount). If another column above names",
                "# your customers, write it as customer.column and list its values instead.",
            )

    def _customer(self, chosen: ColumnSummary | None) -> None:
        self.out("customer:")
        if chosen is None:
            self.out(f"  column: {self.fill_in('the CSV column that names the customer')}", "  subscriptions: {}")
        else:
            self.out(f"  column: {_quoted(chosen.name)}")
            self._subscriptions(chosen)
        empty = chosen.values.get("") if chosen is not None else None
        rows = f" ({_rows(empty.rows)} in this file, amount {_money(empty.amount)})" if empty is not None else ""
        self.out(
            f"  # Rows whose value is empty or not listed above{rows}:",
            "  # untagged SIMs and devices, and charges not tied to a SIM or device (support, Harvest, the free",
            "  # tier). Delete the default if every row must name a customer.",
            "  default:",
            f"    subscription: {self.fill_in('CloudBlue subscription for rows with no listed customer')}",
        )
        if chosen is not None:
            self._devices(self.summary.untagged_devices(chosen.name))

    def _devices(self, devices: dict[str, DeviceTally], indent: str = "  ") -> None:
        if not devices:
            return
        self.out(
            f"{indent}# Devices whose rows name no customer: give each to a customer listed under subscriptions",
            f"{indent}# (or delete its line: its rows then go to the default).",
            f"{indent}devices:",
        )
        for thing, tally in devices.items():
            _, _, device = thing.partition(":")
            what = f"the customer (a key of subscriptions) of {_one_line(describe_thing(thing))}"
            where = f"{_rows(tally.rows)}, amount {_money(tally.amount)}"
            self.out(f"{indent}  {_quoted(device)}: {self.fill_in(what)}  # {where}")

    def _subscriptions(self, column: ColumnSummary, indent: str = "  ") -> int:
        named = column.named
        values = [value for value in named if _is_utf8(value)]
        skipped = len(named) - len(values)
        if not values:
            self.out(f"{indent}subscriptions: {{}}")
        else:
            self.out(
                f"{indent}subscriptions:", f"{indent}  # Each value exactly as in the CSV: its CloudBlue subscription"
            )
            self.out(f"{indent}  # (and optionally its account: account: UUID).")
        for value in values:
            tally = named[value]
            what = f'CloudBlue subscription for customer "{_one_line(value)}"'
            self.out(
                f"{indent}  {_quoted(value)}:  # {_rows(tally.rows)}, amount {_money(tally.amount)}",
                f"{indent}    subscription: {self.fill_in(what)}",
            )
        if skipped:
            self.out(f"{indent}  # ({skipped} values with bytes that are not UTF-8 left out: the import refuses them)")
        return len(values)

    def _items(self, entries: list[ItemEntry]) -> None:
        items = self.summary.items
        unnamed, unreadable = items.get(""), len([name for name in items if not _is_utf8(name)])
        if unnamed is not None:
            self.out(f"# {_rows(unnamed.rows)} have an empty billItemName: the import refuses them.")
        if unreadable:
            self.out(f"# {unreadable} bill item names with bytes that are not UTF-8 left out: the import refuses them.")
        self.out(
            "# Soracom bill item (billItemName) -> CloudBlue resource; optionally sku, uom (units by default)",
            "# and description. match is the exact name, or a glob (* any text): the first entry matching wins.",
            "items:",
        )
        if not entries:
            self.out("  []  # no bill item in the file")
        for entry in entries:
            if entry.is_glob:
                tallies = [items[name] for name in entry.covers]
                rows = sum(tally.rows for tally in tallies)
                amount = sum((tally.amount for tally in tallies), _ZERO)
                self.out(f"  # A family of {len(entry.covers)} items, {_rows(rows)}, amount {_money(amount)}:")
                for name in entry.covers:
                    tally = items[name]
                    self.out(f"  #   {_one_line(name)}: {_rows(tally.rows)}, amount {_money(tally.amount)}")
                what = 'bill items "' + _one_line(entry.match) + '"'
            else:
                tally = items[entry.match]
                self.out(f"  # {_rows(tally.rows)}, amount {_money(tally.amount)}")
                family = next((glob for glob in FAMILY_GLOBS if _glob_matches(glob, entry.match)), None)
                if family is not None:
                    self.out(f"  # Its name changes (campaigns, plans): match: {_quoted(family)} would catch them all.")
                what = 'bill item "' + _one_line(entry.match) + '"'
            self.out(
                f"  - match: {_quoted(entry.match)}", f"    resource: {self.fill_in(f'CloudBlue resource for {what}')}"
            )


def _draft_additions(summary: BillingSummary, old: Mapping, old_source: str) -> Draft:
    writer = _Writer(summary)
    column_name = old.customer.column
    column = summary.column(column_name)
    if column is None:
        where = "a billing column" if column_name in BILLING_COLUMNS else "not in its header"
        raise InvalidInputError(
            f"{summary.source}: line 1: {old_source}'s customer.column {column_name!r} is {where}; "
            f"the candidate columns are: {', '.join(c.name for c in summary.columns) or 'none'}"
        )
    listed = old.customer.subscriptions
    new_values = ColumnSummary(column.name, {v: t for v, t in column.values.items() if v and v not in listed})
    empty = column.values.get("")
    needs_default = empty is not None and old.customer.default is None
    new_items = [name for name in _item_names(summary.items) if old.item_for(name) is None]
    new_devices = {
        thing: tally
        for thing, tally in summary.untagged_devices(column.name).items()
        if thing.partition(":")[2] not in old.customer.devices
    }
    customers = len([value for value in new_values.named if _is_utf8(value)]) + (1 if needs_default else 0)
    if customers == 0 and not new_items and not new_devices:
        line = (
            f"# nothing new in {_one_line(summary.source)} since {_one_line(old_source)}: "
            "every customer value and bill item is mapped"
        )
        return Draft(line + "\n", 0, 0, 0)
    entries = item_entries(new_items)
    writer.out(
        f"# {customers} new customer value{'s' if customers != 1 else ''}, {len(new_items)} new bill "
        f"item{'s' if len(new_items) != 1 else ''}"
        + (
            f", {len(new_devices)} device{'s' if len(new_devices) != 1 else ''} without a customer"
            if new_devices
            else ""
        )
        + f" since {_one_line(old_source)}",
        f"# (in {_one_line(summary.source)}: {summary.rows:,} rows, amounts sum to {_money(summary.total.amount)}).",
        f"# Add these entries to {_one_line(old_source)}: the customer values under customer.subscriptions, the",
        f"# items at the end of its items. Replace each {PLACEHOLDER_PREFIX} value with a CloudBlue APS UUID first.",
        "",
    )
    if customers or new_devices:
        if old.customer.default is not None:
            writer.out(
                f"# Until they are listed, the rows of these values go to {_one_line(old_source)}'s default",
                f"# subscription {old.customer.default.subscription}.",
            )
        else:
            writer.out(f"# {_one_line(old_source)} has no customer default: the rows of these values are problems.")
        writer.out("customer:", f"  column: {_quoted(column.name)}")
        if new_values.named:
            writer._subscriptions(new_values)
        if needs_default and empty is not None:
            writer.out(
                f"  # {_rows(empty.rows)} have an empty {_one_line(column.name)} (amount {_money(empty.amount)}): "
                "they need a default.",
                "  default:",
                f"    subscription: {writer.fill_in('CloudBlue subscription for rows with no listed customer')}",
            )
        writer._devices(new_devices)
        writer.out("")
    if entries:
        writer._items(entries)
    return Draft(writer.text(), customers, len(new_items), writer.placeholders)


def _item_names(items: dict[str, Tally]) -> list[str]:
    """The bill item names a mapping can list (not empty, UTF-8), in the order first seen."""
    return [name for name in items if name and _is_utf8(name)]


# -- text ---------------------------------------------------------------------------------------------


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar of ``text`` (JSON's string syntax is YAML's)."""
    return json.dumps(text, ensure_ascii=False)


def _one_line(text: str) -> str:
    """Text for a comment: on one line, bytes that are not UTF-8 shown as ``\\xNN``."""
    readable = shown(text)
    return readable if readable.isprintable() else json.dumps(readable, ensure_ascii=False)[1:-1]


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _rows(count: int) -> str:
    return f"{count:,} row{'s' if count != 1 else ''}"


def _money(amount: Decimal) -> str:
    return format(amount, "f")


def _share(part: Decimal, whole: Decimal) -> str:
    if not whole:
        return "0%"
    return f"{(part * 100 / whole).quantize(Decimal('0.1'))}%"
