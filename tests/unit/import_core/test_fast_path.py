"""The import's fast path (logic/billing_frame.py): which files it takes, and that it plans what the pure-Python
reader plans, byte for byte, whichever path a file takes; anything it does not take is read again by the
pure-Python reader, which names every problem.
"""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from soracharge.logic.billing_frame import FrameCharges
from soracharge.logic.charges import _python_plan, plan_import
from soracharge.models.charges import ImportPlan
from soracharge.models.mapping import ChecksSettings, Mapping, parse_mapping
from soracharge_local.simulators.soracom_data import generate_billing_csv

from tests.unit.import_core.builders import EXAMPLE_MAPPING, GLOBAL_EXAMPLE, LABELS_MAPPING, OneWay

#: The example's items (the simulator's identifiers) and Japanese labels (the rows these tests write).
JP = parse_mapping(EXAMPLE_MAPPING.read_text(encoding="utf-8"), "jp").model_copy(
    update={
        "items": [
            *parse_mapping(EXAMPLE_MAPPING.read_text(encoding="utf-8"), "jp").items,
            *parse_mapping(LABELS_MAPPING.read_text(encoding="utf-8"), "labels").items,
        ]
    }
)
#: A bound rows of 12 billion pass (the default's is 100 million).
BIG_ROWS = JP.model_copy(update={"checks": ChecksSettings(row_amount_limit=Decimal("1e12"))})
GLOBAL = parse_mapping(GLOBAL_EXAMPLE.read_text(encoding="utf-8"), "g")
MONTH = "202610"


