"""Corrections as differences, never as edits: what a corrected billing CSV changes against the imported one.

CloudBlue's rating engine takes corrections to processed data as positive or negative charges
(shared/DESIGN.md). :func:`write_differences` compares the file a month was imported from with its
corrected version and writes a billing CSV of the differences only, in the same columns, to be
imported as an additional file for the month (object metadata ``import=additional``):

- a row is identified by every column but ``quantity`` and ``amount`` (the SIM, day, bill item,
  unit price, tags, group...); rows with the same identity are summed, in each file;
- for each identity, the difference row carries corrected minus imported ``quantity`` and
  ``amount``: a row only in the corrected file is positive, a row only in the imported one is
  negated, and a row whose numbers did not change is left out; its ``unitPrice`` stays only when the
  amount is exactly that many units at that price (an amount corrected alone, or rows whose rounding
  differs, is an adjustment with no unit price, which the import's row arithmetic does not check);
- the sum of the differences' amounts equals the corrected file's sum minus the imported files',
  exactly (checked), so imported + differences = corrected, charge by charge;
- a second correction is made against everything imported for the month: the first file and the
  differences imported since.

The columns are the corrected file's, then any the imported file alone has. Numbers are exact
``Decimal`` text; a bad number names its file, line and column.

Shared costs (the mapping's ``shared`` rules with ``by``: ``logic/shares.py``) are not additive: the
shares of a sum are not the sums of the shares, and a differences file's own rows are no basis to
share by (its import refuses to). So with an :class:`Allocation` (the mapping, month and currency the
files were imported with), each file's rows no customer owns that the mapping shares out are replaced,
before the comparison, by one row per customer holding that customer's share as its import computed
it (customer column set, the cost's first bill item, the month as date). Then imported + differences
= corrected holds per customer and resource, and the differences hold no cost to share again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext
from typing import BinaryIO, TextIO

from soracharge.errors import InvalidInputError
from soracharge.logic import shares
from soracharge.logic.billing_csv import (
    ALLOCATED,
    AMOUNT,
    BILL_ITEM,
    DATE,
    DIFFERENCES,
    QUANTITY,
    UNIT_PRICE,
    RowArithmetic,
    no_header,
)
from soracharge.models.charges import EXACT, canonical_decimal_text
from soracharge.models.devices import DEVICE_COLUMNS
from soracharge.models.mapping import ChecksSettings, Mapping

#: Columns that are not a row's identity: its numbers (nor is a differences file's mark: ``_identity``).
_NUMBERS = (QUANTITY, AMOUNT)


def _identity(column: str) -> bool:
    return column not in _NUMBERS and not column.startswith(DIFFERENCES)


@dataclass
class _Totals:
    quantity: Decimal | None = None
    amount: Decimal = Decimal(0)


@dataclass
class _Read:
    columns: list[str]
    rows: int = 0
    total: Decimal = Decimal(0)
    by_identity: dict[tuple[str, ...], _Totals] = field(default_factory=dict)


@dataclass(frozen=True)
class Allocation:
    """How the month's files were imported: with this mapping, for this month, in this currency."""

    mapping: Mapping
    month: str
    currency: str

    @property
    def needed(self) -> bool:
        return self.mapping.shares_out


@dataclass(frozen=True)
class Differences:
    """What :func:`write_differences` wrote."""

    imported_rows: int
    corrected_rows: int
    imported_sum: Decimal
    corrected_sum: Decimal
    difference_sum: Decimal
    rows_written: int
    added: int
    removed: int
    changed: int

    @property
    def empty(self) -> bool:
        return self.rows_written == 0


def _priced(unit_price: str, quantity: Decimal | None, amount: Decimal) -> bool:
    """Whether a difference is ``quantity`` units at ``unit_price`` exactly (then it keeps its unit price)."""
    if not unit_price or quantity is None:
        return False
    try:
        return Decimal(unit_price) * quantity == amount
    except InvalidOperation:
        return False


