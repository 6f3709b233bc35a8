"""Corrections as differences: imported file + differences = corrected file, charge by charge."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from soracharge.errors import InvalidInputError
from soracharge.logic.charges import plan_import
from soracharge.logic.corrections import write_differences
from soracharge.models.mapping import Mapping

HEADER = "imsi,date,billItemName,unitPrice,quantity,amount,customer"
#: A differences file's header: the corrected file's columns, then the mark of differences.
DIFF_HEADER = HEADER + ",soracharge.differences"
MAPPING = Mapping.model_validate(
    {
        "currency": "JPY",
        "customer": {
            "column": "customer",
            "subscriptions": {
                "Acme": {"subscription": "2f8b3c7e-0c1a-4b8e-9f51-8d4f0b7a1c01"},
                "Northwind": {"subscription": "5a6c1d2e-3f4b-4c5d-8e9f-0a1b2c3d4e02"},
                "東京ガス": {"subscription": "6513270e-269e-4d37-b2a7-4de452e6b438"},
            },
        },
        "items": [
            {"match": "Data*", "resource": "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
            {"match": "Basic charge", "resource": "9d4f6a1b-2c3d-4e5f-8a9b-0c1d2e3f4a5b"},
        ],
    }
)


def csv_bytes(*rows: str, header: str = HEADER) -> bytes:
    return ("\ufeff" + "\r\n".join([header, *rows]) + "\r\n").encode()


IMPORTED = csv_bytes(
    "440101234567890,20261001,Data usage,0.2,100,20,Acme",
    "440101234567890,202610,Basic charge,10,1,10,Acme",
    "440109876543210,20261002,Data usage,0.2,50,10,Northwind",
    "440109876543210,202610,Basic charge,10,1,10,Northwind",
)
CORRECTED = csv_bytes(
    "440101234567890,20261001,Data usage,0.2,120,24,Acme",  # changed: more data
    "440101234567890,202610,Basic charge,10,1,10,Acme",  # unchanged
    "440109876543210,202610,Basic charge,10,1,10,Northwind",  # the day-2 data row is gone
    "440105555555555,202610,Basic charge,10,1,10,Acme",  # a SIM the first file missed
)


def differences(imported: bytes, corrected: bytes, *also: bytes) -> tuple[str, Any]:
    sink = io.StringIO()
    bases = [("imported", io.BytesIO(imported))] + [(f"also-{i}", io.BytesIO(b)) for i, b in enumerate(also)]
    result = write_differences(bases, ("corrected", io.BytesIO(corrected)), sink)
    return sink.getvalue(), result


def totals(body: bytes) -> dict[tuple[str, str, str], Decimal]:
    """Amount per (subscription, resource, imsi): what CloudBlue rates once every session is in."""
    plan = plan_import(io.BytesIO(body), month="202610", currency="JPY", mapping=MAPPING)
    assert plan.accepted, plan.problems
    out: dict[tuple[str, str, str], Decimal] = {}
    for charge in plan.charges:
        key = (charge.subscription_id, charge.resource_id, (charge.attributes or {}).get("imsi", ""))
        out[key] = out.get(key, Decimal(0)) + charge.total_price
    return out


def test_differences_hold_only_what_changed_with_signs():
    text, result = differences(IMPORTED, CORRECTED)
    lines = text.splitlines()
    assert lines[0] == DIFF_HEADER
    assert sorted(lines[1:]) == sorted(
        [
            "440101234567890,20261001,Data usage,0.2,20,4,Acme,yes",
            "440105555555555,202610,Basic charge,10,1,10,Acme,yes",
            "440109876543210,20261002,Data usage,0.2,-50,-10,Northwind,yes",
        ]
    )
    assert (result.added, result.removed, result.changed, result.rows_written) == (1, 1, 1, 3)
    assert result.difference_sum == Decimal(4) == result.corrected_sum - result.imported_sum


def test_imported_plus_differences_rates_exactly_like_the_corrected_file():
    text, _ = differences(IMPORTED, CORRECTED)
    diff = ("\ufeff" + text).encode()
    combined = totals(IMPORTED)
    for key, amount in totals(diff).items():
        combined[key] = combined.get(key, Decimal(0)) + amount
    assert {k: v for k, v in combined.items() if v} == totals(CORRECTED)


def test_the_same_file_twice_has_no_differences():
    text, result = differences(IMPORTED, IMPORTED)
    assert text.splitlines() == [DIFF_HEADER]
    assert result.empty


def test_columns_only_one_file_has_are_kept_and_rows_match_by_every_other_column():
    tagged = csv_bytes(
        "440101234567890,20261001,Data usage,0.2,100,20,Acme,blue",
        header=HEADER + ",color",
    )
    text, result = differences(csv_bytes("440101234567890,20261001,Data usage,0.2,100,20,Acme"), tagged)
    # A new tag column makes the row another identity: the old one is taken back, the new one added.
    assert text.splitlines()[0] == HEADER + ",color,soracharge.differences"
    assert sorted(text.splitlines()[1:]) == [
        "440101234567890,20261001,Data usage,0.2,-100,-20,Acme,,yes",
        "440101234567890,20261001,Data usage,0.2,100,20,Acme,blue,yes",
    ]
    assert result.difference_sum == 0


def test_exact_decimals_and_quoted_fields_survive():
    imported = csv_bytes('440101234567890,20261001,"Data, roaming",0.000001,1,0.000001,"東京ガス"')
    corrected = csv_bytes('440101234567890,20261001,"Data, roaming",0.000001,3,0.000003,"東京ガス"')
    text, result = differences(imported, corrected)
    assert text.splitlines()[1] == '440101234567890,20261001,"Data, roaming",0.000001,2,0.000002,東京ガス,yes'
    assert result.difference_sum == Decimal("0.000002")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "imported: the file is empty"),
        (b"\r\n" + csv_bytes("440101234567890,20261001,Data usage,0.2,100,20,Acme"),
         "imported: line 1 is blank: the header (the columns' names) must be the file's first line"),
        (csv_bytes("1,20261001,x,1,1,1,A", header="imsi,date,billItemName,unitPrice,quantity,cost,customer"),
         "imported, line 1: missing column 'amount'"),
        (csv_bytes("440101234567890,20261001,Data usage,0.2,100,twenty,Acme"),
         "imported, line 2, column amount: 'twenty' is not a number"),
        (csv_bytes("440101234567890,20261001,Data usage,0.2,100,NaN,Acme"),
         "imported, line 2, column amount: 'NaN' is not a finite number"),
        (csv_bytes("440101234567890,20261001,Data usage"), "imported, line 2: 3 fields where the header has 7"),
        (b"\xff\xfeimsi", "imported: not UTF-8"),
    ],
)  # fmt: skip
def test_a_broken_file_is_refused_naming_the_file_line_and_column(body, message):
    with pytest.raises(InvalidInputError) as raised:
        differences(body, CORRECTED)
    assert message in str(raised.value)


def test_a_second_correction_is_made_against_everything_imported_not_the_first_file_alone():
    # The month was imported, then corrected once; a second corrected file arrives.
    first_diff, _ = differences(IMPORTED, CORRECTED)
    second = csv_bytes(
        "440101234567890,20261001,Data usage,0.2,110,22,Acme",  # corrected again: 22, not 24
        "440101234567890,202610,Basic charge,10,1,10,Acme",
        "440109876543210,202610,Basic charge,10,1,10,Northwind",
        "440105555555555,202610,Basic charge,10,1,10,Acme",
    )
    text, result = differences(IMPORTED, second, ("\ufeff" + first_diff).encode())
    assert text.splitlines()[1:] == ["440101234567890,20261001,Data usage,0.2,-10,-2,Acme,yes"]
    assert result.imported_sum == Decimal(54)  # 50 first imported + 4 of the first correction
    # Everything imported for the month now rates like the second corrected file.
    combined = totals(IMPORTED)
    for extra in (first_diff, text):
        for key, amount in totals(("\ufeff" + extra).encode()).items():
            combined[key] = combined.get(key, Decimal(0)) + amount
    assert {k: v for k, v in combined.items() if v} == totals(second)
