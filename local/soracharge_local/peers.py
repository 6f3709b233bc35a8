"""Who the local run talks to: the built-in simulators, or real (or any compatible) servers from the environment.

- Soracom: ``SORACOM_ENDPOINT`` (every coverage) or ``SORACOM_ENDPOINT_JP`` / ``SORACOM_ENDPOINT_G`` (one
  each) + ``SORACOM_AUTH_KEY_ID`` + ``SORACOM_AUTH_KEY``, else a simulator per coverage (two hosts, as
  Soracom has: api.soracom.io and g.api.soracom.io).
- CloudBlue: ``APS_ENDPOINT`` + (``APS_OAUTH_CONSUMER_KEY`` + ``APS_OAUTH_CONSUMER_SECRET`` or
  ``APS_TOKEN``) [+ ``APS_RESOURCE_ID``], else the simulator.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

from soracharge.errors import ConfigurationError
from soracharge.models.coverage import Coverage

from soracharge_local.engine import CloudBlueAccess, SoracomAccess

SIMULATOR_AUTH_KEY_ID = "keyId-simulator"
SIMULATOR_AUTH_KEY = "secret-simulator"


def _url(name: str) -> str | None:
    """The http(s) URL the variable ``name`` holds, if set; a value that is not one is a ConfigurationError."""
    value = os.environ.get(name)
    if value and not value.startswith(("https://", "http://")):
        raise ConfigurationError(f"invalid configuration: {name}: must be an http(s) URL, got {value!r}")
    return value or None


def soracom_access(stack: ExitStack, coverages: tuple[Coverage, ...] = ("jp",)) -> SoracomAccess:
    """Soracom for ``coverages``: the servers the environment names, else a simulator each."""
    shared = _url("SORACOM_ENDPOINT")
    own: dict[str, str] = {c: url for c in coverages if (url := _url(f"SORACOM_ENDPOINT_{c.upper()}"))}
    if shared or own:
        named = "SORACOM_ENDPOINT" if shared else " and ".join(f"SORACOM_ENDPOINT_{c.upper()}" for c in own)
        missing = [c for c in coverages if c not in own]
        if missing and not shared:
            raise ConfigurationError(
                f"{named} is set, but not SORACOM_ENDPOINT_{missing[0].upper()} (or SORACOM_ENDPOINT): where is "
                f"Soracom's {missing[0]} coverage?"
            )
        key_id, key = os.environ.get("SORACOM_AUTH_KEY_ID"), os.environ.get("SORACOM_AUTH_KEY")
        if not key_id or not key:
            raise ConfigurationError(f"{named} is set, so SORACOM_AUTH_KEY_ID and SORACOM_AUTH_KEY must be set too")
        return SoracomAccess(endpoint=shared or own[coverages[0]], auth_key_id=key_id, auth_key=key, endpoints=own)
    from soracharge_local.simulators import SoracomSimulator

    endpoints: dict[str, str] = {}
    for coverage in coverages:
        simulator = SoracomSimulator(coverage=coverage, auth_key_id=SIMULATOR_AUTH_KEY_ID, auth_key=SIMULATOR_AUTH_KEY)
        endpoints[coverage] = simulator.start()
        stack.callback(simulator.stop)
    return SoracomAccess(
        endpoint=endpoints[coverages[0]],
        auth_key_id=SIMULATOR_AUTH_KEY_ID,
        auth_key=SIMULATOR_AUTH_KEY,
        endpoints=endpoints if len(coverages) > 1 else {},
    )


def cloudblue_access(stack: ExitStack) -> CloudBlueAccess:
    endpoint = _url("APS_ENDPOINT")
    if endpoint:
        key, secret = os.environ.get("APS_OAUTH_CONSUMER_KEY"), os.environ.get("APS_OAUTH_CONSUMER_SECRET")
        token = os.environ.get("APS_TOKEN")
        if not (key and secret) and not token:
            raise ConfigurationError(
                "APS_ENDPOINT is set, so APS_OAUTH_CONSUMER_KEY and APS_OAUTH_CONSUMER_SECRET, or APS_TOKEN, "
                "must be set too"
            )
        return CloudBlueAccess(
            endpoint=endpoint,
            consumer_key=key if key and secret else None,
            consumer_secret=secret if key and secret else None,
            aps_token=None if key and secret else token,
            resource_id=os.environ.get("APS_RESOURCE_ID") or None,
        )
    from soracharge_local.simulators import CloudBlueSimulator

    simulator = CloudBlueSimulator()
    base_url = simulator.start()
    stack.callback(simulator.stop)
    return CloudBlueAccess(
        endpoint=base_url,
        consumer_key=simulator.consumer_key,
        consumer_secret=simulator.consumer_secret,
        simulated=True,
    )
