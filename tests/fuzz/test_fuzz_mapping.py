"""Fuzz: any text or structure into ``parse_mapping`` gives a Mapping or a MappingError naming the file."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from soracharge.errors import MappingError
from soracharge.models.mapping import Mapping, parse_mapping

from tests.fuzz.strategies import JSON_SCALARS, TEXT, fuzz, mutated

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TEXT = (REPO / "examples" / "mapping.example.yaml").read_text(encoding="utf-8")
EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_TEXT)
SOURCE = "fuzz.yaml"

#: Values a mapping field might wrongly hold: bad UUIDs, bad globs, wrong types, YAML's own surprises.
WRONG = st.one_of(
    JSON_SCALARS,
    st.sampled_from(
        [
            "tbd",
            "6513270e-269e-4d37-b2a7-4de452e6b43",
            "6513270e-269e-4d37-b2a7-4de452e6b438x",
            "6513270E-269E-4D37-B2A7-4DE452E6B438",
            " 6513270e-269e-4d37-b2a7-4de452e6b438 ",
            "{6513270e}",
            "6513270e269e4d37b2a74de452e6b438",
            "[",
            "[!",
            "[]",
            "[!]",
            "a[b",
            "*[",
            "[[]",
            "\\",
            "**",
            "?",
            0,
            -1,
            5001,
            10**20,
            1.5,
            True,
            [],
            {},
            [{}],
            {"subscription": None},
        ]
    ),
    st.lists(st.sampled_from(["*", "[", "]", "!", "?", "a", "\\", "-"]), max_size=8).map("".join),
)
YAML_STRUCTURES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(JSON_SCALARS, st.dates(), st.binary(max_size=4)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["customer", "items", "column", "match", "resource", "subscriptions", "default"]),
                TEXT,
                st.integers(),
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=15,
)


def check(text: str | dict[str, Any]) -> Mapping | None:
    message = None
    try:
        mapping = parse_mapping(text, SOURCE)
    except MappingError as exc:
        message = str(exc)
    if message is not None:
        assert SOURCE in message, f"the error does not name the file: {message}"
        return None
    assert isinstance(mapping, Mapping)
    # A valid mapping answers lookups without raising.
    mapping.customer_for("")
    mapping.item_for("基本料金 (plan-D)")
    return mapping


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


#: Text with YAML's punctuation overrepresented: tags, anchors, aliases, merge keys, flow collections.
YAML_TEXT = st.lists(
    st.one_of(
        st.characters(codec="utf-8"), st.sampled_from([*":-[]{},#|>'\"\n  !&*<=%", "!!", "<<", "- ", "&a", "*a"])
    ),
    max_size=60,
).map("".join)


@fuzz(300)
@given(text=YAML_TEXT)
@example(text="")
@example(text="---\n...\n")
@example(text="customer: {column: x}\nitems: []\n")
@example(text="items:\n- match: '[a'\n  resource: x\n")
@example(text="a: 1\na: 2\n")
@example(text="\x00")
@example(text="\ufeffcustomer: x")
@example(text="- a\n- b\n")
@example(text="%YAML 1.1\n--- x")
def test_arbitrary_text_gives_a_mapping_or_a_mapping_error(text):
    check(text)


@fuzz(250)
@given(data=YAML_STRUCTURES)
def test_arbitrary_yaml_structures(data):
    check(dump(data))
    if isinstance(data, dict):
        check(data)


@fuzz(400)
@given(data=mutated(EXAMPLE, WRONG))
def test_mutations_of_the_example_mapping(data):
    mapping = check(dump(data))
    if isinstance(data, dict):
        direct = check(data)
        assert (mapping is None) == (direct is None), "the text and the parsed dict are judged alike"


@fuzz(100)
@given(
    index=st.integers(0, len(EXAMPLE["items"]) - 1),
    match=st.text(alphabet="*?[]!-a\\^", max_size=10),
    name=st.text(alphabet="*?[]!-a\\^", max_size=10),
)
def test_any_glob_is_refused_or_matches_without_error(index, match, name):
    data = copy.deepcopy(EXAMPLE)
    data["items"][index]["match"] = match
    mapping = check(dump(data))
    if mapping is not None:
        mapping.item_for(name)


# -- regressions: bugs this fuzzing found (each raised something other than MappingError at commit cb3dea5) --


@contextlib.contextmanager
def raises_mapping_error(match: str) -> Iterator[pytest.ExceptionInfo[MappingError]]:
    """A MappingError (not a subclass) whose message names the file first, then matches ``match``."""
    with pytest.raises(MappingError, match=f"^{re.escape(SOURCE)}: {match}") as info:
        yield info
    assert info.type is MappingError, f"raised {info.type.__name__}, not MappingError"


NO_CONSTRUCTOR = "YAML syntax error: could not determine a constructor for the tag "
AS_DATA = re.escape("the YAML cannot be read as data: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=", re.escape(f"line 1, column 1: {NO_CONSTRUCTOR}'tag:yaml.org,2002:value'") + "$"),
        ("items: =", re.escape(f"line 1, column 8: {NO_CONSTRUCTOR}'tag:yaml.org,2002:value'") + "$"),
        ("2026-02-30", AS_DATA + "day is out of range for month$"),
        ("packetSize: 2026-13-01", AS_DATA + re.escape("month must be in 1..12") + "$"),
        ("x: !custom 1", re.escape(f"line 1, column 4: {NO_CONSTRUCTOR}'!custom'") + "$"),
        (
            "!!python/name:os.system x",
            re.escape(f"line 1, column 1: {NO_CONSTRUCTOR}'tag:yaml.org,2002:python/name:os.system'") + "$",
        ),
        ("packetSize: !!int abc", AS_DATA + re.escape("invalid literal for int() with base 10: 'abc'") + "$"),
        ("a: !!float x", AS_DATA + re.escape("could not convert string to float: 'x'") + "$"),
        (
            "{<<: 5}",
            re.escape("line 1, column 6: YAML syntax error: expected a mapping or list of mappings for merging")
            + ", but found scalar$",
        ),
    ],
)
def test_yaml_that_composes_but_does_not_construct_raises_mapping_error(text, message):
    # Was: ConstructorError/ValueError from yaml.safe_load(), which parse_mapping ran outside its try.
    with raises_mapping_error(message):
        parse_mapping(text, SOURCE)


@pytest.mark.parametrize("text", ["&a [*a]", "customer: &c {column: x, loop: *c}"])
def test_self_referencing_alias_raises_mapping_error(text):
    # Was: RecursionError, _refuse_duplicate_keys walking the alias forever.
    with raises_mapping_error(re.escape("the YAML is nested too deeply or refers to itself (an alias)") + "$"):
        parse_mapping(text, SOURCE)


def test_deeply_nested_yaml_raises_mapping_error():
    # Was: RecursionError from yaml.compose (not a YAMLError).
    with raises_mapping_error(re.escape("the YAML is nested too deeply") + "$"):
        parse_mapping("[" * 3000, SOURCE)