def segment_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the segments a stream is written in, as the fast path writes them (filled as it reads)."""
    from soracharge.logic import billing_frame

    sizes: list[int] = []
    segments = billing_frame._Records.segments

    def spy(self, workdir, header):
        for segment in segments(self, workdir, header):
            sizes.append(segment.path.stat().st_size)
            yield segment

    monkeypatch.setattr(billing_frame._Records, "segments", spy)
    return sizes


def planned(data: bytes, chosen: Mapping, *, fast_path: bool, **kwargs: object) -> tuple[ImportPlan, ImportPlan]:
    """The file planned by ``plan_import`` and by the Python reader alone; ``fast_path`` says which path
    ``plan_import`` must have taken (checked): a comparison is of the fast path with the Python reader only
    when it took the file, and a file it must decline (a short row, bytes it cannot vouch for) is declined."""
    fast = plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=chosen, **kwargs)  # type: ignore[arg-type]
    took = isinstance(fast.charges, FrameCharges)
    assert took == fast_path, "the fast path took the file" if took else "the fast path declined the file"
    suffix = str(kwargs.get("id_suffix", ""))
    reference = _python_plan(io.BytesIO(data), MONTH, "JPY", chosen, "", suffix)
    return fast, reference


def same_figures(fast: ImportPlan, reference: ImportPlan) -> bool:
    """Every field of the two plans but their charges (compared packet by packet: ``same_packets``), as text: a figure
    is written the same (``111.6``, not ``111.60``) whichever reader made it."""
    return fast.model_dump_json(exclude={"charges"}) == reference.model_dump_json(exclude={"charges"})


def same_packets(fast: ImportPlan, reference: ImportPlan) -> bool:
    return [p.to_json_bytes() for p in fast.packets(9)] == [p.to_json_bytes() for p in reference.packets(9)]


@pytest.mark.parametrize(("coverage", "chosen"), [("jp", JP), ("g", GLOBAL)])
def test_a_simulator_month_takes_the_fast_path_and_plans_exactly_what_the_python_reader_plans(coverage, chosen):
    data = generate_billing_csv(MONTH, coverage=coverage, sims=60).content
    fast, reference = planned(data, chosen, fast_path=True)
    assert isinstance(fast.charges, FrameCharges)
    # every figure of the plan (what the report shows: SIMs and devices per customer, rows no one owns...)
    assert same_figures(fast, reference)
    assert same_packets(fast, reference)
    assert [packets.total(i) for packets in [fast.packets(0)] for i in range(len(packets))] == [
        sum((c.total_price for c in p.charges), Decimal(0)) for p in reference.packets(0)
    ]


def test_the_fast_paths_charges_equal_the_same_charges_as_a_list_and_nothing_else():
    data = generate_billing_csv(MONTH, coverage="jp", sims=3).content
    fast, reference = planned(data, JP, fast_path=True)
    assert isinstance(fast.charges, FrameCharges)
    assert fast.charges == list(reference.charges)
    assert fast.charges != list(reference.charges)[:-1]
    # and a slice of them is that slice of the list, whatever its step
    for part in (slice(1, None), slice(None, None, 2), slice(1, -1, 3), slice(None, None, -1)):
        assert fast.charges[part] == list(reference.charges)[part], part
    # and an index from the end is that charge from the end, as in a list
    for index in (-1, -2, -len(reference.charges)):
        assert fast.charges[index] == list(reference.charges)[index], index
    with pytest.raises(IndexError, match="charge index out of range"):
        fast.charges[-len(reference.charges) - 1]
    # what is no list of charges is unequal, and comparing with it raises nothing
    for other in (None, 5, "charges", b"charges", {"a": 1}):
        assert fast.charges != other
        assert not (fast.charges == other)  # noqa: SIM201 (the == operator itself, not !=)


def test_an_additional_files_charges_get_the_same_own_ids_on_the_fast_path():
    data = generate_billing_csv(MONTH, coverage="jp", sims=5).content
    fast, reference = planned(data, JP, id_suffix="a0123456789ab", fast_path=True)
    assert isinstance(fast.charges, FrameCharges)
    assert all(charge.ext_charge_id.endswith("-a0123456789ab") for charge in fast.charges)  # type: ignore[union-attr]
    assert same_packets(fast, reference)


def test_lf_line_ends_and_quoted_line_breaks_in_used_and_unused_columns_are_read_as_the_python_reader_reads_them():
    header = "imsi,date,billItemName,unitPrice,quantity,amount,customer,note\n"
    rows = [
        '440101,20261001,"基本料金 (plan-D)",10,1,10,東京ガス,"two\nlines, and ""quotes"""\n',
        '440101,20261002,基本料金 (plan-D),10,1,10,"Acme Logistics","x"\n',
        ',202610,"サポート月額料金 (Business)",3000,1,3000,,\n',
    ]
    data = (header + "".join(rows)).encode()
    fast, reference = planned(data, JP, fast_path=True)
    assert isinstance(fast.charges, FrameCharges)
    assert same_packets(fast, reference)


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("440101,20261001,基本料金 (plan-D),10,1,10\r\n", "a short row"),
        ("440101,20261001,基本料金 (plan-D),10,1,10,東京ガス,x,y\r\n", "a long row"),
        ("440101,20261032,基本料金 (plan-D),10,1,10,東京ガス,x\r\n", "a date outside the month"),
        ("440101,20261001,Mystery,10,1,10,東京ガス,x\r\n", "an unmapped item"),
        ("440101,20261001,基本料金 (plan-D),10,1,1e1,東京ガス,x\r\n", "an exponent"),
        ("440101,20261001,基本料金 (plan-D),10,1,0.0000000000000000001,東京ガス,x\r\n", "19 decimals"),
        ("44O101,20261001,基本料金 (plan-D),10,1,10,東京ガス,x\r\n", "an imsi that is not digits"),
        ('440101,20261001,"never closed,10,1,10,東京ガス,x\r\n', "a quote that never closes"),
    ],
)
def test_a_file_with_a_problem_is_read_again_by_the_python_reader_and_gets_its_exact_problems(row, why):
    header = "imsi,date,billItemName,unitPrice,quantity,amount,customer,note\r\n"
    good = "440101,20261001,基本料金 (plan-D),10,1,10,東京ガス,x\r\n"
    data = (header + good + row + good).encode()
    fast, reference = planned(data, JP, fast_path=False)
    assert not isinstance(fast.charges, FrameCharges), why
    assert fast.problem_count == reference.problem_count > 0, why
    assert fast.problems == reference.problems
    assert len(fast.charges) == 0


