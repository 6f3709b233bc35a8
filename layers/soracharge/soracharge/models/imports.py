"""The import flow's contracts: where a CSV lives, its report, and the follow-session payloads."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import S3RecordModel
from pydantic import ConfigDict, Field

from soracharge.errors import InvalidInputError
from soracharge.models.charges import ProblemKind
from soracharge.models.coverage import Coverage
from soracharge.models.export_flow import ExactDecimal, Payload
from soracharge.models.months import YearMonth

#: ``exports/<yyyyMM>/[<operatorId>/][<coverage>/]<exportedFileId>.csv`` (the export flow) or
#: ``uploads/<yyyyMM>/[<operatorId>/][<coverage>/]<name>.csv`` (a person); the folder ``jp`` or ``g`` names the
#: coverage, an ``OP...`` folder an operator SoracomAccounts lists (none: the stack's own operator).
IMPORTABLE_KEY = re.compile(
    r"(?P<source>exports|uploads)/(?P<month>\d{4}(0[1-9]|1[0-2]))/"
    r"(?:(?P<operator>OP[0-9A-Z]{10})/)?(?:(?P<coverage>jp|g)/)?[^/]+\.csv"
)

#: SUPERSEDED is read from reports written before the attempts' fence; nothing writes it any more.
ReportStatus = Literal[
    "REJECTED",
    "DUPLICATE",
    "HELD",
    "SUPERSEDED",
    "AWAITING_APPROVAL",
    "CLOSED",
    "PROCESSED",
    "FAILED_PROCESSED",
    "NOT_RATED",
    "DRY_RUN",
]
SessionStatus = Literal["OPEN", "NEW", "PROCESSING", "FAILED_PROCESSED", "PROCESSED", "REPORTED"]


class EndReason(StrEnum):
    """Why an import ended without importing: with the report's status, what its alert says and which
    runbook action it names (``logic/alerts.py``), never read from the summary's words."""

    #: REJECTED: the file has bad or unmapped rows, bad metadata, or a coverage or currency that cannot be told.
    PROBLEMS = "problems"
    #: DUPLICATE: these bytes were imported for the month already (an export run twice, a file uploaded twice).
    SAME_BYTES = "same-bytes"
    #: DUPLICATE: these bytes were imported for the month as the other coverage's bill (one names the wrong one).
    SAME_BYTES_OTHER_COVERAGE = "same-bytes-other-coverage"
    #: HELD: another file is the month's bill of this coverage; importing this one too would bill it twice.
    SECOND_FILE = "second-file"
    #: HELD: two exports of the month ran at once; the other's file was imported.
    EXPORTED_TWICE = "exported-twice"
    #: HELD: CloudBlue failed to rate the month's bill (or these bytes): import it again as an additional file.
    FAILED_RATING = "failed-rating"
    #: AWAITING_APPROVAL: the month is unusual against the months before it (or the mapping asks for
    #: approval always): nothing is sent until a person approves the preview.
    REVIEW = "review"
    #: REJECTED: a person rejected the preview: nothing was sent.
    REVIEW_REJECTED = "review-rejected"


class ObjectRef(Payload):
    """One version of one S3 object."""

    bucket: str
    key: str
    version_id: str | None = None

    @classmethod
    def from_s3_record(cls, record: S3RecordModel) -> ObjectRef:
        """From an S3 event record: the key arrives URL-encoded with ``+`` for spaces."""
        if record.s3.object is None:
            raise InvalidInputError(f"S3 event record for bucket {record.s3.bucket.name} names no object")
        return cls(
            bucket=record.s3.bucket.name,
            key=unquote_plus(record.s3.object.key),
            version_id=record.s3.object.versionId,
        )

    @classmethod
    def from_object_id(cls, object_id: str) -> ObjectRef:
        """From ``<bucket>/<key>#<version>`` (:attr:`object_id`), or :class:`InvalidInputError` naming it."""
        location, hash_, version = object_id.rpartition("#")
        bucket, slash, key = location.partition("/")
        if not (hash_ and slash and bucket and key and version):
            raise InvalidInputError(f"objectId {object_id!r} is not <bucket>/<key>#<version> (the alert names it)")
        return cls(bucket=bucket, key=key, version_id=None if version == "null" else version)

    @property
    def object_id(self) -> str:
        return f"{self.bucket}/{self.key}#{self.version_id or 'null'}"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def layout(self) -> tuple[str, str]:
        """``(source, month)`` from the key, or :class:`InvalidInputError` saying where a CSV must go."""
        match = IMPORTABLE_KEY.fullmatch(self.key)
        if match is None:
            raise InvalidInputError(
                f"{self.uri} is not where an importable CSV goes: use exports/<yyyyMM>/<name>.csv or "
                "uploads/<yyyyMM>/<name>.csv (or uploads/<yyyyMM>/<jp|g>/<name>.csv, naming the coverage, and "
                "uploads/<yyyyMM>/<operatorId>/<jp|g>/<name>.csv for an operator SoracomAccounts lists)"
            )
        return match["source"], match["month"]

    def key_coverage(self) -> Coverage | None:
        """The coverage the key's folder names (``.../<yyyyMM>/g/<name>.csv``), or None."""
        match = IMPORTABLE_KEY.fullmatch(self.key)
        return match["coverage"] if match and match["coverage"] else None  # type: ignore[return-value]

    def key_operator(self) -> str | None:
        """The operator the key's folder names (``.../<yyyyMM>/OP0012345678/g/<name>.csv``), or None."""
        match = IMPORTABLE_KEY.fullmatch(self.key)
        return match["operator"] if match and match["operator"] else None


