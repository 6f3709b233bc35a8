"""A simulator's ``sleep`` the test controls: a slowed answer is held until the test releases it."""

from __future__ import annotations

import threading


class HeldAnswers:
    """The simulator's ``sleep``: a slowed answer waits until the test releases it, not for real time to pass.

    ``holding`` is set once an answer is held (the CloudBlue simulator slows an answer after doing the work);
    ``delays`` are the ``slow_seconds`` asked for, one per slowed answer.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.holding = threading.Event()
        self._released = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.holding.set()
        self._released.wait(60)  # only a bound for a test that failed before releasing it

    def release(self) -> None:
        self._released.set()
