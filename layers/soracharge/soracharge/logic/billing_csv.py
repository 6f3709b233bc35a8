"""Streaming read of Soracom's detailed billing CSV: validate every row and total it by key.

The file (see ``local/soracharge_local/simulators/soracom_data.py`` for a faithful one) is UTF-8 with a
BOM, has a header row, RFC 4180 quoting, and columns that vary from file to file: they are found by
header name, never by position. Used columns:

==============  ========  =====================================================================
column          required  accepted values
==============  ========  =====================================================================
imsi            yes       digits, or empty for charges not tied to a SIM
date            yes       ``yyyyMMdd`` (a real day) or ``yyyyMM``, inside the billed month
billItemName    yes       a name the mapping's ``items`` match
amount          yes       a plain decimal number (``-12.5``), no exponent, no NaN or Infinity
unitPrice       no        empty, or a plain decimal number
quantity        no        empty, or a plain decimal number
<customer>      yes       the mapping's ``customer.column``: a listed value, or any value with a default
==============  ========  =====================================================================

Every other column is ignored, so are bytes that are not UTF-8 in them. Every problem is
collected, not only the first (the first :data:`MAX_STORED_PROBLEMS` are kept, the rest counted),
each with its file line (1 is the header; a record's first physical line, also when quoted fields
hold line breaks), column and value.

Speed: the loop over rows builds no object per row. Column indexes are resolved once, the three
number texts of a row are parsed once per distinct ``(amount, quantity, unitPrice)`` text, and a
row is folded into a :class:`Tally` per raw key ``(customer value, billItemName, imsi)``. Anything
not seen before (a new key, new number texts, a bad date) takes the slow path, which validates the
whole row and records its problems. Memory grows with the distinct keys, not with the rows.
"""

from __future__ import annotations

import calendar
import csv
import io
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import BinaryIO, Final

from soracharge.models.charges import ImportProblem
from soracharge.models.mapping import Mapping
from soracharge.models.months import parse_month

MAX_STORED_PROBLEMS: Final = 1000

#: Additions in this context are always exact (no rounding to 28 digits); an inexact result raises.
EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact])

IMSI, DATE, BILL_ITEM, UNIT_PRICE, QUANTITY, AMOUNT = "imsi", "date", "billItemName", "unitPrice", "quantity", "amount"

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_DAY = re.compile(r"[0-9]{8}", re.ASCII)
_MONTH = re.compile(r"[0-9]{6}", re.ASCII)
#: Bound of each lookup cache (cleared when full), so memory stays flat even if every row is different.
_CACHE_LIMIT = 100_000

#: A raw key: ``(customer value, billItemName, imsi)``, plus ``(date, row number)`` with ``aggregation: none``.
RawKey = tuple[str, ...]
#: A good row's amount, quantity (:data:`NO_QUANTITY` when it has none) and unit price (None when it has none).
Numbers = tuple[Decimal, Decimal, Decimal | None]
#: The quantity of a row without one: adds nothing, and is told apart by identity.
NO_QUANTITY: Final = Decimal(0)


class Tally:
    """What the rows of one raw key add up to."""

    __slots__ = ("amount", "missing_quantity", "quantity", "rows", "same_unit_price", "unit_price")

    def __init__(self, unit_price: Decimal | None) -> None:
        self.amount = Decimal(0)
        self.quantity = Decimal(0)
        self.rows = 0
        self.missing_quantity = 0
        self.unit_price = unit_price
        self.same_unit_price = unit_price is not None

    @property
    def quantity_rows(self) -> int:
        """How many of the rows have a quantity."""
        return self.rows - self.missing_quantity


