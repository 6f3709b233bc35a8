"""Compare the fast path (``soracharge/logic/billing_frame.py``) of a git revision with the working tree's, in
one process, alternated: on a shared machine whose speed drifts within minutes, a difference of a few per cent
shows only when both versions run side by side. Prints figures and asserts nothing (bench/README.md).

    .venv/bin/python bench/compare_fast_path.py --file /tmp/bill.csv --against eaef473 --rounds 12

Each round: a bare ``csv.reader`` pass (the yardstick), then each version's plan from the file and from a
stream (as ``bench/import_throughput.py`` plans them), the versions' order swapped every round. Only
``billing_frame.py`` is taken from the revision: the rest of the package is the working tree's, so compare
revisions whose other modules are alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import soracharge.logic.billing_frame as working
from import_throughput import MAPPING, MONTH, bare_csv_reader, plan_from_file, plan_from_stream
from soracharge.models.mapping import parse_mapping

ROOT = Path(__file__).resolve().parent.parent
MODULE = "layers/soracharge/soracharge/logic/billing_frame.py"


def module_at(revision: str, workdir: Path) -> ModuleType:
    """``billing_frame`` as it was at ``revision``, loaded under a name of its own."""
    source = subprocess.run(  # noqa: S603 - git, with a revision the user named
        ["git", "show", f"{revision}:{MODULE}"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = workdir / "billing_frame_then.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("soracharge.logic.billing_frame_then", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def use(module: ModuleType) -> None:
    """Make ``plan_import`` read with ``module`` (it imports these three names from billing_frame each call)."""
    for name in ("read_frame", "FrameCharges", "canonical"):
        setattr(working, name, getattr(module, name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, required=True, help="the CSV (import_throughput.py writes one)")
    parser.add_argument("--month", default=MONTH)
    parser.add_argument("--mapping", type=Path, default=MAPPING)
    parser.add_argument("--against", required=True, help="the git revision whose billing_frame.py to compare")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    mapping = parse_mapping(args.mapping.read_text(encoding="utf-8"), str(args.mapping))
    with tempfile.TemporaryDirectory() as workdir:
        then = module_at(args.against, Path(workdir))
        now = ModuleType("now")
        for name in ("read_frame", "FrameCharges", "canonical"):
            setattr(now, name, getattr(working, name))
        versions = {args.against: then, "working tree": now}
        times: dict[tuple[str, str], list[float]] = {(v, k): [] for v in versions for k in ("file", "stream")}
        yardstick: list[float] = []
        for index in range(args.rounds):
            started = time.perf_counter()
            bare_csv_reader(args.file)
            yardstick.append(time.perf_counter() - started)
            order = list(versions) if index % 2 == 0 else list(reversed(versions))
            for version in order:
                use(versions[version])
                for kind, plan in (("file", plan_from_file), ("stream", plan_from_stream)):
                    started = time.perf_counter()
                    planned = plan(args.file, args.month, mapping)
                    times[(version, kind)].append(time.perf_counter() - started)
                    if type(planned.charges).__name__ != "FrameCharges":
                        raise SystemExit(f"{version}: the file left the fast path; compare on a file it takes")
        use(now)
    best, middle = min(yardstick), statistics.median(yardstick)
    print(f"csv.reader: best {best:.3f} s, median {middle:.3f} s ({args.rounds} rounds)")
    for (version, kind), values in times.items():
        low, median = min(values), statistics.median(values)
        print(
            f"  {version:>14} {kind:6}: best {low:.3f} s ({best / low:.2f}x), "
            f"median {median:.3f} s ({middle / median:.2f}x)"
        )


if __name__ == "__main__":
    main()
