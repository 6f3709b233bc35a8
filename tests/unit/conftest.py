"""The protocol's unit world for the use-case tests (``tests/protocol/world.py``): one CloudBlue simulator per
module (it keeps repeated extHash, as a real CloudBlue may), a fresh ledger, store and clock per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from soracharge_local.simulators import CloudBlueSimulator

from tests.protocol.world import ProtocolWorld, protocol_world


@pytest.fixture(scope="module")
def cloudblue() -> Iterator[CloudBlueSimulator]:
    with CloudBlueSimulator() as simulator:  # it keeps repeated extHash: a double shows as one
        yield simulator


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def world(cloudblue: CloudBlueSimulator) -> Iterator[ProtocolWorld]:
    with protocol_world(cloudblue) as made:
        yield made
