"""The one Logger, Tracer and Metrics of every function, and the names of every metric.

Service name, log level and metrics namespace come from ``POWERTOOLS_*`` variables set in the
template's Globals (and by the local engine), so nothing here is configured in code.

Log keys: every line of the export carries ``month`` and, once known, ``exportedFileId``; every
line of the import and of the follow-session flow carries ``month``, ``objectKey``,
``objectVersion`` and, once opened, ``importSessionId``. The CloudWatch dashboard in
``template.yaml`` charts the metrics below (a test keeps the two lists equal).
"""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from enum import StrEnum

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

# httpx logs every request's full URL at INFO: for the export's download that is a pre-signed URL
# whose query carries temporary credentials, so httpx's own logs stay at warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class Metric(StrEnum):
    """Every metric soracharge emits (namespace ``Soracharge``, dimension ``service``)."""

    # The export flow, once per month exported.
    EXPORT_POLLS_NEEDED = "ExportPollsNeeded"  # polls until Soracom's export was ready
    EXPORTS_STORED = "ExportsStored"
    EXPORTS_ALREADY_STORED = "ExportsAlreadyStored"  # a re-run of a month exported before
    EXPORT_BYTES_STORED = "ExportBytesStored"
    # The import, once per file.
    ROWS_READ = "RowsRead"
    CHARGES_SENT = "ChargesSent"
    PACKETS_SENT = "PacketsSent"
    AMOUNT_IMPORTED = "AmountImported"  # with the dimensions Currency and Coverage
    UNMAPPED_ROWS = "UnmappedRows"
    IMPORTS_CLOSED = "ImportsClosed"
    IMPORTS_REJECTED = "ImportsRejected"
    IMPORTS_HELD = "ImportsHeld"
    IMPORTS_AWAITING_APPROVAL = "ImportsAwaitingApproval"
    IMPORTS_DUPLICATE = "ImportsDuplicate"
    IMPORTS_SUPERSEDED = "ImportsSuperseded"  # an attempt stopped by its fence: a later attempt took over
    SESSIONS_ABANDONED = "SessionsAbandoned"
    RECONCILIATION_IMBALANCED = "ReconciliationImbalanced"
    DUPLICATE_IMPORT_EVENTS = "DuplicateImportEvents"
    HTML_REPORTS_FAILED = "HtmlReportsFailed"  # the JSON report was written, its page was not
    # How CloudBlue's rating ended, once per session.
    SESSION_POLLS_NEEDED = "SessionPollsNeeded"
    SESSIONS_PROCESSED = "ImportSessionsProcessed"
    SESSIONS_FAILED_PROCESSED = "ImportSessionsFailedProcessed"
    SESSIONS_NOT_RATED = "ImportSessionsNotRated"
    # Alerts published to the SNS topic.
    ALERTS_PUBLISHED = "AlertsPublished"


def count(metric: Metric, value: int = 1) -> None:
    metrics.add_metric(name=metric.value, unit=MetricUnit.Count, value=value)


def add_amount(metric: Metric, amount: Decimal, currency: str, coverage: str, operator: str | None = None) -> None:
    """A money metric with the dimensions ``Currency`` and ``Coverage`` (``jp``, ``g``), and ``Operator`` for an
    operator SoracomAccounts lists (the stack's own has none: its series stay as they were), flushed at once (the
    shared ``metrics`` has one set of dimensions per invocation). Telemetry only: amounts never go
    through float elsewhere.

    Outside a function (a unit test, a dry run) there is no namespace, so nothing is emitted.
    """
    namespace = metrics.namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
    if not namespace or os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
        return
    dimensions = {"service": metrics.service or "soracharge", "Currency": currency, "Coverage": coverage}
    # Every amount is in the series per currency and coverage (the dashboard's); a listed operator's also in
    # its own, per operator.
    for each in (dimensions, {**dimensions, "Operator": operator} if operator else None):
        if each is None:
            continue
        with single_metric(
            name=metric.value, unit=MetricUnit.NoUnit, value=float(amount), namespace=namespace, default_dimensions=each
        ):
            pass
