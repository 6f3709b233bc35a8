"""The mapping file (YAML): the one place a provider describes its business.

It says which CSV column names the customer and which CloudBlue subscription each customer is,
which CloudBlue resource each Soracom bill item is, and how charges are built (type, dates,
aggregation, packet size). ``examples/mapping.example.yaml`` is a complete, commented example and
``examples/README.md`` a worked explanation.

:func:`parse_mapping` reports every mistake as a :class:`~soracharge.errors.MappingError` naming the
file, the field path and the YAML line, for example::

    mapping.yaml: line 14: items[2].resource: must be a UUID such as ..., got 'tbd'
"""

from __future__ import annotations

import fnmatch
import functools
import re
import unicodedata
from collections.abc import Mapping as Mapping_
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from soracharge.errors import MappingError
from soracharge.models.accounts import OPERATOR_ID
from soracharge.models.charges import ApsId, ChargeType
from soracharge.models.devices import DEVICE_ID

#: Bigger than any real set of customers or bill items: the lookup caches never grow past it.
_CACHE_LIMIT = 50_000
_GLOB_CHARS = frozenset("*?[")
#: How a value the user must still write begins (``soracharge mapping draft`` writes them): a file
#: holding one is refused, naming each, so an unfilled draft never imports anything.
PLACEHOLDER_PREFIX = "FILL-IN:"


def normal(text: str) -> str:
    """``text`` as a person would read it the same: NFKC (full-width to half-width), case folded, without
    white space (``"Acme Logistics "``, ``"ACME  Logistics"`` and ``"AcmeLogistics"`` are one)."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


class _MappingPart(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class CustomerTarget(_MappingPart):
    """Where a customer's charges go: a CloudBlue subscription, and optionally its account."""

    subscription: ApsId
    account: ApsId | None = None


class CustomerMapping(_MappingPart):
    column: str = Field(min_length=1, description="the CSV column that names the customer (a SIM tag or groupName)")
    subscriptions: dict[str, CustomerTarget] = Field(default_factory=dict)
    default: CustomerTarget | None = None
    #: A device's id -> the customer (a key of ``subscriptions``) its rows belong to, whatever their customer
    #: column says (a row whose customer column names another customer is refused: which one is a guess).
    devices: dict[str, str] = Field(default_factory=dict)
    #: An operator SoracomAccounts lists -> the customer (a key of ``subscriptions``) every row of its bills
    #: belongs to (a row whose customer column names another customer, or a device listed for another, is
    #: refused). An operator not listed here bills by the customer column, as the stack's own does.
    operators: dict[str, str] = Field(default_factory=dict)

    @field_validator("operators")
    @classmethod
    def _operator_ids(cls, operators: dict[str, str]) -> dict[str, str]:
        return _keys_matching(
            operators, OPERATOR_ID, "a Soracom operator id (OP and ten capitals or digits, e.g. OP0012345678)"
        )

    @field_validator("devices")
    @classmethod
    def _device_ids(cls, devices: dict[str, str]) -> dict[str, str]:
        return _keys_matching(devices, DEVICE_ID, "a device id (letters, digits and . _ : @ / + -, no space or quote)")

    @model_validator(mode="after")
    def _devices_name_customers(self) -> CustomerMapping:
        unknown = [
            f"{kind} {thing!r} names customer {name!r}"
            for kind, given in (("device", self.devices), ("operator", self.operators))
            for thing, name in given.items()
            if name not in self.subscriptions
        ]
        if unknown:
            listed = ", ".join(repr(name) for name in self.subscriptions) or "none"
            named = {name for given in (self.devices, self.operators) for name in given.values()}
            near = [
                f"; customer.subscriptions has {listed_name!r}, which differs from {name!r} only in spaces, case or "
                "width: write the two alike"
                for name in sorted(named - self.subscriptions.keys())
                for listed_name in self.subscriptions
                if normal(listed_name) == normal(name)
            ]
            raise ValueError(
                f"{'; '.join(unknown)}, not one of customer.subscriptions (they are: {listed}){''.join(near)}"
            )
        return self


def _keys_matching(listed: dict[str, str], pattern: re.Pattern[str], what: str) -> dict[str, str]:
    """``listed`` when each key is ``what`` (matches ``pattern``); else a ValueError naming the first that is not."""
    for key in listed:
        if not pattern.fullmatch(key):
            raise ValueError(f"{key!r} is not {what}")
    return listed


