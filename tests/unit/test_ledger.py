"""The DynamoDB import ledger on moto: claims, leases, resuming, content duplicates."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from soracharge.adapters.ledger import DynamoDbLedger
from soracharge.errors import StorageError

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
    clock.now += 179  # the lease is at most LEASE_SECONDS, renewed by every write
    second = ledger.claim(OBJECT, month="202610", lease_seconds=900)
    assert not second.granted
    assert second.entry.status == "IMPORTING"


def test_every_write_renews_the_lease_and_a_lapsed_one_lets_a_retry_resume(ledger, clock):
    ledger.claim(OBJECT, month="202610", lease_seconds=900)
    ledger.record_session(OBJECT, 42, packets=5, fingerprint="f", report_key="reports/202610/v1.json", lock_key="l")
    for index in (0, 1, 2):
        clock.now += 100
        ledger.mark_in_flight(OBJECT, index)
        if index < 2:
            ledger.record_packet(OBJECT, index)
    clock.now += 179
    assert not ledger.claim(OBJECT, month="202610", lease_seconds=900).granted  # renewed 179 s ago
    clock.now += 2  # the invocation died: nobody renewed it
    resumed = ledger.claim(OBJECT, month="202610", lease_seconds=900)
    assert resumed.granted
    assert resumed.entry.session_id == 42
    assert resumed.entry.fingerprint == "f"
    assert resumed.entry.accepted == frozenset({0, 1})
    assert resumed.entry.unconfirmed == frozenset({2})  # sent, outcome unknown
    assert resumed.entry.attempts == 2


def test_a_given_up_session_is_remembered_and_the_next_one_starts_clean(ledger):
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    ledger.record_session(OBJECT, 42, packets=2, fingerprint="f", report_key="r", lock_key="l")
    ledger.mark_in_flight(OBJECT, 0)
    ledger.abandon_session(OBJECT, 42)
    ledger.record_session(OBJECT, 43, packets=2, fingerprint="f", report_key="r", lock_key="l")
    entry = ledger.get(OBJECT)
    assert entry.session_id == 43
    assert entry.abandoned_sessions == (42,)
    assert entry.accepted == entry.in_flight == frozenset()


def test_a_released_claim_can_be_taken_again_at_once(ledger):
    ledger.claim(OBJECT, month="202610", lease_seconds=900)
    ledger.release(OBJECT)
    assert ledger.claim(OBJECT, month="202610", lease_seconds=900).granted


def test_a_finished_object_is_never_claimed_again_nor_written_to(ledger, clock):
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    ledger.set_status(OBJECT, "CLOSED", report_key="reports/202610/v1.json")
    clock.now += 10_000
    again = ledger.claim(OBJECT, month="202610", lease_seconds=60)
    assert not again.granted
    assert again.entry.status == "CLOSED"
    assert again.entry.report_key == "reports/202610/v1.json"
    with pytest.raises(Exception, match=r"ConditionalCheckFailed"):
        ledger.record_packet(OBJECT, 0)  # a late attempt of a finished import cannot change it


def test_a_session_is_recorded_once(ledger):
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    ledger.record_session(OBJECT, 42, packets=5, fingerprint="f", report_key="r", lock_key="l")
    with pytest.raises(Exception, match=r"ConditionalCheckFailed"):
        ledger.record_session(OBJECT, 43, packets=5, fingerprint="f", report_key="r", lock_key="l")


def test_the_month_belongs_to_the_first_object_that_locks_it(ledger):
    assert ledger.lock("lock#202610", OBJECT, "aa").object_id == OBJECT
    owner = ledger.lock("lock#202610", "bucket/uploads/202610/copy.csv#v9", "bb")
    assert (owner.object_id, owner.sha256) == (OBJECT, "aa")
    assert ledger.lock("lock#202610", OBJECT, "aa").object_id == OBJECT  # the owner resuming


def test_a_stuck_owner_can_be_taken_over_but_not_a_live_or_finished_one(ledger, clock):
    newcomer = "bucket/uploads/202610/fixed.csv#v2"
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    ledger.lock("lock#202610", OBJECT, "aa")
    assert not ledger.take_over("lock#202610", OBJECT, newcomer, "bb")  # its lease runs
    clock.now += 61
    assert ledger.take_over("lock#202610", OBJECT, newcomer, "bb")
    assert ledger.lock("lock#202610", OBJECT, "aa").object_id == newcomer
    other = "bucket/exports/202609/fe.csv#v1"
    ledger.claim(other, month="202609", lease_seconds=60)
    ledger.lock("lock#202609", other, "cc")
    ledger.set_status(other, "CLOSED")
    clock.now += 1000
    assert not ledger.take_over("lock#202609", other, newcomer, "dd")


def test_the_coverage_and_currency_a_first_attempt_settled_are_kept_by_its_retries(ledger, clock):
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    assert (ledger.pin(OBJECT, coverage="jp", currency="JPY").coverage, ledger.get(OBJECT).currency) == ("jp", "JPY")
    clock.now += 61
    ledger.claim(OBJECT, month="202610", lease_seconds=60)
    again = ledger.pin(OBJECT, coverage="g", currency="USD")  # what a retry would settle on other settings
    assert (again.coverage, again.currency) == ("jp", "JPY")


def test_a_lock_is_handed_back_only_by_its_owner_and_never_once_a_session_was_marked_closing(ledger):
    other = "bucket/uploads/202610/fixed.csv#v2"
    ledger.claim(OBJECT, month="202610", lease_seconds=900)
    ledger.lock("lock#202610#jp", OBJECT, "aa")
    assert not ledger.release_lock("lock#202610#jp", other)
    assert ledger.release_lock("lock#202610#jp", OBJECT)
    assert ledger.owner("lock#202610#jp") is None

    ledger.lock("lock#202610#jp", OBJECT, "aa")
    ledger.record_session(OBJECT, 7, packets=1, fingerprint="f", report_key="r", lock_key="lock#202610#jp")
    assert ledger.mark_closing(OBJECT, 7, "lock#202610#jp")
    assert not ledger.release_lock("lock#202610#jp", OBJECT)
    assert not ledger.end_without_import(OBJECT, "REJECTED")  # a stale attempt's "nothing imported"
    assert ledger.get(OBJECT).status == "IMPORTING"


def test_the_same_bytes_are_marked_closing_by_one_object_only(ledger):
    japan, global_ = "bucket/uploads/202610/jp/a.csv#v1", "bucket/uploads/202610/g/a.csv#v2"
    for obj, coverage, session in ((japan, "jp", 1), (global_, "g", 2)):
        ledger.claim(obj, month="202610", lease_seconds=900)
        ledger.lock(f"lock#202610#{coverage}", obj, "aa")
        ledger.record_session(
            obj, session, packets=1, fingerprint="f", report_key="r", lock_key=f"lock#202610#{coverage}"
        )

    assert ledger.mark_closing(global_, 2, "lock#202610#g", bytes_key="bytes#202610#aa", sha256="aa")
    assert ledger.mark_closing(global_, 2, "lock#202610#g", bytes_key="bytes#202610#aa", sha256="aa")  # its retry
    assert not ledger.mark_closing(japan, 1, "lock#202610#jp", bytes_key="bytes#202610#aa", sha256="aa")
    assert ledger.owner("bytes#202610#aa").object_id == global_
    assert ledger.get(japan).closing_session is None  # all or nothing: the loser is not marked closing


@pytest.mark.parametrize("status", ["REJECTED", "SUPERSEDED", "HELD", "DUPLICATE", "CLOSED", "PROCESSED"])
def test_an_owner_that_is_not_stuck_nor_failed_keeps_its_lock(ledger, status):
    ledger.claim(OBJECT, month="202610", lease_seconds=900)
    ledger.lock("lock#202610#jp", OBJECT, "aa")
    ledger.set_status(OBJECT, status)
    assert not ledger.take_over("lock#202610#jp", OBJECT, "bucket/uploads/202610/fixed.csv#v2", "bb")


def test_a_session_marked_closing_is_never_given_up_and_stays_marked(ledger):
    ledger.claim(OBJECT, month="202610", lease_seconds=900)
    ledger.lock("lock#202610#jp", OBJECT, "aa")
    ledger.record_session(OBJECT, 7, packets=1, fingerprint="f", report_key="r", lock_key="lock#202610#jp")
    assert ledger.mark_closing(OBJECT, 7, "lock#202610#jp")
    with pytest.raises(StorageError, match=r"ConditionalCheckFailed"):
        ledger.abandon_session(OBJECT, 7)
    ledger.set_status(OBJECT, "CLOSED")
    assert ledger.get(OBJECT).closing_session == 7
    assert not ledger.take_over("lock#202610#jp", OBJECT, "bucket/uploads/202610/fixed.csv#v2", "bb")
