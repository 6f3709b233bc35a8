"""The independent reference of what CloudBlue must hold (tests/reference.py) agrees with the import on real-shaped
months, and tells a doubled, lost or misdirected charge apart: a reference that cannot fail checks nothing."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from soracharge.logic.charges import plan_import
from soracharge.models.coverage import Coverage
from soracharge.models.mapping import parse_mapping
from soracharge_local.simulators.soracom_data import generate_billing_csv

from tests import reference

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = {"jp": REPO / "examples/mapping.example.yaml", "g": REPO / "examples/mapping.global.example.yaml"}


def sent(coverage: Coverage) -> tuple[bytes, str, list[dict[str, Any]]]:
    """A simulator month, its mapping, and the charges the import sends for it (as CloudBlue stores them)."""
    bill = generate_billing_csv("202610", coverage=coverage, sims=23)
    text = MAPPINGS[coverage].read_text(encoding="utf-8")
    currency = "JPY" if coverage == "jp" else "USD"
    plan = plan_import(io.BytesIO(bill.content), month="202610", currency=currency, mapping=parse_mapping(text, "m"))
    charges = [charge for packet in plan.packets(1) for charge in json.loads(packet.to_json_bytes())["charges"]]
    return bill.content, text, charges


@pytest.mark.parametrize("coverage", ["jp", "g"])
def test_the_import_of_a_simulator_month_is_what_the_csv_makes(coverage):
    body, mapping, charges = sent(coverage)
    want = reference.expected(body, mapping)
    assert want.pools, "the example mappings share the VPG and the free tier: the pools are checked"
    assert reference.differences(want, reference.held(charges)) == []


def test_a_doubled_a_lost_and_a_misdirected_charge_are_each_told():
    body, mapping, charges = sent("jp")
    want = reference.expected(body, mapping)
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
