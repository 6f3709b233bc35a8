"""The fast path of a detailed billing CSV: read, validate, map and aggregate it in polars, exactly.

The file is read from its stream (never whole in memory) and written to /tmp in segments of
whole records (``SEGMENT_BYTES``; a file already on local disk is scanned where it is); polars
scans each segment with every column a string, checks it, and sums it per raw key; the charges
are then computed as one frame, sorted by ``extChargeId``, and built as Python objects a packet
at a time (:class:`FrameCharges`), so what the plan keeps is a few hundred bytes per charge, not
its Python objects. polars cannot tell a short row from empty fields: every record's fields are
counted (the segment's commas against the commas in its values), and a CR that is not part of a
CRLF, a line end to the pure-Python reader, sends the file to that reader.

Money never touches a float: every number is checked as plain decimal text first (the cast of
polars rounds a value with too many decimals without a word), then cast to ``Decimal(38, 18)``,
and summed exactly (polars raises on an overflow). The rules are those of the pure-Python reader
(:mod:`soracharge.logic.billing_csv`) or stricter: whenever a chunk holds anything the fast path
does not accept (a problem, or only something it does not handle, such as a blank line or a
number written ``+5``), :func:`read_frame` returns None, and the import runs the pure-Python
reader over the whole file instead, which lists every problem with its line, column and value.
The same file and mapping give the same charges, byte for byte, on either path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, localcontext
from pathlib import Path
from typing import BinaryIO, Final, overload

from soracharge.logic import shares
from soracharge.logic.billing_csv import (
    AMOUNT,
    BILL_ITEM,
    DATE,
    IMSI,
    QUANTITY,
    UNIT_PRICE,
    RowArithmetic,
    days_in_month,
    differences_mark,
)
from soracharge.logic.charges import ChargeBuilder, ext_charge_id, share_rows
from soracharge.logic.polars_engine import pl
from soracharge.models.charges import EXACT, Charge, SharedSplit, canonical_decimal_text
from soracharge.models.devices import DEVICE_COLUMNS, DEVICE_ID_PATTERN
from soracharge.models.mapping import Mapping

#: Bytes read from the stream at a time (then cut after its last whole record). 4 MiB, not more: larger
#: reads, freed on one thread while polars scans on others, stay with the C allocator (measured: the
#: peak grew by about 500 bytes a charge at 16 MiB, 200-300 at 4 MiB, and the plan was faster).
CHUNK_BYTES: Final = 4 * 1024 * 1024
#: Bytes of whole records written to the function's /tmp and scanned by polars at a time.
SEGMENT_BYTES: Final = 32 * 1024 * 1024
#: The first segment is smaller (polars waits, idle, while it is read and written), and each next one twice
#: the one before up to ``SEGMENT_BYTES``: it is written while polars scans the one before, in less time. A
#: segment holds whole reads (``CHUNK_BYTES``, cut at a record's end), at least one, so it may fall a read
#: short of its size: in practice the first holds the records of the header's read (64 KiB), the next one
#: read (4 MiB), then 16 and 32 MiB (measured over a 150 MiB stream: 0.06, 4, 16, 32, 28, 32, 32, 6 MiB).
FIRST_SEGMENT_BYTES: Final = 4 * 1024 * 1024
#: A local file up to this size is scanned where it is, at once (polars holds about half its size
#: while it scans); a larger one is read in segments like a stream, so memory stays flat in the rows.
LOCAL_SCAN_BYTES: Final = 256 * 1024 * 1024
#: Bytes of a local file counted at a time (while polars scans it).
_COUNT_BYTES: Final = 1024 * 1024
#: A record longer than this many chunks (a quote that never closes) leaves the fast path.
_MAX_CHUNKS_PER_RECORD: Final = 16
#: Partial sums of this many chunks are folded together, so they never grow with the file.
_FOLD_EVERY: Final = 8
#: Charges whose extChargeId is computed per batch (in Python: polars has no SHA-256). A batch's identity texts
#: and ids are Python objects, some 260 bytes a charge, so a batch is small: the month's are never held at once
#: (at 200,000 a batch, a month of 137,000 charges peaked 23 MB higher: 2026-12-06, bench/README.md).
_ID_BATCH: Final = 16_384

DECIMAL: Final = pl.Decimal(38, 18)
#: What the fast path accepts as a number: plain decimal text that fits Decimal(38, 18) exactly.
PLAIN_NUMBER: Final = r"^-?[0-9]{1,20}(?:\.[0-9]{1,18})?$"
_KEY: Final = ("customer", BILL_ITEM, IMSI, UNIT_PRICE)
#: A relative bound of the rounding errors of a float product and difference, thirty times what they can be.
_FLOAT_SLACK: Final = 1e-14


@dataclass(frozen=True)
class FrameRead:
    """A file read on the fast path, without any problem: its totals and its charges as one frame."""

    rows: int
    csv_sum: Decimal
    per_customer: dict[str, Decimal]
    per_item: dict[str, Decimal]
    per_subscription: dict[str, Decimal]
    sims_per_customer: dict[str, int]
    devices_per_customer: dict[str, int]
    #: The shared costs, split (``logic/shares.py``): their charges are rows of ``charges``.
    shares: list[SharedSplit]
    #: The rows no customer owns, by bill item.
    unowned_per_item: dict[str, Decimal]
    #: The customer column's own values with their amounts; the device ids named; listed ids named as IMSIs.
    per_value: dict[str, Decimal]
    device_ids: list[str]
    listed_as_imsis: list[str]
    #: One row per charge, in the order of their extChargeId (computed again with each packet).
    charges: pl.DataFrame


def read_frame(stream: BinaryIO, *, month: str, mapping: Mapping, currency: str = "JPY") -> FrameRead | None:
    """Read ``stream`` to its end on the fast path; None when the file needs the pure-Python reader."""
    if mapping.aggregation != "imsi-month":
        return None  # one charge per row: the pure-Python reader's own path
    local = _local_file(stream)
    records = _Records(stream)
    header = records.header()
    names = _header_names(header) if header is not None else None
    customer = mapping.customer.column
    devices = [name for name in DEVICE_COLUMNS if names is not None and name in names]
    needed = [IMSI, DATE, BILL_ITEM, UNIT_PRICE, QUANTITY, AMOUNT, customer, *devices]
    if header is None or names is None or any(names.count(name) != 1 for name in needed):
        return None  # missing or repeated columns, a quoted header: the pure-Python reader says what is wrong
    check = _Checks(month, mapping, names=names, needed=needed, devices=devices)
    partials: list[pl.DataFrame] = []
    rows = 0
    with tempfile.TemporaryDirectory(prefix="soracharge-csv-") as workdir, contextlib.ExitStack() as stack:
        segments = records.counted(local) if local is not None else records.segments(Path(workdir), header)
        stack.callback(segments.close)  # its thread (counting or writing) ends before the stream is read again
        for segment in segments:
            tallied = check.segment(segment)
            if tallied is None:
                return None
            partials.append(tallied.frame)
            rows += tallied.rows
            if len(partials) >= _FOLD_EVERY:
                partials = [_fold(partials, devices)]
    if records.broken or rows == 0:
        return None
    tallies = _fold(partials, devices)
    del partials  # the sums of each segment: held no longer than needed
    owned = _owned(tallies, devices, mapping)
    if not check.mapped(owned):
        return None
    per_value = _sums(tallies, "customer")
    listed = list(mapping.customer.devices)
    as_imsis = sorted(tallies.filter(pl.col(IMSI).is_in(listed))[IMSI].unique().to_list()) if listed else []
    del tallies  # the raw keys' sums: ``owned`` holds them, with what each bills and whose it is
    owned = owned.drop(*devices, "one_thing")  # ``thing`` says what the device columns said
    named = owned.filter(pl.col("thing") != "")["thing"].unique().to_list()
    device_ids = sorted(str(thing).partition(":")[2] for thing in named)
    splits: list[SharedSplit] = []
    if mapping.shared:
        by_item = owned.group_by("customer", BILL_ITEM).agg(pl.col("amount").sum())
        amounts = ((customer, name, canonical(amount)) for customer, name, amount in by_item.iter_rows())
        mark = differences_mark(names)
        splits, problems = shares.split_shared(amounts, mapping, currency, differences=mark)
        if problems:
            return None  # the pure-Python reader names them
    read = _charges_of(owned, rows, month=month, mapping=mapping, splits=splits)
    return dataclasses.replace(read, per_value=per_value, device_ids=device_ids, listed_as_imsis=as_imsis)


@dataclass(frozen=True)
class _Segment:
    """Whole records of the file written to ``path`` under its header, and what was counted on the way."""

    path: Path
    counts: Callable[[], tuple[int, bool]]  # (its commas, whether it holds a NUL byte), maybe still counting


class _Records:
    """The stream's bytes as its header record, then segments of whole records (a quoted line break never splits)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._rest = b""
        self.broken = False  # a record never ended (a quote that never closes)

    def header(self) -> bytes | None:
        data = self._stream.read(64 * 1024)
        data = data.removeprefix(b"\xef\xbb\xbf")
        end = data.find(b"\n")
        if end < 0 or b'"' in data[:end]:
            return None
        self._rest = data[end + 1 :]
        return data[: end + 1]

    def segments(self, workdir: Path, header: bytes) -> Generator[_Segment, None, None]:
        """Segments of whole records under the header, written in ``workdir``: up to ``FIRST_SEGMENT_BYTES``,
        then twice as much each time up to ``SEGMENT_BYTES`` (each at least one read, never a record split).

        The next segment is read and written on a thread while polars scans the one yielded (two
        files, one written while the other is scanned), so reading the stream (the S3 body, and its
        SHA-256) overlaps the scan.
        """
        pending = self._chunks()
        first = next(pending, None)
        if first is None:
            return
        paths = (workdir / "part-0.csv", workdir / "part-1.csv")
        carried: list[_Chunk | None] = [first]

        def write(path: Path, size: int) -> _Segment | None:
            chunk = carried[0]
            if chunk is None:
                return None
            commas, written, marks = 0, 0, False
            path.unlink(missing_ok=True)  # a new file, not the old one truncated (measured: less CPU per segment)
            with path.open("wb") as sink:
                sink.write(header)
                while chunk is not None and (written == 0 or written + chunk.size <= size):
                    for piece in chunk.pieces:
                        sink.write(piece)
                    commas += chunk.commas
                    marks = marks or chunk.nul
                    written += chunk.size
                    chunk = next(pending, None)
            carried[0] = chunk
            return _Segment(path=path, counts=_known(commas, marks))

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="csv-segments") as pool:
            writing = pool.submit(write, paths[0], min(SEGMENT_BYTES, FIRST_SEGMENT_BYTES))
            for index in itertools.count(1):
                segment = writing.result()
                if segment is None:
                    return
                size = min(SEGMENT_BYTES, FIRST_SEGMENT_BYTES << index)
                writing = pool.submit(write, paths[index % 2], size)  # the other file: polars is done with it
                yield segment

    def counted(self, path: Path) -> Generator[_Segment, None, None]:
        """A file on local disk is scanned where it is, as one segment; its commas are counted meanwhile.

        The count runs on a thread of its own while polars scans the file (polars releases the GIL).
        """

        def count() -> tuple[int, bool]:
            commas, marks = self._rest.count(b","), _unusual(self._rest)
            buffer = bytearray(_COUNT_BYTES)  # one buffer read into again and again: it stays in the CPU's cache
            view = memoryview(buffer)
            while read := self._stream.readinto(buffer):  # type: ignore[attr-defined]
                block = buffer if read == len(buffer) else bytes(view[:read])
                commas += block.count(b",")
                marks = marks or _unusual(block)
            return commas, marks

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="csv-commas") as pool:
            counting = pool.submit(count)
            yield _Segment(path=path, counts=counting.result)

    def _chunks(self) -> Iterator[_Chunk]:
        """Whole records, read ``CHUNK_BYTES`` at a time: each read is written as it is, up to its last
        record end (a view, not a copy); only the record it cuts is carried on to the next."""
        rest = self._rest  # the header read's rest may hold whole records too
        self._rest = b""
        cut = _last_record_end(rest)
        if cut:
            yield _Chunk.of(rest[:cut], b"")
            rest = rest[cut:]
        waited = 0
        while True:
            more = self._stream.read(CHUNK_BYTES)
            if not more:
                if rest:  # even a line of blanks: it is a row to the pure-Python reader
                    if rest.count(b'"') % 2:
                        self.broken = True
                        return
                    yield _Chunk.of(rest if rest.endswith(b"\n") else rest + b"\n", b"")
                return
            cut = _last_record_end(more, odd_before=rest.count(b'"') % 2)
            if cut <= 0:
                waited += 1
                if waited > _MAX_CHUNKS_PER_RECORD:
                    self.broken = True
                    return
                rest += more
                continue
            waited = 0
            tail = more[cut:]
            yield _Chunk.of(rest, more, tail)
            rest = tail


