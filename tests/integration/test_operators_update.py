"""An update of a stack deployed before operators: it keeps exporting its one operator as it did, and exports
the operators SoracomAccounts lists once they are listed.

Its own module, as it deploys its own stack (one local stack runs in a process at a time).
"""

from __future__ import annotations

import json

import yaml
from soracharge.models.months import shift_month
from soracharge_local.engine import CloudBlueAccess, LocalCloud, SoracomAccess
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator
from soracharge_local.simulators.soracom import SimulatedOperator

from tests import reference
from tests.integration.conftest import LAST_MONTH, SIM_AUTH_KEY, SIM_AUTH_KEY_ID
from tests.integration.test_coverages import JAPAN_MAPPING, expected_ids, export
from tests.integration.test_operations import rated

LISTED = "OP0000000002"


def test_an_update_keeps_the_stacks_own_months_keys_and_ids_and_exports_a_newly_listed_operator(tmp_path):
    month, later = shift_month(LAST_MONTH, -4), shift_month(LAST_MONTH, -3)
    # The mapping the stack had: the example's, without customer.operators (its OP0000000003 is not exported here)
    document = yaml.safe_load(JAPAN_MAPPING.read_text(encoding="utf-8"))
    del document["customer"]["operators"]
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    primary = SoracomSimulator(auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY).operator_id
    operators = {LISTED: SimulatedOperator(trusts=frozenset({primary}))}
    with (
        SoracomSimulator(auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY, operators=operators) as soracom,
        CloudBlueSimulator(ignore_repeated_ext_hash=False) as cloudblue,
        LocalCloud(
            soracom=SoracomAccess(endpoint=soracom.base_url, auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY),
            cloudblue=CloudBlueAccess(
                endpoint=cloudblue.base_url,
                consumer_key=cloudblue.consumer_key,
                consumer_secret=cloudblue.consumer_secret,
            ),
            mapping=mapping,
            instant_waits=True,
            environment={"POWERTOOLS_METRICS_DISABLED": "true"},
        ) as cloud,
    ):
        # Before the update: SoracomAccounts empty, the stack's own operator as every stack had it
        before, deliveries = export(cloud, month, None, "before")
        assert before["s3"]["key"].startswith(f"exports/{month}/fe_")
        first = rated(cloud, deliveries[0])
        assert first["status"] == "PROCESSED"
        assert "operator" not in first
        ids_before = {c["extChargeId"] for c in cloudblue.charges(first["importSessionId"])}
        assert ids_before == expected_ids(soracom.csv_bytes(month), month, "JPY", "", mapping)
        sessions = len(cloudblue.sessions())

        # The update: the functions' SORACOM_ACCOUNTS lists an operator (and its schedule is enabled)
        cloud.runner.environment_overrides["SORACOM_ACCOUNTS"] = json.dumps(
            [{"operator": LISTED, "coverages": "jp", "switchUser": "soracharge"}]
        )

        # The month exported before is found, not exported or imported again
        again, none = export(cloud, month, None, "after-again")
        assert (again["alreadyExported"], again["s3"]["key"], none) == (True, before["s3"]["key"], [])
        assert len(cloudblue.sessions()) == sessions
        # A later month of its own operator: the same layout and the same kind of ids as before the update
        own, deliveries = export(cloud, later, None, "after-own")
        assert own["s3"]["key"].startswith(f"exports/{later}/fe_")
        report = rated(cloud, deliveries[0])
        assert report["status"] == "PROCESSED"
        ids = {c["extChargeId"] for c in cloudblue.charges(report["importSessionId"])}
        assert ids == expected_ids(soracom.csv_bytes(later), later, "JPY", "", mapping)
        # The listed operator's bill of the month before the update: exported beside it, imported once
        deliveries_before = len(cloud.async_invocations.deliveries)
        result = cloud.run(
            "ExportBillingStateMachine", {"month": month, "operator": LISTED}, name="after-listed", timeout_seconds=120
        )
        assert result.status == "SUCCEEDED", (result.error, result.cause)
        output = result.output or {}
        assert output["s3"]["key"].startswith(f"exports/{month}/{LISTED}/jp/")
        (delivery,) = cloud.import_deliveries(deliveries_before)
        report = rated(cloud, delivery)
        assert (report["status"], report["operator"]) == ("PROCESSED", LISTED)
        assert report["reconciliation"]["balanced"] is True
        listed = cloudblue.charges(report["importSessionId"])
        assert listed
        assert all(c["extChargeId"].endswith("-op0000000002") for c in listed)
        text = mapping.read_text(encoding="utf-8")
        assert reference.lacking(soracom.csv_bytes(month, LISTED), text, "JPY", listed, operator=LISTED) == []
        assert cloud.alerts() == []
