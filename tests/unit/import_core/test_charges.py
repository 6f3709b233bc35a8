"""Charges: the APS contract, the HTTP body, the aggregation levels, and keys that make every re-run safe."""

from __future__ import annotations

import hashlib
import io
import json
from decimal import Decimal, localcontext
from typing import Any

import pytest
from pydantic import ValidationError
from soracharge.errors import ImportRejectedError
from soracharge.logic import guards
from soracharge.logic.billing_frame import FrameCharges
from soracharge.logic.charges import charge_hash, ext_charge_id, plan_import
from soracharge.models.charges import Charge, ChargesPacket, ImportSessionInfo, ProblemKind
from soracharge.models.mapping import parse_mapping
from soracharge_local.simulators.soracom_data import generate_billing_csv

from tests.unit.import_core.builders import (
    ACCOUNT_TOKYO,
    BASIC,
    DATA,
    EXAMPLE_MAPPING,
    IMSI_1,
    IMSI_2,
    RES_BASIC,
    RES_DATA,
    SUB_ACME,
    SUB_DEFAULT,
    SUB_TOKYO,
    SUPPORT,
    billing_csv,
    mapping,
    plan,
    row,
)

A_MONTH = [
    row(date="20261001"),
    row(date="20261001", item=DATA, unit_price="0.2", quantity="12.5", amount="2.5"),
    row(date="20261002"),
    row(date="20261002", item=DATA, unit_price="0.2", quantity="3.1", amount="0.62"),
    row(imsi=IMSI_2, date="20261002", customer="Acme Logistics"),
    row(imsi=IMSI_2, date="20261002", customer="Acme Logistics"),  # a duplicate row
    row(imsi="", date="202610", customer="", item="サポート月額料金 (Business)", unit_price="3000", amount="3000"),
]


def a_charge(**changes: Any) -> Charge:
    fields: dict[str, Any] = {
        "type": "COS",
        "subscription_id": SUB_TOKYO,
        "resource_id": RES_BASIC,
        "total_price": Decimal("10.50"),
        "amount": Decimal(1),
        "currency_code": "JPY",
        "charge_start_date": "2026-10-01T00:00:00Z",
        "charge_end_date": "2026-10-31T00:00:00Z",
    }
    return Charge(**(fields | changes))


# --- the APS contract ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "NEW"},
        {"currency_code": "jpy"},
        {"currency_code": "JPYY"},
        {"subscription_id": "not-a-uuid"},
        {"resource_id": ""},
        {"total_price": Decimal("NaN")},
        {"amount": Decimal("Infinity")},
        {"charge_start_date": "01/10/2026"},
        {"attributes": {"imsi": 440103000000001}},
    ],
)
def test_a_charge_refuses_what_the_aps_type_refuses(changes):
    with pytest.raises(ValidationError):
        a_charge(**changes)


def test_a_charge_requires_every_required_field():
    with pytest.raises(ValidationError) as raised:
        Charge.model_validate({})
    missing = {error["loc"][0] for error in raised.value.errors()}
    assert missing == {
        "type",
        "subscriptionId",
        "resourceId",
        "totalPrice",
        "amount",
        "currencyCode",
        "chargeStartDate",
        "chargeEndDate",
    }


def test_the_body_is_compact_camel_case_json_without_nulls_and_with_exact_numbers():
    # Given a packet with a charge whose numbers would be written with exponents or floats
    charge = a_charge(
        total_price=Decimal("1E+2"), amount=Decimal("0.0000001"), unit_price=Decimal("0.1") + Decimal("0.2")
    )
    body = ChargesPacket(import_session_id=42, charges=[charge]).to_json_bytes()
    # Then it is compact JSON with camelCase keys, no null, and plain exact numbers (not strings, not floats)
    assert body.startswith(b'{"charges":[{"amount":0.0000001,"chargeEndDate":"2026-10-31T00:00:00Z",')
    assert b'"totalPrice":100,' in body
    assert body.endswith(b'"unitPrice":0.3}],"importSessionId":42}')
    assert b"null" not in body
    assert b" " not in body
    parsed = json.loads(body, parse_float=Decimal)
    assert parsed["charges"][0]["totalPrice"] == 100


