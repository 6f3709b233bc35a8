"""Fuzz: any bytes into ``plan_import`` give a plan or a typed error, and never part of a file.

Properties checked on every input:

- ``plan_import`` returns an :class:`ImportPlan` or raises a ``SorachargeError`` subclass, nothing else;
- a plan with a problem has no charge and no packet (a file is imported whole or not at all);
- a plan without a problem has Σ totalPrice == csv_sum exactly, charges that validate to themselves,
  and packets whose JSON carries money as numbers (never strings) adding up to csv_sum.
"""

from __future__ import annotations

import io
import json
from decimal import Context, Decimal, localcontext
from pathlib import Path

from hypothesis import event, example, given
from hypothesis import strategies as st
from soracharge.errors import SorachargeError
from soracharge.logic.billing_csv import _NUMBER  # the reader's own definition of a plain decimal
from soracharge.logic.charges import plan_import
from soracharge.models.charges import Charge, ImportPlan
from soracharge.models.mapping import Mapping, parse_mapping

from tests.fuzz.strategies import fuzz

REPO = Path(__file__).resolve().parents[2]
#: The example's customers with Japanese bill item labels (tests/fixtures), and a camera given to Acme.
LABELS = parse_mapping((REPO / "tests" / "fixtures" / "mapping.labels.yaml").read_text(encoding="utf-8"), "labels")
EXAMPLE = LABELS.model_copy(
    update={"customer": LABELS.customer.model_copy(update={"devices": {"7CDDE9000001": "Acme Logistics"}})}
)
MAPPINGS = {
    "imsi-month": EXAMPLE,
    "none": EXAMPLE.model_copy(update={"aggregation": "none", "packet_size": 3}),
    "date": EXAMPLE.model_copy(update={"date_format": "date", "packet_size": 1}),
}
MONTH = "202610"
HEADER = [
    "imsi",
    "vpgId",
    "soraCamDeviceId",
    "loraDeviceId",
    "date",
    "billItemName",
    "unitPrice",
    "quantity",
    "amount",
    "name",
    "customer",
    "groupName",
]
ITEMS = [
    "基本料金 (plan-D)",
    "データ通信料金 (plan-D)",
    "SMS 送信料金",
    'ボリュームディスカウント "IoT スターター, 10%"',
    "サポート月額料金 (Business)",
    "無料利用枠 (plan-D)",
]
CUSTOMERS = ["東京ガス", "Acme Logistics", "Northwind Traders", "", "unlisted, goes to the default"]
MONEY_KEYS = ("totalPrice", "amount", "unitPrice")


def money(places: int) -> st.SearchStrategy[str]:
    return st.decimals(min_value=-(10**6), max_value=10**6, places=places).map(lambda value: format(value, "f"))


GOOD = {
    "imsi": st.one_of(st.just(""), st.integers(440100000000000, 440199999999999).map(str)),
    "vpgId": st.sampled_from(["", "vpg-1"]),
    "soraCamDeviceId": st.sampled_from(["", "", "7CDDE9000001", "7CDDE9000009"]),
    "loraDeviceId": st.sampled_from(["", "", "d000000000000001"]),
    "date": st.one_of(st.just(MONTH), st.integers(1, 31).map(lambda day: f"{MONTH}{day:02d}")),
    "billItemName": st.sampled_from(ITEMS),
    "unitPrice": st.one_of(st.just(""), st.integers(0, 6).flatmap(money)),
    "quantity": st.one_of(st.just(""), st.integers(0, 6).flatmap(money)),
    "amount": st.integers(0, 18).flatmap(money),
    "name": st.text(alphabet='ab ,"\r\né', max_size=6),
    "customer": st.sampled_from(CUSTOMERS),
    "groupName": st.sampled_from(["Sensors, Tokyo", "物流トラッカー", ""]),
}
#: Values a field should never hold in a good file: numbers in every wrong form, text, quotes, breaks.
BAD_TEXT = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "nan",
            "-Infinity",
            "inf",
            "1e3",
            "1E+2",
            "-0e0",
            "0x10",
            "1_000",
            " 1",
            "1 ",
            "１２",
            "٣",
            "1" * 21,
            "0." + "1" * 19,
            "9" * 20 + "." + "9" * 18,
            "-" + "9" * 20,
            ".",
            "-",
            "+",
            "",
            "--1",
            "1,5",
            '"',
            '""',
            "\r",
            "\n",
            "\r\n",
            "\x00",
            "\ufeff",
            "20261032",
            "202613",
            "20260931",
            "20261100",
            "2026-10-01",
            "*",
            "[",
            "?",
            "4401O3",
            "-440",
            "４４０",
        ]
    ),
    st.text(max_size=12),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.integers(-(10**40), 10**40).map(str),
)