HEAD = "imsi,date,billItemName,unitPrice,quantity,amount,customer"
SMS = "440101,20261001,SMS 送信料金,3,1,{amount},Acme Logistics"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"{HEAD}\r\n{SMS.format(amount='+3')}\r\n", "a plus sign"),
        (f"{HEAD}\r\n{SMS.format(amount='3.')}\r\n", "a trailing point"),
        (f"{HEAD}\r\n{SMS.format(amount='3')}\r\n\r\n", "a blank line"),
        (f" {HEAD}\r\n{SMS.format(amount='3')}\r\n", "a spaced header name"),
    ],
)
def test_what_only_the_python_reader_accepts_is_imported_the_same_through_it(text, why):
    data = text.encode()
    fast = plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=JP)
    reference = _python_plan(io.BytesIO(data), MONTH, "JPY", JP, "", "")
    assert not isinstance(fast.charges, FrameCharges), why
    assert reference.problem_count == 0, (why, reference.problems)
    assert same_packets(fast, reference)


def test_mixed_line_ends_are_read_as_the_python_reader_reads_them():
    data = f"{HEAD}\r\n{SMS.format(amount='3')}\n{SMS.format(amount='3.0')}\r\n".encode()
    fast, reference = planned(data, JP, fast_path=True)
    assert reference.problem_count == 0
    assert same_packets(fast, reference)


def test_bytes_that_are_not_utf8_in_a_column_not_used_are_ignored_as_the_python_reader_ignores_them():
    data = f"{HEAD},note\r\n{SMS.format(amount='3')},".encode() + b"\xff\r\n"
    fast = plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=JP)
    reference = _python_plan(io.BytesIO(data), MONTH, "JPY", JP, "", "")
    assert not isinstance(fast.charges, FrameCharges)  # the fast path cannot vouch for bytes it does not decode
    assert reference.problem_count == 0
    assert same_packets(fast, reference)


def test_a_stream_that_cannot_be_read_again_is_read_once_by_the_python_reader():
    data = generate_billing_csv(MONTH, coverage="jp", sims=3).content
    result = plan_import(OneWay(data), month=MONTH, currency="JPY", mapping=JP)
    assert not isinstance(result.charges, FrameCharges)
    assert result.problem_count == 0
    assert len(result.charges) > 0


def test_a_reopened_stream_serves_the_python_reader_after_the_fast_path_declined():
    data = f"{HEAD}\r\n440101,20261001,Mystery,1,1,5,Acme Logistics\r\n".encode()
    opened: list[int] = []

    class Reopen:
        def __enter__(self) -> io.BytesIO:
            opened.append(1)
            return io.BytesIO(data)

        def __exit__(self, *exc: object) -> None:
            return None

    result = plan_import(OneWay(data), month=MONTH, currency="JPY", mapping=JP, reopen=Reopen)
    assert opened == [1]
    assert result.problems[0].value == "Mystery"
    assert result.problems[0].line == 2


# -- found by review: inputs where the two readers once disagreed ------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        "440101,20261001,基本料金 (plan-D),10,1,10,東京ガス\r\r\n",  # a lone CR ends a line for the Python reader
        "440101,20261001,基本料金 (plan-D),10,1,10,東京\rガス\r\n",
        "440101,20261001,基本料金 (plan-D),10,1,10,東京ガス,ab\rcd\r\n",
    ],
)
def test_a_lone_carriage_return_is_read_as_the_python_reader_reads_it(row):
    header = "imsi,date,billItemName,unitPrice,quantity,amount,customer" + (",note" if row.count(",") == 7 else "")
    data = (header + "\r\n" + row).encode()
    fast, reference = planned(data, JP, fast_path=False)
    assert (fast.problems, fast.per_subscription) == (reference.problems, reference.per_subscription)
    assert same_packets(fast, reference)


