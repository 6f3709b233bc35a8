"""How fast the import plans a detailed billing CSV, how its memory grows with the charges, and what a
1,000,000-SIM month needs on Lambda. It prints figures and asserts nothing (bench/README.md).

    .venv/bin/python bench/import_throughput.py                       # 16,000 SIMs (~1.75M rows), memory, projection
    .venv/bin/python bench/import_throughput.py --sims 4000 --memory-sims   # a quick look, no memory runs
    .venv/bin/python bench/import_throughput.py --file bill.csv --month 202610 --mapping my-mapping.yaml

(a) The data: by default the Soracom simulator's detailed billing CSV for ``--sims`` SIMs, real-shaped
    (usage quantities in bytes that rarely repeat, amounts with up to 9 decimals, quoted fields with
    commas and doubled quotes, Japanese names, BOM, CRLF); or any file (``--file``: a real bill).
(b) Throughput, in one process, interleaved, best of ``--repeat``: a bare ``csv.reader`` pass over the
    file; ``plan_import`` from the file on disk (read, validate, map, aggregate into charges, their
    extChargeId: what the CLI's dry run does); ``plan_import`` from a stream (the Lambda path: the S3
    body, copied to /tmp in segments); and building every packet's charges with their extHash and
    serialising its JSON body (what sending adds, a packet at a time).
(c) Memory: fresh interpreters plan and then build every packet, for ``--memory-sims`` (10,000 and
    40,000) SIMs, ``--memory-runs`` (3) of each; the median peak RSS (VmHWM) and its growth per charge.
(d) Projection of a month of ``--project-sims`` SIMs onto one ImportCharges invocation, from (b) and (c)
    and the assumptions printed with it (S3 read rate, CloudBlue's time per packet).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from soracharge.logic.billing_frame import SEGMENT_BYTES
from soracharge.logic.charges import plan_import
from soracharge.models.charges import ImportPlan
from soracharge.models.mapping import Mapping, parse_mapping
from soracharge_local.simulators.soracom_data import generate_billing_csv

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "examples" / "mapping.example.yaml"
MONTH = "202610"


def write_simulator_csv(path: Path, sims: int, month: str = MONTH) -> None:
    path.write_bytes(generate_billing_csv(month, coverage="jp", sims=sims).content)


def bare_csv_reader(path: Path) -> int:
    rows = 0
    with path.open("rb") as raw:
        for _row in csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")):
            rows += 1
    return rows - 1


class Stream(io.RawIOBase):
    """The file as a stream that is not a file on disk (as an S3 body is): the import copies it to /tmp."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


def plan_from_file(path: Path, month: str, mapping: Mapping) -> ImportPlan:
    with path.open("rb") as raw:
        return plan_import(raw, month=month, currency="JPY", mapping=mapping, source=str(path))


def plan_from_stream(path: Path, month: str, mapping: Mapping) -> ImportPlan:
    with Stream(path) as raw:
        return plan_import(
            io.BufferedReader(raw), month=month, currency="JPY", mapping=mapping, reopen=lambda: path.open("rb")
        )


def build_every_packet(plan: ImportPlan) -> int:
    packets = plan.packets(1)
    return sum(len(packets[index].to_json_bytes()) for index in range(len(packets)))


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def throughput(path: Path, month: str, mapping: Mapping, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"csv.reader": [], "plan (file)": [], "plan (stream)": [], "packets": []}
    plan: ImportPlan | None = None
    rows = 0
    for _ in range(repeat):
        plan = None
        rows, seconds = timed(bare_csv_reader, path)
        times["csv.reader"].append(seconds)
        plan, seconds = timed(plan_from_file, path, month, mapping)
        times["plan (file)"].append(seconds)
        plan, seconds = timed(plan_from_stream, path, month, mapping)
        times["plan (stream)"].append(seconds)
        _, seconds = timed(build_every_packet, plan)
        times["packets"].append(seconds)
    assert plan is not None
    engine = type(plan.charges).__name__
    print(f"  rows {plan.rows:,} (csv.reader saw {rows:,}), charges {len(plan.charges):,}")
    print(f"  path: {'polars (FrameCharges)' if engine == 'FrameCharges' else 'pure-Python reader'}")
    print(f"  Σ totalPrice {plan.charges_sum} == Σ amount {plan.csv_sum}: {plan.charges_sum == plan.csv_sum}")
    best = {name: min(values) for name, values in times.items()}
    for name, value in best.items():
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"  {name:14}: {value:6.3f} s  (runs: {runs})")
    for name in ("plan (file)", "plan (stream)"):
        print(f"  ratio csv.reader / {name} = {best['csv.reader'] / best[name]:.2f}  (goal >= 2.0)")
    print(
        f"  per row: plan (stream) {best['plan (stream)'] / plan.rows * 1e6:.2f} µs;"
        f" per charge: packets {best['packets'] / max(1, len(plan.charges)) * 1e6:.1f} µs"
    )
    return {
        "rows": plan.rows,
        "charges": len(plan.charges),
        "bytes": path.stat().st_size,
        "plan_per_row": best["plan (stream)"] / plan.rows,
        "packets_per_charge": best["packets"] / max(1, len(plan.charges)),
    }


