"""Costs no customer owns, shared out (logic/shares.py, the mapping's ``shared``): the shares add up to the shared
amount exactly, each share is a charge of its customer's subscription that says its basis, the report's plan
lists the split, and a cost that cannot be shared is refused before money moves."""

from __future__ import annotations

import io
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from soracharge.errors import MappingError
from soracharge.logic import guards
from soracharge.logic.billing_frame import FrameCharges
from soracharge.logic.charges import _python_plan, charge_hash, plan_import
from soracharge.logic.corrections import Allocation, write_differences
from soracharge.logic.shares import charged_per_customer, decimals_of, split
from soracharge.models.charges import ImportPlan, ProblemKind, SharedSplit, ShareLine
from soracharge.models.mapping import Mapping, parse_mapping

from tests.unit.import_core.builders import OneWay
from tests.unit.import_core.builders import plan as planned

MONTH = "202610"
SUB_TOKYO = "6513270e-269e-4d37-b2a7-4de452e6b438"
SUB_ACME = "9531985d-5d9d-49f8-9818-e811892f902b"
SUB_NORTH = "6b0d549b-6f03-475a-9600-a35a099950d8"
SUB_PROVIDER = "8d116ece-1738-47d9-bd9c-172411e20b8f"
RES_BASIC = "90c192cf-d3ac-44af-8f21-ddb66cad4a26"
RES_DATA = "a170b338-3926-4059-b28c-105d1fb17c23"
RES_VPG = "0cb1e29c-658c-4a14-95e6-0af593bd04cf"
RES_FREE = "92276658-1e27-41c0-8a6a-63ec24ede6a4"
RES_SUPPORT = "6b4cb242-4a23-4596-a217-beaddbc496cb"


def mapping(shared: str, default: bool = False) -> Mapping:
    return parse_mapping(
        f"""\
customer:
  column: customer
  subscriptions:
    "東京ガス": {{subscription: "{SUB_TOKYO}"}}
    "Acme Logistics": {{subscription: "{SUB_ACME}"}}
    "Northwind Traders": {{subscription: "{SUB_NORTH}"}}
{f'  default: {{subscription: "{SUB_PROVIDER}"}}' if default else ""}
items:
  - {{match: "basicCharge*", resource: "{RES_BASIC}"}}
  - {{match: "*DataCharge", resource: "{RES_DATA}", uom: bytes}}
  - {{match: "vpgBasicCharge*", resource: "{RES_VPG}", description: Soracom VPG}}
  - {{match: "freeTier*", resource: "{RES_FREE}"}}
  - {{match: "supportCharge", resource: "{RES_SUPPORT}"}}
shared:
{shared}
""",
        "mapping.yaml",
    )


HEADER = "imsi,vpgId,date,billItemName,unitPrice,quantity,amount,customer\r\n"
ROWS = [
    "440101,,202610,basicCharge-plan01s,330,1,330,東京ガス",
    "440101,,20261003,uploadDataCharge,0.0002,1000000,200,東京ガス",
    "440102,,202610,basicCharge-plan01s,330,1,330,Acme Logistics",
    "440102,,20261003,downloadDataCharge,0.0002,3000000,600,Acme Logistics",
    "440103,,202610,basicCharge-plan01s,330,1,330,Northwind Traders",
    ",vpg-0001,202610,vpgBasicCharge-typeE,1000,1,1000,",
    ",,202610,freeTierCharge,-0.0002,500000,-100,",
    ",,202610,supportCharge,3000,1,3000,",
]


def plan_of(chosen: Mapping, *rows: str) -> ImportPlan:
    data = (HEADER + "".join(f"{row}\r\n" for row in (rows or ROWS))).encode()
    return plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=chosen)


BY_AMOUNT = """\
  - {match: "vpgBasicCharge*", by: amount}
  - {match: "freeTier*", by: ["*DataCharge"]}
  - {match: "supportCharge", to: {subscription: "8d116ece-1738-47d9-bd9c-172411e20b8f"}}
"""


