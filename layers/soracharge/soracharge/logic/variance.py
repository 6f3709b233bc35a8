"""The month against the months imported before it, as a billing team checks a month before invoicing.

The history is the reports of earlier months in ``reports/`` (what was imported, per customer value
and per bill item), of the same coverage. A month is *unusual* when, against the latest earlier month
imported:

- a customer's amount moved by more than ``review.variance.change`` of what it was (50 % by default)
  and by at least ``review.variance.floor`` in the bill's currency (1,000 by default);
- a customer appeared (billed now, not then) or vanished (billed then, not now), by at least the floor;
- a bill item is billed that no earlier month had.

The month is judged as it stands once the file is imported: an additional file (a second bill, a
correction's differences) with the month's files closed before it (the ledger's record of the month,
whose version the file's closing requires unchanged), never alone against a whole month. The first
month imported has nothing to be compared with, so it is never unusual. What an unusual month does is
the mapping's ``review.approval`` (logic/imports.py): wait for a person (``unusual``, the default),
always wait (``always``), or go on and only show it (``off``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from soracharge.adapters.storage import ReportStore
from soracharge.logic.guards import money
from soracharge.models.coverage import Coverage
from soracharge.models.imports import ImportReport, Series, Variance, VarianceFlag
from soracharge.models.mapping import VarianceSettings
from soracharge.models.months import shift_month

#: How far back the import looks for earlier months, and how many of them it shows.
LOOK_BACK_MONTHS = 12
SHOWN_MONTHS = 6
#: The report statuses of a file whose charges were imported (closed in a session, rated or being rated).
IMPORTED = frozenset({"CLOSED", "PROCESSED"})


@dataclass
class MonthTotals:
    """What one month imported for one coverage: every imported file of it summed."""

    month: str
    per_customer: dict[str, Decimal] = field(default_factory=dict)
    per_item: dict[str, Decimal] = field(default_factory=dict)

    def add(self, report: ImportReport) -> None:
        for amount in report.per_customer:
            self.per_customer[amount.name] = self.per_customer.get(amount.name, Decimal(0)) + amount.amount
        for amount in report.per_item:
            self.per_item[amount.name] = self.per_item.get(amount.name, Decimal(0)) + amount.amount


def imported_reports(store: ReportStore, months: Iterable[str]) -> list[ImportReport]:
    """The reports in ``reports/<yyyyMM>/`` of ``months`` (a report that cannot be read is skipped)."""
    found = []
    for month in months:
        for key in store.keys(f"reports/{month}/"):
            if not key.endswith(".json"):
                continue
            document = store.get_json(key)
            if document is None:
                continue
            with contextlib.suppress(ValidationError):
                found.append(ImportReport.model_validate(document))
    return found


def history(
    reports: Iterable[ImportReport],
    coverage: Coverage,
    before: str,
    *,
    shown: int | None = SHOWN_MONTHS,
    currency: str | None = None,
    operator: str | None = None,
) -> list[MonthTotals]:
    """The months before ``before`` that imported charges of ``coverage`` for ``operator`` (None: the stack's
    own) (in ``currency``, when given: a Global month in EUR is never compared with one in USD), oldest first,
    the last ``shown`` of them (all with None; a report of before coverages counts as Japan's)."""
    months: dict[str, MonthTotals] = {}
    for report in reports:
        month = str(report.month or "")
        if report.status not in IMPORTED or not month or month >= before or (report.coverage or "jp") != coverage:
            continue
        if report.operator != operator:
            continue
        if currency is not None and report.currency not in (None, currency):
            continue
        months.setdefault(month, MonthTotals(month)).add(report)
    ordered = [months[m] for m in sorted(months)]
    return ordered[-shown:] if shown is not None else ordered


def month_with(
    closed: Iterable[Mapping[str, Any]],
    month: str,
    per_customer: Mapping[str, Decimal],
    per_item: Mapping[str, Decimal],
) -> MonthTotals:
    """The month as it stands with a file imported too: the staged totals of the files of the month closed
    before it (the ledger's ``month#`` record lists them: an additional file is judged with them, never
    alone), plus the file's own amounts."""
    totals = MonthTotals(month)
    for document in [*closed, {"perCustomer": per_customer, "perItem": per_item}]:
        for name, amount in dict(document.get("perCustomer") or {}).items():
            totals.per_customer[name] = totals.per_customer.get(name, Decimal(0)) + Decimal(str(amount))
        for name, amount in dict(document.get("perItem") or {}).items():
            totals.per_item[name] = totals.per_item.get(name, Decimal(0)) + Decimal(str(amount))
    return totals


def earlier_months(month: str) -> list[str]:
    """The months the import looks into for history, newest first."""
    return [shift_month(month, -n) for n in range(1, LOOK_BACK_MONTHS + 1)]


def compare(
    month: str,
    per_customer: Mapping[str, Decimal],
    per_item: Mapping[str, Decimal],
    earlier: list[MonthTotals],
    settings: VarianceSettings,
    currency: str,
) -> Variance:
    """The month (its amounts per customer value and per bill item) against ``earlier`` (oldest first)."""
    flags: list[VarianceFlag] = []
    previous = earlier[-1] if earlier else None
    if previous is not None:
        then = previous.per_customer
        for name in sorted(set(then) | set(per_customer)):
            flag = _customer_flag(name, then.get(name), per_customer.get(name), previous.month, settings, currency)
            if flag is not None:
                flags.append(flag)
        seen = {item for totals in earlier for item in totals.per_item}
        for item in sorted(set(per_item) - seen):
            flags.append(
                VarianceFlag(
                    kind="new-item",
                    name=item,
                    amount=per_item[item],
                    message=(
                        f'bill item "{item}" ({money(per_item[item], currency)}) was in none of the months before '
                        f"({', '.join(t.month for t in earlier)})"
                    ),
                )
            )
    names = sorted(set(per_customer).union(*(t.per_customer for t in earlier)))
    return Variance(
        months=[*(t.month for t in earlier), month],
        compared_with=previous.month if previous else None,
        flags=flags,
        per_customer=[
            Series(name=name, amounts=[*(t.per_customer.get(name) for t in earlier), per_customer.get(name)])
            for name in names
        ],
        change=settings.change,
        floor=settings.floor,
    )


def _customer_flag(
    name: str, then: Decimal | None, now: Decimal | None, month: str, settings: VarianceSettings, currency: str
) -> VarianceFlag | None:
    shown = f'customer "{name}"' if name else "rows with no customer value"
    if abs((now or Decimal(0)) - (then or Decimal(0))) < settings.floor or now == then:
        return None  # small amounts move a lot and matter little, an appearance or a vanishing included
    if then is None and now is not None:
        return VarianceFlag(
            kind="appeared",
            name=name,
            amount=now,
            message=f"{shown} appeared: {money(now, currency)} this month, nothing in {month}",
        )
    if now is None and then is not None:
        return VarianceFlag(
            kind="vanished",
            name=name,
            previous=then,
            message=f"{shown} vanished: {money(then, currency)} in {month}, nothing this month",
        )
    assert then is not None
    assert now is not None
    moved = now - then
    if then != 0 and abs(moved) <= settings.change * abs(then):
        return None
    share = f" ({moved / abs(then):+.0%})" if then != 0 else ""
    return VarianceFlag(
        kind="moved",
        name=name,
        previous=then,
        amount=now,
        message=(
            f"{shown} moved from {money(then, currency)} in {month} to {money(now, currency)}{share}, past the "
            f"mapping's review.variance (change {settings.change:%}, floor {money(settings.floor, currency)})"
        ),
    )
