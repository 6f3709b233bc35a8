"""A deterministic exploration of the import protocol: two attempts, every step, every ending.

A case: attempt A imports the month's bill (as its first attempt, or as a retry resuming a session an
earlier attempt left with a packet accepted). A stops at one of its steps: a gate before or after one of
its calls to the ledger, S3 or CloudBlue (``tests/protocol/scheduler.py``). Meanwhile the *other* runs:
the same S3 event delivered again once A's lease lapsed (so A is superseded), or a second file for the
same month and coverage (same rows, other bytes); the other runs to its end, or dies at one of its own
steps, or stops on CloudBlue refusing its packets. Then A goes on *late* (its answer arrives after all
that; it is slow, not dead) or *dies* where it stood. Separately, A's calls that store something in
CloudBlue (openSession, each importCharges, closeSession) are answered 500, 502 or 504, or time out,
after CloudBlue stored the request.

After each case the world settles as a month does (Lambda's retries, the session followed, the
runbook's actions for the alerts) and the verdict checks that CloudBlue rates each charge of the
month exactly once, that every file ended, that each one that ended without importing was alerted
with a runbook action, and that no report names a session that was never closed.

``scripts/explore_protocol.py`` runs every case; ``tests/protocol/test_exploration.py`` a sample drawn
with a seed printed in pytest's header.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from soracharge_local.simulators import CloudBlueFaults, CloudBlueSimulator

from tests.protocol.scheduler import Attempt, Stop
from tests.protocol.world import MONTH, OTHER_CSV, ProtocolWorld, Verdict, protocol_world

Start = Literal["fresh", "resume"]
Other = Literal["redelivery", "second-file"]
Then = Literal["late", "dies"]
Answer = Literal["500", "502", "504", "timeout"]
#: The other's end: ``None`` to its end, ``REFUSED`` on CloudBlue refusing its packets, else it dies at that step.
REFUSED = -1
#: CloudBlue calls that store something: after one, an answer lost leaves the outcome unknown.
STORING = ("cloudblue.open_session", "cloudblue.import_charges", "cloudblue.close_session")
ANSWERS: tuple[Answer, ...] = ("500", "502", "504", "timeout")


@dataclass(frozen=True)
class Interleaving:
    """A paused at its ``pause``-th step; the other (``other``) runs and ends as ``other_end`` says; A ``then``."""

    start: Start
    pause: int
    other: Other
    other_end: int | None
    then: Then

    def __str__(self) -> str:
        end = (
            "to its end"
            if self.other_end is None
            else "refused"
            if self.other_end == REFUSED
            else f"dies@{self.other_end}"
        )
        return f"{self.start}: A stops at step {self.pause}; {self.other} runs {end}; A {self.then}"


@dataclass(frozen=True)
class LostAnswer:
    """A's ``call`` (an ``op`` of ``STORING``, its ``occurrence``) is stored by CloudBlue, and answered ``answer``."""

    start: Start
    op: str
    occurrence: int
    answer: Answer

    def __str__(self) -> str:
        return f"{self.start}: A's {self.op} #{self.occurrence} stored, then answered {self.answer}"


Case = Interleaving | LostAnswer


@dataclass(frozen=True)
class Outcome:
    case: Case
    verdict: Verdict | None  # None: the case does not arise (A or the other ended before the step named)
    where: str = ""

    @property
    def ran(self) -> bool:
        return self.verdict is not None


def begin(world: ProtocolWorld, start: Start) -> None:
    """The bill uploaded; for ``resume``, a first attempt left its session with packet 1 accepted (CloudBlue
    refused packet 2, a 503: it said it did not take it) and its lease lapsed."""
    obj = world.upload(f"exports/{MONTH}/fe_1.csv")
    if start == "resume":
        first = world.attempt(obj, "first", pause=Stop("cloudblue.import_charges", 2, "before"))
        with world.refusing():
            first.resume()
        assert first.error is not None, "the first attempt stops on CloudBlue's refusal"
        world.lapse()


def steps_of_a(cloudblue: CloudBlueSimulator, start: Start) -> list[str]:
    """A's steps when nothing disturbs it (the pauses a case can choose from)."""
    with protocol_world(cloudblue) as world:
        begin(world, start)
        attempt = world.deliver(world.files[0], "A")
        assert attempt.error is None, attempt.error
        return [str(step) for step in attempt.steps]


