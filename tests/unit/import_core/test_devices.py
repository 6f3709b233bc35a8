"""Devices billed as SIMs are (models/devices.py): one charge per device, the device named where CloudBlue shows it,
its customer from its row or from the mapping's ``customer.devices``; a row naming two things, a device id that
is not one, or a device the mapping gives to another customer than its row names, is refused before money moves.
Both readers (the fast path and the pure-Python one) plan the same bytes.
"""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from soracharge.errors import MappingError
from soracharge.logic.billing_frame import FrameCharges
from soracharge.logic.charges import _python_plan, charge_hash, plan_import
from soracharge.models.charges import ImportPlan, ProblemKind
from soracharge.models.mapping import Mapping, parse_mapping

from tests.unit.import_core.builders import OneWay

MONTH = "202610"
SUB_TOKYO = "6513270e-269e-4d37-b2a7-4de452e6b438"
SUB_ACME = "9531985d-5d9d-49f8-9818-e811892f902b"
SUB_DEFAULT = "8d116ece-1738-47d9-bd9c-172411e20b8f"
RES_BASIC = "90c192cf-d3ac-44af-8f21-ddb66cad4a26"
RES_CAMERA = "a170b338-3926-4059-b28c-105d1fb17c23"
RES_LORA = "0cb1e29c-658c-4a14-95e6-0af593bd04cf"
RES_SUPPORT = "6b4cb242-4a23-4596-a217-beaddbc496cb"


def mapping() -> Mapping:
    return parse_mapping(
        f"""\
customer:
  column: customer
  subscriptions:
    "東京ガス": {{subscription: "{SUB_TOKYO}"}}
    "Acme Logistics": {{subscription: "{SUB_ACME}"}}
  default: {{subscription: "{SUB_DEFAULT}"}}
items:
  - {{match: "basicCharge*", resource: "{RES_BASIC}", uom: days}}
  - {{match: "soraCamLicenseCharge*", resource: "{RES_CAMERA}", description: SoraCam cloud recording}}
  - {{match: "loraDeviceCharge", resource: "{RES_LORA}"}}
  - {{match: "supportCharge", resource: "{RES_SUPPORT}"}}
""",
        "mapping.yaml",
    )


def _devices(devices: dict[str, str]) -> Mapping:
    data = mapping().model_dump(by_alias=True, exclude_none=True, mode="json")
    data["customer"]["devices"] = devices
    return parse_mapping(data, "mapping.yaml")


HEADER = "imsi,soraCamDeviceId,loraDeviceId,date,billItemName,unitPrice,quantity,amount,customer\r\n"
ROWS = [
    "440101,,,20261001,basicCharge-plan01s-active,10,1,10,東京ガス",
    "440101,,,20261002,basicCharge-plan01s-active,10,1,10,東京ガス",
    ",7CDDE9000001,,202610,soraCamLicenseCharge-cloudRecording7,990,1,990,Acme Logistics",
    ",7CDDE9000001,,202610,soraCamLicenseCharge-cloudRecording7Extra,110,1,110,Acme Logistics",
    ",7CDDE9000002,,202610,soraCamLicenseCharge-cloudRecording7,990,1,990,東京ガス",
    ",,d000000000000001,202610,loraDeviceCharge,400,1,400,",
    ",,,202610,supportCharge,3000,1,3000,",
]


def csv_of(*rows: str) -> bytes:
    return (HEADER + "".join(f"{row}\r\n" for row in rows)).encode()


def both(data: bytes, chosen: Mapping) -> tuple[ImportPlan, ImportPlan]:
    fast = plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=chosen)
    reference = _python_plan(io.BytesIO(data), MONTH, "JPY", chosen, "", "")
    return fast, reference


def by_description(plan: ImportPlan) -> dict[str, tuple[str, Decimal, dict[str, str]]]:
    return {c.description: (c.subscription_id, c.total_price, c.attributes) for c in plan.charges}  # type: ignore[misc]