def _check_glob(pattern: str) -> str:
    """Refuse a ``[`` that never closes: fnmatch would silently read it as a literal ``[``."""
    index = 0
    while index < len(pattern):
        if pattern[index] == "[":
            end = index + 1
            if end < len(pattern) and pattern[end] == "!":
                end += 1
            if end < len(pattern) and pattern[end] == "]":
                end += 1
            while end < len(pattern) and pattern[end] != "]":
                end += 1
            if end >= len(pattern):
                raise ValueError(
                    f"glob {pattern!r} opens a '[' character class that never closes (write '[[]' for a literal '[')"
                )
            index = end
        index += 1
    return pattern


@functools.lru_cache(maxsize=1024)
def _compiled_glob(pattern: str) -> re.Pattern[str] | None:
    """The regular expression of a glob (case-sensitive), compiled once; None when it has no wildcard."""
    return re.compile(fnmatch.translate(pattern)) if _GLOB_CHARS.intersection(pattern) else None


class ItemTarget(_MappingPart):
    """A CloudBlue resource for the bill items whose ``billItemName`` is ``match`` or matches it as a glob."""

    match: str = Field(min_length=1)
    resource: ApsId
    sku: str | None = None
    uom: str = "units"
    description: str | None = None

    @field_validator("match")
    @classmethod
    def _valid_glob(cls, value: str) -> str:
        return _check_glob(value) if _GLOB_CHARS.intersection(value) else value

    def matches(self, bill_item_name: str) -> bool:
        """The name equals ``match`` exactly, or ``match`` is a glob (``*``, ``?``, ``[..]``) that it matches."""
        return _glob_matches(self.match, bill_item_name)


class SharedCost(_MappingPart):
    """Rows no customer owns (an empty customer value, no device listed) whose bill item is ``match`` or matches
    it as a glob: sent to one subscription (``to``), or shared out over the customers (``by``).

    ``by: amount`` shares in proportion to each customer's amount in the file; ``by: [globs]`` to each
    customer's amount of the bill items those globs match (their usage of what the shared cost serves).
    The shares add up to the shared amount exactly (``logic/shares.py``).
    """

    match: str = Field(min_length=1)
    to: CustomerTarget | None = None
    by: Literal["amount"] | list[str] | None = None

    @field_validator("match")
    @classmethod
    def _valid_glob(cls, value: str) -> str:
        return _check_glob(value) if _GLOB_CHARS.intersection(value) else value

    @field_validator("by", mode="before")
    @classmethod
    def _basis_shape(cls, value: object) -> object:
        """One message for a basis of neither shape (pydantic would name each member of the union instead)."""
        if value is None or value == "amount" or (isinstance(value, list) and all(isinstance(p, str) for p in value)):
            return value
        raise ValueError(f"give `amount` or a list of bill items (names or globs), not {value!r}")

    @field_validator("by")
    @classmethod
    def _valid_basis(cls, value: Literal["amount"] | list[str] | None) -> Literal["amount"] | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("list the bill items (names or globs) whose amounts the cost is shared by")
            for pattern in value:
                if _GLOB_CHARS.intersection(pattern):
                    _check_glob(pattern)
        return value

    @model_validator(mode="after")
    def _one_way(self) -> SharedCost:
        if (self.to is None) == (self.by is None):
            raise ValueError(
                "give either `to` (one subscription) or `by` (amount, or a list of bill items), not both, not neither"
            )
        return self

    def matches(self, bill_item_name: str) -> bool:
        return _glob_matches(self.match, bill_item_name)

    def basis_matches(self, bill_item_name: str) -> bool:
        """Whether a customer's row of this bill item counts in its basis."""
        if self.by == "amount":
            return True
        return any(_glob_matches(pattern, bill_item_name) for pattern in self.by or [])

    @property
    def basis(self) -> str:
        """The basis as the charges' descriptions and the report name it: ``amount``, or the items listed."""
        return "amount" if self.by == "amount" or self.by is None else ", ".join(self.by)


def _glob_matches(pattern: str, name: str) -> bool:
    if name == pattern:
        return True
    glob = _compiled_glob(pattern)
    return glob is not None and glob.match(name) is not None


TaxRounding = Literal["down", "up", "half-up"]


class TaxSettings(_MappingPart):
    """Tax Soracom's bill ``amount`` includes: a rate on the month's total, its fraction rounded to the unit."""

    rate: Decimal = Field(gt=0, lt=1, description='e.g. "0.10" for 10 %')
    rounding: TaxRounding = "down"


class ReconciliationSettings(_MappingPart):
    """How the reconciliation makes the bill from the CSV (logic/reconciliation.py); no tax by default."""

    tax: TaxSettings | None = None


