"""A person's mistakes caught before money moves: what the readers cannot see row by row.

- **Near misses.** A customer value, a device id (``customer.devices``), an item ``match`` or a
  ``shared`` rule's ``match`` or ``by`` pattern of the mapping that matches nothing in the file, while
  a value of the file differs from it only by spaces, case, width (full or half) or Unicode
  normalisation: ``"Acme Logistics "`` in the mapping, ``Acme Logistics`` in the CSV. Its rows would go
  to the default subscription (or to another item's resource, or be shared by another basis) without
  a word: it is a problem, naming both values, and the file is not imported. So is a device id the
  file names as an IMSI (a SIM's customer is its row's: the listing would be ignored).
- **The default's catch.** Every customer value that goes to the mapping's default subscription, with
  its amount and SIMs, so a person sees what the default caught (:func:`defaulted`).
- **One diagnosis before the details.** :func:`diagnosis` says in one line why a file cannot be read or
  imported (its encoding, the month its rows carry, the header it lacks, a near miss), and
  :func:`summary` sums its problems up by kind with the first examples of each; the report keeps
  every problem.
- **The encoding**, told from the file's first bytes before any row is read (:func:`encoding_problem`).
"""

from __future__ import annotations

import codecs
import fnmatch
from collections.abc import Iterable
from collections.abc import Mapping as Mapping_
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Protocol

from soracharge.models.charges import EXACT, ImportPlan, ImportProblem, ProblemKind
from soracharge.models.mapping import Mapping, normal

#: The kinds that explain the others, in the order a diagnosis names them.
TELLING = (
    ProblemKind.ENCODING,
    ProblemKind.HEADER,
    ProblemKind.SETTING,
    ProblemKind.NEAR_MISS,
    ProblemKind.MONTH,
    ProblemKind.UNMAPPED_ITEM,
    ProblemKind.UNMAPPED_CUSTOMER,
    ProblemKind.ARITHMETIC,
    ProblemKind.VALUE,
    ProblemKind.ROW,
)
#: Examples of each kind a summary shows (the report lists every problem).
EXAMPLES = 3
#: How much of a file's start tells its encoding.
SNIFF_BYTES = 64 * 1024


def near_misses(plan: ImportPlan, mapping: Mapping) -> list[ImportProblem]:
    """The mapping's customer values and item matches that match no row while a row's value nearly does."""
    problems: list[ImportProblem] = []
    customers = plan.per_value or plan.per_customer  # the column's own values: a device's owner is not one
    by_normal: dict[str, list[str]] = {}
    for value in customers:
        by_normal.setdefault(normal(value), []).append(value)
    default = mapping.customer.default
    for listed in mapping.customer.subscriptions:
        if listed in customers:
            continue
        for value in by_normal.get(normal(listed), []):
            if value in mapping.customer.subscriptions:
                continue
            where = "to the default subscription" if default is not None else "nowhere (no subscription, no default)"
            problems.append(
                ImportProblem(
                    line=None,
                    column=mapping.customer.column,
                    value=value,
                    kind=ProblemKind.NEAR_MISS,
                    message=(
                        f"the mapping says {listed!r}, the CSV has {value!r} "
                        f"({money(customers[value], plan.currency)}, {plan.sims_per_customer.get(value, 0)} SIMs): "
                        f"it would go {where}. Write the value as the CSV has it"
                    ),
                )
            )
    items = plan.per_item
    for item in mapping.items:
        if any(item.matches(name) for name in items):
            continue
        pattern = normal(item.match)
        for name in items:
            if normal(name) != pattern and not fnmatch.fnmatchcase(normal(name), pattern):
                continue
            other = mapping.item_for(name)
            goes = f"to the resource of item {other.match!r}" if other is not None else "to no resource"
            problems.append(
                ImportProblem(
                    line=None,
                    column="billItemName",
                    value=name,
                    kind=ProblemKind.NEAR_MISS,
                    message=(
                        f"the mapping's item {item.match!r} matches no bill item, and the CSV has {name!r} "
                        f"({money(items[name], plan.currency)}): it would go {goes}. Write the item as the CSV has it"
                    ),
                )
            )
    problems += _device_near_misses(plan, mapping)
    problems += _shared_near_misses(plan, mapping)
    return problems


