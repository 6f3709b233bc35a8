"""Bodies of the Soracom API (docs/apis/openapi/), as this project reads them.

The OpenAPI files mark no field as required: these models require only what soracharge cannot
work without, and ignore unknown fields, so Soracom adding a field never breaks a run.
``tests/unit/test_reference_contracts.py`` checks them against the OpenAPI files. Money is
``Decimal``: pydantic reads a JSON number into a Decimal from its text, so ``28734.56`` stays
exactly that.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from soracharge.models.months import YearMonth


class SoracomBody(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AuthRequest(SoracomBody):
    """``POST /v1/auth`` with an AuthKey (AuthRequest in soracom-auth-api-openapi.yml)."""

    authKeyId: str
    authKey: str
    tokenTimeoutSeconds: int = Field(ge=180, le=172800)


class SwitchUserRequest(SoracomBody):
    """``POST /v1/auth/switch_user``: act in another operator that trusts the caller (a normal auth response)."""

    operatorId: str = Field(min_length=1)
    userName: str = Field(min_length=1)
    tokenTimeoutSeconds: int = Field(ge=180, le=3600)


class AuthResponse(SoracomBody):
    # Both go into HTTP headers: printable ASCII only.
    apiKey: str = Field(min_length=1, pattern=r"^[\x21-\x7e]+$")
    token: str = Field(min_length=1, pattern=r"^[\x21-\x7e]+$")
    operatorId: str | None = None


class MonthlyBill(SoracomBody):
    """``GET /v1/bills/{yyyyMM}`` (MonthlyBill)."""

    amount: Decimal
    #: The coupon taken off the month (the bill's ``amount`` is after it); absent means none.
    appliedCouponAmount: Decimal = Decimal(0)
    currency: Literal["JPY", "USD", "EUR"]
    state: Literal["temporary", "closed"]
    yearMonth: YearMonth | None = None


class ExportStarted(SoracomBody):
    """``POST /v1/bills/{yyyyMM}/export?export_mode=async`` (FileExportResponse, async form)."""

    # It goes into a URL path: letters, digits and _ - . only (Soracom's are "fe_" and hex or a UUID).
    exportedFileId: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    exportedFilePath: str | None = None


class ExportedFile(SoracomBody):
    """``GET /v1/files/exported/{exported_file_id}`` (GetExportedFileResponse)."""

    status: Literal["processing", "exported", "failed"]
    url: str | None = None


class SoracomErrorBody(SoracomBody):
    """Soracom's error body ``{"code": "ABC1234", "message": "..."}``."""

    code: str | None = None
    message: str | None = None


class SoracomCredentials(BaseModel):
    """An AuthKey pair, from the environment locally or a Secrets Manager secret in AWS."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    auth_key_id: str = Field(alias="authKeyId", min_length=1)
    auth_key: SecretStr = Field(alias="authKey", min_length=1)
