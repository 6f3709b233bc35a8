"""The runbook, performed as a person would: read each alert, do what its last line names, exactly as it says.

An alert (``soracharge.logic.alerts``) ends with ``Runbook action: <action>``
(:class:`soracharge.models.runbook.Remedy`); the README's runbook table has one row per action.
:data:`PERFORMERS` has one function per action, and a test keeps the three lists equal
(``tests/template/test_runbook.py``). Each performer takes only what the alert gives: its command
(run as a shell would run it, ``$(date ...)`` included), its facts (the file, its version,
``errorDesc``) and the metadata its text names. "Fix the cause" is the faults switched off and
time passing (the harness's ``calm``); a cause inside CloudBlue (an inactive subscription) is
fixed only by the performer that reads ``errorDesc``, as a person would fix it in CloudBlue.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from soracharge.logic.corrections import Allocation, write_differences
from soracharge.models.runbook import RUNBOOK_LINE, Remedy

if TYPE_CHECKING:
    from tests.chaos.harness import Cycle


@dataclass(frozen=True)
class ReceivedAlert:
    """One message of the alerts topic, read as a person reads it."""

    subject: str
    message: str
    remedy: Remedy | None
    facts: dict[str, str] = field(default_factory=dict)
    action: str = ""
    command: str | None = None
    #: Every command it gives, in order (``command`` is the first).
    commands: tuple[str, ...] = ()

    @classmethod
    def read(cls, subject: str, message: str) -> ReceivedAlert:
        lines = message.splitlines()
        remedy: Remedy | None = None
        if lines and lines[-1].startswith(RUNBOOK_LINE):
            try:
                remedy = Remedy(lines[-1].removeprefix(RUNBOOK_LINE).strip())
            except ValueError:
                remedy = None
        facts: dict[str, str] = {}
        action, commands = "", []
        for line in lines[1:]:
            if line.startswith("What to do: "):
                action = line.removeprefix("What to do: ")
            elif line.startswith("aws "):
                commands.append(line)
            elif not action and ":" in line and not line.startswith(" "):
                name, _, value = line.partition(":")
                facts.setdefault(name.strip(), value.strip())
        return cls(
            subject=subject,
            message=message,
            remedy=remedy,
            facts=facts,
            action=action,
            command=commands[0] if commands else None,
            commands=tuple(commands),
        )

    def review_payload(self, decision: str, by: str) -> dict[str, Any] | None:
        """The payload of its ``lambda invoke`` command that decides ``decision``, with ``by`` for YOUR NAME."""
        for command in self.commands:
            words = shlex.split(command)
            if "--payload" not in words:
                continue
            payload: dict[str, Any] = json.loads(option(words, "--payload"))
            review = payload.get("review") or {}
            if review.get("decision") == decision and review.get("by") == "YOUR NAME":
                return {"review": {**review, "by": by}}
        return None

    @property
    def month(self) -> str:
        return self.facts.get("Month", "")

    def file(self) -> tuple[str, str, str | None]:
        """The alert's file: (bucket, key, version), from its ``File`` (and ``Version``) facts."""
        text = self.facts.get("File", "")
        uri, _, rest = text.partition(" (version ")
        version = rest.rstrip(")") or self.facts.get("Version")
        parts = urlsplit(uri)
        return parts.netloc, parts.path.lstrip("/"), None if version in (None, "", "-") else version

    def upload_folder(self) -> str:
        """Where its text says to upload (``uploads/<yyyyMM>/``, or a coverage's ``uploads/<yyyyMM>/g/``)."""
        found = re.search(r"\buploads/\d{6}/(?:(?:jp|g)/)?", self.action)
        return found.group(0) if found else f"uploads/{self.month}/"

    def metadata(self) -> dict[str, str]:
        """The metadata its text says to upload with (``--metadata a=b,c=d``)."""
        found = re.search(r"--metadata ([A-Za-z0-9_=,.-]+)", self.action)
        if found is None:
            return {}
        return dict(pair.split("=", 1) for pair in found.group(1).split(",") if "=" in pair)


def shell_words(command: str, clock: Callable[[], float]) -> list[str]:
    """The words of ``command`` as a shell gives them to ``aws``: ``$(date +FORMAT)`` substituted first."""
    expanded = re.sub(
        r"\$\(date \+([^)]*)\)", lambda match: time.strftime(match.group(1), time.gmtime(clock())), command
    )
    return shlex.split(expanded)


def option(words: list[str], name: str) -> str:
    index = words.index(name)
    return words[index + 1]


# -- the performers: one per runbook action ------------------------------------------------------


