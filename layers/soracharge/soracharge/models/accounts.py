"""Billing accounts: the Soracom operators a stack exports, each on its coverages.

Soracom bills each operator (account) on its own, once a month per coverage. A stack exports its own
operator (the one its AuthKey belongs to: the *primary*) on ``SoracomCoverageType``, as every stack
always did, and the operators ``SoracomAccounts`` lists besides it. Each listed one is reached either

- through **Switch User** (``"switchUser": "<user name>"``): the primary's AuthKey switches into the
  operator, which must trust it; or
- with **its own AuthKey** (no ``switchUser``): a Secrets Manager secret named
  ``<stack>/soracom/<operatorId>`` holding ``{"authKeyId", "authKey"}``.

A bill is one **account**: a coverage, and the operator when it is not the primary. Everything that
names a coverage names the operator too, only for a listed operator, so a stack that lists none keeps
every key, id and dimension it had:

- S3: ``exports/<yyyyMM>/<operatorId>/<coverage>/<id>.csv`` (and the same under ``uploads/``);
- the ledger: ``bill#<yyyyMM>#<coverage>#<operatorId>``, ``month#<yyyyMM>#<coverage>#<operatorId>``;
- a charge's ``extChargeId`` ends with ``-op…``, the operator id in lower case (after ``-g`` on Global), so
  two operators' bills of a month never share an id, even with one mapping for all;
- the report's ``operator``, the alerts' subjects and facts, the ``AmountImported`` metric (in the series per
  currency and coverage, and again with an ``Operator`` dimension).

One operator is never exported under two names: ``factories._soracom_client`` gives every client the
operators its credential must not belong to (``adapters.soracom.OperatorAccess.never``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from soracharge.errors import InvalidInputError
from soracharge.models.coverage import Coverage, coverage_label, parse_coverage, parse_coverages

#: A Soracom operator id (``OPXXXXXXXXXX`` in Soracom's reference): ``OP`` and ten capitals or digits.
OPERATOR_ID: Final = re.compile(r"OP[0-9A-Z]{10}", re.ASCII)
OPERATOR_ID_PATTERN: Final = OPERATOR_ID.pattern


def parse_operator(value: str) -> str:
    """An operator id as given (``OP`` and ten capitals or digits); :class:`InvalidInputError` naming it otherwise."""
    if not isinstance(value, str) or not OPERATOR_ID.fullmatch(value):
        raise InvalidInputError(
            f"operator must be a Soracom operator id (OP and ten capitals or digits, e.g. OP0012345678), got {value!r}"
        )
    return value


class Account(BaseModel):
    """One operator ``SoracomAccounts`` lists: its coverages, and how it is reached."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    operator: str = Field(pattern=f"^{OPERATOR_ID_PATTERN}$")
    coverages: tuple[Coverage, ...] = ("jp",)
    #: The user name Switch User switches to in the operator; None: the operator's own AuthKey secret.
    switch_user: str | None = Field(default=None, alias="switchUser", min_length=1, max_length=100)

    @field_validator("coverages", mode="before")
    @classmethod
    def _coverages(cls, value: object) -> tuple[Coverage, ...]:
        if isinstance(value, str | list | tuple):
            try:
                return parse_coverages(value)
            except InvalidInputError as exc:
                raise ValueError(str(exc)) from None
        raise ValueError(f'coverages must be "jp", "g" or "jp,g", got {value!r}')


_ACCOUNTS = TypeAdapter(list[Account])


def parse_accounts(text: str) -> tuple[Account, ...]:
    """``SoracomAccounts``: a JSON list of ``{"operator", "coverages", "switchUser"?}`` ("" or ``[]``: none).

    Each operator once: two entries of one operator would export its bill twice under two names."""
    if not text.strip():
        return ()
    try:
        accounts = _ACCOUNTS.validate_python(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"SORACOM_ACCOUNTS is not JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_url=False)
        )
        raise ValueError(
            f'SORACOM_ACCOUNTS must be a JSON list of {{"operator", "coverages", "switchUser"}}: {problems}'
        ) from None
    seen: set[str] = set()
    for account in accounts:
        if account.operator in seen:
            raise ValueError(f"SORACOM_ACCOUNTS lists operator {account.operator} twice: list each operator once")
        seen.add(account.operator)
    return tuple(accounts)


@dataclass(frozen=True, order=True)
class BillAccount:
    """Whose bill a file is: a coverage, and the operator when it is one ``SoracomAccounts`` lists (None: the
    stack's own operator, the primary)."""

    coverage: Coverage
    operator: str | None = None

    @classmethod
    def from_scope(cls, text: str) -> BillAccount:
        """The account of a :attr:`scope` (``jp``, ``g``, ``jp#OP0012345678``), as the ledger pins it;
        :class:`InvalidInputError` naming it when it is none."""
        coverage, _, operator = text.partition("#")
        return cls(parse_coverage(coverage), parse_operator(operator) if operator else None)

    @property
    def scope(self) -> str:
        """What the ledger's month keys end with: ``jp``, ``g``, or ``jp#OP0012345678``."""
        return self.coverage if self.operator is None else f"{self.coverage}#{self.operator}"

    @property
    def folder(self) -> str:
        """The key's folder under the month: ``jp``, ``g``, or ``OP0012345678/jp``."""
        return self.coverage if self.operator is None else f"{self.operator}/{self.coverage}"

    @property
    def label(self) -> str:
        """``Global coverage`` or ``operator OP0012345678, Global coverage``, for a person."""
        name = coverage_label(self.coverage)
        return name if self.operator is None else f"operator {self.operator}, {name}"

    @property
    def id_suffix(self) -> str:
        """The operator's mark in its charges' ids (``op0012345678``), "" for the primary's."""
        return "" if self.operator is None else self.operator.lower()


def account_coverages(accounts: tuple[Account, ...], operator: str) -> tuple[Coverage, ...] | None:
    """The coverages ``SoracomAccounts`` lists for ``operator``, or None when it does not list it."""
    return next((account.coverages for account in accounts if account.operator == operator), None)


def listed_operators(accounts: tuple[Account, ...]) -> str:
    return ", ".join(account.operator for account in accounts) or "none"