@pytest.mark.parametrize("tail", [b" ", b"\t", b"\x0c"])
def test_a_last_line_of_blanks_after_the_first_64_kib_is_a_row_as_for_the_python_reader(tail):
    data = generate_billing_csv(MONTH, coverage="jp", sims=20).content + tail
    fast, reference = planned(data, JP, fast_path=False)
    assert reference.problem_count == 1
    assert fast.problems == reference.problems


def test_a_header_with_a_repeated_unused_name_cannot_hide_a_short_row():
    data = (
        "imsi,date,billItemName,unitPrice,quantity,amount,customer,x,x\r\n"
        '440101,20261001,基本料金 (plan-D),10,1,10,東京ガス,p,"a,b"\r\n'
        "440101,20261001,基本料金 (plan-D),10,1,10,東京ガス,p\r\n"
    ).encode()
    fast, reference = planned(data, JP, fast_path=False)
    assert reference.problem_count == 1
    assert (fast.problems, fast.csv_sum) == (reference.problems, reference.csv_sum)


@pytest.mark.parametrize("amount", ["12345678901.000000012345678901", "12345678901.0000000123456789"])
def test_the_unit_price_check_uses_exact_arithmetic_on_either_path(amount):
    data = (
        "imsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"
        f"440101,20261001,基本料金 (plan-D),1.000000000000000001,12345678901,{amount},東京ガス\r\n"
    ).encode()
    fast, reference = planned(data, BIG_ROWS, fast_path=True)
    assert isinstance(fast.charges, FrameCharges)
    assert same_packets(fast, reference)


def test_a_backwards_slice_of_the_charges_is_empty():
    fast, _ = planned(generate_billing_csv(MONTH, coverage="jp", sims=2).content, JP, fast_path=True)
    assert isinstance(fast.charges, FrameCharges)
    assert fast.charges[1:0] == []


