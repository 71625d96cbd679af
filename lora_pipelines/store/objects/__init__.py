"""Object stores: a local folder (`local.py`) and S3/R2 (`s3.py`) behind one interface (`base.py`).

`open_store` picks one from a URL; `files.py` holds the sha256 and atomic-write helpers they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lora_pipelines.store.objects.base import (
    ChecksumMismatchError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
)
from lora_pipelines.store.objects.local import LocalObjectStore
from lora_pipelines.store.objects.s3 import S3ObjectStore

if TYPE_CHECKING:
    from lora_pipelines.settings import Settings

__all__ = [
    "ChecksumMismatchError",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "open_store",
    "open_store_from_settings",
]


def open_store(url: str, endpoint_url: str | None = None) -> ObjectStore:
    """A store for a folder path (or file:// URI) or `s3://bucket/prefix` (R2 via `endpoint_url`)."""
    if not url:
        raise ValueError("object store URL is empty")
    if url.startswith("s3://"):
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
    return LocalObjectStore(url)


def open_store_from_settings(settings: Settings | None = None) -> ObjectStore:
    if settings is None:
        from lora_pipelines.settings import load_settings

        settings = load_settings()
    return open_store(settings.resolved_store_url, endpoint_url=settings.s3_endpoint_url)