def test_the_vpg_and_the_free_tier_are_shared_out_exactly_and_support_goes_to_the_provider():
    plan = plan_of(mapping(BY_AMOUNT))
    assert plan.accepted, plan.problems
    assert plan.charges_sum == plan.csv_sum == Decimal(5690)
    vpg = {c.subscription_id: c for c in plan.charges if c.resource_id == RES_VPG}
    # basis: each customer's amount, 530 + 930 + 330 = 1790; 1000 JPY split in whole yen (largest remainder)
    assert {sub: c.total_price for sub, c in vpg.items()} == {
        SUB_TOKYO: Decimal(296),  # 296.09
        SUB_ACME: Decimal(520),  # 519.55 -> gets the unit left over (largest fraction .55)
        SUB_NORTH: Decimal(184),  # 184.36
    }
    assert vpg[SUB_ACME].description == "Soracom VPG (Acme Logistics's share by amount: 930 of 1790)"
    assert vpg[SUB_ACME].attributes == {
        "billItemName": "vpgBasicCharge-typeE",
        "month": MONTH,
        "share": "Acme Logistics",
    }
    assert all(c.ext_hash == charge_hash(c) for c in plan.charges)
    # the free tier by data usage only: Northwind used no data, so it gets no share of it
    free = {c.subscription_id: c.total_price for c in plan.charges if c.resource_id == RES_FREE}
    assert free == {SUB_TOKYO: Decimal(-25), SUB_ACME: Decimal(-75)}
    support = [c for c in plan.charges if c.resource_id == RES_SUPPORT]
    assert [(c.subscription_id, c.total_price) for c in support] == [(SUB_PROVIDER, Decimal(3000))]
    # the report's plan shows the split
    vpg_split, free_split = plan.shares
    assert (vpg_split.items, vpg_split.total, vpg_split.basis, vpg_split.basis_total) == (
        ["vpgBasicCharge-typeE"],
        Decimal(1000),
        "amount",
        Decimal(1790),
    )
    assert sum(line.amount for line in vpg_split.lines) == vpg_split.total
    assert free_split.basis == "*DataCharge"
    assert [(line.customer, line.basis, line.amount) for line in free_split.lines] == [
        ("Acme Logistics", Decimal(600), Decimal(-75)),
        ("東京ガス", Decimal(200), Decimal(-25)),
    ]
    assert plan.per_subscription == {
        SUB_TOKYO: Decimal(530 + 296 - 25),
        SUB_ACME: Decimal(930 + 520 - 75),
        SUB_NORTH: Decimal(330 + 184),
        SUB_PROVIDER: Decimal(3000),
    }


def test_a_cost_with_more_decimals_than_its_currency_is_shared_to_its_own_last_digit():
    # Given the VPG fee written to the tenth of a yen (JPY has no decimals of its own)
    plan = plan_of(mapping(BY_AMOUNT), *(row.replace("1000,1,1000", "1000.5,1,1000.5") for row in ROWS))
    # Then the shares are in tenths and add up to it exactly, none dropped by rounding to whole yen: of 1000.5 by
    # 530, 930 and 330 of 1790, 296.236, 519.804 and 184.452, the tenth left over goes to the largest remainder
    vpg = {c.subscription_id: c.total_price for c in plan.charges if c.resource_id == RES_VPG}
    assert vpg == {SUB_TOKYO: Decimal("296.2"), SUB_ACME: Decimal("519.8"), SUB_NORTH: Decimal("184.5")}
    assert sum(vpg.values()) == Decimal("1000.5")
    assert plan.charges_sum == plan.csv_sum == Decimal("5690.5")


QUOTED = '440104,,202610,basicCharge-plan01s,330,1,330,"Acme ""Ltd"" \\ Co"'


@pytest.mark.parametrize(("rows", "default"), [(ROWS, False), ([*ROWS, QUOTED], True)])
def test_the_fast_path_shares_and_routes_exactly_as_the_python_reader(rows, default):
    chosen = mapping(BY_AMOUNT, default=default)
    data = (HEADER + "".join(f"{row}\r\n" for row in rows)).encode()
    fast = plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=chosen)
    reference = _python_plan(io.BytesIO(data), MONTH, "JPY", chosen, "", "")
    assert isinstance(fast.charges, FrameCharges), "shared costs stay on the fast path"
    assert reference.accepted, reference.problems
    assert [c.model_dump() for c in fast.charges] == [c.model_dump() for c in reference.charges]
    assert (fast.shares, fast.per_subscription, fast.per_customer) == (
        reference.shares,
        reference.per_subscription,
        reference.per_customer,
    )
    assert len(reference.shares[0].lines) == 3 + default  # a customer that maps to the default shares too