def write_differences(
    imported: Sequence[tuple[str, BinaryIO]],
    corrected: tuple[str, BinaryIO],
    sink: TextIO,
    checks: ChecksSettings | None = None,
    allocation: Allocation | None = None,
) -> Differences:
    """Write to ``sink`` the billing CSV of the corrected file minus everything imported for the month.

    ``imported`` is every file the month was imported from, each ``(name, stream)``: the first file,
    then any differences imported since (a second correction is made against the first file plus
    the first correction's differences, never against the first file alone). Names are for messages.
    The corrected file is a bill a person vouches for: each of its rows must add up as the import checks a
    bill's rows (``checks``, the mapping's; the defaults without one), or nothing is written. With an
    ``allocation`` whose mapping shares costs out, each file's shared costs are compared as the shares its
    import gave each customer (see the module docstring).
    """
    if allocation is not None and not allocation.needed:
        allocation = None
    with localcontext(EXACT):
        if not imported:
            raise InvalidInputError("no imported file to compare the corrected file with")
        befores = [_read(stream, name, allocation=allocation) for name, stream in imported]
        after = _read(corrected[1], corrected[0], RowArithmetic(checks or ChecksSettings()), allocation)
        columns = [c for c in after.columns if not c.startswith(DIFFERENCES)]
        for before_file in befores:
            columns += [c for c in before_file.columns if c not in columns and not c.startswith(DIFFERENCES)]
        # The mark of the file: its import shares no cost out, and knows whether the shares were compared.
        mark = f"{DIFFERENCES}.{ALLOCATED}.{allocation.currency}" if allocation is not None else DIFFERENCES
        columns.append(mark)
        identity_columns = [c for c in columns if _identity(c)]
        before_rows: dict[tuple[str, ...], _Totals] = {}
        for before_file in befores:
            for identity, totals in _aligned(before_file, identity_columns).items():
                into = before_rows.setdefault(identity, _Totals())
                into.amount += totals.amount
                if totals.quantity is not None:
                    into.quantity = (into.quantity or Decimal(0)) + totals.quantity
        before = _Read(
            columns=columns,
            rows=sum(b.rows for b in befores),
            total=sum((b.total for b in befores), Decimal(0)),
        )
        after_rows = _aligned(after, identity_columns)
        writer = csv.writer(sink, lineterminator="\r\n")
        writer.writerow(columns)
        written = added = removed = changed = 0
        difference_sum = Decimal(0)
        for identity in list(after_rows) + [i for i in before_rows if i not in after_rows]:
            old, new = before_rows.get(identity), after_rows.get(identity)
            amount = (new.amount if new else Decimal(0)) - (old.amount if old else Decimal(0))
            quantity = _minus(new.quantity if new else None, old.quantity if old else None)
            if amount == 0 and not quantity:
                continue
            values = dict(zip(identity_columns, identity, strict=True))
            values[AMOUNT] = canonical_decimal_text(amount)
            values[mark] = "yes"
            values[QUANTITY] = canonical_decimal_text(quantity) if quantity is not None else ""
            if not _priced(values.get(UNIT_PRICE, ""), quantity, amount):
                values[UNIT_PRICE] = ""  # an adjustment, not units at a price: the import's arithmetic skips it
            writer.writerow([values.get(column, "") for column in columns])
            written += 1
            added += old is None
            removed += new is None
            changed += old is not None and new is not None
            difference_sum += amount
    if difference_sum != after.total - before.total:  # pragma: no cover - an invariant, not an input error
        raise AssertionError(f"differences sum to {difference_sum}, not {after.total - before.total}: a bug")
    return Differences(
        imported_rows=before.rows,
        corrected_rows=after.rows,
        imported_sum=before.total,
        corrected_sum=after.total,
        difference_sum=difference_sum,
        rows_written=written,
        added=added,
        removed=removed,
        changed=changed,
    )


def _minus(new: Decimal | None, old: Decimal | None) -> Decimal | None:
    if new is None and old is None:
        return None
    return (new or Decimal(0)) - (old or Decimal(0))


def _aligned(read: _Read, identity_columns: list[str]) -> dict[tuple[str, ...], _Totals]:
    """The file's totals keyed by the identity over the union's columns (a column it lacks is empty)."""
    positions = {column: index for index, column in enumerate(c for c in read.columns if _identity(c))}
    aligned: dict[tuple[str, ...], _Totals] = {}
    for identity, totals in read.by_identity.items():
        key = tuple(identity[positions[c]] if c in positions else "" for c in identity_columns)
        into = aligned.setdefault(key, _Totals())
        into.amount += totals.amount
        if totals.quantity is not None:
            into.quantity = (into.quantity or Decimal(0)) + totals.quantity
    return aligned


def _read(
    stream: BinaryIO, name: str, arithmetic: RowArithmetic | None = None, allocation: Allocation | None = None
) -> _Read:
    if allocation is None:
        return _read_rows(stream, name, arithmetic)
    data = stream.read()
    read = _read_rows(io.BytesIO(data), name, arithmetic, allocation)
    _allocate(read, data, name, allocation)
    return read