def encode_field(value: str | bytes, quote: bool) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    if quote or any(c in raw for c in b',"\r\n'):
        return b'"' + raw.replace(b'"', b'""') + b'"'
    return raw


def consistent(row: dict[str, str]) -> dict[str, str]:
    """A good row's amount is its unitPrice × quantity when it has both, as Soracom's rows are (the import
    refuses one that is not); a product past the bound a row may reach drops the quantity instead. A row
    names one SIM or device at most, and a camera the mapping gives to Acme is Acme's or nobody's."""
    if "soraCamDeviceId" in row:  # (rows of files without device columns have none)
        if row["imsi"]:
            row["soraCamDeviceId"] = row["loraDeviceId"] = ""
        elif row["soraCamDeviceId"]:
            row["loraDeviceId"] = ""
        if row["soraCamDeviceId"] == "7CDDE9000001" and row["customer"] not in ("", "Acme Logistics"):
            row["customer"] = ""
    if row["unitPrice"] and row["quantity"]:
        with localcontext(Context(prec=60)):
            product = Decimal(row["unitPrice"]) * Decimal(row["quantity"])
        if abs(product) >= ROW_LIMIT:
            row["quantity"] = ""
        else:
            row["amount"] = format(product.normalize() if product else Decimal(0), "f")
    return row


#: The mapping's default checks.rowAmountLimit.
ROW_LIMIT = Decimal(100_000_000)


@st.composite
def good_row(draw: st.DrawFn, *, breaks: bool = True) -> dict[str, str]:
    """A row that maps without a problem; ``breaks``: its free-text field may hold quoted line breaks."""
    row = {column: draw(strategy) for column, strategy in GOOD.items()}
    consistent(row)
    if not breaks:
        row["name"] = row["name"].replace("\r", "").replace("\n", "")
    return row


@st.composite
def corrupted_row(draw: st.DrawFn) -> list[bytes]:
    """A row of the header's width (or not), some fields bad text, bad bytes, broken quoting."""
    row: list[str | bytes] = list(draw(good_row()).values())
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(row) - 1))
        row[index] = draw(st.one_of(BAD_TEXT, st.binary(max_size=8), st.sampled_from([b"\xff", b"\xe3\x81", b"\x80"])))
    fields = [encode_field(value, draw(st.booleans())) for value in row]
    shape = draw(st.sampled_from(["fields", "fields", "fields", "drop", "extra", "stray-quote", "open-quote"]))
    if shape == "drop":
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    elif shape == "extra":
        fields.append(b"extra")
    elif shape == "stray-quote":
        fields[draw(st.integers(0, len(fields) - 1))] += b'"'
    elif shape == "open-quote":
        fields[draw(st.integers(0, len(fields) - 1))] = b'"never closed'
    return fields


@st.composite
def billing_file(draw: st.DrawFn, *, corrupt: bool, breaks: bool = True) -> bytes:
    """A header (any column order) and rows; with ``corrupt`` some rows are corrupted.

    Without ``breaks`` every record is one physical line (CRLF-terminated).
    """
    header = draw(st.permutations(HEADER))
    rows: list[list[bytes]] = []
    for _ in range(draw(st.integers(0 if corrupt else 1, 12))):
        if corrupt and draw(st.integers(0, 3)) == 0:
            rows.append(draw(corrupted_row()))
        else:
            row = draw(good_row(breaks=breaks))
            rows.append([encode_field(row[column], draw(st.booleans())) for column in header])
    newline = draw(st.sampled_from([b"\r\n", b"\n", b"\r"])) if corrupt else b"\r\n"
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    lines = [b",".join(encode_field(name, False) for name in header), *(b",".join(row) for row in rows)]
    text = bom + newline.join(lines)
    if draw(st.booleans()):
        text += newline
    if corrupt and draw(st.integers(0, 4)) == 0:  # a stray chunk anywhere: truncation, bytes, a blank line
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.one_of(st.binary(max_size=6), st.sampled_from([b"", b"\n\n", b'"', b"\xff"])))
        text += b"" if draw(st.booleans()) else lines[-1]
    return text


