"""The local CLI against a CloudBlue that outlives each command: a month is never imported into it twice."""

from __future__ import annotations

import json
from pathlib import Path

from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

from tests.integration.conftest import LAST_MONTH
from tests.integration.test_cli import run_cli
from tests.unit.test_local_cli import saved_report

MAPPING = str(Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml")


def environment(soracom: SoracomSimulator, cloudblue: CloudBlueSimulator, state: Path) -> dict[str, str]:
    """Both servers named as real ones are: by their endpoints and credentials."""
    return {
        "SORACOM_ENDPOINT": soracom.base_url,
        "SORACOM_AUTH_KEY_ID": "keyId-server",
        "SORACOM_AUTH_KEY": "key-server",
        "APS_ENDPOINT": cloudblue.base_url,
        "APS_OAUTH_CONSUMER_KEY": cloudblue.consumer_key,
        "APS_OAUTH_CONSUMER_SECRET": cloudblue.consumer_secret,
        "APS_RESOURCE_ID": cloudblue.resource_id,
        "SORACHARGE_STATE_DIR": str(state),
    }


def test_run_twice_against_the_same_cloudblue_imports_the_month_once_and_the_second_says_it_did_nothing(tmp_path):
    with (
        SoracomSimulator(auth_key_id="keyId-server", auth_key="key-server") as soracom,
        CloudBlueSimulator() as cloudblue,
    ):
        env = environment(soracom, cloudblue, tmp_path / "state")
        first = run_cli(
            "run", "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(tmp_path / "1"), env=env, timeout=300
        )
        second = run_cli(
            "run", "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(tmp_path / "2"), env=env, timeout=300
        )
        imported = run_cli(
            "import", str(next((tmp_path / "1" / LAST_MONTH).glob("*-run/fe_*.csv"))), "--month", LAST_MONTH,
            "--mapping", MAPPING, "--out", str(tmp_path / "3"), env=env, timeout=300,
        )  # fmt: skip
        closed = [s for s in cloudblue.sessions() if s.closed_at is not None]

    # Then CloudBlue holds one closed session, with the month's charges once
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(closed) == 1
    assert (
        len(closed[0].charges) == json.loads(saved_report(tmp_path / "1", LAST_MONTH).read_text())["counts"]["charges"]
    )
    # And the second run says it did nothing; so does an import of the same file
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Nothing done: this month's bill is imported into this CloudBlue already." in second.stdout
    assert "Import DUPLICATE: the same bytes were already imported for the month" in second.stdout
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "Import DUPLICATE" in imported.stdout
    # And each command named the file that keeps the ledger
    assert "(0 bills imported into this CloudBlue before)" in first.stdout
    assert "(1 bills imported into this CloudBlue before)" in second.stdout
    assert list((tmp_path / "state" / "ledger").glob("127.0.0.1-*.json"))


def test_a_state_folder_that_cannot_be_written_is_refused_before_anything_is_sent(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the state folder should be")
    with CloudBlueSimulator() as cloudblue, SoracomSimulator(auth_key_id="keyId-server", auth_key="key-server") as s:
        done = run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, env=environment(s, cloudblue, blocked))
        sessions = cloudblue.sessions()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot be written" in done.stderr
    assert "set SORACHARGE_STATE_DIR to a folder this user can write" in done.stderr
    assert sessions == []


def test_runs_on_the_built_in_cloudblue_simulator_keep_no_ledger(tmp_path):
    env = {"SORACHARGE_STATE_DIR": str(tmp_path / "state")}
    done = run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(tmp_path), env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ledger:" not in done.stdout
    assert not (tmp_path / "state").exists()
