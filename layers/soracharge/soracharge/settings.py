"""Settings: one validated model per concern, read from the environment at call time.

The same variable names work locally and in Lambda. In AWS the Soracom AuthKey lives in Secrets
Manager (``SORACOM_AUTH_SECRET_ID``, a JSON secret ``{"authKeyId": ..., "authKey": ...}``);
locally ``SORACOM_AUTH_KEY_ID`` / ``SORACOM_AUTH_KEY`` may be set instead.
"""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from soracharge.errors import ConfigurationError, InvalidInputError
from soracharge.models.accounts import Account, parse_accounts
from soracharge.models.coverage import Coverage, parse_coverages

SORACOM_ENDPOINTS = {"jp": "https://api.soracom.io", "g": "https://g.api.soracom.io"}


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)


SettingsT = TypeVar("SettingsT", bound=_Settings)


def load_settings(model: type[SettingsT]) -> SettingsT:
    """Read ``model`` from the environment now; a bad or missing value raises :class:`ConfigurationError`."""
    try:
        return model()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            variable = "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            given = error.get("input")
            if variable and isinstance(given, str) and not _SECRET.search(variable):
                message = f"{message}, got {given!r}"  # a secret's value is never repeated
            problems.append(f"{variable}: {message}" if variable else message)
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


_BUCKET = "The data bucket: exports/, uploads/, reports/ (the template's DataBucket)"
_LEDGER = "The DynamoDB ledger of imports, one entry per file (the template's LedgerTable)"
_TOPIC = "The SNS topic alerts are published to (the template's AlertsTopic)"
_FOLLOW = "The state machine that follows a CloudBlue session until it is rated"
_EXPORT = "The export-billing state machine"
_CLOUDBLUE_SECRET = "Secrets Manager secret holding {consumerKey, consumerSecret} or {apsToken} (AWS)"  # noqa: S105

#: Variables whose values are never shown, not even in an error.
_SECRET = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.IGNORECASE)


class CoverageSettings(_Settings):
    """The coverages this stack exports: ``jp``, ``g`` or ``jp,g`` (the template's SoracomCoverageType), and
    the operators it exports besides its own (SoracomAccounts: ``models/accounts.py``)."""

    soracom_coverage_type: str = Field(
        default="jp", description="The coverages exported: jp (Japan), g (Global), or jp,g (both, two bills a month)"
    )
    soracom_accounts: str = Field(default="", description="JSON list of the other operators this stack exports")

    @field_validator("soracom_accounts")
    @classmethod
    def _known_accounts(cls, value: str) -> str:
        parse_accounts(value)  # its ValueError names what is wrong
        return value

    @property
    def accounts(self) -> tuple[Account, ...]:
        return parse_accounts(self.soracom_accounts)

    @field_validator("soracom_coverage_type")
    @classmethod
    def _known_coverages(cls, value: str) -> str:
        try:
            return ",".join(parse_coverages(value))
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None

    @property
    def coverages(self) -> tuple[Coverage, ...]:
        return parse_coverages(self.soracom_coverage_type)


class SoracomTuning(_Settings):
    """How patient the Soracom client is, and where it may download from."""

    soracom_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="timeout of each API call")
    soracom_download_timeout_seconds: float = Field(default=60.0, gt=0, le=900, description="timeout of the download")
    soracom_token_timeout_seconds: int = Field(default=3600, ge=180, le=172800, description="API token lifetime asked")
    soracom_download_url_patterns: str = Field(
        default="https://*.amazonaws.com",
        description="Comma-separated scheme://host globs the export's download URL (and each redirect) must match",
    )

    @property
    def download_url_patterns(self) -> tuple[str, ...]:
        return tuple(p.strip().lower() for p in self.soracom_download_url_patterns.split(",") if p.strip())


class CloudBlueTuning(_Settings):
    """How patient the CloudBlue client is."""

    aps_timeout_seconds: float = Field(default=30.0, gt=0, le=300, description="timeout of each CloudBlue call")
    aps_max_attempts: int = Field(default=4, ge=1, le=10, description="attempts of a call CloudBlue did not take")


class ImportTuning(_Settings):
    """How many packets one import sends at once."""

    import_concurrency: int = Field(default=8, ge=1, le=64, description="importCharges calls in flight for one file")


class SoracomSettings(CoverageSettings, SoracomTuning):
    """How to reach and authenticate to the Soracom API (one AuthKey serves every coverage)."""

    soracom_endpoint: str | None = Field(
        default=None,
        description="Base URL without /v1 (as soracom-cli takes it) of every coverage; overrides the coverage's own.",
    )
    soracom_endpoint_jp: str | None = Field(default=None, description="Japan coverage's base URL; wins over the above")
    soracom_endpoint_g: str | None = Field(default=None, description="Global coverage's base URL; wins over the above")
    soracom_auth_key_id: str | None = Field(
        default=None, description="AuthKey id (keyId-...), with SORACOM_AUTH_KEY (local)"
    )
    soracom_auth_key: SecretStr | None = Field(default=None, description="AuthKey secret (secret-...), never shown")
    soracom_auth_secret_id: str | None = Field(
        default=None, description="Secrets Manager secret holding {authKeyId, authKey} (AWS; instead of the two above)"
    )
    #: A listed operator's own AuthKey is the secret ``<this prefix><operatorId>`` (the template's
    #: ``<stack>/soracom/``: the functions may read only secrets under it).
    soracom_account_secret_prefix: str = ""

    @model_validator(mode="after")
    def _credentials_from_somewhere(self) -> SoracomSettings:
        has_pair = bool(self.soracom_auth_key_id) and self.soracom_auth_key is not None
        if not has_pair and not self.soracom_auth_secret_id:
            raise ValueError(
                "set SORACOM_AUTH_KEY_ID and SORACOM_AUTH_KEY, or SORACOM_AUTH_SECRET_ID "
                "(a Secrets Manager secret holding {authKeyId, authKey})"
            )
        for name in ("soracom_endpoint", "soracom_endpoint_jp", "soracom_endpoint_g"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("https://", "http://")):
                raise ValueError(f"{name.upper()} must be an http(s) URL, got {value!r}")
        return self

    def base_url(self, coverage: Coverage) -> str:
        """The coverage's API base URL without /v1: its own variable, else SORACOM_ENDPOINT, else Soracom's host."""
        own = self.soracom_endpoint_jp if coverage == "jp" else self.soracom_endpoint_g
        endpoint = own or self.soracom_endpoint or SORACOM_ENDPOINTS[coverage]
        return endpoint.rstrip("/").removesuffix("/v1")


