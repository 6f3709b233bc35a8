"""One parse of a handler's input: pydantic's errors become an :class:`InvalidInputError` naming each field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from soracharge.errors import InvalidInputError

ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    """``field.path: message`` for every problem, on one line."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "input"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_input(event: Any, model: type[ModelT]) -> ModelT:
    """Validate ``event`` against ``model`` or raise :class:`InvalidInputError` saying what is wrong."""
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid {model.__name__}: {describe_validation_error(exc)}") from None
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # Some third-party validators (Powertools' S3 model on a record that is not an object) fail this way.
        raise InvalidInputError(f"invalid {model.__name__}: {type(exc).__name__}: {exc}") from None
