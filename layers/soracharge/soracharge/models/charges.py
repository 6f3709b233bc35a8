"""The APS contract of CloudBlue's ChargesImportManager (``http://com.odin.rating/charges-import-manager/1.0``).

Field names are camelCase on the wire and snake_case in Python. Money and quantities are
:class:`~decimal.Decimal` from end to end: :meth:`ChargesPacket.to_json_bytes` writes them as exact JSON
numbers in plain notation (``100``, never ``1E+2``; ``0.3``, never ``0.30000000000000004``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from enum import StrEnum
from typing import Annotated, Any, Literal, overload

import simplejson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SkipValidation
from pydantic.alias_generators import to_camel

from soracharge.errors import ImportRejectedError
from soracharge.models.months import YearMonth

#: ``type`` of a charge: cost of sale (what the vendor bills the provider), a charge, or the list price.
ChargeType = Literal["COS", "CHARGE", "MSRP"]

#: Where an import session stands (OPEN → NEW → PROCESSING → PROCESSED | FAILED_PROCESSED → REPORTED).
SessionStatus = Literal["OPEN", "NEW", "PROCESSING", "FAILED_PROCESSED", "PROCESSED", "REPORTED"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


#: The context of every sum and product of money: a row's amount has at most 20 digits before the point and 18 after
#: (the readers refuse more), so 80 digits hold any sum of a file's rows and any unitPrice × quantity, past the
#: default context's 28; an inexact or invalid result raises, never rounds. Used as ``localcontext(EXACT)``.
EXACT = Context(prec=80, traps=[Inexact, InvalidOperation])


def _check_aps_id(value: str) -> str:
    lowered = value.strip().lower()
    if not _UUID.fullmatch(lowered):
        raise ValueError(f"must be a UUID such as 3f2a6c1e-8d4b-4e7a-9c1f-2b5d8e0a7c34, got {value!r}")
    return lowered


#: The APS UUID of a resource (subscription, account, BSS resource), lower-cased: how the mapping file reads it.
ApsId = Annotated[str, AfterValidator(_check_aps_id)]

#: An APS UUID on the wire (checked in pydantic-core, without a Python call: a Charge is built per aggregate).
ApsUuid = Annotated[
    str, Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
]

#: A charge period bound: ``2026-10-01`` or ISO 8601 ``2026-10-01T00:00:00Z``.
ChargeDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?$")]


def decimal_text(value: Decimal) -> str:
    """Exact plain text of ``value`` as written on the wire: ``1E+2`` → ``100``, ``1E-7`` → ``0.0000001``."""
    text = str(value)  # several times faster than format(), and the same text unless it has an exponent
    return format(value, "f") if "E" in text else text


def canonical_decimal_text(value: Decimal) -> str:
    """One text per numeric value (trailing zeros dropped, no ``-0``): ``10.20`` and ``1.02E+1`` → ``10.2``."""
    text = decimal_text(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class _ApsModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Charge(_ApsModel):
    """One charge, every field of the APS structure ``Charge``."""

    model_config = ConfigDict(extra="forbid")

    type: ChargeType
    subscription_id: ApsUuid
    account_id: ApsUuid | None = None
    resource_id: ApsUuid
    unit_price: Decimal | None = None
    total_price: Decimal
    amount: Decimal
    currency_code: str = Field(pattern=r"^[A-Z]{3}$")
    uom: str | None = None
    charge_start_date: ChargeDate
    charge_end_date: ChargeDate
    duration: Decimal | None = None
    duration_uom: str | None = None
    description: str | None = None
    sku: str | None = None
    mpn: str | None = None
    po_number: str | None = None
    ext_charge_id: str | None = None
    ext_hash: str | None = None
    attributes: dict[str, str] | None = None

    @classmethod
    def from_trusted(cls, fields: dict[str, Any]) -> Charge:
        """A charge from values this package computed out of validated input, without validating them again.

        What ``model_construct`` does, without its Python loop over the fields: a Charge is built per
        aggregate, tens of thousands per file. ``fields`` holds every field, by its Python name (and is
        kept: do not change it afterwards). The tests check that every charge built this way
        validates to an equal one.
        """
        charge = cls.__new__(cls)
        object.__setattr__(charge, "__dict__", fields)
        # One set for all: pydantic copies it before changing it (model_copy), and a charge is frozen.
        object.__setattr__(charge, "__pydantic_fields_set__", _EVERY_CHARGE_FIELD)
        object.__setattr__(charge, "__pydantic_extra__", None)
        object.__setattr__(charge, "__pydantic_private__", None)
        return charge

    def to_wire(self) -> dict[str, Any]:
        """The charge as the JSON object CloudBlue receives: camelCase keys, no ``None``, exact numbers."""
        wire = self.model_dump(by_alias=True, exclude_none=True)
        for key, value in wire.items():
            if isinstance(value, Decimal):
                wire[key] = simplejson.RawJSON(decimal_text(value))
        return wire


_EVERY_CHARGE_FIELD: set[str] = set(Charge.model_fields)


class ChargesPacket(_ApsModel):
    """The body of one ``importCharges`` call."""

    import_session_id: int
    charges: list[Charge]

    def to_json_bytes(self) -> bytes:
        """The exact HTTP body: compact UTF-8 JSON, keys sorted, so a retried packet is byte-identical."""
        body = {"importSessionId": self.import_session_id, "charges": [charge.to_wire() for charge in self.charges]}
        text = simplejson.dumps(body, use_decimal=True, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")


class ImportSessionInfo(_ApsModel):
    """What openSession and getSession answer (fields CloudBlue adds later are ignored)."""

    model_config = ConfigDict(extra="ignore")

    import_session_id: int
    status: SessionStatus
    error_desc: str | None = None
    last_update_time: str | None = None


class ProblemKind(StrEnum):
    """What kind of mistake a problem is: problems are summed up by kind, the telling ones first."""

    #: The file is not UTF-8 (Shift_JIS, UTF-16...): nothing in it can be read as it is.
    ENCODING = "encoding"
    #: The header lacks a column, repeats one, or the file is empty.
    HEADER = "header"
    #: A mapping value that matches nothing, while a CSV value differs from it only by spaces, case or width.
    NEAR_MISS = "near-miss"
    #: A row dated outside the billed month.
    MONTH = "month"
    #: A bill item no mapping item matches.
    UNMAPPED_ITEM = "unmapped-item"
    #: A customer value with no subscription (and no default).
    UNMAPPED_CUSTOMER = "unmapped-customer"
    #: An amount that is not unitPrice × quantity, or beyond the bound a row may reach.
    ARITHMETIC = "arithmetic"
    #: A number that is not a plain decimal, a date that is not a day, an imsi that is not digits.
    VALUE = "value"
    #: A row that is not valid CSV (fields counted wrong, a quote that never ends).
    ROW = "row"
    #: The file's coverage, currency or metadata cannot be told or disagree.
    SETTING = "setting"


class ImportProblem(BaseModel):
    """One bad thing in a billing CSV: where it is (file line, 1 being the header; column), what, and why."""

    model_config = ConfigDict(frozen=True)

    line: int | None
    column: str | None
    value: str | None
    message: str
    kind: ProblemKind = ProblemKind.VALUE


class ShareLine(BaseModel):
    """One customer's share of a shared cost: its basis (its amount of what the cost is shared by) and its share."""

    model_config = ConfigDict(frozen=True)

    customer: str
    subscription: str
    basis: Decimal
    amount: Decimal