def start_export(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """The alert's ``aws stepfunctions start-execution`` command for the export state machine."""
    return _start_execution(cycle, alert)


def follow_again(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """The alert's ``aws stepfunctions start-execution`` command for the follow-import-session state machine."""
    return _start_execution(cycle, alert)


def redeliver_event(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """The alert's ``aws lambda invoke --invocation-type Event`` command: the same S3 event, delivered again."""
    if alert.command is None:
        return cycle.unperformable(alert, "the alert has no command")
    words = shell_words(alert.command, cycle.world.clock)
    if words[:3] != ["aws", "lambda", "invoke"] or option(words, "--invocation-type") != "Event":
        return cycle.unperformable(alert, f"not an asynchronous lambda invoke: {alert.command[:120]}")
    if (wrong := _not_in_stack_region(cycle, words)) is not None:
        return cycle.unperformable(alert, wrong)
    function = option(words, "--function-name").rsplit(":", 1)[-1]
    payload = json.loads(option(words, "--payload"))
    return cycle.settle_all([cycle.world.invoke_async(function, payload)])


def upload_again(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """Upload the file again, to the folder the alert names (``uploads/<month>/[<coverage>/]``), with its currency."""
    return _upload(cycle, alert, {"currency": alert.metadata().get("currency", "JPY")})


def upload_additional(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """Fix the cause in CloudBlue (what ``errorDesc`` names), then upload the file with ``import=additional``."""
    cycle.fix_in_cloudblue()
    metadata = alert.metadata()
    if metadata.get("import") != "additional":
        return cycle.unperformable(alert, "the alert does not name the metadata import=additional")
    return _upload(cycle, alert, metadata)


def import_differences(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """Import only the differences (``soracharge correction``) between what was imported and the right file.

    A second file held: the file imported before (``Imported before``) against this one. A reconciliation
    that does not balance because the CSV is incomplete: the imported file against Soracom's complete CSV.
    """
    world = cycle.world
    bucket, key, version = alert.file()
    this = world.object_bytes(bucket, key, version)
    if "Imported before" in alert.facts:
        imported_id = alert.facts["Imported before"]
        imported = world.object_bytes(*_object_id(imported_id))
        corrected = this
    else:
        imported, corrected = this, world.soracom.csv_bytes(alert.month)
    sink = io.StringIO()
    # as the alert says: `soracharge correction ... --mapping MAPPING` (the month's shares compared per customer)
    allocation = Allocation(world.mapping, alert.month, world.soracom.currency)
    differences = write_differences(
        [("imported.csv", io.BytesIO(imported))], ("corrected.csv", io.BytesIO(corrected)), sink, allocation=allocation
    )
    if differences.empty:
        cycle.result.notes.append("import-differences: no difference to import")
        return True
    metadata = alert.metadata()
    if metadata.get("import") != "additional":
        return cycle.unperformable(alert, "the alert does not name the metadata import=additional")
    target = f"{alert.upload_folder()}differences-{len(cycle.result.reruns)}.csv"
    deliveries = world.put(target, sink.getvalue().encode("utf-8"), metadata)
    return cycle.settle_all(deliveries)


def approve(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """A month held for approval: the preview read, the alert's approve command run with a name for YOUR NAME."""
    payload = alert.review_payload("approve", "runbook")
    if payload is None or alert.command is None:
        return cycle.unperformable(alert, "the alert has no approve command")
    words = shell_words(alert.command, cycle.world.clock)
    if (wrong := _not_in_stack_region(cycle, words)) is not None:
        return cycle.unperformable(alert, wrong)
    function = option(words, "--function-name").rsplit(":", 1)[-1]
    cycle.fired_here.add("review.approval")
    return cycle.settle_all([cycle.world.invoke_async(function, payload)])


def nothing(cycle: Cycle, alert: ReceivedAlert) -> bool:
    """The alert says nothing is to be done (and why)."""
    return True


PERFORMERS: dict[Remedy, Callable[[Cycle, ReceivedAlert], bool]] = {
    Remedy.START_EXPORT: start_export,
    Remedy.REDELIVER_EVENT: redeliver_event,
    Remedy.UPLOAD_AGAIN: upload_again,
    Remedy.UPLOAD_ADDITIONAL: upload_additional,
    Remedy.IMPORT_DIFFERENCES: import_differences,
    Remedy.FOLLOW_AGAIN: follow_again,
    Remedy.APPROVE: approve,
    Remedy.NOTHING: nothing,
}


# -- helpers ----------------------------------------------------------------------------------------


def _start_execution(cycle: Cycle, alert: ReceivedAlert) -> bool:
    if alert.command is None:
        return cycle.unperformable(alert, "the alert has no command")
    words = shell_words(alert.command, cycle.world.clock)
    if words[:3] != ["aws", "stepfunctions", "start-execution"]:
        return cycle.unperformable(alert, f"not a start-execution command: {alert.command[:120]}")
    if (wrong := _not_in_stack_region(cycle, words)) is not None:
        return cycle.unperformable(alert, wrong)
    payload: dict[str, Any] = json.loads(option(words, "--input"))
    return cycle.run_execution(option(words, "--state-machine-arn"), option(words, "--name"), payload)


def _not_in_stack_region(cycle: Cycle, words: list[str]) -> str | None:
    """Why the command would not reach the stack from a person's shell (another region, or none named: the
    shell's default region), or None when it names the stack's region."""
    if "--region" not in words:
        return "the command names no --region: it would run in whatever region the person's shell defaults to"
    named, region = option(words, "--region"), cycle.world.cloud.region
    return None if named == region else f"the command names --region {named}, the stack is in {region}"


def _upload(cycle: Cycle, alert: ReceivedAlert, metadata: dict[str, str]) -> bool:
    bucket, key, version = alert.file()
    if not key:
        return cycle.unperformable(alert, "the alert names no file")
    stem = key.rsplit("/", 1)[-1].removesuffix(".csv")
    target = f"{alert.upload_folder()}{stem}-again-{len(cycle.result.reruns)}.csv"
    body = cycle.world.object_bytes(bucket, key, version)
    return cycle.settle_all(cycle.world.put(target, body, metadata))


def _object_id(object_id: str) -> tuple[str, str, str | None]:
    """``bucket/key#version`` (the ledger's object ids, as reports name them) as (bucket, key, version)."""
    path, _, version = object_id.partition("#")
    bucket, _, key = path.partition("/")
    return bucket, key, None if version in ("", "null") else version