def test_the_body_of_a_packet_is_the_same_bytes_every_time():
    one = ChargesPacket(import_session_id=1, charges=[a_charge(attributes={"b": "2", "a": "1"})])
    two = ChargesPacket(import_session_id=1, charges=[a_charge(attributes={"a": "1", "b": "2"})])
    assert one == two
    assert one.to_json_bytes() == two.to_json_bytes() == one.to_json_bytes()


def test_a_session_info_reads_the_aps_answer_and_ignores_new_fields():
    info = ImportSessionInfo.model_validate(
        {"importSessionId": 7, "status": "PROCESSED", "lastUpdateTime": "2026-11-02", "newField": 1}
    )
    assert (info.import_session_id, info.status, info.error_desc) == (7, "PROCESSED", None)
    with pytest.raises(ValidationError):
        ImportSessionInfo.model_validate({"importSessionId": 7, "status": "DONE"})


# --- planning charges ----------------------------------------------------------------------------------------


def test_the_same_file_gives_the_same_packets_byte_for_byte():
    content = billing_csv(A_MONTH)
    first = [packet.to_json_bytes() for packet in plan(content, mapping(packetSize=3)).packets(9)]
    second = [packet.to_json_bytes() for packet in plan(content, mapping(packetSize=3)).packets(9)]
    assert first == second
    assert len(first) == 2


def test_packets_split_the_charges_in_order_by_packet_size():
    result = plan(billing_csv(A_MONTH), mapping(packetSize=3))
    packets = result.packets(5)
    assert [len(packet.charges) for packet in packets] == [3, 1]
    assert [charge for packet in packets for charge in packet.charges] == result.charges
    assert {packet.import_session_id for packet in packets} == {5}
    ids = [charge.ext_charge_id or "" for charge in result.charges]
    assert ids == sorted(ids)


def test_ext_charge_id_is_the_documented_hash_of_the_charge_identity():
    result = plan(billing_csv(A_MONTH))
    basic = next(c for c in result.charges if c.resource_id == RES_BASIC and c.subscription_id == SUB_TOKYO)
    identity = json.dumps(["202610", SUB_TOKYO, ACCOUNT_TOKYO, RES_BASIC, IMSI_1], separators=(",", ":"))
    expected = "sc-202610-" + hashlib.sha256(identity.encode()).hexdigest()[:32]
    assert basic.ext_charge_id == expected == ext_charge_id(["202610", SUB_TOKYO, ACCOUNT_TOKYO, RES_BASIC, IMSI_1])


def test_ext_hash_is_the_documented_hash_of_every_other_field():
    for charge in plan(billing_csv(A_MONTH)).charges:
        wire = charge.model_dump(by_alias=True, exclude_none=True, exclude={"ext_hash"})
        canonical = {key: str(value) if isinstance(value, Decimal) else value for key, value in wire.items()}
        text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        assert charge.ext_hash == charge_hash(charge) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_a_change_of_amount_changes_the_hash_not_the_id():
    before = {c.ext_charge_id: c.ext_hash for c in plan(billing_csv(A_MONTH)).charges}
    changed = [*A_MONTH[:3], row(date="20261002", item=DATA, unit_price="0.2", quantity="3.2", amount="0.64")]
    after = {c.ext_charge_id: c.ext_hash for c in plan(billing_csv(changed + A_MONTH[4:])).charges}
    assert before.keys() == after.keys()
    assert [key for key in before if before[key] != after[key]] != []
    assert sum(before[key] != after[key] for key in before) == 1


def test_charges_built_fast_are_valid_charges():
    for the_mapping in (mapping(), mapping(aggregation="none", dateFormat="date")):
        for charge in plan(billing_csv(A_MONTH), the_mapping).charges:
            assert Charge.model_validate(charge.model_dump()) == charge


