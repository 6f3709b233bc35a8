"""Sums stay exact beyond the default 28 significant digits, and unitPrice never contradicts totalPrice."""

from __future__ import annotations

import io
from decimal import Context, Decimal, localcontext
from pathlib import Path

from soracharge.logic.charges import plan_import
from soracharge.models.mapping import ChecksSettings, parse_mapping

#: The example's customers with Japanese bill item labels (the rows below are written by hand).
EXAMPLE = parse_mapping(
    (Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "mapping.labels.yaml").read_text(), "ex"
)
#: Rows far larger than a bill's (the precision is the point here): past the bound a row may reach by default.
MAPPING = EXAMPLE.model_copy(update={"checks": ChecksSettings(row_amount_limit=Decimal("1e21"))})
HEADER = "imsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"


def plan(rows: str, mapping=MAPPING):
    return plan_import(io.BytesIO((HEADER + rows).encode()), month="202610", currency="JPY", mapping=mapping)


def test_a_sum_needing_38_significant_digits_is_exact():
    big, small = "12345678901234567890.123456789012345678", "0.000000000000000001"
    result = plan(
        f"440100000000001,20261001,基本料金 (plan-D),,1,{big},Acme Logistics\r\n"
        f"440100000000001,20261002,基本料金 (plan-D),,1,{small},Acme Logistics\r\n"
    )
    assert result.problems == []
    with localcontext(Context(prec=60)):  # 38 digits: Python's default context would round it
        exact = Decimal(big) + Decimal(small)
    assert str(exact) == "12345678901234567890.123456789012345679"
    assert result.csv_sum == result.charges_sum == exact
    (charge,) = result.charges
    assert charge.total_price == exact


def test_a_unit_price_that_does_not_explain_the_total_is_left_out():
    # (a row whose amount is not unitPrice × quantity is refused unless the mapping turns the check off)
    result = plan(
        '440100000000001,202610,"ボリュームディスカウント ""IoT スターター, 10%""",10,1,-0.5,Acme Logistics\r\n'
        "440100000000001,20261001,基本料金 (plan-D),10,1,10,Acme Logistics\r\n",
        EXAMPLE.model_copy(update={"checks": ChecksSettings(arithmetic=False)}),
    )
    assert result.problems == []
    by_total = {c.total_price: c for c in result.charges}
    assert by_total[Decimal("-0.5")].unit_price is None
    assert by_total[Decimal("10")].unit_price == Decimal("10")
