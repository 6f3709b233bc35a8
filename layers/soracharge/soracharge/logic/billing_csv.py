"""Streaming read of Soracom's detailed billing CSV: validate every row and total it by key.

The file (``local/soracharge_local/simulators/soracom_data.py`` writes a faithful one) is UTF-8 with
a BOM, has a header row, RFC 4180 quoting, and columns that vary from file to file: they are found
by header name, never by position. The columns used:

==============  ========  =====================================================================
column          required  accepted values
==============  ========  =====================================================================
imsi            yes       digits, or empty for charges not tied to a SIM
<device ids>    no        ``deviceId``, ``gadgetId``, ``loraDeviceId``, ``loraGatewayId``, ``sigfoxDeviceId``,
                          ``soraCamDeviceId`` (``models/devices.py``): empty, or a device id; a row
                          names at most one SIM or device
date            yes       ``yyyyMMdd`` (a real day) or ``yyyyMM``, inside the billed month
billItemName    yes       a name that one of the mapping's ``items`` matches
amount          yes       a plain decimal number (``-12.5``): no exponent, no NaN or Infinity,
                          at most 18 decimals and 20 digits before the point
unitPrice       no        empty, or such a number
quantity        no        empty, or such a number
<customer>      yes       the mapping's ``customer.column``: a listed value, or any with a default
                          (a device listed in the mapping's ``customer.devices`` belongs to its
                          customer; its row's value must then be empty or that customer)
==============  ========  =====================================================================

Every other column is ignored, and so are bytes that are not UTF-8 in them. Every problem is
collected, not only the first (the first :data:`MAX_STORED_PROBLEMS` are kept, the others counted),
each with its file line (1 is the header; a record's first physical line, also when quoted fields
hold line breaks), its column and its value.

Speed (the goal: at least half the rate of a bare ``csv.reader`` loop over the same file; see
``bench/README.md``). The loop over rows builds no object per row beyond the row and two lookup
keys, and calls nothing in Python:

- a line without a double quote is split on commas (what ``csv.reader`` would do with it, faster);
  any other goes to ``csv.reader`` (:func:`iter_records` is the reference of this split);
- a row is folded into the :class:`Tally` of its raw key ``(customer value, billItemName, imsi,
  unitPrice, device ids...)``, found with one dict lookup; the unit price is part of the key, so that a charge's
  common unit price needs no check per row;
- ``(amount, quantity)`` texts are parsed once per distinct pair, into integers scaled by 10**18,
  packed with a row count into ONE integer (:func:`pack`): a row costs one exact integer addition;
- anything not seen before (a new key, new number texts, a date not in the month) takes the slow
  path, which validates the whole row and records its problems.

Memory grows with the distinct keys, not with the rows (the lookup caches are bounded).
"""

from __future__ import annotations

import calendar
import csv
import io
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from operator import itemgetter
from typing import BinaryIO, Final

from soracharge.models.charges import ImportProblem, ProblemKind
from soracharge.models.devices import DEVICE_COLUMNS, DEVICE_ID, describe_thing, device_thing, split_thing
from soracharge.models.mapping import ChecksSettings, Mapping
from soracharge.models.months import parse_month

MAX_STORED_PROBLEMS: Final = 1000

IMSI, DATE, BILL_ITEM, UNIT_PRICE, QUANTITY, AMOUNT = "imsi", "date", "billItemName", "unitPrice", "quantity", "amount"
#: The column ``soracharge correction`` adds to a differences file: such a file shares no cost out (logic/shares.py).
#: Its name says how the differences were made: ``soracharge.differences`` without the mapping, or
#: ``soracharge.differences.shares-allocated.<currency>`` comparing each customer's share (``logic/corrections.py``).
DIFFERENCES = "soracharge.differences"
ALLOCATED = "shares-allocated"


def differences_mark(names: Iterable[str]) -> str | None:
    """The differences column's name in a header (stripped), or None for a file that is not differences."""
    return next((name.strip() for name in names if name.strip().startswith(DIFFERENCES)), None)


def allocated_currency(mark: str | None) -> str | None:
    """The currency a differences file's shares were compared in, or None (not differences, or made without)."""
    prefix = f"{DIFFERENCES}.{ALLOCATED}."
    return mark[len(prefix) :] if mark is not None and mark.startswith(prefix) else None


#: Numbers are summed as integers counting 10**-18 units.
SCALE_DIGITS: Final = 18
_MAX_INTEGER_DIGITS = 20
_NUMBER = re.compile(
    rf"[+-]?(?:[0-9]{{1,{_MAX_INTEGER_DIGITS}}}(?:\.[0-9]{{0,{SCALE_DIGITS}}})?|\.[0-9]{{1,{SCALE_DIGITS}}})", re.ASCII
)
_LOOSE_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_DAY = re.compile(r"[0-9]{8}", re.ASCII)
_MONTH = re.compile(r"[0-9]{6}", re.ASCII)
#: Bound of each lookup cache (cleared when full), so memory stays flat even if every row is different.
_CACHE_LIMIT = 100_000

