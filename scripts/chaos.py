"""Run many chaos cycles end to end and print what happened (figures only: it asserts nothing).

    .venv/bin/python scripts/chaos.py --cycles 300 --seed 7

Each cycle exports a month with the export state machine, imports it from the S3 event and follows the
CloudBlue session, with 0-3 faults drawn from ``random.Random(seed * 1000 + cycle)`` (see
tests/chaos/harness.py), then re-runs the month as a person would when the run failed. Printed: cycles,
faults injected (per fault), charges lost, charges doubled, runs failed with a reason, runs failed
without one, and every cycle that went wrong with its seed, cycle number and faults, so that
``--seed N --start C --cycles 1`` replays it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.harness import ChaosWorld, Totals, run_cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=300, help="how many cycles (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="the seed the faults are drawn from (default 1)")
    parser.add_argument("--start", type=int, default=0, help="the first cycle number (to replay one cycle)")
    parser.add_argument("--verbose", action="store_true", help="print every cycle, not only those that went wrong")
    args = parser.parse_args(argv)

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
    print(f"faults injected:              {sum(totals.faults.values())}")
    for name, count in sorted(totals.faults.items()):
        print(f"  {name:<28}{count}")
    print(f"charges lost:                 {totals.lost}")
    print(f"charges doubled:              {totals.doubled}")
    print(f"runs failed with a reason:    {totals.failed_with_reason}")
    print(f"runs failed without one:      {totals.failed_without_reason}")
    print(f"re-runs that did not complete:{totals.reruns_not_completed:>2}")
    print(f"harness errors:               {totals.harness_errors}")
    if totals.notes:
        print("notes:")
        for note, count in sorted(totals.notes.items()):
            print(f"  {note}: {count} (first: {totals.note_examples[note][:200]})")
    print(f"wall time:                    {elapsed:.0f} s ({elapsed / max(totals.cycles, 1):.2f} s per cycle)")
    if totals.bad:
        print(f"cycles that went wrong ({len(totals.bad)}): " + ", ".join(f"{r.seed}/{r.index}" for r in totals.bad))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