class ChecksSettings(_MappingPart):
    """What each row of the CSV must hold besides plain numbers (logic/billing_csv.py, logic/billing_frame.py)."""

    #: A row's amount must be unitPrice × quantity (when it has both), within ``amount_tolerance``.
    arithmetic: bool = True
    #: How far an amount may be from unitPrice × quantity; none: half a unit of the amount's last decimal
    #: (the amount is the product rounded to the decimals it shows).
    amount_tolerance: Decimal | None = Field(default=None, ge=0)
    #: The largest amount one row may have, either sign, in the bill's currency (a typo of 1e12 is refused).
    row_amount_limit: Decimal = Field(default=Decimal(100_000_000), gt=0)


class VarianceSettings(_MappingPart):
    """When a month is unusual against the months imported before it (logic/variance.py)."""

    #: A customer's amount that moves by more than this fraction of the month before (0.5: 50 %) ...
    change: Decimal = Field(default=Decimal("0.5"), gt=0)
    #: ... and by at least this much, in the bill's currency (small amounts move a lot and matter little).
    floor: Decimal = Field(default=Decimal(1000), ge=0)


#: ``off``: never wait; ``unusual``: wait for a person when the variance flags the month; ``always``: every month.
Approval = Literal["off", "unusual", "always"]


class ReviewSettings(_MappingPart):
    """The month compared with the months before it, and when a person must approve it before it is sent."""

    variance: VarianceSettings = Field(default_factory=VarianceSettings)
    approval: Approval = "unusual"


