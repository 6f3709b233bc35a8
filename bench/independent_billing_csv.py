# ruff: noqa: UP031, S311 - kept as its author wrote it (a generator apart from ours)
"""A second generator of real-shaped detailed billing CSVs, written apart from the simulator (for the benchmark).


UTF-8 with BOM, header row, CRLF, RFC 4180 quoting via csv.writer.
Per SIM and day: basic-fee row + data-usage row; per SIM one monthly SMS row.
A few operator rows (empty imsi, yyyyMM), one discount row with comma +
doubled quotes and a negative amount, one SIM whose tag name holds a line break.

usage: python gen.py N_SIMS OUT.csv [--month 202510] [--seed 1] [--shuffle-extra]
  --shuffle-extra: put columns in another order and add extra tag columns
  --bad KIND: inject one bad value (amount10dp | amountjunk | date) at SIM 7/day 3

Its layout differs from the simulator's on purpose: other item names and customers (commas in them),
a quoted line break in one SIM's tag, month 202510 by default. bench/independent_mapping.yaml maps it.
"""

import argparse
import calendar
import csv
import random
from decimal import Decimal

COLUMNS = ["imsi", "vpgId", "date", "billItemName", "unitPrice", "quantity", "amount", "name", "customer", "groupName"]
CUSTOMERS = ["Acme, Inc.", "株式会社ソラコム商事", "Globex, Ltd.", "Initech", ""]
GROUPS = ["Sensors, Tokyo", "Gateways, Osaka", "Trackers", ""]
BASIC = "基本料金 plan-D (ap-northeast-1)"
DATA = "データ通信料 plan-D (ap-northeast-1), アップロード/ダウンロード"
SMS = "SMS 送信料"
DATA_PRICE = Decimal("0.0000002")
SMS_PRICE = Decimal("3.3")


def fmt(d: Decimal) -> str:
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n_sims", type=int)
    ap.add_argument("out")
    ap.add_argument("--month", default="202510")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shuffle-extra", action="store_true")
    ap.add_argument("--bad", choices=["amount10dp", "amountjunk", "date", "none"], default="none")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    y, m = int(a.month[:4]), int(a.month[4:])
    ndays = calendar.monthrange(y, m)[1]
    cols = list(COLUMNS)
    extra = []
    if a.shuffle_extra:
        extra = ["tag:location", "tag:serial"]
        cols = cols + extra
        rnd.shuffle(cols)
    nrows = 0
    with open(a.out, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")  # QUOTE_MINIMAL, doublequote=True
        w.writerow(cols)

        def row(**kw):
            nonlocal nrows
            for e in extra:
                kw[e] = "棚 %d, 列 %d" % (rnd.randrange(9), rnd.randrange(9))
            w.writerow([kw.get(c, "") for c in cols])
            nrows += 1

        for i in range(a.n_sims):
            imsi = "44010%010d" % (3_000_000_000 + i * 7919 % 10_000_000_000)
            vpg = "" if i % 3 else "vpg-%04d" % (i % 50)
            name = "センサー %d" % i
            if i == 5:
                name = 'センサー 5\n(2行目 "改行" あり)'  # line break inside quotes
            cust = CUSTOMERS[i % 5]
            grp = GROUPS[i % 4]
            common = {"imsi": imsi, "vpgId": vpg, "name": name, "customer": cust, "groupName": grp}
            for d in range(1, ndays + 1):
                date = "%s%02d" % (a.month, d)
                row(date=date, billItemName=BASIC, unitPrice="10", quantity="1", amount="10", **common)
                q = rnd.randint(0, 60_000_000)
                amt = fmt(DATA_PRICE * q)
                if a.bad != "none" and i == 7 and d == 3:
                    if a.bad == "amount10dp":
                        amt = "0.0000000001"
                    elif a.bad == "amountjunk":
                        amt = "12,5"
                    elif a.bad == "date":
                        date = f"{a.month}32"
                row(date=date, billItemName=DATA, unitPrice="0.0000002", quantity=str(q), amount=amt, **common)
            qs = rnd.randint(0, 40)
            row(date=a.month, billItemName=SMS, unitPrice="3.3", quantity=str(qs), amount=fmt(SMS_PRICE * qs), **common)
        # operator-level charges: empty imsi, monthly date
        for item, amt in [
            ("Soracom Lagoon 利用料 (Pro)", "3300"),
            ("Soracom Napter 監査ログ", "110.5"),
            ("サポート料金 (Business)", "25000"),
        ]:
            row(date=a.month, billItemName=item, unitPrice=amt, quantity="1", amount=amt)
        row(
            date=a.month,
            billItemName='ボリュームディスカウント, "Tier 2" 適用',
            unitPrice="-1234.56",
            quantity="1",
            amount="-1234.56",
            customer="Acme, Inc.",
        )
    print(f"{a.out}: {nrows} data rows, {a.n_sims} SIMs, columns={cols}")


if __name__ == "__main__":
    main()