class StorageSettings(_Settings):
    """Where the data bucket is (no default: a function without it must fail loudly)."""

    soracharge_bucket: str = Field(min_length=3, max_length=63, description=_BUCKET)


class CloudBlueSettings(CloudBlueTuning):
    """How to reach and authenticate to CloudBlue's ChargesImportManager.

    Credentials: ``APS_TOKEN``, or ``APS_OAUTH_CONSUMER_KEY`` + ``APS_OAUTH_CONSUMER_SECRET``
    (locally), or ``APS_CREDENTIALS_SECRET_ID``: a Secrets Manager secret holding
    ``{"consumerKey": ..., "consumerSecret": ...}`` or ``{"apsToken": ...}`` (AWS).
    """

    aps_endpoint: str = Field(description="The brand endpoint, e.g. https://brand.example.com")
    aps_resource_id: str | None = Field(
        default=None, description="APS id of the ChargesImportManager resource (else discovered on the first call)"
    )
    aps_token: SecretStr | None = Field(default=None, description="An APS token (local), never shown")
    aps_oauth_consumer_key: str | None = Field(default=None, description="OAuth 1.0 consumer key (local)")
    aps_oauth_consumer_secret: SecretStr | None = Field(
        default=None, description="OAuth 1.0 consumer secret, never shown"
    )
    aps_credentials_secret_id: str | None = Field(default=None, description=_CLOUDBLUE_SECRET)

    @model_validator(mode="after")
    def _credentials_from_somewhere(self) -> CloudBlueSettings:
        if not self.aps_endpoint.startswith(("https://", "http://")):
            raise ValueError(f"APS_ENDPOINT must be an http(s) URL, got {self.aps_endpoint!r}")
        oauth = bool(self.aps_oauth_consumer_key) and self.aps_oauth_consumer_secret is not None
        if not (oauth or self.aps_token is not None or self.aps_credentials_secret_id):
            raise ValueError(
                "set APS_TOKEN, or APS_OAUTH_CONSUMER_KEY and APS_OAUTH_CONSUMER_SECRET, or APS_CREDENTIALS_SECRET_ID "
                "(a Secrets Manager secret holding {consumerKey, consumerSecret} or {apsToken})"
            )
        return self


class ImportSettings(CoverageSettings, ImportTuning):
    """What the import function needs besides CloudBlue (the template sets every one)."""

    soracharge_bucket: str = Field(min_length=3, max_length=63, description=_BUCKET)
    soracharge_ledger_table: str = Field(min_length=3, description=_LEDGER)
    soracharge_mapping: str = Field(
        min_length=1,
        description="A path or s3:// URI of the mapping YAML; {coverage} in it is the file's coverage (jp or g)",
    )
    soracharge_follow_session_state_machine_arn: str = Field(min_length=1, description=_FOLLOW)
    soracharge_alerts_topic_arn: str = Field(min_length=1, description=_TOPIC)


class LocalSettings(CoverageSettings, SoracomTuning, CloudBlueTuning, ImportTuning):
    """What a local run takes from the shell besides endpoints and credentials: checked before anything starts."""


class FollowSettings(_Settings):
    """What the session-following functions need."""

    soracharge_bucket: str = Field(min_length=3, max_length=63, description=_BUCKET)
    soracharge_ledger_table: str = Field(min_length=3, description=_LEDGER)
    soracharge_alerts_topic_arn: str = Field(min_length=1, description=_TOPIC)
    #: Only named in alerts (the command that follows a session again).
    soracharge_follow_session_state_machine_arn: str | None = None


class AlertSettings(CoverageSettings):
    """What the alert function needs (the secrets' ids only to name them in messages: it reads neither)."""

    soracharge_alerts_topic_arn: str = Field(min_length=1, description=_TOPIC)
    soracharge_export_state_machine_arn: str = Field(min_length=1, description=_EXPORT)
    soracom_auth_secret_id: str | None = Field(default=None, description="Soracom's AuthKey secret, named in alerts")
    aps_credentials_secret_id: str | None = Field(default=None, description="CloudBlue's secret, named in alerts")


class ExportStarterSettings(CoverageSettings):
    """What the function starting the listed operators' exports needs."""

    soracharge_export_state_machine_arn: str = Field(min_length=1, description=_EXPORT)
