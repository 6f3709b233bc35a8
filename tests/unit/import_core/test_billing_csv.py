"""Reading a detailed billing CSV: what becomes charges, and every problem with its line, column and value."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from soracharge.errors import InvalidInputError
from soracharge.logic.billing_csv import MAX_STORED_PROBLEMS
from soracharge.logic.billing_frame import CHUNK_BYTES, FrameCharges
from soracharge.logic.charges import plan_import
from soracharge.models.charges import ImportPlan, ImportProblem, ProblemKind
from soracharge.models.mapping import parse_mapping

from tests.unit.import_core.builders import (
    BASIC,
    DATA,
    DISCOUNT,
    HEADER,
    IMSI_1,
    IMSI_2,
    MAPPING_YAML,
    RES_BASIC,
    RES_DATA,
    RES_DISCOUNT,
    SUB_ACME,
    SUB_DEFAULT,
    SUB_TOKYO,
    SUPPORT,
    OneWay,
    billing_csv,
    mapping,
    plan,
    row,
)

TWO_DAYS = [
    row(date="20261001"),
    row(date="20261001", item=DATA, unit_price="0.2", quantity="12.5", amount="2.5"),
    row(date="20261002"),
    row(date="20261002", item=DATA, unit_price="0.2", quantity="3.1", amount="0.62"),
]


def totals(the_plan: ImportPlan) -> dict[tuple[str, str], Decimal]:
    return {(c.resource_id, c.attributes["imsi"] if c.attributes else ""): c.total_price for c in the_plan.charges}


def problems(the_plan: ImportPlan) -> list[tuple[int | None, str | None, str | None]]:
    return [(p.line, p.column, p.value) for p in the_plan.problems]


# --- what the file looks like -----------------------------------------------------------------------------


def test_a_month_of_rows_becomes_one_charge_per_sim_and_item_with_summed_quantities():
    # Given two days of a SIM's basic fee and data usage
    # When the file is planned
    result = plan(billing_csv(TWO_DAYS))
    # Then there is one charge per item, quantities and amounts summed, over the whole month
    assert result.problems == []
    basic, data = sorted(result.charges, key=lambda c: c.resource_id != RES_BASIC)
    assert (basic.resource_id, basic.amount, basic.total_price, basic.unit_price) == (
        RES_BASIC,
        Decimal(2),
        Decimal(20),
        Decimal(10),
    )
    assert (data.amount, data.total_price, data.unit_price, data.uom) == (
        Decimal("15.6"),
        Decimal("3.12"),
        Decimal("0.2"),
        "MB",
    )
    assert (basic.charge_start_date, basic.charge_end_date) == ("2026-10-01T00:00:00Z", "2026-10-31T00:00:00Z")
    assert basic.subscription_id == SUB_TOKYO
    assert basic.description == f"Basic fee (IMSI {IMSI_1})"
    assert data.description == f"{DATA} (IMSI {IMSI_1})"
    assert basic.attributes == {"billItemName": BASIC, "month": "202610", "imsi": IMSI_1}
    assert result.rows == 4
    assert result.csv_sum == result.charges_sum == Decimal("23.12")


@pytest.mark.parametrize("bom", [True, False])
def test_the_bom_is_optional(bom):
    # Given the same rows with and without a byte order mark
    # When they are planned
    result = plan(billing_csv(TWO_DAYS, bom=bom))
    # Then both give the same charges (the BOM does not end up in the first column's name)
    assert result.problems == []
    assert totals(result) == {(RES_BASIC, IMSI_1): Decimal(20), (RES_DATA, IMSI_1): Decimal("3.12")}


def test_columns_are_found_by_name_in_any_order_with_extra_ones():
    # Given a file whose columns come in another order, with columns this importer does not know
    header = ("note", "customer", "amount", "billItemName", "quantity", "extra", "date", "unitPrice", "imsi", "tag")
    rows = [dict(values, note="n, with comma", extra="x", tag="t") for values in TWO_DAYS]
    # When it is planned
    result = plan(billing_csv(rows, header=header))
    # Then it gives the same charges as the usual layout
    assert result.problems == []
    assert result.charges == plan(billing_csv(TWO_DAYS)).charges


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_a_header_that_ends_with_a_required_column_is_read_whole(fast):
    # Given a file whose last column is the amount: on the header's line its name is followed by the line break
    header = ("imsi", "date", "billItemName", "unitPrice", "quantity", "customer", "amount")
    # When it is planned, by either reader
    result = plan(billing_csv(TWO_DAYS, header=header), fast=fast)
    # Then the amount column is found, and the charges are the usual layout's
    assert result.problems == []
    assert result.charges == plan(billing_csv(TWO_DAYS)).charges


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
@pytest.mark.parametrize("aggregation", ["imsi-month", "none"])  # the aggregated reading and the generic one
def test_a_line_of_one_stray_value_is_a_short_row_not_a_blank_line(fast, aggregation):
    # Given a file with a line holding only "XX" between its rows
    lines = billing_csv(TWO_DAYS).split(b"\r\n")
    lines.insert(2, b"XX")
    # When it is planned
    result = plan(b"\r\n".join(lines), mapping(aggregation=aggregation), fast=fast)
    # Then that line is a row of the wrong width, named by its line; nothing is charged
    assert [(p.line, p.kind, p.message) for p in result.problems] == [
        (3, ProblemKind.ROW, "the row has 1 field but the header has 10 (an unquoted comma or quote?)")
    ]
    assert result.charges == []


def test_quoted_commas_and_doubled_quotes_in_an_item_name_are_read_whole():
    # Given the volume discount, whose name holds a comma and double quotes (quoted, quotes doubled)
    content = billing_csv([row(date="202610", item=DISCOUNT, unit_price="-3.10", quantity="1", amount="-3.10")])
    assert '"ボリュームディスカウント ""IoT スターター, 10%"""'.encode() in content
    # When it is planned
    result = plan(content)
    # Then the name is read whole and mapped by its glob, negative amount and all
    [charge] = result.charges
    assert charge.resource_id == RES_DISCOUNT
    assert charge.attributes == {"billItemName": DISCOUNT, "month": "202610", "imsi": IMSI_1}
    assert charge.total_price == Decimal("-3.1")