def test_the_same_file_and_mapping_give_the_same_shares_and_ids_every_time():
    first, again = plan_of(mapping(BY_AMOUNT)), plan_of(mapping(BY_AMOUNT))
    assert [c.model_dump() for c in first.charges] == [c.model_dump() for c in again.charges]
    assert len({c.ext_charge_id for c in first.charges}) == len(first.charges)


def test_a_cost_nobody_has_a_basis_for_is_refused_naming_it_and_nothing_is_sent():
    only_vpg = mapping('  - {match: "vpgBasicCharge*", by: ["uploadDataCharge"]}', default=True)
    plan = plan_of(only_vpg, ROWS[0], ROWS[5])
    assert not plan.accepted
    (problem,) = plan.problems
    assert problem.kind is ProblemKind.SETTING
    assert "cannot share 'vpgBasicCharge-typeE' (1000 JPY) by uploadDataCharge" in problem.message
    assert len(plan.charges) == 0


def test_every_cost_nobody_has_a_basis_for_is_named_not_only_the_first():
    neither = mapping(
        '  - {match: "vpgBasicCharge*", by: ["satelliteCharge"]}\n  - {match: "freeTier*", by: ["smsCharge"]}',
        default=True,
    )
    plan = plan_of(neither, ROWS[0], ROWS[5], ROWS[6])
    assert [p.message for p in plan.problems] == [
        "cannot share 'vpgBasicCharge-typeE' (1000 JPY) by satelliteCharge: no customer has a positive amount of it "
        "in this file (send them `to` a subscription instead)",
        "cannot share 'freeTierCharge' (-100 JPY) by smsCharge: no customer has a positive amount of it in this "
        "file (send them `to` a subscription instead)",
    ]


def test_a_row_no_customer_owns_without_a_rule_or_default_is_still_refused():
    plan = plan_of(mapping('  - {match: "vpgBasicCharge*", by: amount}'))
    assert not plan.accepted
    assert {p.value for p in plan.problems if p.kind is ProblemKind.UNMAPPED_CUSTOMER} == {""}
    assert {p.line for p in plan.problems} == {8, 9}  # the free tier and support rows, not the VPG's


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ('  - {match: "vpg*"}', "either `to`"),
        (f'  - {{match: "vpg*", by: amount, to: {{subscription: "{SUB_PROVIDER}"}}}}', "either `to`"),
        ('  - {match: "vpg*", by: []}', "list the bill items"),
        ('  - {match: "vpg*", by: total}', "by"),
    ],
)
def test_a_shared_rule_that_says_neither_or_both_ways_is_refused_naming_its_line(rule, words):
    with pytest.raises(MappingError, match=r"line \d+: shared\[0\]") as raised:
        mapping(rule)
    assert words in str(raised.value)


@given(
    total=st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False, allow_infinity=False),
    weights=st.lists(
        st.decimals(min_value="0.01", max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=12,
    ),
)
def test_shares_add_up_exactly_and_each_is_within_one_unit_of_its_exact_quota(total, weights):
    named = {f"c{index:02d}": weight for index, weight in enumerate(weights)}
    shares = split(total, named, 2)
    assert sum(shares.values()) == total
    whole = sum(named.values())
    for customer, share in shares.items():
        quota = Fraction(total) * Fraction(named[customer]) / Fraction(whole)
        assert abs(Fraction(share) - quota) < Fraction(1, 100)
        assert share == share.quantize(Decimal("0.01"))
    assert shares == split(total, dict(reversed(named.items())), 2), "the order customers come in changes nothing"


# -- corrections of a month whose costs are shared ------------------------------------------------------------


def _net(*plans: ImportPlan) -> dict[tuple[str, str], Decimal]:
    """What CloudBlue rates per subscription and resource once every plan's charges are in."""
    net: dict[tuple[str, str], Decimal] = {}
    for plan in plans:
        for charge in plan.charges:
            key = (charge.subscription_id, charge.resource_id)
            net[key] = net.get(key, Decimal(0)) + charge.total_price
    return {key: amount for key, amount in net.items() if amount}


def _differences(imported: bytes, corrected: bytes, allocation: Allocation | None) -> bytes:
    sink = io.StringIO()
    write_differences([("i.csv", io.BytesIO(imported))], ("c.csv", io.BytesIO(corrected)), sink, allocation=allocation)
    return sink.getvalue().encode()


