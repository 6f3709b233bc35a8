"""Typed domain errors.

A task Lambda lets these propagate: Step Functions sees the class name as the error name, so the
state machine's ``Retry`` and ``Catch`` match them (``"ErrorEquals": ["SoracomRateLimitedError"]``).
Renaming a class is therefore a change of the state machine's contract.
"""

from __future__ import annotations


class SorachargeError(Exception):
    """Base class of every error soracharge raises on purpose."""


class InvalidInputError(SorachargeError):
    """An event, state machine input or command-line value is malformed; the message names it."""


class MonthOutOfRangeError(InvalidInputError):
    """The month is well formed but Soracom cannot bill it (not over yet, or older than 18 months)."""


class ConfigurationError(SorachargeError):
    """A setting is missing or invalid; the message names the environment variable."""


class SoracomError(SorachargeError):
    """Base class of errors that come from talking to the Soracom API."""


class SoracomAuthError(SoracomError):
    """Soracom refused the credentials (also after one re-authentication)."""


class SoracomApiError(SoracomError):
    """Soracom answered something this client does not expect (an unexpected 4xx or body)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BillNotFoundError(SoracomError):
    """Soracom has no bill for the month (no charge that month, or outside its 18 months)."""


class BillNotClosedError(SoracomError):
    """The month's bill is not final yet (Soracom closes a month 1-3 business days after it ends)."""


class SoracomRateLimitedError(SoracomError):
    """Soracom answered 429; ``retry_after_seconds`` is its Seconds-Before-Refresh hint."""

    def __init__(self, message: str, *, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class SoracomUnavailableError(SoracomError):
    """A transient failure: a 5xx, a timeout, a dropped or truncated connection. Safe to retry."""


class ExportDownloadError(SoracomError):
    """The export's download URL was refused (expired, forbidden or gone): run the export again."""


class UnsafeDownloadUrlError(ExportDownloadError):
    """The export's download URL is not https on an allowed host: it is not followed (a poisoned answer)."""


class StorageError(SorachargeError):
    """S3 refused or failed a read or write of the data bucket."""


class MappingError(InvalidInputError):
    """The mapping file is unreadable or invalid; the message names the file, the line and the field."""


class ImportRejectedError(InvalidInputError):
    """A billing CSV has bad or unmapped rows: nothing was imported and the report lists every problem."""


class CloudBlueError(SorachargeError):
    """Base class of errors that come from talking to CloudBlue's ChargesImportManager."""


class CloudBlueAuthError(CloudBlueError):
    """CloudBlue refused the OAuth signature or the APS token."""


class CloudBlueApiError(CloudBlueError):
    """CloudBlue answered an APS error (``{code, type, message}``) that retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None, aps_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.aps_type = aps_type


class CloudBlueUnavailableError(CloudBlueError):
    """A transient CloudBlue failure (5xx, 429, timeout, dropped connection) that outlived the bounded retries.

    ``outcome_unknown`` is true when the request was sent and CloudBlue may have handled it: no answer came
    back (a timeout, a dropped connection), or a 5xx that does not say it was not taken (500, 502, 504).
    False when CloudBlue said it did not take it (429, 503) or the connection never opened.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class ImportInProgressError(SorachargeError):
    """Another invocation holds the object (or the month) right now: this one fails so Lambda retries it later."""


class ImportSupersededError(SorachargeError):
    """A later attempt of the same file took its import over while this one was slow: this one stops, and
    nothing it would still write or send reaches the ledger or CloudBlue (the attempts' fence)."""


class ImportResumeError(SorachargeError):
    """A retry cannot finish what its last attempt closed (the file now reads otherwise): nothing is sent again."""


class ImportTimeBudgetError(SorachargeError):
    """The function's time ran short mid-import: it stopped sending cleanly, and its retry resumes."""