def test_japanese_customers_and_items_map_and_survive_to_the_wire():
    # Given rows with Japanese item names and customer tags
    result = plan(billing_csv([row(customer="東京ガス")]))
    # When the packet is written
    body = result.packets(1)[0].to_json_bytes().decode("utf-8")
    # Then they are mapped, and written as UTF-8 text (not \u escapes)
    assert result.charges[0].subscription_id == SUB_TOKYO
    assert BASIC in body


def test_monthly_rows_and_daily_rows_of_an_item_share_its_monthly_charge():
    # Given a daily row and a monthly (yyyyMM) row of the same item and SIM
    rows = [row(date="20261005", amount="10"), row(date="202610", unit_price="10", quantity="2", amount="20")]
    # When planned with the default aggregation
    [charge] = plan(billing_csv(rows)).charges
    # Then they are one charge for the month
    assert (charge.amount, charge.total_price) == (Decimal(3), Decimal(30))


def test_negative_amounts_subtract():
    # Given a fee, a discount and the free tier (negative unit price) on the bill
    rows = [
        row(item=SUPPORT, date="202610", imsi="", customer="", unit_price="3000", quantity="1", amount="3000"),
        row(item=DISCOUNT, date="202610", imsi="", customer="", unit_price="-31.00", quantity="1", amount="-31.00"),
        row(item=DATA, date="202610", imsi="", customer="", unit_price="-0.2", quantity="500", amount="-100.0"),
    ]
    # When planned
    result = plan(billing_csv(rows))
    # Then the negative rows lower the totals, exactly
    assert result.charges_sum == result.csv_sum == Decimal("2869")
    assert {c.resource_id: c.total_price for c in result.charges}[RES_DISCOUNT] == Decimal(-31)


def test_rows_without_imsi_are_the_default_subscriptions_charges_without_imsi():
    # Given a charge not tied to a SIM (empty imsi and tags)
    [charge] = plan(billing_csv([row(item=SUPPORT, imsi="", customer="", amount="3000", unit_price="3000")])).charges
    # Then it goes to the default subscription, and neither its description nor its attributes name an IMSI
    assert charge.subscription_id == SUB_DEFAULT
    assert charge.account_id is None
    assert charge.description == SUPPORT
    assert charge.attributes == {"billItemName": SUPPORT, "month": "202610"}


def test_customers_missing_or_unlisted_go_to_the_default():
    # Given rows of a listed customer, an unlisted one and an empty one
    rows = [row(customer="Acme Logistics"), row(imsi=IMSI_2, customer="Nobody Inc."), row(imsi="1", customer="")]
    # When planned
    result = plan(billing_csv(rows))
    # Then the listed one has its subscription, the others the default
    assert {c.attributes["imsi"]: c.subscription_id for c in result.charges if c.attributes} == {
        IMSI_1: SUB_ACME,
        IMSI_2: SUB_DEFAULT,
        "1": SUB_DEFAULT,
    }
    assert result.per_customer == {"Acme Logistics": 10, "Nobody Inc.": 10, "": 10}
    assert result.per_subscription == {SUB_ACME: 10, SUB_DEFAULT: 20}


def test_decimal_sums_are_exact():
    # Given amounts 0.1 and 0.2 (0.30000000000000004 in floating point)
    rows = [row(amount="0.1", unit_price="0.1"), row(date="20261002", amount="0.2", unit_price="0.2")]
    # When planned and written
    result = plan(billing_csv(rows))
    body = result.packets(7)[0].to_json_bytes()
    # Then the total is exactly 0.3, written as the JSON number 0.3
    assert result.charges[0].total_price == Decimal("0.3")
    assert b'"totalPrice":0.3,' in body
    assert b"0.30000000000000004" not in body
    # and with unit prices that differ, the charge has none
    assert b"unitPrice" not in body