def test_aggregation_none_gives_one_charge_per_row_dated_with_its_day():
    # Given the month's rows, planned with aggregation none and plain dates
    result = plan(billing_csv(A_MONTH), mapping(aggregation="none", dateFormat="date"))
    # Then there is one charge per row, dated with its day, or the whole month for a yyyyMM row
    assert len(result.charges) == len(A_MONTH)
    dates = sorted((c.charge_start_date, c.charge_end_date) for c in result.charges)
    assert dates[0] == ("2026-10-01", "2026-10-01")
    assert ("2026-10-01", "2026-10-31") in dates
    # and two identical rows are two charges with distinct, stable ids
    assert len({c.ext_charge_id for c in result.charges}) == len(A_MONTH)
    assert result.charges == plan(billing_csv(A_MONTH), mapping(aggregation="none", dateFormat="date")).charges
    assert result.charges_sum == result.csv_sum


def test_the_default_aggregation_is_one_charge_per_subscription_resource_and_sim():
    result = plan(billing_csv(A_MONTH))
    keys = sorted((c.subscription_id, c.resource_id, (c.attributes or {}).get("imsi", "")) for c in result.charges)
    assert len(keys) == len(set(keys)) == 4
    duplicated = next(c for c in result.charges if (c.attributes or {}).get("imsi") == IMSI_2)
    assert (duplicated.amount, duplicated.total_price) == (Decimal(2), Decimal(20))


def test_items_mapped_to_one_resource_share_a_charge():
    # Given two data items that the mapping sends to the same resource
    rows = [
        row(item=DATA, unit_price="0.2", quantity="10", amount="2"),
        row(item="データ通信料金 (plan-K)", unit_price="0.3", quantity="10", amount="3"),
    ]
    # When planned
    [charge] = plan(billing_csv(rows)).charges
    # Then one charge holds both, names joined, without a unit price (they differ)
    assert (charge.resource_id, charge.amount, charge.total_price, charge.unit_price) == (
        RES_DATA,
        Decimal(20),
        Decimal(5),
        None,
    )
    assert charge.attributes == {"billItemName": f"{DATA} | データ通信料金 (plan-K)", "month": "202610", "imsi": IMSI_1}


def test_charge_type_and_currency_come_from_the_mapping_and_the_caller():
    result = plan_import(
        io.BytesIO(billing_csv(A_MONTH[:1])), month="202610", currency="USD", mapping=mapping(chargeType="MSRP")
    )
    assert (result.charges[0].type, result.charges[0].currency_code) == ("MSRP", "USD")


def test_a_rejected_plan_raises_import_rejected_naming_the_count():
    result = plan(billing_csv([row(amount="x"), row(item="?")]))
    with pytest.raises(ImportRejectedError, match=r"has 2 problems \(first: line 2: amount 'x'"):
        result.raise_if_rejected()
    plan(billing_csv(A_MONTH)).raise_if_rejected()


# --- the simulator's whole bill -------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [None, 10])
def test_the_example_mapping_imports_the_simulators_whole_bill_to_the_yen(days):
    # Given the simulator's detailed billing CSV of a month (jp coverage) and the example mapping
    bill = generate_billing_csv("202610", coverage="jp", sims=23, days=days)
    example = parse_mapping(EXAMPLE_MAPPING.read_text(encoding="utf-8"), str(EXAMPLE_MAPPING))
    # When it is planned
    result = plan_import(io.BytesIO(bill.content), month="202610", currency="JPY", mapping=example, source="sim")
    # Then nothing is unmapped, and the charges add up to the bill exactly
    assert result.problems == []
    assert result.rows == bill.rows
    assert result.charges_sum == result.csv_sum == bill.total
    assert sum(result.per_customer.values()) == sum(result.per_subscription.values()) == bill.total
    assert set(result.per_customer) == {"東京ガス", "Acme Logistics", "Northwind Traders", ""}
    # one charge per IMSI and resource (upload and download are one data charge), per device, the discount,
    # Harvest and support to the provider, and one share of the VPG and of the free tier per customer
    sims, second_imsis, cameras, lora = 23, 3, 3, 1  # every 6th SIM has a second IMSI: basic and data
    assert len(result.charges) == sims * 3 + second_imsis * 2 + 1 + cameras + lora + 2 + 3 + 3
    assert {c.sku for c in result.charges} >= {
        "SORACOM-DISCOUNT",
        "SORACOM-FREE-TIER",
        "SORACOM-PLAN-D-BASIC",
        "SORACOM-SORACAM-RECORDING",
        "SORACOM-VPG",
    }
    assert sum(c.total_price for c in result.charges if c.sku == "SORACOM-VPG") == Decimal(28800)
    assert min(c.total_price for c in result.charges) < 0


