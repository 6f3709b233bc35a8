"""An update of a single-coverage stack to both coverages: its months, its S3 layout and its ledger keep working.

Its own module, as it deploys its own stack (one local stack runs in a process at a time).
"""

from __future__ import annotations

from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_coverages import GLOBAL_MAPPING, JAPAN_MAPPING, access, cloudblue_access, export
from tests.integration.test_operations import rated


def test_an_update_of_a_single_coverage_stack_to_both_keeps_its_months_and_layout(
    soracom: SoracomSimulator, global_soracom: SoracomSimulator, cloudblue: CloudBlueSimulator
):
    """A stack of jp updated to jp,g: what the update changes is the functions' SORACOM_COVERAGE_TYPE
    (and the Global schedule, enabled); the bucket and the ledger stay as they were."""
    month, later = shift_month(LAST_MONTH, -4), shift_month(LAST_MONTH, -3)
    with LocalCloud(
        soracom=access(soracom, global_soracom),
        cloudblue=cloudblue_access(cloudblue),
        mapping=JAPAN_MAPPING,
        coverages=("jp",),
        instant_waits=True,
        environment={"POWERTOOLS_METRICS_DISABLED": "true"},
    ) as cloud:
        # Before the update: a month exported as every single-coverage stack did, straight under its month
        before, deliveries = export(cloud, month, None, "single")
        assert before["s3"]["key"].startswith(f"exports/{month}/fe_")
        assert rated(cloud, deliveries[0])["status"] == "PROCESSED"
        sessions = len(cloudblue.sessions())

        # The update
        cloud.runner.environment_overrides["SORACOM_COVERAGE_TYPE"] = "jp,g"
        cloud.put_mapping({"jp": JAPAN_MAPPING, "g": GLOBAL_MAPPING})

        # The month exported before is found for Japan, not exported or imported again
        again, none = export(cloud, month, "jp", "single-again")
        assert (again["alreadyExported"], again["s3"]["key"], none) == (True, before["s3"]["key"], [])
        assert len(cloudblue.sessions()) == sessions
        # Global's bill of that month is exported beside it, in its own folder, and imported
        global_, deliveries = export(cloud, month, "g", "single-global")
        assert global_["s3"]["key"].startswith(f"exports/{month}/g/")
        assert rated(cloud, deliveries[0])["status"] == "PROCESSED"
        # A later month of Japan goes to its coverage's folder now
        japan, deliveries = export(cloud, later, "jp", "single-later")
        assert japan["s3"]["key"].startswith(f"exports/{later}/jp/")
        assert rated(cloud, deliveries[0])["status"] == "PROCESSED"
        # And the Japan CSV imported before the update, uploaded again, is a duplicate of it: nothing sent
        sessions = len(cloudblue.sessions())
        body = soracom.csv_bytes(month)
        before_delivery = len(cloud.async_invocations.deliveries)
        s3 = cloud.client("s3")
        s3.put_object(Bucket=cloud.bucket, Key=f"uploads/{month}/again.csv", Body=body, Metadata={"currency": "JPY"})
        (delivery,) = cloud.import_deliveries(before_delivery)
        (report,) = delivery.result["reports"]
        assert (report["status"], report["coverage"]) == ("DUPLICATE", "jp")
        assert len(cloudblue.sessions()) == sessions
