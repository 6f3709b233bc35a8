"""What the CLI shows a person: each state as it runs, the outputs, the import report."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import typer
from rich.cells import cell_len
from soracharge.logic import guards
from soracharge.models.accounts import BillAccount
from soracharge.models.coverage import coverage_label
from soracharge.models.imports import ImportReport

from soracharge_local.engine import ExecutionResult
from soracharge_local.reports import status_colour

#: What each state's exit says, from its output.
_SUMMARIES = {
    "GetBill": lambda d: (
        f"bill {d['bill']['month']} is closed: {d['bill']['amount']} {d['bill']['currency']}"
        + (
            f" (after a {d['bill']['appliedCouponAmount']} {d['bill']['currency']} coupon)"
            if Decimal(d["bill"].get("appliedCouponAmount") or 0)
            else ""
        )
    ),
    "StartExport": lambda d: f"export {d['export']['exportedFileId']} started",
    "PollExport": lambda d: f"status {d['export']['status']} (poll {d['export']['polls']} of at most 21)",
    "StoreExport": lambda d: (
        f"{'already stored' if d['stored'].get('alreadyStored') else 'stored'} {d['stored']['uri']} "
        f"({d['stored']['size']} bytes)"
    ),
    "GetImportSession": lambda d: (
        f"session {d['session']['importSessionId']} is {d['session']['status']} (poll {d['session']['polls']})"
    ),
    "RecordOutcome": lambda d: f"recorded {d['outcome']['status']} in the report",
}
_WAITS = {"WaitForExport": "5 s before the next poll", "WaitForRating": "30 s before the next look"}


class EventPrinter:
    """One line per state as an execution's history grows."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        elapsed = f"{time.monotonic() - self.started:6.1f}s"
        if kind == "WaitStateEntered":
            name = event["stateEnteredEventDetails"]["name"]
            typer.echo(f"{elapsed}  ... {name} ({_WAITS.get(name, 'waiting')})")
        elif kind == "TaskStateEntered":
            typer.echo(f"{elapsed}  >   {event['stateEnteredEventDetails']['name']}")
        elif kind == "TaskStateExited":
            details = event["stateExitedEventDetails"]
            summary = _SUMMARIES.get(details["name"])
            output = json.loads(details.get("output") or "{}")
            text = summary(output) if summary else ""
            typer.echo(f"{elapsed}  ok  {details['name']}" + (f": {text}" if text else ""))
        elif kind == "LambdaFunctionFailed":
            details = event.get("lambdaFunctionFailedEventDetails", {})
            typer.secho(f"{elapsed}  !   {details.get('error')}: {error_message(details.get('cause'))}", fg="yellow")
        elif kind == "ExecutionSucceeded":
            typer.secho(f"{elapsed}  done: execution succeeded", fg="green")
        elif kind in ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"):
            typer.secho(f"{elapsed}  FAILED: {kind}", fg="red")


def error_message(cause: str | None) -> str:
    if not cause:
        return ""
    try:
        return str(json.loads(cause).get("errorMessage", cause))
    except (ValueError, AttributeError):
        return cause


def print_failure(what: str, result: ExecutionResult) -> None:
    typer.secho(f"{what} failed: {result.error}", fg="red", bold=True, err=True)
    typer.secho(f"  {error_message(result.cause)}", fg="red", err=True)
    typer.echo(f"  execution: {result.arn}", err=True)


def print_export_outputs(result: ExecutionResult) -> None:
    output = result.output or {}
    s3 = output.get("s3", {})
    typer.echo("Outputs:")
    for label, value in (
        ("month", output.get("month")),
        ("coverage", coverage_label(output.get("coverage"))),
        *((("operator", output["operator"]),) if output.get("operator") else ()),
        ("bill amount", f"{output.get('amount')} {output.get('currency')}"),
        ("exportedFileId", output.get("exportedFileId")),
        ("downloadUrl", output.get("downloadUrl") or "-"),
        ("polls", output.get("polls")),
    ):
        typer.echo(f"  {label:15} {value}")
    typer.secho(f"\nCSV stored at {s3.get('uri')}", bold=True)
    typer.echo(f"  version {s3.get('versionId')}, {s3.get('size')} bytes, sha256 {s3.get('sha256')}")


