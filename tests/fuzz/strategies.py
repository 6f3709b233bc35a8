"""Shared strategies and settings of the fuzz tests."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Deterministic (CI sees the same examples every run), no deadline: applied by each test through
#: :func:`fuzz` (``settings(parent=...)``) rather than loaded globally, so the other suites keep their own.
#: Registered here, where :func:`fuzz` reads it, so a test importing a fuzz module from another suite has it.
settings.register_profile(
    "soracharge-fuzz",
    derandomize=os.environ.get("SORACHARGE_FUZZ_RANDOM", "") != "1",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
_SCALE = max(1, int(os.environ.get("SORACHARGE_FUZZ_SCALE", "1") or "1"))


def fuzz(max_examples: int) -> settings:
    """The ``soracharge-fuzz`` profile with this test's example count."""
    return settings(parent=settings.get_profile("soracharge-fuzz"), max_examples=max_examples * _SCALE)


#: Text that stresses parsers: control characters, quotes, non-ASCII, lone surrogates excluded (not JSON).
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)

#: Any JSON scalar.
JSON_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["", "0", "-1", "1e400", "NaN", "202610", "2026-10-01T00:00:00Z", "null", "true"]),
)

#: Any JSON value, a few levels deep (the tests that need deep nesting draw it themselves).
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(TEXT, st.sampled_from(["status", "month", "amount", "id", "aps"])), children, max_size=4
        ),
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (the empty path is ``value`` itself)."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths.extend(_paths(child, (*prefix, index)))
    return paths


@st.composite
def mutated(draw: st.DrawFn, original: Any, replacements: st.SearchStrategy[Any] = JSON_VALUES) -> Any:
    """``original`` with one to three changes: a value replaced, a key deleted, or a key added."""
    value = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            if action == "replace":
                value = draw(replacements)
            continue
        parent = value
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(replacements)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(TEXT)] = draw(replacements)
        else:
            parent.insert(last, draw(replacements))
    return value


E = TypeVar("E", bound=BaseException)


@contextlib.contextmanager
def raises_exactly(error: type[E], match: str) -> Iterator[pytest.ExceptionInfo[E]]:
    """``pytest.raises(error, match=match)`` that also refuses a subclass of ``error``: a named regression case
    asserts the one outcome it promises."""
    with pytest.raises(error, match=match) as info:
        yield info
    assert info.type is error, f"raised {info.type.__name__}, not {error.__name__}"