def run(case: Case, cloudblue: CloudBlueSimulator) -> Outcome:
    with protocol_world(cloudblue) as world:
        begin(world, case.start)
        bill = world.files[0]
        if isinstance(case, LostAnswer):
            a = world.attempt(bill, "A", pause=Stop(case.op, case.occurrence, "before"))
            if not a.is_paused:
                return Outcome(case, None)
            _lose_next_answer(world, case)
            a.resume()
            world.cloudblue.faults = CloudBlueFaults()
            world.transport.lose_next = 0
            return _settled(world, case, a)
        a = world.attempt(bill, "A", pause=Stop(index=case.pause))
        if not a.is_paused:
            return Outcome(case, None)
        where = str(a.paused_at)
        if case.other == "redelivery":
            world.lapse()
            other = bill
        else:
            other = world.upload(f"uploads/{MONTH}/other.csv", OTHER_CSV)
        b = _other(world, other, case.other_end)
        if case.other_end not in (None, REFUSED) and not b.killed:
            a.kill()
            return Outcome(case, None)  # the other ended before the step it was to die at: another case
        if case.then == "late":
            a.resume()
        else:
            a.kill()
        return _settled(world, case, a, where)


def _other(world: ProtocolWorld, other: object, end: int | None) -> Attempt:
    assert hasattr(other, "object_id")
    if end == REFUSED:
        with world.refusing():
            return world.deliver(other, "B")  # type: ignore[arg-type]
    return world.deliver(other, "B", kill=Stop(index=end) if end is not None else None)  # type: ignore[arg-type]


def _lose_next_answer(world: ProtocolWorld, case: LostAnswer) -> None:
    operation = {
        "cloudblue.open_session": "openSession",
        "cloudblue.import_charges": "importCharges",
        "cloudblue.close_session": "closeSession",
    }[case.op]
    if case.answer == "timeout":
        world.transport.path_part = "/charges" if operation == "importCharges" else "/importSessions"
        world.transport.lose_next = 1
    elif case.answer == "500":
        world.cloudblue.faults = CloudBlueFaults(
            server_error_next=1, server_error_after_processing=True, only_operation=operation
        )
    else:
        world.cloudblue.faults = CloudBlueFaults(
            gateway_error_next=1,
            gateway_status=int(case.answer),
            gateway_after_processing=True,
            only_operation=operation,
        )


def _settled(world: ProtocolWorld, case: Case, a: Attempt, where: str = "") -> Outcome:
    if a.error is not None and not a.killed:
        pass  # A failed (superseded, or stopped by CloudBlue): Lambda's retries follow in settle
    world.settle()
    world.follow_runbook()
    return Outcome(case, world.verdict(), where)


def every_case(cloudblue: CloudBlueSimulator) -> Iterator[Case]:
    """Every case, in a fixed order: the steps of A come from a dry run; the other dies at each of its steps
    (a step ``before`` a call: dying there is dying after the call before it)."""
    for start in ("fresh", "resume"):
        steps = steps_of_a(cloudblue, start)
        for pause in range(1, len(steps) + 1):
            for other in ("redelivery", "second-file"):
                for then in ("late", "dies"):
                    yield Interleaving(start, pause, other, None, then)
                    yield Interleaving(start, pause, other, REFUSED, then)
                    for end in range(1, len(steps) + 8, 2):  # the other's steps: every 'before' gate
                        yield Interleaving(start, pause, other, end, then)
        stored = [s for s in steps if s.startswith("before ") and s.split()[1] in STORING]
        for step in stored:
            _, op, occurrence = step.split()
            for answer in ANSWERS:
                yield LostAnswer(start, op, int(occurrence.lstrip("#")), answer)


def sample(cloudblue: CloudBlueSimulator, seed: int, size: int) -> list[Case]:
    """``size`` cases drawn with ``seed`` from every case (every lost answer always among them)."""
    cases = list(every_case(cloudblue))
    lost = [case for case in cases if isinstance(case, LostAnswer)]
    rest = [case for case in cases if not isinstance(case, LostAnswer)]
    return lost + random.Random(seed).sample(rest, min(size, len(rest)))
