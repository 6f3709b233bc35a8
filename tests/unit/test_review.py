"""The month against the months before it, and a person's approval, as a billing team meets them.

The unit world of the protocol tests (``tests/protocol/world.py``): the real ledger on moto, the real
CloudBlue client against the simulator, reports of earlier months put where the import left them. What is
checked is what a person checks: the report's status, variance and approval, the alert's commands, and
what CloudBlue holds (nothing before approval; exactly the preview's charges after).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from soracharge.errors import ImportResumeError, InvalidInputError
from soracharge.logic.imports import review_object
from soracharge.logic.sessions import finish_import
from soracharge.models.imports import EndReason, FollowSessionRequest, ImportReport, ObjectRef, ReviewRequest
from soracharge.models.mapping import ReviewSettings, VarianceSettings
from soracharge.models.runbook import Remedy

from tests.protocol.scheduler import Attempt, Stop
from tests.protocol.world import CSV, MONTH, OTHER_CSV, Logged, ProtocolWorld
from tests.unit.test_import_use_case import run

#: What the month charges each customer (JPY): Acme 15,221.60 (its LoRa device and its share of the VPG and the
#: free tier included), Northwind 13,709.16 (its camera too), 東京ガス 7,943.96, no customer 5,124.63 (support...).
ITEMS = dict.fromkeys(
    [
        "basicCharge-plan-D",
        "basicCharge-planX2",
        "uploadDataCharge-plan-D",
        "downloadDataCharge-plan-D",
        "smsCharge",
        "volumeDiscount-iotStarter",
        "soraCamLicenseCharge-cloudRecording7",
        "soraCamLicenseCharge-cloudRecording7-extraDays",
        "loraDeviceCharge",
        "vpgBasicCharge-typeE",
        "soracomHarvestWriteRequestCharge",
        "supportCharge-business",
        "freeTierDataCharge-500MB",
    ],
    "1",
)
#: A month before it in which every customer billed about what it bills now: nothing unusual.
USUAL = {"Acme Logistics": "15000", "Northwind Traders": "13500", "東京ガス": "7900", "": "5000"}


def decided(
    world: ProtocolWorld, obj: ObjectRef, decision: str = "approve", *, by: str = "Hanako", plan: str | None = None
) -> ImportReport:
    attempt = world.decide(obj, decision, by=by, plan=plan)
    if attempt.error is not None:
        raise attempt.error
    assert isinstance(attempt.result, ImportReport)
    return attempt.result


def unusual(world: ProtocolWorld) -> None:
    """202609 billed Acme 100 JPY: it moves to 15,221.60 (by 15,122 JPY) and Northwind was not billed at all."""
    world.history("202608", USUAL, per_item=ITEMS)
    world.history(
        "202609", {**USUAL, "Acme Logistics": "100", "Northwind Traders": "0"} | {"Initech": "2500"}, per_item=ITEMS
    )
    del world.store.documents["reports/202609/earlier-202609.json"]["perCustomer"][1]  # Northwind: not billed


def with_review(world: ProtocolWorld, **review: object) -> None:
    world.mappings = {c: m.model_copy(update={"review": ReviewSettings(**review)}) for c, m in world.mappings.items()}


# -- the variance --------------------------------------------------------------------------------


def test_the_first_month_is_imported_at_once_with_nothing_to_compare(world):
    report = run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    assert report.status == "CLOSED"
    assert report.variance is not None
    assert report.variance.months == [MONTH]
    assert report.variance.flags == []
    assert report.approval is None


def test_a_usual_month_is_imported_at_once_and_its_report_shows_each_customer_over_the_months(world):
    world.history("202608", USUAL, per_item=ITEMS)
    world.history("202609", USUAL, per_item=ITEMS)
    report = run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    assert report.status == "CLOSED"
    assert report.variance is not None
    assert report.variance.compared_with == "202609"
    assert report.variance.flags == []
    acme = next(s for s in report.variance.per_customer if s.name == "Acme Logistics")
    assert acme.amounts == [Decimal(15000), Decimal(15000), Decimal("15221.5950508")]
    world.follow()
    assert world.verdict().ok


def test_an_unusual_month_is_held_for_approval_and_nothing_is_sent(world):
    # Given a month before in which Acme billed 100, Northwind nothing, and Initech 2,500
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    report = run(world, obj)
    # Then the month waits for a person, and says why in its first line
    assert report.status == "AWAITING_APPROVAL"
    assert report.reason is EndReason.REVIEW
    assert report.summary.startswith(
        'held for approval: the month is unusual against 202609: customer "Acme Logistics" moved from 100 JPY in '
        "202609 to 15,221.5950508 JPY (+15122%)"
    )
    assert report.variance is not None
    kinds = {(flag.kind, flag.name) for flag in report.variance.flags}
    assert kinds == {
        ("moved", "Acme Logistics"),
        ("appeared", "Northwind Traders"),
        ("vanished", "Initech"),
    }
    # And the preview holds every charge, and CloudBlue holds nothing
    assert report.counts.charges == 38
    assert report.reconciliation is not None
    assert report.reconciliation.csv_sum == Decimal("41999.3394638")
    assert world.rated() == []
    assert world.cloudblue.sessions() == [
        s for s in world.cloudblue.sessions() if s.importSessionId in world.sessions_before
    ]
    # And the alert asks for a decision, with a command each to approve or reject exactly this plan
    (alert,) = world.topic.about(obj)
    assert alert.remedy is Remedy.APPROVE
    assert alert.subject == f"soracharge {MONTH} (Japan coverage): held for approval, nothing sent"
    assert report.approval is not None
    for decision, command in zip(("approve", "reject"), alert.commands, strict=True):
        words = shlex.split(command)
        payload = json.loads(words[words.index("--payload") + 1])
        assert payload == {
            "review": {
                "objectId": obj.object_id,
                "plan": report.approval.plan,
                "version": report.approval.month_version,
                "decision": decision,
                "by": "YOUR NAME",
            }
        }


def test_a_move_under_the_change_is_not_unusual(world):
    # Acme moves from 12,000 to 15,222 (+27 %): under the default 50 %
    world.history("202609", {**USUAL, "Acme Logistics": "12000"}, per_item=ITEMS)
    report = run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    assert report.status == "CLOSED"
    assert report.variance is not None
    assert report.variance.flags == []


def test_a_move_under_the_floor_is_not_unusual_however_large_its_share(world):
    # Acme moves from 100 to 15,222 (+15122 %), by 15,122 JPY: under a floor of 20,000 (and every other move too)
    world.history("202609", {**USUAL, "Acme Logistics": "100"}, per_item=ITEMS)
    with_review(world, variance=VarianceSettings(change=Decimal("0.05"), floor=Decimal(20000)))
    report = run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    assert report.status == "CLOSED"
    assert report.variance is not None
    assert report.variance.flags == []


def test_an_additional_file_is_judged_with_the_month_s_files_imported_before_it(world):
    world.history("202609", USUAL, per_item=ITEMS)
    assert run(world, world.upload(f"uploads/{MONTH}/a.csv")).status == "CLOSED"
    # A second bill of the same rows doubles every customer of the month: that is unusual, and held
    second = run(world, world.upload(f"uploads/{MONTH}/b.csv", OTHER_CSV, additional=True))
    assert second.status == "AWAITING_APPROVAL"
    assert second.variance is not None
    acme = next(s for s in second.variance.per_customer if s.name == "Acme Logistics")
    assert acme.amounts == [Decimal(15000), 2 * Decimal("15221.5950508")]


def test_a_bill_item_never_seen_before_is_unusual(world):
    world.history("202609", USUAL, per_item={k: v for k, v in ITEMS.items() if k != "smsCharge"})
    report = run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    assert report.status == "AWAITING_APPROVAL"
    assert report.variance is not None
    assert [(f.kind, f.name) for f in report.variance.flags] == [("new-item", "smsCharge")]


# -- approval -------------------------------------------------------------------------------------


def test_approving_sends_exactly_the_charges_previewed_once_and_records_who(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    preview = run(world, obj)
    # A mapping changed while the month waited changes nothing: the preview's pinned mapping is sent
    with_review(world, approval="off")
    world.mappings = {c: m.model_copy(update={"packet_size": 3}) for c, m in world.mappings.items()}
    world.clock.now += 600  # a person decides ten minutes after the preview
    report = decided(world, obj, by="Hanako Billing")
    assert report.status == "CLOSED"
    assert report.approval is not None
    assert (report.approval.decision, report.approval.by) == ("approved", "Hanako Billing")
    assert report.approval.at == datetime.fromtimestamp(world.clock(), UTC)  # when the decision was recorded
    assert report.approval.plan == preview.approval.plan  # type: ignore[union-attr]
    assert report.counts.packets == preview.counts.packets
    entry = world.ledger.get(obj.object_id)
    assert entry is not None
    assert (entry.decision, entry.decided_by) == ("approved", "Hanako Billing")
    world.follow()
    assert world.verdict().ok  # every charge of the file rated once
    # Approving again, or the S3 event delivered again, sends nothing more
    assert decided(world, obj, by="Hanako Billing").status in ("CLOSED", "PROCESSED")
    assert run(world, obj).status in ("CLOSED", "PROCESSED")
    assert world.verdict().ok


def test_an_approved_plan_its_import_reads_otherwise_is_refused_naming_both_plans_and_nothing_is_sent(world):
    # Given a preview, and then the pinned mapping read into other packets (as another version of soracharge
    # would read it) before a person approves the plan previewed
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    preview = run(world, obj)
    assert preview.approval is not None
    entry = world.ledger.get(obj.object_id)
    assert entry is not None
    assert entry.pins is not None
    world.store.documents[entry.pins.mapping]["mapping"]["packetSize"] = 5

    # When Hanako approves it
    approving = world.decide(obj, by="Hanako")

    # Then nothing is sent: the import refuses to send a plan other than the one approved, naming both
    assert isinstance(approving.error, ImportResumeError)
    message = str(approving.error)
    approved = preview.approval.plan[:12]
    said = re.fullmatch(
        rf"{re.escape(obj.uri)}: the plan Hanako approved \({approved}\) is not the plan this attempt reads "
        r"\((?P<read>[0-9a-f]{12})\) with the same pinned file and mapping: was the code changed in between\? "
        r"Nothing was sent",
        message,
    )
    assert said is not None, message
    assert said["read"] != approved
    assert world.rated() == []
    assert [s for s in world.cloudblue.sessions() if s.importSessionId not in world.sessions_before] == []


def test_rejecting_ends_the_file_with_nothing_sent_and_says_who(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    report = decided(world, obj, "reject", by="Taro")
    assert report.status == "REJECTED"
    assert report.reason is EndReason.REVIEW_REJECTED
    assert report.summary.startswith("rejected by Taro after the preview: nothing was sent.")
    assert world.store.report(obj) == report
    assert world.rated() == []
    alerts = world.topic.about(obj)
    assert alerts[-1].subject.endswith("rejected after review, nothing sent")
    assert alerts[-1].remedy is Remedy.UPLOAD_AGAIN
    # The same decision again answers with the report; the other one is refused, naming the first
    assert decided(world, obj, "reject", by="Taro").status == "REJECTED"
    with pytest.raises(InvalidInputError, match="was rejected by Taro already"):
        decided(world, obj, "approve")
    assert run(world, obj).status == "REJECTED"
    assert world.rated() == []


def test_a_decision_on_another_plan_or_a_file_never_held_is_refused(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    with pytest.raises(InvalidInputError, match=r"is not the latest preview of .*: nothing was decided"):
        decided(world, obj, plan="f" * 64)
    other = world.upload(f"uploads/{MONTH}/never.csv")
    with pytest.raises(InvalidInputError, match="was never held for approval"):
        decided(world, other)
    assert world.rated() == []
    assert world.ledger.get(obj.object_id).status == "AWAITING_APPROVAL"


def test_the_same_event_delivered_again_while_it_waits_sends_nothing(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    world.lapse()
    assert run(world, obj).status == "AWAITING_APPROVAL"
    assert world.rated() == []


def test_an_approval_that_stops_after_the_decision_is_finished_by_the_same_command_again(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    first = world.decide(obj, kill=Stop("ledger.claim", 1, "before"))
    assert first.killed
    assert world.ledger.get(obj.object_id).status == "APPROVED"
    assert decided(world, obj).status == "CLOSED"
    world.follow()
    assert world.verdict().ok


def test_an_approved_import_killed_mid_send_resumes_with_the_approved_plan(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    first = world.decide(obj, kill=Stop("ledger.record_packet", 2, "before"))
    assert first.killed
    world.lapse()
    report = run(world, obj)  # Lambda's retry of the approval: the S3 event's delivery works the same
    assert report.status == "CLOSED"
    assert report.approval is not None
    assert report.approval.decision == "approved"
    world.follow()
    assert world.verdict().ok


def test_a_rejection_that_stops_before_its_report_is_published_is_published_by_the_next_delivery(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    first = world.decide(obj, "reject", kill=Stop("notifier.publish", 1, "before"))
    assert first.killed
    assert world.store.report(obj).status == "AWAITING_APPROVAL"
    assert run(world, obj).status == "REJECTED"
    assert world.store.report(obj).status == "REJECTED"


def test_a_month_imported_by_another_file_while_one_waited_holds_the_waiting_one_when_approved(world):
    unusual(world)
    waiting = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, waiting)
    with_review(world, approval="off")
    assert run(world, world.upload(f"uploads/{MONTH}/b.csv", OTHER_CSV)).status == "CLOSED"
    report = decided(world, waiting)
    assert report.status == "HELD"
    assert report.reason is EndReason.SECOND_FILE
    world.follow()
    assert world.verdict().ok


def test_approval_always_holds_even_the_first_month_and_off_never_holds(world):
    with_review(world, approval="always")
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    with Logged() as logged:
        report = run(world, obj)
    assert report.status == "AWAITING_APPROVAL"
    assert report.summary.startswith("held for approval: the mapping asks for every month to be approved")
    assert report.approval is not None
    assert report.approval.asked_because == "always"
    with Logged() as approved:
        final = decided(world, obj)
    assert final.status == "CLOSED"
    # and the function's log says so, with what an operator searches CloudWatch for
    assert [vars(r)["asked"] for r in logged.records if r.msg == "Import held for approval"] == ["always"]
    sending = [(vars(r)["packets"], vars(r)["alreadyAccepted"]) for r in approved.records if r.msg == "Sending packets"]
    assert sending == [(final.counts.packets, 0)]
    assert final.counts.packets > 0


def test_an_unusual_month_with_approval_off_is_imported_and_its_report_says_it_is_unusual(world):
    unusual(world)
    with_review(world, approval="off")
    report = run(world, world.upload(f"uploads/{MONTH}/a.csv"))
    assert report.status == "CLOSED"
    assert report.variance is not None
    assert report.variance.unusual


# -- what people read follows the ledger, whatever order slow writers wake up in ---------------------------


def test_a_preview_published_late_never_hides_the_month_approved_sent_and_rated_since(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    # The first delivery records AWAITING_APPROVAL in the ledger, then is slow before it publishes
    slow = world.attempt(obj, "slow", pause=Stop("ledger.end", 1, "after"))
    assert slow.is_paused
    # S3 delivers the event again (it publishes the preview); a person approves; it is sent and rated
    assert run(world, obj).status == "AWAITING_APPROVAL"
    assert decided(world, obj).status == "CLOSED"
    world.follow()
    slow.resume()
    # reports/ shows what the ledger says: PROCESSED, not the late preview; no alert after the approval says held
    assert world.store.report(obj).status == "PROCESSED"
    subjects = [alert.subject for alert in world.topic.about(obj)]
    assert subjects == [f"soracharge {MONTH} (Japan coverage): held for approval, nothing sent"]
    assert 'data-status="PROCESSED"' in world.store.pages["reports/history.html"]
    assert world.verdict().ok


def test_a_preview_published_late_before_the_rating_is_followed_leaves_the_rating_right(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    slow = world.attempt(obj, "slow", pause=Stop("ledger.end", 1, "after"))
    run(world, obj)
    decided(world, obj)
    slow.resume()
    world.follow()  # it reads the report the ledger names, not the one reports/ shows
    report = world.store.report(obj)
    assert report is not None
    assert (report.status, report.reason) == ("PROCESSED", None)
    assert report.import_session_id is not None
    assert report.approval is not None
    assert report.approval.decision == "approved"


def test_a_reject_that_loses_to_an_approve_is_refused_naming_it_and_sends_nothing_itself(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    taro = world.decide(obj, "reject", by="Taro", pause=Stop("ledger.decide", 1, "before"))  # read AWAITING
    hanako = world.decide(obj, "approve", by="Hanako", kill=Stop("ledger.claim", 1, "before"))  # dies after deciding
    assert hanako.killed
    taro.resume()
    assert isinstance(taro.error, InvalidInputError)
    assert "was approved by Hanako meanwhile: your decision was not recorded" in str(taro.error)
    assert world.rated() == []  # Hanako's approval is sent by its own retry, not by Taro's rejection
    assert decided(world, obj, by="Hanako").status == "CLOSED"


def test_two_rejections_racing_publish_the_one_the_ledger_recorded(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    run(world, obj)
    taro = world.decide(
        obj, "reject", by="Taro", pause=Stop("ledger.decide", 1, "before"), kill=Stop("notifier.publish", 1, "before")
    )
    jiro = world.decide(obj, "reject", by="Jiro", pause=Stop("ledger.decide", 1, "before"))
    taro.resume()  # recorded, then dies before it publishes
    jiro.resume()  # refused (the same decision: it answers with the report the ledger names)
    entry = world.ledger.get(obj.object_id)
    report = world.store.report(obj)
    assert entry is not None
    assert report is not None
    assert report.approval is not None
    assert (entry.decided_by, report.approval.by) == ("Taro", "Taro")
    assert world.topic.about(obj)[-1].facts["Rejected by"] == "Taro"


def test_two_additional_files_judged_on_the_same_month_cannot_both_close_into_it_unseen(world):
    # Given a month before that billed twice the usual: the month's bill and one more copy of it are usual
    world.history("202609", {k: str(2 * Decimal(v)) for k, v in USUAL.items()}, per_item=ITEMS)
    assert run(world, world.upload(f"uploads/{MONTH}/a.csv")).status == "CLOSED"
    first = world.upload(f"uploads/{MONTH}/b1.csv", OTHER_CSV, additional=True)
    second = world.upload(f"uploads/{MONTH}/b2.csv", OTHER_CSV + b"\n", additional=True)
    # When the first is judged (usual: the month's bill and itself) and sends its packets, slowly ...
    slow = world.attempt(first, "b1", pause=Stop("ledger.mark_closing", 1, "before"))
    # ... while the second is judged on the same month and closes first
    assert run(world, second).status == "CLOSED"
    # Then the first's closing is refused (the month changed since it was judged), it is judged again with the
    # second, found unusual, and held: its session is left open, never closed, and nothing of it is rated
    slow.resume()
    report = slow.result
    assert isinstance(report, ImportReport)
    assert report.status == "AWAITING_APPROVAL"
    assert report.variance is not None
    assert {flag.kind for flag in report.variance.flags} == {"moved"}
    assert len(report.abandoned_sessions) == 1
    assert "Nothing was rated: " in report.summary
    assert any("Do not close session" in warning for warning in report.warnings)
    world.follow()
    assert world.verdict(world.expected() | world.expected(OTHER_CSV + b"\n", id_suffix=_suffix(world, second))).ok
    # Once approved, it is sent again in a new session and closed into the month as it now stands
    assert decided(world, first).status == "CLOSED"


def _suffix(world: ProtocolWorld, obj: ObjectRef) -> str:
    from soracharge.logic.imports import additional_id_suffix

    return additional_id_suffix(hashlib.sha256(world.store.body(obj)).hexdigest(), obj.version_id)


def test_a_decision_on_an_older_preview_of_the_same_plan_is_refused(world):
    # Given a file held, its packets sent, then held again because the month changed (the same plan, a new
    # preview at another month version): the older preview's alert command no longer decides anything
    world.history("202609", {k: str(2 * Decimal(v)) for k, v in USUAL.items()}, per_item=ITEMS)
    with_review(world, approval="always")
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    first = run(world, obj)
    assert first.approval is not None
    assert first.approval.month_version == 0
    with_review(world, approval="off")
    assert run(world, world.upload(f"uploads/{MONTH}/b.csv", OTHER_CSV, additional=True)).status == "CLOSED"
    stale = world.decide(obj, plan=first.approval.plan)  # the version the older preview showed: 0
    assert stale.error is None  # approved: the import runs, finds the month changed, and previews again
    again = world.store.report(obj)
    assert again is not None
    assert again.status == "AWAITING_APPROVAL"
    assert again.approval is not None
    assert again.approval.month_version == 1
    assert any("previewed again" in warning for warning in again.warnings)
    request_old = ReviewRequest(
        object_id=obj.object_id, plan=first.approval.plan, version=0, decision="approve", by="Hanako"
    )
    with pytest.raises(InvalidInputError, match="is not the latest preview"):
        review_object(request_old, world.dependencies(Attempt("old alert")))
    assert decided(world, obj).status == "CLOSED"


# -- the ledger is the one writer's record: ratings move forward only, alerts are owed until sent ----------


def _finish(world: ProtocolWorld, request: FollowSessionRequest, name: str, pause: Stop | None = None) -> Attempt:
    attempt = Attempt(name, pause=pause)
    world.attempts.append(attempt)
    deps = world.dependencies(attempt)
    return attempt.start(
        lambda: finish_import(
            request, deps.store, deps.ledger, deps.notifier, clock=lambda: datetime.fromtimestamp(world.clock(), UTC)
        )
    )


def test_a_late_not_rated_never_writes_over_a_failed_rating_so_the_runbook_s_re_import_still_imports(world):
    obj = world.upload(f"uploads/{MONTH}/bill.csv")
    world.cloudblue.faults.fail_processing = "Subscription x is not active"
    assert run(world, obj).status == "CLOSED"
    (payload,) = world.workflows.started.values()
    request = FollowSessionRequest.model_validate(payload)
    # The first follow gave up polling (NOT_RATED) and is slow before it records so
    polled = request.session.model_copy(update={"status": "PROCESSING", "polls": 120})
    late = _finish(world, request.model_copy(update={"session": polled}), "F1", Stop("ledger.record_rating", 1))
    assert late.is_paused
    # A follow run again records CloudBlue's answer: FAILED_PROCESSED
    world.follow()
    late.resume()
    world.cloudblue.faults.fail_processing = None
    entry = world.ledger.get(obj.object_id)
    assert entry is not None
    assert entry.status == "FAILED_PROCESSED"
    assert world.store.report(obj).status == "FAILED_PROCESSED"
    # So the failed rating's runbook (an additional file) imports the month: the bytes are free to take
    again = run(world, world.upload(f"uploads/{MONTH}/bill-again.csv", additional=True))
    assert again.status == "CLOSED"


def test_a_rejection_whose_decider_died_before_alerting_is_alerted_by_whoever_publishes_next(world):
    unusual(world)
    obj = world.upload(f"uploads/{MONTH}/a.csv")
    slow = world.attempt(obj, "slow", pause=Stop("ledger.end", 1, "after"))  # AWAITING recorded, not published
    assert run(world, obj).status == "AWAITING_APPROVAL"
    taro = world.decide(obj, "reject", by="Taro", kill=Stop("notifier.publish", 1, "before"))  # recorded, dies
    assert taro.killed
    slow.resume()  # it publishes what the ledger names, with the alert the ledger says is owed
    subjects = [alert.subject for alert in world.topic.about(obj)]
    assert subjects[-1] == f"soracharge {MONTH} (Japan coverage): rejected after review, nothing sent"


def test_a_file_cloudblue_failed_to_rate_leaves_the_month_its_re_import_is_judged_with(world):
    # 202609 billed twice this CSV's amounts: the month's bill is usual; the re-import drops Northwind
    world.history("202609", {k: str(2 * Decimal(v)) for k, v in USUAL.items()}, per_item=ITEMS)
    # (its SIMs' rows, and its camera's, which the mapping gives it)
    without_northwind = b"\r\n".join(
        line for line in CSV.split(b"\r\n") if b"Northwind" not in line and b"7CDDE9000002" not in line
    )
    first = world.upload(f"uploads/{MONTH}/bill.csv")
    world.cloudblue.faults.fail_processing = "Subscription x is not active"
    assert run(world, first).status == "CLOSED"
    world.follow()
    world.cloudblue.faults.fail_processing = None
    assert world.store.report(first).status == "FAILED_PROCESSED"
    # The re-import is judged as the month CloudBlue bills: without the failed file, Northwind vanished
    again = run(world, world.upload(f"uploads/{MONTH}/fixed.csv", without_northwind, additional=True))
    assert again.status == "AWAITING_APPROVAL"
    assert again.variance is not None
    assert ("vanished", "Northwind Traders") in {(flag.kind, flag.name) for flag in again.variance.flags}
