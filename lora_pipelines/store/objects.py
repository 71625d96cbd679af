"""`ObjectStore`: one interface over a local folder and S3/R2, with the same key layout in both.

Every key passes `domain.keys.validate_key`. Missing keys raise `ObjectNotFoundError`; content that does not
hash to what was expected raises `ChecksumMismatchError`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lora_pipelines.domain.keys import validate_key

if TYPE_CHECKING:
    from lora_pipelines.settings import Settings

CHUNK_SIZE = 1024 * 1024


class ObjectStoreError(Exception):
    """Base of the object store errors."""


class ObjectNotFoundError(ObjectStoreError, LookupError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


class ChecksumMismatchError(ObjectStoreError):
    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(f"object {key!r} has sha256 {actual}, expected {expected}")
        self.key, self.expected, self.actual = key, expected, actual


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size_bytes: int
    sha256: str | None
    last_modified: datetime | None
    content_type: str | None = None


def sha256_of_chunks(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def read_chunks(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def sha256_of_file(path: str | Path) -> str:
    with open(path, "rb") as stream:
        return sha256_of_chunks(read_chunks(stream))


def validate_prefix(prefix: str) -> str:
    """A listing prefix: '' or a key, optionally ending in '/'. Matching is by string prefix, like S3."""
    if prefix:
        stem = prefix[:-1] if prefix.endswith("/") else prefix
        if stem:
            validate_key(stem)
    return prefix


class ObjectStore(ABC):
    """Bytes under '/'-separated keys. Implementations: `LocalObjectStore`, `S3ObjectStore`."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo: ...

    @abstractmethod
    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> ObjectInfo: ...

    @abstractmethod
    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        """The object's bytes; with `expected_sha256`, raises ChecksumMismatchError if they differ."""

    @abstractmethod
    def download_file(self, key: str, dest_path: str | Path, expected_sha256: str | None = None) -> ObjectInfo:
        """Write the object to `dest_path` atomically (temp file + rename); verify when a sha256 is given."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key (sha256 is None: listing does not hash)."""

    @abstractmethod
    def sha256(self, key: str) -> str:
        """The content's sha256, computed by streaming the object."""

    @abstractmethod
    def presigned_url(self, key: str, expires_seconds: int = 3600) -> str: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def verify(self, key: str, expected_sha256: str | None = None) -> ObjectInfo:
        """Hash the stored content and compare it with `expected_sha256`, or the sha256 recorded at upload.

        Raises ChecksumMismatchError on a difference; returns the object's info with the computed sha256.
        """
        info = self.stat(key)
        actual = self.sha256(key)
        expected = expected_sha256 or info.sha256
        if expected is not None and expected != actual:
            raise ChecksumMismatchError(key, expected, actual)
        return ObjectInfo(info.key, info.size_bytes, actual, info.last_modified, info.content_type)


def open_store(url: str, endpoint_url: str | None = None) -> ObjectStore:
    """A store for a folder path (or file:// URI) or `s3://bucket/prefix` (R2 via `endpoint_url`)."""
    if not url:
        raise ValueError("object store URL is empty")
    if url.startswith("s3://"):
        from lora_pipelines.store.s3_objects import S3ObjectStore

        bucket, _, prefix = url[len("s3://"):].partition("/")
        return S3ObjectStore(bucket, prefix, endpoint_url=endpoint_url)
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(url)
        if parsed.netloc not in {"", "localhost"}:
            raise ValueError(f"file URI {url!r} names a remote host")
        url = unquote(parsed.path)
    elif "://" in url:
        raise ValueError(f"unsupported object store URL {url!r}: use a folder path or s3://bucket/prefix")
    from lora_pipelines.store.local_objects import LocalObjectStore

    return LocalObjectStore(url)


def open_store_from_settings(settings: Settings | None = None) -> ObjectStore:
    if settings is None:
        from lora_pipelines.settings import load_settings

        settings = load_settings()
    return open_store(settings.resolved_store_url, endpoint_url=settings.s3_endpoint_url)