#: A raw key: ``(customer value, billItemName, imsi, unitPrice, *device ids)`` (one per device column the
#: file has), plus ``(date, line)`` with aggregation none.
RawKey = tuple[str, ...]

# Packed sums. A row adds ONE integer to its tally: its amount, its quantity, 1 (a row) and 1 or 0
# (a row without a quantity), each in its own 192-bit field of that integer:
#
#     packed = amount + quantity * 2**192 + (1 + missing * 2**192) * 2**384
#
# Python integers are exact and unbounded, so the sum of packed rows is the packing of the sums,
# and unpacking it is exact as long as |Σ amount| and |Σ quantity| stay below 2**191 (amounts and
# quantities are below 10**20, scaled by 10**18: below 2**127 each, so more than 2**64 rows would
# be needed). One integer addition per row instead of four: the loop over rows is that much faster.
_FIELD_BITS = 192
_FIELD = 1 << _FIELD_BITS
_HALF_FIELD = _FIELD >> 1
_FIELD_MASK = _FIELD - 1


def pack(amount: int, quantity: int, *, has_quantity: bool) -> int:
    """One row's amount and quantity (scaled), as the integer its tally adds (see above)."""
    return amount + (quantity << _FIELD_BITS) + ((1 + (0 if has_quantity else _FIELD)) << (2 * _FIELD_BITS))


def unpack(total: int) -> tuple[int, int, int, int]:
    """A sum of packed rows: (Σ amount, Σ quantity, rows, rows without a quantity)."""
    amount = ((total + _HALF_FIELD) & _FIELD_MASK) - _HALF_FIELD
    total = (total - amount) >> _FIELD_BITS
    quantity = ((total + _HALF_FIELD) & _FIELD_MASK) - _HALF_FIELD
    total = (total - quantity) >> _FIELD_BITS
    return amount, quantity, total & _FIELD_MASK, total >> _FIELD_BITS


class Tally:
    """What the rows of one raw key add up to, and whose they are.

    ``customer`` is the customer value the rows belong to (their customer column's, or the customer the
    mapping lists their device for), ``thing`` what they bill: the imsi, ``<device column>:<id>`` for a
    device (``models/devices.py``), or "" for neither. While the file is read, ``packed`` sums its rows'
    :func:`pack`; at the end of the file :meth:`finish` unpacks it into ``amount``, ``quantity``,
    ``rows`` and ``missing_quantity``. Every Decimal here is in canonical form (:func:`unscaled`: no
    trailing zeros, no positive exponent).
    """

    __slots__ = ("amount", "customer", "missing_quantity", "packed", "quantity", "rows", "thing", "unit_price")

    amount: Decimal
    quantity: Decimal
    rows: int
    missing_quantity: int

    def __init__(self, unit_price: Decimal | None, customer: str, thing: str) -> None:
        self.unit_price = unit_price
        self.customer = customer
        self.thing = thing
        self.packed = 0  # the rest is set by finish()

    @property
    def quantity_rows(self) -> int:
        """How many of the rows have a quantity."""
        return self.rows - self.missing_quantity

    def finish(self) -> None:
        amount, quantity, self.rows, self.missing_quantity = unpack(self.packed)
        self.amount = unscaled(amount)
        self.quantity = unscaled(quantity)


def unscaled(value: int) -> Decimal:
    """The Decimal of a count of 10**-18 units, without trailing zeros nor exponent (``310``, ``0.3``)."""
    sign, digits = ("-", str(-value)) if value < 0 else ("", str(value))
    if len(digits) <= SCALE_DIGITS:
        digits = digits.rjust(SCALE_DIGITS + 1, "0")
    fraction = digits[-SCALE_DIGITS:].rstrip("0")
    whole = digits[:-SCALE_DIGITS]
    return Decimal(f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}")