class SharedSplit(BaseModel):
    """A cost no customer owns (the rows of one resource), shared out: the shares add up to ``total`` exactly."""

    model_config = ConfigDict(frozen=True)

    items: list[str]
    resource: str
    total: Decimal
    #: ``amount``, or the bill items (globs) whose amounts each customer's basis sums.
    basis: str
    basis_total: Decimal
    #: Decimals of the shares (the currency's, or the shared total's when it shows more).
    decimals: int
    lines: list[ShareLine]


class ImportPlan(BaseModel):
    """A billing CSV read, validated and turned into charges: what an import sends, or why it sends nothing.

    ``csv_sum`` is Σ amount over every row whose amount is a number; ``charges_sum`` is Σ totalPrice of
    ``charges``, equal to ``csv_sum`` exactly when the file has no problem. ``per_customer`` (by customer
    value: the customer column's, or the one the mapping gives a device to; ``""`` for none) is what each
    is charged, its shares of the shared costs included (``""`` keeps what was not shared out);
    ``per_item`` (by billItemName) covers the same rows as ``csv_sum``; ``per_subscription`` covers the
    rows that mapped to a subscription without a problem, and the shares (a refused file's leaves out the costs a
    rule shares by a basis: only a file without problems is split).
    A plan with any problem has no charges.
    """

    model_config = ConfigDict(frozen=True)

    month: YearMonth
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    source: str
    rows: int = Field(ge=0)
    packet_size: int = Field(ge=1, le=5000)
    #: A list, or the fast path's charges built a packet at a time (``logic.billing_frame.FrameCharges``).
    charges: Annotated[Sequence[Charge], SkipValidation]
    problems: list[ImportProblem]
    problem_count: int = Field(ge=0)
    unmapped_rows: int = Field(default=0, ge=0)
    csv_sum: Decimal
    charges_sum: Decimal
    per_customer: dict[str, Decimal]
    per_subscription: dict[str, Decimal]
    per_item: dict[str, Decimal]
    #: How many SIMs (distinct imsi) each customer value has.
    sims_per_customer: dict[str, int] = Field(default_factory=dict)
    #: How many devices (distinct ``<device column>:<id>``) each customer value has, where any.
    devices_per_customer: dict[str, int] = Field(default_factory=dict)
    #: Every problem counted by kind (``problems`` keeps the first ones only).
    kinds: dict[ProblemKind, int] = Field(default_factory=dict)
    #: Rows dated in another month than the billed one, by that month.
    other_months: dict[str, int] = Field(default_factory=dict)
    #: How each shared cost was shared out (the mapping's ``shared`` rules with ``by``).
    shares: list[SharedSplit] = Field(default_factory=list)
    #: The rows no customer owns (empty customer value, no device the mapping gives to one), by bill item.
    unowned_per_item: dict[str, Decimal] = Field(default_factory=dict)
    #: The customer column's own values (a device's owner from the mapping aside) with their rows' amounts:
    #: what the mapping's customer values are checked against (``logic/guards.py``).
    per_value: dict[str, Decimal] = Field(default_factory=dict)
    #: The device ids the file names (any device column).
    device_ids: list[str] = Field(default_factory=list)
    #: The ids ``customer.devices`` lists that the file names as an IMSI, not as a device.
    listed_as_imsis: list[str] = Field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """True when the file has no problem: its charges can be imported."""
        return self.problem_count == 0

    def packets(self, import_session_id: int) -> Packets:
        """The charges in order, ``packet_size`` per packet: the bodies of the importCharges calls (built on access)."""
        return Packets(self.charges, self.packet_size, import_session_id)

    def raise_if_rejected(self) -> None:
        """Raise :class:`ImportRejectedError` summing up the problems, if there are any."""
        if self.accepted:
            return
        first = self.problems[0] if self.problems else None
        where = f" (first: line {first.line}: {first.message})" if first is not None and first.line else ""
        if first is not None and not first.line:
            where = f" (first: {first.message})"
        raise ImportRejectedError(
            f"{self.source or 'the billing CSV'} for {self.month} has {self.problem_count} "
            f"problem{'s' if self.problem_count != 1 else ''}{where}: nothing was imported"
        )


class Packets(Sequence[ChargesPacket]):
    """A plan's packets, each built when it is asked for: a month of 4,000,000 charges never sits in memory."""

    def __init__(self, charges: Sequence[Charge], size: int, import_session_id: int) -> None:
        self._charges = charges
        self._size = size
        self._session = import_session_id

    def __len__(self) -> int:
        return -(-len(self._charges) // self._size)

    @overload
    def __getitem__(self, index: int) -> ChargesPacket: ...
    @overload
    def __getitem__(self, index: slice) -> list[ChargesPacket]: ...
    def __getitem__(self, index: int | slice) -> ChargesPacket | list[ChargesPacket]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("packet index out of range")
        start = index * self._size
        return ChargesPacket(import_session_id=self._session, charges=list(self._charges[start : start + self._size]))

    def total(self, index: int) -> Decimal:
        """Σ totalPrice of packet ``index``, without building its charges where the plan can say so."""
        start, stop = index * self._size, min(len(self._charges), (index + 1) * self._size)
        summed = getattr(self._charges, "total", None)
        if summed is not None:
            return summed(start, stop)  # type: ignore[no-any-return]
        with localcontext(EXACT):
            return sum((charge.total_price for charge in self._charges[start:stop]), Decimal(0))
