"""The mutants named equivalent (tests/equivalent_mutants.toml) still name lines the money modules have.

make mutants counts a surviving mutant as equivalent when its change matches an entry; an entry whose line is gone
from its module would match nothing and hide nothing, but it would say something untrue of the code.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = tomllib.loads((ROOT / "tests" / "equivalent_mutants.toml").read_text())["equivalent"]
MUTATED = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"])


def function_lines(module: str, function: str) -> list[str]:
    """The lines of ``function`` (``Class.method`` for a method) in ``module``, stripped."""
    text = (ROOT / "layers" / "soracharge" / module).read_text()
    tree = ast.parse(text)
    *owner, name = function.split(".")
    scope = tree.body
    for part in owner:
        scope = next(n for n in scope if isinstance(n, ast.ClassDef) and n.name == part).body
    found = next(n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name)
    return [line.strip() for line in text.splitlines()[found.lineno - 1 : found.end_lineno]]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e['function']}: {e['added']}")
def test_each_named_equivalent_mutant_names_a_line_its_function_has_and_says_why(entry):
    assert entry["module"] in MUTATED
    assert len(entry["why"]) > 20
    assert entry["removed"] != entry["added"]
    assert entry["removed"].strip() in function_lines(entry["module"], entry["function"])