@dataclass
class BillingRows:
    """A billing CSV read to the end: its tallies by raw key, its totals, and every problem found."""

    month: str
    aggregated: bool
    rows: int = 0
    tallies: dict[RawKey, Tally] = field(default_factory=dict)
    problems: list[ImportProblem] = field(default_factory=list)
    problem_count: int = 0
    #: Rows whose bill item or customer maps to nothing (a subset of the rows with problems).
    unmapped_rows: int = 0
    #: Σ amount of every row whose amount is a number (rejected rows included).
    csv_sum: Decimal = Decimal(0)
    per_customer: dict[str, Decimal] = field(default_factory=dict)
    per_item: dict[str, Decimal] = field(default_factory=dict)
    #: Every problem counted by kind (stored or not).
    kinds: dict[ProblemKind, int] = field(default_factory=dict)
    #: Rows dated in another month than the billed one, by that month.
    other_months: dict[str, int] = field(default_factory=dict)
    #: The SIMs (imsi) of each customer value.
    sims: dict[str, set[str]] = field(default_factory=dict)
    #: The devices (``<column>:<id>``) of each customer value.
    devices: dict[str, set[str]] = field(default_factory=dict)
    #: The file is a correction's differences: its :data:`DIFFERENCES` column's name, else None.
    differences: str | None = None
    #: The customer column's own values (before a device's owner from the mapping) with their amounts.
    per_value: dict[str, Decimal] = field(default_factory=dict)
    #: The device ids the file names, and the ones ``customer.devices`` lists that it names as an IMSI.
    device_ids: set[str] = field(default_factory=set)
    listed_as_imsis: set[str] = field(default_factory=set)

    def add_problem(
        self, line: int | None, column: str | None, value: str | None, message: str, kind: ProblemKind
    ) -> None:
        self.problem_count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.problems) < MAX_STORED_PROBLEMS:
            self.problems.append(ImportProblem(line=line, column=column, value=value, message=message, kind=kind))


def read_billing_csv(stream: BinaryIO, *, month: str, mapping: Mapping) -> BillingRows:
    """Read ``stream`` (bytes, read incrementally, never whole) to the end, validating and tallying every row."""
    result = BillingRows(month=parse_month(month), aggregated=mapping.aggregation == "imsi-month")
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    text._CHUNK_SIZE = 1 << 16  # type: ignore[attr-defined]  # decode 64 KiB at a time, not 8: faster lines
    try:
        _read(text, result, mapping)
    finally:
        text.detach()  # the caller owns the stream: leave it open
    return result