def test_each_device_is_its_own_charge_named_in_its_description_and_attributes_on_both_paths():
    fast, reference = both(csv_of(*ROWS), mapping())
    assert isinstance(fast.charges, FrameCharges), "device columns stay on the fast path"
    assert [c.model_dump() for c in fast.charges] == [c.model_dump() for c in reference.charges]
    charges = by_description(reference)
    assert charges == {
        "basicCharge-plan01s-active (IMSI 440101)": (
            SUB_TOKYO,
            Decimal(20),
            {"billItemName": "basicCharge-plan01s-active", "month": MONTH, "imsi": "440101"},
        ),
        # two items of one camera mapped to one resource: one charge, the items' names joined
        "SoraCam cloud recording (SoraCam camera 7CDDE9000001)": (
            SUB_ACME,
            Decimal(1100),
            {
                "billItemName": "soraCamLicenseCharge-cloudRecording7 | soraCamLicenseCharge-cloudRecording7Extra",
                "month": MONTH,
                "soraCamDeviceId": "7CDDE9000001",
            },
        ),
        "SoraCam cloud recording (SoraCam camera 7CDDE9000002)": (
            SUB_TOKYO,
            Decimal(990),
            {"billItemName": "soraCamLicenseCharge-cloudRecording7", "month": MONTH, "soraCamDeviceId": "7CDDE9000002"},
        ),
        "loraDeviceCharge (LoRa device d000000000000001)": (
            SUB_DEFAULT,
            Decimal(400),
            {"billItemName": "loraDeviceCharge", "month": MONTH, "loraDeviceId": "d000000000000001"},
        ),
        "supportCharge": (SUB_DEFAULT, Decimal(3000), {"billItemName": "supportCharge", "month": MONTH}),
    }
    # the fast builder's extHash is the canonical one, whichever side of "month" the device's attribute sorts
    assert all(charge.ext_hash == charge_hash(charge) for charge in reference.charges)
    assert reference.charges_sum == reference.csv_sum == Decimal(5510)


def test_a_sims_charge_keeps_the_id_it_had_before_devices_were_read():
    sim_only = (
        "imsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"
        "440101,20261001,basicCharge-plan01s-active,10,1,10,東京ガス\r\n"
    )
    with_devices = csv_of(ROWS[0])
    (before,) = both(sim_only.encode(), mapping())[1].charges
    (after,) = both(with_devices, mapping())[1].charges
    assert (after.ext_charge_id, after.ext_hash) == (before.ext_charge_id, before.ext_hash)


def test_the_mapping_gives_a_device_to_its_customer_whatever_its_empty_customer_column():
    listed = _devices({"d000000000000001": "Acme Logistics", "7CDDE9000002": "東京ガス"})
    fast, reference = both(csv_of(*ROWS), listed)
    assert isinstance(fast.charges, FrameCharges)
    assert [c.model_dump() for c in fast.charges] == [c.model_dump() for c in reference.charges]
    assert by_description(reference)["loraDeviceCharge (LoRa device d000000000000001)"][0] == SUB_ACME
    assert reference.per_customer["Acme Logistics"] == Decimal(1500)
    assert reference.per_customer[""] == Decimal(3000)
    assert reference.per_subscription == fast.per_subscription


@pytest.mark.parametrize("device", ["7CDDE9000002", "cam:7CDDE9000002"])  # an id may hold a ':' itself
def test_a_device_the_mapping_gives_to_another_customer_than_its_row_names_is_refused_naming_both(device):
    listed = _devices({device: "Acme Logistics"})
    fast, reference = both(csv_of(*(row.replace("7CDDE9000002", device) for row in ROWS)), listed)
    assert not isinstance(fast.charges, FrameCharges)
    assert fast.problems == reference.problems
    (problem,) = reference.problems
    assert (problem.line, problem.column, problem.value, problem.kind) == (
        6,
        "customer",
        "東京ガス",
        ProblemKind.UNMAPPED_CUSTOMER,
    )
    assert problem.message == (
        f"the mapping's customer.devices lists SoraCam camera {device} for customer 'Acme Logistics', but column "
        "customer names '東京ガス': which customer pays is a guess"
    )
    assert len(fast.charges) == 0
    # and the refused file's figures count the row, to the customer its column names, with its device
    assert fast.unmapped_rows == reference.unmapped_rows == 1
    assert reference.per_customer["東京ガス"] == Decimal(10 + 10 + 990)


def test_a_refused_files_devices_are_counted_to_the_customer_their_rows_name():
    listed = _devices({"7CDDE9000002": "Acme Logistics", "7CDDE9000003": "Acme Logistics"})
    extra = ",7CDDE9000003,,202610,soraCamLicenseCharge-cloudRecording7,990,1,990,東京ガス"
    fast, reference = both(csv_of(*ROWS, extra), listed)
    assert [(p.line, p.column) for p in reference.problems] == [(6, "customer"), (9, "customer")]
    assert fast.devices_per_customer == reference.devices_per_customer == {"Acme Logistics": 1, "東京ガス": 2, "": 1}


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("440101,7CDDE9000001,,202610,soraCamLicenseCharge-x,1,1,1,東京ガス", "soraCamDeviceId", "more than one"),
        (",7CDDE9000001,d01,202610,soraCamLicenseCharge-x,1,1,1,東京ガス", "soraCamDeviceId", "more than one"),
        (",7CDDE9000001 ,,202610,soraCamLicenseCharge-x,1,1,1,東京ガス", "soraCamDeviceId", "not a device id"),
        (',"7CDDE9""01",,202610,soraCamLicenseCharge-x,1,1,1,東京ガス', "soraCamDeviceId", "not a device id"),
    ],
)
@pytest.mark.parametrize("listed", [{}, {"7CDDE9000001": "Acme Logistics"}])  # its device listed or not
def test_a_row_whose_thing_cannot_be_told_is_refused_on_both_paths(row, column, words, listed):
    fast, reference = both(csv_of(ROWS[0], row), _devices(listed) if listed else mapping())
    assert not isinstance(fast.charges, FrameCharges)
    assert fast.problems == reference.problems
    (problem,) = reference.problems
    assert (problem.line, problem.column, problem.kind) == (3, column, ProblemKind.VALUE)
    assert words in problem.message
    assert len(fast.charges) == 0


