"""The fast path (polars) and the pure-Python reader agree on every file: same plan, same packets, byte for byte.

Every valid and corrupted file of the fuzz strategies is planned twice: by ``plan_import`` (the
fast path, falling back to the pure-Python reader when it does not take the file) and by the
pure-Python reader alone. Whatever path a file takes, what an import would send or report is the
same.
"""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from soracharge.errors import SorachargeError
from soracharge.logic.billing_frame import FrameCharges
from soracharge.logic.charges import plan_import
from soracharge.models.charges import ImportPlan
from soracharge.models.mapping import Mapping

from tests.fuzz.strategies import fuzz
from tests.fuzz.test_fuzz_csv import MAPPINGS, MONTH, billing_file
from tests.unit.import_core.builders import OneWay


def both(data: bytes, mapping: Mapping) -> tuple[ImportPlan, ImportPlan] | None:
    """The file planned by ``plan_import`` (the fast path, or the Python reader when it declines) and by the Python
    reader alone (``plan_import`` of a stream it cannot read again: the same checks of the whole file around, its
    encoding and the near misses); None when that refuses it whole, after checking ``plan_import`` refuses it the
    same."""
    kwargs = {"month": MONTH, "currency": "JPY", "mapping": mapping, "source": "fuzz.csv"}
    try:
        reference = plan_import(io.BufferedReader(OneWay(data)), **kwargs)  # type: ignore[arg-type]
    except SorachargeError as refused:
        with pytest.raises(type(refused), match=re.escape(str(refused))):
            plan_import(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]
        event("refused whole on either path")
        return None
    planned = plan_import(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]
    event("fast path" if isinstance(planned.charges, FrameCharges) else "pure-Python reader")
    return planned, reference


def assert_same(planned: ImportPlan, reference: ImportPlan) -> None:
    fields = ("rows", "problem_count", "unmapped_rows", "csv_sum", "charges_sum", "per_customer", "per_item")
    for name in (*fields, "per_subscription", "problems"):
        assert getattr(planned, name) == getattr(reference, name), name
    assert len(planned.charges) == len(reference.charges)
    ours = [packet.to_json_bytes() for packet in planned.packets(42)]
    theirs = [packet.to_json_bytes() for packet in reference.packets(42)]
    assert ours == theirs


@fuzz(150)
@given(data=billing_file(corrupt=False, breaks=False), aggregation=st.sampled_from(["imsi-month", "date"]))
def test_every_file_the_fast_path_takes_plans_exactly_what_the_python_reader_plans(data, aggregation):
    # Valid files without quoted line breaks, one charge per SIM and month: every one is the fast path's (the
    # comparison below is of the two readers on every example, never of the Python reader with itself)
    result = both(data, MAPPINGS[aggregation])
    assert result is not None
    planned, reference = result
    assert isinstance(planned.charges, FrameCharges), "the fast path declined a valid file it must take"
    assert not isinstance(reference.charges, FrameCharges)
    assert_same(planned, reference)


@fuzz(100)
@given(data=billing_file(corrupt=False), aggregation=st.sampled_from(sorted(MAPPINGS)))
def test_valid_files_plan_the_same_charges_whichever_path_takes_them(data, aggregation):
    # Quoted line breaks and one charge per row are the Python reader's: the fast path declines them
    result = both(data, MAPPINGS[aggregation])
    assert result is not None
    planned, reference = result
    if aggregation == "none":
        assert not isinstance(planned.charges, FrameCharges), "one charge per row is the Python reader's"
    assert_same(planned, reference)


@fuzz(150)
@given(data=billing_file(corrupt=True), aggregation=st.sampled_from(sorted(MAPPINGS)))
def test_corrupted_files_get_the_same_problems_or_charges_on_either_path(data, aggregation):
    # A file with a problem is the Python reader's (the fast path names no problem: it declines); one the
    # fast path takes all the same must be one the Python reader finds nothing wrong with, planned the same
    result = both(data, MAPPINGS[aggregation])
    if result is not None:
        planned, reference = result
        if isinstance(planned.charges, FrameCharges):
            assert reference.problem_count == 0, reference.problems[:3]
        assert_same(planned, reference)
