"""Many Soracom operators in one stack: each operator's bill of each coverage exported and imported once.

The whole template runs in moto with SoracomCoverageType jp,g and SoracomAccounts listing two more
operators, against one Soracom simulator per coverage host (each billing three operators: the
stack's own, one that trusts it for Switch User, one reached with its own AuthKey) and a CloudBlue
simulator that keeps repeated charges (as nothing in its published type forbids). The tests check
what a provider would: the CSVs' keys, the charges CloudBlue received for each of the six bills
(once each, ids never shared), each report balanced against its own bill, what the schedule
delivered twice and a re-run do, and which operators are refused.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from soracharge.models.mapping import parse_mapping
from soracharge.models.months import shift_month
from soracharge_local.engine import CloudBlueAccess, LocalCloud, SoracomAccess
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator
from soracharge_local.simulators.soracom import SimulatedOperator

from tests import reference
from tests.integration.conftest import LAST_MONTH, SIM_AUTH_KEY, SIM_AUTH_KEY_ID
from tests.integration.test_import_flow import upload
from tests.integration.test_operations import rated
from tests.integration.test_reconciliation import csv_sum
from tests.planning import planned

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = {"jp": REPO / "examples" / "mapping.example.yaml", "g": REPO / "examples" / "mapping.global.example.yaml"}
CURRENCY = {"jp": "JPY", "g": "USD"}
SWITCHED, OWN_KEY = "OP0000000002", "OP0000000003"
OWN_AUTH_KEY = ("keyId-op3", "secret-op3-do-not-log")
ACCOUNTS = [
    {"operator": SWITCHED, "coverages": "jp,g", "switchUser": "soracharge"},
    {"operator": OWN_KEY, "coverages": "jp,g"},
]
#: The example mappings give OP0000000003's whole bill to this customer (customer.operators).
OWN_KEY_CUSTOMER = "Northwind Traders"


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, SoracomSimulator]]:
    """A Soracom host per coverage, each billing the stack's own operator and the two listed ones."""
    started: dict[str, SoracomSimulator] = {}
    try:
        for coverage in ("jp", "g"):
            primary = SoracomSimulator(coverage=coverage, auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY)
            operators = {
                SWITCHED: SimulatedOperator(trusts=frozenset({primary.operator_id})),
                # Its SIMs are all its end customer's (one operator per end customer), some tagged, some not.
                OWN_KEY: SimulatedOperator(customer=OWN_KEY_CUSTOMER, auth_key=OWN_AUTH_KEY, sims=5),
            }
            simulator = SoracomSimulator(
                coverage=coverage,
                auth_key_id=SIM_AUTH_KEY_ID,
                auth_key=SIM_AUTH_KEY,
                operators=operators,
                polls_until_ready=1,
            )
            simulator.start()
            started[coverage] = simulator
        yield started
    finally:
        for simulator in started.values():
            simulator.stop()


@pytest.fixture(scope="module")
def keeping() -> Iterator[CloudBlueSimulator]:
    """A CloudBlue that keeps a repeated charge (the same extHash sent twice is rated twice)."""
    with CloudBlueSimulator(ignore_repeated_ext_hash=False) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def stack(simulators: dict[str, SoracomSimulator], keeping: CloudBlueSimulator) -> Iterator[LocalCloud]:
    with LocalCloud(
        soracom=SoracomAccess(
            endpoint=simulators["jp"].base_url,
            auth_key_id=SIM_AUTH_KEY_ID,
            auth_key=SIM_AUTH_KEY,
            endpoints={c: s.base_url for c, s in simulators.items()},
            operator_keys={OWN_KEY: OWN_AUTH_KEY},
        ),
        cloudblue=CloudBlueAccess(
            endpoint=keeping.base_url, consumer_key=keeping.consumer_key, consumer_secret=keeping.consumer_secret
        ),
        mapping=MAPPINGS,
        coverages=("jp", "g"),
        accounts=json.dumps(ACCOUNTS),
        instant_waits=True,
        environment={"POWERTOOLS_METRICS_DISABLED": "true"},
    ) as cloud:
        yield cloud


def executions(cloud: LocalCloud) -> dict[str, str]:
    """Every export execution: name -> status."""
    sfn = cloud.client("stepfunctions")
    listed = sfn.list_executions(stateMachineArn=cloud.state_machines["ExportBillingStateMachine"])["executions"]
    return {e["name"]: e["status"] for e in listed}


