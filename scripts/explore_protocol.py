"""Run the whole exploration of the import protocol (tests/protocol/explore.py) and print what it found.

    .venv/bin/python scripts/explore_protocol.py                 # every case, on 2 processes
    .venv/bin/python scripts/explore_protocol.py --sample 200 --seed 7
    .venv/bin/python scripts/explore_protocol.py --case 1234     # one case, by its number, with its steps

Prints the cases run (and those that do not arise: the attempt ended before the step named), the charges
lost and doubled, the files that ended without an alert, stuck or with an untruthful report, and each
failing case with the command that replays it. Exits 1 when any case failed.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "CRITICAL")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")


def _quiet() -> None:
    logging.disable(logging.CRITICAL)


def _run_numbers(numbers: list[int]) -> list[tuple[int, str, str | None, dict[str, int]]]:
    """Run the cases of these numbers (in a worker with its own CloudBlue simulator)."""
    _quiet()
    from soracharge_local.simulators import CloudBlueSimulator

    from tests.protocol.explore import every_case, run
    from tests.protocol.world import shared_aws

    results = []
    with CloudBlueSimulator() as cloudblue, shared_aws():
        cases = list(every_case(cloudblue))
        for number in numbers:
            outcome = run(cases[number], cloudblue)
            verdict = outcome.verdict
            counts = {name: len(values) for name, values in vars(verdict).items()} if verdict else {}
            failed = None if verdict is None or verdict.ok else f"{outcome.where} -> {verdict}"
            results.append((number, str(cases[number]), failed, counts if verdict else {"n/a": 1}))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, help="run this many cases drawn with --seed (every lost answer too)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, action="append", help="run only this case (by its number)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    _quiet()
    from soracharge_local.simulators import CloudBlueSimulator

    from tests.protocol.explore import LostAnswer, every_case

    with CloudBlueSimulator() as cloudblue:
        cases = list(every_case(cloudblue))
    if args.case:
        numbers = args.case
    elif args.sample:
        import random

        lost = [n for n, case in enumerate(cases) if isinstance(case, LostAnswer)]
        rest = [n for n, case in enumerate(cases) if not isinstance(case, LostAnswer)]
        numbers = lost + random.Random(args.seed).sample(rest, min(args.sample, len(rest)))  # noqa: S311 - a sample
    else:
        numbers = list(range(len(cases)))
    print(f"{len(cases)} cases in all; running {len(numbers)} on {args.workers} processes", flush=True)
    started = time.monotonic()
    chunks = [numbers[i :: args.workers * 32] for i in range(args.workers * 32)]
    totals: Counter[str] = Counter()
    failures: list[tuple[int, str, str]] = []
    # spawn, not fork: polars' threads do not survive a fork (the child hangs in its first scan)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for results in pool.map(_run_numbers, [c for c in chunks if c]):
            for number, case, failed, counts in results:
                totals.update(counts)
                totals["cases"] += 1
                if failed is not None:
                    failures.append((number, case, failed))
                    print(f"  FAILED case {number}: {case}: {failed}", flush=True)
            print(
                f"  {totals['cases']} of {len(numbers)} cases, {len(failures)} failing, "
                f"{time.monotonic() - started:.0f} s",
                flush=True,
            )
    ran = totals["cases"] - totals["n/a"]
    print(f"cases run:                     {ran}   (and {totals['n/a']} that do not arise: an attempt ended first)")
    print(f"charges lost:                  {totals['lost']}")
    print(f"charges doubled:               {totals['doubled']}")
    print(f"files ended without an alert:  {totals['unalerted']}")
    print(f"files stuck:                   {totals['stuck']}")
    print(f"reports naming a session never closed: {totals['untruthful']}")
    print(f"failing cases:                 {len(failures)}")
    print(f"wall time:                     {time.monotonic() - started:.0f} s")
    for number, case, failed in sorted(failures)[:50]:
        print(f"  case {number}: {case}: {failed}")
        print(f"    replay: .venv/bin/python scripts/explore_protocol.py --case {number}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
