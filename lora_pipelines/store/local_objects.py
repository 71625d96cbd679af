"""The object store as a local folder: the embedded default, same key layout as the bucket."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from lora_pipelines.domain.keys import InvalidIdError, validate_key
from lora_pipelines.store.objects import (
    ChecksumMismatchError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    read_chunks,
    sha256_of_chunks,
    sha256_of_file,
    validate_prefix,
)

_TEMP_PREFIX = ".tmp-"  # valid keys never start with '.', so temp files are never listed


@contextmanager
def atomic_write(dest: Path) -> Iterator[BinaryIO]:
    """A temp file next to `dest`, renamed over it only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalObjectStore({self.url!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidIdError(f"object key {key!r} resolves outside the store root")
        return path

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key)
        return path

    def _info(self, key: str, path: Path, sha256: str | None = None) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(key, st.st_size, sha256, datetime.fromtimestamp(st.st_mtime, UTC))

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        path = self._path(key)
        with atomic_write(path) as stream:
            stream.write(data)
        return self._info(key, path, sha256_of_chunks([data]))

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> ObjectInfo:
        dest = self._path(key)
        with open(path, "rb") as source, atomic_write(dest) as stream:
            digest = _copy_hashing(source, stream)
        return self._info(key, dest, digest)

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        data = self._existing(key).read_bytes()
        if expected_sha256 is not None:
            actual = sha256_of_chunks([data])
            if actual != expected_sha256:
                raise ChecksumMismatchError(key, expected_sha256, actual)
        return data

    def download_file(self, key: str, dest_path: str | Path, expected_sha256: str | None = None) -> ObjectInfo:
        source = self._existing(key)
        dest = Path(dest_path)
        with open(source, "rb") as stream, atomic_write(dest) as out:
            digest = _copy_hashing(stream, out)
            if expected_sha256 is not None and digest != expected_sha256:
                raise ChecksumMismatchError(key, expected_sha256, digest)
        return self._info(key, dest, digest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._existing(key))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        validate_prefix(prefix)
        # walk the deepest folder the prefix names, then filter by string prefix (S3 semantics)
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if path.is_symlink() and not path.resolve().is_relative_to(self.root):
                    continue  # a link out of the root is not an object of this store
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(self._info(key, path))
        return sorted(found, key=lambda info: info.key)

    def sha256(self, key: str) -> str:
        return sha256_of_file(self._existing(key))

    def presigned_url(self, key: str, expires_seconds: int = 3600) -> str:
        return self._existing(key).as_uri()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


def _copy_hashing(source: BinaryIO, dest: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in read_chunks(source):
        digest.update(chunk)
        dest.write(chunk)
    return digest.hexdigest()
