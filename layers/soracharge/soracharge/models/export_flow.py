"""Payloads of the export-billing state machine: what each task Lambda takes and returns.

Field names are camelCase on the wire (the ASL refers to ``$.bill.month``, ``$.export.polls``),
snake_case in Python. Amounts travel as decimal strings so no JSON float ever touches money.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel

from soracharge.models.accounts import OPERATOR_ID_PATTERN
from soracharge.models.coverage import Coverage
from soracharge.models.months import YearMonth, previous_month

#: A Soracom operator this stack exports besides its own (``SoracomAccounts``); absent: the stack's own.
OperatorId = Annotated[str, Field(pattern=f"^{OPERATOR_ID_PATTERN}$")]

#: Money on the wire: an exact decimal string in plain notation (``0.0000001``, never ``1E-7``).
ExactDecimal = Annotated[Decimal, PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json")]


class Payload(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    def to_event(self) -> dict[str, object]:
        """The JSON-ready dict a Lambda returns to Step Functions."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ExportRequest(Payload):
    """The state machine's input: an explicit ``month``, or the schedule's ``scheduledTime``, and the coverage.

    Each coverage's monthly EventBridge schedule passes ``{"scheduledTime":
    "<aws.scheduler.scheduled-time>", "coverage": "jp"}`` and the month billed is the one before it;
    a person or a backfill passes ``{"month": "202208"}`` (and ``"coverage": "g"`` on a stack that
    exports both). Without ``coverage`` it is the stack's own, when it exports one.
    """

    month: YearMonth | None = None
    scheduled_time: AwareDatetime | None = None
    coverage: Coverage | None = None
    #: One of the operators ``SoracomAccounts`` lists (``models/accounts.py``); absent: the stack's own.
    operator: OperatorId | None = None

    @model_validator(mode="after")
    def _one_source_of_month(self) -> ExportRequest:
        if self.month is None and self.scheduled_time is None:
            raise ValueError('give "month" (yyyyMM) or "scheduledTime" (ISO 8601 with a time zone)')
        try:
            self.billing_month()
        except (OverflowError, ValueError):
            raise ValueError(f"scheduledTime {self.scheduled_time} has no month before it") from None
        return self

    def billing_month(self) -> str:
        if self.month is not None:
            return self.month
        assert self.scheduled_time is not None  # guaranteed by the validator
        return previous_month(self.scheduled_time)


class BillSummary(Payload):
    """GetBill's output: the closed bill of the month being exported."""

    month: YearMonth
    amount: ExactDecimal
    applied_coupon_amount: ExactDecimal = Decimal(0)
    currency: Literal["JPY", "USD", "EUR"]
    coverage: Coverage
    operator: OperatorId | None = None

    def to_event(self) -> dict[str, object]:
        return {"operator": None, **super().to_event()}  # the ASL passes $.bill.operator on, null or not


class StartExportRequest(Payload):
    month: YearMonth
    #: Absent in executions started before coverages (the stack's own coverage then).
    coverage: Coverage | None = None
    operator: OperatorId | None = None


class ExportProgress(Payload):
    """Where an asynchronous export stands: StartExport creates it, every PollExport advances it.

    It never carries the pre-signed download URL: that URL's query holds temporary credentials, so
    it must not sit in the execution history. StoreExport asks for a fresh one and uses it at once.
    """

    exported_file_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    status: Literal["processing", "exported", "failed"]
    polls: int = Field(ge=0)
    #: The month exported and its coverage, carried through the polls (the coverage picks the API host).
    month: YearMonth | None = None
    coverage: Coverage | None = None
    operator: OperatorId | None = None


class StoreExportRequest(Payload):
    month: YearMonth
    amount: ExactDecimal
    #: Absent in executions started before the coupon was passed on (a template update mid-month).
    applied_coupon_amount: ExactDecimal = Decimal(0)
    currency: Literal["JPY", "USD", "EUR"]
    exported_file_id: str = Field(min_length=1)
    coverage: Coverage | None = None
    operator: OperatorId | None = None


class StoredExport(Payload):
    """Where StoreExport put the CSV."""

    bucket: str
    key: str
    version_id: str | None = None
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    uri: str
    download_url: str = Field(
        default="", description="Where Soracom served the file, without the pre-signed query (credentials)"
    )
    already_stored: bool = False


class ExportLookup(Payload):
    """FindStoredExport's output: whether the month was exported (and imported) before.

    A re-run of a month that is stored already ends here, without calling Soracom: ``summary``
    says where the CSV is and how its import ended.
    """

    month: YearMonth
    coverage: Coverage
    operator: OperatorId | None = None
    stored: StoredExport | None = None
    import_status: str | None = None
    import_report: str | None = None
    summary: str

    def to_event(self) -> dict[str, object]:
        return {"operator": None, **super().to_event()}  # the ASL passes $.previous.operator on, null or not