def test_a_file_without_quantity_or_unit_price_counts_rows():
    # Given a file with only the required columns
    header = ("imsi", "date", "billItemName", "amount", "customer")
    # When planned
    [charge] = plan(billing_csv(TWO_DAYS[::2], header=header)).charges
    # Then each row counts 1 and there is no unit price
    assert (charge.amount, charge.total_price, charge.unit_price) == (Decimal(2), Decimal(20), None)


def test_blank_lines_are_skipped():
    content = billing_csv(TWO_DAYS[:2]) + b"\r\n\r\n"
    result = plan(content)
    assert (result.problems, result.rows) == ([], 2)


@pytest.mark.parametrize("aggregation", ["imsi-month", "none"])  # the aggregated reading and the generic one
def test_a_blank_line_between_rows_loses_none_of_the_rows_after_it(aggregation):
    first, rest = billing_csv(TWO_DAYS[:1]), billing_csv(TWO_DAYS[1:]).partition(b"\r\n")[2]
    result = plan(first + b"\r\n" + rest, mapping(aggregation=aggregation), fast=False)
    assert (result.problems, result.rows) == ([], 4)
    assert result.charges_sum == result.csv_sum == Decimal("23.12")


def test_a_refused_files_figures_count_its_refused_rows_to_their_customer_and_item():
    # Given a good row and two rows of a bill item the mapping does not know, of two customers
    rows = [
        row(),
        row(item="謎の料金", amount="7", unit_price="7"),
        row(item="謎の料金", amount="3", unit_price="3", imsi=IMSI_2),
        row(item="謎の料金", amount="0", unit_price="0", imsi=IMSI_3),
        row(item="謎の料金", amount="5", unit_price="5", customer="Acme Logistics", imsi=IMSI_2),
    ]
    # When planned: refused, with what each customer's and each item's rows amount to, and their SIMs
    result = plan(billing_csv(rows), fast=False)
    assert (result.accepted, result.unmapped_rows) == (False, 4)
    assert result.per_customer == {"東京ガス": Decimal(20), "Acme Logistics": Decimal(5)}
    assert result.per_item == {BASIC: Decimal(10), "謎の料金": Decimal(15)}
    assert result.csv_sum == Decimal(25)
    assert result.sims_per_customer == {"東京ガス": 3, "Acme Logistics": 1}


def test_the_stream_is_read_in_pieces_and_left_open():
    # Given a stream that refuses to be read whole
    class Piecewise(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None, "read() of the whole stream"
            assert 0 < size <= CHUNK_BYTES, f"read({size}) of the whole stream"
            return super().read(size)

        def read1(self, size: int | None = -1) -> bytes:
            assert size is not None, "read1() of the whole stream"
            assert 0 < size <= CHUNK_BYTES, f"read1({size}) of the whole stream"
            return super().read1(size)

    stream = Piecewise(billing_csv(TWO_DAYS * 3000))
    # When planned
    result = plan_import(stream, month="202610", currency="JPY", mapping=mapping())
    # Then it was read in pieces (of at most the fast path's chunk), to the end, and is still open for its owner
    assert result.rows == 12000
    assert isinstance(result.charges, FrameCharges)
    assert not stream.closed


# --- problems -----------------------------------------------------------------------------------------------


def test_a_missing_required_column_is_one_problem_on_the_header_line():
    # Given a file without an amount column
    header = tuple(column for column in HEADER if column != "amount")
    # When planned
    result = plan(billing_csv(TWO_DAYS, header=header))
    # Then one problem names the column on line 1, and nothing else is read
    assert problems(result) == [(1, "amount", None)]
    assert result.problems[0].message == (
        "missing column 'amount' (a required column); the header has: imsi, vpgId, date, billItemName, unitPrice, "
        "quantity, name, customer, groupName"
    )
    assert (result.charges, result.rows) == ([], 0)


def test_a_column_the_header_names_twice_is_a_problem_on_the_header_line():
    result = plan(billing_csv([row()], header=(*HEADER, "amount")))
    assert [(p.line, p.column, p.value, p.message, p.kind) for p in result.problems] == [
        (1, "amount", "amount", "column 'amount' appears 2 times in the header", ProblemKind.HEADER)
    ]


def test_a_missing_customer_column_names_the_mappings_column():
    header = tuple(column for column in HEADER if column != "customer")
    [problem] = plan(billing_csv(TWO_DAYS, header=header)).problems
    assert (problem.line, problem.column) == (1, "customer")
    assert "the mapping's customer column" in problem.message


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("abc", "amount 'abc' is not a plain decimal number"),
        ("NaN", "amount 'NaN' is not a finite number"),
        ("-Infinity", "amount '-Infinity' is not a finite number"),
        ("1E+3", "amount '1E+3' is not a plain decimal number"),
        ("1,000", None),  # unquoted comma: the row has one field too many
        ("", "amount is empty"),
        ("0.0000000000000000001", "more than 18 decimals"),
    ],
)
def test_a_bad_amount_is_a_problem_naming_line_column_and_value(amount, message):
    # Given a good row, then a row with a bad amount
    rows = [TWO_DAYS[0], row(date="20261002", amount=amount)]
    content = billing_csv(rows).replace(b'"1,000"', b"1,000")
    # When planned
    result = plan(content)
    # Then the problem is on line 3, with the column and the value, and nothing is planned
    [problem] = result.problems
    assert problem.line == 3
    if message is None:
        assert problem.column is None
        assert "11 fields but the header has 10" in problem.message
    else:
        assert (problem.column, problem.value) == ("amount", amount)
        assert message in problem.message
    assert result.charges == []


