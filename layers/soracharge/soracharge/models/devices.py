"""What a billing CSV row is billed for: a SIM (its ``imsi``), a device (one of :data:`DEVICE_COLUMNS`), or nothing.

Soracom's detailed billing CSV names a row's SIM in ``imsi``; a row of a device has an empty ``imsi``
and the device's id in one of the device columns below, each present only when the operator uses
that kind of device. A row names at most one of them (a row naming two is refused: which one is
billed would be a guess); a row naming none is "not tied to a SIM or device" (a VPG, the free tier,
a discount of the whole operator).

A charge's identity (``logic/charges.py``) names its thing: the imsi as it is (so a SIM's charges keep
the ids they always had), a device as ``<column>:<id>`` (``soraCamDeviceId:7CDDE9000001``), which no
imsi (digits only) can be.
"""

from __future__ import annotations

import re
from typing import Final

#: The device columns Soracom's CSV reference lists, with what a person calls such a device.
DEVICE_COLUMNS: Final[dict[str, str]] = {
    "deviceId": "Inventory device",
    "gadgetId": "gadget",
    "loraDeviceId": "LoRa device",
    "loraGatewayId": "LoRa gateway",
    "sigfoxDeviceId": "Sigfox device",
    "soraCamDeviceId": "SoraCam camera",
}

#: A device id: letters, digits and ``. _ : @ / + -``, no space, quote or comma (Soracom's ids are hex,
#: ``d-…``, ``wimax:…`` and the like): a stray space or a pasted quote is refused, never billed as another device.
DEVICE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}", re.ASCII)
#: The same rule for polars (its regex is anchored by hand).
DEVICE_ID_PATTERN: Final = rf"^{DEVICE_ID.pattern}$"


def device_thing(column: str, device: str) -> str:
    """The identity part of a device's charges: ``<column>:<id>``."""
    return f"{column}:{device}"


def split_thing(thing: str | None) -> tuple[str, str] | None:
    """``(device column, id)`` of a device's identity part; None for a SIM's imsi or for nothing ("" or None)."""
    if not thing or thing.isdigit():
        return None
    column, _, device = thing.partition(":")
    return column, device


#: The identity part of a customer's share of a shared cost (``logic/shares.py``) begins so.
SHARE = "share"


def describe_thing(thing: str | None) -> str:
    """How a charge's description names its thing: ``IMSI 4401…``, ``SoraCam camera 7CDDE9000001``, or ""."""
    if not thing:
        return ""
    device = split_thing(thing)
    if device is None:
        return f"IMSI {thing}"
    if device[0] == SHARE:
        return f"{device[1]}'s share"
    return f"{DEVICE_COLUMNS[device[0]]} {device[1]}"
