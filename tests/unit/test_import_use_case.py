"""The import use case as a billing team meets it: what each file ends as, what CloudBlue holds, what is alerted.

The unit world of the protocol tests (``tests/protocol/world.py``): the real ledger on moto with a clock the
test moves, the real CloudBlue client against the CloudBlue simulator (which keeps repeated extHash), an
S3 of object versions in memory. The systematic interleavings are ``tests/protocol``'s; these are the cases
a person reads to learn what the import does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
from soracharge.errors import ImportInProgressError, ImportTimeBudgetError
from soracharge.logic.imports import additional_id_suffix, dry_run_report, follow_execution_name
from soracharge.models.accounts import Account
from soracharge.models.imports import EndReason, FollowSessionRequest, ImportReport, ObjectRef
from soracharge.observability import metrics
from soracharge_local.simulators import CloudBlueSimulator

from tests.protocol.scheduler import Killed, Stop
from tests.protocol.world import (
    CSV,
    GLOBAL_CSV,
    GLOBAL_MAPPING,
    MAPPING,
    MONTH,
    OTHER_CSV,
    PACKET_SIZE,
    Logged,
    ProtocolWorld,
    follow_event,
    protocol_world,
    sha256,
)


@pytest.fixture
def both(cloudblue: CloudBlueSimulator) -> Iterator[ProtocolWorld]:
    """A stack exporting both coverages, with a mapping each."""
    with protocol_world(cloudblue, coverages=("jp", "g"), mapping={"jp": MAPPING, "g": GLOBAL_MAPPING}) as made:
        yield made


def run(world: ProtocolWorld, obj: ObjectRef) -> ImportReport:
    """A delivery that ends with a report (any error fails the test)."""
    attempt = world.deliver(obj)
    if attempt.error is not None:
        raise attempt.error
    assert isinstance(attempt.result, ImportReport)
    return attempt.result


def session_charges(world: ProtocolWorld, session: int | None) -> dict[str, object]:
    assert session is not None
    return {c["extChargeId"]: c["totalPrice"] for c in world.cloudblue.charges(session)}


# -- one file, whatever kills or slows its attempts ------------------------------------------------


def test_a_kill_after_cloudblue_took_a_packet_but_before_the_ledger_knew_gives_the_session_up(world):
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    first = world.deliver(obj, kill=Stop("ledger.record_packet", 2, "before"))  # CloudBlue holds packet 2
    assert first.killed
    world.lapse()

    report = run(world, obj)

    (abandoned,) = report.abandoned_sessions
    assert world.cloudblue.session(abandoned).closed_at is None  # never closed, so never rated
    assert len(world.cloudblue.charges(abandoned)) == 2 * PACKET_SIZE  # packets 1 and 2, held but never rated
    assert session_charges(world, report.import_session_id) == world.expected()
    assert "packets [2] were being sent when its attempt stopped" in report.warnings[0]
    world.follow()
    assert world.verdict().ok


def test_a_kill_after_every_packet_was_recorded_resumes_in_the_same_session(world):
    obj = world.upload(f"uploads/{MONTH}/b.csv")
    assert world.deliver(obj, kill=Stop("ledger.mark_closing", 1, "before")).killed
    world.lapse()

    report = run(world, obj)

    assert (report.status, report.abandoned_sessions) == ("CLOSED", [])
    assert (report.counts.packets_already_accepted, report.counts.packets_sent_this_run) == (3, 0)
    assert session_charges(world, report.import_session_id) == world.expected()


def test_a_kill_after_closing_is_finished_by_the_retry_which_sends_nothing_again(world):
    obj = world.upload(f"uploads/{MONTH}/c.csv")
    assert world.deliver(obj, kill=Stop("cloudblue.close_session", 1, "after")).killed
    world.lapse()
    requests = len(world.cloudblue.requests)

    report = run(world, obj)

    assert report.status == "CLOSED"
    sent = [r.operation for r in world.cloudblue.requests[requests:]]
    assert "importCharges" not in sent
    assert "openSession" not in sent
    assert len(world.workflows.started) == 1  # its rating is followed
    world.follow()
    assert world.verdict().ok


def test_a_retry_imports_the_file_with_the_mapping_its_first_attempt_pinned(world):
    # Given a first attempt that sent a packet and died, then someone changed the mapping's packet size
    obj = world.upload(f"uploads/{MONTH}/d.csv")
    assert world.deliver(obj, kill=Stop("ledger.record_packet", 2, "after")).killed
    planned = world.expected()
    world.mappings["jp"] = world.mapping.model_copy(update={"packet_size": 7})
    world.lapse()

    report = run(world, obj)

    # Then the retry resumes the same session with the same packets: the plan the first attempt pinned
    assert (report.abandoned_sessions, report.counts.packets, report.counts.packets_already_accepted) == ([], 3, 2)
    assert session_charges(world, report.import_session_id) == planned


def test_a_duplicate_event_while_the_import_runs_is_retried_later_not_reported_done(world):
    obj = world.upload(f"uploads/{MONTH}/e.csv")
    running = world.attempt(obj, "running", pause=Stop("cloudblue.import_charges", 1, "before"))
    duplicate = world.deliver(obj, "duplicate")
    assert isinstance(duplicate.error, ImportInProgressError)
    assert "being imported by another invocation" in str(duplicate.error)
    running.resume()
    assert running.error is None


def test_running_short_of_time_stops_cleanly_and_the_retry_resumes_at_once(world):
    obj = world.upload(f"uploads/{MONTH}/f.csv")
    budget = iter([900.0, 30.0])
    attempt = world.attempt(obj, "short", pause=Stop("ledger.open_session", 1, "after"))
    attempt_deps_time = budget  # the second packet finds too little time left
    world.remaining = lambda: next(attempt_deps_time, 30.0)
    attempt.resume()
    assert isinstance(attempt.error, ImportTimeBudgetError)
    world.remaining = lambda: 900.0

    report = run(world, obj)  # released at once: no need to wait for the lease

    assert report.abandoned_sessions == []
    assert report.counts.packets_already_accepted == 1
    assert session_charges(world, report.import_session_id) == world.expected()


def test_concurrent_deliveries_of_the_same_and_of_other_files_import_each_exactly_once(cloudblue):
    with protocol_world(cloudblue, concurrency=4) as world:
        # Given eight invocations for one object version and one each for two additional files, all at once
        same = world.upload(f"uploads/{MONTH}/burst.csv")
        others = [
            world.upload(f"uploads/{MONTH}/extra-{n}.csv", CSV.replace(b"\r\n", b"\n" * (n + 1)), additional=True)
            for n in range(2)
        ]
        start = threading.Barrier(10)
        attempts = []

        def deliver(obj: ObjectRef, n: int) -> None:
            start.wait()
            attempts.append(world.deliver(obj, f"d{n}"))

        threads = [threading.Thread(target=deliver, args=(obj, n)) for n, obj in enumerate([same] * 8 + others)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        # Then each file was imported once; the rest of the deliveries were turned away, to be retried
        assert len(attempts) == 10
        assert [a.error for a in attempts if not isinstance(a.error, ImportInProgressError | None)] == []
        world.settle()
        for obj in [same, *others]:
            report = world.store.report(obj)
            assert report is not None
            assert report.status == "PROCESSED"
            body = world.store.body(obj)
            suffix = additional_id_suffix(sha256(body), obj.version_id) if "extra" in obj.key else ""
            assert session_charges(world, report.import_session_id) == world.expected(body, id_suffix=suffix)


@pytest.mark.parametrize(
    ("metadata", "column", "value", "message"),
    [
        ({"currency": "jpy!"}, "currency", "JPY!", "currency must be JPY, USD or EUR"),
        ({"currency": "JPY", "bill-amount": "lots"}, "bill-amount", "lots", "the bill amount is not a number"),
        (
            {"currency": "JPY", "bill-amount": "100", "coupon-amount": "Infinity"},
            "coupon-amount",
            "Infinity",
            "the coupon amount is not a number",
        ),
        ({"currency": "JPY", "coupon-amount": "5"}, "coupon-amount", "5", "a coupon amount needs a bill-amount"),
        # an operator named only by the metadata is read, and one this stack does not import is refused
        (
            {"currency": "JPY", "operator": " OP0000000009 "},
            "operator",
            "OP0000000009",
            "the metadata operator says operator OP0000000009, which is not one of this stack's accounts",
        ),
    ],
)
def test_bad_metadata_is_a_rejected_report_before_anything_is_sent(world, metadata, column, value, message):
    sessions = len(world.cloudblue.sessions())
    report = run(world, world.upload(f"uploads/{MONTH}/meta.csv", **metadata))
    assert (report.status, report.reason) == ("REJECTED", EndReason.PROBLEMS)
    assert message in report.problems[0].message
    assert (report.problems[0].column, report.problems[0].value) == (column, value)  # the setting to correct
    assert len(world.cloudblue.sessions()) == sessions
    (alert,) = world.topic.published
    assert "file rejected" in alert.subject


def test_a_coupon_amount_with_its_bill_amount_is_not_a_problem(world):
    report = run(world, world.upload(f"uploads/{MONTH}/meta.csv", **{"bill-amount": "100", "coupon-amount": "5"}))
    assert report.problems == []
    assert report.status == "CLOSED"
    # and the reconciliation reads both: the coupon is a step from the CSV's sum to the bill
    assert report.reconciliation is not None
    assert (report.reconciliation.bill_amount, report.reconciliation.coupon_amount) == (Decimal(100), Decimal(5))
    assert "coupon" in [step.kind for step in report.reconciliation.steps]


# -- a month, whatever files come for it --------------------------------------------------------------


def test_a_second_file_is_held_the_same_bytes_are_a_duplicate_and_additional_is_imported_each_alerted(world):
    first = run(world, world.upload(f"exports/{MONTH}/fe_1.csv"))
    same = run(world, world.upload(f"uploads/{MONTH}/again.csv"))
    other = run(world, world.upload(f"uploads/{MONTH}/other.csv", OTHER_CSV))
    extra = run(world, world.upload(f"uploads/{MONTH}/extra.csv", OTHER_CSV, additional=True))

    assert first.status == "CLOSED"
    assert (same.status, same.reason, same.duplicate_of) == ("DUPLICATE", EndReason.SAME_BYTES, first.object.object_id)
    assert (other.status, other.reason, other.duplicate_of) == ("HELD", EndReason.SECOND_FILE, first.object.object_id)
    assert "would bill the month twice" in other.summary
    assert extra.status == "CLOSED"
    assert same.import_session_id is other.import_session_id is None  # told before a session was opened
    # and the ledger records which file each one was not imported because of, with why
    for report in (same, other):
        entry = world.ledger.get(report.object.object_id)
        assert entry is not None
        assert (entry.status, entry.duplicate_of, entry.reason) == (
            report.status,
            first.object.object_id,
            report.reason,
        )
    subjects = [alert.subject for alert in world.topic.published]
    assert subjects == [
        f"soracharge {MONTH} (Japan coverage): the same file again, nothing imported",
        f"soracharge {MONTH} (Japan coverage): second file for the month held, nothing imported",
    ]


def test_a_month_exported_twice_imports_the_first_export_and_holds_the_other_saying_so(world):
    # Given the month's bill exported, then exported again (other bytes: Soracom's export run twice)
    first = run(world, world.upload(f"exports/{MONTH}/fe_1.csv"))
    again = world.upload(f"exports/{MONTH}/fe_2.csv", OTHER_CSV)
    sessions = len(world.cloudblue.sessions())

    report = run(world, again)

    # Then the second export is held as the month exported twice, not as a second file a person uploaded
    assert (report.status, report.reason, report.duplicate_of) == (
        "HELD", EndReason.EXPORTED_TWICE, first.object.object_id,
    )  # fmt: skip
    assert report.summary == (
        f"the month was exported twice and the other export, {first.object.object_id}, was imported: nothing was "
        "imported from this one"
    )
    assert len(world.cloudblue.sessions()) == sessions
    (alert,) = world.topic.about(again)
    assert alert.subject == f"soracharge {MONTH} (Japan coverage): the month was exported twice, imported once"


def test_two_files_racing_for_the_month_both_send_and_only_the_first_to_close_is_rated(world):
    # Given the bill and another file of the month, both sending, the bill slow before it closes
    bill = world.upload(f"exports/{MONTH}/fe_1.csv")
    other = world.upload(f"uploads/{MONTH}/other.csv", OTHER_CSV)
    slow = world.attempt(bill, "bill", pause=Stop("ledger.mark_closing", 1, "before"))
    assert slow.is_paused
    # When the other file closes first
    assert run(world, other).status == "CLOSED"
    slow.resume()

    # Then the bill's session is left open (never rated) and the bill is held, alerted
    report = slow.result
    assert isinstance(report, ImportReport)
    assert (report.status, report.reason, report.duplicate_of) == ("HELD", EndReason.SECOND_FILE, other.object_id)
    (left_open,) = report.abandoned_sessions
    assert world.cloudblue.session(left_open).closed_at is None
    assert f"Its session {left_open} was given up and left open, never closed" in report.summary
    world.follow()
    assert world.verdict().ok


def test_a_file_cloudblue_failed_to_rate_is_imported_again_as_additional_with_new_ids_and_later_files_held(world):
    # Given the month's bill, whose session CloudBlue failed to rate
    first = world.upload(f"uploads/{MONTH}/bill.csv")
    world.cloudblue.faults.fail_processing = "Subscription 9531985d is not active"
    run(world, first)
    world.follow()
    world.cloudblue.faults.fail_processing = None
    assert world.store.report(first).status == "FAILED_PROCESSED"

    # When it is uploaded again without import=additional, it is held, saying how to import it
    plain = run(world, world.upload(f"uploads/{MONTH}/bill-again.csv"))
    assert (plain.status, plain.reason) == ("HELD", EndReason.FAILED_RATING)
    assert "import=additional" in plain.summary

    # And the runbook's additional upload of the same bytes is imported, with ids of its own
    again = run(world, world.upload(f"uploads/{MONTH}/bill-again.csv", additional=True))
    assert again.status == "CLOSED", again.summary
    suffix = additional_id_suffix(sha256(CSV), again.object.version_id)
    assert session_charges(world, again.import_session_id) == world.expected(id_suffix=suffix)
    # And a copy of it is a duplicate; a later plain file of other bytes is still held
    copy = run(world, world.upload(f"uploads/{MONTH}/bill-again-2.csv", additional=True))
    assert (copy.status, copy.duplicate_of) == ("DUPLICATE", again.object.object_id)
    later = run(world, world.upload(f"uploads/{MONTH}/later.csv", OTHER_CSV))
    assert (later.status, later.reason, later.duplicate_of) == ("HELD", EndReason.FAILED_RATING, first.object_id)


def test_a_kill_after_the_session_closed_then_a_copy_onto_itself_never_bills_the_month_twice(world):
    # Given the import died after CloudBlue closed its session, before the ledger said so
    old = world.upload(f"uploads/{MONTH}/closed.csv")
    assert world.deliver(old, kill=Stop("ledger.end", 1, "before")).killed
    world.lapse()

    # When a person re-delivers it by copying the object onto itself (a new version, the same bytes)
    copy = run(world, world.upload(f"uploads/{MONTH}/closed.csv"))

    # Then the copy is a duplicate of the month being rated, and the old version's retry finishes it
    assert (copy.status, copy.duplicate_of) == ("DUPLICATE", old.object_id)
    assert run(world, old).status == "CLOSED"
    world.follow()
    assert world.verdict().ok


def test_a_report_staged_by_an_attempt_that_died_before_publishing_it_is_published_by_the_retry(world):
    obj = world.upload(f"uploads/{MONTH}/g.csv", **{"bill-amount": "1"})  # a bill that does not balance
    assert world.deliver(obj, kill=Stop("notifier.publish", 1, "before")).killed  # after the ledger's CLOSED
    assert world.store.report(obj) is None
    assert world.topic.published == []

    report = run(world, obj)

    assert report.status == "CLOSED"
    assert world.store.report(obj) == report
    (alert,) = world.topic.published
    assert "reconciliation does not balance" in alert.subject
    assert len(world.workflows.started) == 1


def test_an_attempt_that_died_before_following_its_rating_has_it_followed_by_the_next_delivery(world):
    # Given an import that closed its session and published its report, then died before it started the follow
    obj = world.upload(f"uploads/{MONTH}/i.csv")
    assert world.deliver(obj, kill=Stop("workflows.start", 1, "before")).killed
    closed = world.store.report(obj)
    assert closed is not None
    assert (closed.status, world.workflows.started) == ("CLOSED", {})

    # When the event is delivered again
    with Logged() as logged:
        report = run(world, obj)

    # Then it answers with the report, and starts the follow of its session, with the event the follow reads
    assert report == closed
    session = report.import_session_id
    assert session is not None
    assert world.workflows.started == {follow_execution_name(obj.object_id, session): follow_event(obj, session)}
    # And the log says it was claimed already, with the ledger's status
    claimed = [getattr(r, "ledgerStatus", None) for r in logged.records if r.msg == "Object version already claimed"]
    assert claimed == ["CLOSED"]
    world.follow()
    assert world.verdict().ok


def test_an_attempt_that_died_between_its_alert_and_its_report_is_published_by_the_next_delivery(world):
    obj = world.upload(f"uploads/{MONTH}/held.csv", OTHER_CSV)
    run(world, world.upload(f"exports/{MONTH}/fe_1.csv"))
    assert world.deliver(obj, kill=Stop("store.put_json", 3, "before")).killed  # the report's JSON, last
    assert len(world.topic.about(obj)) == 1  # sent, and marked sent in the ledger (its outbox)

    report = run(world, obj)

    assert (report.status, world.store.report(obj)) == ("HELD", report)
    assert len(world.topic.about(obj)) == 1  # the ledger knew it was sent
    assert run(world, obj) == report  # published: nothing is sent again
    assert len(world.topic.about(obj)) == 1


def test_an_attempt_that_died_before_its_alert_was_marked_sent_is_alerted_again_never_lost(world):
    obj = world.upload(f"uploads/{MONTH}/held.csv", OTHER_CSV)
    run(world, world.upload(f"exports/{MONTH}/fe_1.csv"))
    assert world.deliver(obj, kill=Stop("ledger.mark_alerted", 1, "before")).killed
    assert len(world.topic.about(obj)) == 1
    assert run(world, obj).status == "HELD"
    assert len(world.topic.about(obj)) == 2  # at least once
    assert run(world, obj).status == "HELD"
    assert len(world.topic.about(obj)) == 2


def test_a_superseded_attempt_publishes_nothing_a_person_would_read(world):
    # Given attempt A decided the file is held, then was slow before it recorded so
    bill = world.upload(f"exports/{MONTH}/fe_1.csv")
    run(world, bill)
    other = world.upload(f"uploads/{MONTH}/other.csv", OTHER_CSV)
    slow = world.attempt(other, "A", pause=Stop("ledger.end", 1, "before"))
    assert slow.is_paused
    # When A's lease lapses and the event's retry ends it first
    world.lapse()
    retry = run(world, other)
    alerts = len(world.topic.published)
    slow.resume()

    # Then A stops at its fenced write: it publishes no report and no alert of its own
    assert type(slow.error).__name__ == "ImportSupersededError"
    assert world.store.report(other) == retry
    assert len(world.topic.published) == alerts == 1


# -- two coverages in one stack ------------------------------------------------------------------


def test_both_bills_of_a_month_are_imported_once_each_in_their_own_currency(both):
    japan = run(both, both.upload(f"exports/{MONTH}/jp/fe_1.csv", coverage="jp"))
    global_ = run(both, both.upload(f"exports/{MONTH}/g/fe_2.csv", GLOBAL_CSV, currency="USD", coverage="g"))

    assert (japan.status, japan.coverage, japan.currency) == ("CLOSED", "jp", "JPY")
    assert (global_.status, global_.coverage, global_.currency) == ("CLOSED", "g", "USD")
    assert session_charges(both, japan.import_session_id) == both.expected()
    assert session_charges(both, global_.import_session_id) == both.expected(GLOBAL_CSV, currency="USD", coverage="g")
    assert {c["currencyCode"] for c in both.cloudblue.charges(global_.import_session_id)} == {"USD"}
    assert "Global coverage" in global_.summary
    assert both.ledger.holder(f"bill#{MONTH}#jp").object_id == japan.object.object_id
    assert both.ledger.holder(f"bill#{MONTH}#g").object_id == global_.object.object_id


def test_a_second_file_of_each_coverage_sends_nothing_again(both):
    japan = run(both, both.upload(f"exports/{MONTH}/jp/fe_1.csv", coverage="jp"))
    global_ = run(both, both.upload(f"exports/{MONTH}/g/fe_2.csv", GLOBAL_CSV, currency="USD", coverage="g"))
    sessions = len(both.cloudblue.sessions())

    again = run(both, both.upload(f"uploads/{MONTH}/g/again.csv", GLOBAL_CSV, currency=""))
    other = run(both, both.upload(f"uploads/{MONTH}/other.csv", GLOBAL_CSV.replace(b"\r\n", b"\n"), currency="USD"))
    held_jp = run(both, both.upload(f"uploads/{MONTH}/jp/other.csv", OTHER_CSV))

    assert (again.status, again.duplicate_of, again.coverage) == ("DUPLICATE", global_.object.object_id, "g")
    assert (other.status, other.duplicate_of, other.coverage) == ("HELD", global_.object.object_id, "g")
    assert (held_jp.status, held_jp.duplicate_of) == ("HELD", japan.object.object_id)
    assert len(both.cloudblue.sessions()) == sessions


def test_the_same_csv_uploaded_as_both_coverages_bills_is_imported_once_and_alerted(cloudblue):
    one = GLOBAL_MAPPING.model_copy(update={"currency": None})  # one mapping for both, no currency
    with protocol_world(cloudblue, coverages=("jp", "g"), mapping=one) as world:
        wrong = run(world, world.upload(f"uploads/{MONTH}/jp/bill.csv", GLOBAL_CSV, currency=""))
        right = run(world, world.upload(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, currency="USD"))

        assert (wrong.status, wrong.coverage) == ("CLOSED", "jp")
        assert (right.status, right.reason) == ("DUPLICATE", EndReason.SAME_BYTES_OTHER_COVERAGE)
        assert (right.duplicate_of, right.import_session_id) == (wrong.object.object_id, None)
        assert "as the Japan coverage bill" in right.summary
        (alert,) = world.topic.published
        assert "the same file was imported as the other coverage's bill" in alert.subject


@pytest.mark.parametrize(
    ("key", "metadata", "message"),
    [
        (
            f"uploads/{MONTH}/bill.csv",
            {"currency": ""},
            "this stack imports Japan coverage and Global coverage bills and the file names neither: upload it to "
            "uploads/<yyyyMM>/jp/ or uploads/<yyyyMM>/g/",
        ),
        (
            f"uploads/{MONTH}/jp/bill.csv",
            {"currency": "USD"},
            "the key's folder says Japan coverage, the metadata currency USD says Global coverage",
        ),
        (f"uploads/{MONTH}/bill.csv", {"coverage": "eu"}, "coverage must be jp or g"),
    ],
)
def test_a_file_whose_coverage_cannot_be_told_is_rejected_and_says_how_to_name_it(both, key, metadata, message):
    report = run(both, both.upload(key, GLOBAL_CSV, **metadata))
    assert (report.status, report.import_session_id) == ("REJECTED", None)
    assert message in report.problems[0].message
    (alert,) = both.topic.published
    assert alert.subject.startswith(f"soracharge {MONTH}")
    assert "file rejected" in alert.subject
    assert message in alert.message


@pytest.mark.parametrize(
    ("metadata", "mapped", "said", "named"),
    [
        (
            {"currency": "USD", "coverage": "jp"},
            "JPY",
            "the metadata coverage says Japan coverage, the metadata currency USD says Global coverage",
            ("coverage", "g,jp"),
        ),
        (
            {"currency": "USD"},
            "JPY",
            "the metadata currency USD says Global coverage, and this stack imports Japan coverage bills only",
            ("coverage", "g"),
        ),
        (
            {"currency": ""},
            "USD",
            "the mapping's currency is USD, and Japan coverage bills in JPY",
            ("currency", "USD"),
        ),
        (
            {"currency": "JPY"},
            "USD",
            "the file's metadata currency is JPY, the mapping's currency is USD",
            ("currency", "JPY,USD"),
        ),
    ],
)
def test_a_currency_told_otherwise_by_any_source_rejects_the_file_naming_each(cloudblue, metadata, mapped, said, named):
    # Given a Japan bill, with a metadata currency, a mapping currency and a coverage that do not all agree
    with protocol_world(cloudblue, mapping=MAPPING.model_copy(update={"currency": mapped})) as world:
        sessions = len(world.cloudblue.sessions())
        report = run(world, world.upload(f"uploads/{MONTH}/bill.csv", **metadata))
        # Then nothing is imported, and the first problem names each source and its value
        assert (report.status, report.reason) == ("REJECTED", EndReason.PROBLEMS)
        assert said in report.problems[0].message
        assert (report.problems[0].column, report.problems[0].value) == named  # the setting, and the values told
        assert len(world.cloudblue.sessions()) == sessions


def test_a_file_of_a_coverage_the_stack_does_not_import_is_rejected_by_name(world):
    report = run(world, world.upload(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, currency="USD"))
    assert report.status == "REJECTED"
    (problem,) = report.problems
    assert (problem.column, problem.value) == ("coverage", "g")
    assert problem.message == (
        "the key's folder says Global coverage, and this stack imports Japan coverage bills only (SoracomCoverageType "
        "jp): import it in a stack of g, or add g to SoracomCoverageType"
    )


def test_a_global_bill_whose_currency_is_named_nowhere_is_rejected_saying_where_to_name_it(cloudblue):
    # Given a stack of both coverages whose Global mapping names no currency, and a Global upload naming none
    mappings = {"jp": MAPPING, "g": GLOBAL_MAPPING.model_copy(update={"currency": None})}
    with protocol_world(cloudblue, coverages=("jp", "g"), mapping=mappings) as world:
        sessions = len(world.cloudblue.sessions())
        report = run(world, world.upload(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, currency=""))
        # Then nothing is imported on a guess of USD or EUR: the report says where the currency is named
        assert (report.status, report.reason, report.currency) == ("REJECTED", EndReason.PROBLEMS, None)
        (problem,) = report.problems
        assert (problem.column, problem.value) == ("currency", None)
        assert problem.message == (
            "no currency for this file: Global coverage bills in USD or EUR; the export flow sets it as object "
            "metadata; for an upload, set 'currency' in the mapping or upload with the metadata currency=USD|EUR"
        )
        assert len(world.cloudblue.sessions()) == sessions


def test_a_mapping_currency_of_the_other_coverage_rejects_the_upload_by_name(cloudblue):
    with protocol_world(cloudblue, coverages=("jp", "g"), mapping=MAPPING) as world:  # Japan's (JPY) for both
        report = run(world, world.upload(f"uploads/{MONTH}/g/bill.csv", GLOBAL_CSV, currency=""))
        assert report.status == "REJECTED"
        assert report.problems[0].message.startswith(
            "the bill's currency is not the same everywhere: the mapping's currency is JPY, and Global coverage "
            "bills in USD or EUR: nothing is imported on a guess"
        )


def test_a_retry_imports_the_file_as_its_first_attempt_settled_after_the_stack_became_jp_and_g(world):
    # Given a jp stack: an upload with no metadata (Japan's, JPY) whose first attempt died mid-send
    obj = world.upload(f"uploads/{MONTH}/bill.csv", currency="")
    assert world.deliver(obj, kill=Stop("cloudblue.import_charges", 2, "before")).killed
    world.lapse()
    # When the stack is updated to jp,g (where such a file names no coverage) and the event is re-delivered
    world.coverages = ("jp", "g")
    retry = run(world, obj)
    # Then it is imported as it was started: Japan's, in JPY, once
    assert (retry.status, retry.coverage, retry.currency) == ("CLOSED", "jp", "JPY"), retry.summary
    world.follow()
    assert world.verdict().ok


def test_a_dry_run_of_a_global_bill_reports_it_as_the_global_bill_in_its_currency():
    plan, report = dry_run_report(
        io.BytesIO(GLOBAL_CSV), month=MONTH, currency="USD", mapping=GLOBAL_MAPPING, source="bill.csv", coverage="g"
    )
    assert (report.status, report.coverage, report.currency) == ("DRY_RUN", "g", "USD")
    assert report.summary == f"dry run: {len(plan.charges)} charges ({plan.charges_sum} USD) would be imported"
    assert all((charge.ext_charge_id or "").endswith("-g") for charge in plan.charges)


# -- what a closed report and the function's metrics count ----------------------------------------------------


def test_a_closed_report_totals_each_customer_with_its_sims_and_devices(world):
    report = run(world, world.upload(f"uploads/{MONTH}/totals.csv"))
    assert report.status == "CLOSED"
    # the rows no customer's tag names (support, the free tier...): one SIM of nobody's, no device
    per_customer = [(a.name, a.amount, a.sims, a.devices) for a in report.per_customer]
    assert per_customer == [
        ("", Decimal("5124.6258604"), 1, None),
        ("Acme Logistics", Decimal("15221.5950508"), 2, 2),
        ("Northwind Traders", Decimal("13709.1586192"), 3, 1),
        ("東京ガス", Decimal("7943.9599334"), 3, None),
    ]
    # an item's or a subscription's total counts no SIMs
    assert {(a.sims, a.devices) for a in [*report.per_item, *report.per_subscription]} == {(None, None)}


def test_a_closed_import_counts_the_rows_read_and_the_charges_and_packets_it_sent_in_its_metrics(world):
    # Given a first attempt that died once CloudBlue took its second packet, before the ledger knew: its retry gives
    # that session up and sends the file's three packets again in a new one
    obj = world.upload(f"uploads/{MONTH}/metrics.csv")
    assert world.deliver(obj, kill=Stop("ledger.record_packet", 2, "before")).killed
    world.lapse()
    metrics.clear_metrics()

    report = run(world, obj)

    assert report.status == "CLOSED"
    counted = {name: metrics.metric_set[name]["Value"] for name in ("ImportsClosed", "RowsRead", "ChargesSent")}
    assert counted == {"ImportsClosed": [1.0], "RowsRead": [float(report.counts.rows)], "ChargesSent": [38.0]}
    # and the session given up, with the packets sent again
    assert (metrics.metric_set["PacketsSent"]["Value"], metrics.metric_set["SessionsAbandoned"]["Value"]) == (
        [3.0], [1.0],
    )  # fmt: skip


def test_the_amount_a_closed_import_sent_is_a_metric_of_its_currency_and_coverage(world, monkeypatch, capsys):
    # Given the function's metrics namespace (as in Lambda: the amount metrics go out at once, as EMF on stdout)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "soracharge-test")
    capsys.readouterr()
    report = run(world, world.upload(f"uploads/{MONTH}/amount.csv"))
    assert report.status == "CLOSED"
    assert report.reconciliation is not None
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    imported = [blob for blob in blobs if "AmountImported" in blob]
    # Then the dashboard's series (per currency and coverage) holds the CSV's sum, and no operator's series does
    assert [(blob["AmountImported"], blob["Currency"], blob["Coverage"], "Operator" in blob) for blob in imported] == [
        ([float(report.reconciliation.imported_sum)], "JPY", "jp", False)
    ]


# -- operators SoracomAccounts lists ----------------------------------------------------------------------------


def listing(world: ProtocolWorld, monkeypatch: pytest.MonkeyPatch, *operators: str) -> None:
    """The stack's SoracomAccounts lists ``operators`` (each on Japan coverage)."""
    made = world.dependencies
    accounts = tuple(Account(operator=operator) for operator in operators)
    monkeypatch.setattr(world, "dependencies", lambda attempt: dataclasses.replace(made(attempt), accounts=accounts))