def _device_near_misses(plan: ImportPlan, mapping: Mapping) -> list[ImportProblem]:
    problems = []
    seen = set(plan.device_ids)
    by_normal: dict[str, list[str]] = {}
    for device in seen:
        by_normal.setdefault(normal(device), []).append(device)
    for listed, customer in mapping.customer.devices.items():
        if listed in plan.listed_as_imsis:
            message = (
                f"the mapping's customer.devices lists {listed!r} (for {customer!r}), and the CSV has it as an imsi: "
                "a SIM's rows belong to the customer their row names, so the listing would be ignored. List devices "
                "only, and tag the SIM"
            )
            problems.append(ImportProblem(line=None, column="imsi", value=listed, kind=ProblemKind.NEAR_MISS,
                                          message=message))  # fmt: skip
            continue
        if listed in seen:
            continue
        for device in by_normal.get(normal(listed), []):
            if device in mapping.customer.devices:
                continue
            message = (
                f"the mapping's customer.devices lists {listed!r} (for {customer!r}), the CSV has the device "
                f"{device!r}: its rows would not go to {customer!r}. Write the id as the CSV has it"
            )
            problems.append(ImportProblem(line=None, column=None, value=device, kind=ProblemKind.NEAR_MISS,
                                          message=message))  # fmt: skip
    return problems


def _shared_near_misses(plan: ImportPlan, mapping: Mapping) -> list[ImportProblem]:
    problems = []
    names = list(plan.per_item)
    for index, rule in enumerate(mapping.shared):
        patterns = [(f"shared[{index}].match", rule.match)]
        patterns += [
            (f"shared[{index}].by[{at}]", pattern) for at, pattern in enumerate(rule.by or []) if rule.by != "amount"
        ]
        for where, pattern in patterns:
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                continue
            close = [name for name in names if _nearly(pattern, name)]
            for name in close[:1]:
                what = (
                    "its rows would not be shared by it"
                    if where.endswith("match")
                    else "its amounts would not count in the basis"
                )
                message = (
                    f"the mapping's {where} {pattern!r} matches no bill item, and the CSV has {name!r} "
                    f"({money(plan.per_item[name], plan.currency)}): {what}. Write it as the CSV has it"
                )
                problems.append(ImportProblem(line=None, column="billItemName", value=name,
                                              kind=ProblemKind.NEAR_MISS, message=message))  # fmt: skip
    return problems


def _nearly(pattern: str, name: str) -> bool:
    normal_pattern = normal(pattern)
    return normal(name) == normal_pattern or fnmatch.fnmatchcase(normal(name), normal_pattern)


@dataclass(frozen=True)
class Defaulted:
    """A customer value the mapping does not list, so its rows go to the default subscription."""

    value: str
    amount: Decimal
    sims: int


def defaulted(plan: ImportPlan, mapping: Mapping) -> list[Defaulted]:
    """Every customer value of the file that goes to the default subscription, largest amount first."""
    if mapping.customer.default is None:
        return []
    listed = mapping.customer.subscriptions
    found = [
        Defaulted(value, _to_default(plan, mapping) if not value else amount, plan.sims_per_customer.get(value, 0))
        for value, amount in plan.per_customer.items()
        if value not in listed
    ]
    return sorted((d for d in found if d.value or d.amount), key=lambda d: (-abs(d.amount), d.value))


def _to_default(plan: ImportPlan, mapping: Mapping) -> Decimal:
    """What the rows no customer owns send to the default: all but the costs a ``shared`` rule shares or sends."""
    if not mapping.shared:
        return plan.per_customer.get("", Decimal(0))
    # (plan.per_customer[""] is what was not shared out; the costs sent `to` a subscription are in it too)
    with localcontext(EXACT):
        return sum(
            (amount for name, amount in plan.unowned_per_item.items() if mapping.shared_for(name) is None), Decimal(0)
        )