def iter_records(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """``(first physical line, fields)`` of every CSV record, exactly as ``csv.reader`` splits them.

    ``lines`` come from a text stream opened with ``newline=""``. A line without a double quote is
    split on commas, all ``csv.reader`` would do with it; a line with one goes to ``csv.reader``,
    which also reads the lines a quoted line break continues on. The loops of this module inline it.
    """
    lines = iter(lines)
    quoted = _QuotedRecords(lines)
    line_no = 0
    for line in lines:
        line_no += 1
        if '"' not in line:
            text = line.rstrip("\r\n")
            yield line_no, text.split(",") if text else []
            continue
        row, span = quoted.record(line)
        yield line_no, row
        line_no += span - 1


class _QuotedRecords:
    """``csv.reader`` for the lines that hold a double quote.

    :meth:`record` parses the record that starts with a line: in C when it ends on that line, else
    again, from that line, pulling the lines it goes on over from the stream.
    """

    __slots__ = ("_first", "_lines", "_reader", "parse_line", "push")

    def __init__(self, lines: Iterator[str]) -> None:
        pending: deque[str] = deque()
        #: Push a line, then ``parse_line()`` parses it; ``IndexError`` means it needs the next lines.
        self.push = pending.append
        self.parse_line = csv.reader(iter(pending.popleft, None)).__next__
        self._lines = lines
        self._first: str | None = None
        self._reader = csv.reader(self)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._first
        if line is None:
            return next(self._lines)
        self._first = None
        return line

    def record(self, line: str) -> tuple[list[str], int]:
        """The record that starts with ``line``, and how many physical lines it spans. Raises ``csv.Error``."""
        self.push(line)
        try:
            return self.parse_line(), 1
        except IndexError:  # a quoted line break: the record goes on over the next lines
            pass
        self._first = line
        before = self._reader.line_num
        row = next(self._reader)
        return row, self._reader.line_num - before


def _read(text: Iterator[str], result: BillingRows, mapping: Mapping) -> None:
    lines = iter(text)
    quoted = _QuotedRecords(lines)
    try:
        first = next(lines, None)
        header, header_lines = quoted.record(first) if first is not None and '"' in first else (_split(first), 1)
    except csv.Error as exc:
        result.add_problem(1, None, None, f"the header line is not valid CSV: {exc}", ProblemKind.HEADER)
        return
    if not header:
        result.add_problem(1, None, None, no_header(blank=first is not None), ProblemKind.HEADER)
        return
    columns = _Columns.of(header, mapping.customer.column, result)
    if columns is None:
        return
    result.differences = differences_mark(header)
    check = _RowCheck(result, mapping, columns)
    if result.aggregated and columns.complete:
        result.rows = _read_aggregated(lines, quoted, header_lines, columns, check)
    else:
        result.rows = _read_generic(lines, header_lines, columns, check)
    if result.rows == 0 and result.problem_count == 0:
        result.add_problem(None, None, None, "the file has a header but no data rows", ProblemKind.HEADER)
    _add_totals(result)


def _read_aggregated(
    lines: Iterator[str], quoted: _QuotedRecords, header_lines: int, columns: _Columns, check: _RowCheck
) -> int:
    """The hot loop (aggregation imsi-month, every column present); returns the rows read."""
    width = columns.width
    pick_key = columns.key
    pick_numbers = columns.numbers
    i_date = columns.date
    strip_last = columns.uses_last  # a plain line keeps its line break in its last field, unused or stripped
    days = check.days
    tallies = check.result.tallies
    numbers = check.numbers
    admit = check.admit
    push_quoted = quoted.push
    parse_quoted = quoted.parse_line
    extra = 0  # physical lines beyond the first of the records read so far
    blank = 0
    index = header_lines
    try:
        for index, line in enumerate(lines, header_lines + 1):
            if '"' not in line:
                row = line.split(",")
                if strip_last:
                    row[-1] = row[-1].rstrip("\r\n")
            else:
                push_quoted(line)
                try:
                    row = parse_quoted()
                except IndexError:  # a quoted line break
                    row, span = quoted.record(line)
                    extra += span - 1
            if len(row) != width:
                if len(row) < 2 and not "".join(row).rstrip("\r\n"):
                    blank += 1
                else:
                    check.ragged(index + extra - _breaks(line, row), row)
                continue
            # Subscripts, not .get(): no call, and a missing key (a new key or new number texts) is rare.
            try:
                tally = tallies[pick_key(row)]
                packed = numbers[pick_numbers(row)]
                if row[i_date] not in days:
                    raise KeyError(i_date)
            except KeyError:
                admitted = admit(index + extra - _breaks(line, row), row, pick_key(row))
                if admitted is None:
                    continue
                packed, tally = admitted
            tally.packed += packed
    except csv.Error as exc:
        check.unreadable(index + extra, exc)
    return index - header_lines - blank


def _read_generic(lines: Iterator[str], header_lines: int, columns: _Columns, check: _RowCheck) -> int:
    """Any aggregation and column set, one row at a time through the slow path's checks; returns the rows read."""
    width = columns.width
    per_row = not check.result.aggregated
    tallies_get = check.result.tallies.get
    numbers_get = check.numbers.get
    rows = 0
    line_no = 0
    try:
        for line_no, row in iter_records(lines):
            if not row:  # a blank line
                continue
            rows += 1
            if len(row) != width:
                check.ragged(line_no + header_lines, row)
                continue
            key = columns.key(row)
            if per_row:
                key = (*key, row[columns.date], str(line_no + header_lines))
            numbers = numbers_get(columns.numbers(row))
            tally = tallies_get(key)
            if numbers is None or tally is None or row[columns.date] not in check.days:
                admitted = check.admit(line_no + header_lines, row, key)
                if admitted is None:
                    continue
                numbers, tally = admitted
            tally.packed += numbers
    except csv.Error as exc:
        check.unreadable(line_no + header_lines + 1, exc)
    return rows


def no_header(*, blank: bool) -> str:
    """What is wrong with a file whose first line holds no column names: nothing at all, or a blank line 1
    (the reader's, the correction's and the draft's words)."""
    if blank:
        return "line 1 is blank: the header (the columns' names) must be the file's first line"
    return "the file is empty: no header line"


def ragged_row(fields: int, width: int) -> str:
    """What is wrong with a row of ``fields`` values under a header of ``width`` (the reader's and the draft's)."""
    plural = "" if fields == 1 else "s"
    return f"the row has {fields} field{plural} but the header has {width} (an unquoted comma or quote?)"


def _split(line: str | None) -> list[str]:
    """A line without a double quote, as ``csv.reader`` splits it ([] for a blank line)."""
    text = (line or "").rstrip("\r\n")
    return text.split(",") if text else []


def _breaks(line: str, row: list[str]) -> int:
    """Physical line breaks inside a record's quoted fields (\\r\\n, \\n or \\r); none for a plain line."""
    if '"' not in line:
        return 0
    return sum(value.count("\n") + value.count("\r") - value.count("\r\n") for value in row)


def _add_totals(result: BillingRows) -> None:
    """Turn the tallies into Decimals and fold them into the file's sums (rejected rows are already in)."""
    per_customer = result.per_customer
    per_item = result.per_item
    per_value = result.per_value
    total = result.csv_sum
    for key, tally in result.tallies.items():
        tally.finish()
        amount = tally.amount
        total += amount
        per_customer[tally.customer] = per_customer.get(tally.customer, Decimal(0)) + amount
        per_value[key[0]] = per_value.get(key[0], Decimal(0)) + amount
        per_item[key[1]] = per_item.get(key[1], Decimal(0)) + amount
    result.csv_sum = total


@dataclass(frozen=True)
class _Columns:
    """Where the used columns are, and functions picking a row's raw key and number texts."""

    width: int
    imsi: int
    date: int
    item: int
    amount: int
    quantity: int | None
    unit_price: int | None
    customer: int
    customer_name: str
    #: ``(column name, index)`` of each device column the file has, in the raw key's order.
    devices: tuple[tuple[str, int], ...]
    key: Callable[[list[str]], RawKey]
    numbers: Callable[[list[str]], tuple[str, ...]]

    @property
    def complete(self) -> bool:
        return self.quantity is not None and self.unit_price is not None

    @property
    def uses_last(self) -> bool:
        last = self.width - 1
        used = (self.imsi, self.date, self.item, self.amount, self.quantity, self.unit_price, self.customer)
        return last in used or any(index == last for _, index in self.devices)

    @classmethod
    def of(cls, header: list[str], customer_column: str, result: BillingRows) -> _Columns | None:
        names = [name.strip() for name in header]
        required = [IMSI, DATE, BILL_ITEM, AMOUNT, customer_column]
        positions: dict[str, int | None] = {}
        for name in [*required, QUANTITY, UNIT_PRICE, *DEVICE_COLUMNS]:
            found = [index for index, header_name in enumerate(names) if header_name == name]
            if len(found) > 1:
                message = f"column {name!r} appears {len(found)} times in the header"
                result.add_problem(1, name, name, message, ProblemKind.HEADER)
            elif not found and name in required:
                what = "the mapping's customer column" if name == customer_column else "a required column"
                listed = ", ".join(shown(name) for name in names)
                message = f"missing column {name!r} ({what}); the header has: {listed}"
                result.add_problem(1, name, None, message, ProblemKind.HEADER)
            positions[name] = found[0] if found else None
        if result.problem_count:
            return None
        imsi, day, item, amount, customer = (positions[name] for name in required)
        assert imsi is not None, "required columns are present"
        assert day is not None, "required columns are present"
        assert item is not None, "required columns are present"
        assert amount is not None, "required columns are present"
        assert customer is not None, "required columns are present"
        quantity, unit_price = positions[QUANTITY], positions[UNIT_PRICE]
        devices = tuple((name, index) for name in DEVICE_COLUMNS if (index := positions[name]) is not None)
        return cls(
            width=len(header),
            imsi=imsi,
            date=day,
            item=item,
            amount=amount,
            quantity=quantity,
            unit_price=unit_price,
            customer=customer,
            customer_name=customer_column,
            devices=devices,
            key=_picker([customer, item, imsi, unit_price, *(index for _, index in devices)]),
            numbers=_picker([amount, quantity, unit_price]),
        )


def _picker(indexes: Sequence[int | None]) -> Callable[[list[str]], tuple[str, ...]]:
    """A function taking a row to the tuple of its fields at ``indexes`` (``""`` for None)."""
    if all(index is not None for index in indexes):
        return itemgetter(*indexes)

    def pick(row: list[str]) -> tuple[str, ...]:
        return tuple("" if index is None else row[index] for index in indexes)

    return pick


def shown(value: str) -> str:
    """The text as a person can read it: bytes that are not UTF-8 shown as ``\\xNN``."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _RowCheck:
    """The slow path: admits the first row of a key or of new number texts, or records a row's problems."""

    def __init__(self, result: BillingRows, mapping: Mapping, columns: _Columns) -> None:
        month = result.month
        self.result = result
        self.mapping = mapping
        self.columns = columns
        self.month = month
        self.days = frozenset([month, *(f"{month}{day:02d}" for day in range(1, days_in_month(month) + 1))])
        #: ``(amount, quantity, unitPrice)`` texts -> the amount and quantity, once known good.
        self.numbers: dict[tuple[str, ...], int] = {}
        self.arithmetic = RowArithmetic(mapping.checks)
        #: Customer values, bill item names and unit price texts -> whether they are good.
        self.known_customers: dict[str, bool] = {}
        self.known_items: dict[str, bool] = {}
        self.unit_prices: dict[str, Decimal | None] = {}

    def ragged(self, line: int, row: list[str]) -> None:
        self.result.add_problem(
            line,
            None,
            None,
            ragged_row(len(row), self.columns.width),
            ProblemKind.ROW,
        )

    def unreadable(self, line: int, error: csv.Error) -> None:
        """The CSV cannot be read on from ``line`` (a quoted field that never ends, bigger than csv allows)."""
        message = f"the CSV cannot be read from this line on: {error}"
        self.result.add_problem(line, None, None, message, ProblemKind.ROW)

    def admit(self, line: int, row: list[str], key: RawKey) -> tuple[int, Tally] | None:
        """The numbers and tally of a row the fast path could not take, or None (its problems recorded)."""
        columns = self.columns
        texts = columns.numbers(row)
        numbers = self.numbers.get(texts)
        if numbers is None:
            numbers = self._good_numbers(*texts)
        customer, item, imsi, unit_price_text = key[:4]
        tallies = self.result.tallies
        tally = tallies.get(key)
        if tally is None and numbers is not None and row[columns.date] in self.days:
            # A new key (a SIM's or device's first row of an item): check its parts once.
            thing = self.thing(imsi, key[4 : 4 + len(columns.devices)])
            owner = self.owner(customer, thing) if thing is not None else None
            known_customer = self.known_customers.get(owner) if owner is not None else False
            if known_customer is None and owner is not None:
                known_customer = self._known(self.known_customers, owner, self._customer_is_known)
            known_item = self.known_items.get(item)
            if known_item is None:
                known_item = self._known(self.known_items, item, self._item_is_known)
            unit_price = self._unit_price(unit_price_text) if unit_price_text else None
            if not known_customer and owner == "" and self.mapping.shared_for(item) is not None:
                known_customer = True  # a row no customer owns that the mapping's `shared` sends somewhere
            if (
                thing is not None
                and owner is not None
                and known_customer
                and known_item
                and (unit_price is not None or not unit_price_text)
            ):
                tally = tallies[key] = Tally(unit_price, owner, thing)
                if imsi:
                    self.result.sims.setdefault(owner, set()).add(imsi)
                    if imsi in self.mapping.customer.devices:
                        self.result.listed_as_imsis.add(imsi)
                elif thing:
                    self.result.devices.setdefault(owner, set()).add(thing)
                    self.result.device_ids.add(thing.partition(":")[2])
                return numbers, tally
        elif tally is not None and numbers is not None and row[columns.date] in self.days:
            return numbers, tally
        self.reject(line, row)
        return None

    def thing(self, imsi: str, devices: Sequence[str]) -> str | None:
        """What a row bills (its imsi, ``<column>:<id>`` of its device, or "" for neither); None when that
        cannot be told: an imsi not digits, a device id not one, or more than one SIM or device named."""
        named = [(IMSI, imsi)] if imsi else []
        named += [(column, device) for (column, _), device in zip(self.columns.devices, devices, strict=True) if device]
        if len(named) > 1:
            return None
        if not named:
            return ""
        column, value = named[0]
        if column == IMSI:
            return imsi if imsi.isascii() and imsi.isdigit() else None
        return device_thing(column, value) if DEVICE_ID.fullmatch(value) else None

    def owner(self, customer: str, thing: str | None) -> str | None:
        """The customer value a row belongs to: the one the mapping lists its device for, else its customer
        column's; None when the mapping lists its device for a customer other than the one its column names.
        In a bill of an operator the mapping gives to one customer (``customer.operators``), every row is that
        customer's: None for a row naming another (by its column, or its device's listing)."""
        owner = self._device_owner(customer, thing)
        whole = self.mapping.whole_bill
        if whole is None or owner is None:
            return owner
        return whole[1] if owner in ("", whole[1]) else None

    def _device_owner(self, customer: str, thing: str | None) -> str | None:
        devices = self.mapping.customer.devices
        if not devices or (device := split_thing(thing)) is None:  # no listing, or a SIM's row, or neither's
            return customer
        listed = devices.get(device[1])
        if listed is None:
            return customer
        return listed if customer in ("", listed) else None

    def _good_numbers(self, amount_text: str, quantity_text: str, unit_price_text: str) -> int | None:
        amount = _scaled(amount_text)
        if amount is None:
            return None
        quantity = _scaled(quantity_text) if quantity_text else 0
        if quantity is None:
            return None
        if self.arithmetic.problem(amount_text, quantity_text, unit_price_text) is not None:
            return None
        cache = self.numbers
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        numbers = pack(amount, quantity, has_quantity=bool(quantity_text))
        cache[(amount_text, quantity_text, unit_price_text)] = numbers
        return numbers

    def _unit_price(self, text: str) -> Decimal | None:
        cache = self.unit_prices
        if text not in cache:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            scaled = _scaled(text)
            cache[text] = None if scaled is None else unscaled(scaled)
        return cache[text]

    @staticmethod
    def _known(cache: dict[str, bool], value: str, judge: Callable[[str], bool]) -> bool:
        known = cache.get(value)
        if known is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            known = cache[value] = judge(value)
        return known

    def _customer_is_known(self, customer: str) -> bool:
        return _is_utf8(customer) and self.mapping.customer_for(customer) is not None

    def _item_is_known(self, item: str) -> bool:
        return bool(item) and _is_utf8(item) and self.mapping.item_for(item) is not None

    def reject(self, line: int, row: list[str]) -> None:
        """Record every problem of a row (its amount, when a number, still counts in the file's totals)."""
        columns = self.columns
        customer_column = columns.customer_name
        key = columns.key(row)
        customer, item, imsi, unit_price_text = key[:4]
        device_values = key[4:]
        amount_text, quantity_text, _ = columns.numbers(row)
        day = row[columns.date]
        fields = (
            (IMSI, imsi),
            (DATE, day),
            (BILL_ITEM, item),
            (UNIT_PRICE, unit_price_text),
            (QUANTITY, quantity_text),
            (AMOUNT, amount_text),
            (customer_column, customer),
        )
        problems: list[tuple[str, str, str, ProblemKind]] = []  # column, value, message, kind
        unmapped = False  # the bill item or the customer maps to nothing
        readable: dict[str, bool] = {}
        for column, value in fields:
            readable[column] = _is_utf8(value)
            if not readable[column]:
                problems.append((column, value, f"bytes that are not UTF-8 in column {column}", ProblemKind.ENCODING))

        if readable[IMSI] and imsi and not (imsi.isascii() and imsi.isdigit()):
            message = f"imsi {imsi!r} is not digits (it is empty for charges not tied to a SIM)"
            problems.append((IMSI, imsi, message, ProblemKind.VALUE))
        problems += self._device_problems(imsi, device_values)
        if readable[DATE] and day not in self.days:
            problems.append((DATE, day, *self._date_problem(day)))
        if readable[BILL_ITEM]:
            if not item:
                problems.append((BILL_ITEM, item, f"{BILL_ITEM} is empty", ProblemKind.VALUE))
            elif self.mapping.item_for(item) is None:
                unmapped = True
                message = f"no resource for bill item {item!r} (column {BILL_ITEM})"
                problems.append((BILL_ITEM, item, message, ProblemKind.UNMAPPED_ITEM))
        for column, text in ((UNIT_PRICE, unit_price_text), (QUANTITY, quantity_text), (AMOUNT, amount_text)):
            if readable[column] and (text or column == AMOUNT):
                problem = number_problem(column, text)
                if problem:
                    problems.append((column, text, problem, ProblemKind.VALUE))
        # the amount's bound, and the product where its three numbers are numbers (a text that is not one is
        # said above, and the arithmetic says nothing of it)
        if all(readable[c] for c in (UNIT_PRICE, QUANTITY, AMOUNT)):
            problem = self.arithmetic.problem(amount_text, quantity_text, unit_price_text)
            if problem:
                problems.append((AMOUNT, amount_text, problem, ProblemKind.ARITHMETIC))
        thing = self.thing(imsi, device_values)  # None: which SIM or device cannot be told (a problem above)
        owner = self.owner(customer, thing)
        if owner is None:
            unmapped = True
            problems.append(
                (customer_column, customer, self._owner_conflict(customer, thing), ProblemKind.UNMAPPED_CUSTOMER)
            )
        elif (
            owner == customer
            and readable[customer_column]
            and self.mapping.customer_for(customer) is None
            and not (customer == "" and readable[BILL_ITEM] and self.mapping.shared_for(item) is not None)
        ):
            unmapped = True
            hint = "" if customer else ": give the mapping a customer default for rows without one"
            message = f"no subscription for customer {customer!r} (column {customer_column}){hint}"
            problems.append((customer_column, customer, message, ProblemKind.UNMAPPED_CUSTOMER))
        assert problems, "a rejected row has a problem"

        result = self.result
        if unmapped:
            result.unmapped_rows += 1
        for column, value, message, kind in problems:
            result.add_problem(line, column, shown(value), message, kind)
        customer = shown(owner or customer)
        if imsi:
            result.sims.setdefault(customer, set()).add(shown(imsi))
        elif thing:
            result.devices.setdefault(customer, set()).add(thing)
        scaled = _scaled(amount_text)  # None for a text that is not a number, UTF-8 or not
        if scaled is not None:
            amount = unscaled(scaled)
            item = shown(item)
            result.csv_sum += amount
            result.per_customer[customer] = result.per_customer.get(customer, Decimal(0)) + amount
            result.per_item[item] = result.per_item.get(item, Decimal(0)) + amount

    def _owner_conflict(self, customer: str, thing: str | None) -> str:
        """Why a row's customer is a guess (:meth:`owner` said None)."""
        column = self.columns.customer_name
        device = split_thing(thing)
        listed = self.mapping.customer.devices.get(device[1]) if device is not None else None
        listing = f"customer.devices lists {describe_thing(thing)} for customer {listed!r}"
        if listed is not None and customer not in ("", listed):
            return f"the mapping's {listing}, but column {column} names {customer!r}: which customer pays is a guess"
        whole = self.mapping.whole_bill
        assert whole is not None, "a row's customer is a guess only by a device's or an operator's listing"
        operator, owner = whole
        named = f"its {listing}" if listed is not None else f"column {column} names {customer!r}"
        return (
            f"the mapping's customer.operators gives operator {operator}'s bill to customer {owner!r}, but {named}: "
            "which customer pays is a guess"
        )

    def _device_problems(self, imsi: str, devices: Sequence[str]) -> list[tuple[str, str, str, ProblemKind]]:
        """A device id that is not one, and a row that names more than one SIM or device."""
        problems = []
        named = [(IMSI, imsi)] if imsi else []
        for (column, _), device in zip(self.columns.devices, devices, strict=True):
            if not device:
                continue
            named.append((column, device))
            if not DEVICE_ID.fullmatch(device):
                message = (
                    f"{column} {shown(device)!r} is not a device id (letters, digits and . _ : @ / + -; "
                    "no space, quote or comma)"
                )
                problems.append((column, device, message, ProblemKind.VALUE))
        if len(named) > 1:
            listed = ", ".join(f"{column} {shown(value)!r}" for column, value in named)
            message = f"the row names more than one SIM or device ({listed}): which one it bills is a guess"
            problems.append((named[1][0], named[1][1], message, ProblemKind.VALUE))
        return problems

    def _date_problem(self, day: str) -> tuple[str, ProblemKind]:
        if _DAY.fullmatch(day):
            try:
                date(int(day[:4]), int(day[4:6]), int(day[6:]))
            except ValueError:
                return f"date {day!r} is not a real day", ProblemKind.VALUE
        elif _MONTH.fullmatch(day):
            if not 1 <= int(day[4:]) <= 12:
                return f"date {day!r} is not a real month", ProblemKind.VALUE
        else:
            return f"date {day!r} is not yyyyMMdd or yyyyMM", ProblemKind.VALUE
        months = self.result.other_months
        months[day[:6]] = months.get(day[:6], 0) + 1
        return f"date {day!r} is outside the billed month {self.month}", ProblemKind.MONTH


class RowArithmetic:
    """A row's amount against its unitPrice × quantity and against the bound a row may reach (the mapping's
    ``checks``), in exact integers: scaled by 10**18, a product by 10**36."""

    def __init__(self, checks: ChecksSettings) -> None:
        self.on = checks.arithmetic
        tolerance = checks.amount_tolerance
        self.tolerance = None if tolerance is None else int(tolerance.scaleb(2 * SCALE_DIGITS))
        self.limit = checks.row_amount_limit
        self.limit_scaled = int(checks.row_amount_limit.scaleb(SCALE_DIGITS))

    def problem(self, amount_text: str, quantity_text: str, unit_price_text: str) -> str | None:
        """Why the row's numbers do not add up (texts already known plain numbers), or None."""
        amount = _scaled(amount_text)
        if amount is None:
            return None
        if abs(amount) > self.limit_scaled:
            return (
                f"amount {amount_text} is beyond what one row may reach ({self.limit:,f} either way: the mapping's "
                "checks.rowAmountLimit); a typo? (if it is right, raise the limit)"
            )
        if not (self.on and quantity_text and unit_price_text):
            return None
        quantity, unit_price = _scaled(quantity_text), _scaled(unit_price_text)
        if quantity is None or unit_price is None:
            return None
        product = quantity * unit_price
        off = abs(amount * 10**SCALE_DIGITS - product)
        decimals = len(amount_text.partition(".")[2])
        tolerance = self.tolerance if self.tolerance is not None else 5 * 10 ** (2 * SCALE_DIGITS - 1 - decimals)
        if off <= tolerance:
            return None
        expected = unscaled_product(product)
        return (
            f"amount {amount_text} is not unitPrice × quantity ({unit_price_text} × {quantity_text} = {expected}): "
            f"off by more than the rounding its {decimals} decimal(s) allow"
            if self.tolerance is None
            else f"amount {amount_text} is not unitPrice × quantity ({unit_price_text} × {quantity_text} = "
            f"{expected}): off by more than the mapping's checks.amountTolerance"
        )


def unscaled_product(value: int) -> str:
    """A product of two scaled numbers (10**36 units) as plain decimal text without trailing zeros."""
    sign, digits = ("-", str(-value)) if value < 0 else ("", str(value))
    digits = digits.rjust(2 * SCALE_DIGITS + 1, "0")
    whole, fraction = digits[: -2 * SCALE_DIGITS], digits[-2 * SCALE_DIGITS :].rstrip("0")
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


def _scaled(text: str) -> int | None:
    """A plain decimal text as a count of 10**-18 units, or None when it is not one (see :data:`_NUMBER`)."""
    if not _NUMBER.fullmatch(text):
        return None
    whole, _, fraction = text.lstrip("+").partition(".")
    negative = whole.startswith("-")
    digits = int((whole.lstrip("-") or "0") + fraction.ljust(SCALE_DIGITS, "0"))
    return -digits if negative else digits


def number_problem(column: str, text: str) -> str | None:
    """Why a number text is refused, or None when it is good."""
    if not text:
        return f"{column} is empty"
    if _NUMBER.fullmatch(text):
        return None
    if text.strip().lower().lstrip("+-") in ("nan", "snan", "inf", "infinity"):
        return f"{column} {text!r} is not a finite number"
    if _LOOSE_NUMBER.fullmatch(text):
        return (
            f"{column} {text!r} has more than {SCALE_DIGITS} decimals or {_MAX_INTEGER_DIGITS} digits before the point"
        )
    return f"{column} {text!r} is not a plain decimal number (such as -12.5)"


def days_in_month(month: str) -> int:
    """Days in a ``yyyyMM`` month (already validated)."""
    return calendar.monthrange(int(month[:4]), int(month[4:]))[1]