@dataclass(frozen=True)
class _Chunk:
    """Whole records, as pieces written one after the other, with their size, their commas and whether
    a NUL is among them."""

    pieces: tuple[bytes | memoryview, ...]
    size: int
    commas: int
    nul: bool

    @classmethod
    def of(cls, rest: bytes, more: bytes, tail: bytes = b"") -> _Chunk:
        """``rest`` then ``more`` without its ``tail`` (the start of a record cut by the read)."""
        head = memoryview(more)[: len(more) - len(tail)]
        commas = rest.count(b",") + more.count(b",") - tail.count(b",")
        return cls(
            pieces=(rest, head),
            size=len(rest) + len(head),
            commas=commas,
            nul=_unusual(rest) or _unusual(more),  # a NUL in the tail is found again in the next chunk: no matter
        )


def _unusual(data: bytes | bytearray) -> bool:
    """Bytes the fast path leaves to the pure-Python reader: a NUL. (A CR that is not part of a CRLF, a
    line end to the pure-Python reader but data to polars, is found in the values: see _Checks.segment.)"""
    return b"\x00" in data


def _known(commas: int, marks: bool) -> Callable[[], tuple[int, bool]]:
    def counts() -> tuple[int, bool]:
        return commas, marks

    return counts


def _local_file(stream: BinaryIO) -> Path | None:
    """The path of ``stream`` when it is a regular file on local disk, read from its start and no larger
    than ``LOCAL_SCAN_BYTES`` (polars reads it itself)."""
    name = getattr(stream, "name", None)
    if not isinstance(name, str) or not isinstance(stream, io.BufferedReader | io.FileIO):
        return None
    path = Path(name)
    try:
        if not (path.is_file() and stream.seekable() and stream.tell() == 0):
            return None
        return path if path.stat().st_size <= LOCAL_SCAN_BYTES else None
    except (OSError, ValueError):
        return None


