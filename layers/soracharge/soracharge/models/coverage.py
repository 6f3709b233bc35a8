"""Soracom's coverages: Japan (``jp``, billed in JPY) and Global (``g``, billed in USD or EUR).

Each coverage has its own API host and its own bill every month, so a stack exporting both gets two
bills a month. Everything that names a month names its coverage too where the two could meet:

- the state machine's input (``{"month": "202611", "coverage": "g"}``) and every payload after it;
- the export's S3 key: ``exports/<yyyyMM>/<id>.csv`` on a stack that exports one coverage (the
  layout every stack had before coverages), ``exports/<yyyyMM>/<coverage>/<id>.csv`` on one that
  exports both; either is read as the coverage its metadata (``coverage``, else ``currency``) says;
- the ledger's record of the month's bill ``bill#<yyyyMM>#<coverage>``, taken when its session closes;
- a Global charge's ``extChargeId`` ends with ``-g`` (a Japan charge's is as it always was), so the
  two bills' charges never share an id, even with one mapping for both;
- the report, the alerts' subjects and the ``AmountImported`` metric's ``Coverage`` dimension.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal, cast, get_args

from soracharge.errors import InvalidInputError

Coverage = Literal["jp", "g"]
COVERAGES: Final[tuple[Coverage, ...]] = get_args(Coverage)
#: What each coverage bills in; the first is the one assumed when nothing else says.
CURRENCIES: Final[dict[Coverage, tuple[str, ...]]] = {"jp": ("JPY",), "g": ("USD", "EUR")}
NAMES: Final[dict[Coverage, str]] = {"jp": "Japan coverage", "g": "Global coverage"}
#: The ``extChargeId`` suffix of each coverage's charges ("" keeps Japan's ids as they always were).
ID_SUFFIXES: Final[dict[Coverage, str]] = {"jp": "", "g": "g"}


def parse_coverage(value: str) -> Coverage:
    """``jp`` or ``g`` (any case, spaces ignored); :class:`InvalidInputError` naming the value otherwise."""
    text = value.strip().lower()
    if text not in COVERAGES:
        raise InvalidInputError(f"coverage must be 'jp' (Japan, JPY) or 'g' (Global, USD or EUR), got {value!r}")
    return text


def parse_coverages(value: str | Iterable[str]) -> tuple[Coverage, ...]:
    """``"jp"``, ``"g"`` or ``"jp,g"`` (a list is taken as given): each once, in the order jp, g."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    chosen = {parse_coverage(part) for part in parts if part.strip()}
    if not chosen:
        raise InvalidInputError(f"give at least one coverage (jp, g or jp,g), got {value!r}")
    return tuple(c for c in COVERAGES if c in chosen)


def default_currency(coverage: Coverage) -> str:
    return CURRENCIES[coverage][0]


def coverage_of_currency(currency: str | None) -> Coverage | None:
    """The coverage that bills in ``currency`` (JPY: jp; USD, EUR: g), or None for another or none."""
    for coverage, currencies in CURRENCIES.items():
        if (currency or "").upper() in currencies:
            return coverage
    return None


def coverage_label(coverage: str | None) -> str:
    """``Japan coverage`` / ``Global coverage`` for a person (the code itself when it is neither)."""
    return NAMES.get(cast(Coverage, coverage), str(coverage or "unknown coverage"))


def only_coverage(coverages: tuple[Coverage, ...], what: str) -> Coverage:
    """The stack's coverage when it exports one; :class:`InvalidInputError` asking for it otherwise."""
    if len(coverages) == 1:
        return coverages[0]
    raise InvalidInputError(
        f"{what} names no coverage, and this stack exports {' and '.join(coverages)}: "
        'give "coverage": "jp" (Japan, JPY) or "g" (Global, USD or EUR)'
    )
