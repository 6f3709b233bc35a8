"""The month against the months before it (logic/variance.py), rule by rule."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from soracharge.logic.variance import MonthTotals, compare, history
from soracharge.models.imports import Amount, ImportReport, ObjectRef
from soracharge.models.mapping import VarianceSettings

D = Decimal


def before(**customers: str) -> list[MonthTotals]:
    return [MonthTotals("202609", {name.replace("_", " "): D(v) for name, v in customers.items()}, {"fee": D(1)})]


def kinds(now: dict[str, Decimal], earlier: list[MonthTotals], **settings: Decimal) -> list[tuple[str, str]]:
    judged = compare("202610", now, {"fee": D(1)}, earlier, VarianceSettings(**settings), "JPY")
    return [(flag.kind, flag.name) for flag in judged.flags]


def test_a_move_must_pass_both_the_change_and_the_floor():
    assert kinds({"Acme": D(1400)}, before(Acme="1000")) == []  # +40 %: under 50 %
    assert kinds({"Acme": D(1600)}, before(Acme="1000")) == []  # +60 %, but 600 under the floor of 1,000
    assert kinds({"Acme": D(2100)}, before(Acme="1000")) == [("moved", "Acme")]
    assert kinds({"Acme": D(-500)}, before(Acme="1000")) == [("moved", "Acme")]  # -150 %, by 1,500


def test_appearing_and_vanishing_count_from_the_floor_and_nothing_is_a_move_from_zero_to_zero():
    assert kinds({"Acme": D(1000), "New": D("0.01")}, before(Acme="1000")) == []
    assert kinds({"Acme": D(1000), "New": D(1500)}, before(Acme="1000")) == [("appeared", "New")]
    assert kinds({}, before(Acme="1000")) == [("vanished", "Acme")]
    assert kinds({"Zero": D(0)}, before(Zero="0"), floor=D(0)) == []


def test_a_bill_item_no_earlier_month_had_is_unusual_and_the_first_month_never_is():
    judged = compare(
        "202610", {"Acme": D(1)}, {"fee": D(1), "new fee": D(2)}, before(Acme="1"), VarianceSettings(), "JPY"
    )
    assert [(f.kind, f.name) for f in judged.flags] == [("new-item", "new fee")]
    assert compare("202610", {"Acme": D(1)}, {"x": D(1)}, [], VarianceSettings(), "JPY").flags == []


def test_a_month_in_another_currency_is_never_the_month_compared_with():
    moment = datetime(2026, 10, 1, tzinfo=UTC)

    def report(month: str, currency: str) -> ImportReport:
        return ImportReport(
            status="PROCESSED",
            summary="-",
            month=month,
            coverage="g",
            currency=currency,
            object=ObjectRef(bucket="b", key=f"exports/{month}/g/x.csv", version_id="v"),
            per_customer=[Amount(name="Acme", amount=D(100))],
            created_at=moment,
            updated_at=moment,
        )

    months = history([report("202608", "USD"), report("202609", "EUR")], "g", "202610", currency="USD")
    assert [m.month for m in months] == ["202608"]