def test_charges_are_sorted_and_unique():
    bill = generate_billing_csv("202610", coverage="jp", sims=5)
    example = parse_mapping(EXAMPLE_MAPPING.read_text(encoding="utf-8"), "example")
    charges = plan_import(io.BytesIO(bill.content), month="202610", currency="JPY", mapping=example).charges
    ids = [c.ext_charge_id or "" for c in charges]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    described = {item.resource: item.description for item in example.items}
    assert all((c.description or "").startswith(described[c.resource_id] or "?") for c in charges)
    assert BASIC not in {c.description for c in charges}  # the mapping's description replaces the item name


# --- the guard: Σ totalPrice is Σ amount, or nothing is planned ----------------------------------------------


def test_the_python_reader_refuses_charges_that_do_not_add_up_to_the_csv(monkeypatch):
    # Given a bug that loses one charge on the way from the rows (the Python reader's charge builder)
    from soracharge.logic import charges

    build = charges.build_charges
    monkeypatch.setattr(charges, "build_charges", lambda *args, **kwargs: build(*args, **kwargs)[:-1])
    monkeypatch.setattr(charges, "_fast_plan", lambda *args, **kwargs: None)  # the fast path declines
    # When the month is planned, nothing is: the plan names both sums (the CSV's: 10 + 2.5 + 10 + 0.62 + 10 + 10
    # + 3000; the last charge, IMSI_2's two days of 10, is the one lost)
    with pytest.raises(AssertionError, match=r"Σ totalPrice 3023\.12 differs from Σ amount 3043\.12: a bug"):
        plan(billing_csv(A_MONTH))


