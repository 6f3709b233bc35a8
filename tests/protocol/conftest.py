from __future__ import annotations

from collections.abc import Iterator

import pytest
from soracharge_local.simulators import CloudBlueSimulator


@pytest.fixture(scope="module")
def cloudblue() -> Iterator[CloudBlueSimulator]:
    """CloudBlue as its published rules allow it to be: repeated extHash kept, so a double shows."""
    with CloudBlueSimulator() as simulator:
        assert not simulator.ignore_repeated_ext_hash
        yield simulator


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
