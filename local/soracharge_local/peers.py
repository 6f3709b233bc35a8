"""Who the local run talks to: the built-in simulators, or real (or any compatible) servers from the environment.

- Soracom: ``SORACOM_ENDPOINT`` (every coverage) or ``SORACOM_ENDPOINT_JP`` / ``SORACOM_ENDPOINT_G`` (one
  each) + ``SORACOM_AUTH_KEY_ID`` + ``SORACOM_AUTH_KEY``, else a simulator per coverage (two hosts, as
  Soracom has: api.soracom.io and g.api.soracom.io).
- CloudBlue: ``APS_ENDPOINT`` + (``APS_OAUTH_CONSUMER_KEY`` + ``APS_OAUTH_CONSUMER_SECRET`` or
  ``APS_TOKEN``) [+ ``APS_RESOURCE_ID``], else the simulator.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from contextlib import ExitStack

from soracharge.errors import ConfigurationError
from soracharge.models.accounts import Account
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


def soracom_access(
    stack: ExitStack,
    coverages: tuple[Coverage, ...] = ("jp",),
    accounts: tuple[Account, ...] = (),
    customers: Mapping[str, str] | None = None,
) -> SoracomAccess:
    """Soracom for ``coverages`` and the operators ``accounts`` lists: the servers the environment names, else
    a simulator each. A listed operator reached with its own AuthKey takes it from ``SORACOM_AUTH_KEY_ID_<id>``
    and ``SORACOM_AUTH_KEY_<id>`` on a real server; the simulator makes one. The simulator bills each listed
    operator's own SIMs, every one tagged with the customer ``customers`` names for it (an operator per end
    customer), else with its usual customers."""
    shared = _url("SORACOM_ENDPOINT")
    every = tuple(dict.fromkeys([*coverages, *(c for account in accounts for c in account.coverages)]))
    own_keys = [account.operator for account in accounts if account.switch_user is None]
    own: dict[str, str] = {c: url for c in every if (url := _url(f"SORACOM_ENDPOINT_{c.upper()}"))}
    if shared or own:
        named = "SORACOM_ENDPOINT" if shared else " and ".join(f"SORACOM_ENDPOINT_{c.upper()}" for c in own)
        missing = [c for c in every if c not in own]
        if missing and not shared:
            raise ConfigurationError(
                f"{named} is set, but not SORACOM_ENDPOINT_{missing[0].upper()} (or SORACOM_ENDPOINT): where is "
                f"Soracom's {missing[0]} coverage?"
            )
        key_id, key = os.environ.get("SORACOM_AUTH_KEY_ID"), os.environ.get("SORACOM_AUTH_KEY")
        if not key_id or not key:
            raise ConfigurationError(f"{named} is set, so SORACOM_AUTH_KEY_ID and SORACOM_AUTH_KEY must be set too")
        keys: dict[str, tuple[str, str]] = {}
        for operator in own_keys:
            pair = os.environ.get(f"SORACOM_AUTH_KEY_ID_{operator}"), os.environ.get(f"SORACOM_AUTH_KEY_{operator}")
            if not pair[0] or not pair[1]:
                raise ConfigurationError(
                    f"SoracomAccounts reaches operator {operator} with its own AuthKey (no switchUser), so "
                    f"SORACOM_AUTH_KEY_ID_{operator} and SORACOM_AUTH_KEY_{operator} must be set"
                )
            keys[operator] = (pair[0], pair[1])
        return SoracomAccess(
            endpoint=shared or own[every[0]], auth_key_id=key_id, auth_key=key, endpoints=own, operator_keys=keys
        )
    from soracharge_local.simulators import SoracomSimulator
    from soracharge_local.simulators.soracom import SimulatedOperator

    primary = simulated_operator_id(SIMULATOR_AUTH_KEY_ID)
    simulated = {
        account.operator: SimulatedOperator(
            trusts=frozenset({primary}) if account.switch_user is not None else frozenset(),
            customer=(customers or {}).get(account.operator),
            auth_key=None if account.switch_user is not None else simulated_operator_key(account.operator),
        )
        for account in accounts
    }
    endpoints: dict[str, str] = {}
    for coverage in every:
        served = {name: other for name, other in simulated.items() if _listed_on(accounts, name, coverage)}
        simulator = SoracomSimulator(
            coverage=coverage, auth_key_id=SIMULATOR_AUTH_KEY_ID, auth_key=SIMULATOR_AUTH_KEY, operators=served
        )
        endpoints[coverage] = simulator.start()
        stack.callback(simulator.stop)
    return SoracomAccess(
        endpoint=endpoints[every[0]],
        auth_key_id=SIMULATOR_AUTH_KEY_ID,
        auth_key=SIMULATOR_AUTH_KEY,
        endpoints=endpoints if len(every) > 1 else {},
        operator_keys={operator: simulated_operator_key(operator) for operator in own_keys},
    )


def simulated_operator_id(auth_key_id: str) -> str:
    """The operator id the simulator gives the operator of ``auth_key_id`` (its own, the primary)."""
    return "OP" + f"{int(hashlib.sha256(auth_key_id.encode()).hexdigest(), 16) % 10**10:010d}"


def simulated_operator_key(operator: str) -> tuple[str, str]:
    """The AuthKey the simulator gives a listed operator reached with its own."""
    return f"keyId-{operator.lower()}", f"secret-{operator.lower()}"


def _listed_on(accounts: tuple[Account, ...], operator: str, coverage: Coverage) -> bool:
    return any(a.operator == operator and coverage in a.coverages for a in accounts)


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
