"""The import ledger (DynamoDB): what each file's import did, written only by the attempt that holds its fence.

Three kinds of record, in one table keyed by ``pk`` (the protocol is ``logic/imports.py``'s docstring):

- ``object#<bucket>/<key>#<version>``: one per object version. Its ``status``; the ``epoch``, the fence:
  each claim of the object increments it, and every later write of that attempt is conditioned on
  it, so an attempt that a later claim superseded can neither record nor send (it sends a packet
  only after a fenced write, :meth:`DynamoDbLedger.mark_in_flight`); the ``lease_until``, for liveness
  only (a claim may be taken over once it lapsed: a crashed attempt's retry resumes within minutes);
  the pins (coverage, currency, the mapping's pinned copy); the session, its packets in flight and
  accepted, the sessions given up, the one marked closing; the report and how the import ended; a
  person's review: the plan (packets' fingerprint) a preview showed (``AWAITING_APPROVAL``), and who
  approved it (``APPROVED``, claimable: the next attempt sends exactly that plan) or rejected it.
- ``bill#<yyyyMM>#<coverage>``: the month's bill of a coverage, and the object that closed a session
  for it. Written only in the closing transaction (:meth:`DynamoDbLedger.mark_closing`).
- ``bytes#<yyyyMM>#<sha256>``: these bytes, closed for the month (under any coverage) by that object.
  Written only in the closing transaction too.
- ``month#<yyyyMM>#<coverage>``: the month as billed so far: a ``version`` counting its changes and the
  staged totals of each file closed (``file#<hash>``; a file CloudBlue failed to rate is dropped). A
  file's review judges the month at one version, and its
  closing transaction holds only while the month is still at that version (and moves it on), so no
  file is closed into a month other than the one it was judged with.

And one marker, ``schema``: the format the table holds. The records of the protocol before fences
(``lock#...``, taken before anything was sent) are migrated once, by :meth:`DynamoDbLedger.migrate`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from soracharge.errors import ImportSupersededError, StorageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LedgerStatus = Literal[
    "IMPORTING",
    "REJECTED",
    "DUPLICATE",
    "HELD",
    "AWAITING_APPROVAL",
    "APPROVED",
    "CLOSED",
    "PROCESSED",
    "FAILED_PROCESSED",
    "NOT_RATED",
]
#: How long a claim holds without a write (the attempt renews it while it works): liveness only.
LEASE_SECONDS = 180.0
#: An object that closed a session: its charges are rated, or being rated, or failed to be.
CLOSED_STATUSES = frozenset({"CLOSED", "PROCESSED", "FAILED_PROCESSED", "NOT_RATED"})
#: The table's format: 2 is the fenced protocol (bill# and bytes# written at closing).
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Pins:
    """What decides an object's packets, settled by its first attempt and kept for every retry."""

    coverage: str
    currency: str
    #: The key of the mapping's pinned copy in the data bucket.
    mapping: str


@dataclass(frozen=True)
class LedgerEntry:
    object_id: str
    status: LedgerStatus
    epoch: int = 0
    pins: Pins | None = None
    #: Coverage and currency settled by a version before pins had a mapping (it pins the mapping still).
    coverage: str | None = None
    currency: str | None = None
    session_id: int | None = None
    packets: int | None = None
    fingerprint: str | None = None
    accepted: frozenset[int] = frozenset()
    in_flight: frozenset[int] = frozenset()
    abandoned_sessions: tuple[int, ...] = ()
    closing_session: int | None = None
    report_key: str | None = None
    #: The report whose alert was sent (the outbox: an end not marked alerted is owed its alert).
    alerted: str | None = None
    duplicate_of: str | None = None
    reason: str | None = None
    #: The plan a preview showed a person (``AWAITING_APPROVAL``), why it was asked, and their decision.
    review_plan: str | None = None
    review_asked: str | None = None
    #: The version of the month's record (``month#``) the preview judged: an approval holds for it only.
    review_version: int | None = None
    decision: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    attempts: int = 0
    lease_until: float = 0.0

    @property
    def unconfirmed(self) -> frozenset[int]:
        """Packets sent whose outcome is unknown (marked in flight, never recorded as accepted)."""
        return self.in_flight - self.accepted

    @property
    def closed_a_session(self) -> bool:
        """Whether the object closed (or is closing) a CloudBlue session."""
        return self.closing_session is not None or self.status in CLOSED_STATUSES