@pytest.mark.parametrize("killed", [None, Stop("cloudblue.import_charges", 2, "before")], ids=["first", "retry"])
def test_an_operator_s_bill_is_reported_and_its_rating_followed_as_that_operator_s_even_by_a_retry(
    world, monkeypatch, killed
):
    # Given a stack listing two operators besides its own (the mapping gives OP0000000003's bills to a customer)
    listing(world, monkeypatch, "OP0000000002", "OP0000000003")
    obj = world.upload(f"uploads/{MONTH}/OP0000000002/jp/bill.csv")
    if killed is not None:  # its first attempt pinned the operator and died mid-send: the retry reads the pins
        assert world.deliver(obj, kill=killed).killed
        world.lapse()

    report = run(world, obj)

    # Then the report names the operator, and the follow execution reads the operator's bill
    assert (report.status, report.coverage, report.operator) == ("CLOSED", "jp", "OP0000000002")
    assert report.summary.startswith("38 charges (41999.3394638 JPY, operator OP0000000002, Japan coverage) imported")
    session = report.import_session_id
    assert session is not None
    (payload,) = world.workflows.started.values()
    request = FollowSessionRequest.model_validate(payload)
    assert (request.object_id, request.coverage, request.operator) == (obj.object_id, "jp", "OP0000000002")
    assert request.session.import_session_id == session


