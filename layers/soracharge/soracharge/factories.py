"""Adapters built once per process from the current settings, and passed into the use cases.

Each factory reads its settings at call time and caches the adapter per distinct settings value,
so a warm Lambda reuses its HTTP connections and Soracom token, while a changed environment (tests,
the local engine) gets a fresh adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from pydantic import SecretStr, ValidationError

from soracharge.adapters.cloudblue import ApsTokenAuth, CloudBlueClient, OAuth1TwoLegged
from soracharge.adapters.ledger import DynamoDbLedger
from soracharge.adapters.mapping_source import load_mapping
from soracharge.adapters.notifier import SnsNotifier
from soracharge.adapters.soracom import OperatorAccess, SoracomClient
from soracharge.adapters.storage import S3ObjectStore
from soracharge.adapters.workflows import StepFunctionsStarter
from soracharge.errors import ConfigurationError
from soracharge.models.accounts import Account
from soracharge.models.coverage import Coverage
from soracharge.models.soracom import SoracomCredentials
from soracharge.settings import (
    CloudBlueSettings,
    CoverageSettings,
    FollowSettings,
    ImportSettings,
    SoracomSettings,
    StorageSettings,
    load_settings,
)

if TYPE_CHECKING:
    import httpx
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_stepfunctions import SFNClient

    from soracharge.logic.imports import ImportDependencies
    from soracharge.models.mapping import Mapping

#: How long a secret read from Secrets Manager is reused before it is read again (rotation).
SECRET_MAX_AGE_SECONDS = 300


def soracom_client(coverage: Coverage, operator: str | None = None) -> SoracomClient:
    """The client of one coverage's API host (the AuthKey and its token cache are per host), acting in the
    stack's own operator, or in ``operator`` (one ``SoracomAccounts`` lists: switched into, or with its own
    AuthKey)."""
    settings = load_settings(SoracomSettings)
    if operator is None:
        return _soracom_client(settings, coverage)
    from soracharge.logic.export import request_account  # the export functions only

    request_account(coverage, operator, settings.coverages, settings.accounts, "the Soracom client")  # listed?
    account = next(a for a in settings.accounts if a.operator == operator)
    return _soracom_client(settings, coverage, account)


def stack_coverages() -> tuple[Coverage, ...]:
    """The coverages this stack exports (SORACOM_COVERAGE_TYPE: jp, g or jp,g)."""
    return load_settings(CoverageSettings).coverages


def stack_accounts() -> tuple[Account, ...]:
    """The operators this stack exports besides its own (SORACOM_ACCOUNTS)."""
    return load_settings(CoverageSettings).accounts


def object_store(bucket: str | None = None) -> S3ObjectStore:
    return S3ObjectStore(_s3_client(), bucket or load_settings(StorageSettings).soracharge_bucket)


def cloudblue_client() -> CloudBlueClient:
    return _cloudblue_client(load_settings(CloudBlueSettings))


def ledger(table: str) -> DynamoDbLedger:
    return DynamoDbLedger(_dynamodb_client(), table)


def notifier(topic_arn: str) -> SnsNotifier:
    return SnsNotifier(_sns_client(), topic_arn)


def workflows() -> StepFunctionsStarter:
    return StepFunctionsStarter(_sfn_client())


@cache
def _cloudblue_client(settings: CloudBlueSettings) -> CloudBlueClient:
    return CloudBlueClient(
        endpoint=settings.aps_endpoint,
        auth=cloudblue_auth(settings),
        resource_id=settings.aps_resource_id,
        timeout_seconds=settings.aps_timeout_seconds,
        max_attempts=settings.aps_max_attempts,
    )


def cloudblue_auth(settings: CloudBlueSettings) -> httpx.Auth:
    """OAuth 1.0a or an APS token, from the environment when set, else from the Secrets Manager secret."""
    if settings.aps_oauth_consumer_key and settings.aps_oauth_consumer_secret is not None:
        return OAuth1TwoLegged(settings.aps_oauth_consumer_key, settings.aps_oauth_consumer_secret)
    if settings.aps_token is not None:
        token = settings.aps_token
        return ApsTokenAuth(lambda: token)
    secret_id = settings.aps_credentials_secret_id or ""
    value = _secret_json(secret_id, "the CloudBlue credentials secret")
    if value.get("consumerKey") and value.get("consumerSecret"):
        return OAuth1TwoLegged(str(value["consumerKey"]), SecretStr(str(value["consumerSecret"])))
    if value.get("apsToken"):
        # Re-read through the cache on each request, so a token rotated in the secret is picked up.
        return ApsTokenAuth(
            lambda: SecretStr(str(_secret_json(secret_id, "the CloudBlue credentials secret")["apsToken"]))
        )
    raise ConfigurationError(f"the secret {secret_id} must be JSON with consumerKey and consumerSecret, or apsToken")


@cache
def _soracom_client(settings: SoracomSettings, coverage: Coverage, account: Account | None = None) -> SoracomClient:
    """The client of one coverage acting in the stack's own operator (``account`` None) or a listed one.

    Whatever the AuthKey secrets hold, one operator's bill is never exported under two names: the stack's own
    AuthKey must not belong to an operator SoracomAccounts lists, and a listed operator's own AuthKey must not
    belong to the stack's own operator (each client refuses before it reads anything, see ``OperatorAccess``)."""
    listed = {a.operator: "which SoracomAccounts lists as another operator" for a in settings.accounts}
    credentials: Callable[[], SoracomCredentials] = lambda: soracom_credentials(settings)  # noqa: E731
    access = OperatorAccess(never=lambda: listed) if listed else None
    if account is not None:
        access = OperatorAccess(operator_id=account.operator, switch_user=account.switch_user, never=lambda: listed)
        if account.switch_user is None:  # the operator's own AuthKey, in the secret named after it
            secret_id = f"{settings.soracom_account_secret_prefix}{account.operator}"
            credentials = lambda: _credentials_in(secret_id, f"operator {account.operator}'s AuthKey secret")  # noqa: E731
            own = _soracom_client(settings, coverage)
            access = OperatorAccess(
                operator_id=account.operator, never=lambda: {own.operator_id(): "the stack's own operator"}
            )
    return SoracomClient(
        base_url=settings.base_url(coverage),
        credentials=credentials,
        timeout_seconds=settings.soracom_timeout_seconds,
        download_timeout_seconds=settings.soracom_download_timeout_seconds,
        token_timeout_seconds=settings.soracom_token_timeout_seconds,
        download_url_patterns=settings.download_url_patterns,
        operator=access,
    )


