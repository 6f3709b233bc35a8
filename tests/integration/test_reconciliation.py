"""A month reconciles against Soracom's real bill: rounded up, less a coupon, plus tax where the mapping says.

The whole stack runs in moto against simulators that bill as Soracom does (the CSV's sum rounded
up to 1 JPY or 0.01 USD, less the coupon, plus tax when switched on). Each test checks what a
billing team would: the report's steps and verdict, the alert (or its absence), the metadata on
the stored CSV, and the charges CloudBlue received, which stay the CSV's rows exactly.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from soracharge.models.months import shift_month
from soracharge_local.engine import LocalCloud
from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH, full_stack
from tests.integration.test_operations import export_and_import, rated, upload

REPO = Path(__file__).resolve().parents[2]
TAX = '\nreconciliation:\n  tax:\n    rate: "0.10"\n    rounding: down\n'


def csv_sum(content: bytes, dropped: int = 0) -> Decimal:
    """Σ amount of the CSV, worked out apart from the import; of all its rows but the last ``dropped``."""
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))
    return sum((Decimal(row["amount"]) for row in rows[: len(rows) - dropped]), Decimal(0))


def cloudblue_total(cloudblue: CloudBlueSimulator, session: int) -> Decimal:
    return sum((Decimal(str(c["totalPrice"])) for c in cloudblue.charges(session)), Decimal(0))


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mapping") / "mapping.yaml"
    shutil.copy(REPO / "examples" / "mapping.example.yaml", path)
    return path


@pytest.fixture(scope="module")
def stack(soracom: SoracomSimulator, cloudblue: CloudBlueSimulator, mapping_file: Path) -> Iterator[LocalCloud]:
    with full_stack(soracom, cloudblue, mapping_file, {"POWERTOOLS_METRICS_DISABLED": "true"}) as cloud:
        yield cloud


@pytest.fixture(autouse=True)
def _fresh_billing(soracom: SoracomSimulator, stack: LocalCloud) -> Iterator[None]:
    soracom.set_billing({"coupon": "0", "taxRate": None, "taxRounding": "down"})
    soracom.update_faults({"drop_csv_rows": 0})
    stack.put_mapping(REPO / "examples" / "mapping.example.yaml")
    yield
    soracom.set_billing({"coupon": "0", "taxRate": None})
    soracom.update_faults({"drop_csv_rows": 0})


def month_report(stack: LocalCloud, month: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Export and import ``month``, follow its session; (the stored CSV's head, the final report)."""
    stack.alerts()
    output, deliveries = export_and_import(stack, month, name)
    (delivery,) = deliveries
    head = stack.client("s3").head_object(
        Bucket=stack.bucket, Key=output["s3"]["key"], VersionId=output["s3"]["versionId"]
    )
    return head, rated(stack, delivery)


def test_a_jpy_bill_rounded_up_less_a_coupon_balances_the_steps_name_the_coupon_and_nobody_is_alerted(
    stack: LocalCloud, soracom: SoracomSimulator, cloudblue: CloudBlueSimulator
):
    # Given a bill that is the CSV's sum rounded up to the yen, less a 500 JPY coupon
    month = LAST_MONTH
    soracom.set_billing({"coupon": "500"})
    bill = soracom.bill(month)
    assert bill is not None
    total = csv_sum(soracom.csv_bytes(month))
    assert bill["amount"] == math.ceil(total) - 500 != total

    # When the month runs
    head, report = month_report(stack, month, "reconcile-coupon")

    # Then the stored CSV carries the bill's amount and coupon, and the month balances step by step
    assert head["Metadata"]["bill-amount"] == str(bill["amount"])
    assert head["Metadata"]["coupon-amount"] == "500"
    reconciliation = report["reconciliation"]
    assert report["status"] == "PROCESSED"
    assert reconciliation["balanced"] is True
    assert [(s["kind"], Decimal(s["amount"])) for s in reconciliation["steps"]] == [
        ("csv-sum", total),
        ("rounding", math.ceil(total)),
        ("coupon", math.ceil(total) - 500),
    ]
    assert reconciliation["couponAmount"] == "500"
    assert "less the 500 JPY coupon" in reconciliation["note"]
    # And CloudBlue received the CSV's exact sum, not the bill's: rounding and coupon are not charges
    assert cloudblue_total(cloudblue, report["importSessionId"]) == total == Decimal(reconciliation["importedSum"])
    assert stack.alerts() == []


