"""``soracharge``: run the flows on this machine (moto as AWS, simulators or real APIs as peers).

- ``soracharge run --month 202610 --mapping FILE [--coverage jp --coverage g]``: the whole chain for
  each coverage's bill: the export state machine, the CSV in S3, the S3 notification running the
  import, the session followed to its end, then the reconciliation.
- ``soracharge export --month 202610 [--out FILE]``: only the export state machine.
- ``soracharge import FILE.csv --month 202610 [--mapping FILE] [--currency JPY] [--coverage g] [--dry-run]``:
  a file a person has, imported as if uploaded under ``uploads/``; ``--dry-run`` sends nothing and
  writes the charges (JSON lines) and the report.
- ``soracharge approve --month 202610 --by NAME`` (or ``reject``): a month held for approval, decided.
- ``--accounts JSON`` (``run``) and ``--operator OP…`` (``import``, ``approve``, ``reject``, ``report``,
  ``correction``): the bills of other Soracom operators, as the stack's SoracomAccounts lists them.
- ``soracharge report 202610`` (or ``--report FILE``, or ``--history``): the month's latest report (any report
  JSON, or every month kept in ``out``) as a page.

``run``, ``import`` (but a dry run), ``approve`` and ``reject`` save each bill's report (and ``run`` its CSV)
in a folder of their own, ``<out>/<yyyyMM>/[<coverage>/]<yyyyMMddTHHmmssZ>-<command>/``, so a command never
overwrites what an earlier one saved (``history.py``).
- ``soracharge simulate``: the Soracom and CloudBlue simulators on their own, for people to poke at.

The coverages are ``--coverage``'s, else ``SORACOM_COVERAGE_TYPE``'s (``jp``, ``g`` or ``jp,g``, as the
stack's SoracomCoverageType), else ``jp``. Soracom is a built-in simulator per coverage unless
``SORACOM_ENDPOINT`` (or ``SORACOM_ENDPOINT_JP``/``_G``) is set; CloudBlue is the built-in
simulator unless ``APS_ENDPOINT`` is set (see ``peers.py``). Exit codes: 0 done, 1 the run failed
(the state machine's error and cause, or the report's problems, are printed), 2 bad input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from soracharge.errors import InvalidInputError, SorachargeError
from soracharge.logic.imports import ADDITIONAL_FILE, additional_id_suffix, follow_execution_name
from soracharge.models.accounts import Account, BillAccount, parse_accounts, parse_operator
from soracharge.models.coverage import Coverage, coverage_label, coverage_of_currency, parse_coverage, parse_coverages
from soracharge.models.mapping import Mapping
from soracharge.models.months import ensure_billable, month_index, months_between, parse_month, previous_month

from soracharge_local import console
from soracharge_local.engine import LocalCloud, SoracomAccess
from soracharge_local.ledger_state import kept_ledger
from soracharge_local.peers import SIMULATOR_AUTH_KEY, SIMULATOR_AUTH_KEY_ID, cloudblue_access, soracom_access

if TYPE_CHECKING:
    from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator

app = typer.Typer(
    help="soracharge: a Soracom monthly bill becomes charges in CloudBlue. Runs locally on moto.",
    no_args_is_help=True,
    add_completion=False,
)

EXPORT_STATE_MACHINE = "ExportBillingStateMachine"
FOLLOW_STATE_MACHINE = "FollowImportSessionStateMachine"
#: Set to 1, the local stack skips the Wait states' and retries' sleeps (the tests set it; a person sees real waits).
INSTANT_WAITS = "SORACHARGE_LOCAL_INSTANT_WAITS"
#: Import runs do not talk to Soracom.
NO_SORACOM = SoracomAccess(endpoint="https://soracom.invalid", auth_key_id="unused", auth_key="unused")

MonthOption = Annotated[
    str | None, typer.Option(help="Billing month, yyyyMM. Default: the previous month, as the monthly schedule does.")
]
MappingOption = Annotated[
    Path | None, typer.Option(help="Mapping YAML (default: $SORACHARGE_MAPPING). See examples/mapping.example.yaml.")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show the functions' own logs.")]
CoveragesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--coverage",
        help="jp (Japan coverage, JPY) or g (Global coverage, USD); repeat it for both. "
        "Default: $SORACOM_COVERAGE_TYPE (jp, g or jp,g), else jp.",
    ),
]
MappingsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mapping",
        help="Mapping YAML for every coverage, or COVERAGE=FILE once per coverage (jp=FILE --mapping g=FILE). "
        "Default: $SORACHARGE_MAPPING. See examples/mapping.example.yaml.",
    ),
]


MonthsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--month",
        help="Billing month, yyyyMM; repeat it for several. Default: the previous month, as the monthly schedule does.",
    ),
]
AccountsOption = Annotated[
    str | None,
    typer.Option(
        "--accounts",
        help="The Soracom operators exported besides the stack's own, as the stack's SoracomAccounts: a JSON list of "
        '{"operator": "OP0000000002", "coverages": "jp,g", "switchUser": "soracharge"} (no switchUser: the '
        "operator's own AuthKey). Default: $SORACOM_ACCOUNTS, else none.",
    ),
]
FromOption = Annotated[str | None, typer.Option("--from", help="First month of a range (backfill), yyyyMM.")]
ToOption = Annotated[str | None, typer.Option("--to", help="Last month of the range, yyyyMM (default: --from).")]


@app.command()
def run(
    month: MonthsOption = None,
    from_: FromOption = None,
    to: ToOption = None,
    mapping: MappingsOption = None,
    coverage: CoveragesOption = None,
    accounts: AccountsOption = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for a copy of each month's CSV and report, in a folder of each run's own: "
            "<month>/<yyyyMMddTHHmmssZ>-run/ (<month>/<coverage>/... for two coverages, "
            "<month>/<operatorId>/<coverage>/... for a listed operator's)."
        ),
    ] = Path("out"),
    verbose: VerboseOption = False,
) -> None:
    """Run the whole chain for each month and bill: export, store, import, follow the session, reconcile.

    Each coverage's bill is its own execution, file and CloudBlue session, in its own currency; so is
    each coverage's bill of each operator ``--accounts`` lists. Months run one after the other on one
    local stack, so a month given twice shows what a re-run does: nothing, and it says so.
    """
    months = _billable_months(month, from_, to)
    coverages = _coverages(coverage)
    listed = _accounts(accounts)
    every = tuple(dict.fromkeys([*coverages, *(c for a in listed for c in a.coverages)]))
    mappings = _mappings(mapping, every)
    bills = [(each, None) for each in coverages] + [(c, a.operator) for a in listed for c in a.coverages]
    _folder(out)
    decide_with = _decision_options(mapping, out)
    outcomes: list[tuple[str, str, bool]] = []
    with _local_cloud(
        verbose, mapping=mappings, coverages=coverages, accounts=listed, customers=_operator_customers(mappings)
    ) as cloud:
        _seed_history(cloud, out, months)
        for chosen in months:
            for each, operator in bills:
                account = BillAccount(each, operator)
                slot = out / chosen / account.folder if len(bills) > 1 else out / chosen
                label = f"{chosen} {account.folder}" if len(bills) > 1 else chosen
                outcomes.append(
                    _run_month(cloud, chosen, each, slot, label=label, operator=operator, decide_with=decide_with)
                )
    _write_history(out)
    if len(outcomes) > 1:
        _print_outcomes(outcomes)
    if not all(ok for _, _, ok in outcomes):
        raise typer.Exit(1)


ByOption = Annotated[
    str, typer.Option("--by", help="Who decides (recorded in the report and the ledger).", show_default=False)
]
OneMonthOption = Annotated[str, typer.Option("--month", help="The billing month held for approval, yyyyMM.")]
OperatorOption = Annotated[
    str | None, typer.Option(help="Which operator's bill, when not the stack's own (one --accounts lists).")
]
FileForReviewOption = Annotated[
    Path | None,
    typer.Option(
        "--file", exists=True, dir_okay=False, help="For a file imported with 'soracharge import': that same file."
    ),
]


@app.command()
def approve(
    by: ByOption,
    month: OneMonthOption,
    coverage: Annotated[str | None, typer.Option(help="With a run of two coverages: which bill, jp or g.")] = None,
    operator: OperatorOption = None,
    file: FileForReviewOption = None,
    mapping: MappingsOption = None,
    out: Annotated[
        Path, typer.Option(help="The folder run and import saved the preview in (the month's latest report).")
    ] = Path("out"),
    verbose: VerboseOption = False,
) -> None:
    """Approve a month held for approval: exactly the charges previewed are sent (the same packets), once.

    The month's file is imported again into a fresh local stack with the same mapping; it must plan
    exactly the packets the saved preview shows (else nothing is sent, and the new preview is saved),
    and the import function is then given the decision, as the alert's command gives it on AWS.
    """
    _decide("approve", by, month, coverage, file, mapping, out, verbose, operator)


@app.command()
def reject(
    by: ByOption,
    month: OneMonthOption,
    coverage: Annotated[str | None, typer.Option(help="With a run of two coverages: which bill, jp or g.")] = None,
    operator: OperatorOption = None,
    file: FileForReviewOption = None,
    mapping: MappingsOption = None,
    out: Annotated[
        Path, typer.Option(help="The folder run and import saved the preview in (the month's latest report).")
    ] = Path("out"),
    verbose: VerboseOption = False,
) -> None:
    """Reject a month held for approval: nothing is sent, and its report says who rejected it."""
    _decide("reject", by, month, coverage, file, mapping, out, verbose, operator)


def _decide(
    decision: str,
    by: str,
    month: str,
    coverage: str | None,
    file: Path | None,
    mapping: list[str] | None,
    out: Path,
    verbose: bool,
    operator: str | None = None,
) -> None:
    from soracharge_local import history

    try:
        chosen = parse_month(month)
        named = parse_coverage(coverage) if coverage else None
        listed = parse_operator(operator) if operator is not None else None
    except InvalidInputError as exc:
        _fail_input(str(exc))
    if not by.strip():
        _fail_input("--by must name who decides: it is recorded in the report and the ledger")
    try:  # the bill named, known by what its reports say they are of: never another coverage's or operator's
        found = history.bill_report(out, chosen, listed, named)
    except InvalidInputError as exc:
        _fail_input(f"no preview to {decision}: {exc}")
    saved, preview, slot = found.path, found.report, found.slot
    if preview.status != "AWAITING_APPROVAL" or preview.approval is None:
        _fail_input(f"{saved} is {preview.status}, not held for approval: nothing to {decision}")
    settled = found.bill[2]
    typer.echo(f"The preview to {decision}: {saved}")
    review = (decision, by.strip(), preview.approval.plan, preview.approval.month_version)
    if preview.source == "uploads":
        if file is None:
            _fail_input(f"{preview.object.key} was imported from a file: give that file with --file")
        if hashlib.sha256(file.read_bytes()).hexdigest() != preview.sha256:
            _fail_input(f"{file} is not the file previewed ({preview.object.key}): its bytes differ")
    elif file is not None:
        _fail_input(
            f"{saved} previews an export ({preview.object.key}), not a file a person gave: {decision} it without "
            "--file (the month is exported again and must plan the same charges)"
        )
    mappings = _mappings(mapping, (settled,))
    soracom = NO_SORACOM if preview.source == "uploads" else None
    accounts = (_account_of(listed, settled),) if listed else ()
    with _local_cloud(
        verbose,
        mapping=mappings,
        soracom=soracom,
        coverages=(settled,),
        accounts=accounts,
        customers=_operator_customers(mappings),
    ) as cloud:
        _seed_history(cloud, out, [chosen])
        if file is not None:
            key = preview.object.key
            metadata = {"currency": preview.currency} if preview.currency else {}
            cloud.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=file.read_bytes(), Metadata=metadata)
            printer = console.EventPrinter()
            report = _reviewed(cloud, _follow_import(cloud, printer), review, printer)
            ok = _finish(report, _run_folder(slot, decision), cloud, _decision_options(mapping, out, file))
        else:
            _, _, ok = _run_month(
                cloud,
                chosen,
                settled,
                slot,
                label=chosen,
                review=review,
                operator=listed,
                command=decision,
                decide_with=_decision_options(mapping, out),
            )
    _write_history(out)
    if not ok:
        raise typer.Exit(1)


def _decision_options(mapping: list[str] | Path | None, out: Path, file: Path | None = None) -> str:
    """The options ``approve`` and ``reject`` need to decide a month held by a command given these: the same
    file (an import's), the same mapping, the same ``--out``, quoted for a shell; a default is left out."""
    words: list[str] = ["--file", str(file)] if file is not None else []
    for each in [mapping] if isinstance(mapping, Path) else mapping or []:
        words += ["--mapping", str(each)]
    if out != Path("out"):
        words += ["--out", str(out)]
    return "".join(f" {shlex.quote(word)}" for word in words)


def _reviewed(
    cloud: LocalCloud, report: dict[str, Any], review: tuple[str, str, str, int] | None, printer: console.EventPrinter
) -> dict[str, Any]:
    """The import held for approval again, given the person's decision on the plan they previewed."""
    if review is None or report["status"] != "AWAITING_APPROVAL":
        return report
    decision, by, plan, _ = review
    approval = report.get("approval", {})
    if approval.get("plan") != plan:
        typer.secho(
            "\nThe month's file no longer plans the charges previewed (the bill or the mapping changed): nothing "
            f"was {decision}d and nothing sent. Its new preview is saved below: read it, then decide again.",
            fg="red",
            bold=True,
        )
        return report
    typer.echo(f"\nThe plan previewed ({plan[:12]}...) is the plan: {decision} by {by}\n")
    since = len(cloud.async_invocations.deliveries)
    function = cloud.import_deliveries()[-1].function_name
    obj = report["object"]
    object_id = f"{obj['bucket']}/{obj['key']}#{obj.get('versionId') or 'null'}"
    cloud.async_invocations.invoke(
        function,
        {
            "review": {
                "objectId": object_id,
                "plan": plan,
                "version": approval.get("monthVersion", 0),
                "decision": decision,
                "by": by,
            }
        },
    )
    return _follow_import(cloud, printer, since)


def _seed_history(cloud: LocalCloud, out: Path, months: list[str]) -> None:
    from soracharge_local import history

    if put := history.seed(cloud, out, months):
        typer.echo(f"History:   {put} report(s) of other months from {out}/, for the comparison with the months before")


def _write_history(out: Path) -> None:
    from soracharge_local import history

    try:
        typer.echo(f"\nEvery month imported: {history.write_history(out)}")
    except InvalidInputError as exc:
        typer.secho(f"warning: {exc}", fg="yellow", err=True)


@app.command()
def export(
    month: MonthsOption = None,
    from_: FromOption = None,
    to: ToOption = None,
    coverage: CoveragesOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also save the stored CSV: a FILE.csv for one month, else a folder (<month>.csv in it, "
            "<month>.<coverage>.csv for two coverages)."
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Export months' detailed billing CSVs to S3 through the export-billing state machine (no import).

    A backfill is ``--from 202505 --to 202510``: every month must be over and one Soracom still
    holds (its last 18), or nothing runs. Months run one after the other on one local stack.
    """
    months = _billable_months(month, from_, to)
    coverages = _coverages(coverage)
    bills = [(chosen, each) for chosen in months for each in coverages]
    if out is not None and out.suffix == ".csv" and len(bills) > 1:
        _fail_input(f"--out {out} is one file, but {len(bills)} bills are exported: give a folder")
    if out is not None:
        _file(out) if out.suffix == ".csv" else _folder(out)
    outcomes: list[tuple[str, str, bool]] = []
    with _local_cloud(verbose, import_on_upload=False, coverages=coverages) as cloud:
        for chosen, each in bills:
            label = _label(chosen, each, coverages)
            typer.echo(f"\nExporting {chosen} ({coverage_label(each)}):\n")
            result = cloud.run(
                EXPORT_STATE_MACHINE,
                {"month": chosen, "coverage": each},
                name=_execution_name("export", chosen, each),
                on_event=console.EventPrinter(),
                timeout_seconds=3600,
            )
            typer.echo("")
            if result.status != "SUCCEEDED":
                console.print_failure("Export", result)
                outcomes.append((label, f"FAILED: {result.error}", False))
            else:
                console.print_export_outputs(result)
                stored = (result.output or {})["s3"]
                what = (
                    "already stored, not exported again" if (result.output or {}).get("alreadyExported") else "stored"
                )
                outcomes.append((label, f"{what}: {stored['uri']} ({stored['size']} bytes)", True))
                if out is not None:
                    name = f"{chosen}.csv" if len(coverages) == 1 else f"{chosen}.{each}.csv"
                    target = out if out.suffix == ".csv" else out / name
                    _save_object(cloud, stored["key"], stored["versionId"], target)
            _print_alerts(cloud)
        typer.echo("  (in the local moto S3, which lives as long as this command: --out keeps a copy)")
    if len(outcomes) > 1:
        _print_outcomes(outcomes)
    if not all(ok for _, _, ok in outcomes):
        raise typer.Exit(1)


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A Soracom detailed billing CSV.")],
    month: Annotated[str, typer.Option(help="The billing month the file is for, yyyyMM.")],
    mapping: MappingOption = None,
    currency: Annotated[
        str | None,
        typer.Option(help="The bill's currency (JPY, USD, EUR); default: the mapping's, else the coverage's."),
    ] = None,
    coverage: Annotated[
        str | None,
        typer.Option(
            help="The bill's coverage, jp or g: the file goes to uploads/<month>/<coverage>/. "
            "Default: the currency's (--currency, else the mapping's), else $SORACOM_COVERAGE_TYPE's when it is "
            "one, else jp."
        ),
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option(
            help="The Soracom operator whose bill it is, when not the stack's own (one SoracomAccounts lists): the "
            "file goes to uploads/<month>/<operator>/<coverage>/ and its charges get the operator's mark."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Send nothing: write the charges and the report.")] = False,
    additional: Annotated[
        bool,
        typer.Option(
            "--additional",
            help="A file beside the month's first one (a second bill, a correction's differences): metadata "
            "import=additional.",
        ),
    ] = False,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the report, in a folder of the import's own: <month>/<yyyyMMddTHHmmssZ>-import/ "
            "(with --dry-run: <month>/<name>.report.json and the charges)."
        ),
    ] = Path("out"),
    verbose: VerboseOption = False,
) -> None:
    """Import a CSV a person has, as if uploaded to uploads/<month>/ (or only plan it with --dry-run)."""
    try:
        chosen = parse_month(month)
        named = parse_coverage(coverage) if coverage else None
        listed = parse_operator(operator) if operator is not None else None
    except InvalidInputError as exc:
        _fail_input(str(exc))
    mapping_path = _mapping_path(mapping)
    _folder(out)
    # The dry run and the upload settle the coverage alike: named, else the currency's. Never the mapping's
    # currency: that is one of the sources the import checks against the coverage (a typo there is refused).
    settled = named or coverage_of_currency(currency)
    if dry_run:
        dry_out = out / chosen / listed if listed else out / chosen
        if listed is not None and settled is None:  # the operator's coverage as SORACOM_ACCOUNTS lists it
            settled = _account_of(listed, None).coverages[0]
        _dry_run(
            file, chosen, mapping_path, currency, dry_out, additional=additional, coverage=settled, operator=listed
        )
        return
    stack, named_folder = _import_stack(named, settled)
    folder: str | None = named_folder
    accounts: tuple[Account, ...] = ()
    if listed is not None:  # the local stack lists the operator, on the file's coverage
        account = _account_of(listed, settled)
        accounts = (account,)
        folder = f"{listed}/{account.coverages[0]}"
    with _local_cloud(verbose, mapping=mapping_path, soracom=NO_SORACOM, coverages=stack, accounts=accounts) as cloud:
        _seed_history(cloud, out, [chosen])
        key = f"uploads/{chosen}/{folder}/{file.name}" if folder else f"uploads/{chosen}/{file.name}"
        metadata = {"currency": currency.upper()} if currency else {}
        if additional:
            metadata["import"] = ADDITIONAL_FILE
        cloud.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=file.read_bytes(), Metadata=metadata)
        typer.echo(f"Uploaded {file} to s3://{cloud.bucket}/{key}; its S3 notification runs the import:\n")
        report = _follow_import(cloud, console.EventPrinter())
        slot = out / chosen / folder if folder else out / chosen
        ok = _finish(report, _run_folder(slot, "import"), cloud, _decision_options(mapping, out, file))
    _write_history(out)
    if not ok:
        raise typer.Exit(1)


@app.command()
def simulate(
    port: Annotated[int, typer.Option(help="Soracom simulator port on 127.0.0.1 (0: any free port).")] = 8080,
    cloudblue_port: Annotated[int, typer.Option(help="CloudBlue simulator port on 127.0.0.1.")] = 8081,
    coverage: Annotated[
        list[str] | None,
        typer.Option(
            "--coverage", help="jp (JPY bills) or g (USD bills); repeat it for both (a simulator each). Default: jp."
        ),
    ] = None,
    global_port: Annotated[
        int, typer.Option(help="With both coverages: the Global coverage simulator's port (--port is Japan's).")
    ] = 8082,
    polls_until_ready: Annotated[int, typer.Option(help="Polls an export stays 'processing'.")] = 2,
    coupon: Annotated[
        str, typer.Option(help="A coupon taken off each bill after rounding up (its appliedCouponAmount).")
    ] = "0",
    tax_rate: Annotated[
        str | None, typer.Option(help="Bills include tax at this rate, e.g. 0.10 (none by default).")
    ] = None,
) -> None:
    """Serve the Soracom and CloudBlue simulators until Ctrl-C.

    The Soracom simulator bills as Soracom does: the CSV's sum rounded up to 1 JPY (0.01 USD), less
    the coupon, plus tax when a rate is given (change both later with PUT /_simulator/billing).
    """
    from soracharge_local.simulators import CloudBlueSimulator, SoracomSimulator
    from soracharge_local.simulators.server import stopped_by_signals

    coverages = _coverages(coverage or ["jp"])
    simulators = [
        SoracomSimulator(
            coverage=each,
            auth_key_id=SIMULATOR_AUTH_KEY_ID,
            auth_key=SIMULATOR_AUTH_KEY,
            polls_until_ready=polls_until_ready,
            port=global_port if each == "g" and len(coverages) > 1 else port,
        )
        for each in coverages
    ]
    for soracom in simulators:
        try:
            soracom.set_billing({"coupon": coupon, "taxRate": tax_rate})
        except ValueError as exc:
            _fail_input(f"--coupon {coupon} --tax-rate {tax_rate}: {exc}")
    cloudblue = CloudBlueSimulator(port=cloudblue_port, processing_seconds=2.0)
    try:
        with stopped_by_signals(), ExitStack() as running:
            for soracom in simulators:
                running.enter_context(soracom)
            running.enter_context(cloudblue)
            _say_where(simulators, coverages, cloudblue)
            while True:  # short sleeps: Ctrl-C delivered to a server's thread is seen within a second
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM, at any moment once started: the servers stopped as the ExitStack closed


def _say_where(
    simulators: Sequence[SoracomSimulator], coverages: Sequence[Coverage], cloudblue: CloudBlueSimulator
) -> None:
    """Where each simulator serves, and the settings that point soracharge at them."""
    for soracom in simulators:
        typer.echo(f"Soracom simulator ({coverage_label(soracom.coverage)}) on {soracom.base_url} (API under /v1)")
        typer.echo(f"  faults: GET/PUT {soracom.base_url}/_simulator/faults; requests: GET /_simulator/requests")
        typer.echo(f"  bills: {json.dumps(soracom.billing.to_json())} (GET/PUT {soracom.base_url}/_simulator/billing)")
    if len(simulators) == 1:
        typer.echo(f"  SORACOM_COVERAGE_TYPE={coverages[0]} SORACOM_ENDPOINT={simulators[0].base_url}")
    else:
        endpoints = " ".join(f"SORACOM_ENDPOINT_{s.coverage.upper()}={s.base_url}" for s in simulators)
        typer.echo(f"  SORACOM_COVERAGE_TYPE={','.join(coverages)} {endpoints}")
    typer.echo(f"  SORACOM_AUTH_KEY_ID={SIMULATOR_AUTH_KEY_ID} SORACOM_AUTH_KEY={SIMULATOR_AUTH_KEY}")
    typer.echo(f"CloudBlue simulator on {cloudblue.base_url}")
    typer.echo(f"  APS_ENDPOINT={cloudblue.base_url} APS_RESOURCE_ID={cloudblue.resource_id}")
    typer.echo(
        f"  APS_OAUTH_CONSUMER_KEY={cloudblue.consumer_key} APS_OAUTH_CONSUMER_SECRET={cloudblue.consumer_secret}"
    )
    typer.echo(f"  or APS_TOKEN={cloudblue.aps_token}")
    typer.echo(f"  sessions and charges: GET {cloudblue.base_url}/_simulator/sessions")


@app.command("report")
def render_report(
    month: Annotated[
        str | None,
        typer.Argument(
            metavar="MONTH",
            help="The billing month, yyyyMM: renders its latest report in <out>/<month>/. Or --report FILE (not both).",
            show_default=False,
        ),
    ] = None,
    every_month: Annotated[
        bool,
        typer.Option("--history", help="Write <out>/history.html instead: every month kept in <out>, on one page."),
    ] = False,
    coverage: Annotated[
        str | None,
        typer.Option(help="Which coverage's bill, jp or g (needed when <out> holds the month's bills of both)."),
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option(help="A listed operator's bill (else the stack's own operator's)."),
    ] = None,
    report_file: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE",
            help="Any import report JSON, instead of a month (for example one copied from S3 "
            "reports/<yyyyMM>/<version>.json).",
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(help="Where to write the page. Default: beside the JSON (report.json -> report.html)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="The folder run and import save reports in.")] = Path("out"),
) -> None:
    """Write an import report as a self-contained HTML page (totals, reconciliation, chart, problems): a month's
    (MONTH) or any report JSON (--report FILE), exactly one of them; or with --history every month kept in --out
    on one page."""
    from soracharge_local import history, reports

    if every_month:
        others: list[tuple[str, object]] = [("the month", month), ("--report", report_file), ("--coverage", coverage)]
        others += [("--operator", operator), ("--html", html)]
        alongside = [f"{name} {value}" for name, value in others if value is not None]
        if alongside:
            _fail_input(f"--history writes every month's page: give it alone, not with {' and '.join(alongside)}")
        _folder(out)
        try:
            page = history.write_history(out)
        except InvalidInputError as exc:
            _fail_input(str(exc))
        typer.echo(f"History page written to {page} ({len(history.kept_reports(out))} reports of {out}/)")
        return
    if month is None and report_file is None:
        _fail_input(
            "give the month (soracharge report 202610) or a report JSON (soracharge report --report FILE), "
            "or --history for every month"
        )
    if month is not None and report_file is not None:
        _fail_input(
            f"give the month {month} or --report {report_file}, not both: the month renders its latest report "
            f"in {out}/, --report that file whatever month it is for"
        )
    if report_file is not None and (coverage is not None or operator is not None):
        given = " and ".join(o for o, v in (("--coverage", coverage), ("--operator", operator)) if v is not None)
        _fail_input(f"{given} pick a month's report in {out}/: they do not go with --report {report_file}")
    try:
        if report_file is not None:
            chosen, source = None, report_file
        else:
            chosen = parse_month(str(month))
            source = _month_report(out, chosen, coverage, operator)
        loaded = reports.load_report(source)
        written = reports.write_report_html(loaded, html or reports.default_html_path(source))
    except InvalidInputError as exc:
        _fail_input(str(exc))
    mismatch = reports.month_mismatch(loaded, chosen, source) if chosen is not None else None
    if mismatch:
        typer.secho(f"warning: {mismatch}", fg="yellow", err=True)
    typer.echo(f"HTML report written to {written}")
    typer.secho(f"Import {loaded.status}: {loaded.summary}", fg=reports.status_colour(loaded), bold=True)


def _month_report(out: Path, month: str, coverage: str | None, operator: str | None) -> Path:
    """The newest report of the month's bill in ``out`` (``coverage``'s, ``operator``'s), or InvalidInputError
    naming the folder looked in and what it holds."""
    from soracharge_local import history

    listed = parse_operator(operator) if operator is not None else None
    named = parse_coverage(coverage) if coverage else None
    try:
        return history.bill_report(out, month, listed, named).path
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"{exc}; pass --report FILE for another report JSON, for example one copied from S3 "
            "reports/<yyyyMM>/<version>.json"
        ) from None


@app.command()
def correction(
    imported: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The billing CSV the month was imported from.")
    ],
    corrected: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Its corrected version.")],
    month: Annotated[str, typer.Option(help="The billing month of both files, yyyyMM.")],
    also_imported: Annotated[
        list[Path] | None,
        typer.Option(
            "--also-imported",
            exists=True,
            dir_okay=False,
            help="A differences file imported for the month since (repeat for each): a second correction is "
            "made against everything imported, never against the first file alone.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the differences. Default: out/<month>/differences-<name>.csv")
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="The mapping the month was imported with (default: $SORACHARGE_MAPPING): with it, costs it shares "
            "out are compared as each customer's share, as their import computed it."
        ),
    ] = None,
    currency: Annotated[
        str | None, typer.Option(help="The bill's currency: JPY, USD or EUR (default: the mapping's).")
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option(
            help="The Soracom operator whose bill it is, when not the stack's own: read as the mapping reads that "
            "operator's bills (customer.operators)."
        ),
    ] = None,
) -> None:
    """Write the differences between an imported billing CSV and its corrected version, to import as a correction.

    Corrections go to CloudBlue as positive or negative differences, never as edits: import the file
    this writes as an additional file for the month (--additional here, import=additional in AWS).
    """
    from soracharge.logic.corrections import Allocation, write_differences

    try:
        chosen = parse_month(month)
        listed = parse_operator(operator) if operator is not None else None
    except InvalidInputError as exc:
        _fail_input(str(exc))
    allocation = None
    path = mapping or (Path(os.environ["SORACHARGE_MAPPING"]) if os.environ.get("SORACHARGE_MAPPING") else None)
    if path is not None:
        loaded = _parse_mapping_file(_mapping_path(path)).for_operator(listed)
        bill_currency = (currency or loaded.currency or "").strip().upper()
        if bill_currency not in ("JPY", "USD", "EUR"):
            _fail_input(
                f"the bill's currency {'is ' + repr(currency) + ', not JPY, USD or EUR' if currency else 'is unknown'}"
                f": give --currency JPY, USD or EUR (the mapping {path} says {loaded.currency or 'none'})"
            )
        allocation = Allocation(mapping=loaded, month=chosen, currency=bill_currency)
    target = out or Path("out") / chosen / f"differences-{corrected.stem}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with ExitStack() as files:
            bases = [(str(path), files.enter_context(path.open("rb"))) for path in [imported, *(also_imported or [])]]
            after = files.enter_context(corrected.open("rb"))
            sink = files.enter_context(partial.open("w", encoding="utf-8-sig", newline=""))
            result = write_differences(bases, (str(corrected), after), sink, allocation=allocation)
    except InvalidInputError as exc:
        partial.unlink(missing_ok=True)
        _fail_input(str(exc))
    typer.echo(
        f"Imported:       {result.imported_rows} rows, amounts sum to {result.imported_sum}\n"
        f"Corrected file: {result.corrected_rows} rows, amounts sum to {result.corrected_sum}"
    )
    if result.empty:
        partial.unlink()
        typer.secho("No differences: there is nothing to import.", bold=True)
        return
    partial.replace(target)
    typer.secho(
        f"Differences written to {target}: {result.rows_written} rows ({result.added} added, {result.removed} "
        f"removed, {result.changed} changed), amounts sum to {result.difference_sum} (corrected minus imported).",
        bold=True,
    )
    typer.echo(
        "Import them as an additional file for the month (they get charge ids of their own):\n"
        f"  soracharge import {target} --month {chosen} --mapping MAPPING --additional --dry-run   # check first\n"
        f"  aws s3 cp {target} s3://<DataBucketName>/uploads/{chosen}/{target.name} "
        "--metadata import=additional,currency=<JPY|USD|EUR> --region <region>"
    )


mapping_app = typer.Typer(help="Write and check mapping files.", no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")


@mapping_app.command("draft")
def mapping_draft(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A Soracom detailed billing CSV.")],
    mapping: Annotated[
        Path | None,
        typer.Option(help="The mapping in use: the draft then holds only the customer values and items it lacks."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the draft to this file (default: stdout).")] = None,
) -> None:
    """Draft a mapping file from a billing CSV: its customer columns and values, its bill items, FILL-IN placeholders.

    With --mapping OLD.yaml, only what OLD lacks (new customer values, new bill items), or a one-line
    "nothing new" comment: the monthly "what is new in this CSV" check. Exit 0 on success, 2 on bad input.
    """
    from soracharge.adapters.mapping_source import load_mapping
    from soracharge.logic.mapping_draft import draft_mapping, summarize_billing_csv

    try:
        old = load_mapping(str(mapping))[0] if mapping is not None else None
        with file.open("rb") as stream:
            summary = summarize_billing_csv(stream, str(file))
        draft = draft_mapping(summary, old, str(mapping) if mapping is not None else "")
    except (SorachargeError, OSError) as exc:
        _fail_input(str(exc))
    if out is None or draft.nothing_new:
        typer.echo(draft.text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(draft.text, encoding="utf-8")
    typer.echo(
        f"Draft written to {out}: {draft.customer_values} customer values, {draft.bill_items} bill items, "
        f"{draft.placeholders} FILL-IN placeholders to replace."
    )


# -- helpers ----------------------------------------------------------------------------------


@contextmanager
def _local_cloud(
    verbose: bool,
    *,
    mapping: Path | dict[str, Path] | None = None,
    soracom: SoracomAccess | None = None,
    import_on_upload: bool = True,
    coverages: tuple[Coverage, ...] = ("jp",),
    accounts: tuple[Account, ...] = (),
    customers: dict[str, str] | None = None,
) -> Iterator[LocalCloud]:
    _quiet_libraries(verbose)
    environment = {} if verbose else {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
    environment |= _tuning_from_shell()
    with ExitStack() as stack:
        try:
            soracom = soracom or soracom_access(stack, coverages, accounts, customers)
            cloudblue = cloudblue_access(stack)
        except SorachargeError as exc:
            _fail_input(str(exc))
        if soracom is not NO_SORACOM:
            if len(coverages) == 1:
                typer.echo(f"Soracom:   {soracom.endpoint}")
            for each in coverages if len(coverages) > 1 else ():
                typer.echo(f"Soracom:   {soracom.endpoint_of(each)} ({coverage_label(each)})")
            for account in accounts:
                how = f"switched into as {account.switch_user}" if account.switch_user else "its own AuthKey"
                typer.echo(f"Soracom:   operator {account.operator} on {','.join(account.coverages)} ({how})")
        if import_on_upload:
            typer.echo(f"CloudBlue: {cloudblue.endpoint}")
        cloud = stack.enter_context(
            LocalCloud(
                soracom=soracom,
                cloudblue=cloudblue,
                mapping=mapping,
                import_on_upload=import_on_upload,
                environment=environment,
                coverages=coverages,
                accounts=json.dumps([a.model_dump(mode="json", by_alias=True, exclude_none=True) for a in accounts])
                if accounts
                else "",
                # The tests' switch: Wait states and retry intervals return at once (the template keeps them).
                instant_waits=os.environ.get(INSTANT_WAITS) == "1",
            )
        )
        typer.echo(f"Local stack deployed from template.yaml into moto (bucket {cloud.bucket}).")
        if import_on_upload:
            try:
                stack.enter_context(kept_ledger(cloud, cloudblue))
            except SorachargeError as exc:
                _fail_input(str(exc))
        yield cloud


#: Settings a local run takes from the shell for its functions (validated first; the others are the stack's own).
_PASSED_TO_FUNCTIONS = (
    "SORACOM_TIMEOUT_SECONDS",
    "SORACOM_DOWNLOAD_TIMEOUT_SECONDS",
    "SORACOM_TOKEN_TIMEOUT_SECONDS",
    "APS_TIMEOUT_SECONDS",
    "APS_MAX_ATTEMPTS",
    "IMPORT_CONCURRENCY",
)


def _tuning_from_shell() -> dict[str, str]:
    """Every setting the shell gives a local run, checked before anything starts (a bad one exits 2, naming
    the variable and its value); the ones the functions take, as given."""
    from soracharge.settings import LocalSettings, load_settings

    try:
        load_settings(LocalSettings)
    except SorachargeError as exc:
        _fail_input(str(exc))
    return {name: os.environ[name] for name in _PASSED_TO_FUNCTIONS if name in os.environ}


def _run_month(
    cloud: LocalCloud,
    month: str,
    coverage: Coverage,
    out: Path,
    label: str,
    review: tuple[str, str, str, int] | None = None,
    operator: str | None = None,
    command: str = "run",
    decide_with: str = "",
) -> tuple[str, str, bool]:
    """One month's bill of one coverage (of ``operator``, one SoracomAccounts lists; None: the stack's own)
    through the whole chain, its CSV and report saved in a new folder of ``out`` (the bill's slot) named after
    ``command``; (label, outcome, whether rated and balanced)."""
    account = BillAccount(coverage, operator)
    typer.echo(f"\nExporting {month} ({account.label}):\n")
    printer = console.EventPrinter()
    since = len(cloud.async_invocations.deliveries)
    payload = {"month": month, "coverage": coverage, **({"operator": operator} if operator else {})}
    result = cloud.run(
        EXPORT_STATE_MACHINE,
        payload,
        name=_execution_name("export", month, coverage if operator is None else f"{coverage}-{operator}"),
        on_event=printer,
    )
    if result.status != "SUCCEEDED":
        console.print_failure("Export", result)
        _print_alerts(cloud)
        return label, f"export FAILED: {result.error}", False
    output = result.output or {}
    stored = output["s3"]
    if output.get("alreadyExported"):
        typer.secho(f"\nNothing to do: {output['summary']}", bold=True)
        report = _stored_report(cloud, month, stored)
        if report is None:
            _print_alerts(cloud)
            return label, "already exported; its import report is not written yet", False
        folder = _run_folder(out, command)
    else:
        typer.echo(f"\nThe CSV landed at {stored['uri']}; its S3 notification runs the import:\n")
        folder = _run_folder(out, command)
        _save_object(cloud, stored["key"], stored["versionId"], folder / Path(stored["key"]).name)
        report = _reviewed(cloud, _follow_import(cloud, printer, since), review, printer)
    ok = _finish(report, folder, cloud, decide_with)
    again = output.get("alreadyExported") or report["status"] == "DUPLICATE"
    if again:
        typer.secho("\nNothing done: this month's bill is imported into this CloudBlue already.", bold=True)
    return label, f"{report['status']}{' (a re-run: nothing done again)' if again else ''}: {report['summary']}", ok


def _stored_report(cloud: LocalCloud, month: str, stored: dict[str, Any]) -> dict[str, Any] | None:
    key = f"reports/{month}/{stored['versionId']}.json"
    s3 = cloud.client("s3")
    try:
        body = s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return dict(json.loads(body))


def _print_outcomes(outcomes: list[tuple[str, str, bool]]) -> None:
    typer.echo("\nBills:" if any(" " in label for label, _, _ in outcomes) else "\nMonths:")
    width = max(len(label) for label, _, _ in outcomes)
    for label, outcome, ok in outcomes:
        typer.secho(f"  {label:<{width}}  {'ok    ' if ok else 'FAILED'}  {outcome}", fg="green" if ok else "red")


def _print_alerts(cloud: LocalCloud) -> None:
    """What the alerts topic received: what people subscribed to it would read."""
    for alert in cloud.alerts():
        typer.secho(f"\nAlert sent to the alerts topic: {alert['subject']}", fg="yellow", bold=True)
        for line in alert["message"].splitlines():
            typer.echo(f"  | {line}")


def _follow_import(cloud: LocalCloud, printer: console.EventPrinter, since: int = 0) -> dict[str, Any]:
    """Wait for the import the S3 notification started, then follow its session to the end."""
    deliveries = cloud.import_deliveries(since)
    if not deliveries:
        typer.secho("No import ran: the S3 notification did not reach the import function.", fg="red", err=True)
        raise typer.Exit(1)
    delivery = deliveries[-1]
    if delivery.error is not None:
        typer.secho(f"The import failed after {delivery.attempts} attempts: {delivery.error}", fg="red", err=True)
        _print_alerts(cloud)
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


def _finish(report: dict[str, Any], folder: Path, cloud: LocalCloud, decide_with: str = "") -> bool:
    """Print and save the report (JSON and HTML, in the command's own ``folder``) and the alerts it caused; True
    when rated and balanced. A month held for approval is followed by the two commands that decide it, complete
    with ``decide_with`` (the options the command was given that they need: see _decision_options)."""
    from soracharge_local import history, reports

    typer.echo("")
    console.print_report(report)
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / history.REPORT
    saved.write_text(json.dumps(report, ensure_ascii=False, indent=2))
    page = reports.write_report_html(reports.load_report(saved), saved.with_suffix(".html"))
    typer.echo(f"\nReport saved to {saved} and {page}")
    _print_alerts(cloud)
    if report["status"] == "AWAITING_APPROVAL":
        month, coverage = report.get("month"), report.get("coverage")
        which = f" --coverage {coverage}" if folder.parent.name == coverage else ""
        if report.get("operator"):
            which = f" --operator {report['operator']}{which}"
        typer.secho(
            f"\nHeld for approval: nothing was sent. Read the preview ({page}), then either\n"
            f"  soracharge approve --month {month}{which} --by YOUR-NAME{decide_with}   (sends exactly the charges "
            "previewed)\n"
            f"  soracharge reject --month {month}{which} --by YOUR-NAME{decide_with}    (sends nothing)",
            fg="yellow",
            bold=True,
        )
    reconciliation = report.get("reconciliation") or {}
    return report["status"] in ("PROCESSED", "DUPLICATE") and bool(reconciliation.get("balanced", True))


def _dry_run(
    file: Path,
    month: str,
    mapping_path: Path,
    currency: str | None,
    out: Path,
    *,
    additional: bool = False,
    coverage: Coverage | None = None,
    operator: str | None = None,
) -> None:
    from soracharge.adapters.mapping_source import load_mapping
    from soracharge.logic.imports import dry_run_report, file_currency

    try:
        mapping, source = load_mapping(str(mapping_path))
    except SorachargeError as exc:
        _fail_input(str(exc))
    # As the import settles them: the coverage named (or its currency's), else the stack's when it has one.
    stack = _coverages(None)
    if coverage is None and len(stack) > 1 and operator is None:
        _fail_input(
            f"this stack imports {' and '.join(coverage_label(c) for c in stack)} bills and the file names neither: "
            "give --coverage jp|g (or --currency)"
        )
    chosen_coverage = coverage or stack[0]
    chosen_currency, problems = file_currency(chosen_coverage, {"currency": currency or ""}, mapping.currency)
    if problems:
        _fail_input(problems[0].message)
    own = additional_id_suffix(hashlib.sha256(file.read_bytes()).hexdigest()) if additional else ""
    with file.open("rb") as stream:
        plan, report = dry_run_report(
            stream,
            month=month,
            currency=chosen_currency,
            mapping=mapping,
            source=str(file),
            coverage=chosen_coverage,
            additional_suffix=own,
            operator=operator,
        )
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


def _billable_months(months: list[str] | None, first: str | None, last: str | None) -> list[str]:
    """The months asked for (each ``--month``, then the ``--from``/``--to`` range), all checked before any runs."""
    today = datetime.now(UTC)
    if last is not None and first is None:
        _fail_input("--to needs --from")
    try:
        chosen = [parse_month(m) for m in months or []]
        if first is not None:
            start, end = parse_month(first), parse_month(last or first)
            if month_index(end) < month_index(start):
                raise InvalidInputError(f"--to {end} is before --from {start}")
            chosen += months_between(start, end)
    except InvalidInputError as exc:
        _fail_input(str(exc))
    chosen = chosen or [previous_month(today)]
    problems = []
    for month in dict.fromkeys(chosen):
        try:
            ensure_billable(month, today.date())
        except InvalidInputError as exc:
            problems.append(str(exc))
    if problems:
        _fail_input("nothing was run:\n  " + "\n  ".join(problems))
    return chosen


def _import_stack(named: Coverage | None, settled: Coverage | None) -> tuple[tuple[Coverage, ...], Coverage | None]:
    """The local stack's coverages for ``import`` and the coverage folder to upload to (None: ``uploads/<month>/``).

    ``--coverage`` names the folder; a coverage told by the currency needs one only on a stack of both.
    """
    stack = _coverages(None)
    if named is not None:
        return (named,), named
    if settled is None:
        return stack, None
    return (stack, settled) if len(stack) > 1 and settled in stack else ((settled,), None)


def _accounts(given: str | None) -> tuple[Account, ...]:
    """``--accounts``'s, else $SORACOM_ACCOUNTS's, else none: the operators exported besides the stack's own."""
    try:
        return parse_accounts(given if given is not None else os.environ.get("SORACOM_ACCOUNTS", ""))
    except ValueError as exc:
        _fail_input(f"{'--accounts' if given is not None else 'SORACOM_ACCOUNTS'}: {exc}")


def _account_of(operator: str, coverage: Coverage | None) -> Account:
    """The account of ``operator`` as $SORACOM_ACCOUNTS lists it (Switch User or its own AuthKey), on
    ``coverage``, else on its only one; an operator it does not list is reached with its own AuthKey."""
    listed = next((a for a in _accounts(None) if a.operator == operator), None)
    if listed is None:
        return Account(operator=operator, coverages=(coverage or _coverages(None)[0],))
    if coverage is None and len(listed.coverages) > 1:
        _fail_input(f"SORACOM_ACCOUNTS lists {operator} on jp and g: give --coverage jp|g")
    chosen = coverage or listed.coverages[0]
    if chosen not in listed.coverages:
        _fail_input(f"SORACOM_ACCOUNTS lists {operator} on {','.join(listed.coverages)} only, not {chosen}")
    return listed.model_copy(update={"coverages": (chosen,)})


def _operator_customers(mappings: Path | dict[str, Path]) -> dict[str, str]:
    """The customer each operator's bill is given to by the mappings' ``customer.operators`` (the simulator
    tags that operator's SIMs with it, as a provider with an operator per end customer would)."""
    paths = [mappings] if isinstance(mappings, Path) else list(mappings.values())
    given: dict[str, str] = {}
    for path in paths:
        given |= _parse_mapping_file(path).customer.operators
    return given


def _coverages(given: list[str] | None) -> tuple[Coverage, ...]:
    """``--coverage``'s (repeated), else $SORACOM_COVERAGE_TYPE's, else jp."""
    try:
        return parse_coverages(given or os.environ.get("SORACOM_COVERAGE_TYPE") or "jp")
    except InvalidInputError as exc:
        _fail_input(f"{'--coverage' if given else 'SORACOM_COVERAGE_TYPE'}: {exc}")


def _mappings(given: list[str] | None, coverages: tuple[Coverage, ...]) -> Path | dict[str, Path]:
    """One mapping for every coverage, or ``COVERAGE=FILE`` for each (every coverage run needs one)."""
    if not given or (len(given) == 1 and "=" not in given[0]):
        return _mapping_path(Path(given[0]) if given else None)
    chosen: dict[str, Path] = {}
    for entry in given:
        named, separator, path = entry.partition("=")
        if not separator:
            _fail_input(f"--mapping {entry}: with several mappings, give each as COVERAGE=FILE (jp=FILE, g=FILE)")
        try:
            chosen[parse_coverage(named)] = _mapping_path(Path(path))
        except InvalidInputError as exc:
            _fail_input(f"--mapping {entry}: {exc}")
    missing = [c for c in coverages if c not in chosen]
    if missing:
        _fail_input(f"--mapping names no mapping for {coverage_label(missing[0])} ({missing[0]}=FILE)")
    return chosen


def _label(month: str, coverage: Coverage, coverages: tuple[Coverage, ...]) -> str:
    return f"{month} {coverage}" if len(coverages) > 1 else month


def _mapping_path(mapping: Path | None) -> Path:
    """The mapping a command was given (or $SORACHARGE_MAPPING), read and checked before anything starts: a
    mapping the import would refuse exits 2 here, naming its mistake, not after a stack and three attempts."""
    chosen = mapping or (Path(os.environ["SORACHARGE_MAPPING"]) if os.environ.get("SORACHARGE_MAPPING") else None)
    if chosen is None:
        _fail_input("no mapping: pass --mapping FILE or set SORACHARGE_MAPPING (see examples/mapping.example.yaml)")
    if str(chosen).startswith("s3://") or not chosen.is_file():
        _fail_input(f"the mapping {chosen} is not a file on this machine")
    _parse_mapping_file(chosen)
    return chosen


def _save_object(cloud: LocalCloud, key: str, version_id: str, destination: Path) -> None:
    body = cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key, VersionId=version_id)["Body"]
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as sink:
        for chunk in body.iter_chunks(1024 * 1024):
            sink.write(chunk)
    typer.secho(f"Saved a copy to {destination}", bold=True)


def _execution_name(kind: str, month: str, coverage: str) -> str:
    """A readable execution name that never repeats: a re-run in the same second is another execution."""
    return f"{kind}-{month}-{coverage}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _run_folder(slot: Path, command: str) -> Path:
    """A new folder in the bill's ``slot`` for what ``command`` saves now (``<yyyyMMddTHHmmssZ>-<command>``), or
    exit 2 saying why it cannot be made."""
    from soracharge_local import history

    try:
        return history.new_run_folder(slot, command)
    except InvalidInputError as exc:
        _fail_input(str(exc))


def _folder(path: Path, option: str = "--out") -> Path:
    """``path`` as a folder the command can write in (made if missing), or exit 2 saying why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        _fail_input(f"{option} {path} is a file, not a folder: give a folder (it is made if missing)")
    except OSError as exc:
        _fail_input(f"{option} {path} cannot be made or written: {exc.strerror}")
    if not os.access(path, os.W_OK):
        _fail_input(f"{option} {path} cannot be written by this user")
    return path


def _file(path: Path, option: str = "--out") -> Path:
    """``path`` as a file the command can write (its folder made if missing), or exit 2 saying why not."""
    if path.is_dir():
        _fail_input(f"{option} {path} is a folder, not a file: give the file's name")
    _folder(path.parent, option)
    return path


def _parse_mapping_file(path: Path) -> Mapping:
    """The mapping file, or exit 2 naming its mistakes."""
    from soracharge.errors import MappingError
    from soracharge.models.mapping import parse_mapping

    try:
        return parse_mapping(path.read_text(encoding="utf-8"), str(path))
    except (MappingError, UnicodeDecodeError) as exc:
        _fail_input(str(exc))


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
