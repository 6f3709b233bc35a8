"""``soracharge``: run the flows on this machine (moto as AWS, simulators or real APIs as peers).

- ``soracharge export --month 202610 [--out FILE]`` runs the export-billing state machine of
  ``template.yaml`` locally, shows each state as it runs, then the outputs and where the CSV landed.
  It talks to the built-in Soracom simulator unless ``SORACOM_ENDPOINT`` is set, in which case
  ``SORACOM_AUTH_KEY_ID`` and ``SORACOM_AUTH_KEY`` are required and that server is used.
- ``soracharge simulate`` starts the Soracom simulator on its own, for people to poke at.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from soracharge.errors import InvalidInputError
from soracharge.models.months import ensure_billable, parse_month, previous_month

from soracharge_local.engine import ExecutionResult, LocalCloud, SoracomAccess

app = typer.Typer(
    help="soracharge: a Soracom monthly bill becomes charges in CloudBlue. Runs locally on moto.",
    no_args_is_help=True,
    add_completion=False,
)

EXPORT_STATE_MACHINE = "ExportBillingStateMachine"
Coverage = Literal["jp", "g"]
SIMULATOR_AUTH_KEY_ID = "keyId-simulator"
SIMULATOR_AUTH_KEY = "secret-simulator"


def _today() -> datetime:
    return datetime.now(UTC)


@app.command()
def export(
    month: Annotated[
        str | None,
        typer.Option(help="Billing month, yyyyMM. Default: the previous month, as the monthly schedule does."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also save the stored CSV to this file.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the functions' own logs.")] = False,
) -> None:
    """Export a month's detailed billing CSV to S3 through the export-billing state machine."""
    _quiet_libraries(verbose)
    today = _today()
    try:
        chosen = parse_month(month) if month else previous_month(today)
        ensure_billable(chosen, today.date())
    except InvalidInputError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None

    with ExitStack() as stack:
        soracom = _soracom_access(stack)
        typer.echo(f"Soracom: {soracom.endpoint}")
        environment = {} if verbose else {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
        cloud = stack.enter_context(LocalCloud(soracom=soracom, environment=environment))
        typer.echo(f"Local stack deployed from template.yaml into moto (bucket {cloud.bucket}).")
        typer.echo(f"Exporting {chosen}:\n")
        started = time.monotonic()
        result = cloud.run(
            EXPORT_STATE_MACHINE,
            {"month": chosen},
            name=f"export-{chosen}-{today.strftime('%Y%m%dT%H%M%S')}",
            on_event=_EventPrinter(started).print,
            timeout_seconds=3600,
        )
        typer.echo("")
        if result.status != "SUCCEEDED":
            _print_failure(result)
            raise typer.Exit(1)
        _print_outputs(result)
        if out is not None:
            _save(cloud, result, out)


@app.command()
def simulate(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8080,
    coverage: Annotated[Coverage, typer.Option(help="jp (JPY bills) or g (USD bills).")] = "jp",
    polls_until_ready: Annotated[int, typer.Option(help="Polls an export stays 'processing'.")] = 2,
) -> None:
    """Serve the Soracom simulator until Ctrl-C (auth, bills, async exports, the CSV download)."""
    from soracharge_local.simulators import SoracomSimulator

    simulator = SoracomSimulator(
        coverage=coverage,
        auth_key_id=SIMULATOR_AUTH_KEY_ID,
        auth_key=SIMULATOR_AUTH_KEY,
        polls_until_ready=polls_until_ready,
        port=port,
    )
    base_url = simulator.start()
    typer.echo(f"Soracom simulator on {base_url} (API under {base_url}/v1)")
    typer.echo(f"  SORACOM_ENDPOINT={base_url}")
    typer.echo(f"  SORACOM_AUTH_KEY_ID={SIMULATOR_AUTH_KEY_ID} SORACOM_AUTH_KEY={SIMULATOR_AUTH_KEY}")
    typer.echo(
        f"  fault switches: GET/PUT {base_url}/_simulator/faults, requests seen: GET {base_url}/_simulator/requests"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()


def _soracom_access(stack: ExitStack) -> SoracomAccess:
    endpoint = os.environ.get("SORACOM_ENDPOINT")
    if endpoint:
        key_id, key = os.environ.get("SORACOM_AUTH_KEY_ID"), os.environ.get("SORACOM_AUTH_KEY")
        if not key_id or not key:
            typer.secho(
                "error: SORACOM_ENDPOINT is set, so SORACOM_AUTH_KEY_ID and SORACOM_AUTH_KEY must be set too",
                fg="red",
                err=True,
            )
            raise typer.Exit(2)
        return SoracomAccess(endpoint=endpoint, auth_key_id=key_id, auth_key=key)
    from soracharge_local.simulators import SoracomSimulator

    simulator = SoracomSimulator(auth_key_id=SIMULATOR_AUTH_KEY_ID, auth_key=SIMULATOR_AUTH_KEY)
    base_url = simulator.start()
    stack.callback(simulator.stop)
    return SoracomAccess(endpoint=base_url, auth_key_id=SIMULATOR_AUTH_KEY_ID, auth_key=SIMULATOR_AUTH_KEY)


class _EventPrinter:
    """One line per state as the execution's history grows."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.entered: dict[int, str] = {}

    def print(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        elapsed = f"{time.monotonic() - self.started:6.1f}s"
        if "stateEnteredEventDetails" in event:
            name = event["stateEnteredEventDetails"]["name"]
            self.entered[event["id"]] = name
            if kind == "WaitStateEntered":
                typer.echo(f"{elapsed}  ... {name} (5 s before the next poll)")
            elif kind == "TaskStateEntered":
                typer.echo(f"{elapsed}  >   {name}")
        elif "stateExitedEventDetails" in event and kind == "TaskStateExited":
            details = event["stateExitedEventDetails"]
            typer.echo(f"{elapsed}  ok  {details['name']}: {_summarise(details['name'], details.get('output'))}")
        elif kind == "LambdaFunctionFailed":
            details = event.get("lambdaFunctionFailedEventDetails", {})
            typer.secho(f"{elapsed}  !   {details.get('error')}: {_error_message(details.get('cause'))}", fg="yellow")
        elif kind == "ExecutionSucceeded":
            typer.secho(f"{elapsed}  done: execution succeeded", fg="green")
        elif kind in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"):
            typer.secho(f"{elapsed}  FAILED: {kind}", fg="red")


def _summarise(state: str, output: str | None) -> str:
    data = json.loads(output) if output else {}
    if state == "GetBill":
        bill = data.get("bill", {})
        return f"bill {bill.get('month')} is closed: {bill.get('amount')} {bill.get('currency')}"
    if state == "StartExport":
        return f"export {data.get('export', {}).get('exportedFileId')} started"
    if state == "PollExport":
        progress = data.get("export", {})
        return f"status {progress.get('status')} (poll {progress.get('polls')} of at most 21)"
    if state == "StoreExport":
        stored = data.get("stored", {})
        return f"stored {stored.get('uri')} ({stored.get('size')} bytes)"
    return ""


def _error_message(cause: str | None) -> str:
    if not cause:
        return ""
    try:
        return str(json.loads(cause).get("errorMessage", cause))
    except (ValueError, AttributeError):
        return cause


def _print_failure(result: ExecutionResult) -> None:
    typer.secho(f"Export failed: {result.error}", fg="red", bold=True, err=True)
    typer.secho(f"  {_error_message(result.cause)}", fg="red", err=True)
    typer.echo(f"  execution: {result.arn}", err=True)


def _print_outputs(result: ExecutionResult) -> None:
    output = result.output or {}
    s3 = output.get("s3", {})
    typer.echo("Outputs:")
    for label, value in (
        ("month", output.get("month")),
        ("bill amount", f"{output.get('amount')} {output.get('currency')}"),
        ("exportedFileId", output.get("exportedFileId")),
        ("downloadUrl", output.get("downloadUrl")),
        ("polls", output.get("polls")),
    ):
        typer.echo(f"  {label:15} {value}")
    typer.secho(f"\nCSV stored at {s3.get('uri')}", bold=True)
    typer.echo(f"  version {s3.get('versionId')}, {s3.get('size')} bytes, sha256 {s3.get('sha256')}")
    typer.echo("  (in the local moto S3, which lives as long as this command: use --out FILE to keep a copy)")


def _save(cloud: LocalCloud, result: ExecutionResult, out: Path) -> None:
    s3 = (result.output or {})["s3"]
    body = cloud.client("s3").get_object(Bucket=s3["bucket"], Key=s3["key"], VersionId=s3["versionId"])["Body"]
    # The version StoreExport wrote, not whatever is newest under the key.
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as sink:
        for chunk in body.iter_chunks(1024 * 1024):
            sink.write(chunk)
    typer.secho(f"Saved a copy to {out}", bold=True)


def _quiet_libraries(verbose: bool) -> None:
    """moto warns about every resource its CloudFormation skips; the interpreter logs every failure."""
    if verbose:
        return
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"moto\..*")
    warnings.filterwarnings("ignore", message="No application metrics to publish")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
