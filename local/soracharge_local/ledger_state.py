"""The local ledger, kept from one command to the next for a CloudBlue that outlives the command.

On AWS the ledger is a DynamoDB table that lives as long as the stack, so a month imported is never
imported again. Locally each command deploys a fresh stack into moto. With the built-in CloudBlue
simulator that is right (it is a fresh CloudBlue too: nothing was imported into it). With
``APS_ENDPOINT`` (a real CloudBlue, or any server that outlives the command) the ledger's records are
kept in a file per CloudBlue, loaded into the stack before the command runs and saved when it ends::

    $SORACHARGE_STATE_DIR/ledger/<host>-<hash of endpoint and resource id>.json
    (SORACHARGE_STATE_DIR defaults to $XDG_STATE_HOME/soracharge, else ~/.local/state/soracharge)

so ``soracharge run --month M`` twice imports the month once: the second finds the month's bill and
its bytes in the ledger and says it did nothing. One command at a time per CloudBlue (a lock beside
the file): a second one is refused, saying so. A command that stopped mid-import (Ctrl-C) leaves its
file's attempt unfinished: it can never be retried (the next command's S3 is a fresh one), so the
next command says what it left: a session it had marked closing is the month's bill, and is closed
(if CloudBlue still has it open) and recorded; any other session it used was never closed, so
CloudBlue never rates it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
from pydantic import SecretStr
from soracharge.adapters.cloudblue import ApsTokenAuth, CloudBlueClient, OAuth1TwoLegged
from soracharge.errors import ConfigurationError, SorachargeError

from soracharge_local.engine import CloudBlueAccess, LocalCloud

STATE_DIR = "SORACHARGE_STATE_DIR"


def state_dir() -> Path:
    """``$SORACHARGE_STATE_DIR``, else ``$XDG_STATE_HOME/soracharge``, else ``~/.local/state/soracharge``."""
    if chosen := os.environ.get(STATE_DIR):
        return Path(chosen)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "soracharge"


def ledger_file(cloudblue: CloudBlueAccess) -> Path:
    """The file that keeps the ledger of what was imported into ``cloudblue``."""
    identity = f"{cloudblue.endpoint.rstrip('/')}|{cloudblue.resource_id or ''}"
    host = urlsplit(cloudblue.endpoint).hostname or "cloudblue"
    return state_dir() / "ledger" / f"{host}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}.json"


@contextlib.contextmanager
def kept_ledger(cloud: LocalCloud, cloudblue: CloudBlueAccess) -> Iterator[Path | None]:
    """The stack's ledger loaded from ``cloudblue``'s file and saved back when the block ends (None and
    nothing kept for the built-in simulator). :class:`ConfigurationError` when the file cannot be used."""
    if cloudblue.simulated:
        yield None
        return
    path = ledger_file(cloudblue)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (path.parent / f"{path.name}.lock").open("a")
    except OSError as exc:
        raise ConfigurationError(
            f"the ledger of what was imported into {cloudblue.endpoint} is kept in {path}, which cannot be "
            f"written ({exc.strerror}): set {STATE_DIR} to a folder this user can write. Without it a second "
            "command could import a month into that CloudBlue again, so nothing is run"
        ) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"another soracharge command is importing into {cloudblue.endpoint} right now (it holds "
                f"{lock.name}): run this one when it has ended"
            ) from None
        table = cloud.resources["LedgerTable"]
        dynamodb = cloud.client("dynamodb")
        items = _load(path)
        for item in items:
            dynamodb.put_item(TableName=table, Item=item)
        imported = sum(1 for item in items if item["pk"]["S"].startswith("bill#"))
        typer.echo(f"Ledger:    {path} ({imported} bills imported into this CloudBlue before)")
        _finish_stopped(cloud, cloudblue, table, items)
        try:
            yield path
        finally:
            cloud.async_invocations.wait_idle()  # every import the command started has ended
            _save(path, _scan(dynamodb, table))


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        items = json.loads(path.read_text(encoding="utf-8"))["items"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"the ledger file {path} cannot be read ({exc}): it is what keeps a month from being imported twice "
            "into that CloudBlue, so nothing is run. Restore it from a backup, or move it away if nothing was "
            "ever imported with it"
        ) from None
    return list(items)


def _save(path: Path, items: list[dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"version": 2, "items": items}, ensure_ascii=False, indent=1), encoding="utf-8")
    partial.replace(path)


def _scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items += page["Items"]
    return sorted(items, key=lambda item: str(item["pk"]["S"]))


def _finish_stopped(cloud: LocalCloud, cloudblue: CloudBlueAccess, table: str, items: list[dict[str, Any]]) -> None:
    """What a command stopped mid-import left (its objects are gone with its S3): finish a session it had
    marked closing (the month's bill), and say which sessions were never closed."""
    stopped = [i for i in items if i["pk"]["S"].startswith("object#") and i.get("status", {}).get("S") == "IMPORTING"]
    if not stopped:
        return
    dynamodb = cloud.client("dynamodb")
    client = CloudBlueClient(endpoint=cloudblue.endpoint, auth=_auth(cloudblue), resource_id=cloudblue.resource_id)
    try:
        for item in stopped:
            object_id = item["pk"]["S"].removeprefix("object#")
            closing = item.get("closing_session", {}).get("N")
            if closing is not None:
                client.close_session(int(closing))  # closed already (a lost answer): counted as closed
                dynamodb.update_item(
                    TableName=table,
                    Key={"pk": item["pk"]},
                    UpdateExpression="SET #status = :closed, lease_until = :zero",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={":closed": {"S": "CLOSED"}, ":zero": {"N": "0"}},
                )
                typer.secho(
                    f"A command stopped while it closed CloudBlue session {closing} for {object_id}: the session "
                    "is the month's bill; it is closed, and recorded as imported.",
                    fg="yellow",
                )
            else:  # its object is gone: the record of an attempt nobody can retry is dropped, once said
                session = item.get("session_id", {}).get("N")
                dynamodb.delete_item(TableName=table, Key={"pk": item["pk"]})
                typer.secho(
                    f"A command stopped while it imported {object_id}"
                    + (f": its session {session} was never closed, so CloudBlue never rates it" if session else "")
                    + ". Nothing of it is imported: import the file again.",
                    fg="yellow",
                )
    except SorachargeError as exc:
        raise ConfigurationError(f"cannot finish what a stopped command left in {cloudblue.endpoint}: {exc}") from None
    finally:
        client.close()


def _auth(cloudblue: CloudBlueAccess) -> OAuth1TwoLegged | ApsTokenAuth:
    if cloudblue.consumer_key and cloudblue.consumer_secret:
        return OAuth1TwoLegged(cloudblue.consumer_key, SecretStr(cloudblue.consumer_secret))
    token = SecretStr(cloudblue.aps_token or "")
    return ApsTokenAuth(lambda: token)
