"""The import ledger (DynamoDB): what happened to each S3 object version, so nothing is imported twice.

Items (one table, key ``pk``):

- ``object#<bucket>/<key>#<versionId>``: the object's status, the CloudBlue session it is being
  imported in, the fingerprint of the packets planned for it, the packets marked in flight before
  they are sent and the packets CloudBlue accepted, the sessions abandoned, and a lease. A claim
  is a conditional write: a duplicate S3 event finds the version claimed or finished; a retry
  after a crash finds the lease lapsed and resumes. Every write renews the lease (a heartbeat), so
  a crashed import can be resumed a few minutes later, not only after the function's 15 minutes.
  It also pins the coverage and currency the first attempt settled, so a retry imports the file as
  that attempt did whatever the stack's settings became.
- ``lock#<yyyyMM>#<coverage>`` (or ``lock#<yyyyMM>#<sha256>`` for a file marked additional): which
  object owns the month's bill of a coverage (``jp``, ``g``), so a second file for it is held instead
  of doubling it. A ``lock#<yyyyMM>`` written before coverages is the lock of the coverage its
  owner's currency names (``logic/imports.month_lock_key``). A stuck owner (still importing, lease
  lapsed) can be taken over in one transaction that checks its lease, so a late retry of the old
  owner and the new one can never both send. A retry that rejects the file hands its lock back
  (:meth:`release_lock`). A session marked closing stays marked for good (it may be rated): it is
  never given up, its object's locks are never taken over nor handed back, and its object is never
  recorded as not imported.
- ``bytes#<yyyyMM>#<sha256>``: which object closed a session with these bytes for the month,
  whatever its coverage. It is written in the transaction that marks the session closing, so the
  same CSV uploaded under both coverages is closed (so rated) once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from soracharge.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LedgerStatus = Literal[
    "IMPORTING", "REJECTED", "DUPLICATE", "HELD", "SUPERSEDED", "CLOSED", "PROCESSED", "FAILED_PROCESSED", "NOT_RATED"
]
#: How long a claim holds without a write: long enough for one CloudBlue call with its retries.
LEASE_SECONDS = 180.0


@dataclass(frozen=True)
class LedgerEntry:
    object_id: str
    status: LedgerStatus
    session_id: int | None = None
    packets: int | None = None
    fingerprint: str | None = None
    accepted: frozenset[int] = frozenset()
    in_flight: frozenset[int] = frozenset()
    abandoned_sessions: tuple[int, ...] = ()
    closing_session: int | None = None
    report_key: str | None = None
    lock_key: str | None = None
    duplicate_of: str | None = None
    coverage: str | None = None
    currency: str | None = None
    attempts: int = 0
    lease_until: float = 0.0

    @property
    def unconfirmed(self) -> frozenset[int]:
        """Packets sent whose outcome is unknown (marked in flight, never recorded as accepted)."""
        return self.in_flight - self.accepted


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an object version: ``granted`` when this invocation may work on it."""

    granted: bool
    entry: LedgerEntry


@dataclass(frozen=True)
class LockOwner:
    object_id: str
    sha256: str


class Ledger(Protocol):
    def claim(self, object_id: str, *, month: str, lease_seconds: float) -> Claim: ...

    def get(self, object_id: str) -> LedgerEntry | None: ...

    def lock(self, lock_key: str, object_id: str, sha256: str) -> LockOwner: ...

    def owner(self, lock_key: str) -> LockOwner | None: ...

    def take_over(self, lock_key: str, previous: str, object_id: str, sha256: str) -> bool: ...

    def mark_closing(
        self, object_id: str, session_id: int, lock_key: str, *, bytes_key: str | None = None, sha256: str = ""
    ) -> bool: ...

    def pin(self, object_id: str, *, coverage: str, currency: str) -> LedgerEntry: ...

    def record_session(
        self, object_id: str, session_id: int, *, packets: int, fingerprint: str, report_key: str, lock_key: str
    ) -> None: ...

    def abandon_session(self, object_id: str, session_id: int) -> None: ...

    def mark_in_flight(self, object_id: str, index: int) -> None: ...

    def record_packet(self, object_id: str, index: int) -> None: ...

    def unmark_in_flight(self, object_id: str, index: int) -> None: ...

    def set_status(self, object_id: str, status: LedgerStatus, **fields: str | int) -> None: ...

    def end_without_import(self, object_id: str, status: LedgerStatus, **fields: str | int) -> bool: ...

    def release_lock(self, lock_key: str, object_id: str) -> bool: ...

    def hand_back(self, lock_key: str, object_id: str) -> bool: ...

    def release(self, object_id: str) -> None: ...