def test_a_correction_written_with_the_mapping_rates_the_month_exactly_as_the_corrected_bill():
    chosen = mapping(BY_AMOUNT)
    imported = (HEADER + "".join(f"{row}\r\n" for row in ROWS)).encode()
    # corrected: Acme's download was 1000 JPY, not 600, and the VPG cost 1200: every share moves
    rows = [row.replace("3000000,600", "5000000,1000").replace("1000,1,1000", "1200,1,1200") for row in ROWS]
    corrected = (HEADER + "".join(f"{row}\r\n" for row in rows)).encode()
    differences = _differences(imported, corrected, Allocation(chosen, MONTH, "JPY"))

    diff_plan = plan_import(io.BytesIO(differences), month=MONTH, currency="JPY", mapping=chosen, id_suffix="a1")
    assert diff_plan.accepted, diff_plan.problems
    assert diff_plan.shares == [], "differences share nothing again: each customer's share moved already"
    assert _net(plan_of(chosen), diff_plan) == _net(plan_import(io.BytesIO(corrected), month=MONTH, currency="JPY",
                                                                 mapping=chosen))  # fmt: skip


def test_differences_written_without_the_mapping_are_refused_at_import_naming_the_shared_cost():
    chosen = mapping(BY_AMOUNT)
    imported = (HEADER + "".join(f"{row}\r\n" for row in ROWS)).encode()
    corrected = imported.replace(b"1000,1,1000", b"1200,1,1200").replace(b"500000,-100", b"600000,-120")
    differences = _differences(imported, corrected, None)
    for plan in (
        plan_import(io.BytesIO(differences), month=MONTH, currency="JPY", mapping=chosen),
        _python_plan(io.BytesIO(differences), MONTH, "JPY", chosen, "", ""),
    ):
        assert not plan.accepted
        (problem,) = plan.problems
        assert problem.kind is ProblemKind.SETTING
        assert problem.message == (
            "these differences hold costs no customer owns that the mapping shares out ('freeTierCharge', "
            "'vpgBasicCharge-typeE'): "
            "differences are no basis to share them by. Write them again with `soracharge correction --mapping "
            "MAPPING` (it compares each customer's share), or send such rows `to` a subscription"
        )
        assert len(plan.charges) == 0


def test_a_whole_bill_imported_beside_the_first_is_shared_by_its_own_customers():
    # (a second bill for the month, or a bill whose bytes a misfiled copy took: it is no differences file)
    plan = plan_import(
        io.BytesIO((HEADER + "".join(f"{row}\r\n" for row in ROWS)).encode()),
        month=MONTH,
        currency="JPY",
        mapping=mapping(BY_AMOUNT),
        id_suffix="a0123456789ab",
    )
    assert plan.accepted
    (vpg,) = [split for split in plan.shares if split.items == ["vpgBasicCharge-typeE"]]
    assert sum(line.amount for line in vpg.lines) == Decimal(1000)


def test_what_goes_to_the_default_is_what_no_rule_shares_or_sends():
    rules = (
        '  - {match: "vpgBasicCharge*", by: amount}\n'
        + f'  - {{match: "supportCharge", to: {{subscription: "{SUB_NORTH}"}}}}'
    )
    chosen = mapping(rules, default=True)
    plan = plan_of(chosen)
    assert plan.unowned_per_item == {
        "vpgBasicCharge-typeE": Decimal(1000),
        "freeTierCharge": Decimal(-100),
        "supportCharge": Decimal(3000),
    }
    # only the free tier (no rule) goes to the default; the report says so, not the CSV's 3,900 with no customer
    assert [(d.value, d.amount) for d in guards.defaulted(plan, chosen)] == [("", Decimal(-100))]
    # what each customer is charged: its shares of the VPG included; no one keeps the rest (support is sent on)
    assert plan.per_customer == {
        "東京ガス": Decimal(530 + 296),
        "Acme Logistics": Decimal(930 + 520),
        "Northwind Traders": Decimal(330 + 184),
        "": Decimal(2900),
    }
    assert sum(plan.per_customer.values()) == plan.csv_sum


