"""``soracharge mapping draft``'s logic: a billing CSV read once, exactly, into a mapping skeleton."""

from __future__ import annotations

import fnmatch
import io
import re
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from soracharge.errors import InvalidInputError, MappingError
from soracharge.logic.charges import plan_import
from soracharge.logic.mapping_draft import (
    Draft,
    draft_mapping,
    glob_escape,
    item_entries,
    rank_customer_columns,
    summarize_billing_csv,
)
from soracharge.models.mapping import Mapping, parse_mapping
from soracharge_local.simulators.soracom_data import generate_billing_csv

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {"jp": REPO / "examples" / "mapping.example.yaml", "g": REPO / "examples" / "mapping.global.example.yaml"}
CURRENCY = {"jp": "JPY", "g": "USD"}
MONTH = "202610"
PLACEHOLDER = re.compile(r'"FILL-IN:(?:[^"\\]|\\.)*"')

HAND_WRITTEN = (
    "\ufeffimsi,vpgId,date,billItemName,unitPrice,quantity,amount,name,customer,groupName\r\n"
    '440103000000001,,20261001,基本料金 (plan-D),0.1,1,0.1,s1,"Acme, Inc.","Sensors, Tokyo"\r\n'
    '440103000000001,,20261002,基本料金 (plan-D),0.2,1,0.2,s1,"Acme, Inc.","Sensors, Tokyo"\r\n'
    '440103000000002,,20261001,基本料金 (plan-K),10,1,10,s2,東京ガス,"Sensors, Tokyo"\r\n'
    '440103000000002,,202610,"ボリュームディスカウント ""IoT スターター, 10%""",-1,1,-1,s2,東京ガス,'
    '"Sensors, Tokyo"\r\n'
    '440103000000003,,202610,"ボリュームディスカウント ""Fleet,\r\n 5%""",-0.5,1,-0.5,s3,東京ガス,\r\n'
    ",,202610,サポート月額料金 (Business),3000,1,3000,,,\r\n"
).encode()


def summary_of(data: bytes, source: str = "bill.csv"):
    return summarize_billing_csv(io.BytesIO(data), source)


def draft_of(data: bytes, old: Mapping | None = None, old_source: str = "old.yaml") -> Draft:
    return draft_mapping(summary_of(data), old, old_source)


def filled(text: str) -> str:
    """The draft with every placeholder filled in as a person does: a fresh UUID for each CloudBlue id, a customer
    of the CSV for each device with none."""

    def value(found: re.Match[str]) -> str:
        return '"Acme Logistics"' if "the customer (a key of subscriptions)" in found.group(0) else f'"{uuid.uuid4()}"'

    return PLACEHOLDER.sub(value, text)


def example(coverage: str) -> Mapping:
    path = EXAMPLES[coverage]
    return parse_mapping(path.read_text(encoding="utf-8"), str(path))


def error_of(data: bytes) -> str:
    with pytest.raises(InvalidInputError) as raised:
        summary_of(data)
    return str(raised.value)


# -- reading the CSV ------------------------------------------------------------------------------


def test_a_hand_written_csv_with_bom_crlf_quoted_commas_and_line_breaks_is_totalled_exactly():
    summary = summary_of(HAND_WRITTEN)
    assert summary.rows == 6
    assert summary.total.amount == Decimal("3008.8")
    assert summary.items["基本料金 (plan-D)"].amount == Decimal("0.3")  # 0.1 + 0.2 exactly, never a float
    assert summary.items["基本料金 (plan-D)"].rows == 2
    assert 'ボリュームディスカウント "Fleet,\r\n 5%"' in summary.items
    assert [column.name for column in summary.columns] == ["name", "customer", "groupName"]  # BOM stripped
    customer = summary.column("customer")
    assert customer is not None
    assert customer.values["Acme, Inc."].amount == Decimal("0.3")
    assert customer.values["東京ガス"].rows == 3
    assert customer.values[""].amount == Decimal(3000)