@dataclass
class BillingRows:
    """A billing CSV read to the end: its tallies by raw key, its totals, and every problem found."""

    month: str
    aggregated: bool
    rows: int = 0
    tallies: dict[RawKey, Tally] = field(default_factory=dict)
    problems: list[ImportProblem] = field(default_factory=list)
    problem_count: int = 0
    #: Σ amount of every row whose amount is a number (rejected rows included).
    csv_sum: Decimal = Decimal(0)
    per_customer: dict[str, Decimal] = field(default_factory=dict)
    per_item: dict[str, Decimal] = field(default_factory=dict)

    def add_problem(self, line: int | None, column: str | None, value: str | None, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_STORED_PROBLEMS:
            self.problems.append(ImportProblem(line=line, column=column, value=value, message=message))


def read_billing_csv(stream: BinaryIO, *, month: str, mapping: Mapping) -> BillingRows:
    """Read ``stream`` (bytes, read incrementally) to the end, validating and tallying every row."""
    month = parse_month(month)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        result = BillingRows(month=month, aggregated=mapping.aggregation == "imsi-month")
        with localcontext(EXACT):
            _read(text, result, mapping)
        return result
    finally:
        text.detach()  # the caller owns the stream: do not close it


def iter_records(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """``(first physical line, fields)`` of every CSV record, exactly as ``csv.reader`` splits them.

    ``lines`` come from a text stream opened with ``newline=""``. A line without a double quote is
    split on commas (all ``csv.reader`` would do with it, three times faster); a line with one goes
    to ``csv.reader``, which also reads the lines a quoted line break continues on. The loop of
    :func:`read_billing_csv` inlines this one.
    """
    lines = iter(lines)
    quoted = _QuotedRecords(lines)
    line_no = 0
    for line in lines:
        line_no += 1
        if '"' in line:
            quoted.push(line)
            try:
                row = quoted.parse_line()
                span = 1
            except IndexError:
                row, span = quoted.record(line)
            yield line_no, row
            line_no += span - 1
        else:
            yield line_no, _split(line)


class _QuotedRecords:
    """``csv.reader`` for the lines that hold a double quote.

    :meth:`parse_line` parses a pushed line at C speed and raises ``IndexError`` when its record goes
    on past it (a quoted line break); :meth:`record` then parses the record again from that line,
    pulling the lines it continues on from the stream.
    """

    __slots__ = ("_first", "_lines", "_reader", "parse_line", "push")

    def __init__(self, lines: Iterator[str]) -> None:
        pending: deque[str] = deque()
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
        self._first = line
        before = self._reader.line_num
        row = next(self._reader)
        return row, self._reader.line_num - before


def _read(text: Iterator[str], result: BillingRows, mapping: Mapping) -> None:
    lines = iter(text)
    quoted = _QuotedRecords(lines)
    try:
        first = next(lines, None)
        header, line_no = quoted.record(first) if first is not None and '"' in first else (_split(first), 1)
    except csv.Error as exc:
        result.add_problem(1, None, None, f"the header line is not valid CSV: {exc}")
        return
    if not header:
        result.add_problem(1, None, None, "the file is empty: no header line")
        return
    indexes = _column_indexes(header, mapping.customer.column, result)
    if indexes is None:
        return
    width = len(header)
    check = _RowCheck(result, mapping, indexes, width)
    i_imsi, i_date, i_item, i_amount, i_quantity, i_unit_price, i_customer = (
        width if index is None else index for index in indexes
    )
    pad = [""] if width in (i_quantity, i_unit_price) else []  # an absent optional column reads as ""
    per_row = not result.aggregated
    tallies_get = result.tallies.get
    admit = check.admit
    days = check.days
    numbers_get = check.numbers.get
    no_quantity = NO_QUANTITY
    push_quoted = quoted.push
    parse_quoted = quoted.parse_line
    header_lines = line_no
    spare_lines = 0  # blank lines, and the extra lines of records with quoted line breaks

    # The hot loop (see the module docstring): no call, no object per row beyond the two lookup keys.
    try:
        for line in lines:
            line_no += 1
            if '"' in line:
                push_quoted(line)
                try:
                    row = parse_quoted()
                except IndexError:  # a quoted line break: parse the record again over its lines
                    row, span = quoted.record(line)
                    line_no += span - 1
                    spare_lines += span - 1
            else:
                row = line.rstrip("\r\n").split(",")
            if len(row) != width:
                if row == [""] or not row:
                    spare_lines += 1
                else:
                    check.ragged(line_no, row)
                continue
            if pad:
                row += pad
            customer = row[i_customer]
            item = row[i_item]
            imsi = row[i_imsi]
            day = row[i_date]
            numbers = numbers_get((row[i_amount], row[i_quantity], row[i_unit_price]))
            key = (customer, item, imsi, day, str(line_no)) if per_row else (customer, item, imsi)
            tally = tallies_get(key)
            if numbers is None or tally is None or day not in days:
                admitted = admit(line_no, row, key, customer, item, imsi, day)
                if admitted is None:
                    continue
                numbers, tally = admitted
            amount, quantity, unit_price = numbers
            tally.amount += amount
            tally.quantity += quantity
            tally.rows += 1
            if quantity is no_quantity:
                tally.missing_quantity += 1
            if unit_price is not tally.unit_price and tally.same_unit_price:
                tally.same_unit_price = unit_price is not None and unit_price == tally.unit_price
    except csv.Error as exc:
        result.add_problem(line_no, None, None, f"the file is not valid CSV here, reading stopped: {exc}")
    result.rows = line_no - header_lines - spare_lines
    if result.rows == 0 and result.problem_count == 0:
        result.add_problem(None, None, None, "the file has a header but no data rows")
    _add_totals(result)


def _split(line: str | None) -> list[str]:
    """A line without a double quote, as ``csv.reader`` splits it ([] for a blank line)."""
    text = (line or "").rstrip("\r\n")
    return text.split(",") if text else []


def _numbers_of(row: list[str], indexes: list[int | None]) -> tuple[str, str, str]:
    """A row's amount, quantity and unitPrice texts ("" for an absent optional column)."""
    amount, quantity, unit_price = (indexes[3], indexes[4], indexes[5])
    assert amount is not None, "amount is a required column"
    return (
        row[amount],
        row[quantity] if quantity is not None else "",
        row[unit_price] if unit_price is not None else "",
    )


def _add_totals(result: BillingRows) -> None:
    """Fold the tallies into the per-customer, per-item and whole-file sums (rejected rows are already in)."""
    per_customer = result.per_customer
    per_item = result.per_item
    total = result.csv_sum
    for (customer, item, *_), tally in result.tallies.items():
        amount = tally.amount
        total += amount
        per_customer[customer] = per_customer.get(customer, 0) + amount
        per_item[item] = per_item.get(item, 0) + amount
    result.csv_sum = total


def _column_indexes(header: list[str], customer_column: str, result: BillingRows) -> list[int | None] | None:
    """Indexes of imsi, date, billItemName, amount, quantity, unitPrice, customer (in the order ``_picker`` uses)."""
    names = [name.strip() for name in header]
    required = [IMSI, DATE, BILL_ITEM, AMOUNT, customer_column]
    positions: dict[str, int | None] = {}
    ok = True
    for name in [*required, QUANTITY, UNIT_PRICE]:
        found = [index for index, header_name in enumerate(names) if header_name == name]
        if len(found) > 1:
            result.add_problem(1, name, name, f"column {name!r} appears {len(found)} times in the header")
            ok = False
        elif not found and name in required:
            what = "the mapping's customer column" if name == customer_column else "a required column"
            result.add_problem(1, name, None, f"missing column {name!r} ({what}); the header has: {', '.join(names)}")
            ok = False
        positions[name] = found[0] if found else None
    if not ok:
        return None
    return [positions[name] for name in (IMSI, DATE, BILL_ITEM, AMOUNT, QUANTITY, UNIT_PRICE, customer_column)]


def _line_breaks(row: list[str]) -> int:
    """Physical line breaks inside a record's quoted fields (\\r\\n, \\n or \\r)."""
    return sum(value.count("\n") + value.count("\r") - value.count("\r\n") for value in row)


def _shown(value: str) -> str:
    """The field as a person can read it: bytes that are not UTF-8 shown as ``\\xNN``."""
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

    def __init__(self, result: BillingRows, mapping: Mapping, indexes: list[int | None], width: int) -> None:
        month = result.month
        self.result = result
        self.mapping = mapping
        self.indexes = indexes
        self.customer_column = mapping.customer.column
        self.width = width
        self.month = month
        self.days = frozenset([month, *(f"{month}{day:02d}" for day in range(1, days_in_month(month) + 1))])
        #: ``(amount, quantity, unitPrice)`` texts -> the numbers, once known good.
        self.numbers: dict[tuple[str, str, str], Numbers] = {}
        #: One Decimal per number text, so equal texts give the same object (``is`` compares them).
        self.decimals: dict[str, Decimal] = {}
        #: Customer values and bill item names -> whether the mapping knows them.
        self.known_customers: dict[str, bool] = {}
        self.known_items: dict[str, bool] = {}

    def ragged(self, line_no: int, row: list[str]) -> None:
        self.result.add_problem(
            line_no - _line_breaks(row),
            None,
            None,
            f"the row has {len(row)} fields but the header has {self.width} (an unquoted comma or quote?)",
        )

    def admit(
        self, line_no: int, row: list[str], key: RawKey, customer: str, item: str, imsi: str, day: str
    ) -> tuple[Numbers, Tally] | None:
        """The numbers and tally of a row the fast path could not take, or None (its problems recorded)."""
        texts = _numbers_of(row, self.indexes)
        numbers = self.numbers.get(texts)
        if numbers is None:
            numbers = self._good_numbers(*texts)
        if (
            numbers is not None
            and day in self.days
            and self._known(self.known_customers, customer, self._customer_is_known)
            and self._known(self.known_items, item, self._item_is_known)
            and (not imsi or (imsi.isascii() and imsi.isdigit()))
        ):
            tallies = self.result.tallies
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = Tally(numbers[2])
            return numbers, tally
        self.reject(line_no, row, customer, item, imsi, day, *texts)
        return None

    def _good_numbers(self, amount_text: str, quantity_text: str, unit_price_text: str) -> Numbers | None:
        if not amount_text:
            return None
        amount = self._decimal(amount_text)
        quantity = self._decimal(quantity_text) if quantity_text else NO_QUANTITY
        unit_price = self._decimal(unit_price_text) if unit_price_text else None
        if amount is None or quantity is None or (unit_price is None and unit_price_text):
            return None
        cache = self.numbers
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        numbers = cache[(amount_text, quantity_text, unit_price_text)] = (amount, quantity, unit_price)
        return numbers

    def _decimal(self, text: str) -> Decimal | None:
        """The value of a plain decimal text (one object per text), None if it is not one."""
        decimals = self.decimals
        value = decimals.get(text)
        if value is None and _NUMBER.fullmatch(text):
            if len(decimals) >= _CACHE_LIMIT:
                decimals.clear()
            value = decimals[text] = Decimal(text)
        return value

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

    def reject(
        self,
        line_no: int,
        row: list[str],
        customer: str,
        item: str,
        imsi: str,
        day: str,
        amount_text: str,
        quantity_text: str,
        unit_price_text: str,
    ) -> None:
        """Record every problem of a row (its amount, when a number, still counts in the file's totals)."""
        customer_column = self.customer_column
        fields = (
            (IMSI, imsi),
            (DATE, day),
            (BILL_ITEM, item),
            (UNIT_PRICE, unit_price_text),
            (QUANTITY, quantity_text),
            (AMOUNT, amount_text),
            (customer_column, customer),
        )
        problems: list[tuple[str, str, str]] = []  # column, value, message
        readable: dict[str, bool] = {}
        for column, value in fields:
            readable[column] = _is_utf8(value)
            if not readable[column]:
                problems.append((column, value, f"bytes that are not UTF-8 in column {column}"))

        if readable[IMSI] and imsi and not (imsi.isascii() and imsi.isdigit()):
            problems.append((IMSI, imsi, f"imsi {imsi!r} is not digits (it is empty for charges not tied to a SIM)"))
        if readable[DATE] and day not in self.days:
            problems.append((DATE, day, self._date_problem(day)))
        if readable[BILL_ITEM]:
            if not item:
                problems.append((BILL_ITEM, item, f"{BILL_ITEM} is empty"))
            elif self.mapping.item_for(item) is None:
                problems.append((BILL_ITEM, item, f"no resource for bill item {item!r} (column {BILL_ITEM})"))
        for column, text in ((UNIT_PRICE, unit_price_text), (QUANTITY, quantity_text)):
            if readable[column] and text:
                self._number_problem(column, text, problems)
        amount = self._decimal(amount_text) if readable[AMOUNT] else None
        if readable[AMOUNT]:
            if not amount_text:
                problems.append((AMOUNT, amount_text, f"{AMOUNT} is empty"))
            else:
                self._number_problem(AMOUNT, amount_text, problems)
        if readable[customer_column] and self.mapping.customer_for(customer) is None:
            hint = "" if customer else ": give the mapping a customer default for rows without one"
            message = f"no subscription for customer {customer!r} (column {customer_column}){hint}"
            problems.append((customer_column, customer, message))
        assert problems, "a rejected row has a problem"

        line = line_no - _line_breaks(row)
        result = self.result
        for column, value, message in problems:
            result.add_problem(line, column, _shown(value), message)
        if amount is not None:
            customer, item = _shown(customer), _shown(item)
            result.csv_sum += amount
            result.per_customer[customer] = result.per_customer.get(customer, 0) + amount
            result.per_item[item] = result.per_item.get(item, 0) + amount

    def _number_problem(self, column: str, text: str, problems: list[tuple[str, str, str]]) -> None:
        if self._decimal(text) is not None:
            return
        if text.strip().lower().lstrip("+-") in ("nan", "snan", "inf", "infinity"):
            problems.append((column, text, f"{column} {text!r} is not a finite number"))
        else:
            problems.append((column, text, f"{column} {text!r} is not a plain decimal number (such as -12.5)"))

    def _date_problem(self, day: str) -> str:
        if _DAY.fullmatch(day):
            try:
                date(int(day[:4]), int(day[4:6]), int(day[6:]))
            except ValueError:
                return f"date {day!r} is not a real day"
        elif _MONTH.fullmatch(day):
            if not 1 <= int(day[4:]) <= 12:
                return f"date {day!r} is not a real month"
        else:
            return f"date {day!r} is not yyyyMMdd or yyyyMM"
        return f"date {day!r} is outside the billed month {self.month}"


def days_in_month(month: str) -> int:
    """Days in a ``yyyyMM`` month (already validated)."""
    return calendar.monthrange(int(month[:4]), int(month[4:]))[1]
