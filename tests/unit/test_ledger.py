"""The DynamoDB import ledger on moto: claims, leases, resuming, content duplicates."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from soracharge.adapters.ledger import DynamoDbLedger

TABLE = "ledger"
OBJECT = "bucket/uploads/202610/a.csv#v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoDbLedger]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield DynamoDbLedger(client, TABLE, clock=clock)


def test_the_first_claim_is_granted_and_a_second_one_is_not_while_the_lease_runs(ledger, clock):
    first = ledger.claim(OBJECT, month="202610", lease_seconds=900)
    assert first.granted
    assert first.entry.status == "IMPORTING"
    clock.now += 899
    second = ledger.claim(OBJECT, month="202610", lease_seconds=900)
    assert not second.granted
    assert second.entry.status == "IMPORTING"


def test_a_lapsed_lease_lets_a_retry_resume_with_what_was_recorded(ledger, clock):
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    ledger.record_session(OBJECT, 42, packets=5, report_key="reports/202610/v1.json")
    ledger.record_packet(OBJECT, 0)
    ledger.record_packet(OBJECT, 1)
    clock.now += 61  # the first invocation died
    resumed = ledger.claim(OBJECT, month="202610", lease_seconds=60)
    assert resumed.granted
    assert resumed.entry.session_id == 42
    assert resumed.entry.accepted == frozenset({0, 1})
    assert resumed.entry.attempts == 2


def test_a_released_claim_can_be_taken_again_at_once(ledger):
    ledger.claim(OBJECT, month="202610", lease_seconds=900)
    ledger.release(OBJECT)
    assert ledger.claim(OBJECT, month="202610", lease_seconds=900).granted


def test_a_finished_object_is_never_claimed_again(ledger, clock):
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    ledger.set_status(OBJECT, "CLOSED", report_key="reports/202610/v1.json")
    clock.now += 10_000
    again = ledger.claim(OBJECT, month="202610", lease_seconds=60)
    assert not again.granted
    assert again.entry.status == "CLOSED"
    assert again.entry.report_key == "reports/202610/v1.json"


def test_a_session_is_recorded_once(ledger):
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    ledger.record_session(OBJECT, 42, packets=5, report_key="r")
    ledger.record_session(OBJECT, 42, packets=5, report_key="r")  # the same session again is fine
    with pytest.raises(Exception, match=r"ConditionalCheckFailed"):
        ledger.record_session(OBJECT, 43, packets=5, report_key="r")


def test_the_same_bytes_for_the_same_month_belong_to_the_first_object(ledger):
    assert ledger.claim_content("202610", "ab" * 32, OBJECT) == OBJECT
    assert ledger.claim_content("202610", "ab" * 32, "bucket/uploads/202610/copy.csv#v9") == OBJECT
    assert ledger.claim_content("202610", "ab" * 32, OBJECT) == OBJECT  # the owner resuming
    assert ledger.claim_content("202609", "ab" * 32, "other") == "other"  # another month is another bill