def test_the_simulator_csv_is_totalled_to_its_exact_sum():
    for coverage in ("jp", "g"):
        billing = generate_billing_csv(MONTH, coverage=coverage, sims=12)
        summary = summary_of(billing.content)
        assert summary.rows == billing.rows
        assert summary.total.amount == billing.total
        assert sum((tally.amount for tally in summary.items.values()), Decimal(0)) == billing.total


def test_lf_line_ends_and_no_bom_read_the_same():
    lf = HAND_WRITTEN.decode().removeprefix("\ufeff").replace("\r\n", "\n").encode()
    assert summary_of(lf).total.amount == summary_of(HAND_WRITTEN).total.amount
    assert summary_of(lf).rows == 6


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bill.csv: the file is empty: no header line"),
        (
            b"\r\nbillItemName,amount\r\nx,1\r\n",
            "bill.csv: line 1 is blank: the header (the columns' names) must be the file's first line",
        ),
        (b"imsi,date,amount\r\n1,202610,1\r\n", "bill.csv: line 1: no 'billItemName' column"),
        (b"imsi,date,billItemName\r\n1,202610,x\r\n", "bill.csv: line 1: no 'amount' column"),
        (
            b'billItemName,amount,customer\r\n"a\r\nb",1,x\r\nc,2\r\n',
            "bill.csv: line 4: the row has 2 fields but the header has 3",
        ),
        (b"billItemName,amount\r\nx,1e3\r\n", "bill.csv: line 2: amount '1e3' is not a plain decimal number"),
        (b'billItemName,amount\r\n"x,1\r\n', "bill.csv: line 2"),
    ],
)
def test_a_file_that_is_not_a_readable_billing_csv_is_refused_naming_the_file_and_line(data, message):
    assert message in error_of(data)


# -- the draft ------------------------------------------------------------------------------------


def test_the_draft_is_valid_yaml_listing_every_customer_value_and_item_with_placeholders():
    billing = generate_billing_csv(MONTH, coverage="jp", sims=10)
    draft = draft_of(billing.content)
    data = yaml.safe_load(draft.text)
    assert data["customer"]["column"] == "customer"
    assert set(data["customer"]["subscriptions"]) == {"東京ガス", "Acme Logistics", "Northwind Traders"}
    assert data["customer"]["subscriptions"]["東京ガス"]["subscription"] == (
        'FILL-IN: CloudBlue subscription for customer "東京ガス"'
    )
    assert data["customer"]["default"]["subscription"].startswith("FILL-IN: ")
    names = list(summary_of(billing.content).items)
    matches = [item["match"] for item in data["items"]]
    assert all(sum(fnmatch.fnmatchcase(name, match) for match in matches) == 1 for name in names)
    assert "basicCharge-*" in matches  # a family of identifiers (plan-D, planX2): one glob
    assert all(item["resource"].startswith("FILL-IN: CloudBlue resource for bill item") for item in data["items"])
    assert data["customer"]["devices"] == {
        "7CDDE9000002": "FILL-IN: the customer (a key of subscriptions) of SoraCam camera 7CDDE9000002",
        "d000000000000001": "FILL-IN: the customer (a key of subscriptions) of LoRa device d000000000000001",
    }
    assert {key: data[key] for key in ("chargeType", "dateFormat", "aggregation", "packetSize")} == {
        "chargeType": "COS",
        "dateFormat": "date-time",
        "aggregation": "imsi-month",
        "packetSize": 500,
    }
    assert "<- chosen" in draft.text
    assert "Chosen: customer" in draft.text
    # 3 customers, the default, 2 devices, and one resource per item entry
    assert draft.placeholders == len(PLACEHOLDER.findall(draft.text)) == 3 + 1 + 2 + len(matches)