class Mapping(_MappingPart):
    """A provider's mapping file, validated."""

    currency: Literal["JPY", "USD", "EUR"] | None = None
    customer: CustomerMapping
    items: list[ItemTarget] = Field(min_length=1)
    #: Rows no customer owns, by bill item: to one subscription, or shared out over the customers.
    shared: list[SharedCost] = Field(default_factory=list)
    charge_type: ChargeType = "COS"
    date_format: Literal["date-time", "date"] = "date-time"
    aggregation: Literal["imsi-month", "none"] = "imsi-month"
    packet_size: int = Field(default=500, ge=1, le=5000)
    reconciliation: ReconciliationSettings = Field(default_factory=ReconciliationSettings)
    checks: ChecksSettings = Field(default_factory=ChecksSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    @model_validator(mode="after")
    def _shared_rows_have_no_customer(self) -> Mapping:
        if self.shared and "" in self.customer.subscriptions:
            raise ValueError(
                'customer.subscriptions lists the value "" (rows with no customer), and `shared` rules say where such '
                'rows go: which one wins is a guess. Remove the "" entry (a `default` takes the rest)'
            )
        return self

    # Lookup caches, called once per CSV row: read through ``__pydantic_private__`` (a slot), as the
    # attribute route goes through ``BaseModel.__getattr__``, some twenty times slower.
    _customers: dict[str, CustomerTarget | None] = PrivateAttr(default_factory=dict)
    _items: dict[str, ItemTarget | None] = PrivateAttr(default_factory=dict)
    #: The bill being read is of an operator ``customer.operators`` gives to a customer: (operator, customer).
    _whole_bill: tuple[str, str] | None = PrivateAttr(default=None)

    def for_operator(self, operator: str | None) -> Mapping:
        """The mapping as it reads a bill of ``operator`` (None: the stack's own): itself, or, for an operator
        ``customer.operators`` gives to a customer, a copy in which every row is that customer's."""
        if operator is None or (customer := self.customer.operators.get(operator)) is None:
            return self
        copied = self.model_copy()
        copied._whole_bill = (operator, customer)
        return copied

    @property
    def shares_out(self) -> bool:
        """Whether a rule shares costs out ``by`` a basis in the bills it reads (never in a whole operator's bill,
        where no row belongs to nobody)."""
        return self.whole_bill is None and any(rule.by is not None for rule in self.shared)

    @property
    def whole_bill(self) -> tuple[str, str] | None:
        """``(operator, customer)`` when every row of the bill read is that customer's (:meth:`for_operator`)."""
        private = self.__pydantic_private__
        assert private is not None, "pydantic sets the private attributes at validation"
        whole: tuple[str, str] | None = private["_whole_bill"]
        return whole

    def _customer_cache(self) -> dict[str, CustomerTarget | None]:
        private = self.__pydantic_private__
        assert private is not None, "pydantic sets the private attributes at validation"
        cache: dict[str, CustomerTarget | None] = private["_customers"]
        return cache

    def _item_cache(self) -> dict[str, ItemTarget | None]:
        private = self.__pydantic_private__
        assert private is not None, "pydantic sets the private attributes at validation"
        cache: dict[str, ItemTarget | None] = private["_items"]
        return cache

    def model_copy(self, *, update: Mapping_[str, Any] | None = None, deep: bool = False) -> Mapping:
        """A copy with its own, empty lookup caches (a copy with other items must not answer from ours)."""
        copied = super().model_copy(update=update, deep=deep)
        copied._customers = {}
        copied._items = {}
        return copied

    def customer_for(self, value: str) -> CustomerTarget | None:
        """The subscription of a customer column value: listed, else the default (also for ""), else None."""
        cache = self._customer_cache()
        try:
            return cache[value]
        except KeyError:
            pass
        target = self.customer.subscriptions.get(value, self.customer.default)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = target
        return target

    def shared_for(self, bill_item_name: str) -> SharedCost | None:
        """The first ``shared`` rule (in file order) whose ``match`` is the name or a glob matching it, else None."""
        return next((rule for rule in self.shared if rule.matches(bill_item_name)), None)

    def target_of(self, customer: str, bill_item_name: str) -> CustomerTarget | None:
        """Where a row's charge goes: a row no customer owns that a ``shared`` rule sends ``to`` a subscription goes
        there; any other row to its customer's subscription (:meth:`customer_for`). (Rows a rule shares out
        ``by`` a basis become shares: ``logic/shares.py``.)"""
        if not customer and self.shared:
            rule = self.shared_for(bill_item_name)
            if rule is not None and rule.to is not None:
                return rule.to
        return self.customer_for(customer)

    def item_for(self, bill_item_name: str) -> ItemTarget | None:
        """The first item (in file order) whose ``match`` is the name or a glob matching it, else None."""
        cache = self._item_cache()
        try:
            return cache[bill_item_name]
        except KeyError:
            pass
        target = next((item for item in self.items if item.matches(bill_item_name)), None)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[bill_item_name] = target
        return target


class _MappingLoader(yaml.SafeLoader):
    """YAML's safe loader with constructors of its own, copied when this module loads: a library that registers
    one on ``yaml.SafeLoader`` for the whole process (samtranslator adds every ``!`` tag, for CloudFormation's
    ``!Ref``..., when the local engine translates the template) cannot make a mapping's unknown tag into data.
    An unknown tag stays a mistake, named with its line, wherever the mapping is read."""

    yaml_constructors: ClassVar[dict[Any, Any]] = dict(yaml.SafeLoader.yaml_constructors)
    yaml_multi_constructors: ClassVar[dict[Any, Any]] = {}


def parse_mapping(text: str | dict[str, Any], source: str) -> Mapping:
    """Validate a mapping file's YAML text (or an already parsed dict); ``source`` names it in errors.

    Raises :class:`MappingError` naming ``source``, the YAML line and the field path of every mistake.
    """
    if isinstance(text, dict):
        _refuse_placeholders(None, text, source)
        return _validate(text, source, None)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise MappingError(f"{source}: {_yaml_syntax_error(exc)}") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise MappingError(f"{source}: the YAML is nested too deeply") from None
    if root is None:
        raise MappingError(f"{source}: the mapping file is empty")
    try:
        _refuse_duplicate_keys(root, source)
        _refuse_placeholders(root, None, source)
        data = yaml.load(text, Loader=_MappingLoader)  # noqa: S506 (a SafeLoader of its own: see _MappingLoader)
    except RecursionError:
        raise MappingError(f"{source}: the YAML is nested too deeply or refers to itself (an alias)") from None
    except yaml.MarkedYAMLError as exc:
        raise MappingError(f"{source}: {_yaml_syntax_error(exc)}") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise MappingError(f"{source}: the YAML cannot be read as data: {exc}") from None
    if not isinstance(data, dict):
        raise MappingError(
            f"{source}: line {root.start_mark.line + 1}: the mapping file must be a YAML mapping "
            f"(customer:, items:, ...), got a {type(data).__name__}"
        )
    return _validate(data, source, root)


def _validate(data: dict[str, Any], source: str, root: yaml.Node | None) -> Mapping:
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            location = error["loc"]
            where = _field_path(location)
            line = _line_of(root, location) if root is not None else None
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "string_type" and not isinstance(error["input"], (dict, list)):
                written = (_written(root, location) if root is not None else None) or str(error["input"])
                message += f' (got {error["input"]!r}: quote it, as in "{written}")'
            elif error["type"] == "extra_forbidden":
                message = "unknown field (a typo?)"
            problems.append(f"line {line}: {where}: {message}" if line else f"{where}: {message}")
        raise MappingError(f"{source}: " + "; ".join(problems)) from None


#: YAML's error for a plain value that starts with a sign it reserves (not a tab, which it says the same of).
_RESERVED_START = re.compile(r"found character '[%@`]' that cannot start any token")


def _yaml_syntax_error(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = exc.problem or exc.context or "syntax error"
    hint = ""
    if any(word in (exc.context or "") for word in ("alias", "anchor", "tag")) or _RESERVED_START.search(what):
        hint = ' (quote values that start with *, &, !, %, @ or `, such as globs: match: "*")'
    return f"{where}YAML syntax error: {what}{hint}"


def _field_path(location: Sequence[int | str]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (the key)"
        elif path:
            path += f".{part}" if part.isidentifier() else f"[{part!r}]"
        else:
            path = part
    return path or "(top level)"


def _along(root: yaml.Node, location: Sequence[int | str]) -> tuple[yaml.Node, yaml.Node | None, bool]:
    """The deepest node of ``location`` the YAML has, the key node it is the value of (None for a list's item or
    the root), and whether the YAML has the whole location."""
    node, key = root, None
    for part in location:
        if part == "[key]" and key is not None:  # pydantic's mark of a mistake in the key itself
            node = key
        elif isinstance(node, yaml.MappingNode):
            entry = next(((key, value) for key, value in node.value if _is_key(key, part)), None)
            if entry is None:
                return node, key, False
            key, node = entry
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            key, node = None, node.value[part]
        else:
            return node, key, False
    return node, key, True


def _is_key(node: yaml.Node, part: int | str) -> bool:
    """Whether a YAML key is the location's ``part``: as written, or, for a plain key YAML reads as a number or a
    boolean (``0123`` is octal 83 to it), as YAML reads it."""
    if not isinstance(node, yaml.ScalarNode):
        return False
    if node.value == str(part):
        return True
    if isinstance(part, str) or node.style is not None:
        return False
    try:
        read = yaml.safe_load(node.value)
    except yaml.YAMLError:
        return False
    return type(read) is type(part) and read == part


def _line_of(root: yaml.Node, location: Sequence[int | str]) -> int:
    """The 1-based YAML line of ``location``: its key's line, else the line of its deepest present parent."""
    node, key, whole = _along(root, location)
    return int((key if whole and key is not None else node).start_mark.line) + 1


def _written(root: yaml.Node, location: Sequence[int | str]) -> str | None:
    """The text the file has at ``location``, as a person wrote it (``null``, ``!``, ``0123``), when it is a
    scalar; None otherwise."""
    node, _, whole = _along(root, location)
    if not (whole and isinstance(node, yaml.ScalarNode)):
        return None
    text = node.start_mark.buffer or ""  # the whole YAML text: compose is given it as a str
    return text[node.start_mark.index : node.end_mark.index].strip() or None


def _refuse_duplicate_keys(node: yaml.Node, source: str) -> None:
    """YAML keeps the last of two equal keys silently; in a mapping file that is always a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise MappingError(f"{source}: line {key.start_mark.line + 1}: {key.value!r} is given twice")
                seen.add(key.value)
            _refuse_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, source)


def _refuse_placeholders(root: yaml.Node | None, data: object, source: str) -> None:
    """Refuse a draft whose ``FILL-IN:`` values are not all replaced, naming each one's line and field."""
    found: list[tuple[int | None, list[int | str], str]] = []

    def visit_node(node: yaml.Node, location: list[int | str]) -> None:
        if isinstance(node, yaml.ScalarNode):
            if isinstance(node.value, str) and node.value.strip().startswith(PLACEHOLDER_PREFIX):
                found.append((int(node.start_mark.line) + 1, location, node.value.strip()))
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                visit_node(value, [*location, str(key.value) if isinstance(key, yaml.ScalarNode) else "?"])
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                visit_node(item, [*location, index])

    def visit_data(value: object, location: list[int | str]) -> None:
        if isinstance(value, str):
            if value.strip().startswith(PLACEHOLDER_PREFIX):
                found.append((None, location, value.strip()))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit_data(item, [*location, str(key)])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit_data(item, [*location, index])

    if root is not None:
        visit_node(root, [])
    else:
        visit_data(data, [])
    if found:
        problems = [
            (f"line {line}: " if line else "") + f"{_field_path(location)}: placeholder not filled in: {text}"
            for line, location, text in found
        ]
        raise MappingError(f"{source}: " + "; ".join(problems))
