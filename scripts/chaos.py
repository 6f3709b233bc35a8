"""Run many chaos cycles end to end and print what happened (exit 1 when a cycle went wrong).

    .venv/bin/python scripts/chaos.py --cycles 1000          # on a seed drawn now (printed)
    .venv/bin/python scripts/chaos.py --seed 4242 --cycles 120

Each cycle exports a month with the export state machine, imports it from the S3 event and follows the
CloudBlue session, with 0-3 faults drawn from ``random.Random(seed * 1000 + cycle)`` (see
tests/chaos/harness.py), then follows the runbook as a person would: each alert's action, exactly as the
alert states it.
Printed: cycles, faults armed and fired (per kind), charges lost, charges doubled, cycles whose CloudBlue
does not hold what the CSV makes (worked out apart from the import, tests/reference.py), runs failed with a
reason, runs failed without one, re-runs that did not complete, and every cycle that went wrong
with the command that replays it.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.harness import ChaosWorld, Totals, run_cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=300, help="how many cycles (default 300, at most 1000)")
    parser.add_argument(
        "--seed", type=int, default=None, help="the seed the faults are drawn from (default: one drawn now, printed)"
    )
    parser.add_argument("--start", type=int, default=0, help="the first cycle number (to replay one cycle)")
    parser.add_argument("--verbose", action="store_true", help="print every cycle, not only those that went wrong")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = secrets.randbelow(1_000_000)
    if args.start + args.cycles > 1000:
        parser.error("--start + --cycles must stay within 1000 (cycle C of seed S draws from S * 1000 + C)")

    started = time.monotonic()
    totals = Totals()
    with tempfile.TemporaryDirectory(prefix="soracharge-chaos-") as workdir, ChaosWorld(Path(workdir)) as world:
        print(f"world up in {time.monotonic() - started:.1f} s; seed {args.seed}, cycles {args.cycles}", flush=True)
        for result in run_cycles(world, args.seed, args.cycles, start=args.start):
            totals.add(result)
            if args.verbose or not result.good:
                print(f"[{result.seconds:.1f} s] {result.describe()}", flush=True)
            elif totals.cycles % 25 == 0:
                print(f"... {totals.cycles} cycles, {time.monotonic() - started:.0f} s", flush=True)
    elapsed = time.monotonic() - started

    print()
    print(f"cycles:                       {totals.cycles}")
    print(f"faults armed / fired:         {sum(totals.faults.values())} / {sum(totals.fired.values())}")
    for name, count in sorted(totals.faults.items()):
        print(f"  {name:<28}{count:>5} / {totals.fired[name]}")
    print(f"charges lost:                 {totals.lost}")
    print(f"charges doubled:              {totals.doubled}")
    print(f"cycles not as the CSV makes:  {totals.against_csv}")
    print(f"runs failed with a reason:    {totals.failed_with_reason}")
    print(f"runs failed without one:      {totals.failed_without_reason}")
    print(f"re-runs that did not complete:{totals.reruns_not_completed:>2}")
    print(f"harness errors:               {totals.harness_errors}")
    if totals.notes:
        print("notes:")
        for note, count in sorted(totals.notes.items()):
            print(f"  {note}: {count} (first: {totals.note_examples[note][:200]})")
    print(f"wall time:                    {elapsed:.0f} s ({elapsed / max(totals.cycles, 1):.2f} s per cycle)")
    print(f"seed:                         {args.seed} (cycles {args.start} to {args.start + args.cycles - 1})")
    if totals.bad:
        print(f"cycles that went wrong ({len(totals.bad)}):")
        for bad in totals.bad:
            print(f"  .venv/bin/python scripts/chaos.py --seed {bad.seed} --start {bad.index} --cycles 1 --verbose")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
