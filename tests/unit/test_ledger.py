"""The DynamoDB import ledger on moto: claims and their fence, the closing transaction, the migration."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import boto3
import pytest
from moto import mock_aws
from soracharge.adapters.ledger import LEASE_SECONDS, DynamoDbLedger, Pins
from soracharge.errors import ImportSupersededError, StorageError

TABLE = "ledger"
OBJECT = "bucket/uploads/202610/a.csv#v1"
OTHER = "bucket/uploads/202610/b.csv#v1"
MONTH = "202610"
SHA = "a" * 64
PINS = Pins("jp", "JPY", "ledger/mappings/x.json")


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


def sent_and_accepted(ledger: DynamoDbLedger, object_id: str, epoch: int, session: int, packets: int) -> None:
    ledger.open_session(object_id, epoch, session, packets=packets, fingerprint="f")
    for index in range(packets):
        ledger.mark_in_flight(object_id, epoch, session, index)
        ledger.record_packet(object_id, epoch, session, index)


def test_each_claim_is_a_new_epoch_granted_only_when_no_live_attempt_holds_the_object(ledger, clock):
    first = ledger.claim(OBJECT, month=MONTH)
    assert (first.granted, first.entry.status, first.entry.epoch) == (True, "IMPORTING", 1)
    clock.now += LEASE_SECONDS - 1
    assert not ledger.claim(OBJECT, month=MONTH).granted  # the first attempt's lease runs
    clock.now += 2
    second = ledger.claim(OBJECT, month=MONTH)
    assert (second.granted, second.entry.epoch, second.entry.attempts) == (True, 2, 2)


def test_a_superseded_attempt_can_write_nothing_more_however_late(ledger, clock):
    # Given attempt 1 opened a session and marked a packet, then was slow past its lease
    one = ledger.claim(OBJECT, month=MONTH).entry.epoch
    ledger.open_session(OBJECT, one, 7, packets=3, fingerprint="f")
    ledger.mark_in_flight(OBJECT, one, 7, 0)
    clock.now += LEASE_SECONDS + 1
    two = ledger.claim(OBJECT, month=MONTH).entry
    # Then attempt 2 sees exactly what attempt 1 recorded before it
    assert (two.epoch, two.session_id, two.in_flight, two.unconfirmed) == (2, 7, frozenset({0}), frozenset({0}))
    # And every write attempt 1 still tries is refused, naming why
    late_writes: list[Callable[[], object]] = [
        lambda: ledger.record_packet(OBJECT, one, 7, 0),
        lambda: ledger.mark_in_flight(OBJECT, one, 7, 1),
        lambda: ledger.unmark_in_flight(OBJECT, one, 7, 0),
        lambda: ledger.give_up(OBJECT, one, 7),
        lambda: ledger.pin(OBJECT, one, PINS),
        lambda: ledger.end(OBJECT, one, "HELD", report_key="k"),
    ]
    for write in late_writes:
        with pytest.raises(ImportSupersededError, match=r"a later attempt took the import over"):
            write()
    assert not ledger.mark_closing(
        OBJECT, one, 7, bill=f"bill#{MONTH}#jp", bytes_key=f"bytes#{MONTH}#{SHA}", sha256=SHA
    )
    assert not ledger.renew(OBJECT, one)
    before = ledger.get(OBJECT)
    ledger.release(OBJECT, one)  # a superseded attempt's release changes nothing
    current = ledger.get(OBJECT)
    assert current == before
    assert current is not None
    assert (current.accepted, current.closing_session, current.lease_until > clock.now) == (frozenset(), None, True)
    assert ledger.holder(f"bill#{MONTH}#jp") is None


def test_writes_and_renewals_keep_a_live_attempt_s_claim(ledger, clock):
    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    for _ in range(3):
        clock.now += LEASE_SECONDS - 10
        assert ledger.renew(OBJECT, epoch)
    assert not ledger.claim(OBJECT, month=MONTH).granted
    ledger.release(OBJECT, epoch)  # a handled failure: a retry may claim at once
    assert ledger.claim(OBJECT, month=MONTH).granted


def test_the_pins_of_the_first_attempt_stay(ledger, clock):
    one = ledger.claim(OBJECT, month=MONTH).entry.epoch
    assert ledger.pin(OBJECT, one, PINS).pins == PINS
    clock.now += LEASE_SECONDS + 1
    two = ledger.claim(OBJECT, month=MONTH).entry
    assert two.pins == PINS
    assert ledger.pin(OBJECT, two.epoch, Pins("g", "USD", "ledger/mappings/y.json")).pins == PINS


def test_a_given_up_session_is_remembered_and_the_next_one_starts_clean(ledger):
    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    ledger.open_session(OBJECT, epoch, 7, packets=2, fingerprint="f")
    ledger.mark_in_flight(OBJECT, epoch, 7, 0)
    ledger.give_up(OBJECT, epoch, 7)
    with pytest.raises(StorageError, match="does not hold"):  # not its session any more
        ledger.record_packet(OBJECT, epoch, 7, 0)
    ledger.open_session(OBJECT, epoch, 8, packets=2, fingerprint="f")
    entry = ledger.get(OBJECT)
    assert entry is not None
    assert (entry.session_id, entry.in_flight, entry.accepted, entry.abandoned_sessions) == (8, set(), set(), (7,))
    with pytest.raises(StorageError, match="does not hold"):  # one session at a time
        ledger.open_session(OBJECT, epoch, 9, packets=2, fingerprint="f")


def test_a_session_is_marked_closing_only_with_every_packet_accepted(ledger):
    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    ledger.open_session(OBJECT, epoch, 7, packets=2, fingerprint="f")
    ledger.mark_in_flight(OBJECT, epoch, 7, 0)
    ledger.record_packet(OBJECT, epoch, 7, 0)
    closing = {"bill": f"bill#{MONTH}#jp", "bytes_key": f"bytes#{MONTH}#{SHA}", "sha256": SHA}
    assert not ledger.mark_closing(OBJECT, epoch, 7, **closing)
    ledger.mark_in_flight(OBJECT, epoch, 7, 1)
    ledger.record_packet(OBJECT, epoch, 7, 1)
    assert ledger.mark_closing(OBJECT, epoch, 7, **closing)
    entry = ledger.get(OBJECT)
    assert entry is not None
    assert entry.closing_session == 7
    assert ledger.holder(f"bill#{MONTH}#jp").object_id == OBJECT
    assert ledger.holder(f"bytes#{MONTH}#{SHA}").object_id == OBJECT
    # And a session marked closing is never given up, nor recorded as an end that imported nothing
    with pytest.raises(StorageError):
        ledger.give_up(OBJECT, epoch, 7)
    with pytest.raises(StorageError):
        ledger.end(OBJECT, epoch, "HELD", report_key="k")
    ledger.end(OBJECT, epoch, "CLOSED", report_key="k")
    assert ledger.get(OBJECT).status == "CLOSED"


def test_the_month_s_bill_and_the_same_bytes_are_closed_by_one_object_only(ledger):
    # Given two objects that both sent every packet, racing for the month (their bytes differ)
    one = ledger.claim(OBJECT, month=MONTH).entry.epoch
    two = ledger.claim(OTHER, month=MONTH).entry.epoch
    sent_and_accepted(ledger, OBJECT, one, 1, packets=2)
    sent_and_accepted(ledger, OTHER, two, 2, packets=2)
    bill = f"bill#{MONTH}#jp"
    # Then the first to close takes the bill, and the other is refused, so never closes its session
    assert ledger.mark_closing(OTHER, two, 2, bill=bill, bytes_key=f"bytes#{MONTH}#{'b' * 64}", sha256="b" * 64)
    assert not ledger.mark_closing(OBJECT, one, 1, bill=bill, bytes_key=f"bytes#{MONTH}#{SHA}", sha256=SHA)
    assert ledger.get(OBJECT).closing_session is None
    assert ledger.holder(f"bytes#{MONTH}#{SHA}") is None  # all or none
    # And the same bytes under another coverage's bill are refused too
    third = "bucket/uploads/202610/g/c.csv#v1"
    epoch = ledger.claim(third, month=MONTH).entry.epoch
    sent_and_accepted(ledger, third, epoch, 3, packets=1)
    assert not ledger.mark_closing(
        third, epoch, 3, bill=f"bill#{MONTH}#g", bytes_key=f"bytes#{MONTH}#{'b' * 64}", sha256="b" * 64
    )
    assert ledger.holder(f"bill#{MONTH}#g") is None


@pytest.mark.parametrize(("status", "coverage", "taken"), [
    ("FAILED_PROCESSED", "jp", True),  # CloudBlue rated none of it
    ("PROCESSED", "g", True),  # imported as the other coverage's bill
    ("PROCESSED", "jp", False),  # rated: the same bytes again would double it
])  # fmt: skip
def test_an_additional_file_takes_the_bytes_only_from_a_failed_rating_or_another_coverage(
    ledger, status, coverage, taken
):
    # Given the bytes closed by a file whose import settled ``coverage`` and ended ``status``
    owner = ledger.claim(OTHER, month=MONTH).entry.epoch
    ledger.pin(OTHER, owner, Pins(coverage, "JPY", "m"))
    sent_and_accepted(ledger, OTHER, owner, 1, packets=1)
    assert ledger.mark_closing(
        OTHER, owner, 1, bill=f"bill#{MONTH}#{coverage}", bytes_key=f"bytes#{MONTH}#{SHA}", sha256=SHA
    )
    ledger.end(OTHER, owner, "CLOSED", report_key="k")
    assert ledger.record_rating(OTHER, status, report_key="rated", read="k")
    # When an additional Japan file of the same bytes closes, naming the holder it may take them from
    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    sent_and_accepted(ledger, OBJECT, epoch, 2, packets=1)
    closed = ledger.mark_closing(
        OBJECT, epoch, 2, bill=None, bytes_key=f"bytes#{MONTH}#{SHA}", sha256=SHA, take_from=(OTHER, "jp")
    )
    # Then it takes them exactly when the holder's session rated nothing, or was the other coverage's
    assert closed is taken
    assert ledger.holder(f"bytes#{MONTH}#{SHA}").object_id == (OBJECT if taken else OTHER)
    assert ledger.holder(f"bill#{MONTH}#{coverage}").object_id == OTHER


def test_the_rating_is_recorded_only_for_an_object_that_closed_a_session_and_only_moves_forward(ledger):
    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    assert not ledger.record_rating(OBJECT, "PROCESSED", report_key="r0", read=None)
    sent_and_accepted(ledger, OBJECT, epoch, 1, packets=1)
    assert ledger.mark_closing(OBJECT, epoch, 1, bill=None, bytes_key=f"bytes#{MONTH}#{SHA}", sha256=SHA)
    ledger.end(OBJECT, epoch, "CLOSED", report_key="k")
    # A finish that read an older report than the ledger names now records nothing (compare-and-set)
    assert not ledger.record_rating(OBJECT, "NOT_RATED", report_key="r1", read="older")
    assert ledger.record_rating(OBJECT, "NOT_RATED", report_key="r1", read="k")
    assert ledger.record_rating(OBJECT, "FAILED_PROCESSED", report_key="r2", read="r1")
    # A late finish (it read the report before the final rating) never writes over the final rating
    assert not ledger.record_rating(OBJECT, "NOT_RATED", report_key="r3", read="r1")
    assert not ledger.record_rating(OBJECT, "PROCESSED", report_key="r4", read="r2")
    entry = ledger.get(OBJECT)
    assert (entry.status, entry.report_key) == ("FAILED_PROCESSED", "r2")


def test_a_session_cloudblue_failed_to_rate_leaves_the_month_s_record(ledger):
    from soracharge.adapters.ledger import MonthMark

    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    sent_and_accepted(ledger, OBJECT, epoch, 1, packets=1)
    month = MonthMark(f"month#{MONTH}#jp", 0, "ledger/totals/a.json")
    assert ledger.mark_closing(OBJECT, epoch, 1, bill=None, bytes_key=f"bytes#{MONTH}#{SHA}", sha256=SHA, month=month)
    ledger.end(OBJECT, epoch, "CLOSED", report_key="k")
    assert ledger.month_state(f"month#{MONTH}#jp").files == ("ledger/totals/a.json",)
    assert ledger.record_rating(OBJECT, "FAILED_PROCESSED", report_key="r", read="k", month_key=f"month#{MONTH}#jp")
    state = ledger.month_state(f"month#{MONTH}#jp")
    assert (state.version, state.files) == (2, ())


def test_an_ended_object_is_never_claimed_again(ledger, clock):
    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    ledger.end(OBJECT, epoch, "REJECTED", report_key="k", reason="problems")
    clock.now += 10 * LEASE_SECONDS
    again = ledger.claim(OBJECT, month=MONTH)
    assert (again.granted, again.entry.status, again.entry.reason) == (False, "REJECTED", "problems")


def test_a_held_end_gives_the_session_it_recorded_up(ledger):
    epoch = ledger.claim(OBJECT, month=MONTH).entry.epoch
    ledger.open_session(OBJECT, epoch, 7, packets=2, fingerprint="f")
    ledger.end(OBJECT, epoch, "HELD", report_key="k", duplicate_of=OTHER, reason="second-file")
    entry = ledger.get(OBJECT)
    assert entry is not None
    assert (entry.status, entry.session_id, entry.abandoned_sessions, entry.duplicate_of) == ("HELD", None, (7,), OTHER)


# -- the records of the protocol before fences, migrated once ---------------------------------------


def put(ledger: DynamoDbLedger, pk: str, **attributes: str) -> None:
    item = {"pk": {"S": pk}, **{name: {"S": value} for name, value in attributes.items()}}
    ledger._db.put_item(TableName=TABLE, Item=item)


def old_object(ledger: DynamoDbLedger, object_id: str, status: str, **attributes: str) -> None:
    put(ledger, f"object#{object_id}", status=status, **attributes)


def test_old_month_locks_become_bills_only_where_their_owner_closed_a_session_once(ledger):
    # Given locks the protocol before fences took before sending: closed, stuck, rejected, from before coverages
    closed, stuck, legacy = "b/exports/202607/fe.csv#v1", "b/uploads/202608/x.csv#v1", "b/exports/202609/fe.csv#v1"
    additional = "b/uploads/202607/extra.csv#v2"
    old_object(ledger, closed, "PROCESSED")
    old_object(ledger, stuck, "IMPORTING")
    old_object(ledger, legacy, "CLOSED")
    old_object(ledger, additional, "PROCESSED")
    put(ledger, "lock#202607#jp", owner=closed, sha256=SHA)
    put(ledger, "lock#202608#jp", owner=stuck, sha256=SHA)
    put(ledger, "lock#202609", owner=legacy, sha256=SHA)
    put(ledger, f"lock#202607#{'c' * 64}", owner=additional, sha256="c" * 64)
    asked: list[str] = []

    def coverages_of(owner: str) -> list[str]:
        asked.append(owner)
        return ["jp", "g"]  # its coverage cannot be told: it holds both

    # When the table is migrated (the first import after the update does it)
    assert ledger.migrate(coverages_of) == 4

    # Then each closed owner holds its bill (both coverages for the one whose coverage cannot be told),
    # an additional file holds its bytes, the stuck owner holds nothing, and no old lock is left
    assert ledger.holder("bill#202607#jp").object_id == closed
    assert ledger.holder("bill#202608#jp") is None
    assert {ledger.holder(f"bill#202609#{c}").object_id for c in ("jp", "g")} == {legacy}
    assert ledger.holder(f"bytes#202607#{'c' * 64}").object_id == additional
    assert asked == [legacy]
    keys = {item["pk"]["S"] for item in ledger._db.scan(TableName=TABLE)["Items"]}
    assert not {key for key in keys if key.startswith("lock#")}
    # And once migrated, it is not done again
    put(ledger, "lock#202610#jp", owner=closed, sha256=SHA)
    assert DynamoDbLedger(ledger._db, TABLE).migrate(coverages_of) == 0
    assert ledger.holder("bill#202610#jp") is None