@pytest.mark.parametrize(
    ("chunk", "first", "segment", "count"),
    [(64, 64, 64, 40), (97, 4096, 4096, 40), (1000, 333, 333, 40), (500, 600, 8000, 1200), (997, 1, 7000, 1200)],
)
def test_records_cut_at_any_chunk_and_segment_size_plan_the_same(monkeypatch, chunk, first, segment, count):
    # The last two: segments that double from the first size up to the last one, past the 64 KiB that the
    # header's read brings (its whole records are the first chunk).
    from soracharge.logic import billing_frame

    monkeypatch.setattr(billing_frame, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(billing_frame, "FIRST_SEGMENT_BYTES", first)
    monkeypatch.setattr(billing_frame, "SEGMENT_BYTES", segment)
    sizes = segment_sizes(monkeypatch)
    header = "imsi,date,billItemName,unitPrice,quantity,amount,customer,note\r\n"
    rows = "".join(
        f'4401{i:02d},202610{1 + i % 28:02d},基本料金 (plan-D),10,1,10,東京ガス,"line {i}\r\nnext, ""q"""\r\n'
        for i in range(count)
    )

    data = (header + rows).encode()
    fast = plan_import(OneWay(data), month=MONTH, currency="JPY", mapping=JP, reopen=lambda: io.BytesIO(data))
    reference = _python_plan(io.BytesIO(data), MONTH, "JPY", JP, "", "")
    assert isinstance(fast.charges, FrameCharges)
    assert same_packets(fast, reference)
    if first < segment:  # after the header read's records, segments grow up to the last size
        records = [size - len(header.encode()) for size in sizes][1:]
        assert len(records) > 5
        assert records[0] < segment // 2 < max(records) <= segment + chunk


def test_a_fault_of_polars_itself_falls_back_to_the_python_reader(monkeypatch):
    import polars as pl
    from soracharge.logic import billing_frame

    def panic(*args: object, **kwargs: object) -> None:
        raise pl.exceptions.PanicException("polars panicked")

    monkeypatch.setattr(billing_frame, "read_frame", panic)
    data = generate_billing_csv(MONTH, coverage="jp", sims=3).content
    fast, reference = planned(data, JP, fast_path=False)
    assert not isinstance(fast.charges, FrameCharges)
    assert same_packets(fast, reference)


def test_several_bill_items_of_one_resource_make_one_charge_named_by_them_all_on_either_path():
    # "ボリュームディスカウント*" is one glob: two discounts of one SIM are one charge, named by both (sorted).
    data = (
        "imsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"
        "440101,202610,ボリュームディスカウント (B),,,-5,東京ガス\r\n"
        "440101,202610,ボリュームディスカウント (A),,,-3,東京ガス\r\n"
        "440101,20261001,基本料金 (plan-D),10,1,10,東京ガス\r\n"
        "440102,202610,ボリュームディスカウント (A),,,-2,東京ガス\r\n"
        "440103,202610,ボリュームディスカウント (C),,,-1,東京ガス\r\n"
        "440103,202610,ボリュームディスカウント (A),,,-1,東京ガス\r\n"
        "440103,202610,ボリュームディスカウント (C),,,-1,東京ガス\r\n"
        "440104,202610,ボリュームディスカウント (C),,,-1,東京ガス\r\n"
        "440104,202610,ボリュームディスカウント (a),,,-1,東京ガス\r\n"
        "440104,202610,ボリュームディスカウント (B),,,-1,東京ガス\r\n"
        "440105,202610,ボリュームディスカウント (a),,,-1,東京ガス\r\n"
        "440105,202610,ボリュームディスカウント (B),,,-1,東京ガス\r\n"
        "440106,202610,ボリュームディスカウント (😀),,,-1,東京ガス\r\n"
        "440106,202610,ボリュームディスカウント (ｚ),,,-1,東京ガス\r\n"
    ).encode()
    fast, reference = planned(data, JP, fast_path=True)
    assert isinstance(fast.charges, FrameCharges)
    assert len(fast.charges) == 7
    attributes = [(charge.attributes or {}, charge.total_price) for charge in fast.charges]
    discounts = sorted(
        (named["imsi"], named["billItemName"], total)
        for named, total in attributes
        if "ディスカウント" in named["billItemName"]
    )
    assert discounts == [
        ("440101", "ボリュームディスカウント (A) | ボリュームディスカウント (B)", Decimal(-8)),
        ("440102", "ボリュームディスカウント (A)", Decimal(-2)),
        ("440103", "ボリュームディスカウント (A) | ボリュームディスカウント (C)", Decimal(-3)),
        (
            "440104",
            "ボリュームディスカウント (B) | ボリュームディスカウント (C) | ボリュームディスカウント (a)",
            Decimal(-3),
        ),
        # Two names, in code point order as sorted() orders them: "B" before "a"; U+FF5A before U+1F600 (in
        # UTF-16's order the emoji's surrogates would come first).
        ("440105", "ボリュームディスカウント (B) | ボリュームディスカウント (a)", Decimal(-2)),
        ("440106", "ボリュームディスカウント (ｚ) | ボリュームディスカウント (😀)", Decimal(-2)),
    ]
    assert same_packets(fast, reference)


def test_a_comma_in_a_key_value_cannot_hide_a_short_row():
    # The bill item's comma is counted once per key (times its rows): without it, the raw commas of
    # these two records would match two full records, and the short one (no note) would be imported.
    data = (
        "imsi,date,billItemName,unitPrice,quantity,amount,customer,note\r\n"
        '440101,202610,"ボリュームディスカウント ""IoT, 10%""",,,-5,東京ガス,n\r\n'
        "440101,20261001,基本料金 (plan-D),10,1,10,東京ガス\r\n"
    ).encode()
    fast, reference = planned(data, JP, fast_path=False)
    assert reference.problem_count == 1
    assert (fast.problems, fast.csv_sum) == (reference.problems, reference.csv_sum)


@pytest.mark.parametrize("limit", [0, 10**9])
def test_a_local_file_is_scanned_in_place_only_up_to_its_size_limit_and_plans_the_same_either_way(
    monkeypatch, tmp_path, limit
):
    from soracharge.logic import billing_frame

    monkeypatch.setattr(billing_frame, "LOCAL_SCAN_BYTES", limit)
    monkeypatch.setattr(billing_frame, "SEGMENT_BYTES", 4096)
    monkeypatch.setattr(billing_frame, "CHUNK_BYTES", 1000)
    written = segment_sizes(monkeypatch)
    data = generate_billing_csv(MONTH, coverage="jp", sims=12).content
    path = tmp_path / "bill.csv"
    path.write_bytes(data)
    with path.open("rb") as raw:
        fast = plan_import(raw, month=MONTH, currency="JPY", mapping=JP)
    reference = _python_plan(io.BytesIO(data), MONTH, "JPY", JP, "", "")
    assert isinstance(fast.charges, FrameCharges)
    assert same_packets(fast, reference)
    if limit:
        assert written == []  # scanned where it is
    else:
        # A segment of whole records at a time (the first holds what the header's read of 64 KiB brought).
        assert len(written) > 3
        assert max(written[1:]) < 4096 + 1000 + 200


def test_a_comma_in_another_column_cannot_hide_a_short_row_whichever_rows_share_its_value():
    # Two rows of one key with the same tag "a,b" and a short row of that key: the commas inside the tag count
    # once for each row that holds it, or the short row's missing comma would be made up by them.
    data = (
        "imsi,date,billItemName,unitPrice,quantity,amount,customer,tag\r\n"
        '440101,20261001,基本料金 (plan-D),10,1,10,東京ガス,"a,b"\r\n'
        "440101,20261002,基本料金 (plan-D),10,1,10,東京ガス\r\n"
        '440101,20261003,基本料金 (plan-D),10,1,10,東京ガス,"a,b"\r\n'
    ).encode()
    fast, reference = planned(data, JP, fast_path=False)
    assert reference.problem_count == 1
    assert (fast.problems, fast.csv_sum) == (reference.problems, reference.csv_sum)


def test_other_columns_that_differ_from_row_to_row_or_share_a_name_with_ours_stay_on_the_fast_path():
    # A tag called "customer" while the mapping reads the group; a note that differs in each row of one SIM.
    by_group = JP.model_copy(update={"customer": JP.customer.model_copy(update={"column": "group"})})
    data = (
        "imsi,date,billItemName,unitPrice,quantity,amount,group,customer,note\r\n"
        '440101,20261001,基本料金 (plan-D),10,1,10,東京ガス,"Acme, Inc.",first\r\n'
        '440101,20261002,基本料金 (plan-D),10,1,10,東京ガス,"Acme, Inc.","second, with a comma"\r\n'
        "440101,20261003,基本料金 (plan-D),10,1,10,東京ガス,other,third\r\n"
        "440102,20261001,基本料金 (plan-D),10,1,10,東京ガス,,\r\n"
    ).encode()
    fast, reference = planned(data, by_group, fast_path=True)
    assert reference.problem_count == 0
    assert isinstance(fast.charges, FrameCharges)
    assert same_packets(fast, reference)
    assert sorted(charge.total_price for charge in fast.charges) == [Decimal(10), Decimal(30)]


@pytest.mark.parametrize("nul", [False, True])
def test_a_nul_late_in_a_local_file_leaves_it_to_the_python_reader_whichever_block_it_is_in(monkeypatch, tmp_path, nul):
    # Given a local file (scanned in place, its commas and marks counted block by block) whose last rows hold a
    # NUL in a name, in a block long after the first
    from soracharge.logic import billing_frame

    monkeypatch.setattr(billing_frame, "_COUNT_BYTES", 4096)
    data = generate_billing_csv(MONTH, coverage="jp", sims=40).content
    assert len(data) > 64 * 1024 + 2 * 4096
    if nul:
        assert data.count(b"LoRa 1") == 1
        data = data.replace(b"LoRa 1", b"LoRa\x001")
    path = tmp_path / "bill.csv"
    path.write_bytes(data)
    with path.open("rb") as raw:
        fast = plan_import(raw, month=MONTH, currency="JPY", mapping=JP)
    # Then the fast path takes it only without the NUL, and either way it plans what the Python reader plans
    assert isinstance(fast.charges, FrameCharges) is not nul
    assert same_packets(fast, _python_plan(io.BytesIO(data), MONTH, "JPY", JP, "", ""))


@pytest.mark.parametrize("nul", [False, True])
def test_a_nul_in_a_stream_leaves_it_to_the_python_reader(nul):
    # Given the S3 body (a stream copied in segments, its commas and marks counted as it is read), a NUL in a name
    data = generate_billing_csv(MONTH, coverage="jp", sims=40).content
    if nul:
        data = data.replace(b"LoRa 1", b"LoRa\x001")
    fast = plan_import(OneWay(data), month=MONTH, currency="JPY", mapping=JP, reopen=lambda: io.BytesIO(data))
    # Then the fast path takes it only without the NUL, and either way it plans what the Python reader plans
    assert isinstance(fast.charges, FrameCharges) is not nul
    assert same_packets(fast, _python_plan(io.BytesIO(data), MONTH, "JPY", JP, "", ""))


@pytest.mark.parametrize("chunk", [40, 64, 97])
def test_lf_records_ending_in_a_quoted_value_cut_at_any_chunk_plan_the_same_on_the_fast_path(monkeypatch, chunk):
    # Given a stream of LF-only records whose last value is quoted (a quote right before each line break), some
    # longer than a read, well past the 64 KiB that the header's read brings
    from soracharge.logic import billing_frame

    monkeypatch.setattr(billing_frame, "CHUNK_BYTES", chunk)
    header = "imsi,date,billItemName,unitPrice,quantity,amount,customer,note\n"
    rows = "".join(
        f'4401{i:02d},202610{1 + i % 28:02d},基本料金 (plan-D),10,1,10,東京ガス,"{"x" * (i % 50)}, ""q"""\n'
        for i in range(1500)
    )
    data = (header + rows).encode()
    assert len(data) > 2 * 64 * 1024
    # When planned from the stream
    fast = plan_import(OneWay(data), month=MONTH, currency="JPY", mapping=JP, reopen=lambda: io.BytesIO(data))
    # Then the fast path cut it at the records' ends and planned what the Python reader plans
    assert isinstance(fast.charges, FrameCharges)
    assert same_packets(fast, _python_plan(io.BytesIO(data), MONTH, "JPY", JP, "", ""))
    assert fast.rows == 1500


def test_rows_in_doubt_that_polars_cannot_read_again_leave_the_file_to_the_python_reader():
    # The exact check of the rows the float test doubts reads them again; should polars fail there, the fast path
    # declines (the Python reader then decides), never takes the rows as good
    from soracharge.logic.billing_frame import _Checks
    from soracharge.logic.polars_engine import pl

    checks = _Checks(MONTH, JP, names=["amount", "quantity", "unitPrice"], needed=[], devices=[])
    frame = pl.LazyFrame({"amount": ["x"], "quantity": ["1"], "unitPrice": ["1"]})
    assert checks._arithmetic_fails(frame, pl.col("amount").cast(pl.Int64, strict=True) > 0)
    assert not checks._arithmetic_fails(frame.with_columns(amount=pl.lit("1")), pl.col("amount") == "1")
