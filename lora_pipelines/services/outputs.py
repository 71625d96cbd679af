"""Links an operator can open to a job's images: file:// for a folder store, presigned https for S3/R2."""

from __future__ import annotations

from lora_pipelines.store.objects import ObjectNotFoundError, ObjectStore

OUTPUT_URL_SECONDS = 24 * 3600  # presigned links in `status --json` stay valid for a day


def output_url(store: ObjectStore, key: str, *, expires_seconds: int = OUTPUT_URL_SECONDS) -> str:
    """A URL that opens the object: presigned on S3/R2 (the bucket is private), a file URI for a folder store."""
    try:
        return store.presigned_url(key, expires_seconds=expires_seconds)
    except ObjectNotFoundError:  # a folder store presigns only what exists; say where it would be
        return store.uri(key)


def output_urls(store: ObjectStore, keys: list[str]) -> list[str]:
    return [output_url(store, key) for key in keys]
