"""Global coverage reconciles in USD: the bill is the CSV's sum rounded up to the cent, less a coupon.

Its own module, as it deploys its own stack (one local stack runs in a process at a time) with a
Soracom simulator of Global coverage and the Global example mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal

import pytest
from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH, SIM_AUTH_KEY, SIM_AUTH_KEY_ID, full_stack
from tests.integration.test_reconciliation import REPO, cloudblue_total, csv_sum, month_report


@pytest.fixture(scope="module")
def global_soracom() -> Iterator[SoracomSimulator]:
    with SoracomSimulator(coverage="g", auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY, coupon=Decimal("2.5")) as s:
        yield s


@pytest.fixture(scope="module")
def global_stack(global_soracom: SoracomSimulator, cloudblue: CloudBlueSimulator) -> Iterator[LocalCloud]:
    mapping = REPO / "examples" / "mapping.global.example.yaml"
    with full_stack(global_soracom, cloudblue, mapping, {"POWERTOOLS_METRICS_DISABLED": "true"}) as cloud:
        yield cloud


def test_a_usd_bill_rounded_up_to_the_cent_less_a_coupon_balances_in_its_own_currency(
    global_soracom: SoracomSimulator, cloudblue: CloudBlueSimulator, global_stack: LocalCloud
):
    # Given Global coverage: a USD bill that is the CSV's sum rounded up to the cent, less a $2.50 coupon
    month = LAST_MONTH
    total = csv_sum(global_soracom.csv_bytes(month))
    bill = global_soracom.bill(month)
    assert bill is not None
    assert bill["amount"] == Decimal(math.ceil(total * 100)) / 100 - Decimal("2.5")

    # When the month runs on a stack with the Global mapping
    _, report = month_report(global_stack, month, "reconcile-usd")
    alerts = global_stack.alerts()

    # Then it balances in USD, the rounding step is to the cent, and CloudBlue has the CSV's exact sum
    reconciliation = report["reconciliation"]
    assert report["currency"] == "USD"
    assert reconciliation["balanced"] is True, reconciliation["note"]
    assert reconciliation["steps"][1]["label"] == "rounded up to 0.01 USD"
    assert "less the 2.5 USD coupon" in reconciliation["note"]
    assert cloudblue_total(cloudblue, report["importSessionId"]) == total
    assert alerts == []


def test_a_usd_csv_served_without_some_of_its_rows_is_short_in_usd_and_alerted(
    global_soracom: SoracomSimulator, cloudblue: CloudBlueSimulator, global_stack: LocalCloud
):
    # Given a Global coverage export that lacks its last 3 rows while the USD bill counts them
    month = shift_month(LAST_MONTH, -1)
    global_soracom.update_faults({"drop_csv_rows": 3})
    try:
        _, report = month_report(global_stack, month, "reconcile-usd-short")
    finally:
        global_soracom.update_faults({"drop_csv_rows": 0})

    # Then the charges are the rows it has, and the month is short in USD, to the cent, with the alert
    reconciliation = report["reconciliation"]
    assert reconciliation["balanced"] is False
    served = csv_sum(global_soracom.csv_bytes(month), dropped=3)
    assert Decimal(reconciliation["csvSum"]) == served
    assert cloudblue_total(cloudblue, report["importSessionId"]) == served
    assert Decimal(reconciliation["difference"]) > 0
    (alert,) = global_stack.alerts()
    assert alert["subject"] == f"soracharge {month} (Global coverage): reconciliation does not balance"
    assert f"short by {reconciliation['difference'].rstrip('0').rstrip('.')} USD" in alert["message"]
    assert "Difference (bill less steps): " + reconciliation["difference"] + " USD" in alert["message"]
