"""Both coverages in one stack: two bills a month, each exported, stored, imported and reconciled once.

The whole template runs in moto with SoracomCoverageType jp,g, against two Soracom simulators (one
per coverage host, as Soracom has api.soracom.io and g.api.soracom.io) and the CloudBlue simulator.
Each test checks what a provider would: the CSVs' keys in S3, the charges CloudBlue received for
each bill (once, in its own currency), the reports' reconciliation, and what a re-run, a duplicate
event or an update of a single-coverage stack does.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from soracharge.models.mapping import parse_mapping
from soracharge.models.months import shift_month
from soracharge_local.engine import CloudBlueAccess, LocalCloud, SoracomAccess
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests import reference
from tests.integration.conftest import LAST_MONTH, SIM_AUTH_KEY, SIM_AUTH_KEY_ID
from tests.integration.test_import_flow import redeliver, report_of, upload
from tests.integration.test_operations import rated
from tests.integration.test_reconciliation import csv_sum
from tests.planning import planned

REPO = Path(__file__).resolve().parents[2]
JAPAN_MAPPING = REPO / "examples" / "mapping.example.yaml"
GLOBAL_MAPPING = REPO / "examples" / "mapping.global.example.yaml"


def one_mapping_for_both(folder: Path) -> Path:
    """One mapping serving both coverages: the customers once, both coverages' items, no currency."""
    japan = yaml.safe_load(JAPAN_MAPPING.read_text())
    global_ = yaml.safe_load(GLOBAL_MAPPING.read_text())
    assert japan["customer"] == global_["customer"]
    japan.pop("currency")
    japan["items"] = japan["items"] + global_["items"]
    path = folder / "mapping.both.yaml"
    path.write_text(yaml.safe_dump(japan, allow_unicode=True, sort_keys=False))
    return path


def access(japan: SoracomSimulator, global_: SoracomSimulator) -> SoracomAccess:
    return SoracomAccess(
        endpoint=japan.base_url,
        auth_key_id=SIM_AUTH_KEY_ID,
        auth_key=SIM_AUTH_KEY,
        endpoints={"jp": japan.base_url, "g": global_.base_url},
    )


def cloudblue_access(cloudblue: CloudBlueSimulator) -> CloudBlueAccess:
    return CloudBlueAccess(
        endpoint=cloudblue.base_url, consumer_key=cloudblue.consumer_key, consumer_secret=cloudblue.consumer_secret
    )


@pytest.fixture(scope="module")
def both(
    soracom: SoracomSimulator,
    global_soracom: SoracomSimulator,
    cloudblue: CloudBlueSimulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalCloud]:
    """A stack of SoracomCoverageType jp,g with one mapping for both."""
    mapping = one_mapping_for_both(tmp_path_factory.mktemp("mapping"))
    with LocalCloud(
        soracom=access(soracom, global_soracom),
        cloudblue=cloudblue_access(cloudblue),
        mapping=mapping,
        coverages=("jp", "g"),
        instant_waits=True,
        environment={"POWERTOOLS_METRICS_DISABLED": "true"},
    ) as cloud:
        yield cloud


def export(cloud: LocalCloud, month: str, coverage: str | None, name: str) -> tuple[dict[str, Any], list[Any]]:
    before = len(cloud.async_invocations.deliveries)
    payload = {"month": month} | ({"coverage": coverage} if coverage else {})
    result = cloud.run("ExportBillingStateMachine", payload, name=name, timeout_seconds=120)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    return result.output or {}, cloud.import_deliveries(before)


def expected_ids(body: bytes, month: str, currency: str, suffix: str, mapping: Path) -> set[str]:
    plan = planned(
        io.BytesIO(body),
        month=month,
        currency=currency,
        mapping=parse_mapping(mapping.read_text(), "m"),
        id_suffix=suffix,
    )
    return {c.ext_charge_id or "" for c in plan.charges}


def test_both_bills_of_a_month_land_in_their_folders_and_are_imported_once_each_in_their_own_currency(
    both: LocalCloud,
    soracom: SoracomSimulator,
    global_soracom: SoracomSimulator,
    cloudblue: CloudBlueSimulator,
    tmp_path: Path,
):
    month = LAST_MONTH
    japan_out, japan_deliveries = export(both, month, "jp", "both-jp")
    global_out, global_deliveries = export(both, month, "g", "both-g")

    # The two CSVs, byte for byte, each in its coverage's folder with its coverage and currency
    s3 = both.client("s3")
    for output, simulator, coverage, currency in (
        (japan_out, soracom, "jp", "JPY"),
        (global_out, global_soracom, "g", "USD"),
    ):
        assert output["coverage"] == coverage
        assert output["s3"]["key"].startswith(f"exports/{month}/{coverage}/")
        stored = s3.get_object(Bucket=both.bucket, Key=output["s3"]["key"], VersionId=output["s3"]["versionId"])
        assert stored["Body"].read() == simulator.csv_bytes(month)
        assert (stored["Metadata"]["coverage"], stored["Metadata"]["currency"]) == (coverage, currency)

    # Each imported once, in its own session and currency, and each balanced against its own bill
    japan, global_ = (rated(both, d) for d in (*japan_deliveries, *global_deliveries))
    assert (japan["status"], japan["coverage"], japan["currency"]) == ("PROCESSED", "jp", "JPY")
    assert (global_["status"], global_["coverage"], global_["currency"]) == ("PROCESSED", "g", "USD")
    assert japan["importSessionId"] != global_["importSessionId"]
    for report, simulator in ((japan, soracom), (global_, global_soracom)):
        reconciliation = report["reconciliation"]
        assert reconciliation["balanced"] is True, reconciliation["note"]
        bill = simulator.bill(month)
        assert bill is not None
        assert Decimal(reconciliation["billAmount"]) == bill["amount"]
        assert Decimal(reconciliation["importedSum"]) == csv_sum(simulator.csv_bytes(month))
    assert "less the 1.5 USD coupon" in global_["reconciliation"]["note"]

    # CloudBlue has exactly each CSV's charges, the Global ones marked apart
    japan_charges = cloudblue.charges(japan["importSessionId"])
    global_charges = cloudblue.charges(global_["importSessionId"])
    assert {c["currencyCode"] for c in japan_charges} == {"JPY"}
    assert {c["currencyCode"] for c in global_charges} == {"USD"}
    mapping = one_mapping_for_both(tmp_path)
    assert {c["extChargeId"] for c in japan_charges} == expected_ids(
        soracom.csv_bytes(month), month, "JPY", "", mapping
    )
    assert {c["extChargeId"] for c in global_charges} == expected_ids(
        global_soracom.csv_bytes(month), month, "USD", "g", mapping
    )
    assert not {c["extChargeId"] for c in japan_charges} & {c["extChargeId"] for c in global_charges}
    # and each session holds what its CSV makes, in its currency, worked out apart from the import
    text = mapping.read_text(encoding="utf-8")
    assert reference.lacking(soracom.csv_bytes(month), text, "JPY", japan_charges) == []
    assert reference.lacking(global_soracom.csv_bytes(month), text, "USD", global_charges) == []
    assert both.alerts() == []