def test_a_mapping_listing_a_device_for_a_customer_it_does_not_have_is_refused_naming_it():
    with pytest.raises(
        MappingError, match=r"device '7CDDE9000002' names customer 'Acme'.*not one of customer.subscriptions"
    ):
        _devices({"7CDDE9000002": "Acme"})
    with pytest.raises(MappingError, match=r"'7CDDE9000002 ' is not a device id"):
        _devices({"7CDDE9000002 ": "Acme Logistics"})


@pytest.mark.parametrize(
    "typed", ["Acme Logistics ", "acme logistics", "Ａｃｍｅ Logistics", "Acme  Logistics", "AcmeLogistics"]
)
def test_a_device_naming_a_customer_as_listed_but_for_spaces_case_or_width_is_refused_naming_the_two(typed):
    with pytest.raises(MappingError) as refused:
        _devices({"7CDDE9000002": typed})
    assert (f"device '7CDDE9000002' names customer {typed!r}, not one of customer.subscriptions (they are: ") in str(
        refused.value
    )
    assert str(refused.value).endswith(
        f"; customer.subscriptions has 'Acme Logistics', which differs from {typed!r} only in spaces, case or "
        "width: write the two alike"
    )


def test_a_device_naming_a_customer_nothing_like_a_listed_one_gets_no_near_miss():
    with pytest.raises(MappingError) as refused:
        _devices({"7CDDE9000002": "Acme Logistic"})
    assert "differs from" not in str(refused.value)


def test_without_aggregation_each_device_row_is_its_own_charge_and_still_names_its_device():
    per_row = mapping().model_copy(update={"aggregation": "none"})
    plan = plan_import(io.BytesIO(csv_of(*ROWS)), month=MONTH, currency="JPY", mapping=per_row)
    cameras = [c for c in plan.charges if "soraCamDeviceId" in c.attributes]  # type: ignore[operator]
    assert len(cameras) == 3
    assert plan.charges_sum == plan.csv_sum


def _both_checked(data: bytes, chosen: Mapping) -> list[ImportPlan]:
    fast = plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=chosen)
    slow = plan_import(OneWay(data), month=MONTH, currency="JPY", mapping=chosen)
    return [fast, slow]


@pytest.mark.parametrize(
    ("devices", "rows", "words"),
    [
        # a customer value mistyped in the CSV is still a near miss when the mapping gives a device to that customer
        (
            {"d000000000000001": "Acme Logistics"},
            [
                *(row for row in ROWS if "Acme" not in row),
                "440102,,,20261001,basicCharge-plan01s-active,10,1,10,ACME Logistics",
            ],
            "the mapping says 'Acme Logistics', the CSV has 'ACME Logistics'",
        ),
        # a device id mistyped in the mapping
        (
            {"7cdde9000002": "Acme Logistics"},
            ROWS,
            "lists '7cdde9000002' (for 'Acme Logistics'), the CSV has the device",
        ),
        # an IMSI listed as a device
        ({"440101": "Acme Logistics"}, ROWS, "lists '440101' (for 'Acme Logistics'), and the CSV has it as an imsi"),
    ],
)
def test_a_device_listing_that_matches_nothing_while_something_nearly_does_is_refused_on_both_paths(
    devices, rows, words
):
    for plan in _both_checked(csv_of(*rows), _devices(devices)):
        assert not plan.accepted
        assert plan.problems[0].kind is ProblemKind.NEAR_MISS
        assert words in plan.problems[0].message, plan.problems[0].message
        assert len(plan.charges) == 0


def test_the_fast_paths_ids_are_the_same_whatever_the_batches_they_are_hashed_in(monkeypatch):
    """extChargeIds are hashed in Python a batch at a time (the Python objects of one batch, never the month's):
    a batch boundary anywhere changes no id and no order."""
    from soracharge.logic import billing_frame

    listed = _devices({"d000000000000001": "Acme Logistics", "7CDDE9000002": "東京ガス"})
    whole, reference = both(csv_of(*ROWS), listed)
    monkeypatch.setattr(billing_frame, "_ID_BATCH", 2)
    batched, _ = both(csv_of(*ROWS), listed)
    assert isinstance(batched.charges, FrameCharges)
    assert len(batched.charges) > 2  # more than one batch
    ids = [c.ext_charge_id for c in batched.charges]
    assert ids == [c.ext_charge_id for c in whole.charges] == [c.ext_charge_id for c in reference.charges]