def invoke_schedule(cloud: LocalCloud, month: str) -> dict[str, Any]:
    """What EventBridge Scheduler does once a month for the listed operators: invoke the starter."""
    after = shift_month(month, 1)
    answer = cloud.client("lambda").invoke(
        FunctionName=cloud.resources["StartAccountExportsFunction"],
        Payload=json.dumps({"scheduledTime": f"{after[:4]}-{after[4:]}-04T00:00:00Z"}),
    )
    assert "FunctionError" not in answer, answer["Payload"].read()
    return dict(json.loads(answer["Payload"].read()))


def expected_ids(body: bytes, month: str, coverage: str, suffix: str, operator: str | None) -> set[str]:
    mapping = parse_mapping(MAPPINGS[coverage].read_text(), "m").for_operator(operator)
    plan = planned(io.BytesIO(body), month=month, currency=CURRENCY[coverage], mapping=mapping, id_suffix=suffix)
    assert plan.accepted, plan.problems[:3]
    return {c.ext_charge_id or "" for c in plan.charges}


def test_six_bills_of_a_month_three_operators_on_two_coverages_are_each_imported_once_and_balanced(
    stack: LocalCloud, simulators: dict[str, SoracomSimulator], keeping: CloudBlueSimulator
):
    month = LAST_MONTH
    before = len(stack.async_invocations.deliveries)
    # The listed operators' schedule: one export per operator and coverage, named after its bill
    started = invoke_schedule(stack, month)
    assert sorted((s["operator"], s["coverage"]) for s in started["started"]) == sorted(
        (operator, coverage) for operator in (SWITCHED, OWN_KEY) for coverage in ("jp", "g")
    )
    # ...and the stack's own operator's two schedules, as before
    for coverage in ("jp", "g"):
        result = stack.run("ExportBillingStateMachine", {"month": month, "coverage": coverage}, name=f"own-{coverage}")
        assert result.status == "SUCCEEDED", (result.error, result.cause)
    for execution in started["started"]:
        list(stack.follow(execution["executionArn"], timeout_seconds=120))
    assert set(executions(stack).values()) == {"SUCCEEDED"}, executions(stack)

    deliveries = stack.import_deliveries(before)
    reports = [rated(stack, delivery) for delivery in deliveries]
    bills = {(r.get("operator"), r["coverage"]): r for r in reports}
    assert sorted(bills, key=str) == sorted(
        [(None, "jp"), (None, "g"), (SWITCHED, "jp"), (SWITCHED, "g"), (OWN_KEY, "jp"), (OWN_KEY, "g")], key=str
    )
    s3 = stack.client("s3")
    every_id: list[str] = []
    for (operator, coverage), report in bills.items():
        simulator = simulators[coverage]
        body = simulator.csv_bytes(month, operator)
        # Its CSV in its folder, byte for byte, with the operator in its metadata
        key = report["object"]["key"]
        folder = f"exports/{month}/{operator}/{coverage}/" if operator else f"exports/{month}/{coverage}/"
        assert key.startswith(folder), key
        stored = s3.get_object(Bucket=stack.bucket, Key=key, VersionId=report["object"]["versionId"])
        assert stored["Body"].read() == body
        assert stored["Metadata"].get("operator") == operator
        # Imported once, rated, balanced against that operator's own bill
        assert (report["status"], report["currency"]) == ("PROCESSED", CURRENCY[coverage]), report["summary"]
        reconciliation = report["reconciliation"]
        assert reconciliation["balanced"] is True, reconciliation["note"]
        bill = simulator.bill(month, operator)
        assert bill is not None
        assert Decimal(reconciliation["billAmount"]) == bill["amount"]
        assert Decimal(reconciliation["importedSum"]) == csv_sum(body)
        # CloudBlue holds exactly its charges: one session, the ids the plan gives, summing to the CSV
        charges = keeping.charges(report["importSessionId"])
        suffix = "-".join(p for p in ("g" if coverage == "g" else "", (operator or "").lower()) if p)
        assert {c["extChargeId"] for c in charges} == expected_ids(body, month, coverage, suffix, operator)
        assert len(charges) == len({c["extChargeId"] for c in charges})
        assert sum((Decimal(str(c["totalPrice"])) for c in charges), Decimal(0)) == csv_sum(body)
        # and what the CSV makes, worked out apart from the import: each subscription, resource, SIM or device, share
        text = MAPPINGS[coverage].read_text(encoding="utf-8")
        assert reference.lacking(body, text, CURRENCY[coverage], charges, operator=operator) == []
        every_id += [c["extChargeId"] for c in charges]
        if operator == OWN_KEY:  # customer.operators: every charge of its bill is that customer's
            subscription = parse_mapping(MAPPINGS[coverage].read_text(), "m").customer.subscriptions
            assert {c["subscriptionId"] for c in charges} == {subscription[OWN_KEY_CUSTOMER].subscription}
            assert [p["name"] for p in report["perCustomer"]] == [OWN_KEY_CUSTOMER]
    assert len(every_id) == len(set(every_id)), "two bills share a charge id"
    assert len({r["importSessionId"] for r in reports}) == 6
    assert stack.alerts() == []

    # The schedule delivered again (EventBridge Scheduler retries) and each bill run again: nothing more
    sessions = len(keeping.sessions())
    again = invoke_schedule(stack, month)
    assert [s["executionArn"] for s in again["started"]] == [s["executionArn"] for s in started["started"]]
    for operator in (None, SWITCHED, OWN_KEY):
        for coverage in ("jp", "g"):
            payload = {"month": month, "coverage": coverage} | ({"operator": operator} if operator else {})
            result = stack.run("ExportBillingStateMachine", payload, name=f"again-{coverage}-{operator}")
            assert result.status == "SUCCEEDED"
            assert (result.output or {})["alreadyExported"] is True
            assert (result.output or {}).get("operator") == operator
    assert len(keeping.sessions()) == sessions
    assert stack.import_deliveries(before)[len(deliveries) :] == []