def test_differences_of_a_changed_basis_written_without_the_mapping_are_refused_as_the_shares_did_not_move():
    # Only Acme's download changed: no shared row differs, but Acme's basis (and so every VPG share) did
    chosen = mapping(BY_AMOUNT)
    imported = (HEADER + "".join(f"{row}\r\n" for row in ROWS)).encode()
    corrected = imported.replace(b"3000000,600", b"5000000,1000")
    differences = _differences(imported, corrected, None)
    plan = plan_import(io.BytesIO(differences), month=MONTH, currency="JPY", mapping=chosen)
    (problem,) = plan.problems
    assert problem.message.startswith("these differences were written without the mapping, which shares costs out")
    assert len(plan.charges) == 0
    # the same correction written with the mapping moves each share with the basis
    allocated = _differences(imported, corrected, Allocation(chosen, MONTH, "JPY"))
    again = plan_import(io.BytesIO(allocated), month=MONTH, currency="JPY", mapping=chosen, id_suffix="a1")
    assert again.accepted, again.problems
    assert _net(plan_of(chosen), again) == _net(
        plan_import(io.BytesIO(corrected), month=MONTH, currency="JPY", mapping=chosen)
    )
    # and imported in another currency than it was compared in, it is refused
    usd = plan_import(io.BytesIO(allocated), month=MONTH, currency="USD", mapping=chosen)
    assert "compared the shares in JPY, and the month's bill is in USD" in usd.problems[0].message


def test_a_correction_reads_a_header_with_spaces_as_the_import_does_and_loses_no_customer_row():
    chosen = mapping(BY_AMOUNT)
    spaced = HEADER.replace(",customer", ", customer ")
    rows = [*ROWS, "440102,,202610,vpgBasicCharge-typeE,500,1,500,Acme Logistics"]
    imported = (spaced + "".join(f"{row}\r\n" for row in rows)).encode()
    corrected = imported.replace(b"500,1,500,Acme", b"700,1,700,Acme")
    differences = _differences(imported, corrected, Allocation(chosen, MONTH, "JPY"))
    plan = plan_import(io.BytesIO(differences), month=MONTH, currency="JPY", mapping=chosen, id_suffix="a1")
    assert plan.accepted, plan.problems
    assert plan.csv_sum == Decimal(200)  # Acme's own VPG row: +200, and the shares its basis moved
    assert _net(plan_of(chosen, *rows), plan) == _net(
        plan_import(io.BytesIO(corrected), month=MONTH, currency="JPY", mapping=chosen)
    )


def test_a_mapping_listing_the_empty_customer_beside_shared_rules_is_refused():
    with pytest.raises(MappingError, match=r'lists the value "" .* which one wins is a guess'):
        parse_mapping(
            f'customer: {{column: customer, subscriptions: {{"": {{subscription: "{SUB_PROVIDER}"}}}}}}\n'
            f'items: [{{match: "*", resource: "{RES_VPG}"}}]\n'
            'shared: [{match: "vpg*", by: amount}]\n',
            "mapping.yaml",
        )


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ('  - {match: "vpgbasicCharge*", by: amount}', "shared[0].match 'vpgbasicCharge*' matches no bill item"),
        (
            '  - {match: "vpgBasicCharge*", by: ["uploadDataCharge", "DownloadDataCharge"]}',
            "shared[0].by[1] 'DownloadDataCharge' matches no bill item, and the CSV has 'downloadDataCharge'",
        ),
    ],
)
def test_a_shared_rule_with_a_typo_is_refused_before_it_sends_a_cost_elsewhere(rules, words):
    data = (HEADER + "".join(f"{row}\r\n" for row in ROWS)).encode()
    chosen = mapping(rules, default=True)
    for stream in (io.BytesIO(data), OneWay(data)):
        plan = plan_import(stream, month=MONTH, currency="JPY", mapping=chosen)
        assert not plan.accepted
        assert plan.problems[0].kind is ProblemKind.NEAR_MISS
        assert plan.kinds == {ProblemKind.NEAR_MISS: 1}  # what the report's count by kind says
        assert plan.problem_count == len(plan.problems) == 1
        assert words in plan.problems[0].message, plan.problems[0].message


@pytest.mark.parametrize(
    "weights",
    [{}, {"a": Decimal(0), "b": Decimal(1)}, {"a": Decimal(-1), "b": Decimal(2)}],
    ids=["no customer", "a zero basis", "a negative basis"],
)
def test_a_split_over_no_customer_or_a_basis_not_positive_is_refused_by_name(weights):
    # The callers share only over positive bases; a caller that did not would move money by a basis of nothing
    with pytest.raises(ValueError, match=r"^every weight must be positive, and there must be one$"):
        split(Decimal(100), weights, 0)