@pytest.mark.parametrize(
    ("date", "message"),
    [
        ("20261101", "date '20261101' is outside the billed month 202610"),
        ("202609", "date '202609' is outside the billed month 202610"),
        ("20261032", "date '20261032' is not a real day"),
        ("20260931", "date '20260931' is not a real day"),
        ("202613", "date '202613' is not a real month"),
        ("202600", "date '202600' is not a real month"),
        ("20261301", "date '20261301' is not a real day"),
        ("20260230", "date '20260230' is not a real day"),
        ("202601", "date '202601' is outside the billed month 202610"),
        ("202612", "date '202612' is outside the billed month 202610"),
        ("20260101", "date '20260101' is outside the billed month 202610"),
        ("20261231", "date '20261231' is outside the billed month 202610"),
        ("2026-10-01", "date '2026-10-01' is not yyyyMMdd or yyyyMM"),
    ],
)
def test_a_bad_date_is_a_problem(date, message):
    [problem] = plan(billing_csv([row(date=date)])).problems
    assert (problem.line, problem.column, problem.value, problem.message) == (2, "date", date, message)


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_a_row_like_the_ones_before_but_dated_outside_the_month_is_a_problem(fast):
    # Given a SIM's daily fee, the same item and numbers every day, and one such row dated in the next month
    rows = [row(date="20261001"), row(date="20261002"), row(date="20261101")]
    # When it is planned
    [problem] = plan(billing_csv(rows), fast=fast).problems
    # Then that row is the problem, by its line and date
    assert (problem.line, problem.column, problem.value, problem.message) == (
        4,
        "date",
        "20261101",
        "date '20261101' is outside the billed month 202610",
    )


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_a_row_with_the_numbers_of_a_good_row_but_another_unit_price_is_checked_on_its_own(fast):
    # Given 20 x 1 = 20 read first, then a row of amount 20 and quantity 1 whose unit price is 10: the pure-Python
    # reader keeps the numbers it found good, and must not take the second row's for the first's
    rows = [
        row(item=DATA, unit_price="20", quantity="1", amount="20"),
        row(item=DATA, unit_price="10", quantity="1", amount="20"),
    ]
    # When it is planned
    [problem] = plan(billing_csv(rows), fast=fast).problems
    # Then the second row is refused by its own arithmetic
    assert (problem.line, problem.column, problem.value, problem.kind) == (3, "amount", "20", "arithmetic")
    assert problem.message.startswith("amount 20 is not unitPrice × quantity (10 × 1 = 10)")


