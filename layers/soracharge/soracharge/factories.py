"""Adapters built once per process from the current settings, and passed into the use cases.

Each factory reads its settings at call time and caches the adapter per distinct settings value,
so a warm Lambda reuses its HTTP connections and Soracom token, while a changed environment (tests,
the local engine) gets a fresh adapter.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from pydantic import ValidationError

from soracharge.adapters.soracom import SoracomClient
from soracharge.adapters.storage import S3ObjectStore
from soracharge.errors import ConfigurationError
from soracharge.models.soracom import SoracomCredentials
from soracharge.settings import SoracomSettings, StorageSettings, load_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: How long a secret read from Secrets Manager is reused before it is read again (rotation).
SECRET_MAX_AGE_SECONDS = 300


def soracom_client() -> SoracomClient:
    return _soracom_client(load_settings(SoracomSettings))


def object_store() -> S3ObjectStore:
    settings = load_settings(StorageSettings)
    return S3ObjectStore(_s3_client(), settings.soracharge_bucket)


@cache
def _soracom_client(settings: SoracomSettings) -> SoracomClient:
    return SoracomClient(
        base_url=settings.base_url,
        credentials=lambda: soracom_credentials(settings),
        timeout_seconds=settings.soracom_timeout_seconds,
        download_timeout_seconds=settings.soracom_download_timeout_seconds,
        token_timeout_seconds=settings.soracom_token_timeout_seconds,
    )


def soracom_credentials(settings: SoracomSettings) -> SoracomCredentials:
    """The AuthKey pair: from the environment when set, else from the Secrets Manager secret."""
    if settings.soracom_auth_key_id and settings.soracom_auth_key is not None:
        return SoracomCredentials(auth_key_id=settings.soracom_auth_key_id, auth_key=settings.soracom_auth_key)
    secret_id = settings.soracom_auth_secret_id or ""
    try:
        value = parameters.get_secret(secret_id, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
        return SoracomCredentials.model_validate(value)
    except (GetParameterError, TransformParameterError) as exc:
        raise ConfigurationError(f"cannot read the Soracom AuthKey secret {secret_id}: {exc}") from None
    except ValidationError:
        raise ConfigurationError(f"the secret {secret_id} must be JSON with non-empty authKeyId and authKey") from None


@cache
def _s3_client() -> S3Client:
    return boto3.client("s3")