def _last_record_end(buffer: bytes, *, odd_before: int = 0) -> int:
    """The end (past its line break) of the last whole record in ``buffer``, or 0.

    A line break ends a record when an even number of double quotes stands before it since the
    start of its record (RFC 4180: a quote inside a quoted field is doubled, so only the quotes
    that open and close count odd); ``odd_before`` is that parity of the bytes before ``buffer``.
    """
    odd = (odd_before + buffer.count(b'"')) % 2
    end = len(buffer)
    for _ in range(10_000):
        newline = buffer.rfind(b"\n", 0, end)
        if newline < 0:
            return 0
        odd ^= buffer.count(b'"', newline + 1, end) % 2
        if not odd:
            return newline + 1
        end = newline
    return 0


def _header_names(header: bytes) -> list[str] | None:
    try:
        text = header.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None
    names = text.split(",")
    # Repeated names (polars renames the second one) and blank or spaced ones: the pure-Python reader's.
    unique = len(set(names)) == len(names)
    return names if unique and all(name == name.strip() and name for name in names) else None


@dataclass(frozen=True)
class _Tallied:
    frame: pl.DataFrame
    rows: int


class _Checks:
    """Whether a file's rows are all good, by the pure-Python reader's rules (or stricter), and their sums."""

    def __init__(
        self, month: str, mapping: Mapping, *, names: list[str], needed: list[str], devices: list[str]
    ) -> None:
        self.mapping = mapping
        self.names = names
        self.needed = needed
        self.key = ["customer", BILL_ITEM, IMSI, UNIT_PRICE, *devices]
        self.days = [month, *(f"{month}{day:02d}" for day in range(1, days_in_month(month) + 1))]

    def segment(self, segment: _Segment) -> _Tallied | None:
        """One segment's rows summed per raw key, or None when any row is not good (or not for the fast path).

        Each row is checked (date, amount, quantity); the raw keys (customer value, bill item, imsi,
        unit price) are checked once summed (:meth:`mapped`). polars fills a short row's missing
        fields with empty strings, as if they were empty, and refuses a long one: every record has
        exactly the header's fields when the commas of the segment are ``rows * (fields - 1)`` plus
        the commas inside its values. A good row's date, amount and quantity hold no comma and no
        CR; the key columns' commas and CRs are counted once per key (times its rows), so only the
        other columns are looked at row by row.
        """
        customer = self.mapping.customer.column
        number = PLAIN_NUMBER
        frame = pl.scan_csv(
            segment.path,
            infer_schema=False,
            empty_string_is_null=False,
            encoding="utf8",
            raise_if_empty=True,
        )
        quantity = pl.col(QUANTITY)
        good = (
            pl.col(DATE).is_in(self.days)
            & pl.col(AMOUNT).str.contains(number)
            & ((quantity == "") | quantity.str.contains(number))
        )
        suspect = good & self._arithmetic_in_doubt()
        others = [name for name in self.names if name not in self.needed]
        commas = pl.sum_horizontal(
            pl.lit(0, pl.UInt32), *(pl.col(name).str.count_matches(",", literal=True) for name in others)
        )
        # polars takes the CR of a CRLF as part of the line end; any other CR is left in a value, where the
        # pure-Python reader (as csv) would have ended a line: such a file is the pure-Python reader's.
        carriage_returns = pl.any_horizontal(
            pl.lit(False), *(pl.col(name).str.contains("\r", literal=True) for name in others)
        )
        query = (
            frame.with_columns(good=good, commas=commas, cr=carriage_returns, suspect=suspect)
            .group_by([customer, *self.key[1:]])
            .agg(
                amount=pl.when(pl.col("good")).then(pl.col(AMOUNT)).cast(DECIMAL).sum(),
                quantity=pl.when(quantity != "").then(quantity).cast(DECIMAL).sum(),
                rows=pl.len().cast(pl.Int64),
                quantity_rows=(quantity != "").sum().cast(pl.Int64),
                bad=(~pl.col("good")).sum().cast(pl.Int64),
                suspect=pl.col("suspect").sum().cast(pl.Int64),
                commas=pl.col("commas").sum().cast(pl.Int64),
                cr=pl.col("cr").sum().cast(pl.Int64),
            )
            .rename({customer: "customer"})
        )
        try:
            tallied = query.collect()
        except (pl.exceptions.PolarsError, ValueError):
            return None  # not UTF-8, a stray quote, more fields than the header...: the pure-Python reader says
        keys = pl.col(*self.key)
        key_commas = pl.sum_horizontal(keys.str.count_matches(",", literal=True)) * pl.col("rows")
        totals = tallied.select(
            pl.col("rows", "bad", "suspect").sum(),
            (pl.col("commas") + key_commas).sum().alias("commas"),
            (pl.col("cr") + pl.any_horizontal(keys.str.contains("\r", literal=True))).sum().alias("cr"),
            pl.any_horizontal(keys.is_null()).any().alias("null_keys"),
        ).row(0)
        rows, bad, suspects, value_commas, carried = (int(value or 0) for value in totals[:5])
        if carried and self._lone_carriage_return(frame):
            return None
        header_commas = len(self.names) - 1
        raw_commas, marks = segment.counts()
        if marks or bad or totals[5] or rows == 0 or raw_commas != rows * header_commas + value_commas:
            return None
        if suspects and self._arithmetic_fails(frame, suspect):
            return None
        # The customer values and bill items repeat: as categoricals, a key holds 4 bytes of each, not its text.
        sums = tallied.drop("bad", "suspect", "commas", "cr").with_columns(
            pl.col("customer", BILL_ITEM).cast(pl.Categorical)
        )
        return _Tallied(frame=sums, rows=rows)

    def _arithmetic_in_doubt(self) -> pl.Expr:
        """Rows whose amount might not be unitPrice × quantity, or might pass the bound a row may reach
        (``RowArithmetic``), by a float test that errs one way only: a row it passes is good exactly (its
        rounding error is bounded and allowed for); the rows it doubts are checked exactly in Python."""
        checks = self.mapping.checks
        amount = pl.col(AMOUNT).cast(pl.Float64, strict=False)
        error = amount.abs() * _FLOAT_SLACK
        doubt = amount.abs() + error >= float(checks.row_amount_limit) * (1 - _FLOAT_SLACK)
        if not checks.arithmetic:
            return doubt
        price, quantity = pl.col(UNIT_PRICE), pl.col(QUANTITY)
        product = price.cast(pl.Float64, strict=False) * quantity.cast(pl.Float64, strict=False)
        error = (amount.abs() + product.abs()) * _FLOAT_SLACK
        if checks.amount_tolerance is not None:
            tolerance = pl.lit(float(checks.amount_tolerance))
        else:
            dot = pl.col(AMOUNT).str.find(".", literal=True)
            decimals = pl.when(dot.is_null()).then(0).otherwise(pl.col(AMOUNT).str.len_bytes() - dot - 1)
            tolerance = pl.lit(0.5) * pl.lit(10.0).pow(-decimals.cast(pl.Float64))
        both = (price != "") & (quantity != "")
        return doubt | (both & ((amount - product).abs() + error > tolerance * (1 - _FLOAT_SLACK)))

    def _arithmetic_fails(self, frame: pl.LazyFrame, suspect: pl.Expr) -> bool:
        """Whether a doubted row is bad exactly (the pure-Python reader then names it)."""
        arithmetic = RowArithmetic(self.mapping.checks)
        try:
            doubted = frame.filter(suspect).select(AMOUNT, QUANTITY, UNIT_PRICE).collect()
        except (pl.exceptions.PolarsError, ValueError):
            return True
        return any(arithmetic.problem(*texts) is not None for texts in doubted.iter_rows())

    def _lone_carriage_return(self, frame: pl.LazyFrame) -> bool:
        """A CR not followed by LF in a value (a quoted CRLF is data to both readers; this is not). A polars error
        here is one of the fast path's: it declines the file (``charges._fast_plan``)."""
        lone = pl.any_horizontal(pl.col(name).str.contains(r"\r(?:[^\n]|$)") for name in self.names)
        return bool(frame.select(lone.any()).collect().item())

    def mapped(self, owned: pl.DataFrame) -> bool:
        """Every raw key maps: one thing at most (an imsi of digits, or a device id), a customer known (no
        device listed for another), a known bill item, a unit price of plain text (see :func:`_owned`)."""
        mapping = self.mapping
        items = [name for name in owned[BILL_ITEM].unique().to_list() if name and mapping.item_for(name)]
        customers = [
            value for value in owned["customer"].unique().to_list() if value is not None and mapping.customer_for(value)
        ]
        shared = [name for name in items if mapping.shared_for(name) is not None]
        price = pl.col(UNIT_PRICE)
        return bool(
            owned.select(
                (
                    pl.col(IMSI).str.contains(r"^[0-9]*$")
                    & pl.col("one_thing")
                    & ((price == "") | price.str.contains(PLAIN_NUMBER))
                    & pl.col(BILL_ITEM).is_in(items)
                    & pl.col("customer").is_not_null()
                    & (
                        pl.col("customer").is_in(customers)
                        | ((pl.col("customer") == "") & pl.col(BILL_ITEM).is_in(shared))
                    )
                ).all(ignore_nulls=False)
            ).item()
        )


