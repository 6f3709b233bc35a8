"""Import speed with 50 ms of latency per importCharges call: default concurrency against sequential.

The real import function runs in the local engine (moto, the DynamoDB ledger, the S3 notification)
against the CloudBlue simulator, which delays every importCharges answer by ``--latency`` seconds.
The same file is imported twice, once with IMPORT_CONCURRENCY=1 and once with the template's
default, and the import function's own duration is compared. Prints figures; asserts nothing.

    .venv/bin/python bench/import_concurrency.py [--sims 200] [--packet-size 5] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

import yaml
from soracharge.models.months import previous_month
from soracharge_local.engine import CloudBlueAccess, LocalCloud, SoracomAccess
from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator, SoracomSimulator

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_DEFAULT_CONCURRENCY = "8"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=200, help="SIMs in the generated bill (more SIMs, more charges)")
    parser.add_argument("--packet-size", type=int, default=5, help="charges per importCharges call")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds CloudBlue takes per importCharges")
    args = parser.parse_args()
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore")

    month = previous_month(datetime.now(UTC))
    soracom = SoracomSimulator(sims=args.sims)
    body = soracom.csv_bytes(month)
    mapping = yaml.safe_load((REPO / "examples" / "mapping.example.yaml").read_text())
    mapping["packetSize"] = args.packet_size
    results: dict[str, tuple[float, int, int]] = {}
    with tempfile.TemporaryDirectory() as workdir, CloudBlueSimulator() as cloudblue:
        mapping_path = Path(workdir) / "mapping.yaml"
        mapping_path.write_text(yaml.safe_dump(mapping, allow_unicode=True))
        for label, concurrency in (("sequential", "1"), ("default", TEMPLATE_DEFAULT_CONCURRENCY)):
            cloudblue.faults = CloudBlueFaults(slow_seconds=args.latency, only_operation="importCharges")
            with LocalCloud(
                soracom=SoracomAccess(endpoint="https://soracom.invalid", auth_key_id="-", auth_key="-"),
                cloudblue=CloudBlueAccess(
                    endpoint=cloudblue.base_url,
                    consumer_key=cloudblue.consumer_key,
                    consumer_secret=cloudblue.consumer_secret,
                ),
                mapping=mapping_path,
                instant_waits=True,
                environment={
                    "IMPORT_CONCURRENCY": concurrency,
                    "POWERTOOLS_LOG_LEVEL": "WARNING",
                    "POWERTOOLS_METRICS_DISABLED": "true",
                },
            ) as cloud:
                cloud.client("s3").put_object(
                    Bucket=cloud.bucket, Key=f"uploads/{month}/bench.csv", Body=body, Metadata={"currency": "JPY"}
                )
                cloud.async_invocations.wait_idle()
                (delivery,) = cloud.async_invocations.deliveries
                if delivery.error:
                    raise SystemExit(f"the import failed: {delivery.error}")
                (report,) = delivery.result["reports"]
                (invocation,) = [i for i in cloud.runner.invocations if i.function == "ImportChargesFunction"]
                results[label] = (
                    invocation.duration_ms / 1000,
                    report["counts"]["packets"],
                    report["counts"]["charges"],
                )

    sequential, packets, charges = results["sequential"]
    concurrent = results["default"][0]
    print(f"file: {len(body):,} bytes, {charges} charges in {packets} packets of {args.packet_size}")
    print(f"latency per importCharges: {args.latency * 1000:.0f} ms")
    print(f"sequential (IMPORT_CONCURRENCY=1):              {sequential:7.2f} s")
    print(f"default    (IMPORT_CONCURRENCY={TEMPLATE_DEFAULT_CONCURRENCY}):              {concurrent:7.2f} s")
    print(f"speed-up: {sequential / concurrent:.1f}x (goal: at least 5x)")


if __name__ == "__main__":
    main()
