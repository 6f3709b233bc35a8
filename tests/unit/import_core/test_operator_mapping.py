"""``customer.operators``: a whole operator's bill given to one customer (models/mapping.py ``for_operator``).

Every row of such a bill is that customer's, its SIMs, its devices and the rows no customer owns alike
(no shared rule applies: nothing in the bill belongs to nobody); a row whose customer column names
another customer, or a device the mapping lists for another, is refused naming its line, on both readers.
A bill of an operator the mapping does not list, or of the stack's own, reads as it always did.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from soracharge.errors import MappingError
from soracharge.logic.billing_frame import FrameCharges
from soracharge.models.charges import ProblemKind
from soracharge.models.mapping import Mapping, parse_mapping

from tests.unit.import_core.test_devices import ROWS, SUB_ACME, SUB_TOKYO, both, csv_of, mapping

OPERATOR = "OP0000000003"


def with_operators(operators: dict[str, str], devices: dict[str, str] | None = None) -> Mapping:
    data = mapping().model_dump(by_alias=True, exclude_none=True, mode="json")
    data["customer"]["operators"] = operators
    data["shared"] = [{"match": "supportCharge", "by": "amount"}]  # moot in a whole operator's bill
    if devices:
        data["customer"]["devices"] = devices
    return parse_mapping(data, "mapping.yaml")


def test_every_row_of_the_operators_bill_is_its_customers_on_both_paths():
    rows = [row.replace("東京ガス", "Acme Logistics") for row in ROWS]
    chosen = with_operators({OPERATOR: "Acme Logistics"}).for_operator(OPERATOR)
    fast, reference = both(csv_of(*rows), chosen)
    assert isinstance(fast.charges, FrameCharges)
    assert [c.model_dump() for c in fast.charges] == [c.model_dump() for c in reference.charges]
    assert {c.subscription_id for c in reference.charges} == {SUB_ACME}
    assert reference.per_customer == {"Acme Logistics": Decimal(5510)} == fast.per_customer
    assert reference.shares == [] == fast.shares  # the support fee is the customer's, not shared


def test_a_row_naming_another_customer_in_the_operators_bill_is_refused_naming_its_line():
    chosen = with_operators({OPERATOR: "Acme Logistics"}).for_operator(OPERATOR)
    fast, reference = both(csv_of(*ROWS), chosen)
    assert not isinstance(fast.charges, FrameCharges)
    assert fast.problems == reference.problems
    lines = {(p.line, p.column, p.value, p.kind) for p in reference.problems}
    assert lines == {
        (2, "customer", "東京ガス", ProblemKind.UNMAPPED_CUSTOMER),
        (3, "customer", "東京ガス", ProblemKind.UNMAPPED_CUSTOMER),
        (6, "customer", "東京ガス", ProblemKind.UNMAPPED_CUSTOMER),
    }
    assert {p.message for p in reference.problems} == {
        f"the mapping's customer.operators gives operator {OPERATOR}'s bill to customer 'Acme Logistics', but column "
        "customer names '東京ガス': which customer pays is a guess"
    }
    assert len(fast.charges) == 0


@pytest.mark.parametrize(
    ("customer", "problems", "per_customer"),
    [
        # its column names nobody: the row is still the operator's customer's, refused for its imsi alone
        ("", [(3, "imsi", ProblemKind.VALUE)], {"Acme Logistics": Decimal(1000)}),
        # its column names another customer: that is said too, whatever its imsi; its amount is counted to the
        # customer its column names, as every refused row's
        (
            "東京ガス",
            [(3, "imsi", ProblemKind.VALUE), (3, "customer", ProblemKind.UNMAPPED_CUSTOMER)],
            {"Acme Logistics": Decimal(990), "東京ガス": Decimal(10)},
        ),
    ],
)
def test_a_row_whose_sim_cannot_be_told_in_the_operators_bill_is_still_the_operators_customers(
    customer, problems, per_customer
):
    chosen = with_operators({OPERATOR: "Acme Logistics"}).for_operator(OPERATOR)
    good = ROWS[2]
    fast, reference = both(csv_of(good, f"44x,,,202610,basicCharge-plan01s-active,10,1,10,{customer}"), chosen)
    assert fast.problems == reference.problems
    assert [(p.line, p.column, p.kind) for p in reference.problems] == problems
    assert reference.per_customer == per_customer == fast.per_customer


def test_a_device_listed_for_another_customer_in_the_operators_bill_is_refused():
    rows = [row.replace("東京ガス", "") for row in ROWS]
    chosen = with_operators({OPERATOR: "Acme Logistics"}, devices={"7CDDE9000002": "東京ガス"}).for_operator(OPERATOR)
    fast, reference = both(csv_of(*rows), chosen)
    assert fast.problems == reference.problems
    (problem,) = reference.problems
    assert problem.line == 6
    assert problem.message == (
        f"the mapping's customer.operators gives operator {OPERATOR}'s bill to customer 'Acme Logistics', but its "
        "customer.devices lists SoraCam camera 7CDDE9000002 for customer '東京ガス': which customer pays is a guess"
    )


@pytest.mark.parametrize("operator", [None, "OP0000000002"])
def test_the_stacks_own_bill_and_an_unlisted_operators_read_by_the_customer_column(operator):
    listed = with_operators({OPERATOR: "Acme Logistics"})
    assert listed.for_operator(operator) is listed
    fast, reference = both(csv_of(*ROWS), listed.for_operator(operator))
    assert reference.accepted
    assert {c.subscription_id for c in reference.charges} >= {SUB_TOKYO, SUB_ACME}
    assert fast.per_subscription == reference.per_subscription


@pytest.mark.parametrize(
    ("operators", "words"),
    [
        ({"OP12": "Acme Logistics"}, "'OP12' is not a Soracom operator id"),
        ({"op0000000003": "Acme Logistics"}, "is not a Soracom operator id"),
        ({OPERATOR: "Globex"}, "operator 'OP0000000003' names customer 'Globex', not one of customer.subscriptions"),
    ],
)
def test_a_mapping_listing_a_bad_operator_is_refused_naming_it(operators, words):
    with pytest.raises(MappingError, match=words):
        with_operators(operators)


def test_a_mapping_naming_operators_soracom_accounts_does_not_list_is_one_setting_problem_naming_each():
    from soracharge.logic.imports import _unlisted_operators
    from soracharge.models.accounts import parse_accounts
    from soracharge.models.imports import Problem

    accounts = parse_accounts(f'[{{"operator": "{OPERATOR}", "coverages": ["jp"]}}]')
    typed = with_operators({OPERATOR: "Acme Logistics", "OP0000000033": "Acme Logistics", "OP0000000044": "東京ガス"})
    assert _unlisted_operators(typed, accounts) == [
        Problem(
            column="operator",
            value="OP0000000033, OP0000000044",
            message=(
                "the mapping's customer.operators names OP0000000033, OP0000000044, which SoracomAccounts does not "
                f"list (it lists {OPERATOR}): a mistyped id would leave an operator's bill read by the customer "
                "column. Correct the id, or remove the operators no longer exported from the mapping"
            ),
            kind=ProblemKind.SETTING,
        )
    ]
    assert _unlisted_operators(with_operators({OPERATOR: "Acme Logistics"}), accounts) == []
    assert _unlisted_operators(typed, ())[0].message.endswith(
        "(it lists none): a mistyped id would leave an operator's bill read by the customer column. Correct the id, "
        "or remove the operators no longer exported from the mapping"
    )
