"""Streaming downloads with a size cap, and file checksums: shared by the dataset and LoRA-cache code."""

from __future__ import annotations

import hashlib
from pathlib import Path


def redact(url: str) -> str:
    """The URL without its query string: presigned URLs carry credentials there."""
    return url.split("?", 1)[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DownloadError(RuntimeError):
    """An HTTP status other than 200 or a transport failure; the message never shows the query string."""


class TooLarge(DownloadError):
    pass


def stream_to_file(url: str, dest: Path, *, max_bytes: int, what: str, timeout: float) -> Path:
    """GET `url` into `dest`, refusing more than `max_bytes`."""
    import httpx

    written = 0
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code != 200:
                raise DownloadError(f"{what} download from {redact(url)} answered HTTP {response.status_code}")
            with dest.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise TooLarge(f"{what} at {redact(url)} is larger than {max_bytes} bytes")
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise DownloadError(f"{what} download from {redact(url)} failed: {exc.__class__.__name__}") from None
    return dest