def _allocate(read: _Read, data: bytes, name: str, allocation: Allocation) -> None:
    """Add the file's shares, one row per customer and shared cost, as its import computed them."""
    from soracharge.logic.charges import plan_import  # charges imports much: only when shares are in play

    mapping = allocation.mapping
    plan = plan_import(io.BytesIO(data), month=allocation.month, currency=allocation.currency, mapping=mapping)
    if not plan.accepted:
        first = plan.problems[0] if plan.problems else None
        where = f"line {first.line}: " if first is not None and first.line else ""
        raise InvalidInputError(
            f"{name}: {where}{first.message if first else 'the file has problems'}: its shared costs cannot be "
            "allocated as its import allocated them (import it, or fix it, first)"
        )
    column = mapping.customer.column  # in the file: a file without it has a problem, so no plan
    identity_columns = [c for c in read.columns if _identity(c)]
    for split in plan.shares:
        for line in split.lines:
            values = {DATE: allocation.month, BILL_ITEM: split.items[0], column: line.customer}
            key = tuple(values.get(c, "") for c in identity_columns)
            totals = read.by_identity.setdefault(key, _Totals())
            totals.amount += line.amount
            read.rows += 1
            read.total += line.amount


def _shared_row(allocation: Allocation, header: list[str], name: str) -> Callable[[list[str]], bool]:
    """Whether a row is a cost no customer owns that the mapping shares out (as ``shares.is_shared`` judges
    its import's row: its customer value empty, and no device the mapping gives to a customer). A file
    without the customer or bill item column cannot be told: it is refused, naming the column."""
    mapping = allocation.mapping
    for needed in (mapping.customer.column, BILL_ITEM):
        if needed not in header:
            raise InvalidInputError(
                f"{name}, line 1: no column {needed!r}: which rows are shared costs cannot be told "
                f"(the header has: {', '.join(header)})"
            )
    customer_at = header.index(mapping.customer.column)
    item_at = header.index(BILL_ITEM)
    devices_at = [header.index(c) for c in DEVICE_COLUMNS if c in header]
    listed = mapping.customer.devices

    def shared(values: list[str]) -> bool:
        customer = values[customer_at]
        if not customer and any(values[i] in listed for i in devices_at if values[i]):
            return False
        return shares.is_shared(customer, values[item_at], mapping)

    return shared


def _read_rows(
    stream: BinaryIO, name: str, arithmetic: RowArithmetic | None = None, allocation: Allocation | None = None
) -> _Read:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        records = csv.reader(text, strict=True)
        header = next(records, None)
        if not header:
            raise InvalidInputError(f"{name}: {no_header(blank=header is not None)}")
        header = [column.strip() for column in header]  # as the import reads a header (logic/billing_csv.py)
        missing = [c for c in (AMOUNT,) if c not in header]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if missing or duplicated:
            raise InvalidInputError(
                f"{name}, line 1: "
                + "; ".join([f"missing column {c!r}" for c in missing] + [f"column {c!r} twice" for c in duplicated])
            )
        read = _Read(columns=list(header))
        identity_at = [i for i, c in enumerate(header) if _identity(c)]
        amount_at = header.index(AMOUNT)
        quantity_at = header.index(QUANTITY) if QUANTITY in header else None
        unit_at = header.index(UNIT_PRICE) if UNIT_PRICE in header else None
        shared = _shared_row(allocation, header, name) if allocation is not None else None
        for row in _rows(records, name, len(header)):
            line, values = row
            amount = _number(values[amount_at], name, line, AMOUNT)
            if amount is None:
                raise InvalidInputError(f"{name}, line {line}, column {AMOUNT}: empty amount")
            if arithmetic is not None:
                said = arithmetic.problem(
                    values[amount_at].strip(),
                    values[quantity_at].strip() if quantity_at is not None else "",
                    values[unit_at].strip() if unit_at is not None else "",
                )
                if said is not None:
                    raise InvalidInputError(
                        f"{name}, line {line}, column {AMOUNT}: {said}. A corrected bill must add up as any bill "
                        "does: nothing was written"
                    )
            quantity = _number(values[quantity_at], name, line, QUANTITY) if quantity_at is not None else None
            if shared is not None and shared(values):
                continue  # its shares are added instead (_allocate)
            totals = read.by_identity.setdefault(tuple(values[i] for i in identity_at), _Totals())
            totals.amount += amount
            if quantity is not None:
                totals.quantity = (totals.quantity or Decimal(0)) + quantity
            read.rows += 1
            read.total += amount
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{name}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InvalidInputError(f"{name}: not valid CSV: {exc}") from None
    return read


def _rows(records: Iterator[list[str]], name: str, width: int) -> Iterator[tuple[int, list[str]]]:
    for values in records:
        line = getattr(records, "line_num", 0)
        if not values:
            continue
        if len(values) != width:
            raise InvalidInputError(f"{name}, line {line}: {len(values)} fields where the header has {width}")
        yield line, values


def _number(text: str, name: str, line: int, column: str) -> Decimal | None:
    if not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInputError(f"{name}, line {line}, column {column}: {text!r} is not a number") from None
    if not value.is_finite():
        raise InvalidInputError(f"{name}, line {line}, column {column}: {text!r} is not a finite number")
    return value