def test_a_total_finer_than_the_unit_it_is_split_in_is_refused_by_name():
    # The callers split in the pool's own decimals or more (decimals_of); one that did not would round money
    with pytest.raises(ValueError, match=r"^100\.125 has more than 2 decimals$"):
        split(Decimal("100.125"), {"a": Decimal(1), "b": Decimal(2)}, 2)


def test_a_total_of_38_digits_is_split_exactly_whatever_the_caller_s_decimal_context():
    total = Decimal("12345678901234567890.123456789012345678")  # past the default context's 28 digits
    shares = split(total, {"a": Decimal(1), "b": Decimal(2)}, 18)
    assert shares == {
        "a": Decimal("4115226300411522630.041152263004115226"),
        "b": Decimal("8230452600823045260.082304526008230452"),
    }
    assert Fraction(shares["a"]) + Fraction(shares["b"]) == Fraction(total)


def test_a_whole_operators_bill_shares_nothing_and_its_differences_need_no_allocation():
    """``customer.operators``: every row of that operator's bill is its customer's, the VPG and support fee
    too; a correction's differences of it are imported as they are, with or without the mapping."""
    data = mapping(BY_AMOUNT).model_dump(by_alias=True, exclude_none=True, mode="json")
    data["customer"]["operators"] = {"OP0000000003": "Northwind Traders"}
    whole = parse_mapping(data, "mapping.yaml").for_operator("OP0000000003")
    assert (whole.shares_out, whole.for_operator(None).shares_out) == (False, False)
    assert parse_mapping(data, "mapping.yaml").shares_out
    rows = [row.rsplit(",", 1)[0] + "," for row in ROWS]  # its SIMs untagged: the operator says whose they are
    imported = (HEADER + "".join(f"{row}\r\n" for row in rows)).encode()
    plan = plan_import(io.BytesIO(imported), month=MONTH, currency="JPY", mapping=whole)
    assert plan.accepted, plan.problems
    assert plan.shares == []
    assert {c.subscription_id for c in plan.charges} == {SUB_NORTH}
    corrected = imported.replace(b"1000,1,1000", b"1200,1,1200")
    differences = _differences(imported, corrected, None)
    for diff_plan in (
        plan_import(io.BytesIO(differences), month=MONTH, currency="JPY", mapping=whole, id_suffix="a1"),
        _python_plan(io.BytesIO(differences), MONTH, "JPY", whole, "", "a1"),
    ):
        assert diff_plan.accepted, diff_plan.problems
        (charge,) = diff_plan.charges
        assert (charge.subscription_id, charge.resource_id, charge.total_price) == (SUB_NORTH, RES_VPG, Decimal(200))


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "python-reader"])
def test_a_rule_sharing_two_bill_items_makes_one_share_each_named_by_both_items_at_quantity_one(fast):
    rows = [*ROWS, ",vpg-0002,202610,vpgBasicCharge-typeF,790,1,790,"]
    chosen = mapping('  - {match: "vpgBasicCharge*", by: amount}\n  - {match: "freeTier*", by: amount}', default=True)
    data = (HEADER + "".join(f"{row}\r\n" for row in rows)).encode()
    plan = planned(data, chosen, fast=fast)
    assert plan.accepted, plan.problems
    vpg = [c for c in plan.charges if c.resource_id == RES_VPG]
    assert sum(c.total_price for c in vpg) == Decimal(1790)
    assert {(c.attributes or {})["billItemName"] for c in vpg} == {"vpgBasicCharge-typeE | vpgBasicCharge-typeF"}
    assert {c.amount for c in vpg} == {Decimal(1)}
    assert all(c.unit_price == c.total_price for c in vpg)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "python-reader"])
def test_bill_items_of_one_resource_shared_by_two_rules_are_refused_naming_both(fast):
    # Given two VPG items of one resource, each shared by a rule of its own (one share per resource is one charge
    # per customer: it cannot say two bases)
    rows = [*ROWS, ",vpg-0002,202610,vpgBasicCharge-typeF,790,1,790,"]
    chosen = mapping(
        '  - {match: "vpgBasicCharge-typeE", by: amount}\n  - {match: "vpgBasicCharge-typeF", by: ["*DataCharge"]}',
        default=True,
    )
    # When planned
    plan = planned((HEADER + "".join(f"{row}\r\n" for row in rows)).encode(), chosen, fast=fast)
    # Then the file is refused, naming both items, their resource and what to do; nothing is sent
    assert not plan.accepted
    assert [(p.kind, p.message) for p in plan.problems] == [
        (
            ProblemKind.SETTING,
            f"bill items 'vpgBasicCharge-typeE', 'vpgBasicCharge-typeF' go to one resource ({RES_VPG}) but are "
            "shared by different rules of the mapping's `shared`: give them one rule, or resources of their own",
        )
    ]
    assert len(plan.charges) == 0