def customer(name: str | None, columns: int = 28) -> str:
    """A customer value as the report's first column shows it: escaped where a terminal would not show it
    (guards.printable), padded to ``columns`` terminal columns: a wide character such as 東 takes two (a
    half-width ｱ one)."""
    shown = guards.printable(name or "(no customer tag)")
    return shown + " " * (columns - cell_len(shown))


def print_report(report: dict[str, Any]) -> None:
    """The import report as a person reads it: status, reconciliation, totals, problems, warnings."""
    status = report["status"]
    colour = status_colour(ImportReport.model_validate(report))
    typer.secho(guards.printable(f"Import {status}: {report['summary']}"), fg=colour, bold=True)
    reconciliation = report.get("reconciliation")
    if reconciliation:
        currency = report.get("currency") or ""
        of = f", {BillAccount(report['coverage'], report.get('operator')).label}" if report.get("coverage") else ""
        typer.echo(f"\nReconciliation for {report.get('month')} ({currency}{of}):")
        for step in reconciliation.get("steps") or [{"label": "CSV sum", "amount": reconciliation["csvSum"]}]:
            change = step.get("change")
            shown = "" if change is None else (change if change.startswith("-") else f"+{change}")
            typer.echo(f"  {step['label']:34} {shown:>14} {step['amount']:>16}")
        if "billAmount" in reconciliation:
            typer.echo(f"  {'= the bill these steps make':34} {'':>14} {reconciliation.get('expectedBill', '-'):>16}")
            typer.echo(f"  {'Soracom bill amount':34} {'':>14} {reconciliation['billAmount']:>16}")
            difference = reconciliation.get("difference", "0")
            if Decimal(difference):
                typer.secho(f"  {'difference (bill - steps)':34} {'':>14} {difference:>16}", fg="red")
        sent = {"DRY_RUN": "would be imported", "AWAITING_APPROVAL": "sent once approved"}.get(
            status, "imported to CloudBlue"
        )
        typer.echo(f"  {sent:34} {'':>14} {reconciliation['importedSum']:>16}")
        balanced = reconciliation["balanced"]
        typer.secho(
            f"  {'balanced':34} {'yes' if balanced else 'NO'} ({reconciliation['note']})",
            fg="green" if balanced else "red",
        )
        counts = report.get("counts", {})
        rows, charges, packets = counts.get("rows", 0), counts.get("charges", 0), counts.get("packets", 0)
        typer.echo(
            f"  {rows} rows -> {charges} charges in {packets} packets, "
            f"CloudBlue session {report.get('importSessionId')} ({report.get('sessionStatus')})"
        )
    if report.get("perCustomer"):
        typer.echo("\nPer customer:")
        for entry in report["perCustomer"]:
            typer.echo(f"  {customer(entry['name'])} {entry['amount']:>14}")
    for shared in report.get("shares", []):
        items = ", ".join(shared["items"])
        said = f"Shared out: {items}, {shared['total']} by {shared['basis']} (of {shared['basisTotal']} in all):"
        typer.echo("\n" + guards.printable(said))
        for line in shared["lines"]:
            typer.echo(f"  {customer(line['customer'])} {line['amount']:>14}  (basis {line['basis']})")
    if report.get("defaulted"):
        typer.echo("\nSent to the mapping's default subscription (customer values the mapping does not list):")
        for entry in report["defaulted"]:
            sims = f"{entry.get('sims', 0)} SIMs" if entry.get("sims") is not None else ""
            typer.echo(f"  {customer(entry['name'])} {entry['amount']:>14}  {sims}")
    problems = report.get("problems", [])
    if problems:
        read = ImportReport.model_validate(report)
        total = len(read.problems) + read.problems_not_listed
        typer.secho(f"\n{total} problem(s), by kind (every one is in the report's JSON and HTML):", fg="red")
        for line in guards.summary(read.problems, read.problem_counts, total):
            typer.secho(f"  {line}", fg="red")
    for warning in report.get("warnings", []):
        typer.secho(f"  warning: {warning}", fg="yellow")
    if report.get("errorDesc"):
        typer.secho(f"  errorDesc: {report['errorDesc']}", fg="red")