def report_key(month: str | None, version_id: str | None, key: str) -> str:
    """``reports/<yyyyMM>/<object-version>.json`` (``reports/unsorted/`` when the key names no month)."""
    name = version_id or re.sub(r"[^A-Za-z0-9._-]", "_", key)
    return f"reports/{month or 'unsorted'}/{name}.json"


class Problem(Payload):
    line: int | None = None
    column: str | None = None
    value: str | None = None
    message: str
    #: What kind of mistake it is (absent in reports written before kinds).
    kind: ProblemKind | None = None


class Amount(Payload):
    name: str
    amount: ExactDecimal
    #: The SIMs of a customer value, where counted.
    sims: int | None = None
    #: The devices (cameras, LoRa and Sigfox devices...) of a customer value, where counted and any.
    devices: int | None = None


class ShareAmount(Payload):
    """One customer's share of a shared cost: its basis and its share."""

    customer: str
    subscription: str
    basis: ExactDecimal
    amount: ExactDecimal


class SharedCost(Payload):
    """A cost no customer owns, shared out (``logic/shares.py``): the shares add up to ``total`` exactly."""

    items: list[str]
    resource: str
    total: ExactDecimal
    #: ``amount``, or the bill items (globs) whose amounts each customer's basis sums.
    basis: str
    basis_total: ExactDecimal
    decimals: int
    lines: list[ShareAmount]


ReconciliationStepKind = Literal["csv-sum", "rounding", "coupon", "tax"]


class ReconciliationStep(Payload):
    """One step from the CSV's sum to the bill (logic/reconciliation.py): what it changed, where it lands."""

    kind: ReconciliationStepKind
    label: str
    change: ExactDecimal | None = None
    amount: ExactDecimal


class Reconciliation(Payload):
    """The CSV's sum, made into the bill step by step (rounding, coupon, tax), and the sum CloudBlue accepted.

    ``balanced``: the steps land exactly on Soracom's bill amount (when the file came from the export
    flow) and CloudBlue accepted exactly the CSV's sum. ``difference`` is the bill less ``expected_bill``.
    """

    bill_amount: ExactDecimal | None = None
    coupon_amount: ExactDecimal | None = None
    tax_rate: ExactDecimal | None = None
    csv_sum: ExactDecimal
    imported_sum: ExactDecimal
    expected_bill: ExactDecimal | None = None
    difference: ExactDecimal | None = None
    balanced: bool
    note: str
    steps: list[ReconciliationStep] = Field(default_factory=list)


VarianceKind = Literal["moved", "appeared", "vanished", "new-item"]


class VarianceFlag(Payload):
    """One way the month differs from the month imported before it, past the mapping's ``review`` settings."""

    kind: VarianceKind
    #: The customer value (``moved``, ``appeared``, ``vanished``) or the bill item (``new-item``).
    name: str
    previous: ExactDecimal | None = None
    amount: ExactDecimal | None = None
    message: str


class Series(Payload):
    """One customer's amount in each month of :attr:`Variance.months` (None: nothing billed that month)."""

    name: str
    amounts: list[ExactDecimal | None]


class Variance(Payload):
    """The month against the months imported before it (``logic/variance.py``)."""

    #: The earlier months found, oldest first, then this month (the chart's columns).
    months: list[YearMonth]
    #: The month compared with (the latest earlier one), None when none was imported before.
    compared_with: YearMonth | None = None
    flags: list[VarianceFlag] = Field(default_factory=list)
    per_customer: list[Series] = Field(default_factory=list)
    #: The thresholds used (the mapping's ``review.variance``).
    change: ExactDecimal
    floor: ExactDecimal

    @property
    def unusual(self) -> bool:
        return bool(self.flags)


