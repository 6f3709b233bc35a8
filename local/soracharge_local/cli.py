"""``soracharge``: run the flows on this machine (moto as AWS, simulators or real APIs as peers).

- ``soracharge run --month 202610 --mapping FILE``: the whole chain: the export state machine, the
  CSV in S3, the S3 notification running the import, the session followed to its end, then the
  reconciliation.
- ``soracharge export --month 202610 [--out FILE]``: only the export state machine.
- ``soracharge import FILE.csv --month 202610 [--mapping FILE] [--currency JPY] [--dry-run]``: a
  file a person has, imported as if uploaded under ``uploads/``; ``--dry-run`` sends nothing and
  writes the charges (JSON lines) and the report.
- ``soracharge simulate``: the Soracom and CloudBlue simulators on their own, for people to poke at.

Soracom is the built-in simulator unless ``SORACOM_ENDPOINT`` is set; CloudBlue is the built-in
simulator unless ``APS_ENDPOINT`` is set (see ``peers.py``). Exit codes: 0 done, 1 the run failed
(the state machine's error and cause, or the report's problems, are printed), 2 bad input.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from soracharge.errors import InvalidInputError, SorachargeError
from soracharge.logic.imports import follow_execution_name
from soracharge.models.months import ensure_billable, parse_month, previous_month

from soracharge_local import console
from soracharge_local.engine import LocalCloud, SoracomAccess
from soracharge_local.peers import SIMULATOR_AUTH_KEY, SIMULATOR_AUTH_KEY_ID, cloudblue_access, soracom_access

app = typer.Typer(
    help="soracharge: a Soracom monthly bill becomes charges in CloudBlue. Runs locally on moto.",
    no_args_is_help=True,
    add_completion=False,
)

EXPORT_STATE_MACHINE = "ExportBillingStateMachine"
FOLLOW_STATE_MACHINE = "FollowImportSessionStateMachine"
Coverage = Literal["jp", "g"]
#: Import runs do not talk to Soracom.
NO_SORACOM = SoracomAccess(endpoint="https://soracom.invalid", auth_key_id="unused", auth_key="unused")

MonthOption = Annotated[
    str | None, typer.Option(help="Billing month, yyyyMM. Default: the previous month, as the monthly schedule does.")
]
MappingOption = Annotated[
    Path | None, typer.Option(help="Mapping YAML (default: $SORACHARGE_MAPPING). See examples/mapping.example.yaml.")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show the functions' own logs.")]


@app.command()
def run(
    month: MonthOption = None,
    mapping: MappingOption = None,
    out: Annotated[Path, typer.Option(help="Folder for a copy of the CSV and the report.")] = Path("out"),
    verbose: VerboseOption = False,
) -> None:
    """Run the whole chain for a month: export, store, import, follow the session, reconcile."""
    chosen = _billable_month(month)
    mapping_path = _mapping_path(mapping)
    with _local_cloud(verbose, mapping=mapping_path) as cloud:
        typer.echo(f"Exporting {chosen}:\n")
        printer = console.EventPrinter()
        result = cloud.run(
            EXPORT_STATE_MACHINE, {"month": chosen}, name=_execution_name("export", chosen), on_event=printer
        )
        if result.status != "SUCCEEDED":
            console.print_failure("Export", result)
            raise typer.Exit(1)
        stored = (result.output or {})["s3"]
        typer.echo(f"\nThe CSV landed at {stored['uri']}; its S3 notification runs the import:\n")
        _save_object(cloud, stored["key"], stored["versionId"], out / chosen / Path(stored["key"]).name)
        report = _follow_import(cloud, printer)
    _finish(report, out / chosen)


@app.command()
def export(
    month: MonthOption = None,
    out: Annotated[Path | None, typer.Option(help="Also save the stored CSV to this file.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Export a month's detailed billing CSV to S3 through the export-billing state machine (no import)."""
    chosen = _billable_month(month)
    with _local_cloud(verbose, import_on_upload=False) as cloud:
        typer.echo(f"Exporting {chosen}:\n")
        result = cloud.run(
            EXPORT_STATE_MACHINE,
            {"month": chosen},
            name=_execution_name("export", chosen),
            on_event=console.EventPrinter(),
            timeout_seconds=3600,
        )
        typer.echo("")
        if result.status != "SUCCEEDED":
            console.print_failure("Export", result)
            raise typer.Exit(1)
        console.print_export_outputs(result)
        typer.echo("  (in the local moto S3, which lives as long as this command: --out FILE keeps a copy)")
        if out is not None:
            stored = (result.output or {})["s3"]
            _save_object(cloud, stored["key"], stored["versionId"], out)


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A Soracom detailed billing CSV.")],
    month: Annotated[str, typer.Option(help="The billing month the file is for, yyyyMM.")],
    mapping: MappingOption = None,
    currency: Annotated[
        str | None, typer.Option(help="The bill's currency (JPY, USD, EUR); default: the mapping's currency.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Send nothing: write the charges and the report.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the report (and, with --dry-run, the charges).")] = Path("out"),
    verbose: VerboseOption = False,
) -> None:
    """Import a CSV a person has, as if uploaded to uploads/<month>/ (or only plan it with --dry-run)."""
    try:
        chosen = parse_month(month)
    except InvalidInputError as exc:
        _fail_input(str(exc))
    mapping_path = _mapping_path(mapping)
    if dry_run:
        _dry_run(file, chosen, mapping_path, currency, out / chosen)
        return
    with _local_cloud(verbose, mapping=mapping_path, soracom=NO_SORACOM) as cloud:
        key = f"uploads/{chosen}/{file.name}"
        metadata = {"currency": currency.upper()} if currency else {}
        cloud.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=file.read_bytes(), Metadata=metadata)
        typer.echo(f"Uploaded {file} to s3://{cloud.bucket}/{key}; its S3 notification runs the import:\n")
        report = _follow_import(cloud, console.EventPrinter())
    _finish(report, out / chosen)


