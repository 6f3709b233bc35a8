"""Run the whole exploration of the import protocol (tests/protocol/explore.py) and print what it found.

    .venv/bin/python scripts/explore_protocol.py                 # every case, on 2 processes
    .venv/bin/python scripts/explore_protocol.py --sample 200 --seed 7
    .venv/bin/python scripts/explore_protocol.py --case 1234     # one case, by its number, with its steps
    .venv/bin/python scripts/explore_protocol.py --results out/explore.jsonl   # resumable: run it again to go on

With ``--results`` each case's result is appended to that file as it is known (gzip-compressed when its
name ends in ``.gz``), with the commit of the code that ran it, and a run with the same file runs only the
cases it does not hold yet. A file holding another commit's results is refused, and so is recording from a
checkout whose code differs from its commit: each result in a file is one commit's. The summary counts every
case in the file, so a run that was stopped and started again reports the whole exploration. The script runs
its own checkout's code: to go on with a file of another commit, run it from a checkout of that commit
(``git worktree add ../explore COMMIT``, then ``../explore/scripts/explore_protocol.py`` with this venv's python).
``docs/reliability/exploration.jsonl.gz`` holds the whole run the Reliability page reports.

Prints the cases run (and those that do not arise: the attempt ended before the step named), the charges
lost and doubled, the files that ended without an alert, stuck or with an untruthful report, and each
failing case with the command that replays it. Exits 1 when any case failed.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This checkout's code, whatever the venv installed (an editable install points at another checkout); spawned
# workers start with this sys.path too.
sys.path[:0] = [str(ROOT), str(ROOT / "layers/soracharge"), str(ROOT / "local")]
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


#: What the exploration runs: a change anywhere here makes other results (the docs and other scripts do not).
CODE = ("layers", "functions", "local", "tests", "examples", "scripts/explore_protocol.py", "pyproject.toml", "uv.lock")


def _commit() -> str:
    """The commit of the code this run runs; refused when the checkout's code differs from it, or when the code
    imported is not this checkout's."""
    import soracharge
    import soracharge_local

    import tests

    for module in (soracharge, soracharge_local, tests):
        if not Path(str(module.__file__)).resolve().is_relative_to(ROOT):
            raise SystemExit(f"{module.__name__} is imported from {module.__file__}, not from this checkout ({ROOT})")
    git = ["git", "-C", str(ROOT)]
    status = [*git, "status", "--porcelain", "--", *CODE]
    changed = subprocess.run(status, capture_output=True, text=True, check=True)  # noqa: S603 - git, our arguments
    if changed.stdout.strip():
        raise SystemExit(
            "--results records each result with the commit that ran it, and this checkout's code differs from its "
            f"commit:\n{changed.stdout}commit it, or run from a clean checkout (git worktree add)"
        )
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)  # noqa: S603
    return head.stdout.strip()


def _lines(path: Path) -> list[str]:
    """The results' whole lines (gzip-compressed when the name ends in ``.gz``): what a run killed as it wrote
    cut short is left out (those cases run again)."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        text = data.decode()
    else:
        text, rest = "", data
        while rest:
            member = zlib.decompressobj(wbits=31)  # one gzip member
            try:
                text += member.decompress(rest).decode()
            except (zlib.error, UnicodeDecodeError):
                break
            if not member.eof:
                break  # cut short
            rest = member.unused_data
    lines = text.splitlines(keepends=True)
    return [line for line in lines if line.endswith("\n") and line.strip()]


def _append(path: Path, lines: list[str]) -> None:
    """Append a batch of lines as one write (one whole gzip member for a ``.gz`` name), on disk when it returns."""
    data = "".join(lines).encode()
    with path.open("ab") as file:
        file.write(gzip.compress(data) if path.suffix == ".gz" else data)
        file.flush()
        os.fsync(file.fileno())


def _done(path: Path | None, total: int, commit: str) -> dict[int, tuple[str | None, dict[str, int]]]:
    """The results a ``--results`` file holds already (refused when they come from another commit)."""
    if path is None or not path.exists():
        return {}
    done: dict[int, tuple[str | None, dict[str, int]]] = {}
    for line in _lines(path):
        record = json.loads(line)
        if record.get("commit") != commit or record["of"] != total:
            raise SystemExit(
                f"{path} holds results of commit {record.get('commit')} ({record['of']} cases), this checkout is "
                f"{commit} ({total} cases): run that commit (git worktree add DIR {record.get('commit')}), or "
                "start another file"
            )
        done[record["number"]] = (record["failed"], record["counts"])
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
    commit = _commit() if args.results else ""
    done = _done(args.results, len(cases), commit)
    totals: Counter[str] = Counter()
    failures: list[tuple[int, str, str]] = []
    for number in numbers:
        if number in done:
            failed, counts = done[number]
            totals.update(counts)
            totals["cases"] += 1
            if failed is not None:
                failures.append((number, str(cases[number]), failed))
    todo = [number for number in numbers if number not in done]
    print(
        f"{len(cases)} cases in all; {len(numbers)} chosen, {len(numbers) - len(todo)} of them in {args.results}"
        f"{f' (commit {commit[:7]})' if commit else ''}; running {len(todo)} on {args.workers} processes",
        flush=True,
    )
    started = time.monotonic()
    size = 40  # cases a task: small, so a stopped run loses little
    chunks = [todo[i :: max(1, len(todo) // size)] for i in range(max(1, len(todo) // size))]
    # spawn, not fork: polars' threads do not survive a fork (the child hangs in its first scan). A worker keeps one
    # simulator for all its cases, which holds every request and charge it was sent (4.3 GB a worker after 10,000
    # cases): a new worker every 25 tasks (1,000 cases) keeps the memory bounded.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=spawn, max_tasks_per_child=25) as pool:
        for results in pool.map(_run_numbers, [c for c in chunks if c]):
            lines = []
            for number, case, failed, counts in results:
                totals.update(counts)
                totals["cases"] += 1
                kept = {name: count for name, count in counts.items() if count}
                lines.append({"commit": commit, "of": len(cases), "number": number, "failed": failed, "counts": kept})
                if failed is not None:
                    failures.append((number, case, failed))
                    print(f"  FAILED case {number}: {case}: {failed}", flush=True)
            if args.results:
                _append(args.results, [json.dumps(line) + "\n" for line in lines])
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
