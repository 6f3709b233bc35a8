"""The mutation score of each money module, from the results of the last `mutmut run` (``make mutants``).

    .venv/bin/python scripts/mutants.py
    .venv/bin/python scripts/mutants.py --survivors   # only the names of the survivors not named equivalent
    .venv/bin/python scripts/mutants.py --record      # keep mutmut's results so far in the repository
    .venv/bin/python scripts/mutants.py --restore     # give a new checkout's mutmut the recorded results
    .venv/bin/python scripts/mutants.py --sample 300  # names of up to 300 unchecked mutants of each module, drawn
                                                      # at random (--seed S, 0 unless given), for make mutants

``make mutants`` runs mutmut in ``mutants/`` (see ``[tool.mutmut]`` in pyproject.toml), which keeps each
module's results in ``mutants/mutants/<module path>.meta``: every mutant's name and the exit code of its
tests, which mutmut's own table turns into a status. Prints, per module of ``only_mutate``: its mutants,
how many the tests killed, how many survived, how many no selected test reaches, timed out or were
suspicious, not yet checked, how many survived but are named as equivalent in ``tests/equivalent_mutants.toml``
(no input tells them from the code, for the reason written there), the score: killed / (checked - equivalent), and
the score's 95 % lower bound (Wilson's interval: what a module's score is at least, when a sample of its mutants was
checked, as ``make mutants MUTMUT_SAMPLE=N`` does where a whole run takes longer than one has); then the names
of the mutants that survived and are not named equivalent (``cd mutants && ../.venv/bin/mutmut show NAME`` shows
one's change).

A whole run takes hours and mutants/ is not in the repository, so mutmut's results are recorded in
``docs/development/mutants.json.gz`` (recording and restoring need no mutmut): each module's exit code per
mutant, with the hash of each function mutmut mutated. ``make mutants`` restores a module's results before it
runs (where mutants/ has none: a new checkout) and records them after; ``--record`` during a run keeps what it
has done so far. mutmut keeps a restored result only while its function's hash is unchanged: a function
changed since is run again.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import os
import random
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Where ``make mutants`` runs mutmut: its copy of the code, and the results, are in mutants/mutants.
RESULTS = ROOT / "mutants" / "mutants"
EQUIVALENTS = ROOT / "tests" / "equivalent_mutants.toml"
#: mutmut's results kept in the repository: {module: {"exit_code_by_key": ..., "hash_by_function_name": ...}}.
RECORD = ROOT / "docs" / "development" / "mutants.json.gz"
KEPT = ("exit_code_by_key", "hash_by_function_name")
COLUMNS = (
    "mutants", "killed", "survived", "no tests", "timeout", "suspicious", "not checked", "equivalent", "score",
    "at least",
)  # fmt: skip
#: Whatever else mutmut may report (a segfault, a run cut short) counts as suspicious here.
SHOWN = {"killed", "survived", "no tests", "timeout", "not checked"}


def statuses(module: str) -> dict[str, str] | None:
    """Each mutant of one module (its path from mutants/, as in only_mutate) and its status, or None if not run."""
    from mutmut.stats import status_by_exit_code

    meta = RESULTS / f"{module}.meta"
    if not meta.is_file():
        return None
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def recorded() -> dict[str, dict[str, dict[str, object]]]:
    """The record's results by module (none before the first run records them)."""
    return json.loads(gzip.decompress(RECORD.read_bytes())) if RECORD.is_file() else {}


def record(modules: list[str]) -> str:
    """Write mutmut's results of ``modules`` (those it has) to the record, over what the record held of them."""
    kept = recorded()
    for module in modules:
        meta = RESULTS / f"{module}.meta"
        if meta.is_file():
            data = json.loads(meta.read_text())
            kept[module] = {key: data[key] for key in KEPT}
    text = json.dumps(kept, indent=1, sort_keys=True) + "\n"
    RECORD.write_bytes(gzip.compress(text.encode(), mtime=0))
    done = sum(code is not None for module in kept.values() for code in module["exit_code_by_key"].values())
    return f"{RECORD.relative_to(ROOT)}: {done} results of {len(kept)} modules"


def restore(modules: list[str]) -> str:
    """Give mutmut the recorded results of each of ``modules`` it has none of (a new checkout)."""
    kept = recorded()
    restored = []
    for module in modules:
        meta = RESULTS / f"{module}.meta"
        if module in kept and not meta.exists():
            meta.parent.mkdir(parents=True, exist_ok=True)
            empty = {"type_check_error_by_key": {}, "durations_by_key": {}, "estimated_durations_by_key": {}}
            meta.write_text(json.dumps({**kept[module], **empty}))
            restored.append(module)
    return f"restored the recorded results of {', '.join(restored) or 'no module'} from {RECORD.relative_to(ROOT)}"


def numbered(name: str) -> tuple[str, int]:
    """Sorts a function's mutants by number: x_f__mutmut_2 before x_f__mutmut_10."""
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def equivalents() -> set[tuple[str, str, str, str]]:
    """The named equivalent mutants: (module, function, removed line, added line)."""
    entries = tomllib.loads(EQUIVALENTS.read_text())["equivalent"]
    return {(e["module"], e["function"], e["removed"].strip(), e["added"].strip()) for e in entries}