def peak_rss_kb() -> int:
    """This process's own peak RSS (VmHWM; ru_maxrss is carried over fork and exec on Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(path: Path, month: str, mapping_path: Path) -> None:
    mapping = parse_mapping(mapping_path.read_text(encoding="utf-8"), str(mapping_path))
    before = peak_rss_kb()
    plan = plan_from_stream(path, month, mapping)
    planned = peak_rss_kb()
    build_every_packet(plan)
    figures = {"rows": plan.rows, "charges": len(plan.charges), "before_kb": before, "planned_kb": planned}
    print(json.dumps(figures | {"peak_kb": peak_rss_kb()}))


def memory(work: Path, sims_list: list[int], mapping_path: Path, runs: int) -> dict[str, float]:
    """Each size planned in ``runs`` fresh processes; the median peak counts (a single peak varies by some
    20 MB from run to run with when the allocator happens to return its freed pages)."""
    results = []
    for sims in sims_list:
        path = work / f"memory-{sims}.csv"
        write_simulator_csv(path, sims)
        each = []
        for _ in range(runs):
            child = subprocess.run(  # noqa: S603 (this interpreter running this script)
                [sys.executable, __file__, "--memory-child", str(path), "--mapping", str(mapping_path)],
                check=True,
                capture_output=True,
                text=True,
            )
            each.append(json.loads(child.stdout))
        path.unlink()
        figures = sorted(each, key=lambda run: run["peak_kb"])[len(each) // 2]
        results.append(figures)
        peaks = ", ".join(f"{run['peak_kb'] / 1024:.0f}" for run in each)
        print(
            f"  {sims:>7,} SIMs, {figures['rows']:>10,} rows, {figures['charges']:>9,} charges: peak RSS"
            f" {figures['peak_kb'] / 1024:7.1f} MB, the median of {runs} (runs: {peaks} MB; after imports"
            f" {figures['before_kb'] / 1024:.1f} MB, after the plan {figures['planned_kb'] / 1024:.1f} MB)"
        )
    if len(results) < 2:
        return {}
    first, last = results[0], results[-1]
    per_charge = (last["peak_kb"] - first["peak_kb"]) * 1024 / (last["charges"] - first["charges"])
    print(f"  growth {sims_list[0]:,} -> {sims_list[-1]:,} SIMs: {per_charge:.0f} bytes per charge  (goal <= 500)")
    return {"per_charge": per_charge, "base_kb": first["peak_kb"], "base_charges": first["charges"]}


def project(args: argparse.Namespace, speed: dict[str, float], mem: dict[str, float]) -> None:
    sims = args.project_sims
    rows = sims * args.project_rows_per_sim
    charges = sims * args.project_charges_per_sim
    size = rows * args.project_bytes_per_row
    packets = -(-charges // 500)
    s3 = size / (args.s3_mb_per_s * 1e6)
    plan = rows * speed["plan_per_row"]
    send_cpu = charges * speed["packets_per_charge"]
    send_wait = packets / args.concurrency * args.packet_seconds
    # The next segment is read from S3 (on a thread) while polars scans one: the read and the plan overlap.
    # Packets are built by the threads that wait on CloudBlue.
    read_and_plan = max(s3, plan)
    total = read_and_plan + max(send_cpu, send_wait)
    print(
        f"  {sims:,} SIMs: {rows / 1e6:,.0f} M rows, {size / 1e9:.1f} GB, {charges / 1e6:.1f} M charges,"
        f" {packets:,} packets of 500"
    )
    print(f"  read from S3 at {args.s3_mb_per_s} MB/s:                 {s3:7.0f} s")
    print(f"  plan at {speed['plan_per_row'] * 1e6:.2f} µs a row (this machine, 2 threads): {plan:7.0f} s")
    print(
        f"  send: build {send_cpu:.0f} s of packets, {packets:,} packets / {args.concurrency} at a time x"
        f" {args.packet_seconds} s = {send_wait:.0f} s:  {max(send_cpu, send_wait):7.0f} s"
    )
    print(f"  read and plan overlap (a segment is read while the one before is scanned): {read_and_plan:7.0f} s")
    print(f"  total                                      {total:7.0f} s  (Lambda's limit 900 s)")
    spare = 900 - read_and_plan
    print(
        f"  it fits while CloudBlue answers a packet of 500 in under {spare / (packets / args.concurrency):.2f} s"
        f" at {args.concurrency} at a time ({spare / (packets / (2 * args.concurrency)):.2f} s at"
        f" {2 * args.concurrency}: IMPORT_CONCURRENCY)"
    )
    if mem:
        peak = mem["base_kb"] * 1024 + (charges - mem["base_charges"]) * mem["per_charge"]
        print(
            f"  memory: {mem['base_kb'] / 1024:.0f} MB + {mem['per_charge']:.0f} B x {charges / 1e6:.1f} M charges"
            f" = {peak / 2**20:,.0f} MB peak  (ImportCharges MemorySize in template.yaml)"
        )
    print(
        f"  /tmp: two segments of the CSV at a time (one written, one scanned), {2 * SEGMENT_BYTES // 2**20} MB"
        " (EphemeralStorage in template.yaml)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=16_000, help="SIMs of the simulator's CSV (about 110 rows a SIM)")
    parser.add_argument("--file", type=Path, help="benchmark this CSV instead (for example a real bill)")
    parser.add_argument("--month", default=MONTH, help="billing month of --file")
    parser.add_argument("--mapping", type=Path, default=MAPPING, help="mapping of --file")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each timing (the best counts)")
    parser.add_argument("--memory-sims", type=int, nargs="*", default=[10_000, 40_000], help="SIMs of the memory runs")
    parser.add_argument("--memory-runs", type=int, default=3, help="fresh processes per size (the median counts)")
    parser.add_argument("--project-sims", type=int, default=1_000_000)
    parser.add_argument("--project-rows-per-sim", type=int, default=114, help="a real-shaped month (issue 10)")
    parser.add_argument("--project-bytes-per-row", type=int, default=113)
    parser.add_argument("--project-charges-per-sim", type=int, default=4)
    parser.add_argument("--s3-mb-per-s", type=int, default=60, help="assumed S3 read rate of one Lambda stream")
    parser.add_argument("--packet-seconds", type=float, default=0.5, help="assumed CloudBlue time per packet")
    parser.add_argument("--concurrency", type=int, default=8, help="packets in flight (IMPORT_CONCURRENCY)")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.month, args.mapping)
        return

    mapping = parse_mapping(args.mapping.read_text(encoding="utf-8"), str(args.mapping))
    print(f"Python {sys.version.split()[0]}, {sys.platform}")
    with tempfile.TemporaryDirectory(prefix="soracharge-bench-") as tmp:
        work = Path(tmp)
        if args.file:
            path = args.file
            print(f"(a) {path}: {path.stat().st_size / 1e6:.1f} MB")
        else:
            path = work / "billing.csv"
            _, seconds = timed(write_simulator_csv, path, args.sims)
            print(f"(a) the simulator's CSV, {args.sims:,} SIMs: {path.stat().st_size / 1e6:.1f} MB in {seconds:.1f} s")
        print(f"(b) throughput, best of {args.repeat}:")
        speed = throughput(path, args.month, mapping, args.repeat)
        mem: dict[str, float] = {}
        sims_list = [sims for sims in args.memory_sims if sims > 0]
        if sims_list and not args.file:
            print("(c) peak memory of planning and building every packet, in fresh processes:")
            mem = memory(work, sims_list, args.mapping, max(1, args.memory_runs))
        print("(d) projection onto one ImportCharges invocation:")
        project(args, speed, mem)


if __name__ == "__main__":
    main()
