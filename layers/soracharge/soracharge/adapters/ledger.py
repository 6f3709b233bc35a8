"""The import ledger (DynamoDB): what happened to each S3 object version, so nothing is imported twice.

One item per object version (``pk = object#<bucket>/<key>#<versionId>``) records its status, the
CloudBlue session it is imported in, and the packets CloudBlue accepted. A claim is a conditional
write with a lease: a duplicate S3 event finds the version claimed or finished and does nothing;
a retry after a crash finds the lease expired and resumes in the same session, skipping the
packets already accepted. One item per (month, SHA-256 of the file) makes a second file with the
same bytes for the same month (an export run twice) a recorded duplicate instead of a second import.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from soracharge.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LedgerStatus = Literal["IMPORTING", "REJECTED", "DUPLICATE", "CLOSED", "PROCESSED", "FAILED_PROCESSED", "NOT_RATED"]
FINISHED: frozenset[str] = frozenset({"REJECTED", "DUPLICATE", "PROCESSED", "FAILED_PROCESSED", "NOT_RATED"})


@dataclass(frozen=True)
class LedgerEntry:
    object_id: str
    status: LedgerStatus
    session_id: int | None = None
    packets: int | None = None
    accepted: frozenset[int] = frozenset()
    report_key: str | None = None
    duplicate_of: str | None = None
    attempts: int = 0
    lease_until: float = 0.0


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an object version: ``granted`` when this invocation may work on it."""

    granted: bool
    entry: LedgerEntry


class Ledger(Protocol):
    def claim(self, object_id: str, *, month: str, lease_seconds: float) -> Claim: ...

    def claim_content(self, month: str, sha256: str, object_id: str) -> str: ...

    def get(self, object_id: str) -> LedgerEntry | None: ...

    def record_session(self, object_id: str, session_id: int, packets: int, report_key: str) -> None: ...

    def record_packet(self, object_id: str, index: int) -> None: ...

    def set_status(self, object_id: str, status: LedgerStatus, **fields: str | int) -> None: ...

    def release(self, object_id: str) -> None: ...


class DynamoDbLedger:
    def __init__(self, client: DynamoDBClient, table: str, clock: Any = time.time) -> None:
        self._db = client
        self._table = table
        self._clock = clock

    def claim(self, object_id: str, *, month: str, lease_seconds: float) -> Claim:
        now = self._clock()
        try:
            item = self._db.update_item(
                TableName=self._table,
                Key=_key(object_id),
                UpdateExpression=(
                    "SET #status = if_not_exists(#status, :importing), lease_until = :lease, #month = :month, "
                    "attempts = if_not_exists(attempts, :zero) + :one, updated_at = :now"
                ),
                ConditionExpression="attribute_not_exists(pk) OR (#status = :importing AND lease_until < :now)",
                ExpressionAttributeNames={"#status": "status", "#month": "month"},
                ExpressionAttributeValues={
                    ":importing": {"S": "IMPORTING"},
                    ":lease": {"N": repr(now + lease_seconds)},
                    ":month": {"S": month},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":now": {"N": repr(now)},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
            return Claim(granted=True, entry=_entry(object_id, item))
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise StorageError(f"ledger {self._table}: cannot claim {object_id}: {_reason(exc)}") from exc
        entry = self.get(object_id)
        if entry is None:  # deleted between the two calls: claim again
            return self.claim(object_id, month=month, lease_seconds=lease_seconds)
        return Claim(granted=False, entry=entry)

    def claim_content(self, month: str, sha256: str, object_id: str) -> str:
        """Record ``object_id`` as the file with these bytes for ``month``; return whichever object owns them."""
        key = {"pk": {"S": f"content#{month}#{sha256}"}}
        try:
            self._db.put_item(
                TableName=self._table,
                Item={**key, "owner": {"S": object_id}, "created_at": {"N": repr(self._clock())}},
                ConditionExpression="attribute_not_exists(pk)",
            )
            return object_id
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise StorageError(
                    f"ledger {self._table}: cannot record content of {object_id}: {_reason(exc)}"
                ) from exc
        item = self._call("get_item", TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
        return str(item.get("owner", {}).get("S", object_id))

    def get(self, object_id: str) -> LedgerEntry | None:
        item = self._call("get_item", TableName=self._table, Key=_key(object_id), ConsistentRead=True).get("Item")
        return _entry(object_id, item) if item else None

    def record_session(self, object_id: str, session_id: int, packets: int, report_key: str) -> None:
        self._call(
            "update_item",
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression="SET session_id = :session, packets = :packets, report_key = :report, updated_at = :now",
            ConditionExpression="attribute_not_exists(session_id) OR session_id = :session",
            ExpressionAttributeValues={
                ":session": {"N": str(session_id)},
                ":packets": {"N": str(packets)},
                ":report": {"S": report_key},
                ":now": {"N": repr(self._clock())},
            },
        )

    def record_packet(self, object_id: str, index: int) -> None:
        self._call(
            "update_item",
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression="ADD accepted :index SET updated_at = :now",
            ExpressionAttributeValues={":index": {"NS": [str(index)]}, ":now": {"N": repr(self._clock())}},
        )

    def set_status(self, object_id: str, status: LedgerStatus, **fields: str | int) -> None:
        names = {"#status": "status"}
        values: dict[str, Any] = {":status": {"S": status}, ":now": {"N": repr(self._clock())}}
        assignments = ["#status = :status", "updated_at = :now", "lease_until = :zero"]
        values[":zero"] = {"N": "0"}
        for name, value in fields.items():
            names[f"#{name}"] = name
            values[f":{name}"] = {"N": str(value)} if isinstance(value, int) else {"S": value}
            assignments.append(f"#{name} = :{name}")
        self._call(
            "update_item",
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression="SET " + ", ".join(assignments),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def release(self, object_id: str) -> None:
        """Give the lease up at once (after a handled failure), so a retry can resume without waiting."""
        self._call(
            "update_item",
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression="SET lease_until = :zero",
            ConditionExpression="#status = :importing",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":zero": {"N": "0"}, ":importing": {"S": "IMPORTING"}},
            allow_condition_failure=True,
        )

    def _call(self, operation: str, *, allow_condition_failure: bool = False, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._db, operation)(**kwargs)
            return result
        except ClientError as exc:
            if allow_condition_failure and _code(exc) == "ConditionalCheckFailedException":
                return {}
            raise StorageError(f"ledger {self._table}: {operation} failed: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"ledger {self._table}: {operation} failed: {exc}") from exc


def _key(object_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"object#{object_id}"}}


def _entry(object_id: str, item: dict[str, Any]) -> LedgerEntry:
    def number(name: str) -> float | None:
        return float(item[name]["N"]) if name in item else None

    session = number("session_id")
    packets = number("packets")
    return LedgerEntry(
        object_id=object_id,
        status=item["status"]["S"],
        session_id=int(session) if session is not None else None,
        packets=int(packets) if packets is not None else None,
        accepted=frozenset(int(i) for i in item.get("accepted", {}).get("NS", [])),
        report_key=item.get("report_key", {}).get("S"),
        duplicate_of=item.get("duplicate_of", {}).get("S"),
        attempts=int(number("attempts") or 0),
        lease_until=number("lease_until") or 0.0,
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message', '')}"