def _owned(tallies: pl.DataFrame, devices: list[str], mapping: Mapping) -> pl.DataFrame:
    """The raw keys' sums with what each bills and whose it is, as ``billing_csv._RowCheck.thing`` and ``owner``:

    - ``thing``: ``<device column>:<id>`` for a device's key, else "" (a SIM's is its imsi, already a column:
      not copied, so a month of SIMs costs no more memory than before devices);
    - ``one_thing``: the key names at most one SIM or device, and each device id is one;
    - ``customer``: the customer the mapping lists its device for, else its customer column's value; null
      when the mapping lists its device for a customer other than the one its column names. In a bill of an
      operator the mapping gives to one customer (``Mapping.whole_bill``), that customer; null for a key naming
      another.
    """
    named = [pl.col(IMSI) != "", *(pl.col(name) != "" for name in devices)]
    good_ids = [(pl.col(name) == "") | pl.col(name).str.contains(DEVICE_ID_PATTERN) for name in devices]
    thing: pl.Expr = pl.lit("")
    for name in reversed(devices):
        thing = pl.when(pl.col(name) != "").then(pl.lit(f"{name}:") + pl.col(name)).otherwise(thing)
    thing = pl.when(pl.col(IMSI) != "").then(pl.lit("")).otherwise(thing)
    customer = pl.col("customer").cast(pl.String)
    listed_devices = mapping.customer.devices
    if listed_devices and devices:
        old, new = list(listed_devices), list(listed_devices.values())
        listed = pl.coalesce(
            *(pl.col(name).replace_strict(old, new, default=None, return_dtype=pl.String) for name in devices)
        )
        customer = (
            pl.when(listed.is_null())
            .then(customer)
            .when((customer == "") | (customer == listed))
            .then(listed)
            .otherwise(pl.lit(None, pl.String))
        )
    if (whole := mapping.whole_bill) is not None:  # every row is one customer's: a row naming another is refused
        owner = whole[1]
        customer = pl.when(customer.is_in(["", owner])).then(pl.lit(owner)).otherwise(pl.lit(None, pl.String))
    return tallies.with_columns(
        customer=customer,
        thing=thing,
        one_thing=pl.sum_horizontal(*named) <= 1 if devices else pl.lit(True),
    ).with_columns(one_thing=pl.col("one_thing") & pl.all_horizontal(pl.lit(True), *good_ids))


