"""The export use cases with fake adapters: the not-closed policy, polling, idempotent storing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import pytest
from soracharge.adapters.soracom import DownloadedFile
from soracharge.adapters.storage import StoredObject
from soracharge.errors import (
    BillNotClosedError,
    BillNotFoundError,
    InvalidInputError,
    MonthOutOfRangeError,
    SoracomApiError,
)
from soracharge.logic.export import export_key, poll_export, read_closed_bill, start_export, store_export
from soracharge.models.coverage import Coverage
from soracharge.models.export_flow import ExportProgress, ExportRequest, StoreExportRequest
from soracharge.models.soracom import ExportedFile, ExportStarted, MonthlyBill

TODAY = date(2026, 11, 22)
READY = ExportedFile(
    status="exported", url="https://soracom-billing.s3.amazonaws.com/OP1/fe_1/Detailed_Billing.csv?X-Amz-Signature=abc"
)
CSV = "\ufeffimsi,date,billItemName,unitPrice,quantity,amount\r\n440100000000001,202610,Basic,300,1,300\r\n".encode()


@dataclass
class FakeSoracom:
    bills: dict[str, MonthlyBill] = field(default_factory=dict)
    statuses: list[ExportedFile] = field(default_factory=list)
    downloads: int = 0

    def get_bill(self, month: str) -> MonthlyBill:
        if month not in self.bills:
            raise BillNotFoundError(f"no bill for {month}")
        return self.bills[month]

    def start_export(self, month: str) -> ExportStarted:
        return ExportStarted(exportedFileId=f"fe_{month}")

    def get_exported_file(self, exported_file_id: str) -> ExportedFile:
        return self.statuses.pop(0) if self.statuses else READY

    def download(self, url: str, sink: BinaryIO) -> DownloadedFile:
        assert url == READY.url
        self.downloads += 1
        sink.write(CSV)
        return DownloadedFile(size=len(CSV), sha256=hashlib.sha256(CSV).hexdigest())


@dataclass
class FakeStore:
    bucket: str = "data-bucket"
    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    versions: int = 0

    def head(self, key: str) -> StoredObject | None:
        if key not in self.objects:
            return None
        body, metadata = self.objects[key]
        return StoredObject(self.bucket, key, f"v{self.versions}", len(body), metadata)

    def first(self, prefix: str) -> StoredObject | None:
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        return self.head(keys[0]) if keys else None

    def children(self, prefix: str) -> list[StoredObject]:
        keys = sorted(k for k in self.objects if k.startswith(prefix) and "/" not in k.removeprefix(prefix))
        return [head for key in keys if (head := self.head(key)) is not None]

    def upload_file(self, path: Path, key: str, *, metadata: dict[str, str], content_type: str) -> StoredObject:
        self.versions += 1
        self.objects[key] = (path.read_bytes(), metadata)
        stored = self.head(key)
        assert stored is not None
        return stored


def bill(month: str, state: str = "closed") -> MonthlyBill:
    return MonthlyBill(amount=Decimal("300.00"), currency="JPY", state=state, yearMonth=month)


def test_a_closed_bill_is_summarised_for_the_export():
    summary = read_closed_bill(ExportRequest(month="202609"), FakeSoracom({"202609": bill("202609")}), TODAY)
    assert (summary.month, summary.amount, summary.currency) == ("202609", Decimal("300.00"), "JPY")
    assert summary.applied_coupon_amount == 0


def test_the_bills_applied_coupon_is_carried_to_the_export():
    couponed = bill("202609").model_copy(update={"appliedCouponAmount": Decimal("50.5")})
    summary = read_closed_bill(ExportRequest(month="202609"), FakeSoracom({"202609": couponed}), TODAY)
    assert summary.to_event()["appliedCouponAmount"] == "50.5"


def test_a_temporary_bill_is_not_closed_yet():
    soracom = FakeSoracom({"202610": bill("202610", state="temporary")})
    with pytest.raises(BillNotClosedError, match=r"202610 is still 'temporary'.*1-3 business days"):
        read_closed_bill(ExportRequest(month="202610"), soracom, TODAY)


def test_no_bill_yet_for_the_month_just_ended_is_treated_as_not_closed():
    with pytest.raises(BillNotClosedError, match=r"no bill for 202610 yet"):
        read_closed_bill(ExportRequest(month="202610"), FakeSoracom(), TODAY)


def test_no_bill_for_an_older_month_is_final():
    with pytest.raises(BillNotFoundError, match=r"no bill for 202608"):
        read_closed_bill(ExportRequest(month="202608"), FakeSoracom(), TODAY)


def test_a_month_outside_the_window_never_reaches_soracom():
    with pytest.raises(MonthOutOfRangeError):
        read_closed_bill(ExportRequest(month="202208"), FakeSoracom(), TODAY)


def test_a_bill_for_another_month_is_refused():
    with pytest.raises(SoracomApiError, match=r"answered the bill of 202607"):
        read_closed_bill(ExportRequest(month="202609"), FakeSoracom({"202609": bill("202607")}), TODAY)


def test_each_poll_counts_and_never_carries_the_presigned_url():
    soracom = FakeSoracom(statuses=[ExportedFile(status="processing"), READY])
    progress = start_export("202610", soracom)
    assert progress == ExportProgress(
        exported_file_id="fe_202610", status="processing", polls=0, month="202610", coverage="jp"
    )
    progress = poll_export(progress, soracom)
    assert (progress.status, progress.polls, progress.month) == ("processing", 1, "202610")
    progress = poll_export(progress, soracom)
    assert (progress.status, progress.polls, progress.month) == ("exported", 2, "202610")
    assert "X-Amz" not in str(progress.to_event())


REQUEST = StoreExportRequest(
    month="202610",
    amount=Decimal("300.00"),
    applied_coupon_amount=Decimal("25"),
    currency="JPY",
    exported_file_id="fe_1",
)


def test_the_csv_is_stored_byte_for_byte_with_its_metadata():
    store = FakeStore()
    stored = store_export(REQUEST, FakeSoracom(), store)
    body, metadata = store.objects[export_key("202610", "fe_1", "jp", nested=False)]
    assert body == CSV
    assert stored.uri == "s3://data-bucket/exports/202610/fe_1.csv"
    assert metadata["month"] == "202610"
    assert metadata["coverage"] == "jp"
    assert metadata["currency"] == "JPY"
    assert metadata["bill-amount"] == "300.00"
    assert metadata["coupon-amount"] == "25"
    assert metadata["exported-file-id"] == "fe_1"
    assert metadata["sha256"] == stored.sha256 == hashlib.sha256(CSV).hexdigest()
    # The download URL is kept without its pre-signed query (temporary credentials).
    assert (
        metadata["download-url"]
        == stored.download_url
        == "https://soracom-billing.s3.amazonaws.com/OP1/fe_1/Detailed_Billing.csv"
    )
    assert not stored.already_stored


def test_a_month_already_stored_is_not_stored_again_even_from_another_export():
    store, soracom = FakeStore(), FakeSoracom()
    first = store_export(REQUEST, soracom, store)
    retry = store_export(REQUEST, soracom, store)
    rerun = store_export(REQUEST.model_copy(update={"exported_file_id": "fe_2"}), soracom, store)
    assert retry.already_stored
    assert rerun.already_stored
    assert rerun.key == first.key == "exports/202610/fe_1.csv"
    assert store.versions == 1
    assert soracom.downloads == 1


def test_an_export_that_is_not_ready_is_not_downloaded():
    soracom = FakeSoracom(statuses=[ExportedFile(status="exported")])
    with pytest.raises(SoracomApiError, match=r"fe_1 is 'exported' and Soracom gave no url"):
        store_export(REQUEST, soracom, FakeStore())
    assert soracom.downloads == 0


# -- two coverages in one stack -------------------------------------------------------------------

BOTH: tuple[Coverage, ...] = ("jp", "g")
GLOBAL_REQUEST = REQUEST.model_copy(update={"currency": "USD", "amount": Decimal("3.00"), "coverage": "g"})


def test_a_stack_of_both_coverages_keeps_each_bill_in_its_coverage_folder():
    store, soracom = FakeStore(), FakeSoracom()
    japan = store_export(REQUEST.model_copy(update={"coverage": "jp"}), soracom, store, coverages=BOTH)
    global_ = store_export(
        GLOBAL_REQUEST.model_copy(update={"exported_file_id": "fe_2"}), soracom, store, coverages=BOTH
    )
    assert (japan.key, global_.key) == ("exports/202610/jp/fe_1.csv", "exports/202610/g/fe_2.csv")
    assert not japan.already_stored
    assert not global_.already_stored
    assert store.objects[global_.key][1]["coverage"] == "g"
    assert store.objects[global_.key][1]["currency"] == "USD"
    # A retry of each finds its own, not the other coverage's.
    assert store_export(GLOBAL_REQUEST, soracom, store, coverages=BOTH).key == global_.key
    assert soracom.downloads == 2


def test_an_export_stored_before_coverages_counts_for_the_coverage_of_its_currency():
    """A single-coverage stack updated to both: its old exports/<month>/<id>.csv is Japan's (JPY)."""
    store, soracom = FakeStore(), FakeSoracom()
    legacy = {"month": "202610", "currency": "JPY", "sha256": "a" * 64}
    store.objects["exports/202610/fe_old.csv"] = (CSV, legacy)
    rerun = store_export(REQUEST.model_copy(update={"coverage": "jp"}), soracom, store, coverages=BOTH)
    assert rerun.already_stored
    assert rerun.key == "exports/202610/fe_old.csv"
    global_ = store_export(GLOBAL_REQUEST, soracom, store, coverages=BOTH)
    assert not global_.already_stored
    assert global_.key == "exports/202610/g/fe_1.csv"
    assert soracom.downloads == 1