def test_the_fast_path_refuses_charges_that_do_not_add_up_to_the_csv(monkeypatch):
    # Given a bug that loses the fast path's last charge (its frame of charges one row short)
    from dataclasses import replace

    from soracharge.logic import billing_frame

    read = billing_frame.read_frame

    def short(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        assert found is not None, "the fast path must take this file for the test to mean anything"
        return replace(found, charges=found.charges.head(found.charges.height - 1))

    monkeypatch.setattr(billing_frame, "read_frame", short)
    with pytest.raises(AssertionError, match=r"Σ totalPrice 3023\.12 differs from Σ amount 3043\.12: a bug, nothing"):
        plan(billing_csv(A_MONTH))


# --- exact at the reader's bounds, and what a refused file still shows ---------------------------------------

#: The largest amount a row may write: 20 digits before the point and 18 after (38, past Decimal's default 28).
HUGE = "99999999999999999999.999999999999999999"


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_amounts_at_the_readers_bounds_add_up_exactly_whatever_the_callers_decimal_context(fast):
    # Given a mapping that lets rows be that large, rows of the largest amount: a customer's and one nobody owns
    chosen = mapping(checks='{rowAmountLimit: "1e21"}')
    rows = [
        row(unit_price=HUGE, amount=HUGE),
        row(imsi=IMSI_2, unit_price=HUGE, amount=HUGE),
        row(imsi="", customer="", item=SUPPORT, unit_price=HUGE, amount=HUGE),
        row(imsi="", customer="", item=SUPPORT, date="20261002", unit_price="0.000000000000000002",
            amount="0.000000000000000002"),
    ]  # fmt: skip
    with localcontext(prec=6):
        result = plan(billing_csv(rows), chosen, fast=fast)

    # Then every sum is exact to the last of its 41 digits
    assert result.accepted, result.problems
    assert result.csv_sum == result.charges_sum == Decimal("299999999999999999999.999999999999999999")
    assert result.unowned_per_item == {SUPPORT: Decimal("100000000000000000000.000000000000000001")}
    assert result.per_subscription[SUB_TOKYO] == Decimal("199999999999999999999.999999999999999998")


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_a_file_of_another_month_is_named_as_that_months_bill_in_the_first_line(fast):
    result = plan(billing_csv([row(date="20260901"), row(date="20260902"), row(date="202609")]), fast=fast)

    assert result.kinds == {ProblemKind.MONTH: 3}
    assert result.other_months == {"202609": 3}
    assert guards.diagnosis(result) == (
        "every row of the file is dated in 202609 (3 rows), none in 202610: it is 202609's bill; "
        "did you mean the month 202609? (--month 202609, or uploads/202609/)"
    )


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_rows_of_other_months_are_counted_per_month_in_month_order_whatever_the_rows_order(fast):
    rows = [row(date="20260902"), row(date="20260801"), row(date="202609"), row(date="20261001")]
    result = plan(billing_csv(rows), fast=fast)
    assert list(result.other_months.items()) == [("202608", 1), ("202609", 2)]


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_a_refused_file_still_shows_what_each_subscription_would_have_been_charged(fast):
    # Given a file refused for one unmapped item, with two rows of Tokyo's, one of Acme's and one of nobody's
    rows = [
        row(amount="10"),
        row(item=DATA, unit_price="0.2", quantity="12.5", amount="2.5"),
        row(imsi=IMSI_2, customer="Acme Logistics", amount="10"),
        row(imsi="", customer="", item=SUPPORT, unit_price="3000", amount="3000"),
        row(item="Mystery", amount="10"),
    ]
    result = plan(billing_csv(rows), fast=fast)

    assert not result.accepted
    assert result.charges == []
    assert result.unmapped_rows == 1
    # Then the report's per-subscription figures are the rows that mapped, the unmapped one aside
    assert result.per_subscription == {SUB_TOKYO: Decimal("12.5"), SUB_ACME: Decimal(10), SUB_DEFAULT: Decimal(3000)}


def test_a_sims_rows_at_two_unit_prices_make_a_charge_with_no_unit_price_even_when_one_would_multiply_out():
    # Given two bill items of one SIM on one resource, at 10 and at 20 a unit: 1 unit at 10, and 0 at 20
    chosen = parse_mapping(EXAMPLE_MAPPING.read_text(encoding="utf-8"), "example")  # basicCharge-* is one item
    content = (
        "imsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"
        "440103000000001,202610,basicCharge-plan-D,10,1,10,東京ガス\r\n"
        "440103000000001,202610,basicCharge-planX2,20,0,0,東京ガス\r\n"
    ).encode()
    for fast in (True, False):
        result = plan(content, chosen, fast=fast)
        (charge,) = result.charges
        # Then the charge is 10 for 1 unit, and says no unit price: its rows do not share one
        assert (charge.total_price, charge.amount, charge.unit_price) == (Decimal(10), Decimal(1), None)


def test_amounts_of_37_digits_take_the_fast_path_and_add_up_exactly_whatever_the_callers_decimal_context():
    # Given rows of 19 digits and 18 decimals (within polars' Decimal(38, 18), unlike the largest a row may write)
    large = "9999999999999999999.999999999999999999"
    rows = [row(unit_price=large, amount=large), row(imsi=IMSI_2, unit_price=large, amount=large)]
    with localcontext(prec=6):
        result = plan(billing_csv(rows), mapping(checks='{rowAmountLimit: "1e21"}'))

    assert isinstance(result.charges, FrameCharges)
    assert result.csv_sum == result.charges_sum == Decimal("19999999999999999999.999999999999999998")
    assert [c.total_price for c in result.charges] == [Decimal(large)] * 2