def _fold(partials: list[pl.DataFrame], devices: list[str]) -> pl.DataFrame:
    if len(partials) == 1:
        return partials[0]  # a segment's sums are per raw key already
    return (
        pl.concat(partials)
        .group_by([*_KEY, *devices])
        .agg(pl.col("amount").sum(), pl.col("quantity").sum(), pl.col("rows").sum(), pl.col("quantity_rows").sum())
    )


def _charges_of(
    tallies: pl.DataFrame, rows: int, *, month: str, mapping: Mapping, splits: list[SharedSplit]
) -> FrameRead:
    """The charges of the summed raw keys, as ``billing_csv`` + ``charges.build_charges`` make them, and the
    shares of ``splits`` (the shared rows' own charges are theirs)."""
    customers = tallies["customer"].unique().to_list()
    targets = {value: target for value in customers if (target := mapping.customer_for(value)) is not None}
    customer_table = pl.DataFrame(
        {
            "customer": list(targets),
            "subscription": [t.subscription for t in targets.values()],
            "account": [t.account or "" for t in targets.values()],
        },
        schema={"customer": pl.Categorical, "subscription": pl.Categorical, "account": pl.Categorical},
    )
    names = tallies[BILL_ITEM].unique().to_list()
    ranks = {id(item): index for index, item in enumerate(mapping.items)}
    item_of = [mapping.item_for(name) for name in names]
    item_table = pl.DataFrame(
        {
            BILL_ITEM: names,
            "resource": [item.resource for item in item_of if item is not None],
            "rank": [ranks[id(item)] for item in item_of if item is not None],
        },
        schema={BILL_ITEM: pl.Categorical, "resource": pl.Categorical, "rank": pl.UInt32},
    )
    # Repeated texts as categoricals, from here to the charge frame: a charge costs bytes, not its texts.
    tallies = tallies.with_columns(pl.col("customer", BILL_ITEM).cast(pl.Categorical))
    keyed = (
        tallies.join(customer_table, on="customer", how="left")
        .join(item_table, on=BILL_ITEM, how="left")
        .with_columns(unit_price=pl.when(pl.col(UNIT_PRICE) != "").then(pl.col(UNIT_PRICE)).cast(DECIMAL))
    )
    per_customer = _sums(keyed, "customer")
    per_item = _sums(keyed, BILL_ITEM)
    unowned_per_item = _sums(keyed.filter(pl.col("customer").cast(pl.String) == ""), BILL_ITEM)
    sims = keyed.filter(pl.col(IMSI) != "").group_by("customer").agg(pl.col(IMSI).n_unique())
    sims_per_customer = {str(customer): int(count) for customer, count in sims.iter_rows()}
    devices = keyed.filter(pl.col("thing") != "").group_by("customer").agg(pl.col("thing").n_unique())
    devices_per_customer = {str(customer): int(count) for customer, count in devices.iter_rows()}
    prices = pl.col("unit_price")
    charge_key = ["subscription", "account", "resource", IMSI, "thing"]
    routed = _routed(keyed, names, mapping) if mapping.shared else keyed
    charges = (
        routed.group_by(charge_key)
        .agg(
            # A charge of one or two bill items is named here (a categorical's min and max are its texts' in
            # code point order, as sorted() sorts); one of more than two, by _joined_names.
            first=pl.col(BILL_ITEM).min(),
            last=pl.col(BILL_ITEM).max(),
            names=pl.col(BILL_ITEM).n_unique(),
            rank=pl.col("rank").min(),
            total=pl.col("amount").sum(),
            quantity=pl.col("quantity").sum(),
            rows=pl.col("rows").sum(),
            quantity_rows=pl.col("quantity_rows").sum(),
            # The rows' common unit price: one value and no row without one, else none.
            unit_price=pl.when((prices.null_count() == 0) & (prices.n_unique() == 1)).then(prices.first()),
        )
        .with_columns(
            amount=pl.when(pl.col("quantity_rows") > 0)
            .then(pl.col("quantity"))
            .otherwise(pl.col("rows").cast(DECIMAL)),
        )
        .with_columns(
            name=pl.when(pl.col("names") == 1)
            .then(pl.col("first").cast(pl.String))
            .when(pl.col("names") == 2)
            .then(pl.concat_str(pl.col("first").cast(pl.String), pl.lit(" | "), pl.col("last").cast(pl.String)))
        )
        .drop("quantity", "rows", "quantity_rows", "first", "last")
    )
    charges = _joined_names(charges, routed, charge_key)
    # Sorted by extChargeId, as the pure-Python path sorts; the id itself is computed again with each packet.
    # Repeated texts as categoricals: a charge costs a few hundred bytes of this frame, not its Python objects.
    charges = charges.with_columns(ext_id=_ext_ids(charges, month))
    if splits:
        charges = pl.concat([charges, _share_frame(splits, mapping, month, charges.schema)])
    charges = charges.sort("ext_id").drop("ext_id").with_columns(pl.col("name").cast(pl.Categorical))
    per_subscription = {
        str(subscription): canonical(total)
        for subscription, total in charges.group_by("subscription").agg(pl.col("total").sum()).iter_rows()
    }
    csv_sum = sum(per_customer.values(), Decimal(0))
    return FrameRead(
        rows=rows,
        csv_sum=csv_sum,
        per_customer=per_customer,
        per_item=per_item,
        per_subscription=per_subscription,
        sims_per_customer=sims_per_customer,
        devices_per_customer=devices_per_customer,
        shares=splits,
        unowned_per_item=unowned_per_item,
        per_value={},
        device_ids=[],
        listed_as_imsis=[],
        charges=charges,
    )