def test_a_single_coverage_stack_reads_both_layouts():
    """Updated back from both to one coverage: the coverage folder's export is still found."""
    store, soracom = FakeStore(), FakeSoracom()
    store_export(GLOBAL_REQUEST, soracom, store, coverages=BOTH)
    again = store_export(GLOBAL_REQUEST.model_copy(update={"coverage": None}), soracom, store, coverages=("g",))
    assert again.already_stored
    assert again.key == "exports/202610/g/fe_1.csv"


def test_a_request_without_a_coverage_on_a_stack_of_both_is_refused_by_name():
    with pytest.raises(InvalidInputError, match=r'exports jp and g: give "coverage": "jp" \(Japan, JPY\) or "g"'):
        store_export(REQUEST, FakeSoracom(), FakeStore(), coverages=BOTH)


def test_the_bill_and_the_export_carry_their_coverage():
    usd = MonthlyBill(amount=Decimal("3.10"), currency="USD", state="closed", yearMonth="202609")
    summary = read_closed_bill(ExportRequest(month="202609", coverage="g"), FakeSoracom({"202609": usd}), TODAY, "g")
    assert (summary.coverage, summary.currency) == ("g", "USD")
    assert start_export("202609", FakeSoracom(), coverage="g").coverage == "g"


def test_a_bill_in_another_coverage_s_currency_names_the_endpoint_to_check():
    usd = MonthlyBill(amount=Decimal("3.10"), currency="USD", state="closed", yearMonth="202609")
    with pytest.raises(SoracomApiError, match=r"Japan coverage is in USD, but Japan coverage bills in JPY: .*"):
        read_closed_bill(ExportRequest(month="202609"), FakeSoracom({"202609": usd}), TODAY, coverage="jp")
