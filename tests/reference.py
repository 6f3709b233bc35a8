"""What CloudBlue must hold for a month's CSV, worked out plainly, apart from the code under test.

A test that takes its expected charges from ``plan_import`` compares the import with itself: a rule broken in both
places passes. This reference reads the CSV with the standard library's ``csv`` and adds the amounts with
``Decimal``, from the documented rules alone (docs/mapping/worked-example.md), sharing no code with
``soracharge.logic``:

- a row belongs to the customer its customer column names, else (a device's row) to the one ``customer.devices``
  lists for its device id; it is charged to that customer's subscription, or to ``customer.default``'s;
- its resource is the first ``items`` entry whose ``match`` (a name or an fnmatch glob) matches its bill item;
- a row nobody owns whose bill item the first matching ``shared`` rule shares out (``by``) is pooled per resource
  and split over the customers with a positive basis (their amount in the file, or of the items ``by`` lists) by
  the largest remainder: in the currency's unit (1 JPY, 0.01 USD or EUR, or the pool's own decimals, trailing
  zeros aside, when it shows more), each customer gets the whole units of its exact quota, then the units left
  over go one each to the largest fractions, ties to the customer value that sorts first; a negative pool is
  split as its absolute value; with ``to`` it is that subscription's;
- a charge is one per subscription, resource and SIM (``imsi``) or device (its column and id), or nothing.

So CloudBlue holds, exactly: Σ totalPrice = Σ amount; per (subscription, resource, SIM or device) the sum of the
amounts of the rows owned; per resource, shares adding up to its pool, and each customer's share.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import io
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any, ParamSpec, TypeVar

import yaml

DEVICE_COLUMNS = ("deviceId", "gadgetId", "loraDeviceId", "loraGatewayId", "sigfoxDeviceId", "soraCamDeviceId")

#: (subscription, resource, "imsi:<imsi>" | "<column>:<id>" | ""), or for a share (subscription, resource, customer)
Key = tuple[str, str, str]
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Expected:
    total: Decimal = Decimal(0)
    owned: dict[Key, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    pools: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    #: (subscription, resource, customer value): that customer's share of the resource's pool, charged to its
    #: subscription (the one its customer value maps to, or the default's)
    shares: dict[Key, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


#: The decimals of each currency's smallest unit (ISO 4217).
UNIT_DECIMALS = {"JPY": 0, "USD": 2, "EUR": 2}


def _first(rules: Iterable[dict[str, Any]], item: str) -> dict[str, Any] | None:
    return next((rule for rule in rules if fnmatch.fnmatchcase(item, str(rule["match"]))), None)


#: Every sum and quotient here is exact, or the reference fails: it never rounds what it checks.
EXACT = Context(prec=100, traps=[Inexact, InvalidOperation])


def _exact(function: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(function)
    def exactly(*args: P.args, **kwargs: P.kwargs) -> R:
        with localcontext(EXACT):
            return function(*args, **kwargs)

    return exactly


@_exact
def _largest_remainder(pool: Decimal, bases: dict[str, Decimal], currency: str) -> dict[str, Decimal]:
    exponent = pool.normalize().as_tuple().exponent  # 28800.00 shows no decimals
    decimals = max(UNIT_DECIMALS[currency], -exponent if isinstance(exponent, int) else 0)
    scaled = pool * 10**decimals
    assert scaled == int(scaled), f"{pool} has more than {decimals} decimals"
    units = abs(int(scaled))
    whole = sum(bases.values())
    quotas = {who: Fraction(units) * Fraction(basis) / Fraction(whole) for who, basis in bases.items()}
    shares = {who: int(quota) for who, quota in quotas.items()}
    by_fraction = sorted(quotas, key=lambda who: (-(quotas[who] - shares[who]), who))
    for who in by_fraction[: units - sum(shares.values())]:
        shares[who] += 1
    sign = -1 if pool < 0 else 1
    return {who: sign * Decimal(n) / 10**decimals for who, n in shares.items()}


@_exact
def expected(body: bytes, mapping_yaml: str, currency: str, operator: str | None = None) -> Expected:
    """What CloudBlue must hold for ``body`` (a detailed billing CSV in ``currency``, the bill of ``operator``, the
    stack's own when None) imported with the mapping ``mapping_yaml``."""
    mapping = yaml.safe_load(mapping_yaml)
    customer = mapping["customer"]
    column, subscriptions = customer["column"], customer.get("subscriptions", {})
    devices = customer.get("devices", {})
    whole = (customer.get("operators") or {}).get(operator)  # customer.operators: the whole bill is its customer's
    default = (customer.get("default") or {}).get("subscription")

    def subscription_of(who: str) -> Any:  # None when unmapped and no default: the product refuses such a file
        return (subscriptions.get(who) or {}).get("subscription", default)

    result = Expected()
    customers: dict[tuple[str, str], Decimal] = defaultdict(Decimal)  # (customer value, bill item) -> amount
    rules: dict[str, dict[str, Any]] = {}  # resource -> the shared rule of its pool
    for row in csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")):
        amount = Decimal(row["amount"])
        result.total += amount
        device = next(((name, row[name]) for name in DEVICE_COLUMNS if row.get(name)), None)
        who = row[column] or (devices.get(device[1], "") if device else "")
        if whole is not None:
            assert row[column] in ("", whole), f"{row[column]!r} in {whole!r}'s operator: not a file to import"
            who = whole
        item = row["billItemName"]
        resource = _first(mapping["items"], item)
        assert resource is not None, f"the mapping has no item for {item!r}: not a file to import"
        if who:
            customers[who, item] += amount
        rule = _first(mapping.get("shared", []), item) if not who else None
        if rule is not None and rule.get("by") is not None:
            result.pools[resource["resource"]] += amount
            rules[resource["resource"]] = rule
            continue
        subscription = rule["to"]["subscription"] if rule is not None else subscription_of(who)
        thing = f"imsi:{row['imsi']}" if row.get("imsi") else f"{device[0]}:{device[1]}" if device else ""
        result.owned[(subscription, resource["resource"], thing)] += amount
    for pooled, pool in result.pools.items():
        by = rules[pooled]["by"]
        bases: dict[str, Decimal] = defaultdict(Decimal)
        for (owner, name), amount in customers.items():
            if by == "amount" or any(fnmatch.fnmatchcase(name, str(glob)) for glob in by):
                bases[owner] += amount
        positive = {owner: basis for owner, basis in bases.items() if basis > 0}
        assert positive, f"no customer has a positive basis to share {pooled} by: not a file to import"
        for owner, share in _largest_remainder(pool, positive, currency).items():
            target = subscription_of(owner)
            assert target is not None, f"{owner!r} has no subscription and the mapping no default: not a file to import"
            result.shares[target, pooled, owner] = share
    return result


@_exact
def held(charges: Iterable[dict[str, Any]]) -> Expected:
    """CloudBlue's charges (as its simulator stores them) in the same terms."""
    result = Expected()
    for charge in charges:
        total = Decimal(str(charge["totalPrice"]))
        result.total += total
        attributes = charge.get("attributes") or {}
        if "share" in attributes:
            result.pools[charge["resourceId"]] += total
            result.shares[charge["subscriptionId"], charge["resourceId"], attributes["share"]] += total
            continue
        device = next(((name, attributes[name]) for name in DEVICE_COLUMNS if attributes.get(name)), None)
        thing = f"imsi:{attributes['imsi']}" if attributes.get("imsi") else f"{device[0]}:{device[1]}" if device else ""
        result.owned[(charge["subscriptionId"], charge["resourceId"], thing)] += total
    return result


@_exact
def merged(parts: Iterable[Expected]) -> Expected:
    """What several files, each imported on its own, make together."""
    result = Expected()
    for part in parts:
        result.total += part.total
        for key, amount in part.owned.items():
            result.owned[key] += amount
        for resource, amount in part.pools.items():
            result.pools[resource] += amount
        for key, amount in part.shares.items():
            result.shares[key] += amount
    return result


@_exact
def as_charged(money: Expected) -> Expected:
    """The same money as each subscription is charged it: a customer's share of a resource counted with that
    subscription's charges of the resource tied to no SIM or device. A correction's differences file states a
    share's change as a row of its customer (``logic/corrections.py``), so after one, CloudBlue holds part of a
    share as such a charge: only this view of it is what the corrected CSV makes."""
    result = Expected(total=money.total)
    for key, amount in money.owned.items():
        result.owned[key] += amount
    for (subscription, resource, _), amount in money.shares.items():
        result.owned[subscription, resource, ""] += amount
    return result


def lacking(
    bodies: bytes | Iterable[bytes],
    mapping_yaml: str,
    currency: str,
    charges: Iterable[dict[str, Any]],
    operator: str | None = None,
    *,
    corrected: bool = False,
) -> list[str]:
    """What ``charges`` (CloudBlue's, as its simulator stores them) differ by from what the CSV, or several each
    imported on its own, make: empty when CloudBlue holds exactly that. ``corrected``: the charges include a
    correction's differences, so they are compared :func:`as_charged`."""
    files = [bodies] if isinstance(bodies, bytes) else list(bodies)
    want, got = merged(expected(body, mapping_yaml, currency, operator) for body in files), held(charges)
    return differences(as_charged(want), as_charged(got)) if corrected else differences(want, got)


def differences(want: Expected, got: Expected) -> list[str]:
    """What CloudBlue holds that the CSV does not make (empty: exactly what it must hold)."""
    found = []
    if want.total != got.total:
        found.append(f"Σ totalPrice {got.total}, the CSV's Σ amount {want.total}")
    for key in sorted(set(want.owned) | set(got.owned)):
        if want.owned.get(key, Decimal(0)) != got.owned.get(key, Decimal(0)):
            found.append(f"{key}: held {got.owned.get(key)}, the CSV makes {want.owned.get(key)}")
    for resource in sorted(set(want.pools) | set(got.pools)):
        if want.pools.get(resource, Decimal(0)) != got.pools.get(resource, Decimal(0)):
            found.append(f"shares of {resource}: held {got.pools.get(resource)}, pooled {want.pools.get(resource)}")
    for key in sorted(set(want.shares) | set(got.shares)):
        if want.shares.get(key, Decimal(0)) != got.shares.get(key, Decimal(0)):
            subscription, resource, who = key
            found.append(
                f"{who}'s share of {resource} (subscription {subscription}): held {got.shares.get(key)}, "
                f"the split makes {want.shares.get(key)}"
            )
    return found
