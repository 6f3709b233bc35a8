"""The data bucket (boto3): the only module that reads or writes S3.

Exports are written with boto3's managed transfer, which switches to a multipart upload above
8 MiB and keeps memory bounded by ``multipart_chunksize * max_concurrency``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from soracharge.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4)


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    version_id: str | None
    size: int
    metadata: dict[str, str]

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


#: Keys a listing page asks for (a month's folder holds one export per coverage and a few files put by hand).
CHILDREN_PAGE = 100


class ExportFolders(Protocol):
    """Looking into the export folders (``exports/<yyyyMM>/`` and its coverage folders)."""

    def first(self, prefix: str) -> StoredObject | None: ...

    def children(self, prefix: str) -> list[StoredObject]: ...


class ObjectStore(ExportFolders, Protocol):
    """What the use cases need from the bucket (tests pass fakes of this)."""

    bucket: str

    def head(self, key: str) -> StoredObject | None: ...

    def upload_file(self, path: Path, key: str, *, metadata: dict[str, str], content_type: str) -> StoredObject: ...


class StoredExports(ExportFolders, Protocol):
    """Finding a month's stored export and its import report (the first step of the export flow)."""

    def get_json(self, key: str) -> dict[str, Any] | None: ...


class ReportStore(Protocol):
    """Reading the objects to import and writing their reports (tests pass fakes of this)."""

    bucket: str

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None: ...

    def open(self, key: str, version_id: str | None = None) -> BinaryIO: ...

    def put_json(self, key: str, body: dict[str, Any]) -> StoredObject: ...

    def put_text(self, key: str, text: str, content_type: str) -> StoredObject: ...

    def get_json(self, key: str) -> dict[str, Any] | None: ...

    def keys(self, prefix: str) -> list[str]: ...


class S3ObjectStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._s3 = client
        self.bucket = bucket

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        try:
            if version_id:
                head = self._s3.head_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            else:
                head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"cannot read s3://{self.bucket}/{key}: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        return StoredObject(
            bucket=self.bucket,
            key=key,
            version_id=head.get("VersionId"),
            size=head["ContentLength"],
            metadata=dict(head.get("Metadata", {})),
        )

    def first(self, prefix: str) -> StoredObject | None:
        """The first object under ``prefix`` (in key order), or None."""
        try:
            listed = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot list s3://{self.bucket}/{prefix}: {_reason(exc)}") from exc
        contents = listed.get("Contents", [])
        return self.head(contents[0]["Key"]) if contents else None

    def children(self, prefix: str, page_size: int = CHILDREN_PAGE) -> list[StoredObject]:
        """Every object right under ``prefix`` (not in its sub-folders), in key order, page after page."""
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            keys = [
                item["Key"]
                for page in paginator.paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": page_size}
                )
                for item in page.get("Contents", [])
            ]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot list s3://{self.bucket}/{prefix}: {_reason(exc)}") from exc
        heads = (self.head(key) for key in keys)
        return [head for head in heads if head is not None]

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (sub-folders included), in key order, page after page."""
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            return [
                item["Key"]
                for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                for item in page.get("Contents", [])
            ]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot list s3://{self.bucket}/{prefix}: {_reason(exc)}") from exc

    def open(self, key: str, version_id: str | None = None) -> BinaryIO:
        """A stream of the object's bytes, read as it is consumed (never the whole object in memory)."""
        try:
            if version_id:
                got = self._s3.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            else:
                got = self._s3.get_object(Bucket=self.bucket, Key=key)
            return cast(BinaryIO, _TranslatingBody(got["Body"], f"s3://{self.bucket}/{key}"))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot read s3://{self.bucket}/{key}: {_reason(exc)}") from exc

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    def put_json(self, key: str, body: dict[str, Any]) -> StoredObject:
        return self.put_text(key, json.dumps(body, ensure_ascii=False, indent=2), "application/json; charset=utf-8")

    def put_text(self, key: str, text: str, content_type: str) -> StoredObject:
        data = text.encode()
        try:
            response = self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot write s3://{self.bucket}/{key}: {_reason(exc)}") from exc
        return StoredObject(self.bucket, key, response.get("VersionId"), len(data), {})

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            with self.open(key) as body:
                loaded: dict[str, Any] = json.loads(body.read())
                return loaded
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and exc.__cause__.response.get("Error", {}).get("Code") in (
                "NoSuchKey",
                "404",
            ):
                return None
            raise

    def upload_file(self, path: Path, key: str, *, metadata: dict[str, str], content_type: str) -> StoredObject:
        try:
            self._s3.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"Metadata": metadata, "ContentType": content_type},
                Config=TRANSFER,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot write s3://{self.bucket}/{key}: {_reason(exc)}") from exc
        stored = self.head(key)
        if stored is None:
            raise StorageError(f"s3://{self.bucket}/{key} is missing right after it was written")
        return stored


class _TranslatingBody(io.RawIOBase):
    """An S3 object's body whose read errors (a connection lost mid-stream) are :class:`StorageError`."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageError(f"reading {self._uri} failed: {exc}") from exc

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return str(exc)
