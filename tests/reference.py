"""What CloudBlue must hold for a month's CSV, worked out plainly, apart from the code under test.

A test that takes its expected charges from ``plan_import`` compares the import with itself: a rule broken in both
places passes. This reference reads the CSV with the standard library's ``csv`` and adds the amounts with
``Decimal``, from the documented rules alone (docs/mapping/worked-example.md), sharing no code with
``soracharge.logic``:

- a row belongs to the customer its customer column names, else (a device's row) to the one ``customer.devices``
  lists for its device id; it is charged to that customer's subscription, or to ``customer.default``'s;
- its resource is the first ``items`` entry whose ``match`` (a name or an fnmatch glob) matches its bill item;
- a row nobody owns whose bill item the first matching ``shared`` rule shares out (``by``) is pooled per resource
  and split over the customers (not checked here charge by charge: ``tests/unit/import_core/test_shares.py``
  checks the split); with ``to`` it is that subscription's;
- a charge is one per subscription, resource and SIM (``imsi``) or device (its column and id), or nothing.

So CloudBlue holds, exactly: Σ totalPrice = Σ amount; per (subscription, resource, SIM or device) the sum of the
amounts of the rows owned; per resource, shares adding up to its pool.
"""

from __future__ import annotations

import csv
import fnmatch
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

DEVICE_COLUMNS = ("deviceId", "gadgetId", "loraDeviceId", "loraGatewayId", "sigfoxDeviceId", "soraCamDeviceId")

#: (subscription, resource, "imsi:<imsi>" | "<column>:<id>" | "")
Key = tuple[str, str, str]


@dataclass
class Expected:
    total: Decimal = Decimal(0)
    owned: dict[Key, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    pools: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def _first(rules: Iterable[dict[str, Any]], item: str) -> dict[str, Any] | None:
    return next((rule for rule in rules if fnmatch.fnmatchcase(item, str(rule["match"]))), None)


def expected(body: bytes, mapping_yaml: str) -> Expected:
    """What CloudBlue must hold for ``body`` (a detailed billing CSV) imported with the mapping ``mapping_yaml``."""
    mapping = yaml.safe_load(mapping_yaml)
    customer = mapping["customer"]
    column, subscriptions = customer["column"], customer.get("subscriptions", {})
    devices = customer.get("devices", {})
    default = (customer.get("default") or {}).get("subscription")
    result = Expected()
    for row in csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")):
        amount = Decimal(row["amount"])
        result.total += amount
        device = next(((name, row[name]) for name in DEVICE_COLUMNS if row.get(name)), None)
        who = row[column] or (devices.get(device[1], "") if device else "")
        item = row["billItemName"]
        resource = _first(mapping["items"], item)
        assert resource is not None, f"the mapping has no item for {item!r}: not a file to import"
        rule = _first(mapping.get("shared", []), item) if not who else None
        if rule is not None and rule.get("by") is not None:
            result.pools[resource["resource"]] += amount
            continue
        if rule is not None:
            subscription = rule["to"]["subscription"]
        else:
            subscription = (subscriptions.get(who) or {}).get("subscription", default)
        thing = f"imsi:{row['imsi']}" if row.get("imsi") else f"{device[0]}:{device[1]}" if device else ""
        result.owned[(subscription, resource["resource"], thing)] += amount
    return result


def held(charges: Iterable[dict[str, Any]]) -> Expected:
    """CloudBlue's charges (as its simulator stores them) in the same terms."""
    result = Expected()
    for charge in charges:
        total = Decimal(str(charge["totalPrice"]))
        result.total += total
        attributes = charge.get("attributes") or {}
        if "share" in attributes:
            result.pools[charge["resourceId"]] += total
            continue
        device = next(((name, attributes[name]) for name in DEVICE_COLUMNS if attributes.get(name)), None)
        thing = f"imsi:{attributes['imsi']}" if attributes.get("imsi") else f"{device[0]}:{device[1]}" if device else ""
        result.owned[(charge["subscriptionId"], charge["resourceId"], thing)] += total
    return result


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
    return found
