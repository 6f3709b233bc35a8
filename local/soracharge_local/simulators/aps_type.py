"""The APS type ``ChargesImportManager`` (embedded) and a strict check of ``importCharges`` bodies.

``APS_TYPE`` is docs/apis/charges-import-manager.aps-type.json as a Python literal (a test keeps
the two equal), so the simulator needs nothing outside its package. :func:`check_charges_packet` checks
a parsed ``ChargesPacket`` the way a strict server deserialises it: every field of the type with its
JSON type, required fields, the ``type`` enum, no unknown fields; plus the rules the type's prose
implies (see :func:`check_charges_packet`). :func:`load_json` parses a body keeping every JSON number
exact (``Decimal``), refusing ``NaN``/``Infinity`` and duplicate keys.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Literal

__all__ = [
    "APS_TYPE",
    "CHARGE_TYPES",
    "OPERATIONS",
    "SESSION_STATUSES",
    "TYPE_ID",
    "JsonBodyError",
    "OperationName",
    "Problem",
    "SessionStatus",
    "check_charges_packet",
    "load_json",
    "parse_charge_date",
    "stored_charge",
]

TYPE_ID: Final = "http://com.odin.rating/charges-import-manager/1.0"

APS_TYPE: Final[Mapping[str, Any]] = {
    "name": "ChargesImportManager",
    "id": "http://com.odin.rating/charges-import-manager/1.0",
    "apsVersion": "2.0",
    "implements": ["http://aps-standard.org/types/core/resource/1.0"],
    "operations": {
        "openSession": {
            "path": "importSessions",
            "verb": "POST",
            "response": {"type": "ImportSessionInfo"},
            "errorResponse": {"type": "object"},
        },
        "getSessionByStatus": {
            "path": "importSessions",
            "verb": "GET",
            "response": {"type": "array", "items": {"type": "ImportSessionInfo"}},
            "errorResponse": {"type": "object"},
            "parameters": {
                "status": {"kind": "query", "type": "string"},
                "limit": {"kind": "query", "type": "integer"},
            },
        },
        "getSession": {
            "path": "importSessions/{sessionId}",
            "verb": "GET",
            "response": {"type": "ImportSessionInfo"},
            "errorResponse": {"type": "object"},
            "parameters": {"sessionId": {"kind": "path", "type": "integer"}},
        },
        "closeSession": {
            "path": "importSessions/{sessionId}",
            "verb": "PUT",
            "errorResponse": {"type": "object"},
            "parameters": {"sessionId": {"kind": "path", "type": "integer"}},
        },
        "importCharges": {
            "path": "charges",
            "verb": "POST",
            "errorResponse": {"type": "object"},
            "parameters": {"charges": {"kind": "body", "type": "ChargesPacket"}},
        },
    },
    "structures": {
        "ImportSessionInfo": {
            "type": "object",
            "properties": {
                "importSessionId": {"type": "integer"},
                "status": {
                    "type": "string",
                    "enum": ["OPEN", "NEW", "PROCESSING", "FAILED_PROCESSED", "PROCESSED", "REPORTED"],
                },
                "errorDesc": {"type": "string"},
                "lastUpdateTime": {"type": "string", "format": "date"},
            },
        },
        "Charge": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "required": True, "enum": ["COS", "CHARGE", "MSRP"]},
                "subscriptionId": {"type": "string", "required": True},
                "accountId": {"type": "string"},
                "resourceId": {"type": "string", "required": True},
                "unitPrice": {"type": "number"},
                "totalPrice": {"type": "number", "required": True},
                "amount": {"type": "number", "required": True},
                "currencyCode": {"type": "string", "required": True},
                "uom": {"type": "string"},
                "chargeStartDate": {"type": "string", "required": True, "format": "date-time"},
                "chargeEndDate": {"type": "string", "required": True, "format": "date-time"},
                "duration": {"type": "number"},
                "durationUom": {"type": "string"},
                "description": {"type": "string"},
                "sku": {"type": "string"},
                "mpn": {"type": "string"},
                "poNumber": {"type": "string"},
                "extChargeId": {"type": "string"},
                "extHash": {"type": "string"},
                "attributes": {"type": "dictionary"},
            },
        },
        "ChargesPacket": {
            "type": "object",
            "properties": {
                "importSessionId": {"type": "integer", "required": True},
                "charges": {"type": "array", "required": True, "items": {"type": "Charge"}},
            },
        },
    },
}

OperationName = Literal["openSession", "getSessionByStatus", "getSession", "closeSession", "importCharges"]
SessionStatus = Literal["OPEN", "NEW", "PROCESSING", "FAILED_PROCESSED", "PROCESSED", "REPORTED"]

#: The type's operations, in the order it declares them.
OPERATIONS: Final[tuple[str, ...]] = tuple(APS_TYPE["operations"])
#: ``ImportSessionInfo.status`` values.
SESSION_STATUSES: Final[tuple[str, ...]] = tuple(
    APS_TYPE["structures"]["ImportSessionInfo"]["properties"]["status"]["enum"]
)
#: ``Charge.type`` values.
CHARGE_TYPES: Final[tuple[str, ...]] = tuple(APS_TYPE["structures"]["Charge"]["properties"]["type"]["enum"])

#: Charge fields that hold an APS UUID (checked when ``require_uuids``).
UUID_FIELDS: Final = ("subscriptionId", "accountId", "resourceId")
#: How many problems one error message lists at most.
MAX_PROBLEMS: Final = 20

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


class JsonBodyError(ValueError):
    """The request body is not JSON this server accepts (the message says why)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a body: where (``charges[3].totalPrice``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def load_json(data: bytes) -> Any:
    """Parse a UTF-8 JSON body exactly: fractions become ``Decimal``, integers stay ``int``.

    Raises :class:`JsonBodyError` for bytes that are not UTF-8 JSON, for ``NaN``/``Infinity``
    (not JSON) and for an object with the same key twice.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonBodyError(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(
            text, parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_object_without_duplicates
        )
    except JsonBodyError:
        raise
    except ValueError as exc:
        raise JsonBodyError(f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise JsonBodyError(f"{name} is not a JSON number")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonBodyError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def parse_charge_date(text: str) -> datetime | None:
    """``yyyy-MM-dd`` (midnight UTC) or an RFC 3339 date-time with offset, as an aware datetime; else None."""
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return None
    fraction = (match.group(2) or "")[:7]  # datetime takes microseconds: keep at most 6 digits
    offset = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        return datetime.fromisoformat(match.group(1) + fraction + offset)
    except ValueError:
        return None


def check_charges_packet(packet: Any, *, require_uuids: bool = True) -> list[Problem]:
    """Every problem with a parsed ``importCharges`` body (empty when it is valid).

    From the type: the body is a ``ChargesPacket`` object; each property has its declared JSON type
    (``number``: a JSON number, never a string or a boolean; ``integer``: a JSON integer;
    ``dictionary``: an object); required properties are present and not null (optional ones may be
    null); ``type`` is one of ``COS``, ``CHARGE``, ``MSRP``; unknown properties are refused. From
    its prose: ``charges`` is not empty; required strings are not empty; ``currencyCode`` is three
    upper-case letters (ISO 4217 form); the two dates are ``yyyy-MM-dd`` or RFC 3339 date-times
    with an offset (``2026-10-01T00:00:00Z``), and the end is not before the start;
    ``subscriptionId``, ``accountId`` and ``resourceId`` are APS UUIDs (unless ``require_uuids``
    is false).
    """
    problems: list[Problem] = []
    _check_structure("", packet, "ChargesPacket", problems)
    if isinstance(packet, dict) and isinstance(packet.get("charges"), list):
        if not packet["charges"]:
            problems.append(Problem("charges", "must not be empty (a packet carries at least one charge)"))
        for index, charge in enumerate(packet["charges"]):
            if isinstance(charge, dict):
                _check_charge_rules(f"charges[{index}]", charge, problems, require_uuids=require_uuids)
    return problems


def stored_charge(charge: Mapping[str, Any]) -> dict[str, Any]:
    """A valid charge as the simulator stores it: a copy whose ``number`` fields are ``Decimal``."""
    stored = copy.deepcopy(dict(charge))
    for name in _NUMBER_FIELDS:
        value = stored.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            stored[name] = Decimal(value)
    return stored


# --------------------------------------------------------------------------------------------


_STRUCTURES: Final[Mapping[str, Any]] = APS_TYPE["structures"]
_NUMBER_FIELDS: Final = frozenset(
    name for name, prop in _STRUCTURES["Charge"]["properties"].items() if prop["type"] == "number"
)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_structure(path: str, value: Any, structure: str, problems: list[Problem]) -> None:
    if not isinstance(value, dict):
        problems.append(Problem(path, f"expected a {structure} object, got {_json_kind(value)}"))
        return
    properties: Mapping[str, Any] = _STRUCTURES[structure]["properties"]
    problems.extend(Problem(_join(path, name), "unknown field") for name in value if name not in properties)
    for name, prop in properties.items():
        where = _join(path, name)
        if value.get(name) is None:
            if prop.get("required"):
                problems.append(Problem(where, "is required" + (" (got null)" if name in value else "")))
            continue
        _check_value(where, value[name], prop, problems)


def _check_value(path: str, value: Any, prop: Mapping[str, Any], problems: list[Problem]) -> None:
    kind = prop["type"]
    if kind == "string":
        if not isinstance(value, str):
            problems.append(Problem(path, f"expected a string, got {_json_kind(value)}"))
        elif "enum" in prop and value not in prop["enum"]:
            problems.append(Problem(path, f"must be one of {', '.join(prop['enum'])}, got {value!r}"))
        elif prop.get("format") == "date-time" and parse_charge_date(value) is None:
            problems.append(
                Problem(path, f"expected an ISO 8601 date-time (2026-10-01T00:00:00Z) or yyyy-MM-dd, got {value!r}")
            )
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            problems.append(Problem(path, f"expected a number, got {_json_kind(value)}"))
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(path, f"expected an integer, got {_json_kind(value)}"))
    elif kind in ("dictionary", "object"):
        if not isinstance(value, dict):
            problems.append(Problem(path, f"expected an object, got {_json_kind(value)}"))
    elif kind == "array":
        if not isinstance(value, list):
            problems.append(Problem(path, f"expected an array, got {_json_kind(value)}"))
            return
        for index, item in enumerate(value):
            _check_value(f"{path}[{index}]", item, prop["items"], problems)
    else:  # a structure of the type
        _check_structure(path, value, kind, problems)


def _check_charge_rules(path: str, charge: Mapping[str, Any], problems: list[Problem], *, require_uuids: bool) -> None:
    for name, prop in _STRUCTURES["Charge"]["properties"].items():
        if prop.get("required") and prop["type"] == "string" and charge.get(name) == "":
            problems.append(Problem(_join(path, name), "must not be empty"))
    currency = charge.get("currencyCode")
    if isinstance(currency, str) and currency and not _CURRENCY.fullmatch(currency):
        problems.append(Problem(_join(path, "currencyCode"), f"expected three upper-case letters, got {currency!r}"))
    if require_uuids:
        for name in UUID_FIELDS:
            value = charge.get(name)
            if isinstance(value, str) and value and not _UUID.fullmatch(value):
                problems.append(Problem(_join(path, name), f"expected an APS UUID, got {value!r}"))
    start, end = charge.get("chargeStartDate"), charge.get("chargeEndDate")
    if isinstance(start, str) and isinstance(end, str):
        first, last = parse_charge_date(start), parse_charge_date(end)
        if first is not None and last is not None and last < first:
            problems.append(Problem(_join(path, "chargeEndDate"), f"{end!r} is before chargeStartDate {start!r}"))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "an array"
    return "an object"