def check_plan(data: bytes, mapping: Mapping) -> ImportPlan | None:
    """Plan ``data``; check the properties above. None when a typed error was raised."""
    try:
        plan = plan_import(io.BytesIO(data), month=MONTH, currency="JPY", mapping=mapping)
    except SorachargeError as exc:
        event(f"raised {type(exc).__name__}")
        return None
    assert isinstance(plan, ImportPlan)
    event("rejected" if plan.problem_count else "accepted")
    if plan.problem_count:
        assert plan.problems, "a counted problem is listed"
        assert plan.charges == [], "a file with a problem imports nothing (never part of a file)"
        assert len(plan.packets(1)) == 0
        assert plan.charges_sum == 0
        return plan
    assert plan.problems == []
    assert plan.charges_sum == plan.csv_sum
    assert sum((charge.total_price for charge in plan.charges), Decimal(0)) == plan.csv_sum
    for charge in plan.charges:
        assert Charge.model_validate(charge.model_dump()) == charge
    wire_total = Decimal(0)
    packets = plan.packets(7)
    assert sum(len(packet.charges) for packet in packets) == len(plan.charges)
    for packet in packets:
        assert len(packet.charges) <= mapping.packet_size
        body = json.loads(packet.to_json_bytes().decode("utf-8"), parse_float=Decimal)
        assert body["importSessionId"] == 7
        for wire in body["charges"]:
            for key in MONEY_KEYS:
                if key in wire:
                    assert isinstance(wire[key], Decimal | int), f"{key} must be a JSON number, got {wire[key]!r}"
                    assert not isinstance(wire[key], bool)
            wire_total += Decimal(wire["totalPrice"])
    assert wire_total == plan.csv_sum
    return plan


@fuzz(300)
@given(data=st.binary(max_size=600), aggregation=st.sampled_from(sorted(MAPPINGS)))
@example(data=b"", aggregation="imsi-month")
@example(data=b"\xef\xbb\xbf", aggregation="imsi-month")
@example(data=b'"', aggregation="imsi-month")
@example(data=b"\xff\xfe" + ",".join(HEADER).encode("utf-16-le"), aggregation="none")
@example(data=",".join(HEADER).encode() + b'\r\n"', aggregation="imsi-month")
def test_arbitrary_bytes_give_a_plan_or_a_typed_error(data, aggregation):
    check_plan(data, MAPPINGS[aggregation])


@fuzz(200)
@given(data=st.binary(max_size=300), aggregation=st.sampled_from(sorted(MAPPINGS)))
def test_arbitrary_bytes_after_a_valid_header(data, aggregation):
    check_plan(",".join(HEADER).encode() + b"\r\n" + data, MAPPINGS[aggregation])


@fuzz(250)
@given(data=billing_file(corrupt=True), aggregation=st.sampled_from(sorted(MAPPINGS)))
def test_corrupted_billing_files_give_a_plan_or_a_typed_error(data, aggregation):
    check_plan(data, MAPPINGS[aggregation])


@fuzz(120)
@given(data=billing_file(corrupt=False), aggregation=st.sampled_from(sorted(MAPPINGS)))
def test_valid_billing_files_are_accepted_whole(data, aggregation):
    plan = check_plan(data, MAPPINGS[aggregation])
    assert plan is not None
    assert plan.accepted, plan.problems[:3]
    assert plan.charges


@fuzz(150)
@given(
    data=billing_file(corrupt=False, breaks=False),
    bad=st.one_of(
        st.sampled_from(["NaN", "1e3", "1E+2", "inf", "1" * 21, "0." + "1" * 19, "", "x", "1,5"]),
        st.text(alphabet="0123456789.eE+-x", min_size=1, max_size=8).filter(lambda text: not text.isdigit()),
    ),
    position=st.integers(0, 100),
    aggregation=st.sampled_from(sorted(MAPPINGS)),
)
def test_one_bad_amount_anywhere_rejects_the_whole_file(data, bad, position, aggregation):
    # Given a valid file (one line per record) with one more row, anywhere, whose amount is not a plain decimal
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\r\n")
    header = lines[0].decode().split(",")
    row = dict.fromkeys(header, "")
    row.update({"date": MONTH, "billItemName": ITEMS[0], "customer": CUSTOMERS[0], "amount": bad})
    bad_line = b",".join(encode_field(row[column], False) for column in header)
    at = 1 + position % max(1, len(lines) - 1)
    lines.insert(at, bad_line)
    plan = check_plan(b"\r\n".join(lines), MAPPINGS[aggregation])
    # Then nothing of the file is planned: every charge of the good rows is held back too
    if _NUMBER.fullmatch(bad):
        return  # the generator made a good number after all
    assert plan is not None
    assert plan.problem_count >= 1
    assert plan.charges == []
