"""SoracomAccounts (models/accounts.py): the operators a stack exports besides its own, checked before
anything runs; each bill's keys, ledger scope and id mark; and the export refusing an operator not listed."""

from __future__ import annotations

import io

import pytest
from soracharge.errors import ConfigurationError, InvalidInputError
from soracharge.logic.charges import charge_id_suffix, plan_import
from soracharge.logic.export import export_key, request_account, start_account_exports
from soracharge.models.accounts import BillAccount, parse_accounts
from soracharge.models.export_flow import ExportRequest
from soracharge.models.mapping import parse_mapping
from soracharge.settings import CoverageSettings, load_settings

ACCOUNTS = parse_accounts(
    '[{"operator": "OP0000000002", "coverages": "jp,g", "switchUser": "soracharge"},'
    ' {"operator": "OP0000000003", "coverages": "g"}]'
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "SORACOM_ACCOUNTS is not JSON"),
        ('{"operator": "OP0000000002"}', "must be a JSON list"),
        ('[{"operator": "OP123"}]', r"0\.operator: String should match pattern"),
        ('[{"operator": "OP0000000002", "coverages": "eu"}]', "coverage must be 'jp'"),
        ('[{"operator": "OP0000000002", "switchuser": "x"}]', "switchuser: Extra inputs are not permitted"),
        ('[{"operator": "OP0000000002"}, {"operator": "OP0000000002", "coverages": "g"}]', "OP0000000002 twice"),
    ],
)
def test_a_bad_accounts_list_is_refused_before_anything_runs_naming_what_is_wrong(monkeypatch, text, words):
    monkeypatch.setenv("SORACOM_ACCOUNTS", text)
    with pytest.raises(ConfigurationError, match=f"SORACOM_ACCOUNTS: .*{words}"):
        load_settings(CoverageSettings)


@pytest.mark.parametrize("text", ["", "[]"])
def test_no_accounts_is_the_stacks_own_operator_only(monkeypatch, text):
    monkeypatch.setenv("SORACOM_ACCOUNTS", text)
    assert load_settings(CoverageSettings).accounts == ()


def test_each_bill_has_its_own_folder_scope_and_id_mark_and_the_stacks_own_keep_theirs():
    own, listed = BillAccount("g"), BillAccount("g", "OP0000000002")
    assert (own.folder, own.scope, own.id_suffix) == ("g", "g", "")
    assert (listed.folder, listed.scope, listed.id_suffix) == ("OP0000000002/g", "g#OP0000000002", "op0000000002")
    assert BillAccount.from_scope(listed.scope) == listed
    assert BillAccount.from_scope("jp") == BillAccount("jp")
    with pytest.raises(InvalidInputError, match="operator must be a Soracom operator id"):
        BillAccount.from_scope("jp#OP1")
    assert export_key("202611", "fe_1", "g", nested=True, operator="OP0000000002") == (
        "exports/202611/OP0000000002/g/fe_1.csv"
    )
    assert export_key("202611", "fe_1", "jp", nested=False) == "exports/202611/fe_1.csv"
    assert charge_id_suffix("jp") == ""
    assert charge_id_suffix("g", "a0123456789ab", operator="OP0000000002") == "g-op0000000002-a0123456789ab"


def test_an_additional_files_charges_of_a_listed_operator_keep_all_three_marks():
    mapping = parse_mapping(
        'customer: {column: customer, default: {subscription: "8d116ece-1738-47d9-bd9c-172411e20b8f"}}\n'
        'items: [{match: "*", resource: "90c192cf-d3ac-44af-8f21-ddb66cad4a26"}]\n',
        "m.yaml",
    )
    data = b"imsi,date,billItemName,amount,customer\r\n440101,20261101,basicCharge,10,\r\n"
    suffix = charge_id_suffix("g", "a0123456789ab", operator="OP0000000002")
    plan = plan_import(io.BytesIO(data), month="202611", currency="USD", mapping=mapping, id_suffix=suffix)
    (charge,) = plan.charges
    assert (charge.ext_charge_id or "").endswith("-g-op0000000002-a0123456789ab")


@pytest.mark.parametrize(
    ("coverage", "operator", "words"),
    [
        ("jp", "OP0000000009", "names operator OP0000000009, which is not one of this stack's accounts "
         r"\(SoracomAccounts lists OP0000000002, OP0000000003\)"),
        ("jp", "OP0000000003", "names operator OP0000000003 on Japan coverage, and SoracomAccounts lists it on "
         "Global coverage only"),
        (None, "OP0000000002", r'this stack exports jp and g: give "coverage"'),
    ],
)  # fmt: skip
def test_an_export_of_an_operator_or_coverage_not_listed_is_refused_naming_it(coverage, operator, words):
    with pytest.raises(InvalidInputError, match=words):
        request_account(coverage, operator, ("jp",), ACCOUNTS, "the execution's input")


def test_an_operator_of_one_coverage_needs_none_named():
    assert request_account(None, "OP0000000003", ("jp",), ACCOUNTS, "x") == BillAccount("g", "OP0000000003")
    assert request_account(None, None, ("jp",), ACCOUNTS, "x") == BillAccount("jp")


class Starter:
    def __init__(self) -> None:
        self.started: dict[str, dict[str, object]] = {}

    def start(self, state_machine_arn: str, name: str, payload: dict[str, object]) -> str:
        self.started.setdefault(name, payload)  # Step Functions: a name started twice is one execution
        return f"{state_machine_arn}:{name}"


def test_the_accounts_schedule_starts_one_export_per_operator_and_coverage_named_after_its_bill():
    starter = Starter()
    request = ExportRequest.model_validate({"scheduledTime": "2026-12-04T00:00:00Z"})
    first = start_account_exports(request, ACCOUNTS, starter, "arn:sm")
    again = start_account_exports(request, ACCOUNTS, starter, "arn:sm")
    assert first == again
    assert starter.started == {
        "export-202611-jp-OP0000000002": {"month": "202611", "coverage": "jp", "operator": "OP0000000002"},
        "export-202611-g-OP0000000002": {"month": "202611", "coverage": "g", "operator": "OP0000000002"},
        "export-202611-g-OP0000000003": {"month": "202611", "coverage": "g", "operator": "OP0000000003"},
    }


def test_a_listed_operators_amount_is_in_the_dashboards_series_and_in_its_own(monkeypatch, capsys):
    import json as json_
    from decimal import Decimal

    from soracharge.observability import Metric, add_amount

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Soracharge")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    add_amount(Metric.AMOUNT_IMPORTED, Decimal("12.5"), "USD", "g", "OP0000000002")
    add_amount(Metric.AMOUNT_IMPORTED, Decimal("3"), "JPY", "jp")
    blobs = [json_.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    series = [
        (blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0], blob.get("Operator"), blob["AmountImported"])
        for blob in blobs
    ]
    assert series == [
        (["service", "Currency", "Coverage"], None, [12.5]),
        (["service", "Currency", "Coverage", "Operator"], "OP0000000002", [12.5]),
        (["service", "Currency", "Coverage"], None, [3.0]),  # the stack's own: as before operators
    ]