def only_an_assertions_words(change: tuple[str, str, str, str] | None) -> bool:
    """Whether a mutant changes nothing but the words of an ``assert`` (its condition the same): the words are
    read only when the condition fails, a bug that a mutant of the condition, not of the words, shows. Such
    mutants are equivalent as a class, so tests/equivalent_mutants.toml need not name each."""
    if change is None:
        return False
    try:
        [removed], [added] = ast.parse(change[2]).body, ast.parse(change[3]).body
    except (SyntaxError, ValueError):
        return False
    return (
        isinstance(removed, ast.Assert)
        and isinstance(added, ast.Assert)
        and ast.dump(removed.test) == ast.dump(added.test)
        and ast.dump(removed) != ast.dump(added)
    )


@contextmanager
def in_results() -> Iterator[None]:
    """mutmut reads a mutant's change from where it ran (mutants/)."""
    before = Path.cwd()
    os.chdir(RESULTS.parent)
    try:
        yield
    finally:
        os.chdir(before)


def change(module: str, name: str) -> tuple[str, str, str, str] | None:
    """A mutant's (module, function, removed line, added line), as an equivalents entry names it; None before
    mutmut has written the module's mutants (restored results: they are run again to be told apart)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    if not (RESULTS / module).is_file():
        return None
    function, class_name = orig_function_and_class_names_from_key(name)
    diff = get_diff_for_mutant(name, path=module).splitlines()
    removed = " ".join(line[1:].strip() for line in diff if line.startswith("-") and not line.startswith("---"))
    added = " ".join(line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++"))
    return module, f"{class_name}.{function}" if class_name else function, removed, added


def survivors(found: dict[str, str]) -> list[str]:
    return sorted((name for name, status in found.items() if status in {"survived", "no tests"}), key=numbered)


def row(module: str, found: dict[str, str], equivalent: set[str]) -> list[str]:
    counts = Counter(status if status in SHOWN else "suspicious" for status in found.values())
    for name in equivalent:
        counts[found[name]] -= 1
    checked = len(found) - counts["not checked"] - len(equivalent)
    score = f"{100 * counts['killed'] / checked:.1f} %" if checked else "-"
    bound = f"{100 * wilson_lower(counts['killed'], checked):.1f} %" if checked else "-"
    cells = [str(len(equivalent)) if column == "equivalent" else str(counts[column]) for column in COLUMNS[1:-2]]
    return [module, str(len(found)), *cells, score, bound]


def wilson_lower(killed: int, checked: int, z: float = 1.96) -> float:
    """The lower end of the 95 % Wilson score interval of ``killed`` of ``checked``: the score a module has at
    least (at 95 %) when ``checked`` is a random sample of its mutants; the score itself when all were checked."""
    share = killed / checked
    centre = share + z * z / (2 * checked)
    spread = z * math.sqrt(share * (1 - share) / checked + z * z / (4 * checked * checked))
    return (centre - spread) / (1 + z * z / checked)


def sample(results: dict[str, dict[str, str] | None], size: int, seed: int) -> list[str]:
    """Up to ``size`` of each module's mutants not yet checked, drawn at random (the same for the same seed)."""
    drawn: list[str] = []
    for found in results.values():
        unchecked = sorted((name for name, status in (found or {}).items() if status == "not checked"), key=numbered)
        drawn += random.Random(seed).sample(unchecked, min(size, len(unchecked)))  # noqa: S311 (a sample, no secret)
    return drawn


def main() -> int:
    modules: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    if sys.argv[1:] == ["--record"]:
        print(record(modules))
        return 0
    if sys.argv[1:] == ["--restore"]:
        print(restore(modules))
        return 0
    results = {module: statuses(module) for module in modules}
    if sys.argv[1:2] == ["--sample"]:
        print(" ".join(sample(results, int(sys.argv[2]), int(sys.argv[4]) if sys.argv[3:4] == ["--seed"] else 0)))
        return 0
    named = equivalents()
    with in_results():
        equivalent = {
            module: {
                name
                for name in survivors(found)
                if (found_change := change(module, name)) in named or only_an_assertions_words(found_change)
            }
            for module, found in results.items()
            if found is not None
        }
    if sys.argv[1:] == ["--survivors"]:  # their names only, for make mutants to try them again on today's tests
        print(" ".join(n for m, found in results.items() if found for n in survivors(found) if n not in equivalent[m]))
        return 0
    rows = [["module", *COLUMNS]] + [
        row(module, found, equivalent[module]) for module, found in results.items() if found is not None
    ]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    for cells in rows:
        print(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
        )
    unwritten = [module for module, found in results.items() if found is not None and not (RESULTS / module).is_file()]
    if unwritten:
        print(
            f"\n{len(unwritten)} module(s) restored from the record without mutmut's mutated copies: their named "
            "equivalents cannot be told from survivors here and count as surviving above. Any make mutants run "
            "writes the copies first (e.g. make mutants MUTMUT_SAMPLE=1)."
        )
    for module, found in results.items():
        if found is None:
            print(f"\n{module}: no results yet (make mutants)")
            continue
        left = [name for name in survivors(found) if name not in equivalent[module]]
        print(f"\n{module}: {len(left)} surviving mutant(s) not named equivalent")
        for name in left:
            print(f"  {name}" + ("  (no test reaches it)" if found[name] == "no tests" else ""))
    if any(found for found in results.values()):
        print("\nA mutant's change: cd mutants && ../.venv/bin/mutmut show NAME")
        return 0
    print("No results: run make mutants", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