class DynamoDbLedger:
    def __init__(
        self, client: DynamoDBClient, table: str, clock: Any = time.time, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._db = client
        self._table = table
        self._clock = clock
        self._lease_seconds = lease_seconds

    # -- claims --------------------------------------------------------------------------------

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
                    ":lease": {"N": repr(now + min(lease_seconds, self._lease_seconds))},
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
        except BotoCoreError as exc:
            raise StorageError(f"ledger {self._table}: cannot claim {object_id}: {exc}") from exc
        entry = self.get(object_id)
        if entry is None:  # deleted between the two calls: claim again
            return self.claim(object_id, month=month, lease_seconds=lease_seconds)
        return Claim(granted=False, entry=entry)

    def get(self, object_id: str) -> LedgerEntry | None:
        item = self._call("get_item", TableName=self._table, Key=_key(object_id), ConsistentRead=True).get("Item")
        return _entry(object_id, item) if item else None

    # -- month locks ---------------------------------------------------------------------------

    def lock(self, lock_key: str, object_id: str, sha256: str) -> LockOwner:
        """Make ``object_id`` the owner of ``lock_key`` unless another object owns it; return the owner."""
        key = {"pk": {"S": lock_key}}
        try:
            self._db.put_item(
                TableName=self._table,
                Item={**key, "owner": {"S": object_id}, "sha256": {"S": sha256}, "at": {"N": repr(self._clock())}},
                ConditionExpression="attribute_not_exists(pk)",
            )
            return LockOwner(object_id, sha256)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise StorageError(f"ledger {self._table}: cannot lock {lock_key}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"ledger {self._table}: cannot lock {lock_key}: {exc}") from exc
        item = self._call("get_item", TableName=self._table, Key=key, ConsistentRead=True).get("Item", {})
        return LockOwner(str(item["owner"]["S"]), str(item["sha256"]["S"]))

    def owner(self, lock_key: str) -> LockOwner | None:
        """Who owns ``lock_key``, or None when no one does (a read only: nothing is locked)."""
        key = {"pk": {"S": lock_key}}
        item = self._call("get_item", TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        return LockOwner(str(item["owner"]["S"]), str(item["sha256"]["S"])) if item else None

    def take_over(self, lock_key: str, previous: str, object_id: str, sha256: str) -> bool:
        """Move ``lock_key`` from ``previous`` to ``object_id``: a stuck owner (importing, lease lapsed,
        not closing), or one whose session CloudBlue failed to rate (``FAILED_PROCESSED``: none of it rated).

        One transaction checks the previous owner's state and moves the lock, so the previous owner
        cannot resume and send while the new one does. True when the lock moved.
        """
        return self._transact(
            f"take over {lock_key}",
            [
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": _key(previous),
                        # Stuck (importing, lease lapsed) and not closing: a session that may be
                        # closed (so rated) must never be imported a second time.
                        "ConditionExpression": (
                            "(#status = :importing AND lease_until < :now AND attribute_not_exists(closing_session))"
                            " OR #status = :failed"
                        ),
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {
                            ":importing": {"S": "IMPORTING"},
                            ":failed": {"S": "FAILED_PROCESSED"},
                            ":now": {"N": repr(self._clock())},
                        },
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": lock_key}},
                        "UpdateExpression": (
                            "SET #owner = :new, previous_sha256 = sha256, sha256 = :sha, previous_owner = :old"
                        ),
                        "ConditionExpression": "#owner = :old",
                        "ExpressionAttributeNames": {"#owner": "owner"},
                        "ExpressionAttributeValues": {
                            ":new": {"S": object_id},
                            ":old": {"S": previous},
                            ":sha": {"S": sha256},
                        },
                    }
                },
            ],
        )

    def release_lock(self, lock_key: str, object_id: str) -> bool:
        """Hand ``lock_key`` back, if ``object_id`` owns it and never marked a session closing (it ends
        without importing: rejected on a retry, or beaten to its bytes). True when it was handed back."""
        return self._transact(
            f"release {lock_key}",
            [
                self._never_closing(object_id),
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": lock_key}},
                        "ConditionExpression": "#owner = :me",
                        "ExpressionAttributeNames": {"#owner": "owner"},
                        "ExpressionAttributeValues": {":me": {"S": object_id}},
                    }
                },
            ],
        )

    def hand_back(self, lock_key: str, object_id: str) -> bool:
        """Give ``lock_key`` back to the owner ``object_id`` took it over from (it ends without importing,
        so the month is that owner's again); a lock it took fresh stays its own. True when handed back."""
        item = self._call("get_item", TableName=self._table, Key={"pk": {"S": lock_key}}, ConsistentRead=True).get(
            "Item", {}
        )
        if item.get("owner", {}).get("S") != object_id or "previous_owner" not in item:
            return False
        return self._transact(
            f"hand {lock_key} back",
            [
                self._never_closing(object_id),
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": lock_key}},
                        "UpdateExpression": (
                            "SET #owner = previous_owner, sha256 = previous_sha256 "
                            "REMOVE previous_owner, previous_sha256"
                        ),
                        "ConditionExpression": "#owner = :me AND attribute_exists(previous_sha256)",
                        "ExpressionAttributeNames": {"#owner": "owner"},
                        "ExpressionAttributeValues": {":me": {"S": object_id}},
                    }
                },
            ],
        )

    def mark_closing(
        self, object_id: str, session_id: int, lock_key: str, *, bytes_key: str | None = None, sha256: str = ""
    ) -> bool:
        """Record that ``session_id`` is about to be closed, if ``object_id`` still owns ``lock_key``
        and no other object closed a session with the same bytes (``bytes_key``, which it then owns).

        One transaction with :meth:`take_over`'s check: either the owner marks its session closing
        (and no one can take the month over any more), or the month was taken over first, or the
        bytes were closed by another object (False: the owner must stop and never close its session).
        """
        now = self._clock()
        claim_bytes = (
            [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": bytes_key}},
                        "UpdateExpression": "SET #owner = :me, sha256 = :sha, #at = :now",
                        "ConditionExpression": "attribute_not_exists(pk) OR #owner = :me",
                        "ExpressionAttributeNames": {"#owner": "owner", "#at": "at"},
                        "ExpressionAttributeValues": {
                            ":me": {"S": object_id},
                            ":sha": {"S": sha256},
                            ":now": {"N": repr(now)},
                        },
                    }
                }
            ]
            if bytes_key
            else []
        )
        return self._transact(
            f"mark {object_id} closing",
            [
                *claim_bytes,
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": lock_key}},
                        "ConditionExpression": "#owner = :me",
                        "ExpressionAttributeNames": {"#owner": "owner"},
                        "ExpressionAttributeValues": {":me": {"S": object_id}},
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _key(object_id),
                        "UpdateExpression": ("SET closing_session = :session, lease_until = :lease, updated_at = :now"),
                        "ConditionExpression": "#status = :importing AND session_id = :session",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {
                            ":session": {"N": str(session_id)},
                            ":importing": {"S": "IMPORTING"},
                            ":lease": {"N": repr(now + self._lease_seconds)},
                            ":now": {"N": repr(now)},
                        },
                    }
                },
            ],
        )

    def _transact(self, what: str, items: list[Any]) -> bool:
        """Write ``items`` all or none: True when written, False when a condition did not hold."""
        try:
            self._db.transact_write_items(TransactItems=items)
            return True
        except ClientError as exc:
            if _code(exc) in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                return False
            raise StorageError(f"ledger {self._table}: cannot {what}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"ledger {self._table}: cannot {what}: {exc}") from exc

    # -- progress (each write renews the lease) ---------------------------------------------------

    def record_session(
        self, object_id: str, session_id: int, *, packets: int, fingerprint: str, report_key: str, lock_key: str
    ) -> None:
        self._update(
            object_id,
            "SET session_id = :session, packets = :packets, fingerprint = :fingerprint, report_key = :report, "
            "lock_key = :lock",
            {
                ":session": {"N": str(session_id)},
                ":packets": {"N": str(packets)},
                ":fingerprint": {"S": fingerprint},
                ":report": {"S": report_key},
                ":lock": {"S": lock_key},
            },
            condition="attribute_not_exists(session_id)",
        )

    def pin(self, object_id: str, *, coverage: str, currency: str) -> LedgerEntry:
        """Keep the coverage and currency the first attempt settled; return the entry with the pinned ones."""
        item = self._update(
            object_id,
            "SET #coverage = if_not_exists(#coverage, :coverage), #currency = if_not_exists(#currency, :currency)",
            {":coverage": {"S": coverage}, ":currency": {"S": currency}},
            names={"#coverage": "coverage", "#currency": "currency"},
            returning=True,
        )
        return _entry(object_id, item)

    def abandon_session(self, object_id: str, session_id: int) -> None:
        """Give a session up (it is never closed, so CloudBlue never rates it): start over in a new one.

        Never one marked closing: an attempt may be closing it right now (a ``StorageError`` says so).
        """
        self._update(
            object_id,
            "REMOVE session_id, accepted, in_flight SET abandoned = list_append(if_not_exists(abandoned, :empty), :s)",
            {":s": {"L": [{"N": str(session_id)}]}, ":empty": {"L": []}, ":current": {"N": str(session_id)}},
            condition="session_id = :current AND attribute_not_exists(closing_session)",
        )

    def mark_in_flight(self, object_id: str, index: int) -> None:
        self._update(object_id, "ADD in_flight :index", {":index": {"NS": [str(index)]}})

    def record_packet(self, object_id: str, index: int) -> None:
        self._update(object_id, "ADD accepted :index", {":index": {"NS": [str(index)]}})

    def unmark_in_flight(self, object_id: str, index: int) -> None:
        """CloudBlue answered that it did not take the packet: its outcome is known after all."""
        self._update(object_id, "DELETE in_flight :index", {":index": {"NS": [str(index)]}})

    def end_without_import(self, object_id: str, status: LedgerStatus, **fields: str | int) -> bool:
        """:meth:`set_status` for an end that imported nothing (REJECTED, HELD, ...), unless a session of
        the object was marked closing meanwhile (by a stale attempt): False, and nothing written."""
        return self._write_status(object_id, status, fields, condition="attribute_not_exists(closing_session)")

    def set_status(self, object_id: str, status: LedgerStatus, **fields: str | int) -> None:
        self._write_status(object_id, status, fields)

    def _write_status(
        self, object_id: str, status: LedgerStatus, fields: dict[str, str | int], condition: str | None = None
    ) -> bool:
        names = {"#status": "status"}
        values: dict[str, Any] = {":status": {"S": status}, ":now": {"N": repr(self._clock())}, ":zero": {"N": "0"}}
        assignments = ["#status = :status", "updated_at = :now", "lease_until = :zero"]
        for name, value in fields.items():
            names[f"#{name}"] = name
            values[f":{name}"] = {"N": str(value)} if isinstance(value, int) else {"S": value}
            assignments.append(f"#{name} = :{name}")
        extra = {"ConditionExpression": condition} if condition else {}
        written = self._call(
            "update_item",
            allow_condition_failure=condition is not None,
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression="SET " + ", ".join(assignments),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
            **extra,
        )
        return bool(written)

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

    # -- plumbing --------------------------------------------------------------------------------

    def _update(
        self,
        object_id: str,
        expression: str,
        values: dict[str, Any],
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        returning: bool = False,
    ) -> dict[str, Any]:
        """An update of an importing object that also renews its lease; the claim must still be ours.
        With ``returning``, the item as it is after the update (else ``{}``: a packet's write stays small)."""
        now = self._clock()
        renew = "lease_until = :lease, updated_at = :now"
        expression = f"{expression}, {renew}" if "SET " in expression else f"{expression} SET {renew}"
        conditions = ["#status = :importing"] + ([condition] if condition else [])
        updated = self._call(
            "update_item",
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression=expression,
            ConditionExpression=" AND ".join(f"({c})" for c in conditions),
            ExpressionAttributeNames={"#status": "status", **(names or {})},
            ExpressionAttributeValues={
                **values,
                ":importing": {"S": "IMPORTING"},
                ":lease": {"N": repr(now + self._lease_seconds)},
                ":now": {"N": repr(now)},
            },
            ReturnValues="ALL_NEW" if returning else "NONE",
        )
        return dict(updated.get("Attributes", {}))

    def _never_closing(self, object_id: str) -> dict[str, Any]:
        """A transaction's check that ``object_id`` never marked a session closing (nothing of it may be rated)."""
        return {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": _key(object_id),
                "ConditionExpression": "attribute_not_exists(closing_session)",
            }
        }

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

    def numbers(name: str) -> frozenset[int]:
        return frozenset(int(i) for i in item.get(name, {}).get("NS", []))

    session = number("session_id")
    packets = number("packets")
    return LedgerEntry(
        object_id=object_id,
        status=item["status"]["S"],
        session_id=int(session) if session is not None else None,
        packets=int(packets) if packets is not None else None,
        fingerprint=item.get("fingerprint", {}).get("S"),
        accepted=numbers("accepted"),
        in_flight=numbers("in_flight"),
        abandoned_sessions=tuple(int(s["N"]) for s in item.get("abandoned", {}).get("L", [])),
        closing_session=int(item["closing_session"]["N"]) if "closing_session" in item else None,
        report_key=item.get("report_key", {}).get("S"),
        lock_key=item.get("lock_key", {}).get("S"),
        duplicate_of=item.get("duplicate_of", {}).get("S"),
        coverage=item.get("coverage", {}).get("S"),
        currency=item.get("currency", {}).get("S"),
        attempts=int(number("attempts") or 0),
        lease_until=number("lease_until") or 0.0,
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message', '')}"
