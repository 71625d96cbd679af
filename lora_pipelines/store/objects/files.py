"""Local file helpers shared by the stores, the GPU downloads and the pod cache: sha256 and the atomic write.

A file appears at its destination complete or not at all: it is written to a temp file in the same folder
(`.{name}.<random>.part`: a leading '.', so no store listing or `*.safetensors` glob sees it) and renamed over
the destination only when the writing block succeeds; on any error the temp file is removed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024


def read_chunks(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def sha256_of_chunks(chunks: Iterable[bytes], sink: BinaryIO | None = None) -> str:
    """The sha256 of the chunks, written on to `sink` as they pass when one is given."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest()


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(path: str | Path) -> str:
    with open(path, "rb") as stream:
        return sha256_of_chunks(read_chunks(stream))


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """A fresh temp file next to `dest` for the block to fill; renamed over `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")  # one per writer
    os.close(fd)
    try:
        yield Path(tmp_name)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


@contextmanager
def atomic_write(dest: str | Path) -> Iterator[BinaryIO]:
    """`atomic_path` as an open binary stream, flushed to disk before the rename."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as stream:
        yield stream
        stream.flush()
        os.fsync(stream.fileno())
