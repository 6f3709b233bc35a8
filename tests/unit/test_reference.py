"""The independent reference of what CloudBlue must hold (tests/reference.py) agrees with the import on real-shaped
months, and tells a doubled, lost or misdirected charge apart: a reference that cannot fail checks nothing."""

from __future__ import annotations

import copy
import decimal
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from soracharge.logic.charges import plan_import
from soracharge.models.coverage import Coverage
from soracharge.models.mapping import parse_mapping
from soracharge_local.simulators.soracom_data import generate_billing_csv

from tests import reference
from tests.docs.pages import blocks

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = {"jp": REPO / "examples/mapping.example.yaml", "g": REPO / "examples/mapping.global.example.yaml"}


def sent(coverage: Coverage) -> tuple[reference.Expected, list[dict[str, Any]]]:
    """What the reference makes of a simulator month with its example mapping, and the charges the import sends for
    it (as CloudBlue stores them)."""
    bill = generate_billing_csv("202610", coverage=coverage, sims=23)
    text = MAPPINGS[coverage].read_text(encoding="utf-8")
    currency = "JPY" if coverage == "jp" else "USD"
    plan = plan_import(io.BytesIO(bill.content), month="202610", currency=currency, mapping=parse_mapping(text, "m"))
    charges = [charge for packet in plan.packets(1) for charge in json.loads(packet.to_json_bytes())["charges"]]
    return reference.expected(bill.content, text, currency), charges


@pytest.mark.parametrize("coverage", ["jp", "g"])
def test_the_import_of_a_simulator_month_is_what_the_csv_makes(coverage):
    want, charges = sent(coverage)
    assert want.pools, "the example mappings share the VPG and the free tier: the pools are checked"
    assert len(want.shares) > len(want.pools), "each pool is split over more than one customer"
    assert reference.differences(want, reference.held(charges)) == []


def test_the_worked_example_is_what_its_page_says():
    # The reference reads the page's bill.csv and mapping.yaml, and makes the figures the page gives, by hand
    page = {block.title: block.body for block in blocks(REPO / "docs/mapping/worked-example.md") if block.title}
    want = reference.expected(page["bill.csv"].encode(), page["mapping.yaml"], "JPY")

    assert want.total == Decimal("33135.487762")
    vpg = "e5dbc3a6-7b8f-4a0c-9d9e-4f3a2b5c6d7e"
    assert want.pools == {vpg: Decimal(28800)}
    tokyo_gas, acme = "6513270e-269e-4d37-b2a7-4de452e6b438", "9531985d-5d9d-49f8-9818-e811892f902b"
    northwind, camera = "6b0d549b-6f03-475a-9600-a35a099950d8", "c3b9a1e4-5f6d-4e8a-9b7c-2d1e0f3a4b5c"
    assert want.shares == {
        (tokyo_gas, vpg, "東京ガス"): Decimal(619),
        (acme, vpg, "Acme Logistics"): Decimal(217),
        (northwind, vpg, "Northwind Traders"): Decimal(27964),
    }
    assert want.owned[(northwind, camera, "soraCamDeviceId:7CDDE9000002")] == Decimal(1287)


def test_a_split_in_cents_a_discount_and_a_tie_follow_the_largest_remainder():
    assert reference._largest_remainder(
        Decimal("10.00"), {"b": Decimal(1), "a": Decimal(1), "c": Decimal(1)}, "USD"
    ) == {
        "a": Decimal("3.34"),
        "b": Decimal("3.33"),
        "c": Decimal("3.33"),
    }
    assert reference._largest_remainder(Decimal(-100), {"x": Decimal(1), "y": Decimal(2)}, "JPY") == {
        "x": Decimal(-33),
        "y": Decimal(-67),
    }
    assert reference._largest_remainder(Decimal("1.005"), {"x": Decimal(1), "y": Decimal(1)}, "JPY") == {
        "x": Decimal("0.503"),
        "y": Decimal("0.502"),
    }


def test_a_doubled_a_lost_and_a_misdirected_charge_are_each_told():
    want, charges = sent("jp")
    owned = [c for c in charges if "share" not in c.get("attributes", {}) and float(c["totalPrice"]) != 0]
    doubled = reference.differences(want, reference.held([*charges, owned[0]]))
    assert doubled[0].startswith("Σ totalPrice")
    assert len(doubled) == 2
    lost = reference.differences(want, reference.held([c for c in charges if c is not owned[0]]))
    assert lost
    assert lost[0].startswith("Σ totalPrice")
    moved = copy.deepcopy(charges)
    target = next(c for c in moved if c["extChargeId"] == owned[0]["extChargeId"])
    target["subscriptionId"] = "00000000-0000-0000-0000-000000000000"
    wrong = reference.differences(want, reference.held(moved))
    assert len(wrong) == 2
    assert not any(line.startswith("Σ") for line in wrong)
    share = copy.deepcopy(charges)
    one = next(c for c in share if "share" in c.get("attributes", {}))
    one["totalPrice"] = str(float(one["totalPrice"]) + 1)
    assert any(line.startswith("shares of") for line in reference.differences(want, reference.held(share)))
    elsewhere = copy.deepcopy(charges)
    one = next(c for c in elsewhere if "share" in c.get("attributes", {}))
    one["subscriptionId"] = "00000000-0000-0000-0000-000000000000"
    misdirected = reference.differences(want, reference.held(elsewhere))
    assert len(misdirected) == 2, "the share is missing from its customer's subscription and found in another"
    assert all(f"{one['attributes']['share']}'s share of" in line for line in misdirected)


def test_the_reference_never_rounds_what_it_checks():
    with pytest.raises(decimal.Inexact):
        reference._largest_remainder(Decimal("9" * 120 + ".5"), {"a": Decimal(1)}, "JPY")


def test_a_yen_moved_from_one_customers_share_to_anothers_is_told():
    # The pool still adds up: only each customer's share tells it
    want, charges = sent("jp")
    moved = copy.deepcopy(charges)
    resource = next(c["resourceId"] for c in moved if "share" in c.get("attributes", {}))
    giver, taker = [c for c in moved if c.get("attributes", {}).get("share") and c["resourceId"] == resource][:2]
    giver["totalPrice"] = str(Decimal(str(giver["totalPrice"])) - 1)
    taker["totalPrice"] = str(Decimal(str(taker["totalPrice"])) + 1)

    found = reference.differences(want, reference.held(moved))

    assert sorted(line.split(" (subscription")[0] for line in found) == sorted(
        f"{c['attributes']['share']}'s share of {resource}" for c in (giver, taker)
    )