def soracom_credentials(settings: SoracomSettings) -> SoracomCredentials:
    """The AuthKey pair: from the environment when set, else from the Secrets Manager secret."""
    if settings.soracom_auth_key_id and settings.soracom_auth_key is not None:
        return SoracomCredentials(auth_key_id=settings.soracom_auth_key_id, auth_key=settings.soracom_auth_key)
    return _credentials_in(settings.soracom_auth_secret_id or "", "the Soracom AuthKey secret")


def _credentials_in(secret_id: str, what: str) -> SoracomCredentials:
    try:
        return SoracomCredentials.model_validate(_secret_json(secret_id, what))
    except ValidationError:
        raise ConfigurationError(f"the secret {secret_id} must be JSON with non-empty authKeyId and authKey") from None


def _secret_json(secret_id: str, what: str) -> dict[str, object]:
    try:
        value = parameters.get_secret(secret_id, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
    except (GetParameterError, TransformParameterError) as exc:
        raise ConfigurationError(f"cannot read {what} {secret_id}: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{what} {secret_id} must be a JSON object")
    return value


@cache
def _s3_client() -> S3Client:
    return boto3.client("s3")


@cache
def _dynamodb_client() -> DynamoDBClient:
    return boto3.client("dynamodb")


@cache
def _sns_client() -> SNSClient:
    return boto3.client("sns")


@cache
def _sfn_client() -> SFNClient:
    return boto3.client("stepfunctions")


def import_dependencies(
    remaining_seconds: Callable[[], float] = lambda: math.inf, function_name: str | None = None
) -> ImportDependencies:
    """Everything the import use case talks to, from the import function's settings."""
    from soracharge.logic.imports import ImportDependencies  # only the import function pays for it

    settings = load_settings(ImportSettings)
    store = object_store(settings.soracharge_bucket)
    return ImportDependencies(
        store=store,
        ledger=ledger(settings.soracharge_ledger_table),
        cloudblue=cloudblue_client(),
        workflows=workflows(),
        mapping=lambda coverage: _coverage_mapping(settings.soracharge_mapping, coverage),
        follow_state_machine_arn=settings.soracharge_follow_session_state_machine_arn,
        notifier=notifier(settings.soracharge_alerts_topic_arn),
        concurrency=settings.import_concurrency,
        coverages=settings.coverages,
        accounts=settings.accounts,
        remaining_seconds=remaining_seconds,
        function_name=function_name or "<ImportChargesFunction>",
    )


def _coverage_mapping(uri: str, coverage: Coverage) -> tuple[Mapping, str]:
    """The mapping at ``uri``, with ``{coverage}`` in it replaced by the bill's coverage (``jp``, ``g``):
    one mapping for both coverages, or one each (``s3://.../config/mapping.{coverage}.yaml``)."""
    location = uri.replace("{coverage}", coverage)
    return load_mapping(location, _mapping_reader(location))


def follow_dependencies() -> tuple[S3ObjectStore, DynamoDbLedger, SnsNotifier, str | None]:
    """The report store, the ledger, the alerts topic, and the follow state machine's ARN (for alerts)."""
    settings = load_settings(FollowSettings)
    return (
        object_store(settings.soracharge_bucket),
        ledger(settings.soracharge_ledger_table),
        notifier(settings.soracharge_alerts_topic_arn),
        settings.soracharge_follow_session_state_machine_arn,
    )


def _mapping_reader(uri: str) -> S3ObjectStore | None:
    if not uri.startswith("s3://"):
        return None
    return object_store(uri.removeprefix("s3://").partition("/")[0])