def encoding_problem(head: bytes) -> ImportProblem | None:
    """Why a file is not UTF-8, told from its first bytes (``head``), or None when it reads as UTF-8."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        len(head) >= 4 and head[:200].count(b"\x00") * 3 > len(head[:200])
    ):
        said, source = "UTF-16 (what Excel's 'Unicode Text' saves)", "UTF-16"
    else:
        sample = head[:-4] if len(head) >= SNIFF_BYTES else head  # a character may be cut at the end
        decoded = sample.decode("utf-8", errors="replace")
        bad = decoded.count("\ufffd")
        good = sum(1 for c in decoded if c > "\x7f") - bad
        if bad <= 4 * good:  # a Shift_JIS export has some 30 undecodable bytes for each pair that happens to decode
            return None  # UTF-8 (a few stray bytes in a UTF-8 file are the rows' own problems, by line)
        try:
            sample.decode("cp932")
            said, source = "Shift_JIS (CP932, what Excel in Japan saves as CSV)", "CP932"
        except UnicodeDecodeError:
            said, source = "in an encoding that cannot be told", "<ITS ENCODING>"
    return ImportProblem(
        line=None,
        column=None,
        value=None,
        kind=ProblemKind.ENCODING,
        message=(
            f"this file is {said}, not UTF-8: nothing in it was read. Export it again from Soracom, save it as "
            f"'CSV UTF-8' (in Excel: Save As, CSV UTF-8), or convert it: iconv -f {source} -t UTF-8 FILE.csv > "
            "FILE-utf8.csv"
        ),
    )


def diagnosis(plan: ImportPlan) -> str | None:
    """The one line that says why the file cannot be imported, in words a person acts on; None when no
    kind of problem explains the others (the summary by kind says what is wrong then)."""
    kinds = plan.kinds
    first = {kind: next((p for p in plan.problems if p.kind == kind), None) for kind in TELLING}
    for kind in (ProblemKind.ENCODING, ProblemKind.HEADER, ProblemKind.SETTING, ProblemKind.NEAR_MISS):
        if kinds.get(kind) and first[kind] is not None:
            return first[kind].message  # type: ignore[union-attr]
    months = plan.other_months
    if months and kinds.get(ProblemKind.MONTH, 0) >= plan.rows > 0 and len(months) == 1:
        (month, rows), *_ = months.items()
        return (
            f"every row of the file is dated in {month} ({rows} rows), none in {plan.month}: it is {month}'s bill; "
            f"did you mean the month {month}? (--month {month}, or uploads/{month}/)"
        )
    if months and kinds.get(ProblemKind.MONTH, 0) >= plan.rows > 0:
        listed = ", ".join(f"{m} ({n} rows)" for m, n in sorted(months.items()))
        return f"no row of the file is dated in {plan.month}: its rows are dated in {listed}"
    if plan.problem_count == 1 and plan.problems:  # one problem says it all itself
        return _where(plan.problems[0])
    return None


class Listed(Protocol):
    """A problem as a report or a plan lists it."""

    @property
    def line(self) -> int | None: ...

    @property
    def message(self) -> str: ...

    @property
    def kind(self) -> ProblemKind | None: ...

    @property
    def column(self) -> str | None: ...

    @property
    def value(self) -> str | None: ...


def summary(problems: Iterable[Listed], counts: Mapping_[ProblemKind, int], total: int) -> list[str]:
    """The problems summed up by kind (the telling kinds first): a line per kind with its count and its
    first examples, each line printable (no control character reaches a terminal or an alert). ``counts``
    are every problem's kinds (the list may hold the first ones only); ``total`` every problem."""
    examples: dict[ProblemKind | None, list[Listed]] = {}
    for problem in problems:
        listed = examples.setdefault(problem.kind, [])
        if len(listed) < EXAMPLES:
            listed.append(problem)
    lines = []
    for kind in (*TELLING, None):
        count = counts.get(kind, 0) if kind is not None else 0
        count = max(count, len(examples.get(kind, [])))
        if not count:
            continue
        shown = "; ".join(_where(p) for p in examples.get(kind, []))
        more = count - len(examples.get(kind, []))
        name = kind.value if kind is not None else "problem"
        lines.append(printable(f"{count} × {name}: {shown}" + (f"; and {more} more" if more > 0 else "")))
    counted = sum(max(counts.get(k, 0), len(examples.get(k, []))) for k in TELLING) + len(examples.get(None, []))
    if total > counted:
        lines.append(f"{total - counted} more problem(s)")
    return lines


def _where(problem: Listed) -> str:
    """``line 6, column billItemName, value 'Mystery fee': <message>``: where a person finds it, then why."""
    place = f"line {problem.line}" if problem.line is not None else "the file"
    if problem.column:
        place += f", column {problem.column}"
    if problem.value is not None:
        place += f", value {problem.value!r}"
    return f"{place}: {problem.message}"


def printable(text: str) -> str:
    """``text`` with every character a terminal would not show as itself escaped (``\\x00``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def money(amount: Decimal, currency: str) -> str:
    """An amount as people read it: thousands separated, every decimal kept (``1,190.1247874 JPY``)."""
    return f"{amount:,f} {currency}"