def _routed(keyed: pl.DataFrame, names: list[str], mapping: Mapping) -> pl.DataFrame:
    """The rows no customer owns that a ``shared`` rule sends ``to`` a subscription, sent there; those a rule
    shares out ``by`` a basis, dropped (their charges are the shares)."""
    sent = {name: rule.to for name in names if (rule := mapping.shared_for(name)) is not None and rule.to is not None}
    out = [name for name in names if shares.is_shared("", name, mapping)]
    nobody = pl.col("customer").cast(pl.String) == ""
    item = pl.col(BILL_ITEM).cast(pl.String)
    if sent:
        to = {name: target.subscription for name, target in sent.items()}
        accounts = {name: target.account or "" for name, target in sent.items()}
        keyed = keyed.with_columns(
            subscription=pl.when(nobody & item.is_in(list(to)))
            .then(item.replace_strict(to, default=None, return_dtype=pl.String))
            .otherwise(pl.col("subscription").cast(pl.String))
            .cast(pl.Categorical),
            account=pl.when(nobody & item.is_in(list(accounts)))
            .then(item.replace_strict(accounts, default=None, return_dtype=pl.String))
            .otherwise(pl.col("account").cast(pl.String))
            .cast(pl.Categorical),
        )
    return keyed.filter(~(nobody & item.is_in(out))) if out else keyed