def test_the_pure_python_reader_checks_a_row_like_the_ones_before_it_once_not_every_time(monkeypatch):
    # The hot loop takes a row whose key, numbers and date it has seen good without checking them again: a SIM's
    # 30 daily rows of one fee are checked once (a cache written under other texts than it is read would check
    # every row: correct, and 1.5 times slower on the simulator's month of 2,000 SIMs, bench/README.md)
    from soracharge.logic import billing_csv as reader

    checked: list[int] = []
    admit = reader._RowCheck.admit

    def counted(self: object, line: int, *args: object) -> object:
        checked.append(line)
        return admit(self, line, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(reader._RowCheck, "admit", counted)
    daily = [
        row(date=f"202610{day:02d}", item=DATA, unit_price="0.2", quantity="12.5", amount="2.5") for day in range(1, 31)
    ]
    result = plan(billing_csv(daily), fast=False)
    assert (result.rows, result.problems) == (30, [])
    assert checked == [2]


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
@pytest.mark.parametrize(
    ("fields", "said"),
    [
        (
            {"unit_price": "1O", "quantity": "1", "amount": "10"},
            "unitPrice '1O' is not a plain decimal number (such as -12.5)",
        ),
        ({"amount": "sNaN"}, "amount 'sNaN' is not a finite number"),
    ],
    ids=["a-letter-o-in-the-unit-price", "a-signalling-nan"],
)
def test_a_number_text_that_is_no_number_is_a_problem_naming_it_even_beside_good_numbers(fast, fields, said):
    [problem] = plan(billing_csv([row(**fields)]), fast=fast).problems
    column = "unitPrice" if "unit_price" in fields else "amount"
    assert (problem.line, problem.column, problem.kind, problem.message) == (2, column, ProblemKind.VALUE, said)


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_a_line_of_one_comma_is_a_row_of_two_fields_not_a_blank_line(fast):
    lines = billing_csv([row(), row()]).split(b"\r\n")
    lines.insert(2, b",")
    result = plan(b"\r\n".join(lines), fast=fast)
    assert result.rows == 3
    assert [(p.line, p.kind, p.message) for p in result.problems] == [
        (3, ProblemKind.ROW, "the row has 2 fields but the header has 10 (an unquoted comma or quote?)")
    ]


def test_a_customer_column_misspelt_at_the_end_of_the_header_is_missing_not_read_as_the_customer():
    data = "imsi,date,billItemName,amount,customerX\r\n440101,20261001,基本料金 (plan-D),10,東京ガス\r\n".encode()
    [problem] = plan(data).problems
    assert (problem.line, problem.column, problem.kind) == (1, "customer", ProblemKind.HEADER)
    assert problem.message == (
        "missing column 'customer' (the mapping's customer column); the header has: imsi, date, billItemName, "
        "amount, customerX"
    )


def test_a_first_line_of_blanks_is_a_header_without_the_required_columns_not_an_empty_file():
    # Given the header pushed down by a line holding a space (the rows follow)
    data = b" \r\n" + billing_csv([row()]).removeprefix(b"\xef\xbb\xbf")
    # Then line 1 is read as the header, and each required column is named missing: the file is not empty
    result = plan(data)
    assert [(p.line, p.column, p.kind) for p in result.problems] == [
        (1, column, ProblemKind.HEADER) for column in ("imsi", "date", "billItemName", "amount", "customer")
    ]
    assert result.problems[0].message == "missing column 'imsi' (a required column); the header has: "


def test_an_imsi_that_is_not_digits_is_a_problem():
    [problem] = plan(billing_csv([row(imsi="44010-3")])).problems
    assert (problem.line, problem.column, problem.value) == (2, "imsi", "44010-3")


def test_bytes_that_are_not_utf8_are_a_problem_naming_line_and_column():
    # Given a customer tag written in Shift_JIS on line 3
    content = billing_csv([TWO_DAYS[0], row(customer="TOKYO_GAS")]).replace(
        b"TOKYO_GAS", "東京ガス".encode("shift_jis")
    )
    # When planned
    result = plan(content)
    # Then the problem names line 3 and the customer column, and shows the bytes
    [problem] = result.problems
    assert (problem.line, problem.column) == (3, "customer")
    assert problem.message == "bytes that are not UTF-8 in column customer"
    assert problem.value == "東京ガス".encode("shift_jis").decode("utf-8", "backslashreplace")
    assert problem.value.startswith("\\x93\\x8c")


@pytest.mark.parametrize("seekable", [True, False], ids=["a-file", "the-s3-body"])
def test_a_file_saved_as_shift_jis_is_one_problem_naming_its_encoding_from_a_file_or_a_stream(seekable):
    # Given a bill saved again by Excel in Japan (Shift_JIS), read from a file or, as the import reads the S3
    # body, from a buffered stream that cannot be read again
    content = billing_csv([row(customer=f"東京ガス {i}") for i in range(40)]).decode("utf-8-sig").encode("cp932")
    stream = io.BytesIO(content) if seekable else io.BufferedReader(OneWay(content), buffer_size=64 * 1024)
    # When planned
    result = plan_import(stream, month="202610", currency="JPY", mapping=mapping())
    # Then one problem says what the file is and how to convert it, not one per row; nothing is charged
    [problem] = result.problems
    assert problem.kind is ProblemKind.ENCODING
    assert problem.message == (
        "this file is Shift_JIS (CP932, what Excel in Japan saves as CSV), not UTF-8: nothing in it was read. "
        "Export it again from Soracom, save it as 'CSV UTF-8' (in Excel: Save As, CSV UTF-8), or convert it: "
        "iconv -f CP932 -t UTF-8 FILE.csv > FILE-utf8.csv"
    )
    assert (result.rows, len(result.charges), result.problem_count, result.currency) == (0, 0, 1, "JPY")


def test_a_header_csv_cannot_read_is_one_problem_on_line_1_saying_why():
    # Given a header whose quoted name never ends (longer than csv's field limit)
    data = b'imsi,"' + b"a" * 200_000 + b"\r\n" + billing_csv([row()]).split(b"\r\n", 1)[1]
    # When planned
    result = plan(data)
    # Then one problem on line 1 says so, and nothing is read
    [problem] = result.problems
    assert (problem.line, problem.column, problem.value, problem.kind) == (1, None, None, ProblemKind.HEADER)
    assert problem.message.startswith("the header line is not valid CSV: field larger than field limit")
    assert (result.rows, len(result.charges)) == (0, 0)


def test_an_unmapped_item_is_a_problem_naming_it():
    [problem] = plan(billing_csv([row(item="SORACOM Arc 利用料金")])).problems
    assert (problem.line, problem.column, problem.value) == (2, "billItemName", "SORACOM Arc 利用料金")
    assert problem.message == "no resource for bill item 'SORACOM Arc 利用料金' (column billItemName)"


def test_an_unmapped_customer_without_default_is_a_problem():
    # Given a mapping without default, and rows of an unlisted and of an empty customer
    no_default = mapping().model_copy(update={"customer": mapping().customer.model_copy(update={"default": None})})
    result = plan(billing_csv([row(customer="Globex"), row(customer="")]), no_default)
    # Then each row is a problem naming the value and the column
    assert problems(result) == [(2, "customer", "Globex"), (3, "customer", "")]
    assert [(p.message, p.kind) for p in result.problems] == [
        ("no subscription for customer 'Globex' (column customer)", ProblemKind.UNMAPPED_CUSTOMER),
        (
            "no subscription for customer '' (column customer): give the mapping a customer default for rows "
            "without one",
            ProblemKind.UNMAPPED_CUSTOMER,
        ),
    ]
    assert (result.unmapped_rows, result.kinds) == (2, {ProblemKind.UNMAPPED_CUSTOMER: 2})


def test_an_empty_bill_item_is_a_problem_of_its_own():
    [problem] = plan(billing_csv([row(), row(item="")])).problems
    assert (problem.line, problem.column, problem.value, problem.message, problem.kind) == (
        3,
        "billItemName",
        "",
        "billItemName is empty",
        ProblemKind.VALUE,
    )


IMSI_3 = "440103000000003"


def test_a_row_with_a_number_that_is_not_one_gets_every_other_problem_of_its_numbers_too():
    # Given a row whose quantity is not a number and whose amount is beyond what a row may reach (a typo each)
    [quantity, amount] = plan(billing_csv([row(quantity="1O", amount="99999999999")])).problems
    # Then both are said: the bound is the amount's own, whatever the quantity
    assert (quantity.column, quantity.value, quantity.kind) == ("quantity", "1O", ProblemKind.VALUE)
    assert (amount.column, amount.value, amount.kind) == ("amount", "99999999999", ProblemKind.ARITHMETIC)
    assert amount.message.startswith("amount 99999999999 is beyond what one row may reach")


SHARED_YAML = MAPPING_YAML.replace(f'  default: {{subscription: "{SUB_DEFAULT}"}}\n', "") + (
    f'shared:\n  - match: "{SUPPORT}"\n    to: {{subscription: "{SUB_DEFAULT}"}}\n'
)


def test_without_a_default_only_rows_with_no_customer_go_by_a_shared_rule():
    # Given a mapping with no customer default, whose shared rule takes the support fee
    shared = parse_mapping(SHARED_YAML, "mapping.yaml")
    assert shared.customer.default is None
    rows = [
        row(item=SUPPORT, customer="", imsi=""),  # nobody's: the shared rule's
        row(item=SUPPORT, customer="Globex", imsi=""),  # a customer the mapping does not list: not nobody's
        row(item=SUPPORT, customer="", imsi="", date="20261132"),  # nobody's, refused for its date alone
    ]
    result = plan(billing_csv(rows), shared, fast=False)
    assert [(p.line, p.column, p.value, p.kind) for p in result.problems] == [
        (3, "customer", "Globex", ProblemKind.UNMAPPED_CUSTOMER),
        (4, "date", "20261132", ProblemKind.VALUE),
    ]
    assert result.unmapped_rows == 1


def test_every_problem_of_a_file_is_reported_with_its_line():
    # Given a file with several bad rows among good ones (and a row with two problems)
    rows = [
        TWO_DAYS[0],
        row(amount="x"),
        TWO_DAYS[1],
        row(item="Unknown", date="20261132"),
        row(date="20261003"),
        row(item="Unknown"),
    ]
    # When planned
    result = plan(billing_csv(rows))
    # Then every problem is there, in file order, and the plan has no charge
    assert problems(result) == [
        (3, "amount", "x"),
        (5, "date", "20261132"),
        (5, "billItemName", "Unknown"),
        (7, "billItemName", "Unknown"),
    ]
    assert result.problem_count == 4
    assert result.charges == []
    assert result.charges_sum == 0
    # and the sums still account for every amount that is a number
    assert result.csv_sum == Decimal(10 + 2.5 + 10 + 10 + 10)


def test_line_numbers_count_the_line_breaks_inside_quoted_fields():
    # Given a name tag with a line break (quoted) on line 2, and a bad amount after it
    rows = [row(name="two\r\nlines"), row(name="three\nlines\rhere"), row(amount="bad")]
    # When planned
    result = plan(billing_csv(rows))
    # Then the bad row is on line 7 (the header, then 2 + 3 lines), as an editor shows it
    assert problems(result) == [(7, "amount", "bad")]


def test_the_problem_of_a_multi_line_record_is_on_its_first_line():
    rows = [row(), row(name="two\r\nlines", amount="bad")]
    assert problems(plan(billing_csv(rows))) == [(3, "amount", "bad")]


def test_a_file_with_only_a_header_is_a_problem():
    result = plan(billing_csv([]))
    assert [p.message for p in result.problems] == ["the file has a header but no data rows"]


def test_an_empty_file_is_a_problem():
    [problem] = plan(b"").problems
    assert (problem.line, problem.message) == (1, "the file is empty: no header line")


@pytest.mark.parametrize("fast", [True, False], ids=["plan_import", "python-reader"])
def test_a_blank_first_line_before_the_header_is_named_as_such_not_as_an_empty_file(fast):
    # Given a bill whose header was pushed down by an empty line (its rows follow)
    [problem] = plan(b"\r\n" + billing_csv([row()]).removeprefix(b"\xef\xbb\xbf"), fast=fast).problems
    # Then the problem says where the header must be
    assert (problem.line, problem.kind, problem.message) == (
        1,
        ProblemKind.HEADER,
        "line 1 is blank: the header (the columns' names) must be the file's first line",
    )


def test_stored_problems_are_capped_and_the_rest_counted():
    # Given more bad rows than the report lists
    result = plan(billing_csv([row(amount="x")] * (MAX_STORED_PROBLEMS + 5)))
    # Then the first ones are kept, and the count says how many there are
    assert len(result.problems) == MAX_STORED_PROBLEMS
    assert result.problem_count == MAX_STORED_PROBLEMS + 5
    assert result.problems[-1] == ImportProblem(
        line=MAX_STORED_PROBLEMS + 1,
        column="amount",
        value="x",
        message="amount 'x' is not a plain decimal number (such as -12.5)",
    )


@pytest.mark.parametrize("aggregation", ["imsi-month", "none"])  # the aggregated reading and the generic one
@pytest.mark.parametrize("before", [0, 1, 3])
def test_an_unterminated_quote_swallowing_the_file_is_a_problem_on_the_line_it_starts(aggregation, before):
    # Given a quote that never closes before more than csv's field limit, after `before` good rows
    content = billing_csv([row()] * before) + b'1,,20261001,"' + b"x" * 200_000
    # When planned
    result = plan(content, mapping(aggregation=aggregation))
    # Then reading stops with a problem on the line it starts (the header is line 1)
    assert (result.problems[-1].line, result.problems[-1].column) == (before + 2, None)
    assert result.problems[-1].message.startswith("the CSV cannot be read from this line on: field larger than field")


SUFFIX_WORDS = "id_suffix must be 1-16 lower-case letters or digits (up to three such parts joined by '-'), got"


@pytest.mark.parametrize(
    ("month", "currency", "id_suffix", "said"),
    [
        ("2026-10", "JPY", "", "month must be yyyyMM with a month 01-12 (for example 202208), got '2026-10'"),
        ("202610", "jpy", "", "currency must be an ISO 4217 code of 3 capital letters (JPY), got 'jpy'"),
        ("202610", "", "", "currency must be an ISO 4217 code of 3 capital letters (JPY), got ''"),
        ("202610", "JPY", "G-x", f"{SUFFIX_WORDS} 'G-x'"),
        ("202610", "JPY", "a-b-c-d", f"{SUFFIX_WORDS} 'a-b-c-d'"),
    ],
)
def test_a_bad_month_currency_or_id_suffix_from_the_caller_is_invalid_input_naming_it(month, currency, id_suffix, said):
    with pytest.raises(InvalidInputError) as raised:
        plan_import(io.BytesIO(b""), month=month, currency=currency, mapping=mapping(), id_suffix=id_suffix)
    assert str(raised.value) == said


def test_the_generic_reader_reports_the_same_problems():
    # Given a file without the optional columns (read by the generic loop) with the usual problems
    header = ("imsi", "date", "billItemName", "amount", "customer")
    rows = [row(), row(amount="x"), row(date="20261032"), row(item="Unknown")]
    # Then the problems are the same as in the usual layout
    assert problems(plan(billing_csv(rows, header=header))) == problems(plan(billing_csv(rows)))


def test_the_customer_can_be_the_group_name_in_the_last_column():
    # Given a mapping whose customer column is groupName (the last column, quoted when it has a comma)
    by_group = parse_mapping(
        MAPPING_YAML.replace("column: customer", "column: groupName").replace('"東京ガス":', '"Sensors, Tokyo":'), "m"
    )
    # When planned
    result = plan(billing_csv([row(), row(imsi=IMSI_2, group="物流トラッカー")]), by_group)
    # Then the group names the subscription, without the line break of the row's end
    assert {(c.attributes or {})["imsi"]: c.subscription_id for c in result.charges} == {
        IMSI_1: SUB_TOKYO,
        IMSI_2: SUB_DEFAULT,
    }
    assert result.per_customer == {"Sensors, Tokyo": 10, "物流トラッカー": 10}


@pytest.mark.parametrize("line_break", [b"\n", b"\r"])
def test_lf_and_cr_line_breaks_read_like_crlf(line_break):
    content = billing_csv([row(), row(amount="x")]).replace(b"\r\n", line_break)
    result = plan(content)
    assert (result.rows, problems(result)) == (2, [(3, "amount", "x")])


# --- a row's arithmetic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit_price", "quantity", "amount"),
    [
        ("0.0000002", "12345678", "2.4691356"),  # exact
        ("0.0000002", "12345679", "2.47"),  # the product 2.4691358 rounded to the 2 decimals shown
        ("0.0000002", "12345679", "2"),  # ... to none
        ("-1000", "1", "-1000"),  # a discount
        ("", "12", "7"),  # no unit price: nothing to check
        ("5", "", "7"),  # no quantity: nothing to check
        ("0.125", "1", "0.13"),  # off by exactly half a unit of the last decimal shown: a rounding
        ("", "", ".5"),  # no digit before the point (the pure-Python reader's; the fast path leaves it)
        ("", "", "-.25"),
    ],
)
def test_an_amount_that_is_unit_price_times_quantity_as_shown_is_good_on_either_path(unit_price, quantity, amount):
    data = billing_csv([row(item=DATA, unit_price=unit_price, quantity=quantity, amount=amount)])
    fast, reference = plan(data), plan(data, fast=False)
    assert reference.problems == []
    assert fast.charges_sum == reference.charges_sum == Decimal(amount)
    assert isinstance(fast.charges, FrameCharges) or not (unit_price and quantity)


