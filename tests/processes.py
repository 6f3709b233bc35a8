"""The end of a process a test started in a session of its own (``start_new_session=True``) after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def rest_after_ctrl_c(process: subprocess.Popen[str], *, within: float = 30) -> str:
    """The rest of its output once it ended; one still running ``within`` seconds later is killed, with its whole
    group (servers left running would hold their ports for the tests after this one), and fails the test."""
    try:
        rest, _ = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{process.args!r} did not stop within {within} s of Ctrl-C")
    return rest