def test_a_rerun_and_a_duplicate_event_of_each_coverage_import_nothing_again(
    both: LocalCloud, cloudblue: CloudBlueSimulator
):
    month = shift_month(LAST_MONTH, -1)
    first = {coverage: export(both, month, coverage, f"rerun-{coverage}") for coverage in ("jp", "g")}
    reports = {coverage: rated(both, deliveries[0]) for coverage, (_, deliveries) in first.items()}
    sessions = len(cloudblue.sessions())

    for coverage, (output, deliveries) in first.items():
        # A re-run of the month for the coverage ends at once, naming its stored CSV and how its import ended
        again, none = export(both, month, coverage, f"rerun-{coverage}-again")
        assert none == []
        assert again["alreadyExported"] is True
        assert again["s3"]["key"] == output["s3"]["key"]
        label = {"jp": "Japan coverage", "g": "Global coverage"}[coverage]
        assert f"{month} ({label}) was exported before" in again["summary"]
        assert "its import is PROCESSED" in again["summary"]
        # S3 delivers the same event again: the same report, nothing sent
        (duplicate,) = redeliver(both, deliveries[0]).result["reports"]
        assert duplicate["importSessionId"] == reports[coverage]["importSessionId"]
    assert len(cloudblue.sessions()) == sessions


def test_an_execution_without_a_coverage_on_a_stack_of_both_fails_naming_it_and_alerts(both: LocalCloud):
    both.alerts()
    result = both.run("ExportBillingStateMachine", {"month": LAST_MONTH}, name="no-coverage", timeout_seconds=60)
    assert result.status == "FAILED"
    assert result.error == "InvalidInputError"
    message = json.loads(result.cause or "{}")["errorMessage"]
    assert 'this stack exports jp and g: give "coverage": "jp" (Japan, JPY) or "g" (Global, USD or EUR)' in message
    (alert,) = both.alerts()
    assert alert["subject"] == f"soracharge {LAST_MONTH}: export failed (InvalidInputError)"
    # The command to start it again leaves the coverage to choose, as it leaves the month
    assert """--input '{"month": "yyyyMM", "coverage": "jp|g"}'""" in alert["message"]


def test_one_mapping_per_coverage_is_read_by_the_coverage_of_each_file(
    both: LocalCloud, soracom: SoracomSimulator, global_soracom: SoracomSimulator
):
    both.put_mapping({"jp": JAPAN_MAPPING, "g": GLOBAL_MAPPING})
    try:
        month = shift_month(LAST_MONTH, -2)
        reports = [rated(both, export(both, month, c, f"per-coverage-{c}")[1][0]) for c in ("jp", "g")]
    finally:
        del both.runner.environment_overrides["SORACHARGE_MAPPING"]
    assert [(r["status"], r["mapping"]) for r in reports] == [
        ("PROCESSED", f"s3://{both.bucket}/config/mapping.jp.yaml"),
        ("PROCESSED", f"s3://{both.bucket}/config/mapping.g.yaml"),
    ]


def test_a_global_upload_with_no_currency_is_rejected_saying_how_to_give_one_a_japan_one_is_jpy(
    both: LocalCloud, soracom: SoracomSimulator, global_soracom: SoracomSimulator
):
    """The stack's one mapping for both names no currency: a Global bill (USD or EUR) is never given one by guess."""
    month = shift_month(LAST_MONTH, -5)
    delivery = upload(both, f"uploads/{month}/g/no-currency.csv", global_soracom.csv_bytes(month), currency=None)

    report = report_of(both, delivery)
    assert (report["status"], report["coverage"]) == ("REJECTED", "g")
    assert "no currency for this file: Global coverage bills in USD or EUR" in report["problems"][0]["message"]
    assert "upload with the metadata currency=USD|EUR" in report["problems"][0]["message"]
    # A Japan one is JPY: imported, and rated once its session is followed to the end (the report's status is
    # not read before: the follow execution may have recorded PROCESSED already, or not yet)
    delivery = upload(both, f"uploads/{month}/jp/no-currency.csv", soracom.csv_bytes(month), currency=None)
    report = rated(both, delivery)
    assert (report["status"], report["coverage"], report["currency"]) == ("PROCESSED", "jp", "JPY")