@pytest.mark.parametrize(
    ("unit_price", "quantity", "amount", "said"),
    [
        ("10", "1", "100", "amount 100 is not unitPrice × quantity (10 × 1 = 10): off by more than the rounding its 0"),
        ("0.0000002", "12345679", "2.46", "(0.0000002 × 12345679 = 2.4691358): off by more than the rounding its 2"),
        ("10", "3", "30.01", "(10 × 3 = 30): off by more than the rounding its 2 decimal(s) allow"),
        ("0.1245", "1", "0.13", "(0.1245 × 1 = 0.1245): off by more than the rounding its 2 decimal(s) allow"),
        # a discount's negative price, a product under 1 either way, and none at all
        ("-10", "3", "-31", "amount -31 is not unitPrice × quantity (-10 × 3 = -30): off by more"),
        ("-0.1", "3", "-0.31", "amount -0.31 is not unitPrice × quantity (-0.1 × 3 = -0.3): off by more"),
        ("0.1", "3", "0.31", "amount 0.31 is not unitPrice × quantity (0.1 × 3 = 0.3): off by more"),
        ("0", "5", "1", "amount 1 is not unitPrice × quantity (0 × 5 = 0): off by more"),
    ],
)
def test_an_amount_that_is_not_unit_price_times_quantity_is_a_problem_naming_the_row(
    unit_price, quantity, amount, said
):
    data = billing_csv([TWO_DAYS[0], row(item=DATA, unit_price=unit_price, quantity=quantity, amount=amount)])
    # On either path: the fast path leaves such a file to the pure-Python reader, which names the row
    for result in (plan(data), plan(data, fast=False)):
        [problem] = result.problems
        assert (problem.line, problem.column, problem.value, problem.kind) == (3, "amount", amount, "arithmetic")
        assert said in problem.message
        assert result.charges == []


