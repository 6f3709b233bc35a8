"""Global coverage reconciles in USD: the bill is the CSV's sum rounded up to the cent, less a coupon.

Its own module, as it deploys its own stack (one local stack runs in a process at a time) with a
Soracom simulator of Global coverage and the Global example mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal

import pytest
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH, SIM_AUTH_KEY, SIM_AUTH_KEY_ID, full_stack
from tests.integration.test_reconciliation import REPO, cloudblue_total, csv_sum, month_report


@pytest.fixture(scope="module")
def global_soracom() -> Iterator[SoracomSimulator]:
    with SoracomSimulator(coverage="g", auth_key_id=SIM_AUTH_KEY_ID, auth_key=SIM_AUTH_KEY, coupon=Decimal("2.5")) as s:
        yield s


def test_a_usd_bill_rounded_up_to_the_cent_less_a_coupon_balances_in_its_own_currency(
    global_soracom: SoracomSimulator, cloudblue: CloudBlueSimulator
):
    # Given Global coverage: a USD bill that is the CSV's sum rounded up to the cent, less a $2.50 coupon
    month = LAST_MONTH
    total = csv_sum(global_soracom.csv_bytes(month))
    bill = global_soracom.bill(month)
    assert bill is not None
    assert bill["amount"] == Decimal(math.ceil(total * 100)) / 100 - Decimal("2.5")

    # When the month runs on a stack with the Global mapping
    mapping = REPO / "examples" / "mapping.global.example.yaml"
    with full_stack(global_soracom, cloudblue, mapping, {"POWERTOOLS_METRICS_DISABLED": "true"}) as cloud:
        _, report = month_report(cloud, month, "reconcile-usd")
        alerts = cloud.alerts()

    # Then it balances in USD, the rounding step is to the cent, and CloudBlue has the CSV's exact sum
    reconciliation = report["reconciliation"]
    assert report["currency"] == "USD"
    assert reconciliation["balanced"] is True, reconciliation["note"]
    assert reconciliation["steps"][1]["label"] == "rounded up to 0.01 USD"
    assert "less the 2.5 USD coupon" in reconciliation["note"]
    assert cloudblue_total(cloudblue, report["importSessionId"]) == total
    assert alerts == []
