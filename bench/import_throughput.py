"""How fast ``plan_import`` reads a detailed billing CSV, and how its memory grows with the rows.

    .venv/bin/python bench/import_throughput.py                # 1,000,000 rows, memory at 1M and 4M rows
    .venv/bin/python bench/import_throughput.py --rows 200000 --memory-rows 0   # quick look, no memory runs

It prints figures and asserts nothing. bench/README.md says what they mean and holds the last ones measured.

(a) A CSV of N rows in the simulator's layout (``local/soracharge_local/simulators/soracom_data.py``:
    BOM, CRLF, the same columns, Japanese item names and tags, quoted group names, negative discount
    and free-tier rows). ``--layout fixed-sims`` (default) keeps the SIMs at ``--sims`` (8,000) and
    writes more data-usage rows per SIM and day as N grows, so the number of charges does not change
    with N; ``--layout simulator`` calls the simulator's own generator with N/63 SIMs (one row per SIM,
    day and item: the charges grow with N).
(b) Throughput: the best of ``--repeat`` runs of a bare ``csv.reader`` loop and of ``plan_import`` with
    ``examples/mapping.example.yaml``, interleaved, over the same file; rows/s and the ratio (goal >= 0.5).
(c) Memory: ``plan_import`` in a fresh interpreter over a 1M-row and a 4M-row file (fixed SIMs), its
    peak RSS (``VmHWM``: see :func:`peak_rss_kb` for why not ``ru_maxrss`` alone); the ratio (goal
    <= 1.2) and the peak (goal < 300 MB).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from soracharge.logic.charges import plan_import
from soracharge.models.charges import ImportPlan
from soracharge.models.mapping import Mapping, parse_mapping
from soracharge_local.simulators.soracom_data import (
    COLUMNS,
    CUSTOMERS,
    GROUPS,
    days_in_month,
    generate_billing_csv,
)

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "examples" / "mapping.example.yaml"
MONTH = "202610"
CURRENCY = "JPY"

# The simulator's jp bill items (soracom_data._ITEMS["jp"]): name, unit price.
BASIC = ("基本料金 (plan-D)", "10")
DATA = ("データ通信料金 (plan-D)", "0.2")
SMS = ("SMS 送信料金", "3")
DISCOUNT = 'ボリュームディスカウント "IoT スターター, 10%"'
OPERATOR_ROWS = [
    ("SORACOM Harvest Data 書き込みリクエスト料金", "0.004", "250000", "1000.000"),
    ("サポート月額料金 (Business)", "3000", "1", "3000"),
    ("無料利用枠 (データ通信 500MB)", "-0.2", "500", "-100.0"),
]


def write_fixed_sims_csv(path: Path, rows: int, sims: int, month: str = MONTH) -> Decimal:
    """Write ``rows`` rows for ``sims`` SIMs; return Σ amount (what the bill's amount would be)."""
    days = [f"{month}{day:02d}" for day in range(1, days_in_month(month) + 1)]
    monthly_rows = sims + 1 + len(OPERATOR_ROWS)
    daily_budget = max(0, rows - monthly_rows)
    rng = random.Random(f"bench:{rows}:{sims}")  # noqa: S311 (test data, not secrets)
    unit = Decimal(DATA[1])
    data_table: list[tuple[str, str]] = []
    for tenths in range(601):  # up to 60.0 MB a session, as the simulator
        megabytes = Decimal(tenths) / 10
        data_table.append((f"{tenths // 10}.{tenths % 10}", format((unit * megabytes).quantize(Decimal("0.01")), "f")))
    counts = [0] * len(data_table)
    sim_tags: list[tuple[str, str, str, str, str]] = []
    for index in range(sims):
        imsi = f"44010{3_000_000_000 + index:010d}"
        customer = "" if index % 5 == 4 else CUSTOMERS[index % 3]
        vpg = "0f8fad5b-d9cb-469f-a165-70867728950e" if index % 4 == 0 else ""
        sim_tags.append((imsi, vpg, f"センサー {index + 1}", customer, GROUPS[(index // 2) % 3]))

    basic_rows = 0
    total = Decimal(0)
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("\ufeff")
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        # As the simulator: SIM by SIM, day by day (the basic fee, then the day's data sessions).
        sim_days = sims * len(days)
        for index, (imsi, vpg, name, customer, group) in enumerate(sim_tags):
            batch: list[tuple[str, ...]] = []
            for day_index, day in enumerate(days):
                # Spread the budget evenly: this SIM-day gets the rows up to its share of the total.
                end = daily_budget * (index * len(days) + day_index + 1) // sim_days
                start = daily_budget * (index * len(days) + day_index) // sim_days
                if end == start:
                    continue
                batch.append((imsi, vpg, day, BASIC[0], BASIC[1], "1", "10", name, customer, group))
                basic_rows += 1
                for _ in range(end - start - 1):
                    pick = rng.randrange(601)
                    counts[pick] += 1
                    quantity, amount = data_table[pick]
                    batch.append((imsi, vpg, day, DATA[0], DATA[1], quantity, amount, name, customer, group))
            writer.writerows(batch)
        for index, (imsi, vpg, name, customer, group) in enumerate(sim_tags):
            count = index % 41
            total += Decimal(SMS[1]) * count
            writer.writerow((imsi, vpg, month, SMS[0], SMS[1], str(count), str(3 * count), name, customer, group))
        imsi, vpg, name, customer, group = sim_tags[0]
        writer.writerow((imsi, vpg, month, DISCOUNT, "-31.00", "1", "-31.00", name, customer, group))
        total += Decimal("-31.00")
        for item, unit_price, quantity, amount in OPERATOR_ROWS:
            writer.writerow(("", "", month, item, unit_price, quantity, amount, "", "", ""))
            total += Decimal(amount)
    total += Decimal(10) * basic_rows
    total += sum((Decimal(data_table[i][1]) * n for i, n in enumerate(counts) if n), Decimal(0))
    return total


def write_simulator_csv(path: Path, rows: int, month: str = MONTH) -> Decimal:
    """The simulator's own file with enough SIMs for about ``rows`` rows (63 rows a SIM in October)."""
    per_sim = 2 * days_in_month(month) + 1
    bill = generate_billing_csv(month, coverage="jp", sims=max(1, round(rows / per_sim)))
    path.write_bytes(bill.content)
    return bill.total


def bare_csv_reader(path: Path) -> int:
    rows = 0
    with path.open("rb") as raw:
        for _row in csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")):
            rows += 1
    return rows - 1


def run_plan(path: Path, mapping: Mapping) -> tuple[ImportPlan, float]:
    """plan_import over the file, and its duration (the plan is freed later, by the caller)."""
    with path.open("rb") as raw:
        started = time.perf_counter()
        plan = plan_import(raw, month=MONTH, currency=CURRENCY, mapping=mapping, source=str(path))
        return plan, time.perf_counter() - started


def throughput(path: Path, expected_total: Decimal, repeat: int) -> None:
    mapping = parse_mapping(MAPPING.read_text(encoding="utf-8"), str(MAPPING))
    bare_times, plan_times = [], []
    bare_rows = 0
    plan: ImportPlan | None = None
    for _ in range(repeat):
        plan = None  # free the previous plan outside the timed part
        started = time.perf_counter()
        bare_rows = bare_csv_reader(path)
        bare_times.append(time.perf_counter() - started)
        plan, seconds = run_plan(path, mapping)
        plan_times.append(seconds)
    assert plan is not None
    rows, charges, charges_sum, problems = plan.rows, len(plan.charges), plan.charges_sum, plan.problem_count
    bare, best = min(bare_times), min(plan_times)
    print(f"  rows {rows:,} (csv.reader saw {bare_rows:,}), charges {charges:,}, problems {problems}")
    print(f"  Σ totalPrice {charges_sum} == Σ amount written {expected_total}: {charges_sum == expected_total}")
    print(f"  bare csv.reader : {bare:6.3f} s  {rows / bare:12,.0f} rows/s  (runs: {_times(bare_times)})")
    print(f"  plan_import     : {best:6.3f} s  {rows / best:12,.0f} rows/s  (runs: {_times(plan_times)})")
    print(f"  ratio plan_import / csv.reader = {bare / best:.2f}  (goal >= 0.5)")


def _times(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


def peak_rss_kb() -> tuple[int, int]:
    """This process's peak RSS in KiB: (its own, ``ru_maxrss``).

    Linux carries ``ru_maxrss`` over fork and exec: a child started by a big parent reports at
    least the parent's peak (this script's parent reaches about 110 MB). ``VmHWM`` in
    /proc/self/status is the high-water mark of the child's own memory since its exec, so it is the
    figure reported; ``ru_maxrss`` stands in where /proc is missing (in bytes on macOS).
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        maxrss //= 1024
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return maxrss, maxrss
    own = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), maxrss)
    return own, maxrss


def peak_memory_child(path: Path) -> None:
    """In a fresh interpreter: peak RSS after the imports, then after plan_import (printed as JSON)."""
    mapping = parse_mapping(MAPPING.read_text(encoding="utf-8"), str(MAPPING))
    before, _ = peak_rss_kb()
    plan, _ = run_plan(path, mapping)
    rows, charges, problems = plan.rows, len(plan.charges), plan.problem_count
    peak, maxrss = peak_rss_kb()
    figures = {"rows": rows, "charges": charges, "problems": problems, "before_kb": before, "peak_kb": peak}
    print(json.dumps(figures | {"ru_maxrss_kb": maxrss}))


def memory(work: Path, sizes: list[int], sims: int) -> None:
    peaks = []
    for rows in sizes:
        path = work / f"memory-{rows}.csv"
        started = time.perf_counter()
        write_fixed_sims_csv(path, rows, sims)
        written = time.perf_counter() - started
        started = time.perf_counter()
        child = subprocess.run(  # noqa: S603 (this interpreter running this script)
            [sys.executable, __file__, "--memory-child", str(path)], check=True, capture_output=True, text=True
        )
        figures = json.loads(child.stdout)
        path.unlink()
        peaks.append(figures["peak_kb"])
        peak_mb, before_mb = figures["peak_kb"] / 1024, figures["before_kb"] / 1024
        print(
            f"  {figures['rows']:>10,} rows, {figures['charges']:,} charges: peak RSS {peak_mb:6.1f} MB"
            f" (after imports {before_mb:.1f} MB, ru_maxrss {figures['ru_maxrss_kb'] / 1024:.1f} MB;"
            f" file written in {written:.1f} s,"
            f" plan_import process {time.perf_counter() - started:.1f} s)"
        )
    if len(peaks) == 2:
        print(
            f"  ratio peak {sizes[1]:,} / peak {sizes[0]:,} rows = {peaks[1] / peaks[0]:.2f}  (goal <= 1.2, < 300 MB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the throughput file")
    parser.add_argument("--sims", type=int, default=8_000, help="SIMs of the fixed-sims layout")
    parser.add_argument("--layout", choices=["fixed-sims", "simulator"], default="fixed-sims")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing (the best counts)")
    parser.add_argument(
        "--memory-rows", type=int, nargs="*", default=[1_000_000, 4_000_000], help="file sizes of the memory runs"
    )
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(args.memory_child)
        return

    print(f"Python {sys.version.split()[0]}, {sys.platform}")
    with tempfile.TemporaryDirectory(prefix="soracharge-bench-") as tmp:
        work = Path(tmp)
        path = work / "billing.csv"
        started = time.perf_counter()
        if args.layout == "simulator":
            total = write_simulator_csv(path, args.rows)
        else:
            total = write_fixed_sims_csv(path, args.rows, args.sims)
        size = path.stat().st_size
        print(f"(a) {args.layout} CSV: {size / 1e6:.1f} MB written in {time.perf_counter() - started:.1f} s")
        print(f"(b) throughput, best of {args.repeat}:")
        throughput(path, total, args.repeat)
        path.unlink()
        sizes = [rows for rows in args.memory_rows if rows > 0]
        if sizes:
            print(f"(c) peak memory of plan_import in a fresh process ({args.sims:,} SIMs):")
            memory(work, sizes, args.sims)


if __name__ == "__main__":
    main()