def test_a_tax_included_bill_balances_with_the_mapping_tax_and_is_unbalanced_and_explained_without_it(
    stack: LocalCloud, soracom: SoracomSimulator, mapping_file: Path
):
    # Given bills that include 10 % tax on the rounded total
    soracom.set_billing({"taxRate": "0.10", "taxRounding": "down"})
    with_tax, without_tax = shift_month(LAST_MONTH, -1), shift_month(LAST_MONTH, -2)

    # When one month runs with the tax in the mapping, and one without
    mapping_file.write_text(mapping_file.read_text() + TAX)
    stack.put_mapping(mapping_file)
    _, taxed = month_report(stack, with_tax, "reconcile-tax-on")
    stack.put_mapping(REPO / "examples" / "mapping.example.yaml")
    _, untaxed = month_report(stack, without_tax, "reconcile-tax-off")

    # Then the first balances with a tax step, and the second is unbalanced, naming the setting to set
    assert taxed["reconciliation"]["balanced"] is True
    assert taxed["reconciliation"]["steps"][-1]["kind"] == "tax"
    assert taxed["reconciliation"]["taxRate"] == "0.10"
    assert untaxed["reconciliation"]["balanced"] is False
    assert 'reconciliation.tax.rate: "0.10"' in untaxed["reconciliation"]["note"]
    (alert,) = stack.alerts()
    assert alert["subject"] == f"soracharge {without_tax} (Japan coverage): reconciliation does not balance"
    assert "matches tax at 10% on top" in alert["message"]


def test_a_csv_served_without_some_of_its_rows_is_short_of_the_bill_unbalanced_and_alerted(
    stack: LocalCloud, soracom: SoracomSimulator, cloudblue: CloudBlueSimulator
):
    # Given an export served without its last 3 rows (the Harvest, support and free-tier lines), a full bill
    month = shift_month(LAST_MONTH, -3)
    soracom.update_faults({"drop_csv_rows": 3})
    full, served = csv_sum(soracom.csv_bytes(month)), csv_sum(soracom.csv_bytes(month), dropped=3)
    assert served != full

    # When the month runs
    _, report = month_report(stack, month, "reconcile-truncated")

    # Then the charges are the rows the CSV has, and the month is unbalanced by what is missing
    reconciliation = report["reconciliation"]
    assert reconciliation["balanced"] is False
    assert Decimal(reconciliation["csvSum"]) == served
    assert cloudblue_total(cloudblue, report["importSessionId"]) == served
    assert Decimal(reconciliation["difference"]) == Decimal(reconciliation["billAmount"]) - math.ceil(served)
    (alert,) = stack.alerts()
    assert alert["subject"] == f"soracharge {month} (Japan coverage): reconciliation does not balance"
    assert f"short by {reconciliation['difference']} JPY" in alert["message"]
    assert "the CSV may be incomplete" in alert["message"]


def test_the_html_page_beside_the_report_shows_its_steps_difference_and_verdict(
    stack: LocalCloud, soracom: SoracomSimulator
):
    # Given an unbalanced month (the CSV lacks its last row, the free tier's credit: it is over the bill)
    month = shift_month(LAST_MONTH, -4)
    soracom.update_faults({"drop_csv_rows": 1})
    _, report = month_report(stack, month, "reconcile-page")
    stack.alerts()

    # Then the HTML page beside the JSON shows the same steps, difference and verdict
    key = f"reports/{month}/{report['object']['versionId']}.html"
    page = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read().decode()
    for step in report["reconciliation"]["steps"][1:]:
        assert f'data-kind="{step["kind"]}" data-change="{step["change"]}" data-amount="{step["amount"]}"' in page
    assert 'id="reconciliation-difference"' in page
    assert 'data-balanced="false"' in page
    assert report["reconciliation"]["note"].startswith("over by")
    assert str(escape(report["reconciliation"]["note"])) in page


COUPON_ITEM = """
  - match: "Soracom coupon"
    resource: "c0a1b2c3-d4e5-4f60-8718-293a4b5c6d7e"
    sku: SORACOM-COUPON
"""


def test_the_coupon_passed_on_as_the_readme_says_is_one_credit_to_the_providers_own_subscription(
    stack: LocalCloud, soracom: SoracomSimulator, cloudblue: CloudBlueSimulator, mapping_file: Path
):
    # Given a month imported with a 300 JPY coupon on its bill
    month = shift_month(LAST_MONTH, -5)
    soracom.set_billing({"coupon": "300"})
    _, report = month_report(stack, month, "reconcile-coupon-passed-on")
    assert report["reconciliation"]["balanced"] is True

    # When the coupon is uploaded as the README says: a one-row CSV, its item mapped, import=additional
    text = mapping_file.read_text().replace("\nitems:\n", "\nitems:" + COUPON_ITEM, 1)
    mapping_file.write_text(text)
    stack.put_mapping(mapping_file)
    body = "\ufeffimsi,date,billItemName,unitPrice,quantity,amount,customer\r\n"
    body += f",{month},Soracom coupon,-300,1,-300,\r\n"
    metadata = {"currency": "JPY", "import": "additional"}
    delivery = upload(stack, f"uploads/{month}/coupon-{month}.csv", body.encode(), **metadata)
    coupon = rated(stack, delivery)

    # Then CloudBlue holds one -300 JPY charge on the default (the provider's own) subscription, in its own session
    assert coupon["status"] == "PROCESSED"
    (charge,) = cloudblue.charges(coupon["importSessionId"])
    assert Decimal(str(charge["totalPrice"])) == Decimal(-300)
    assert charge["subscriptionId"] == "8d116ece-1738-47d9-bd9c-172411e20b8f"
    assert coupon["importSessionId"] != report["importSessionId"]
    # And the month's own charges are untouched: still the CSV's exact sum
    assert cloudblue_total(cloudblue, report["importSessionId"]) == csv_sum(soracom.csv_bytes(month))