def test_the_customer_column_is_the_shared_one_with_most_values_never_the_sim_name_tag():
    summary = summary_of(generate_billing_csv(MONTH, coverage="jp", sims=10).content)
    ranked = [column.name for column in rank_customer_columns(summary)]
    assert ranked == ["customer", "groupName", "name"]
    assert "each value is on one SIM only: a SIM label, not a customer" in draft_mapping(summary).text


def test_parse_mapping_refuses_the_unfilled_draft_naming_every_placeholder_with_its_line():
    draft = draft_of(HAND_WRITTEN)
    with pytest.raises(MappingError) as raised:
        parse_mapping(draft.text, "draft.yaml")
    message = str(raised.value)
    assert message.startswith("draft.yaml: line ")
    problems = message.removeprefix("draft.yaml: ").split("; line ")
    assert len(problems) == draft.placeholders == len(PLACEHOLDER.findall(draft.text))
    lines = draft.text.splitlines()
    for problem in re.findall(r"line (\d+): ([^:]+): placeholder not filled in: FILL-IN: ", message):
        line, _ = problem
        assert "FILL-IN:" in lines[int(line) - 1]
    assert "customer.subscriptions['Acme, Inc.'].subscription: placeholder not filled in: FILL-IN:" in message
    assert "customer.default.subscription: placeholder not filled in: FILL-IN:" in message
    assert "items[0].resource: placeholder not filled in: FILL-IN: CloudBlue resource for bill item" in message


def test_a_placeholder_left_in_a_parsed_dict_is_refused_too():
    data = yaml.safe_load(draft_of(HAND_WRITTEN).text)
    with pytest.raises(MappingError, match=r"customer\.default\.subscription: placeholder not filled in: FILL-IN:"):
        parse_mapping(data, "draft")


@pytest.mark.parametrize("coverage", ["jp", "g"])
def test_the_draft_filled_with_uuids_maps_every_row_of_the_simulator_csv(coverage):
    billing = generate_billing_csv(MONTH, coverage=coverage, sims=10)
    mapping = parse_mapping(filled(draft_of(billing.content).text), "draft.yaml")
    plan = plan_import(io.BytesIO(billing.content), month=MONTH, currency=CURRENCY[coverage], mapping=mapping)
    assert plan.problems == []
    assert plan.csv_sum == billing.total
    assert plan.charges_sum == billing.total


def test_the_hand_written_draft_filled_in_maps_every_row():
    mapping = parse_mapping(filled(draft_of(HAND_WRITTEN).text), "draft.yaml")
    plan = plan_import(io.BytesIO(HAND_WRITTEN), month=MONTH, currency="JPY", mapping=mapping)
    assert plan.problems == []
    assert plan.charges_sum == Decimal("3008.8")


def test_item_families_become_one_glob_listing_the_items_it_covers():
    draft = draft_of(HAND_WRITTEN)
    matches = [item["match"] for item in yaml.safe_load(draft.text)["items"]]
    assert matches == ["基本料金 *", "ボリュームディスカウント*", "サポート月額料金 (Business)"]
    assert "# A family of 2 items, 3 rows, amount 10.3:" in draft.text
    assert "#   基本料金 (plan-K): 1 row, amount 10" in draft.text


def test_globs_cover_two_or_more_items_and_never_one_another_s():
    entries = item_entries(["A (x)", "A (y)", "B (z)", "無料利用枠 (データ 1GB)", "Free tier (a)", "Free tier (b)"])
    assert [(entry.match, entry.covers) for entry in entries] == [
        ("A *", ("A (x)", "A (y)")),
        ("B (z)", ("B (z)",)),
        ("無料利用枠 (データ 1GB)", ("無料利用枠 (データ 1GB)",)),
        ("Free tier *", ("Free tier (a)", "Free tier (b)")),
    ]
    assert glob_escape("a[1]*?") == "a[[]1][*][?]"
    (entry,) = item_entries(["x[1] (a)", "x[1] (b)"])
    assert entry.match == "x[[]1] *"