class Approval(Payload):
    """A person's review of the month before anything is sent (the mapping's ``review.approval``)."""

    #: ``unusual``: asked because the variance flagged the month; ``always``: the mapping asks every month.
    asked_because: Literal["unusual", "always"]
    #: What is approved: the packets' fingerprint (the same packets are sent once approved, or nothing).
    plan: str
    #: The version of the month's record (``month#``) the preview judged: a decision holds for it only.
    month_version: int = 0
    decision: Literal["pending", "approved", "rejected"] = "pending"
    by: str | None = None
    at: datetime | None = None


class ReportCounts(Payload):
    rows: int = 0
    charges: int = 0
    packets: int = 0
    packets_sent_this_run: int = 0
    packets_already_accepted: int = 0
    problems: int = 0
    unmapped_rows: int = 0


class ImportReport(Payload):
    """``reports/<yyyyMM>/<object-version>.json``: what happened to one uploaded or exported CSV."""

    status: ReportStatus
    summary: str
    month: YearMonth | None = None
    #: The bill's coverage (``jp`` or ``g``); absent in reports written before coverages.
    coverage: Coverage | None = None
    #: The bill's operator when it is one SoracomAccounts lists; absent: the stack's own operator.
    operator: str | None = None
    object: ObjectRef
    source: Literal["exports", "uploads"] | None = None
    sha256: str | None = None
    currency: str | None = None
    mapping: str | None = None
    import_session_id: int | None = None
    abandoned_sessions: list[int] = Field(default_factory=list)
    session_status: SessionStatus | None = None
    error_desc: str | None = None
    counts: ReportCounts = Field(default_factory=ReportCounts)
    reconciliation: Reconciliation | None = None
    per_customer: list[Amount] = Field(default_factory=list)
    per_subscription: list[Amount] = Field(default_factory=list)
    per_item: list[Amount] = Field(default_factory=list)
    #: The costs no customer owns that the mapping shares out, and how.
    shares: list[SharedCost] = Field(default_factory=list)
    #: The one line that says why the file cannot be imported, when one kind of problem explains the others.
    diagnosis: str | None = None
    problems: list[Problem] = Field(default_factory=list)
    problems_not_listed: int = 0
    #: Every problem counted by kind (``problems`` lists the first ones).
    problem_counts: dict[ProblemKind, int] = Field(default_factory=dict)
    #: Customer values the mapping does not list, so their rows went to the default subscription.
    defaulted: list[Amount] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    #: The other file: the one whose bytes this file repeats (DUPLICATE), or the month's bill (HELD).
    duplicate_of: str | None = None
    #: Why it ended without importing (with ``status``); absent when it imported, and in reports before reasons.
    reason: EndReason | None = None
    #: The month against the months before it (absent for a file rejected before, and in older reports).
    variance: Variance | None = None
    #: The person's review, when the mapping asked for one.
    approval: Approval | None = None
    created_at: datetime
    updated_at: datetime


class ReviewRequest(Payload):
    """A person's decision on an import held for approval (the import function's ``{"review": ...}`` event)."""

    #: ``<bucket>/<key>#<version>``, as the alert names it.
    object_id: str = Field(min_length=3)
    #: The plan the preview showed (its ``approval.plan``): a decision on anything else is refused.
    plan: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    #: The month's version the preview judged (its ``approval.monthVersion``): a decision on an older preview
    #: of the same plan (the month changed since) is refused.
    version: int = Field(ge=0)
    decision: Literal["approve", "reject"]
    #: Who decides: recorded in the ledger and the report.
    by: str = Field(min_length=1, max_length=200, pattern=r"\S")


class SessionProgress(Payload):
    """Where a closed import session stands while the follow-session state machine watches it."""

    import_session_id: int = Field(ge=0)
    status: SessionStatus
    polls: int = Field(default=0, ge=0)
    error_desc: str | None = None
    #: The month and the object version imported, carried through the polls so that every log line names them.
    month: YearMonth | None = None
    object_id: str | None = None


class FollowFailure(Payload):
    """What a Catch in the follow state machine caught (``{"Error", "Cause"}``)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    error: str = Field(alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class FollowSessionRequest(Payload):
    """The follow-import-session state machine's input (the import function starts it)."""

    object_id: str
    month: YearMonth
    #: The bill's coverage, for the alerts (absent in executions started before coverages).
    coverage: Coverage | None = None
    #: The bill's operator when it is one SoracomAccounts lists, for the alerts.
    operator: str | None = None
    report_key: str
    session: SessionProgress
    failure: FollowFailure | None = None


class ImportOutcome(Payload):
    """FinishImport's output: the session's end as the report now records it."""

    status: Literal["PROCESSED", "FAILED_PROCESSED", "NOT_RATED"]
    import_session_id: int
    report_key: str
    error_desc: str | None = None
