"""`ObjectStore`: one interface over a local folder and S3/R2, with the same key layout in both.

Every key passes `domain.keys.validate_key`. Missing keys raise `ObjectNotFoundError`; content that does not
hash to what was expected raises `ChecksumMismatchError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lora_pipelines.domain.keys import validate_key


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