@app.command()
def simulate(
    port: Annotated[int, typer.Option(help="Soracom simulator port on 127.0.0.1 (0: any free port).")] = 8080,
    cloudblue_port: Annotated[int, typer.Option(help="CloudBlue simulator port on 127.0.0.1.")] = 8081,
    coverage: Annotated[Coverage, typer.Option(help="jp (JPY bills) or g (USD bills).")] = "jp",
    polls_until_ready: Annotated[int, typer.Option(help="Polls an export stays 'processing'.")] = 2,
) -> None:
    """Serve the Soracom and CloudBlue simulators until Ctrl-C."""
    from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

    soracom = SoracomSimulator(
        coverage=coverage,
        auth_key_id=SIMULATOR_AUTH_KEY_ID,
        auth_key=SIMULATOR_AUTH_KEY,
        polls_until_ready=polls_until_ready,
        port=port,
    )
    cloudblue = CloudBlueSimulator(port=cloudblue_port, processing_seconds=2.0)
    with soracom, cloudblue:
        typer.echo(f"Soracom simulator on {soracom.base_url} (API under /v1)")
        typer.echo(f"  SORACOM_ENDPOINT={soracom.base_url}")
        typer.echo(f"  SORACOM_AUTH_KEY_ID={SIMULATOR_AUTH_KEY_ID} SORACOM_AUTH_KEY={SIMULATOR_AUTH_KEY}")
        typer.echo(f"  faults: GET/PUT {soracom.base_url}/_simulator/faults; requests: GET /_simulator/requests")
        typer.echo(f"CloudBlue simulator on {cloudblue.base_url}")
        typer.echo(f"  APS_ENDPOINT={cloudblue.base_url} APS_RESOURCE_ID={cloudblue.resource_id}")
        typer.echo(
            f"  APS_OAUTH_CONSUMER_KEY={cloudblue.consumer_key} APS_OAUTH_CONSUMER_SECRET={cloudblue.consumer_secret}"
        )
        typer.echo(f"  or APS_TOKEN={cloudblue.aps_token}")
        typer.echo(f"  sessions and charges: GET {cloudblue.base_url}/_simulator/sessions")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


# -- helpers ----------------------------------------------------------------------------------


