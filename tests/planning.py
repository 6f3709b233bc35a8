"""``plan_import`` for a test's own expectations, never while an in-process Lambda changes ``os.environ``.

The local engine runs each Lambda on a moto thread with its function's variables set in the process's
environment (``soracharge_local.lambda_runner.ENVIRONMENT_LOCK``); polars reads its ``POLARS_*`` variables
natively at each query, and libc's setenv may free the environment a concurrent getenv reads: a test that
planned on its own thread while a Lambda started died of SIGSEGV. Every test plans through :func:`planned`.
"""

from __future__ import annotations

from typing import Any

from soracharge.logic.charges import plan_import
from soracharge.models.charges import ImportPlan
from soracharge_local.lambda_runner import ENVIRONMENT_LOCK


def planned(*args: Any, **kwargs: Any) -> ImportPlan:
    """``plan_import(*args, **kwargs)``, holding the lock every in-process Lambda holds while its variables are set."""
    with ENVIRONMENT_LOCK:
        return plan_import(*args, **kwargs)
