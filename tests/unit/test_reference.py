"""The independent reference of what CloudBlue must hold (tests/reference.py) agrees with the import on real-shaped
months, and tells a doubled, lost or misdirected charge apart: a reference that cannot fail checks nothing."""

from __future__ import annotations

import copy
import csv
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


def test_as_charged_a_share_stated_as_its_customers_own_row_is_the_same_money_and_a_moved_yen_is_still_told():
    # A correction's differences file states a share as a row of its customer: CloudBlue then holds it as that
    # subscription's charge tied to no SIM or device. Per subscription and resource it is the same money...
    want, charges = sent("jp")
    restated = copy.deepcopy(charges)
    one = next(c for c in restated if c.get("attributes", {}).get("share"))
    del one["attributes"]["share"]
    assert reference.differences(want, reference.held(restated)) != []
    assert reference.differences(reference.as_charged(want), reference.as_charged(reference.held(restated))) == []
    # ...but a yen charged to the wrong subscription, or a charge taken twice, is still told
    moved = copy.deepcopy(restated)
    taker = next(c for c in moved if c is not one and c["subscriptionId"] != one["subscriptionId"])
    one_again = next(c for c in moved if c["extChargeId"] == one["extChargeId"])
    one_again["totalPrice"] = str(Decimal(str(one_again["totalPrice"])) - 1)
    taker["totalPrice"] = str(Decimal(str(taker["totalPrice"])) + 1)
    assert len(reference.differences(reference.as_charged(want), reference.as_charged(reference.held(moved)))) == 2
    doubled = reference.as_charged(reference.held([*restated, one]))
    assert reference.differences(reference.as_charged(want), doubled)[0].startswith("Σ totalPrice")


def test_several_files_imported_each_on_its_own_make_the_sum_of_what_each_makes():
    months = ("202609", "202610")
    first, second = (generate_billing_csv(month, coverage="jp", sims=7).content for month in months)
    text = MAPPINGS["jp"].read_text(encoding="utf-8")
    each = [reference.expected(body, text, "JPY") for body in (first, second)]
    both = reference.merged(each)
    assert both.total == each[0].total + each[1].total
    assert sum(both.shares.values()) == sum(each[0].shares.values()) + sum(each[1].shares.values())
    charges = [c for month, body in zip(months, (first, second), strict=True) for c in _sent_charges(body, month, text)]
    assert reference.lacking([first, second], text, "JPY", charges) == []
    assert reference.lacking([first], text, "JPY", charges) != []


def test_a_whole_operators_bill_is_its_customers_and_a_row_naming_another_is_no_file_to_import():
    bill = generate_billing_csv("202610", coverage="jp", sims=7).content
    text = MAPPINGS["jp"].read_text(encoding="utf-8")  # customer.operators: OP0000000003 -> Northwind Traders
    rows = list(csv.DictReader(io.StringIO(bill.decode("utf-8-sig"), newline="")))
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(row | {"customer": ""} for row in rows)  # its SIMs untagged: the operator says whose
    body = ("\ufeff" + out.getvalue()).encode()
    whole = reference.expected(body, text, "JPY", operator="OP0000000003")
    northwind = parse_mapping(text, "m").customer.subscriptions["Northwind Traders"].subscription
    assert {subscription for subscription, _, _ in whole.owned} == {northwind}
    assert whole.total == sum(whole.owned.values())
    with pytest.raises(AssertionError, match="not a file to import"):
        reference.expected(bill, text, "JPY", operator="OP0000000003")


def _sent_charges(body: bytes, month: str, text: str) -> list[dict[str, Any]]:
    plan = plan_import(io.BytesIO(body), month=month, currency="JPY", mapping=parse_mapping(text, "m"))
    return [charge for packet in plan.packets(1) for charge in json.loads(packet.to_json_bytes())["charges"]]