def test_an_amount_beyond_the_bound_a_row_may_reach_is_a_problem_which_the_mapping_can_move():
    typo = row(item=DATA, unit_price="", quantity="", amount="1000000000000")
    [problem] = plan(billing_csv([typo])).problems
    assert "amount 1000000000000 is beyond what one row may reach (100,000,000 either way" in problem.message
    assert "checks.rowAmountLimit" in problem.message
    raised = mapping(checks={"rowAmountLimit": "1e13"})
    assert plan(billing_csv([typo]), the_mapping=raised).problems == []


@pytest.mark.parametrize("amount", ["100000000.01", "-100000000.5", "100000001"])
def test_an_amount_just_beyond_the_bound_a_row_may_reach_is_a_problem_on_either_path(amount):
    # The fast path's float test must doubt every row near the bound, not only rows far beyond it
    data = billing_csv([TWO_DAYS[0], row(item=DATA, unit_price="", quantity="", amount=amount)])
    for result in (plan(data), plan(data, fast=False)):
        [problem] = result.problems
        assert (problem.line, problem.column, problem.value, problem.kind) == (3, "amount", amount, "arithmetic")
        assert problem.message.startswith(f"amount {amount} is beyond what one row may reach (100,000,000 either way")
        assert result.charges == []


def test_the_mapping_sets_the_tolerance_or_turns_the_arithmetic_off():
    off_by_a_cent = [row(item=DATA, unit_price="0.2", quantity="12.5", amount="2.51")]
    assert plan(billing_csv(off_by_a_cent)).problems != []
    assert plan(billing_csv(off_by_a_cent), the_mapping=mapping(checks={"amountTolerance": "0.01"})).problems == []
    assert plan(billing_csv(off_by_a_cent), the_mapping=mapping(checks={"arithmetic": False})).problems == []
