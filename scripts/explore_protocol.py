"""Run the whole exploration of the import protocol (tests/protocol/explore.py) and print what it found.

    .venv/bin/python scripts/explore_protocol.py                 # every case, on 2 processes
    .venv/bin/python scripts/explore_protocol.py --sample 200 --seed 7
    .venv/bin/python scripts/explore_protocol.py --case 1234     # one case, by its number, with its steps
    .venv/bin/python scripts/explore_protocol.py --results out/explore.jsonl   # resumable: run it again to go on

With ``--results`` each case's result is appended to that file as it is known, and a run with the same file
runs only the cases it does not hold yet (at the same case count: a file from code with other steps is
refused). The summary counts every case in the file, so a run that was stopped and started again reports
the whole exploration.

Prints the cases run (and those that do not arise: the attempt ended before the step named), the charges
lost and doubled, the files that ended without an alert, stuck or with an untruthful report, and each
failing case with the command that replays it. Exits 1 when any case failed.
"""

from __future__ import annotations

import argparse
import atexit
import json
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


_WORKER: dict[str, object] = {}


def _worker_world() -> tuple[object, list[object]]:
    """This worker's CloudBlue simulator and moto, started once, with the list of cases (computed once)."""
    if not _WORKER:
        from contextlib import ExitStack

        from soracharge_local.simulators import CloudBlueSimulator

        from tests.protocol.explore import every_case
        from tests.protocol.world import shared_aws

        stack = ExitStack()  # lives as long as the worker process, closed as it exits
        atexit.register(stack.close)
        cloudblue = stack.enter_context(CloudBlueSimulator())
        stack.enter_context(shared_aws())
        _WORKER.update(stack=stack, cloudblue=cloudblue, cases=list(every_case(cloudblue)))
    return _WORKER["cloudblue"], _WORKER["cases"]  # type: ignore[return-value]


def _run_numbers(numbers: list[int]) -> list[tuple[int, str, str | None, dict[str, int]]]:
    """Run the cases of these numbers (in a worker with its own CloudBlue simulator)."""
    _quiet()
    from tests.protocol.explore import run

    cloudblue, cases = _worker_world()
    results = []
    for number in numbers:
        outcome = run(cases[number], cloudblue)  # type: ignore[arg-type]
        verdict = outcome.verdict
        counts = {name: len(values) for name, values in vars(verdict).items()} if verdict else {}
        failed = None if verdict is None or verdict.ok else f"{outcome.where} -> {verdict}"
        results.append((number, str(cases[number]), failed, counts if verdict else {"n/a": 1}))
    return results


def _done(path: Path | None, total: int) -> dict[int, tuple[str, str | None, dict[str, int]]]:
    """The results a ``--results`` file holds already (refused when it comes from another set of cases)."""
    if path is None or not path.exists():
        return {}
    done: dict[int, tuple[str, str | None, dict[str, int]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record["of"] != total:
            raise SystemExit(f"{path} holds results of {record['of']} cases, not {total}: another version's steps")
        done[record["number"]] = (record["case"], record["failed"], record["counts"])
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, help="run this many cases drawn with --seed (every lost answer too)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, action="append", help="run only this case (by its number)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, help="append each result here; run only the cases not in it yet")
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
    done = _done(args.results, len(cases))
    totals: Counter[str] = Counter()
    failures: list[tuple[int, str, str]] = []
    for number in numbers:
        if number in done:
            case, failed, counts = done[number]
            totals.update(counts)
            totals["cases"] += 1
            if failed is not None:
                failures.append((number, case, failed))
    todo = [number for number in numbers if number not in done]
    print(
        f"{len(cases)} cases in all; {len(numbers)} chosen, {len(numbers) - len(todo)} of them in {args.results}; "
        f"running {len(todo)} on {args.workers} processes",
        flush=True,
    )
    started = time.monotonic()
    size = 40  # cases a task: small, so a stopped run loses little
    chunks = [todo[i :: max(1, len(todo) // size)] for i in range(max(1, len(todo) // size))]
    record = args.results.open("a") if args.results else None
    # spawn, not fork: polars' threads do not survive a fork (the child hangs in its first scan)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for results in pool.map(_run_numbers, [c for c in chunks if c]):
            for number, case, failed, counts in results:
                totals.update(counts)
                totals["cases"] += 1
                if record is not None:
                    line = {"of": len(cases), "number": number, "case": case, "failed": failed, "counts": counts}
                    record.write(json.dumps(line) + "\n")
                if failed is not None:
                    failures.append((number, case, failed))
                    print(f"  FAILED case {number}: {case}: {failed}", flush=True)
            if record is not None:
                record.flush()
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
