"""Properties over generated files: the fast CSV split is csv.reader's, and no cent is lost or made up."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from soracharge.logic.billing_csv import iter_records, pack, unpack
from soracharge.logic.charges import plan_import
from soracharge.models.mapping import parse_mapping

from tests.fuzz.test_fuzz_csv import consistent
from tests.unit.import_core.builders import BASIC, DATA, DISCOUNT, IMSI_1, IMSI_2, SUPPORT, billing_csv

CUSTOMERS = {
    "東京ガス": "6513270e-269e-4d37-b2a7-4de452e6b438",
    "Acme Logistics": "9531985d-5d9d-49f8-9818-e811892f902b",
    'Other, "Inc."': "6b0d549b-6f03-475a-9600-a35a099950d8",
    "": "8d116ece-1738-47d9-bd9c-172411e20b8f",
}
ITEMS = [BASIC, DATA, "データ通信料金 (plan-K)", DISCOUNT, SUPPORT]
MAPPING = parse_mapping(
    "customer:\n  column: customer\n  subscriptions:\n"
    + "".join(
        f"    '{name.replace(chr(39), chr(39) * 2)}': {{subscription: '{sub}'}}\n" for name, sub in CUSTOMERS.items()
    )
    + "items:\n"
    + "  - {match: 'データ通信料金 *', resource: 'a170b338-3926-4059-b28c-105d1fb17c23'}\n"  # two items, one resource
    + "  - {match: '*', resource: '90c192cf-d3ac-44af-8f21-ddb66cad4a26'}\n",
    "property-mapping.yaml",
)
NONE = MAPPING.model_copy(update={"aggregation": "none"})


def number(places: int, low: int, high: int) -> st.SearchStrategy[str]:
    values = st.decimals(min_value=low, max_value=high, places=places, allow_nan=False, allow_infinity=False)
    return values.map(lambda value: format(value, "f"))


NUMBER = st.integers(0, 6).flatmap(lambda places: number(places, -100_000, 100_000))
DATE = st.one_of(st.just("202610"), st.integers(1, 31).map(lambda day: f"202610{day:02d}"))
ROW = st.fixed_dictionaries(
    {
        "imsi": st.sampled_from(["", IMSI_1, IMSI_2]),
        "date": DATE,
        "billItemName": st.sampled_from(ITEMS),
        "unitPrice": st.one_of(st.just(""), NUMBER),
        "quantity": st.one_of(st.just(""), NUMBER),
        "amount": NUMBER,
        "customer": st.sampled_from(sorted(CUSTOMERS)),
        "name": st.text(alphabet='ab ,"\r\né', max_size=6),
        "groupName": st.sampled_from(["Sensors, Tokyo", "物流トラッカー", ""]),
    }
)
COLUMNS = ["imsi", "date", "billItemName", "unitPrice", "quantity", "amount", "customer", "name", "groupName"]


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=40), order=st.permutations(COLUMNS), bom=st.booleans())
def test_no_amount_is_lost_or_made_up_in_either_aggregation(rows, order, bom):
    # Given any file of mapped rows (any column order, extra columns, quoted fields, both date forms), each
    # amount its unitPrice × quantity where it has both
    rows = [consistent(dict(row)) for row in rows]
    content = billing_csv(rows, header=order, bom=bom)
    csv_total = sum((Decimal(r["amount"]) for r in rows), Decimal(0))
    by_customer: dict[str, Decimal] = {}
    for r in rows:
        by_customer[r["customer"]] = by_customer.get(r["customer"], Decimal(0)) + Decimal(r["amount"])
    for the_mapping in (MAPPING, NONE):
        # When it is planned
        result = plan_import(io.BytesIO(content), month="202610", currency="JPY", mapping=the_mapping)
        # Then Σ totalPrice is Σ amount, exactly, and so is each customer's share
        assert result.problems == []
        assert result.rows == len(rows)
        assert result.charges_sum == result.csv_sum == csv_total
        per_subscription: dict[str, Decimal] = {}
        for charge in result.charges:
            per_subscription[charge.subscription_id] = (
                per_subscription.get(charge.subscription_id, 0) + charge.total_price
            )
        expected = {CUSTOMERS[customer]: total for customer, total in by_customer.items()}
        assert per_subscription == expected
        assert result.per_customer == by_customer
    # and aggregation none has one charge per row
    assert len(result.charges) == len(rows)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet='ab,"\r\n é', max_size=60))
def test_the_fast_split_reads_any_text_as_csv_reader_does(text):
    # Given any text (well-formed CSV or not)
    expected = []
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        expected.append((start, fields))
    # When split by the importer's reader
    actual = list(iter_records(io.StringIO(text, newline="")))
    # Then the records and their first lines are csv.reader's
    assert actual == expected


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(-(10**38), 10**38), st.integers(-(10**38), 10**38), st.booleans()), max_size=30)
)
def test_packed_sums_unpack_to_the_sums(rows):
    total = sum(pack(amount, quantity, has_quantity=has) for amount, quantity, has in rows)
    assert unpack(total) == (
        sum(amount for amount, _, _ in rows),
        sum(quantity for _, quantity, _ in rows),
        len(rows),
        sum(not has for _, _, has in rows),
    )
