"""The S3 object store on moto: what the export flow reads of a month's folder."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from soracharge.adapters.storage import S3ObjectStore
from soracharge.logic.export import stored_export


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="data")
        yield S3ObjectStore(client, "data")


def test_a_month_folder_is_listed_page_after_page_and_without_its_coverage_folders(store):
    s3 = store._s3
    for index in range(23):
        s3.put_object(Bucket="data", Key=f"exports/202610/by-hand-{index:02}.csv", Body=b"x")
    s3.put_object(Bucket="data", Key="exports/202610/g/fe_1.csv", Body=b"x", Metadata={"sha256": "aa"})

    listed = store.children("exports/202610/", page_size=5)

    assert [obj.key for obj in listed] == [f"exports/202610/by-hand-{index:02}.csv" for index in range(23)]


def test_a_flat_export_listed_after_many_files_put_by_hand_is_still_found(store):
    s3 = store._s3
    for index in range(120):  # more than one page of S3's listing at the default page size
        s3.put_object(Bucket="data", Key=f"exports/202610/a-{index:03}.csv", Body=b"x")
    s3.put_object(Bucket="data", Key="exports/202610/fe_9.csv", Body=b"x", Metadata={"sha256": "bb", "currency": "JPY"})

    found = stored_export(store, "202610", "jp")

    assert found is not None
    assert found.key == "exports/202610/fe_9.csv"
    assert stored_export(store, "202610", "g") is None
