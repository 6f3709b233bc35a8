"""The fuzz tests' Hypothesis profile: deterministic (CI sees the same examples every run), no deadline.

The profile is registered here and applied by each test through :func:`tests.fuzz.strategies.fuzz`
(``settings(parent=...)``) rather than loaded globally, so the other suites keep their own settings.
Set ``SORACHARGE_FUZZ_SCALE`` (an integer, default 1) to multiply every test's example count for a
longer local run, and ``SORACHARGE_FUZZ_RANDOM=1`` to explore new examples instead of the fixed ones.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "soracharge-fuzz",
    derandomize=os.environ.get("SORACHARGE_FUZZ_RANDOM", "") != "1",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
