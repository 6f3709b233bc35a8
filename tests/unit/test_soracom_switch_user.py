"""Many operators: the real client acting in another operator through Switch User, against the Soracom simulator.

An operator per end customer trusts the provider's own operator; the provider's one credential switches into
each and reads that operator's bill, never another's: an answer for another operator is refused, so is an
operator that does not trust the caller, and a credential that belongs to another operator than configured.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date

import pytest
from pydantic import SecretStr
from soracharge.adapters.soracom import OperatorAccess, SoracomClient
from soracharge.errors import SoracomAuthError
from soracharge.models.soracom import SoracomCredentials
from soracharge_local.simulators import SoracomSimulator
from soracharge_local.simulators.soracom import SimulatedOperator

TODAY = date(2026, 11, 22)
KEY = SoracomCredentials(auth_key_id="keyId-provider", auth_key=SecretStr("secret-provider"))
CONTOSO, FABRIKAM, STRANGER = "OP0000000101", "OP0000000102", "OP0000000199"


@pytest.fixture(scope="module")
def soracom() -> Iterator[SoracomSimulator]:
    provider = SoracomSimulator(today=TODAY, auth_key_id="keyId-provider", auth_key="secret-provider").operator_id
    operators = {
        CONTOSO: SimulatedOperator(trusts=frozenset({provider}), customer="Contoso", sims=3),
        FABRIKAM: SimulatedOperator(trusts=frozenset({provider}), customer="Fabrikam", sims=5),
        STRANGER: SimulatedOperator(trusts=frozenset({"OP0000000000"})),
    }
    with SoracomSimulator(
        today=TODAY, auth_key_id="keyId-provider", auth_key="secret-provider", operators=operators
    ) as sim:
        sim.polls_until_ready = 0
        yield sim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(sim: SoracomSimulator, operator: OperatorAccess | None = None, **kwargs: object) -> SoracomClient:
    return SoracomClient(
        base_url=sim.base_url,
        credentials=lambda: KEY,
        download_url_patterns=("http://127.0.0.1",),
        operator=operator,
        **kwargs,  # type: ignore[arg-type]
    )


def exported(api: SoracomClient, month: str) -> bytes:
    started = api.start_export(month)
    ready = api.get_exported_file(started.exportedFileId)
    assert ready.url is not None
    sink = io.BytesIO()
    api.download(ready.url, sink)
    return sink.getvalue()


def test_one_credential_switches_into_each_operator_and_reads_that_operator_s_bill_only(soracom):
    own = client(soracom, OperatorAccess(operator_id=soracom.operator_id))
    contoso = client(soracom, OperatorAccess(operator_id=CONTOSO, switch_user="billing"))
    fabrikam = client(soracom, OperatorAccess(operator_id=FABRIKAM, switch_user="billing"))
    bills = {name: api.get_bill("202610").amount for name, api in (("own", own), ("c", contoso), ("f", fabrikam))}
    assert bills == {
        "own": soracom.bill("202610")["amount"],
        "c": soracom.bill("202610", CONTOSO)["amount"],
        "f": soracom.bill("202610", FABRIKAM)["amount"],
    }
    assert len(set(bills.values())) == 3
    body = exported(contoso, "202610")
    assert body == soracom.csv_bytes("202610", CONTOSO)
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert {row["customer"] for row in rows if row["imsi"] or row["soraCamDeviceId"]} == {"Contoso"}
    own_imsis = {row["imsi"] for row in csv.DictReader(io.StringIO(soracom.csv_bytes("202610").decode("utf-8-sig")))}
    assert not ({row["imsi"] for row in rows} - {""}) & own_imsis, "another operator's SIMs are its own"


def test_an_export_of_one_operator_cannot_be_polled_from_another(soracom):
    contoso = client(soracom, OperatorAccess(operator_id=CONTOSO, switch_user="billing"))
    fabrikam = client(soracom, OperatorAccess(operator_id=FABRIKAM, switch_user="billing"))
    started = contoso.start_export("202610")
    with pytest.raises(Exception, match="does not know the export"):
        fabrikam.get_exported_file(started.exportedFileId)


def test_an_operator_that_does_not_trust_the_caller_is_refused_naming_both(soracom):
    api = client(soracom, OperatorAccess(operator_id=STRANGER, switch_user="billing"))
    with pytest.raises(SoracomAuthError, match=rf"operator {STRANGER} refused user 'billing' of operator OP\d+"):
        api.get_bill("202610")


def test_a_credential_of_another_operator_than_configured_reads_nothing(soracom):
    api = client(soracom, OperatorAccess(operator_id=CONTOSO))  # the provider's own key, configured as Contoso's
    with pytest.raises(SoracomAuthError, match=rf"belongs to operator {soracom.operator_id}, not {CONTOSO}"):
        api.get_bill("202610")


def test_listing_the_credentials_own_operator_as_one_to_switch_into_is_refused_before_any_bill_is_read(soracom):
    """Its bill is the stack's own: exported under both names, it would be billed twice."""
    soracom.clear_requests()
    listed = {soracom.operator_id: "which SoracomAccounts lists as another operator"}
    api = client(soracom, OperatorAccess(operator_id=soracom.operator_id, switch_user="billing", never=lambda: listed))
    with pytest.raises(
        SoracomAuthError,
        match=rf"AuthKey keyId-provider belongs to operator {soracom.operator_id}, which SoracomAccounts lists as "
        "another operator: its bill exported under two names would be billed twice",
    ):
        api.get_bill("202610")
    assert [r.kind for r in soracom.requests] == ["auth"]  # no switch, no bill read


def test_a_switched_token_lasts_an_hour_at_most_and_is_renewed_before_it_lapses(soracom):
    clock = Clock()
    api = client(
        soracom, OperatorAccess(operator_id=CONTOSO, switch_user="billing"), token_timeout_seconds=86400, clock=clock
    )
    soracom.clear_requests()
    api.get_bill("202610")
    clock.now += 3000  # within the hour: the same token
    api.get_bill("202610")
    assert soracom.count("switchUser") == 1
    clock.now += 600  # past the hour less the margin: switched again before Soracom would refuse it
    api.get_bill("202610")
    assert soracom.count("switchUser") == 2
    (first, *_) = [r for r in soracom.requests if r.kind == "switchUser"]
    assert first.status == 200