def _share_frame(splits: list[SharedSplit], mapping: Mapping, month: str, schema: pl.Schema) -> pl.DataFrame:
    """The shares' charges as rows of the charge frame, with their extChargeId (computed in Python: a customer
    value may need escaping in the identity's JSON, which ``_ext_ids`` does not do)."""
    ranks = {id(item): index for index, item in enumerate(mapping.items)}
    rows = [row for split in splits for row in share_rows(split, mapping, ranks, month)]
    data = {
        "subscription": [identity[1] for identity, *_ in rows],
        "account": [identity[2] for identity, *_ in rows],
        "resource": [identity[3] for identity, *_ in rows],
        IMSI: ["" for _ in rows],
        "thing": [identity[4] for identity, *_ in rows],
        "name": [name for _, name, *_ in rows],
        "rank": [ranks[id(item)] for _, _, item, *_ in rows],
        "total": [total for *_, total, _, _ in rows],
        "unit_price": [price for *_, price in rows],
        "amount": [amount for *_, amount, _ in rows],
        "ext_id": [_sort_key(ext_charge_id(identity)) for identity, *_ in rows],
    }
    return pl.DataFrame({name: data[name] for name in schema}, schema=schema)


def _joined_names(charges: pl.DataFrame, keyed: pl.DataFrame, charge_key: list[str]) -> pl.DataFrame:
    """A charge of more than two bill items is named by them all, sorted as text (as ``sorted()``) and joined
    by `` | ``; only those few charges' names are joined (a list per charge costs more than its sums)."""
    several = charges.filter(pl.col("names") > 2).select(charge_key)
    charges = charges.drop("names")
    if several.is_empty():
        return charges
    joined = (
        keyed.join(several, on=charge_key, how="semi")
        .group_by(charge_key)
        .agg(joined=pl.col(BILL_ITEM).cast(pl.String).unique().sort().str.join(" | "))
    )
    return (
        charges.join(joined, on=charge_key, how="left")  # in any order: the charges are sorted by their ids after
        .with_columns(name=pl.coalesce("joined", "name"))
        .drop("joined")
    )


def _sums(frame: pl.DataFrame, by: str) -> dict[str, Decimal]:
    grouped = frame.group_by(by).agg(pl.col("amount").sum())
    return {key: canonical(amount) for key, amount in grouped.iter_rows()}


