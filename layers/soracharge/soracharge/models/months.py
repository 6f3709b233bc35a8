"""Billing months: the ``yyyyMM`` strings Soracom uses, and the window of months it can bill."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AfterValidator

from soracharge.errors import InvalidInputError, MonthOutOfRangeError

#: Soracom keeps bills for the last 18 months (getBilling's own warning).
SORACOM_HISTORY_MONTHS = 18

_YEAR_MONTH = re.compile(r"\d{4}(0[1-9]|1[0-2])")


def _check_year_month(value: str) -> str:
    if not _YEAR_MONTH.fullmatch(value):
        raise ValueError(f"month must be yyyyMM with a month 01-12 (for example 202208), got {value!r}")
    return value


#: A billing month, ``yyyyMM``.
YearMonth = Annotated[str, AfterValidator(_check_year_month)]


def parse_month(value: str) -> str:
    """Validate a month given by a person or an event; raise :class:`InvalidInputError`."""
    try:
        return _check_year_month(value.strip())
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def month_index(month: str) -> int:
    return int(month[:4]) * 12 + int(month[4:]) - 1


def month_from_index(index: int) -> str:
    return f"{index // 12:04d}{index % 12 + 1:02d}"


def month_of(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}"


def shift_month(month: str, months: int) -> str:
    return month_from_index(month_index(month) + months)


def previous_month(moment: datetime | date) -> str:
    """The month before ``moment`` (in UTC when it is a datetime): what a monthly run bills."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
    return shift_month(month_of(moment), -1)


def months_between(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last``, both included."""
    return [month_from_index(i) for i in range(month_index(first), month_index(last) + 1)]


def ensure_billable(month: str, today: date) -> str:
    """Check that Soracom can have a closed bill for ``month`` as of ``today``.

    A month can be exported once it is over (its bill closes 1-3 business days later) and while
    it is one of the last 18 months.
    """
    current = month_of(today)
    last = shift_month(current, -1)
    first = shift_month(current, -SORACOM_HISTORY_MONTHS)
    if month_index(month) > month_index(last):
        raise MonthOutOfRangeError(
            f"month {month} is not over yet (today is {today.isoformat()}): the latest month Soracom can bill is {last}"
        )
    if month_index(month) < month_index(first):
        raise MonthOutOfRangeError(
            f"month {month} is older than the {SORACOM_HISTORY_MONTHS} months Soracom keeps bills for: "
            f"the earliest month it can export today is {first}"
        )
    return month
