"""Local stand-ins for the external services soracharge talks to (real HTTP servers on loopback).

``SoracomSimulator`` and ``SoracomFaults`` are imported lazily, so that
``python -m soracharge_local.simulators.soracom`` does not import its own module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soracharge_local.simulators.soracom import SoracomFaults, SoracomSimulator

__all__ = ["SoracomFaults", "SoracomSimulator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from soracharge_local.simulators import soracom

        return getattr(soracom, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
