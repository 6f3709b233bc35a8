"""The mutants named equivalent (tests/equivalent_mutants.toml) still name lines the money modules have.

make mutants counts a surviving mutant as equivalent when its change matches an entry; an entry whose line is gone
from its module would match nothing and hide nothing, but it would say something untrue of the code.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

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


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("mutants_script", ROOT / "scripts" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_mutmuts_results_survive_a_new_checkout_through_the_record(tmp_path, monkeypatch):
    # make mutants records mutmut's results in the repository after a run, and restores them before a run in a
    # checkout that has none (mutants/ is not in the repository): a result reaches the new checkout's mutmut
    script = load_script()
    old, new = tmp_path / "old" / "mutants" / "mutants", tmp_path / "new" / "mutants" / "mutants"
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.setattr(script, "RECORD", tmp_path / "mutants.json.gz")
    module = "soracharge/logic/shares.py"
    meta = {
        "exit_code_by_key": {
            "soracharge.logic.shares.x_split__mutmut_1": 1,
            "soracharge.logic.shares.x_split__mutmut_2": None,
        },
        "hash_by_function_name": {"x_split": "5f2b"},
        "type_check_error_by_key": {},
        "durations_by_key": {"soracharge.logic.shares.x_split__mutmut_1": 0.4},
        "estimated_durations_by_key": {},
    }
    (old / module).parent.mkdir(parents=True)
    (old / f"{module}.meta").write_text(json.dumps(meta))

    monkeypatch.setattr(script, "RESULTS", old)
    assert script.record([module, "soracharge/logic/charges.py"]) == "mutants.json.gz: 1 results of 1 modules"
    monkeypatch.setattr(script, "RESULTS", new)
    said = script.restore([module, "soracharge/logic/charges.py"])

    assert said == f"restored the recorded results of {module} from mutants.json.gz"
    restored = json.loads((new / f"{module}.meta").read_text())
    assert restored["exit_code_by_key"] == meta["exit_code_by_key"]
    assert restored["hash_by_function_name"] == meta["hash_by_function_name"]
    assert set(restored) == set(meta), "every key mutmut's loader pops, and no other"
    assert not (new / "soracharge/logic/charges.py.meta").exists()
    # a checkout whose mutmut has results of its own keeps them
    (new / f"{module}.meta").write_text("{}")
    assert script.restore([module]).startswith("restored the recorded results of no module")


def test_a_sample_draws_up_to_n_unchecked_mutants_of_each_module_the_same_for_the_same_seed():
    script = load_script()
    results: dict[str, dict[str, str] | None] = {
        "a.py": {f"a.x_f__mutmut_{n}": "not checked" if n % 2 else "killed" for n in range(1, 41)},
        "b.py": {"b.x_g__mutmut_1": "not checked", "b.x_g__mutmut_2": "survived"},
        "c.py": None,  # mutmut has not written this module's mutants
    }
    drawn = script.sample(results, 5, 7)
    assert drawn == script.sample(results, 5, 7)
    assert drawn != script.sample(results, 5, 8)
    from_a = [name for name in drawn if name.startswith("a.")]
    assert len(from_a) == 5 == len(set(from_a))
    assert all(dict(results["a.py"] or {})[name] == "not checked" for name in from_a)
    assert [name for name in drawn if name.startswith("b.")] == ["b.x_g__mutmut_1"]  # fewer than 5: all of them


@pytest.mark.parametrize(
    ("killed", "checked", "at_least"),
    # Wilson's 95 % interval, worked by hand: 10 of 10 is at least 72.2 %, 95 of 100 at least 88.8 %
    [(10, 10, 0.7225), (95, 100, 0.8882), (0, 10, 0.0), (300, 300, 0.9874)],
)
def test_the_lower_bound_is_wilsons(killed, checked, at_least):
    assert load_script().wilson_lower(killed, checked) == pytest.approx(at_least, abs=5e-5)


@pytest.mark.parametrize(
    ("removed", "added", "equivalent"),
    [
        # the words of an assertion that holds: equivalent as a class
        (
            'assert problems, "a rejected row has a problem"',
            'assert problems, "XXa rejected row has a problemXX"',
            True,
        ),
        ('assert problems, "a rejected row has a problem"', 'assert problems, "A REJECTED ROW HAS A PROBLEM"', True),
        ('assert x is not None, "set"  # pragma: no cover', "assert x is not None, None  # pragma: no cover", True),
        # its condition is not words: a mutant of it fails a test, or is named in the toml with its reason
        ('assert whole is not None, "an operator"', 'assert whole is None, "an operator"', False),
        (
            'assert problems, "a rejected row has a problem"',
            'assert not problems, "a rejected row has a problem"',
            False,
        ),
        # nor are a message's words outside an assert, or a change that is no statement
        ('raise ValueError("bad month")', 'raise ValueError("XXbad monthXX")', False),
        ('return f"{a}" if a else ""', 'return f"{a}" if a else "XXXX"', False),
        ('assert x, "m"', 'assert x, "m"', False),
        ("if x:", "if not x:", False),
    ],
)
def test_a_mutant_of_an_assertions_words_alone_is_equivalent_as_a_class(removed, added, equivalent):
    change = ("soracharge/logic/billing_csv.py", "_RowCheck.check", removed, added)
    assert load_script().only_an_assertions_words(change) is equivalent


def test_no_entry_names_a_mutant_the_assertion_rule_already_counts():
    script = load_script()
    named = [e for e in ENTRIES if script.only_an_assertions_words(("m", "f", e["removed"], e["added"]))]
    assert named == []
