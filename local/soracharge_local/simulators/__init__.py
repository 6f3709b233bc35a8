"""Local stand-ins for the external services soracharge talks to (real HTTP servers on loopback).

``SoracomSimulator``/``SoracomFaults`` and ``CloudBlueSimulator``/``CloudBlueFaults`` are imported
lazily, so that ``python -m soracharge_local.simulators.<name>`` does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soracharge_local.simulators.cloudblue import CloudBlueFaults, CloudBlueSimulator
    from soracharge_local.simulators.soracom import SoracomFaults, SoracomSimulator

__all__ = ["CloudBlueFaults", "CloudBlueSimulator", "SoracomFaults", "SoracomSimulator"]

_MODULES = {
    "CloudBlueFaults": "cloudblue",
    "CloudBlueSimulator": "cloudblue",
    "SoracomFaults": "soracom",
    "SoracomSimulator": "soracom",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is not None:
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