def _ext_ids(charges: pl.DataFrame, month: str) -> pl.Series:
    """What each charge's ``sc-<month>-<32 hex>`` sorts by: the 16 bytes the 32 hex digits spell (hex digits
    sort as the bytes they spell; the prefix is the month's), of its identity JSON, a batch at a time (its
    UUIDs, month, imsi and device ids need no escape in JSON). The ids themselves are built with each packet."""
    sha256 = hashlib.sha256
    identity = pl.concat_str(
        [
            pl.lit(f'["{month}","'),
            pl.col("subscription").cast(pl.String),
            pl.lit('","'),
            pl.col("account").cast(pl.String),
            pl.lit('","'),
            pl.col("resource").cast(pl.String),
            pl.lit('","'),
            pl.when(pl.col(IMSI) != "").then(pl.col(IMSI)).otherwise(pl.col("thing")),
            pl.lit('"]'),
        ]
    )
    parts = []
    for start in range(0, charges.height, _ID_BATCH):
        batch = charges.slice(start, _ID_BATCH).select(identity.cast(pl.Binary)).to_series().to_list()
        parts.append(pl.Series([sha256(text).digest()[:16] for text in batch], dtype=pl.Binary))
    return pl.concat(parts) if parts else pl.Series([], dtype=pl.Binary)


def _sort_key(ext_charge_id: str) -> bytes:
    """What an ``sc-<month>-<32 hex>`` sorts by among the month's (as :func:`_ext_ids`)."""
    return bytes.fromhex(ext_charge_id.rpartition("-")[2])


def canonical(value: object) -> Decimal:
    """A sum from polars (a Decimal; 0 or None when there was nothing to sum) as the pure-Python reader writes it:
    ``310``, ``0.3``, no trailing zeros, no exponent."""
    if value is None or value == 0:
        return Decimal(0)
    if not isinstance(value, Decimal):
        raise TypeError(f"expected an exact Decimal from polars, got {type(value).__name__}: never a float")
    return Decimal(canonical_decimal_text(value))


class FrameCharges(Sequence[Charge]):
    """The charges of a :class:`FrameRead`, built as Python objects only when asked for (a packet at a time)."""

    def __init__(
        self,
        frame: pl.DataFrame,
        *,
        month: str,
        currency: str,
        mapping: Mapping,
        id_suffix: str,
        splits: Sequence[SharedSplit] = (),
    ) -> None:
        self._frame = frame
        self._mapping = mapping
        self._month = month
        self._currency = currency
        self._suffix = f"-{id_suffix}" if id_suffix else ""  # as the charges' ids end
        self._builder = ChargeBuilder(
            month=month, currency=currency, mapping=mapping, id_suffix=id_suffix, notes=shares.notes(splits)
        )

    def __len__(self) -> int:
        return self._frame.height

    @overload
    def __getitem__(self, index: int) -> Charge: ...
    @overload
    def __getitem__(self, index: slice) -> list[Charge]: ...
    def __getitem__(self, index: int | slice) -> Charge | list[Charge]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._build(start, stop - start) if stop > start else []
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("charge index out of range")
        return self._build(index, 1)[0]

    def __eq__(self, other: object) -> bool:
        """The same charges in the same order (as a list of them would compare)."""
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[Charge]:
        size = self._mapping.packet_size
        for start in range(0, len(self), size):
            yield from self._build(start, size)

    def fingerprint(self) -> str:
        """What the packets are, without building them: the charge frame, the mapping and the settings hashed.

        Any change that changes a packet (a row's sums, the mapping's items or customers, the packet
        size, the currency, the id suffix) changes it; so, harmlessly, does a new polars version.
        """
        digest = hashlib.sha256()
        settings = f"{self._month}|{self._currency}|{self._suffix}|{self._mapping.packet_size}|"
        digest.update(settings.encode())
        digest.update(self._mapping.model_dump_json().encode())
        digest.update(self._frame.write_csv().encode())
        return digest.hexdigest()

    def total(self, start: int, stop: int) -> Decimal:
        """Σ totalPrice of the charges ``[start, stop)``, without building them."""
        return canonical(self._frame["total"].slice(start, max(0, stop - start)).sum())

    def _build(self, start: int, length: int) -> list[Charge]:
        """Charges ``[start, start + length)``: the builder makes the same bytes as the pure-Python path,
        in the same exact arithmetic (its unit-price check multiplies decimals of up to 38 digits)."""
        with localcontext(EXACT):
            return self._built(start, length)

    def _built(self, start: int, length: int) -> list[Charge]:
        month = self._month
        items = self._mapping.items
        build = self._builder.build
        columns = (
            "subscription",
            "account",
            "resource",
            IMSI,
            "thing",
            "name",
            "rank",
            "total",
            "amount",
            "unit_price",
        )
        return [
            build(
                (month, subscription, account, resource, imsi or thing),
                name,
                items[rank],
                canonical(total),
                canonical(amount),
                None if unit_price is None else canonical(unit_price),
            )
            for subscription, account, resource, imsi, thing, name, rank, total, amount, unit_price in (
                self._frame.slice(start, length).select(columns).iter_rows()
            )
        ]
