"""Small billing CSVs and a mapping for the import-core tests."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from soracharge.logic.charges import _python_plan, plan_import
from soracharge.models.charges import ImportPlan
from soracharge.models.mapping import Mapping, parse_mapping

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_MAPPING = REPO / "examples" / "mapping.example.yaml"
GLOBAL_EXAMPLE = REPO / "examples" / "mapping.global.example.yaml"
#: The example's customers with Japanese bill item labels, for the tests that write their own rows.
LABELS_MAPPING = REPO / "tests" / "fixtures" / "mapping.labels.yaml"

MONTH = "202610"
HEADER = ("imsi", "vpgId", "date", "billItemName", "unitPrice", "quantity", "amount", "name", "customer", "groupName")

SUB_TOKYO = "6513270e-269e-4d37-b2a7-4de452e6b438"
ACCOUNT_TOKYO = "d23f0824-128b-4f33-8c5c-7fd0a6a3a450"
SUB_ACME = "9531985d-5d9d-49f8-9818-e811892f902b"
SUB_DEFAULT = "8d116ece-1738-47d9-bd9c-172411e20b8f"
RES_BASIC = "90c192cf-d3ac-44af-8f21-ddb66cad4a26"
RES_DATA = "a170b338-3926-4059-b28c-105d1fb17c23"
RES_DISCOUNT = "0cb1e29c-658c-4a14-95e6-0af593bd04cf"
RES_SUPPORT = "6b4cb242-4a23-4596-a217-beaddbc496cb"

BASIC = "基本料金 (plan-D)"
DATA = "データ通信料金 (plan-D)"
DISCOUNT = 'ボリュームディスカウント "IoT スターター, 10%"'
SUPPORT = "サポート月額料金 (Business)"
IMSI_1 = "440103000000001"
IMSI_2 = "440103000000002"

MAPPING_YAML = f"""\
customer:
  column: customer
  subscriptions:
    "東京ガス": {{subscription: "{SUB_TOKYO}", account: "{ACCOUNT_TOKYO}"}}
    "Acme Logistics": {{subscription: "{SUB_ACME}"}}
  default: {{subscription: "{SUB_DEFAULT}"}}
items:
  - match: "{BASIC}"
    resource: "{RES_BASIC}"
    sku: BASIC
    uom: days
    description: Basic fee
  - match: "データ通信料金 *"
    resource: "{RES_DATA}"
    uom: MB
  - match: "ボリュームディスカウント*"
    resource: "{RES_DISCOUNT}"
  - match: "{SUPPORT}"
    resource: "{RES_SUPPORT}"
"""


def mapping(**changes: object) -> Mapping:
    """The tests' mapping, with top-level fields replaced (``aggregation="none"``, ``packetSize=2``...)."""
    text = MAPPING_YAML + "".join(f"{key}: {value}\n" for key, value in changes.items())
    return parse_mapping(text, "test-mapping.yaml")


def row(
    imsi: str = IMSI_1,
    date: str = "20261001",
    item: str = BASIC,
    unit_price: str = "10",
    quantity: str = "1",
    amount: str = "10",
    customer: str = "東京ガス",
    *,
    name: str = "センサー 1",
    group: str = "Sensors, Tokyo",
) -> dict[str, str]:
    """One row of the simulator's layout, by column name."""
    return {
        "imsi": imsi,
        "vpgId": "",
        "date": date,
        "billItemName": item,
        "unitPrice": unit_price,
        "quantity": quantity,
        "amount": amount,
        "name": name,
        "customer": customer,
        "groupName": group,
    }


def billing_csv(rows: Sequence[dict[str, str]], *, header: Sequence[str] = HEADER, bom: bool = True) -> bytes:
    """A detailed billing CSV as Soracom writes it: UTF-8 with a BOM, CRLF, minimal quoting."""
    buffer = io.StringIO()
    if bom:
        buffer.write("\ufeff")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for values in rows:
        writer.writerow([values.get(column, "") for column in header])
    return buffer.getvalue().encode("utf-8")


def plan(content: bytes, the_mapping: Mapping | None = None, *, month: str = MONTH, fast: bool = True) -> ImportPlan:
    """The file planned as the import plans it; ``fast=False``: by the pure-Python reader alone."""
    if not fast:
        return _python_plan(io.BytesIO(content), month, "JPY", the_mapping or mapping(), "", "")
    return plan_import(io.BytesIO(content), month=month, currency="JPY", mapping=the_mapping or mapping())


class OneWay(io.BytesIO):
    """A stream that cannot be read again: the pure-Python reader alone reads it."""

    def seekable(self) -> bool:
        return False
