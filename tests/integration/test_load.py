"""Load: 50 CSV uploads for different months and files arriving at once, with duplicate events among them.

Every file must be imported exactly once (its charges in exactly one closed session) and the ledger
must end consistent: one CLOSED entry per object version, nothing left IMPORTING.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from decimal import Decimal
from pathlib import Path

from soracharge.logic.imports import additional_id_suffix
from soracharge.models.mapping import parse_mapping
from soracharge.models.months import shift_month
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests import reference
from tests.integration.conftest import LAST_MONTH, full_stack
from tests.planning import planned

MAPPING_PATH = Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml"
MAPPING = parse_mapping(MAPPING_PATH.read_text(), "example")
MONTHS = [shift_month(LAST_MONTH, -i) for i in range(10)]
PARTS = 5  # 10 months x 5 files = 50 uploads


def split_by_sim(body: bytes, parts: int) -> list[bytes]:
    """The month's CSV as ``parts`` files, each with the rows of some SIMs (rows without a SIM in the first)."""
    text = body.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, data = rows[0], rows[1:]
    imsi = header.index("imsi")
    sims = sorted({row[imsi] for row in data if row[imsi]})
    files = []
    for part in range(parts):
        mine = set(sims[part::parts])
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(row for row in data if row[imsi] in mine or (part == 0 and not row[imsi]))
        files.append(("\ufeff" + out.getvalue()).encode())
    return files


def test_fifty_uploads_at_once_are_each_imported_exactly_once(soracom: SoracomSimulator, cloudblue: CloudBlueSimulator):
    files = {
        f"uploads/{month}/part-{part}.csv": body
        for month in MONTHS
        for part, body in enumerate(split_by_sim(soracom.csv_bytes(month), PARTS))
    }
    assert len(files) == 50
    sessions_before = {s.importSessionId for s in cloudblue.sessions()}

    environment = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
    with full_stack(soracom, cloudblue, MAPPING_PATH, environment) as cloud:
        s3 = cloud.client("s3")
        # When all 50 land at once (each a second bill for its month, so marked additional) ...
        versions = {
            key: s3.put_object(
                Bucket=cloud.bucket, Key=key, Body=body, Metadata={"currency": "JPY", "import": "additional"}
            )["VersionId"]
            for key, body in files.items()
        }
        # ... and S3 delivers some of their events twice, out of order
        first_deliveries = list(cloud.async_invocations.deliveries)
        for delivery in reversed(first_deliveries[::7]):
            cloud.async_invocations.redeliver(delivery)
        cloud.async_invocations.wait_idle(timeout_seconds=300)

        deliveries = cloud.async_invocations.deliveries
        assert len(deliveries) == 50 + len(first_deliveries[::7])
        assert [d.error for d in deliveries if d.error] == []
        ledger = cloud.client("dynamodb").scan(TableName=cloud.resources["LedgerTable"])["Items"]

    # Each was uploaded as an additional file: its charges carry ids of their own (its bytes and version).
    expected: Counter[tuple[str, Decimal]] = Counter()
    for key, body in files.items():
        suffix = additional_id_suffix(hashlib.sha256(body).hexdigest(), versions[key])
        plan = planned(io.BytesIO(body), month=key.split("/")[1], currency="JPY", mapping=MAPPING, id_suffix=suffix)
        assert plan.problems == []
        expected.update((c.ext_charge_id or "", c.total_price) for c in plan.charges)

    # Then every file's charges are held exactly once, in closed sessions, and nothing else is
    opened = [s for s in cloudblue.sessions() if s.importSessionId not in sessions_before]
    held = Counter((c["extChargeId"], c["totalPrice"]) for s in opened if s.closed_at is not None for c in s.charges)
    assert held == expected
    assert len([s for s in opened if s.closed_at is not None]) == 50
    # and what they hold is what the 50 files make, worked out apart from the import (tests/reference.py)
    closed_charges = [c for s in opened if s.closed_at is not None for c in s.charges]
    assert reference.lacking(files.values(), MAPPING_PATH.read_text(encoding="utf-8"), "JPY", closed_charges) == []
    # and the ledger has one finished entry per object version, nothing left importing
    objects = [item for item in ledger if item["pk"]["S"].startswith("object#")]
    assert len(objects) == 50
    assert {item["status"]["S"] for item in objects} <= {"CLOSED", "PROCESSED"}  # the follow may have run already
    assert all(
        not item.get("in_flight", {}).get("NS") or item["in_flight"]["NS"] == item["accepted"]["NS"] for item in objects
    )