@dataclass(frozen=True)
class MonthMark:
    """The month a closing joins: its record, the version the file's review judged, the file's staged totals."""

    key: str
    judged: int
    totals: str


@dataclass(frozen=True)
class MonthState:
    """``month#<yyyyMM>#<coverage>``: how many changes it has seen, and the staged totals of each file billed."""

    version: int = 0
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an object version: ``granted`` when this invocation may work on it,
    with the entry as the claim left it (its ``epoch`` is this attempt's fence)."""

    granted: bool
    entry: LedgerEntry


@dataclass(frozen=True)
class Holder:
    """Who holds a ``bill#`` or ``bytes#`` record: the object that closed a session for it."""

    object_id: str
    sha256: str


class Ledger(Protocol):
    def claim(self, object_id: str, *, month: str) -> Claim: ...

    def get(self, object_id: str) -> LedgerEntry | None: ...

    def renew(self, object_id: str, epoch: int) -> bool: ...

    def pin(self, object_id: str, epoch: int, pins: Pins) -> LedgerEntry: ...

    def open_session(self, object_id: str, epoch: int, session_id: int, *, packets: int, fingerprint: str) -> None: ...

    def give_up(self, object_id: str, epoch: int, session_id: int) -> None: ...

    def mark_in_flight(self, object_id: str, epoch: int, session_id: int, index: int) -> None: ...

    def unmark_in_flight(self, object_id: str, epoch: int, session_id: int, index: int) -> None: ...

    def record_packet(self, object_id: str, epoch: int, session_id: int, index: int) -> None: ...

    def mark_closing(
        self, object_id: str, epoch: int, session_id: int, *, bill: str | None, bytes_key: str, sha256: str,
        take_from: tuple[str, str] | None = None, month: MonthMark | None = None,
    ) -> bool: ...  # fmt: skip

    def holder(self, key: str) -> Holder | None: ...

    def month_state(self, key: str) -> MonthState: ...

    def end(self, object_id: str, epoch: int, status: LedgerStatus, *, report_key: str, **fields: str) -> None: ...

    def decide(
        self, object_id: str, *, plan: str, version: int, decision: str, by: str, report_key: str | None = None
    ) -> bool: ...

    def record_rating(
        self, object_id: str, status: LedgerStatus, *, report_key: str, read: str | None, month_key: str | None = None
    ) -> bool: ...

    def mark_alerted(self, object_id: str, report_key: str) -> None: ...

    def release(self, object_id: str, epoch: int) -> None: ...

    def migrate(self, coverages_of: Callable[[str], Iterable[str]]) -> int: ...


class DynamoDbLedger:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._db = client
        self._table = table
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._migrated = False

    # -- claims ------------------------------------------------------------------------------------

    def claim(self, object_id: str, *, month: str) -> Claim:
        """Take the object for this attempt (a new epoch), unless another attempt holds an unexpired claim or
        the object has ended: then the entry as it is, not granted."""
        now = self._clock()
        try:
            item = self._db.update_item(
                TableName=self._table,
                Key=_key(object_id),
                UpdateExpression=(
                    "SET #status = :importing, epoch = if_not_exists(epoch, :zero) + :one, "
                    "lease_until = :lease, #month = :month, attempts = if_not_exists(attempts, :zero) + :one, "
                    "updated_at = :now"
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR (#status = :importing AND lease_until < :now) OR #status = :approved"
                ),
                ExpressionAttributeNames={"#status": "status", "#month": "month"},
                ExpressionAttributeValues={
                    ":importing": {"S": "IMPORTING"},
                    ":approved": {"S": "APPROVED"},
                    ":lease": {"N": repr(now + self._lease_seconds)},
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
            return self.claim(object_id, month=month)
        return Claim(granted=False, entry=entry)

    def get(self, object_id: str) -> LedgerEntry | None:
        item = self._call("get_item", TableName=self._table, Key=_key(object_id), ConsistentRead=True).get("Item")
        return _entry(object_id, item) if item else None

    def renew(self, object_id: str, epoch: int) -> bool:
        """The attempt is alive: its lease runs on. False when a later attempt holds the object now."""
        try:
            self._fenced(object_id, epoch, "renew the lease of", "SET epoch = epoch", {})
        except ImportSupersededError:
            return False
        return True

    def release(self, object_id: str, epoch: int) -> None:
        """Give the lease up at once (after a handled failure), so a retry can claim without waiting."""
        self._call(
            "update_item",
            allow_condition_failure=True,
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression="SET lease_until = :zero",
            ConditionExpression="epoch = :epoch AND #status = :importing",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":zero": {"N": "0"},
                ":epoch": {"N": str(epoch)},
                ":importing": {"S": "IMPORTING"},
            },
        )

    # -- an attempt's progress (every write fenced by its epoch; each renews the lease) ----------------

    def pin(self, object_id: str, epoch: int, pins: Pins) -> LedgerEntry:
        """Keep what the first attempt settled (a value pinned before stays); return the entry as pinned."""
        item = self._fenced(
            object_id,
            epoch,
            "pin",
            "SET #coverage = if_not_exists(#coverage, :coverage), #currency = if_not_exists(#currency, :currency), "
            "#mapping = if_not_exists(#mapping, :mapping)",
            {":coverage": {"S": pins.coverage}, ":currency": {"S": pins.currency}, ":mapping": {"S": pins.mapping}},
            names={"#coverage": "coverage", "#currency": "currency", "#mapping": "mapping"},
            returning=True,
        )
        return _entry(object_id, item)

    def open_session(self, object_id: str, epoch: int, session_id: int, *, packets: int, fingerprint: str) -> None:
        """Record the session the attempt sends into, and what it sends (the plan's fingerprint)."""
        self._fenced(
            object_id,
            epoch,
            "record the session of",
            "SET session_id = :session, packets = :packets, fingerprint = :fingerprint",
            {":session": {"N": str(session_id)}, ":packets": {"N": str(packets)}, ":fingerprint": {"S": fingerprint}},
            condition="attribute_not_exists(session_id)",
        )

    def give_up(self, object_id: str, epoch: int, session_id: int) -> None:
        """Give a session up: it is never closed, so CloudBlue never rates it (never one marked closing)."""
        self._fenced(
            object_id,
            epoch,
            "give up the session of",
            "REMOVE session_id, accepted, in_flight, packets, fingerprint "
            "SET abandoned = list_append(if_not_exists(abandoned, :empty), :given_up)",
            {":given_up": {"L": [{"N": str(session_id)}]}, ":empty": {"L": []}, ":session": {"N": str(session_id)}},
            condition="session_id = :session AND attribute_not_exists(closing_session)",
        )

    def mark_in_flight(self, object_id: str, epoch: int, session_id: int, index: int) -> None:
        """Before packet ``index`` is sent: the one write that allows the send (fenced)."""
        self._packet(object_id, epoch, session_id, "ADD in_flight :index", index)

    def unmark_in_flight(self, object_id: str, epoch: int, session_id: int, index: int) -> None:
        """CloudBlue answered that it did not take the packet: its outcome is known after all."""
        self._packet(object_id, epoch, session_id, "DELETE in_flight :index", index)

    def record_packet(self, object_id: str, epoch: int, session_id: int, index: int) -> None:
        """CloudBlue took packet ``index``."""
        self._packet(object_id, epoch, session_id, "ADD accepted :index", index)

    def _packet(self, object_id: str, epoch: int, session_id: int, expression: str, index: int) -> None:
        self._fenced(
            object_id,
            epoch,
            f"{expression.split()[0].lower()} a packet of",
            expression,
            {":index": {"NS": [str(index)]}, ":session": {"N": str(session_id)}},
            condition="session_id = :session",
        )

    def mark_closing(
        self,
        object_id: str,
        epoch: int,
        session_id: int,
        *,
        bill: str | None,
        bytes_key: str,
        sha256: str,
        take_from: tuple[str, str] | None = None,
        month: MonthMark | None = None,
    ) -> bool:
        """The closing transaction: mark ``session_id`` closing, and take the month's ``bill`` (a plain file)
        and ``bytes_key``, all or none. True when taken: the caller may close the session.

        It holds only while this attempt holds the fence, the session is the object's with every packet
        accepted, and no other object closed a session for the bill or the bytes. ``take_from``
        ``(object_id, coverage)`` lets an additional file take the bytes from an object whose session
        CloudBlue failed to rate, or which imported them as another coverage's bill (the runbook's
        re-imports), checked in the same transaction. ``month``: the month's record must still be at the
        version the file was judged at; it moves on and lists the file's totals. False: the caller must never
        close the session (:meth:`get`, :meth:`holder` and :meth:`month_state` tell why: superseded, beaten to the
        bill or the bytes, or the month changed since it was judged).
        """
        now = self._clock()
        me = {
            ":me": {"S": object_id},
            ":sha": {"S": sha256},
            ":now": {"N": repr(now)},
            ":session": {"N": str(session_id)},
        }

        def take(key: str, condition: str, values: dict[str, Any]) -> dict[str, Any]:
            return {
                "Update": {
                    "TableName": self._table,
                    "Key": {"pk": {"S": key}},
                    "UpdateExpression": "SET #owner = :me, sha256 = :sha, session_id = :session, #at = :now",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#owner": "owner", "#at": "at"},
                    "ExpressionAttributeValues": {**me, **values},
                }
            }

        mine = "attribute_not_exists(pk) OR #owner = :me"
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _key(object_id),
                    "UpdateExpression": "SET closing_session = :session, lease_until = :lease, updated_at = :now",
                    "ConditionExpression": (
                        "epoch = :epoch AND #status = :importing AND session_id = :session "
                        "AND attribute_not_exists(closing_session) AND (packets = :zero OR size(accepted) = packets)"
                    ),
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": {
                        ":epoch": {"N": str(epoch)},
                        ":importing": {"S": "IMPORTING"},
                        ":session": {"N": str(session_id)},
                        ":zero": {"N": "0"},
                        ":lease": {"N": repr(now + self._lease_seconds)},
                        ":now": {"N": repr(now)},
                    },
                }
            }
        ]
        if bill is not None:
            items.append(take(bill, mine, {}))
        if take_from is None:
            items.append(take(bytes_key, mine, {}))
        else:
            other, coverage = take_from
            items.append(take(bytes_key, f"{mine} OR #owner = :other", {":other": {"S": other}}))
            items.append(
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": _key(other),
                        "ConditionExpression": "#status = :failed OR #coverage <> :coverage",
                        "ExpressionAttributeNames": {"#status": "status", "#coverage": "coverage"},
                        "ExpressionAttributeValues": {
                            ":failed": {"S": "FAILED_PROCESSED"},
                            ":coverage": {"S": coverage},
                        },
                    }
                }
            )
        if month is not None:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": month.key}},
                        "UpdateExpression": (
                            "SET version = if_not_exists(version, :zero) + :one, #file = :totals, #at = :now"
                        ),
                        "ConditionExpression": "attribute_not_exists(version)" if month.judged == 0 else "version = :v",
                        "ExpressionAttributeNames": {"#at": "at", "#file": _month_file(object_id)},
                        "ExpressionAttributeValues": {
                            ":zero": {"N": "0"},
                            ":one": {"N": "1"},
                            ":totals": {"S": month.totals},
                            ":now": {"N": repr(now)},
                            **({":v": {"N": str(month.judged)}} if month.judged else {}),
                        },
                    }
                }
            )
        try:
            self._db.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
            return True
        except ClientError as exc:
            if _code(exc) in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                return False
            raise StorageError(f"ledger {self._table}: cannot mark {object_id} closing: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"ledger {self._table}: cannot mark {object_id} closing: {exc}") from exc

    def holder(self, key: str) -> Holder | None:
        """Who holds a ``bill#`` or ``bytes#`` record, or None (a read: nothing is taken)."""
        item = self._call("get_item", TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
        return Holder(str(item["owner"]["S"]), str(item["sha256"]["S"])) if item else None

    def month_state(self, key: str) -> MonthState:
        """The month's record ``month#<yyyyMM>#<coverage>`` (a read: version 0 and no file when none closed)."""
        item = self._call("get_item", TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
        if not item:
            return MonthState()
        files = tuple(str(value["S"]) for name, value in sorted(item.items()) if name.startswith(_MONTH_FILE))
        return MonthState(int(item["version"]["N"]), files)

    def end(self, object_id: str, epoch: int, status: LedgerStatus, *, report_key: str, **fields: str) -> None:
        """How the attempt ended: CLOSED (its session marked closing), or an end that imported nothing
        (REJECTED, HELD, DUPLICATE: its session, if any, given up and left open)."""
        names = {"#status": "status", "#report": "report_key"}
        values: dict[str, Any] = {":status": {"S": status}, ":report": {"S": report_key}}
        assignments = ["#status = :status", "#report = :report"]
        for name, value in fields.items():
            names[f"#{name}"] = name
            values[f":{name}"] = {"S": value}
            assignments.append(f"#{name} = :{name}")
        if status == "CLOSED":
            condition = "closing_session = session_id"
            expression = "SET " + ", ".join(assignments)
        else:
            condition = "attribute_not_exists(closing_session)"
            values[":empty"] = {"L": []}
            assignments.append("abandoned = list_append(if_not_exists(abandoned, :empty), :left_open)")
            current = self.get(object_id)
            left_open = [{"N": str(current.session_id)}] if current and current.session_id is not None else []
            values[":left_open"] = {"L": left_open}
            expression = "SET " + ", ".join(assignments) + " REMOVE session_id, in_flight, accepted"
            if status == "AWAITING_APPROVAL":  # a new preview: any earlier decision was of another one
                expression += ", decision, decided_by, decided_at"
        self._fenced(
            object_id, epoch, f"record {status} for", expression, values, condition=condition, names=names, lease=0.0
        )

    def decide(
        self, object_id: str, *, plan: str, version: int, decision: str, by: str, report_key: str | None = None
    ) -> bool:
        """A person's decision on the preview of ``plan`` at the month's ``version``: ``approved`` (the object
        becomes claimable, and its next attempt sends exactly that plan) or ``rejected`` (it ends REJECTED, with
        ``report_key``). Only an object awaiting approval of that same preview is decided, once: False otherwise
        (see :meth:`get`)."""
        now = self._clock()
        values: dict[str, Any] = {
            ":awaiting": {"S": "AWAITING_APPROVAL"},
            ":plan": {"S": plan},
            ":version": {"S": str(version)},
            ":decision": {"S": decision},
            ":by": {"S": by},
            ":now": {"N": repr(now)},
            ":zero": {"N": "0"},
            ":status": {"S": "APPROVED" if decision == "approved" else "REJECTED"},
        }
        expression = (
            "SET #status = :status, decision = :decision, decided_by = :by, decided_at = :now, lease_until = :zero, "
            "updated_at = :now"
        )
        if decision != "approved":
            values[":report"] = {"S": report_key or ""}
            values[":reason"] = {"S": "review-rejected"}
            expression += ", report_key = :report, reason = :reason"
        result = self._call(
            "update_item",
            allow_condition_failure=True,
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression=expression,
            ConditionExpression="#status = :awaiting AND review_plan = :plan AND review_version = :version",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
        )
        return bool(result)

    def record_rating(
        self, object_id: str, status: LedgerStatus, *, report_key: str, read: str | None, month_key: str | None = None
    ) -> bool:
        """How CloudBlue's rating of the object's closed session ended (the follow-session state machine), with
        the report that says it (``report_key``, staged). A compare-and-set: it holds only while the ledger still
        names the report this finish ``read`` and the rating is not final yet (CLOSED, or NOT_RATED: a final
        rating may follow that, never the reverse). A session CloudBlue failed to rate billed nothing, so the
        month's record (``month_key``) drops the file's totals and moves on, in the same transaction. False
        when another finish recorded first (:meth:`get` tells what)."""
        now = self._clock()
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _key(object_id),
                    "UpdateExpression": "SET #status = :status, report_key = :report, updated_at = :now",
                    "ConditionExpression": "#status IN (:closed, :not_rated) AND "
                    + ("report_key = :read" if read else "attribute_not_exists(report_key)"),
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": {
                        ":status": {"S": status},
                        ":report": {"S": report_key},
                        ":now": {"N": repr(now)},
                        ":closed": {"S": "CLOSED"},
                        ":not_rated": {"S": "NOT_RATED"},
                        **({":read": {"S": read}} if read else {}),
                    },
                }
            }
        ]
        if status == "FAILED_PROCESSED" and month_key is not None:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": month_key}},
                        "UpdateExpression": "REMOVE #file SET version = if_not_exists(version, :zero) + :one",
                        "ExpressionAttributeNames": {"#file": _month_file(object_id)},
                        "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"}},
                    }
                }
            )
        try:
            self._db.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
            return True
        except ClientError as exc:
            if _code(exc) in ("TransactionCanceledException", "ConditionalCheckFailedException"):
                return False
            raise StorageError(
                f"ledger {self._table}: cannot record the rating of {object_id}: {_reason(exc)}"
            ) from None
        except BotoCoreError as exc:
            raise StorageError(f"ledger {self._table}: cannot record the rating of {object_id}: {exc}") from None

    def mark_alerted(self, object_id: str, report_key: str) -> None:
        """The alert the end named by ``report_key`` owes was sent (the ledger's outbox: an end whose report is
        not marked alerted is alerted by whoever publishes it next). A no-op once a newer end is recorded."""
        self._call(
            "update_item",
            allow_condition_failure=True,
            TableName=self._table,
            Key=_key(object_id),
            UpdateExpression="SET alerted = :report",
            ConditionExpression="report_key = :report",
            ExpressionAttributeValues={":report": {"S": report_key}},
        )

    # -- the records of the protocol before fences, migrated once --------------------------------------

    def migrate(self, coverages_of: Callable[[str], Iterable[str]]) -> int:
        """Turn the records of the protocol before fences into this one's, once per table; return how many.

        A month lock (``lock#<yyyyMM>#<coverage>``, or ``lock#<yyyyMM>`` from before coverages, whose
        owner's coverages ``coverages_of`` tells: both when it cannot be told) becomes the month's
        ``bill#`` if its owner closed a session (a lock taken by a file that never closed one held
        nothing that was sent). An additional file's lock (``lock#<yyyyMM>#<sha256>``) becomes its
        ``bytes#`` record, unless a file whose session was rated holds them. Object records keep their
        format (their ``epoch`` starts at the first claim after the change).
        """
        if self._migrated:
            return 0
        marker = {"pk": {"S": "schema"}}
        found = self._call("get_item", TableName=self._table, Key=marker, ConsistentRead=True).get("Item")
        if found and int(found["version"]["N"]) >= SCHEMA_VERSION:
            self._migrated = True
            return 0
        migrated = 0
        for item in self._legacy_locks():
            key, owner, sha = item["pk"]["S"], item["owner"]["S"], item.get("sha256", {}).get("S", "")
            entry = self.get(owner)
            if entry is not None and entry.closed_a_session:
                _, month, *rest = key.split("#")
                if rest and len(rest[0]) == 64:  # an additional file's bytes
                    holder = self.holder(f"bytes#{month}#{rest[0]}")
                    held = self.get(holder.object_id) if holder else None
                    if held is None or held.status == "FAILED_PROCESSED":
                        self._put_holder(f"bytes#{month}#{rest[0]}", owner, sha)
                else:
                    for coverage in rest or list(coverages_of(owner)):
                        self._put_holder(f"bill#{month}#{coverage}", owner, sha, keep=True)
            self._call("delete_item", TableName=self._table, Key={"pk": item["pk"]})
            migrated += 1
        self._call(
            "put_item",
            TableName=self._table,
            Item={**marker, "version": {"N": str(SCHEMA_VERSION)}, "at": {"N": repr(self._clock())}},
        )
        self._migrated = True
        return migrated

    def _legacy_locks(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            paging: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            page = self._call(
                "scan",
                TableName=self._table,
                FilterExpression="begins_with(pk, :lock)",
                ExpressionAttributeValues={":lock": {"S": "lock#"}},
                ConsistentRead=True,
                **paging,
            )
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def _put_holder(self, key: str, owner: str, sha256: str, *, keep: bool = False) -> None:
        self._call(
            "put_item",
            allow_condition_failure=keep,
            TableName=self._table,
            Item={"pk": {"S": key}, "owner": {"S": owner}, "sha256": {"S": sha256}, "at": {"N": repr(self._clock())}},
            **({"ConditionExpression": "attribute_not_exists(pk)"} if keep else {}),
        )

    # -- plumbing ------------------------------------------------------------------------------------

    def _fenced(
        self,
        object_id: str,
        epoch: int,
        what: str,
        expression: str,
        values: dict[str, Any],
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
        returning: bool = False,
        lease: float | None = None,
    ) -> dict[str, Any]:
        """An update of the object by the attempt holding ``epoch``, which renews its lease (or sets it to
        ``lease``); the item after it with ``returning``. :class:`ImportSupersededError` when a later attempt
        holds the object now."""
        now = self._clock()
        renew = "lease_until = :lease, updated_at = :now"
        if "SET " in expression:
            expression = expression.replace("SET ", f"SET {renew}, ", 1)
        else:
            expression = f"{expression} SET {renew}"
        conditions = ["epoch = :epoch AND #status = :importing"] + ([condition] if condition else [])
        try:
            updated = self._db.update_item(
                TableName=self._table,
                Key=_key(object_id),
                UpdateExpression=expression,
                ConditionExpression=" AND ".join(f"({c})" for c in conditions),
                ExpressionAttributeNames={"#status": "status", **(names or {})},
                ExpressionAttributeValues={
                    **values,
                    ":epoch": {"N": str(epoch)},
                    ":importing": {"S": "IMPORTING"},
                    ":lease": {"N": repr(now + self._lease_seconds if lease is None else lease)},
                    ":now": {"N": repr(now)},
                },
                ReturnValues="ALL_NEW" if returning else "NONE",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise StorageError(f"ledger {self._table}: cannot {what} {object_id}: {_reason(exc)}") from exc
            current = self.get(object_id)
            if current is None or current.epoch != epoch or current.status != "IMPORTING":
                raise ImportSupersededError(
                    f"{object_id}: a later attempt took the import over while this one was slow (epoch "
                    f"{current.epoch if current else '-'}, this one's {epoch}): this one stops, writing and sending "
                    "nothing more"
                ) from None
            raise StorageError(f"ledger {self._table}: cannot {what} {object_id}: {condition} does not hold") from None
        except BotoCoreError as exc:
            raise StorageError(f"ledger {self._table}: cannot {what} {object_id}: {exc}") from exc
        return dict(updated.get("Attributes", {}))

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


#: How a month's record names each closed file's totals: one attribute per file (removed when CloudBlue fails to
#: rate its session), ``file#`` and a hash of the object's id.
_MONTH_FILE = "file#"


def _month_file(object_id: str) -> str:
    return _MONTH_FILE + hashlib.sha256(object_id.encode()).hexdigest()[:24]


def _key(object_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"object#{object_id}"}}


def _entry(object_id: str, item: dict[str, Any]) -> LedgerEntry:
    def text(name: str) -> str | None:
        value = item.get(name, {}).get("S")
        return str(value) if value is not None else None

    def number(name: str) -> int | None:
        return int(float(item[name]["N"])) if name in item else None

    def numbers(name: str) -> frozenset[int]:
        return frozenset(int(i) for i in item.get(name, {}).get("NS", []))

    coverage, currency, mapping = text("coverage"), text("currency"), text("mapping")
    return LedgerEntry(
        object_id=object_id,
        status=item["status"]["S"],
        epoch=number("epoch") or 0,
        pins=Pins(coverage, currency, mapping) if coverage and currency and mapping else None,
        coverage=coverage,
        currency=currency,
        session_id=number("session_id"),
        packets=number("packets"),
        fingerprint=text("fingerprint"),
        accepted=numbers("accepted"),
        in_flight=numbers("in_flight"),
        abandoned_sessions=tuple(int(s["N"]) for s in item.get("abandoned", {}).get("L", [])),
        closing_session=number("closing_session"),
        report_key=text("report_key"),
        alerted=text("alerted"),
        duplicate_of=text("duplicate_of"),
        reason=text("reason"),
        review_plan=text("review_plan"),
        review_asked=text("review_asked"),
        review_version=int(text("review_version") or 0) if text("review_version") is not None else None,
        decision=text("decision"),
        decided_by=text("decided_by"),
        decided_at=float(item["decided_at"]["N"]) if "decided_at" in item else None,
        attempts=number("attempts") or 0,
        lease_until=float(item["lease_until"]["N"]) if "lease_until" in item else 0.0,
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message', '')}"
