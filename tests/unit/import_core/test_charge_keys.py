"""The keys a re-run relies on, worked out in the test from the rows, as logic/charges.py's docstring documents them.

A re-run (or a re-run after an upgrade) finds the charges CloudBlue already holds by their ``extChargeId`` and
knows them unchanged by their ``extHash``: a charge whose id moved would be charged twice. So here every id is
computed from the row's own fields (month, subscription, account, resource, SIM; with ``aggregation: none`` also
its date, its item name and how many identical rows came before it) and every hash from the charge's fields with
``json.dumps``, for each reader, and a few ids are written out as they must stay.
"""

from __future__ import annotations

import hashlib
import io
import json
from decimal import Decimal

import pytest
from soracharge.logic.billing_frame import FrameCharges
from soracharge.logic.charges import charge_id_suffix, plan_import
from soracharge.models.charges import Charge, ChargesPacket
from soracharge.models.mapping import parse_mapping

from tests.unit.import_core.builders import (
    ACCOUNT_TOKYO,
    BASIC,
    DATA,
    IMSI_1,
    IMSI_2,
    MONTH,
    RES_BASIC,
    RES_DATA,
    RES_SUPPORT,
    SUB_ACME,
    SUB_DEFAULT,
    SUB_TOKYO,
    SUPPORT,
    billing_csv,
    mapping,
    plan,
    row,
)

#: The test mapping's customers (subscription, account) and items (resource), as MAPPING_YAML writes them.
IMSI_3 = "440103000000003"
TARGETS = {"東京ガス": (SUB_TOKYO, ACCOUNT_TOKYO), "Acme Logistics": (SUB_ACME, ""), "": (SUB_DEFAULT, "")}
RESOURCES = {BASIC: RES_BASIC, DATA: RES_DATA, SUPPORT: RES_SUPPORT}

ROWS = [
    row(date="20261001"),
    *[row(imsi=IMSI_2, date="20261002", customer="Acme Logistics")] * 3,  # the same row three times
    row(date="202610", item=DATA, unit_price="0.0000001", quantity="1", amount="0.0000001"),  # below 1E-6
    row(
        imsi=IMSI_3,
        date="202610",
        item=DATA,
        unit_price="2",
        quantity="0.0000005",
        amount="0.000001",
        customer="Acme Logistics",
    ),
    row(imsi="", date="202610", customer="", item=SUPPORT, unit_price="3000", amount="3000"),
]


def documented_id(identity: list[str], suffix: str = "") -> str:
    text = json.dumps(identity, ensure_ascii=False, separators=(",", ":"))
    return f"sc-{identity[0]}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}" + (
        f"-{suffix}" if suffix else ""
    )


def documented_hash(charge: Charge) -> str:
    """sha256 of the canonical JSON of every set field but extHash: numbers as strings, no exponent."""
    wire = charge.model_dump(by_alias=True, exclude_none=True, exclude={"ext_hash"})
    canonical = {
        key: format(value.normalize(), "f") if isinstance(value, Decimal) else value for key, value in wire.items()
    }
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_identities(rows: list[dict[str, str]]) -> list[list[str]]:
    """``aggregation: none``: each row's identity, its occurrence counted over the rows before it."""
    seen: dict[tuple[str, ...], int] = {}
    identities = []
    for values in rows:
        subscription, account = TARGETS[values["customer"]]
        head = (MONTH, subscription, account, RESOURCES[values["billItemName"]], values["imsi"])
        key = (*head, values["date"], values["billItemName"])
        identities.append([*key, str(seen.get(key, 0))])
        seen[key] = seen.get(key, 0) + 1
    return identities


