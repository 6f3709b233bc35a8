"""`soracharge export` run as a person runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from soracharge_local.cli import INSTANT_WAITS
from soracharge_local.simulators import SoracomSimulator

from tests.integration.conftest import LAST_MONTH
from tests.processes import rest_after_ctrl_c

SORACHARGE = str(Path(sys.executable).parent / "soracharge")
MAPPING = str(Path(__file__).resolve().parents[2] / "examples" / "mapping.example.yaml")
#: The environment as the shell gave it, read at collection: the in-process Lambdas of other tests set
#: their functions' variables (APS_ENDPOINT, ...) in os.environ while they run, on threads of their own.
SHELL_ENVIRONMENT = {k: v for k, v in os.environ.items() if not k.startswith(("SORACOM_", "APS_"))}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environment = dict(SHELL_ENVIRONMENT)
    environment[INSTANT_WAITS] = "1"  # the chain as a person runs it, without sleeping through its Wait states
    environment.update(env or {})
    return subprocess.run(  # noqa: S603 - our own console script
        [SORACHARGE, *args], capture_output=True, text=True, env=environment, timeout=timeout, check=False
    )


def test_export_on_the_built_in_simulator_shows_each_state_and_where_the_csv_landed(tmp_path):
    out = tmp_path / "export.csv"
    done = run_cli("export", "--month", LAST_MONTH, "--out", str(out))
    assert done.returncode == 0, done.stderr
    for state in ("GetBill", "StartExport", "WaitForExport", "PollExport", "StoreExport"):
        assert state in done.stdout
    assert f"CSV stored at s3://soracharge-data-123456789012/exports/{LAST_MONTH}/fe_" in done.stdout
    assert "exportedFileId" in done.stdout
    assert "downloadUrl" in done.stdout
    # The saved copy is byte for byte what the simulator serves for that month (it is deterministic).
    assert out.read_bytes() == SoracomSimulator(auth_key_id="keyId-simulator", auth_key="x").csv_bytes(LAST_MONTH)


def test_export_talks_to_the_server_named_by_soracom_endpoint_and_fails_with_its_reason():
    with SoracomSimulator(auth_key_id="keyId-real", auth_key="secret-real") as server:
        base_url = server.base_url
        done = run_cli(
            "export",
            "--month",
            LAST_MONTH,
            env={"SORACOM_ENDPOINT": server.base_url, "SORACOM_AUTH_KEY_ID": "keyId-real", "SORACOM_AUTH_KEY": "wrong"},
        )
        assert server.count("auth") == 1
    assert done.returncode == 1
    assert re.search(rf"^Soracom: +{re.escape(base_url)}$", done.stdout, re.MULTILINE)
    assert "Export failed: SoracomAuthError" in done.stderr
    assert "Soracom refused AuthKey keyId-real" in done.stderr
    assert "wrong" not in done.stdout + done.stderr


def test_soracom_endpoint_without_credentials_is_refused_before_anything_runs():
    done = run_cli("export", "--month", LAST_MONTH, env={"SORACOM_ENDPOINT": "http://127.0.0.1:9"})
    assert done.returncode == 2
    assert "SORACOM_AUTH_KEY_ID and SORACOM_AUTH_KEY must be set too" in done.stderr


def test_a_malformed_or_unbillable_month_is_refused_with_a_clear_message():
    malformed = run_cli("export", "--month", "2022-08")
    assert malformed.returncode == 2
    assert "month must be yyyyMM" in malformed.stderr
    too_old = run_cli("export", "--month", "202208")
    assert too_old.returncode == 2
    assert "202208 is older than the 18 months Soracom keeps bills for" in too_old.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("SORACOM_TIMEOUT_SECONDS", "abc", "SORACOM_TIMEOUT_SECONDS: Input should be a valid number"),
        ("IMPORT_CONCURRENCY", "0", "IMPORT_CONCURRENCY: Input should be greater than or equal to 1, got '0'"),
        ("APS_MAX_ATTEMPTS", "99", "APS_MAX_ATTEMPTS: Input should be less than or equal to 10, got '99'"),
        ("SORACOM_COVERAGE_TYPE", "eu", "SORACOM_COVERAGE_TYPE"),
        ("APS_ENDPOINT", "cloudblue.example.com", "APS_ENDPOINT: must be an http(s) URL, got 'cloudblue.example.com'"),
        ("SORACOM_ENDPOINT", "api.soracom.io", "SORACOM_ENDPOINT: must be an http(s) URL, got 'api.soracom.io'"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_variable_and_its_value_before_anything_runs(variable, value, said):
    done = run_cli(
        "run", "--month", LAST_MONTH, "--mapping", MAPPING, env={variable: value, "APS_TOKEN": "t"}, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert "Local stack deployed" not in done.stdout


@pytest.mark.parametrize("command", ["run", "import"])
def test_a_mapping_the_import_would_refuse_exits_2_naming_its_near_miss_before_anything_runs(tmp_path, command):
    # The README's mapping with a trailing space typed after a customer that a device and an operator name: the
    # import function refuses it (MappingError), so a command must refuse it before it deploys a stack for it.
    text = Path(MAPPING).read_text(encoding="utf-8")
    typo = tmp_path / "mapping.yaml"
    typo.write_text(text.replace('"Northwind Traders":', '"Northwind Traders ":', 1), encoding="utf-8")
    bill = tmp_path / "bill.csv"
    bill.write_text("not read: the mapping is refused first\n", encoding="utf-8")
    given = ["run", "--month", LAST_MONTH] if command == "run" else ["import", str(bill), "--month", LAST_MONTH]
    done = run_cli(*given, "--mapping", str(typo), "--out", str(tmp_path / "out"), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"error: {typo}: line "), first
    assert "names customer 'Northwind Traders', not one of customer.subscriptions" in first
    assert (
        "customer.subscriptions has 'Northwind Traders ', which differs from 'Northwind Traders' only in spaces, "
        "case or width: write the two alike"
    ) in first
    assert "Local stack deployed" not in done.stdout
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_a_file_exits_2_saying_so(tmp_path):
    taken = tmp_path / "out"
    taken.write_text("a file")
    done = run_cli("run", "--month", LAST_MONTH, "--mapping", MAPPING, "--out", str(taken))
    assert done.returncode == 2
    assert f"--out {taken} is a file, not a folder" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("to", ["the process", "a server's thread", "a background job", "the process, by kill"])
def test_simulate_stops_cleanly_on_ctrl_c(to):
    # Ctrl-C once it serves, to the process or (as the kernel may deliver it) to one of its server threads: the
    # handler runs on the main thread, which must see it soon, stop every server and exit 0. Likewise when it was
    # started as a shell without job control starts `soracharge simulate &` (SIGINT ignored, which Python would
    # leave so), and on `kill` (SIGTERM)
    command = [SORACHARGE, "simulate", "--coverage", "jp", "--coverage", "g"]
    ports = ["--port", "0", "--global-port", "0", "--cloudblue-port", "0"]
    if to == "a background job":
        command = [*IGNORING_SIGINT, *command]
        assert _sigint_ignored(IGNORING_SIGINT), "what the shell starts so inherits SIGINT ignored"
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [*command, *ports], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert process.stdout is not None
    seen = [process.stdout.readline()]
    while not seen[-1].startswith("  sessions and charges:"):
        seen.append(process.stdout.readline())
        assert seen[-1], f"it ended before saying where it serves: {seen}"
    if to in ("the process", "a background job"):
        os.kill(process.pid, signal.SIGINT)
    elif to == "the process, by kill":
        os.kill(process.pid, signal.SIGTERM)
    else:
        threads = sorted(int(task.name) for task in Path(f"/proc/{process.pid}/task").iterdir())
        assert len(threads) >= 4, "the main thread and a thread per server (two Soracom, one CloudBlue)"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.tgkill(process.pid, threads[-1], signal.SIGINT) == 0, os.strerror(ctypes.get_errno())
    rest = rest_after_ctrl_c(process)
    assert process.returncode == 0, "".join(seen) + rest
    assert "Aborted" not in rest


#: Runs its arguments as a shell without job control runs a background job: with SIGINT ignored.
IGNORING_SIGINT = ["bash", "-c", 'trap "" INT && exec "$@"', "bash"]


def _sigint_ignored(wrapper: list[str]) -> bool:
    """Whether a process started by ``wrapper`` ignores SIGINT (SigIgn in /proc/self/status: bit n-1, signal n)."""
    status = subprocess.run([*wrapper, "cat", "/proc/self/status"], capture_output=True, text=True, check=True).stdout  # noqa: S603
    mask = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return bool(mask >> (signal.SIGINT - 1) & 1)