def test_an_operator_the_stack_does_not_list_is_never_exported_nor_imported(
    stack: LocalCloud, simulators: dict[str, SoracomSimulator], keeping: CloudBlueSimulator
):
    month = shift_month(LAST_MONTH, -1)
    stack.alerts()
    # Exporting it: refused before Soracom is asked anything, naming the operator and the setting
    result = stack.run(
        "ExportBillingStateMachine", {"month": month, "coverage": "jp", "operator": "OP0000000009"}, name="unlisted"
    )
    assert (result.status, result.error) == ("FAILED", "InvalidInputError")
    message = json.loads(result.cause or "{}")["errorMessage"]
    assert "operator OP0000000009, which is not one of this stack's accounts (SoracomAccounts lists" in message
    (alert,) = stack.alerts()
    assert (
        alert["subject"]
        == f"soracharge {month} (operator OP0000000009, Japan coverage): export failed (InvalidInputError)"
    )
    # A file of it uploaded by a person: rejected, nothing sent
    sessions = len(keeping.sessions())
    body = simulators["jp"].csv_bytes(month, SWITCHED)
    delivery = upload(stack, f"uploads/{month}/OP0000000009/jp/bill.csv", body)
    (report,) = delivery.result["reports"]
    assert report["status"] == "REJECTED"
    assert "the key's folder says operator OP0000000009, which is not one of this stack's accounts" in report["summary"]
    # A folder and metadata that disagree on the operator: whose bill it is would be a guess
    s3 = stack.client("s3")
    before = len(stack.async_invocations.deliveries)
    s3.put_object(
        Bucket=stack.bucket,
        Key=f"uploads/{month}/{SWITCHED}/jp/bill.csv",
        Body=body,
        Metadata={"currency": "JPY", "operator": OWN_KEY},
    )
    (delivery,) = stack.import_deliveries(before)
    (report,) = delivery.result["reports"]
    assert report["status"] == "REJECTED"
    assert f"the key's folder says {SWITCHED}, the metadata operator says {OWN_KEY}" in report["summary"]
    assert len(keeping.sessions()) == sessions


def test_the_same_bytes_as_two_operators_bills_are_imported_once(
    stack: LocalCloud, simulators: dict[str, SoracomSimulator], keeping: CloudBlueSimulator
):
    """A copy of one operator's CSV uploaded as another's is the same bill twice: the second is refused."""
    month = shift_month(LAST_MONTH, -2)
    body = simulators["jp"].csv_bytes(month, SWITCHED)
    first = upload(stack, f"uploads/{month}/{SWITCHED}/jp/bill.csv", body)
    assert rated(stack, first)["status"] == "PROCESSED"
    sessions = len(keeping.sessions())
    second = upload(stack, f"uploads/{month}/jp/bill.csv", body)  # the stack's own operator's folder
    (report,) = second.result["reports"]
    assert report["status"] == "DUPLICATE"
    assert f"as the operator {SWITCHED}, Japan coverage bill" in report["summary"]
    assert len(keeping.sessions()) == sessions