def test_a_file_whose_folder_and_metadata_name_two_operators_is_rejected_naming_both(world, monkeypatch):
    # Given a stack listing two operators, and a file in one's folder whose metadata names the other
    listing(world, monkeypatch, "OP0000000002", "OP0000000003")
    sessions = len(world.cloudblue.sessions())
    report = run(world, world.upload(f"uploads/{MONTH}/OP0000000002/jp/bill.csv", operator="OP0000000003"))
    # Then whose bill it is would be a guess: nothing is imported, and the problem names both
    assert (report.status, report.reason) == ("REJECTED", EndReason.PROBLEMS)
    (problem,) = report.problems
    assert (problem.column, problem.value, problem.message) == (
        "operator",
        "OP0000000002,OP0000000003",
        "the key's folder says OP0000000002, the metadata operator says OP0000000003",
    )
    assert len(world.cloudblue.sessions()) == sessions


def test_a_killed_attempt_writes_nothing_at_all(world):
    obj = world.upload(f"uploads/{MONTH}/h.csv")
    attempt = world.deliver(obj, kill=Stop("cloudblue.import_charges", 1, "after"))
    assert isinstance(attempt.error, Killed)
    entry = world.ledger.get(obj.object_id)
    assert entry is not None
    assert (entry.status, entry.in_flight, entry.accepted, entry.lease_until > world.clock()) == (
        "IMPORTING", frozenset({0}), frozenset(), True,  # its claim still holds: it released nothing
    )  # fmt: skip
