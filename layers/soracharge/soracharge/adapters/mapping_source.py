"""Loading the mapping file from a path or an ``s3://bucket/key`` URI (``SORACHARGE_MAPPING``)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from soracharge.errors import MappingError, StorageError
from soracharge.models.mapping import Mapping, parse_mapping


class BytesReader(Protocol):
    def read_bytes(self, key: str) -> bytes: ...


def load_mapping(uri: str, s3: BytesReader | None = None) -> tuple[Mapping, str]:
    """The mapping at ``uri`` and the URI itself (for the report); any problem is a :class:`MappingError`."""
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise MappingError(f"SORACHARGE_MAPPING {uri!r} is not an s3://bucket/key URI")
        if s3 is None:
            raise MappingError(f"no S3 access to read the mapping {uri}")
        try:
            data = s3.read_bytes(key)
        except StorageError as exc:
            raise MappingError(f"cannot read the mapping {uri}: {exc}") from exc
    else:
        try:
            data = Path(uri).read_bytes()
        except OSError as exc:
            raise MappingError(f"cannot read the mapping {uri}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MappingError(f"the mapping {uri} is not UTF-8 text") from None
    return parse_mapping(text, uri), uri