def test_candidate_values_are_capped_at_the_50_largest():
    rows = "".join(f"{440103000000000 + n},202610,Basic,1,1,{n + 1},c{n:03d}\r\n" for n in range(60))
    draft = draft_of(f"imsi,date,billItemName,unitPrice,quantity,amount,shop\r\n{rows}".encode())
    assert "... and 10 more" in draft.text
    assert '#     "c059": 1 row, amount 60' in draft.text
    assert '#     "c000"' not in draft.text  # the smallest are left out of the comment
    assert len(yaml.safe_load(draft.text)["customer"]["subscriptions"]) == 60  # but all are listed below


def test_a_csv_without_any_tag_column_gets_a_column_placeholder():
    draft = draft_of(b"imsi,date,billItemName,amount\r\n1,202610,Basic,1\r\n")
    assert yaml.safe_load(draft.text)["customer"] == {
        "column": "FILL-IN: the CSV column that names the customer",
        "subscriptions": {},
        "default": {"subscription": "FILL-IN: CloudBlue subscription for rows with no listed customer"},
    }


# -- --mapping OLD: only what is new ----------------------------------------------------------------


@pytest.mark.parametrize("coverage", ["jp", "g"])
def test_the_example_mapping_lacks_nothing_of_a_simulator_csv_of_its_coverage(coverage):
    billing = generate_billing_csv(MONTH, coverage=coverage, sims=10)
    draft = draft_of(billing.content, example(coverage), "mapping.example.yaml")
    assert draft.nothing_new
    assert draft.text == (
        "# nothing new in bill.csv since mapping.example.yaml: every customer value and bill item is mapped\n"
    )


def test_an_added_customer_value_and_bill_item_are_exactly_what_is_new():
    content = generate_billing_csv(MONTH, coverage="jp", sims=10).content
    content += "440103000000099,,,,202610,SMS 受信料金,1,5,5,センサー 99,Contoso,\r\n".encode()
    draft = draft_of(content, example("jp"), "mapping.example.yaml")
    assert (draft.customer_values, draft.bill_items, draft.placeholders) == (1, 1, 2)
    assert draft.text.startswith("# 1 new customer value, 1 new bill item since mapping.example.yaml\n")
    data = yaml.safe_load(draft.text)
    assert data == {
        "customer": {
            "column": "customer",
            "subscriptions": {"Contoso": {"subscription": 'FILL-IN: CloudBlue subscription for customer "Contoso"'}},
        },
        "items": [{"match": "SMS 受信料金", "resource": 'FILL-IN: CloudBlue resource for bill item "SMS 受信料金"'}],
    }
    assert "go to mapping.example.yaml's default" in draft.text
    assert "8d116ece-1738-47d9-bd9c-172411e20b8f" in draft.text


def test_without_a_default_in_old_the_empty_customer_value_is_new_too():
    old = parse_mapping(
        "customer: {column: customer, subscriptions:"
        ' {"東京ガス": {subscription: "6513270e-269e-4d37-b2a7-4de452e6b438"}}}\n'
        'items: [{match: "*", resource: "90c192cf-d3ac-44af-8f21-ddb66cad4a26"}]\n',
        "old.yaml",
    )
    draft = draft_of(HAND_WRITTEN, old)
    assert (draft.customer_values, draft.bill_items) == (2, 0)  # "Acme, Inc." and the empty value
    data = yaml.safe_load(draft.text)
    assert set(data["customer"]["subscriptions"]) == {"Acme, Inc."}
    assert data["customer"]["default"]["subscription"].startswith("FILL-IN:")
    assert "items" not in data
    assert "old.yaml has no customer default" in draft.text


def test_old_mapping_s_customer_column_missing_from_the_csv_is_refused():
    old = example("jp").model_copy(update={"customer": example("jp").customer.model_copy(update={"column": "shop"})})
    with pytest.raises(InvalidInputError, match=r"bill\.csv: line 1: old\.yaml's customer\.column 'shop' is not in"):
        draft_of(HAND_WRITTEN, old)