@pytest.mark.parametrize("default", [True, False], ids=["with-a-default", "without-a-default"])
def test_a_refused_file_with_shared_costs_lists_its_own_problem_alone_and_no_split(default):
    # Given a file refused for one row of an item no rule maps, under rules that share the VPG and the free tier
    # and send support to the provider (a default subscription or none for the rest)
    plan = plan_of(mapping(BY_AMOUNT, default=default), *ROWS, "440109,,202610,mysteryCharge,1,1,1,東京ガス")

    # Then its one problem is that row's, it shares nothing, and each subscription's figure leaves out the
    # costs the rules would have shared (support goes where its rule sends it)
    assert [(p.line, p.value) for p in plan.problems] == [(10, "mysteryCharge")]
    assert plan.shares == []
    assert plan.per_subscription == {
        SUB_TOKYO: Decimal(530),
        SUB_ACME: Decimal(930),
        SUB_NORTH: Decimal(330),
        SUB_PROVIDER: Decimal(3000),
    }


def test_a_refused_file_counts_a_customers_own_row_of_a_shared_item_to_that_customer():
    # A VPG a customer's tag names is that customer's cost, though a rule shares the VPG nobody owns: in a
    # refused file too, where each subscription's figure is all a person sees
    plan = plan_of(
        mapping(BY_AMOUNT, default=True),
        *ROWS,
        ",vpg-0002,202610,vpgBasicCharge-typeE,100,1,100,Acme Logistics",
        "440109,,202610,mysteryCharge,1,1,1,東京ガス",
    )
    assert [(p.line, p.value) for p in plan.problems] == [(11, "mysteryCharge")]
    assert plan.per_subscription[SUB_ACME] == Decimal(930 + 100)


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "python-reader"])
def test_a_customer_whose_basis_is_under_one_yen_still_gets_its_share(fast):
    # Given Northwind's only usage half a yen, and the VPG shared by amount
    rows = [ROWS[0], ROWS[2], "440103,,20261003,uploadDataCharge,0.0002,2500,0.5,Northwind Traders", ROWS[5]]
    chosen = mapping('  - {match: "vpgBasicCharge*", by: amount}', default=True)
    plan = planned((HEADER + "".join(f"{row}\r\n" for row in rows)).encode(), chosen, fast=fast)
    assert plan.accepted, plan.problems
    # Then it is shared over all three, Northwind's half yen included (1000 x 0.5 / 660.5 = 0.76: 1 yen by the
    # largest remainder), and the shares add up to the fee
    [split] = plan.shares
    assert {line.customer: line.amount for line in split.lines} == {
        "Acme Logistics": Decimal(500),
        "Northwind Traders": Decimal(1),
        "東京ガス": Decimal(499),
    }


def test_a_currency_the_table_does_not_list_is_shared_in_hundredths():
    # Given a pool in pounds (not among JPY, USD, EUR): its smallest unit is taken as a hundredth
    assert decimals_of(Decimal("100"), "GBP") == 2
    assert decimals_of(Decimal("100.125"), "GBP") == 3  # the pool's own decimals when it shows more
    assert split(Decimal("100"), {"a": Decimal(1), "b": Decimal(2)}, decimals_of(Decimal("100"), "GBP")) == {
        "a": Decimal("33.33"),
        "b": Decimal("66.67"),
    }


def test_what_each_customer_is_charged_is_added_exactly_however_many_digits():
    # Given amounts of 30 significant digits (more than Decimal's default 28), and a share moved between them
    big = Decimal("123456789012345678901234567.891")
    pool = SharedSplit(
        items=["vpgBasicCharge-typeE"],
        resource="e5dbc3a6-7b8f-4a0c-9d9e-4f3a2b5c6d7e",
        total=Decimal("0.001"),
        basis="amount",
        basis_total=big,
        decimals=3,
        lines=[ShareLine(customer="a", subscription="s", basis=big, amount=Decimal("0.001"))],
    )
    charged = charged_per_customer({"": Decimal("0.001"), "a": big}, [pool])
    assert charged == {"": Decimal(0), "a": Decimal("123456789012345678901234567.892")}
