"""A deterministic scheduler at the adapters: attempts that pause, resume late, or die at a chosen call.

Each :class:`Attempt` runs one invocation of the import on its own thread. Its adapters (the ledger,
the S3 store, the CloudBlue client, the workflow starter, the notifier) are wrapped in :class:`Gated`
proxies, so every call passes two gates: ``before`` (nothing has happened yet) and ``after`` (the call
took effect; its answer has not reached the attempt). A :class:`Stop` names one gate: there the
attempt pauses, and the test decides what happens meanwhile, then lets it go on (its answer arrives
late, after whatever ran meanwhile) or kills it there.

Only one thread runs at a time: the test's thread waits until an attempt it started has paused or
ended before it does anything else. No real sleep decides anything; the interleaving is the test's.

A killed attempt dies as a process does: from its stop on, every call of its adapters raises
:class:`Killed` (a ``BaseException``, which no ``except Exception`` catches), so no clean-up of the dead
attempt reaches the ledger, S3 or CloudBlue.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Phase = Literal["before", "after"]
#: How long the test's thread waits for an attempt to pause or end before it calls the case broken.
SETTLE_SECONDS = 60.0


class Killed(BaseException):
    """The attempt's process died (a timeout, out of memory): nothing of it runs any more."""


@dataclass(frozen=True)
class Step:
    """One gate an attempt passed: its ``index`` (1-based, over the attempt's life), the call and the phase."""

    index: int
    op: str
    phase: Phase
    occurrence: int

    def __str__(self) -> str:
        return f"{self.phase} {self.op} #{self.occurrence}"


@dataclass(frozen=True)
class Stop:
    """Where an attempt stops: the ``occurrence``-th time it reaches ``phase`` of ``op``, or its ``index``-th gate."""

    op: str | None = None
    occurrence: int = 1
    phase: Phase = "before"
    index: int | None = None

    def matches(self, step: Step) -> bool:
        if self.index is not None:
            return step.index == self.index
        return (step.op, step.phase, step.occurrence) == (self.op, self.phase, self.occurrence)


class Attempt:
    """One invocation on its own thread, stopping at ``pause`` (to be resumed or killed) or dying at ``kill``."""

    def __init__(self, name: str, *, pause: Stop | None = None, kill: Stop | None = None) -> None:
        self.name = name
        self.pause = pause
        self.kill_at = kill
        self.steps: list[Step] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self.paused_at: Step | None = None
        self._counts: Counter[tuple[str, Phase]] = Counter()
        self._dead = False
        self._kill_on_resume = False
        self._settled = threading.Event()  # paused or ended
        self._go_on = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the attempt's side ---------------------------------------------------------------------

    def gate(self, op: str, phase: Phase) -> None:
        if self._dead:
            raise Killed(f"{self.name} is dead")
        self._counts[(op, phase)] += 1
        step = Step(len(self.steps) + 1, op, phase, self._counts[(op, phase)])
        self.steps.append(step)
        if self.kill_at is not None and self.kill_at.matches(step):
            self._dead = True
            raise Killed(f"{self.name} killed at {step}")
        if self.pause is not None and self.paused_at is None and self.pause.matches(step):
            self.paused_at = step
            self._settled.set()
            self._go_on.wait()
            if self._kill_on_resume:
                self._dead = True
                raise Killed(f"{self.name} killed while paused at {step}")

    # -- the test's side ------------------------------------------------------------------------

    def start(self, target: Callable[[], Any]) -> Attempt:
        """Run ``target`` on the attempt's thread until it pauses or ends."""

        def run() -> None:
            try:
                self.result = target()
            except BaseException as exc:  # noqa: BLE001 - the test reads what ended the attempt
                self.error = exc
            finally:
                self._ended.set()
                self._settled.set()

        self._thread = threading.Thread(target=run, name=f"attempt-{self.name}", daemon=True)
        self._thread.start()
        self._wait(self._settled)
        return self

    def run(self, target: Callable[[], Any]) -> Attempt:
        """Run ``target`` to its end (or its death); an attempt with a pause must be resumed instead."""
        self.start(target)
        if not self.ended:
            raise AssertionError(f"{self.name} paused at {self.paused_at}: resume or kill it")
        return self

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def is_paused(self) -> bool:
        return self.paused_at is not None and not self.ended

    def resume(self) -> Attempt:
        """Let a paused attempt go on (its answer arrives now, late) until it ends."""
        self._go_on.set()
        self._wait(self._ended)
        return self

    def kill(self) -> Attempt:
        """Kill a paused attempt where it stands."""
        self._kill_on_resume = True
        return self.resume()

    @property
    def killed(self) -> bool:
        return isinstance(self.error, Killed)

    def _wait(self, event: threading.Event) -> None:
        if not event.wait(SETTLE_SECONDS):
            raise AssertionError(
                f"{self.name} neither paused nor ended in {SETTLE_SECONDS} s (steps: {self.steps[-5:]})"
            )


class Gated:
    """``target`` (an adapter) whose every method call passes ``attempt``'s gates, before and after."""

    def __init__(self, name: str, target: Any, attempt: Attempt) -> None:
        self._name = name
        self._target = target
        self._attempt = attempt

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._target, attribute)
        if not callable(value):
            return value
        op = f"{self._name}.{attribute}"
        attempt = self._attempt

        def gated(*args: Any, **kwargs: Any) -> Any:
            attempt.gate(op, "before")
            try:
                result = value(*args, **kwargs)
            except Exception:
                attempt.gate(op, "after")  # the error answer, late or never
                raise
            attempt.gate(op, "after")
            return result

        return gated