@contextmanager
def _local_cloud(
    verbose: bool, *, mapping: Path | None = None, soracom: SoracomAccess | None = None, import_on_upload: bool = True
) -> Iterator[LocalCloud]:
    _quiet_libraries(verbose)
    environment = {} if verbose else {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
    with ExitStack() as stack:
        try:
            soracom = soracom or soracom_access(stack)
            cloudblue = cloudblue_access(stack)
        except SorachargeError as exc:
            _fail_input(str(exc))
        if soracom is not NO_SORACOM:
            typer.echo(f"Soracom:   {soracom.endpoint}")
        if import_on_upload:
            typer.echo(f"CloudBlue: {cloudblue.endpoint}")
        cloud = stack.enter_context(
            LocalCloud(
                soracom=soracom,
                cloudblue=cloudblue,
                mapping=mapping,
                import_on_upload=import_on_upload,
                environment=environment,
            )
        )
        typer.echo(f"Local stack deployed from template.yaml into moto (bucket {cloud.bucket}).")
        yield cloud


def _follow_import(cloud: LocalCloud, printer: console.EventPrinter) -> dict[str, Any]:
    """Wait for the import the S3 notification started, then follow its session to the end."""
    cloud.async_invocations.wait_idle()
    deliveries = [d for d in cloud.async_invocations.deliveries if "ImportChargesFunction" in d.function_name]
    if not deliveries:
        typer.secho("No import ran: the S3 notification did not reach the import function.", fg="red", err=True)
        raise typer.Exit(1)
    delivery = deliveries[-1]
    if delivery.error is not None:
        typer.secho(f"The import failed after {delivery.attempts} attempts: {delivery.error}", fg="red", err=True)
        raise typer.Exit(1)
    (report,) = delivery.result["reports"]
    typer.echo(f"       ok  ImportCharges: {report['summary']}")
    session_id = report.get("importSessionId")
    if report["status"] == "CLOSED" and session_id is not None:
        typer.echo(f"\nFollowing CloudBlue session {session_id} until it is rated:\n")
        arn = cloud.state_machines[FOLLOW_STATE_MACHINE].replace(":stateMachine:", ":execution:")
        obj = report["object"]
        name = follow_execution_name(f"{obj['bucket']}/{obj['key']}#{obj['versionId']}", session_id)
        for event in cloud.follow(f"{arn}:{name}", timeout_seconds=7200):
            printer(event)
        key = f"reports/{report['month']}/{report['object']['versionId']}.json"
        report = json.loads(cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key)["Body"].read())
    return dict(report)


def _finish(report: dict[str, Any], out: Path) -> None:
    typer.echo("")
    console.print_report(report)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "report.json"
    saved.write_text(json.dumps(report, ensure_ascii=False, indent=2))
    typer.echo(f"\nReport saved to {saved}")
    reconciliation = report.get("reconciliation") or {}
    if report["status"] not in ("PROCESSED", "DUPLICATE") or not reconciliation.get("balanced", True):
        raise typer.Exit(1)


def _dry_run(file: Path, month: str, mapping_path: Path, currency: str | None, out: Path) -> None:
    from soracharge.adapters.mapping_source import load_mapping
    from soracharge.logic.imports import dry_run_report

    try:
        mapping, source = load_mapping(str(mapping_path))
    except SorachargeError as exc:
        _fail_input(str(exc))
    chosen_currency = (currency or mapping.currency or "").upper()
    if not chosen_currency:
        _fail_input("no currency: pass --currency JPY|USD|EUR or set 'currency' in the mapping")
    with file.open("rb") as stream:
        plan, report = dry_run_report(stream, month=month, currency=chosen_currency, mapping=mapping, source=str(file))
    out.mkdir(parents=True, exist_ok=True)
    charges = out / f"{file.stem}.charges.jsonl"
    with charges.open("w") as sink:
        for charge in plan.charges:
            sink.write(json.dumps(charge.model_dump(mode="json", by_alias=True, exclude_none=True), ensure_ascii=False))
            sink.write("\n")
    typer.echo(f"Dry run with {source}: nothing was sent. {len(plan.charges)} charges written to {charges}")
    report_dict = report.to_event()
    console.print_report(report_dict)
    saved = out / f"{file.stem}.report.json"
    saved.write_text(json.dumps(report_dict, ensure_ascii=False, indent=2))
    typer.echo(f"\nReport saved to {saved}")
    if plan.problems:
        raise typer.Exit(1)


def _billable_month(month: str | None) -> str:
    today = datetime.now(UTC)
    try:
        chosen = parse_month(month) if month else previous_month(today)
        return ensure_billable(chosen, today.date())
    except InvalidInputError as exc:
        _fail_input(str(exc))


def _mapping_path(mapping: Path | None) -> Path:
    chosen = mapping or (Path(os.environ["SORACHARGE_MAPPING"]) if os.environ.get("SORACHARGE_MAPPING") else None)
    if chosen is None:
        _fail_input("no mapping: pass --mapping FILE or set SORACHARGE_MAPPING (see examples/mapping.example.yaml)")
    if str(chosen).startswith("s3://") or not chosen.is_file():
        _fail_input(f"the mapping {chosen} is not a file on this machine")
    return chosen


def _save_object(cloud: LocalCloud, key: str, version_id: str, destination: Path) -> None:
    body = cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key, VersionId=version_id)["Body"]
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as sink:
        for chunk in body.iter_chunks(1024 * 1024):
            sink.write(chunk)
    typer.secho(f"Saved a copy to {destination}", bold=True)


def _execution_name(kind: str, month: str) -> str:
    return f"{kind}-{month}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"


def _fail_input(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _quiet_libraries(verbose: bool) -> None:
    """moto warns about every resource its CloudFormation skips; the interpreter logs every failure."""
    if verbose:
        return
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"moto\..*")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