def test_with_aggregation_none_every_row_has_the_documented_id_and_identical_rows_count_up():
    # (the fast path declines aggregation none: the Python reader plans it)
    result = plan(billing_csv(ROWS), mapping(aggregation="none"))
    assert not isinstance(result.charges, FrameCharges)

    assert sorted(c.ext_charge_id or "" for c in result.charges) == sorted(map(documented_id, row_identities(ROWS)))
    assert [c.ext_hash for c in result.charges] == [documented_hash(c) for c in result.charges]
    # a daily row is dated with its day, a monthly row with the month
    dated = {(c.attributes or {}).get("imsi", ""): (c.charge_start_date, c.charge_end_date) for c in result.charges}
    assert dated[IMSI_2] == ("2026-10-02T00:00:00Z", "2026-10-02T00:00:00Z")
    assert dated[""] == ("2026-10-01T00:00:00Z", "2026-10-31T00:00:00Z")


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "python-reader"])
def test_by_default_a_sims_rows_make_one_charge_with_the_documented_id_and_hash(fast):
    result = plan(billing_csv(ROWS), mapping(), fast=fast)
    assert isinstance(result.charges, FrameCharges) == fast

    expected = [
        documented_id([MONTH, SUB_TOKYO, ACCOUNT_TOKYO, RES_BASIC, IMSI_1]),
        documented_id([MONTH, SUB_TOKYO, ACCOUNT_TOKYO, RES_DATA, IMSI_1]),
        documented_id([MONTH, SUB_ACME, "", RES_BASIC, IMSI_2]),
        documented_id([MONTH, SUB_ACME, "", RES_DATA, IMSI_3]),
        documented_id([MONTH, SUB_DEFAULT, "", RES_SUPPORT, ""]),
    ]
    assert sorted(c.ext_charge_id or "" for c in result.charges) == sorted(expected)  # each once
    assert [c.ext_hash for c in result.charges] == [documented_hash(c) for c in result.charges]
    tiny = {(c.attributes or {})["imsi"]: c for c in result.charges if c.resource_id == RES_DATA}
    assert b'"totalPrice":0.0000001' in ChargesPacket(import_session_id=1, charges=[tiny[IMSI_1]]).to_json_bytes()
    assert b'"amount":0.0000005' in ChargesPacket(import_session_id=1, charges=[tiny[IMSI_3]]).to_json_bytes()


def test_a_global_or_additional_files_ids_carry_their_marks_after_the_documented_hash():
    suffix = charge_id_suffix("g", "a0123456789ab")
    (charge,) = plan_import(
        io.BytesIO(billing_csv(ROWS[:1])), month=MONTH, currency="JPY", mapping=mapping(), id_suffix=suffix
    ).charges

    assert suffix == "g-a0123456789ab"
    assert charge.ext_charge_id == documented_id([MONTH, SUB_TOKYO, ACCOUNT_TOKYO, RES_BASIC, IMSI_1], suffix)
    assert charge.ext_hash == documented_hash(charge)


def test_the_ids_of_a_known_month_stay_as_they_are_across_releases():
    # Written out once: a change to how ids are made would charge every month that is re-run twice
    none = {
        (c.attributes or {})["imsi"]: c.ext_charge_id
        for c in plan(billing_csv(ROWS[:1]), mapping(aggregation="none")).charges
    }
    default = {
        (c.resource_id, (c.attributes or {}).get("imsi", "")): c.ext_charge_id
        for c in plan(billing_csv(ROWS), mapping()).charges
    }

    assert none == {IMSI_1: "sc-202610-55e8bfcb326980c3064d930af772b302"}
    assert default[RES_DATA, IMSI_1] == "sc-202610-8d99ac040125d8b72605b36b676907a2"
    assert default[RES_SUPPORT, ""] == "sc-202610-1893798d16c997c635674900e2d33ce1"


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "python-reader"])
def test_a_bill_item_named_like_two_merged_items_keeps_its_own_sku_and_uom_and_hash(fast):
    # Given a bill item whose own name is "a | b", as the charge merging items a and b of one SIM is named
    text = f"""\
customer: {{column: customer, default: {{subscription: "{SUB_DEFAULT}"}}}}
items:
  - {{match: "a | b", resource: "{RES_BASIC}", sku: SKU-X, uom: x}}
  - {{match: "a", resource: "{RES_BASIC}", sku: SKU-Y, uom: y}}
  - {{match: "b", resource: "{RES_BASIC}", sku: SKU-Z, uom: z}}
"""
    content = (
        b"imsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"
        b"440100000000001,202610,a | b,10,1,10,c\r\n"
        b"440100000000002,202610,a,10,1,10,c\r\n"
        b"440100000000002,202610,b,10,1,10,c\r\n"
    )
    chosen = parse_mapping(text, "m")
    result = plan(content, chosen, fast=fast)

    # Then each charge has its own item's sku and uom (the merged one its first item's), and its hash says so
    assert isinstance(result.charges, FrameCharges) == fast
    got = {(c.attributes or {})["imsi"]: ((c.attributes or {})["billItemName"], c.sku, c.uom) for c in result.charges}
    assert got == {"440100000000001": ("a | b", "SKU-X", "x"), "440100000000002": ("a | b", "SKU-Y", "y")}
    assert [c.ext_hash for c in result.charges] == [documented_hash(c) for c in result.charges]
