"""The fuzz tests: their Hypothesis profile is registered in :mod:`tests.fuzz.strategies` and applied by
each test through :func:`tests.fuzz.strategies.fuzz`.

Set ``SORACHARGE_FUZZ_SCALE`` (an integer, default 1) to multiply every test's example count for a
longer local run, and ``SORACHARGE_FUZZ_RANDOM=1`` to explore new examples instead of the fixed ones.
"""
