"""Costs no customer owns, shared out over the customers: the mapping's ``shared`` rules with ``by``.

A row no customer owns has an empty customer value (and no device the mapping lists): a VPG, the free
tier, a discount bought for the whole operator, a support fee. A ``shared`` rule matching its bill item
sends it to one subscription (``to``) or shares it out (``by``). The shared rows of one resource are
pooled (as one charge would sum them) and their total is split over the customers in proportion to
each one's *basis*: its amount in the file (``by: amount``) or its amount of the bill items listed
(``by: [...]``). Customers with no positive basis get no share.

The split is exact, by the largest remainder method: in units of ``10**-d`` (``d`` the currency's
decimals, 0 for JPY and 2 for USD and EUR, or the pooled total's own decimals when it shows more),
each customer first gets the whole units of its exact quota ``units × basis / Σ basis``, then the
units left over go one each to the customers with the largest fractions left, ties to the customer
value that sorts first. The shares add up to the total exactly, and the same file and mapping give
the same shares on every run. A negative total (a discount) is split as its absolute value, then negated.

A pool no customer has a positive basis for cannot be shared: the file is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping as Mapping_
from decimal import Decimal, localcontext
from fractions import Fraction

from soracharge.logic.billing_csv import allocated_currency
from soracharge.models.charges import EXACT, SharedSplit, ShareLine, canonical_decimal_text
from soracharge.models.devices import SHARE
from soracharge.models.mapping import Mapping, SharedCost

#: Decimals of each currency's smallest unit (ISO 4217).
CURRENCY_DECIMALS = {"JPY": 0, "USD": 2, "EUR": 2}


def split(total: Decimal, weights: Mapping_[str, Decimal], decimals: int) -> dict[str, Decimal]:
    """``total`` shared over ``weights`` (all positive), in units of ``10**-decimals``, adding up to it exactly
    (in an exact context of its own, whatever the caller's)."""
    if not weights or any(weight <= 0 for weight in weights.values()):
        raise ValueError("every weight must be positive, and there must be one")
    with localcontext(EXACT):
        scaled = total.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{total} has more than {decimals} decimals")
        units = abs(int(scaled))
        whole = sum((Fraction(weight) for weight in weights.values()), Fraction(0))
        quotas = {customer: units * Fraction(weight) / whole for customer, weight in weights.items()}
        shares = {customer: quota.numerator // quota.denominator for customer, quota in quotas.items()}
        left = units - sum(shares.values())
        for customer in sorted(quotas, key=lambda c: (-(quotas[c] - shares[c]), c))[:left]:
            shares[customer] += 1
        sign = -1 if total < 0 else 1
        return {
            customer: Decimal(canonical_decimal_text(Decimal(sign * n).scaleb(-decimals)))
            for customer, n in shares.items()
        }


def decimals_of(total: Decimal, currency: str) -> int:
    exponent = total.as_tuple().exponent
    shown = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return max(CURRENCY_DECIMALS.get(currency, 2), shown)


def is_shared(customer: str, bill_item_name: str, mapping: Mapping) -> bool:
    """Whether a row is a shared cost that ``by`` shares out (its charges are the shares, not its own)."""
    if customer:
        return False
    rule = mapping.shared_for(bill_item_name)
    return rule is not None and rule.by is not None


def split_shared(
    amounts: Iterable[tuple[str, str, Decimal]], mapping: Mapping, currency: str, *, differences: str | None = None
) -> tuple[list[SharedSplit], list[str]]:
    """The shared costs of a file read without problems, split, from its amounts per ``(customer value, bill
    item)``; and why a pool cannot be shared (then there is no split: the file is refused).

    A correction's ``differences`` (the name of the column ``logic/corrections.py`` marks them with) are
    never shared out: their rows are no basis (differences, not the customers' usage), and shares are
    not additive (the shares of a sum are not the sum of the shares). ``soracharge correction --mapping``
    compares each customer's share, so its differences hold none to share; differences made without the
    mapping (their shares did not move with their basis), or in another currency, are refused when the
    mapping shares costs out."""
    totals: dict[tuple[str, str], Decimal] = {}
    for customer, name, amount in amounts:
        totals[customer, name] = totals.get((customer, name), Decimal(0)) + amount
    pools: dict[str, dict[str, Decimal]] = {}  # resource -> bill item -> amount
    rules: dict[str, dict[int, SharedCost]] = {}  # resource -> the rules of its rows, by identity
    for (customer, name), amount in totals.items():
        if not is_shared(customer, name, mapping):
            continue
        item = mapping.item_for(name)
        rule = mapping.shared_for(name)
        assert item is not None, "only rows that mapped are summed"
        assert rule is not None, "a shared row has its rule"
        pools.setdefault(item.resource, {})[name] = amount
        rules.setdefault(item.resource, {})[id(rule)] = rule
    if differences is not None:
        held = ", ".join(sorted(repr(name) for pool in pools.values() for name in pool))
        again = "Write them again with `soracharge correction --mapping MAPPING` (it compares each customer's share)"
        allocated = allocated_currency(differences)
        if pools:
            return [], [
                f"these differences hold costs no customer owns that the mapping shares out ({held}): differences "
                f"are no basis to share them by. {again}, or send such rows `to` a subscription"
            ]
        if mapping.shares_out and allocated is None:
            return [], [
                "these differences were written without the mapping, which shares costs out: each customer's share "
                f"did not move with its basis. {again}"
            ]
        if allocated is not None and allocated != currency:
            return [], [
                f"these differences compared the shares in {allocated}, and the month's bill is in {currency}. "
                f"{again} and --currency {currency}"
            ]
    splits, problems = [], []
    for resource, pool in sorted(pools.items()):
        names = sorted(pool)
        quoted = ", ".join(repr(name) for name in names)
        pooled_rules = list(rules[resource].values())
        if len(pooled_rules) > 1:
            problems.append(
                f"bill items {quoted} go to one resource ({resource}) but are shared by different rules of the "
                "mapping's `shared`: give them one rule, or resources of their own"
            )
            continue
        (rule,) = pooled_rules
        total = Decimal(canonical_decimal_text(sum(pool.values(), Decimal(0))))
        bases: dict[str, Decimal] = {}
        for (customer, name), amount in totals.items():
            if customer and rule.basis_matches(name):
                bases[customer] = bases.get(customer, Decimal(0)) + amount
        # canonical (no trailing zeros): the same text whichever reader summed them, in descriptions and reports
        weights = {customer: Decimal(canonical_decimal_text(basis)) for customer, basis in bases.items() if basis > 0}
        if not weights:
            problems.append(
                f"cannot share {quoted} ({total} {currency}) by {rule.basis}: no customer has a positive amount of "
                "it in this file (send them `to` a subscription instead)"
            )
            continue
        decimals = decimals_of(total, currency)
        shares = split(total, weights, decimals)
        lines = []
        for customer in sorted(weights):
            target = mapping.customer_for(customer)
            assert target is not None, "a customer with rows that mapped has a subscription"
            line = ShareLine(
                customer=customer, subscription=target.subscription, basis=weights[customer], amount=shares[customer]
            )
            lines.append(line)
        basis_total = Decimal(canonical_decimal_text(sum(weights.values(), Decimal(0))))
        splits.append(
            SharedSplit(
                items=names,
                resource=resource,
                total=total,
                basis=rule.basis,
                basis_total=basis_total,
                decimals=decimals,
                lines=lines,
            )
        )
    return (splits, problems) if not problems else ([], problems)


def charged_per_customer(per_customer: Mapping_[str, Decimal], splits: Iterable[SharedSplit]) -> dict[str, Decimal]:
    """Each customer value's amount with its shares, and the rows no customer owns ("") without what was shared
    out of them: what each customer is charged. The sum is the same (the shares add up to each cost)."""
    charged = dict(per_customer)
    with localcontext(EXACT):
        for split in splits:
            # a pool is the rows no customer owns (""), shared over customers with a basis, so rows of their own
            charged[""] -= split.total
            for line in split.lines:
                charged[line.customer] += line.amount
        return {customer: Decimal(canonical_decimal_text(amount)) for customer, amount in charged.items()}


def notes(splits: Iterable[SharedSplit]) -> dict[tuple[str, str], str]:
    """What each share's charge says of itself, by ``(resource, thing)``: ``Acme's share by amount: 930 of 1790``."""
    return {
        (split.resource, f"{SHARE}:{line.customer}"): (
            f"{line.customer}'s share by {split.basis}: {line.basis} of {split.basis_total}"
        )
        for split in splits
        for line in split.lines
    }