@pytest.mark.parametrize("mistake", ["the stack's own operator listed", "a listed operator's key as the stack's"])
def test_one_operators_bill_is_never_exported_under_two_names_whatever_the_secrets_hold(
    stack: LocalCloud, simulators: dict[str, SoracomSimulator], mistake: str
):
    """SoracomAccounts listing the stack's own operator (with its own AuthKey), or the stack's AuthKey secret
    holding a listed operator's key: either would export one bill as two. Each export is refused, naming it."""
    from aws_lambda_powertools.utilities import parameters
    from soracharge import factories

    month = shift_month(LAST_MONTH, -3)
    own = simulators["jp"].operator_id
    secrets = stack.client("secretsmanager")
    overrides = stack.runner.environment_overrides
    saved = dict(overrides)
    try:
        if mistake == "the stack's own operator listed":
            listed = [*ACCOUNTS, {"operator": own, "coverages": "jp"}]
            overrides["SORACOM_ACCOUNTS"] = json.dumps(listed)
            secrets.create_secret(
                Name=f"soracharge/soracom/{own}",
                SecretString=json.dumps({"authKeyId": SIM_AUTH_KEY_ID, "authKey": SIM_AUTH_KEY}),
            )
            payload = {"month": month, "coverage": "jp", "operator": own}
            words = f"{own}, which SoracomAccounts lists as another operator"
        else:
            secrets.put_secret_value(
                SecretId=overrides["SORACOM_AUTH_SECRET_ID"],
                SecretString=json.dumps({"authKeyId": OWN_AUTH_KEY[0], "authKey": OWN_AUTH_KEY[1]}),
            )
            payload = {"month": month, "coverage": "jp"}
            words = f"{OWN_KEY}, which SoracomAccounts lists as another operator"
        # As a function's cached secret and token are, after their 5 minutes and hour: read again
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        factories._soracom_client.cache_clear()
        result = stack.run("ExportBillingStateMachine", payload, name=f"two-names-{mistake[:5]}")
        assert (result.status, result.error) == ("FAILED", "SoracomAuthError")
        message = json.loads(result.cause or "{}")["errorMessage"]
        assert words in message
        assert "its bill exported under two names would be billed twice" in message
        listing = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=f"exports/{month}/")
        assert listing.get("KeyCount", 0) == 0  # nothing exported
    finally:
        overrides.clear()
        overrides.update(saved)
        secrets.put_secret_value(
            SecretId=saved["SORACOM_AUTH_SECRET_ID"],
            SecretString=json.dumps({"authKeyId": SIM_AUTH_KEY_ID, "authKey": SIM_AUTH_KEY}),
        )
        parameters.clear_caches()  # type: ignore[no-untyped-call]
        factories._soracom_client.cache_clear()
        stack.alerts()


def test_a_mapping_naming_an_operator_the_stack_does_not_list_holds_every_listed_operators_bill(
    stack: LocalCloud, simulators: dict[str, SoracomSimulator], keeping: CloudBlueSimulator, tmp_path: Path
):
    """A mistyped id in customer.operators (OP0000000033 for OP0000000003) would leave that operator's bill read by
    the customer column: a guess at whose it is. Its bill is refused, naming the id, before anything is sent."""
    import yaml

    month = shift_month(LAST_MONTH, -4)
    typo = yaml.safe_load(MAPPINGS["jp"].read_text(encoding="utf-8"))
    typo["customer"]["operators"] = {"OP0000000033": OWN_KEY_CUSTOMER}
    path = tmp_path / "mapping.jp.yaml"
    path.write_text(yaml.safe_dump(typo, allow_unicode=True), encoding="utf-8")
    stack.put_mapping({"jp": path, "g": MAPPINGS["g"]})
    try:
        sessions = len(keeping.sessions())
        body = simulators["jp"].csv_bytes(month, OWN_KEY)
        (report,) = upload(stack, f"uploads/{month}/{OWN_KEY}/jp/bill.csv", body).result["reports"]
        assert report["status"] == "REJECTED"
        assert report["summary"].startswith(
            "the mapping's customer.operators names OP0000000033, which SoracomAccounts does not list"
        )
        # The stack's own bill is read as before: the mapping's operators are not its business
        own = upload(stack, f"uploads/{month}/jp/bill.csv", simulators["jp"].csv_bytes(month))
        assert rated(stack, own)["status"] == "PROCESSED"
        assert len(keeping.sessions()) == sessions + 1
    finally:
        stack.put_mapping(MAPPINGS)
        stack.alerts()
