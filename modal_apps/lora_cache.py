"""Per-container LoRA cache: by id, sha256-verified, base model read from the file header, LRU past a budget."""

from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lora_pipelines.domain.keys import validate_id
from lora_pipelines.domain.safetensors_inspect import InvalidLoraFileError, inspect_lora_file
from modal_apps.transfer import DownloadError, TooLarge, stream_to_file

MAX_LORA_BYTES = 4 * 1024**3


class LoraCacheError(Exception):
    """The requested LoRA could not be made available; `status` is the HTTP status the endpoint answers."""

    status = 502


class LoraIntegrityError(LoraCacheError):
    """The bytes are not the LoRA the request names (sha256 mismatch) or not a valid safetensors file."""

    status = 422


@dataclass(frozen=True)
class CachedLora:
    lora_model_id: str
    path: Path
    sha256: str
    size_bytes: int
    base_model: str
    detected_from: str | None
    source: str  # "memory" (a hit) | "volume" | "download"
    second_expert: CachedLora | None = None  # the low-noise file of a Wan 2.2 14B pair, attached by the service

    @property
    def hit(self) -> bool:
        return self.source == "memory"


Fetcher = Callable[[str, Path], None]
"""Writes the bytes at a URL to a path, raising on failure."""


def http_fetch(url: str, dest: Path, *, timeout: float = 120.0) -> None:
    try:
        stream_to_file(url, dest, max_bytes=MAX_LORA_BYTES, what="LoRA", timeout=timeout)
    except TooLarge as exc:
        raise LoraIntegrityError(str(exc)) from None
    except DownloadError as exc:
        raise LoraCacheError(str(exc)) from None


class LoraCache:
    def __init__(self, root: Path, *, volume_root: Path | None = None, max_bytes: int = 40 * 1024**3,
                 fetch: Fetcher = http_fetch) -> None:
        self.root = root
        self.volume_root = volume_root
        self.max_bytes = max_bytes
        self.fetch = fetch
        self.root.mkdir(parents=True, exist_ok=True)
        self._entries: OrderedDict[str, CachedLora] = OrderedDict()
        self._lock = threading.Lock()
        self._id_locks: dict[str, threading.Lock] = {}

    def get(self, lora_model_id: str, *, url: str, sha256: str) -> CachedLora:
        """The verified local file for `lora_model_id`; one fetch per id at a time."""
        validate_id(lora_model_id, "LoRA model id")
        with self._lock:
            id_lock = self._id_locks.setdefault(lora_model_id, threading.Lock())
        with id_lock:
            with self._lock:
                cached = self._entries.get(lora_model_id)
                if cached is not None and cached.sha256 == sha256 and cached.path.is_file():
                    self._entries.move_to_end(lora_model_id)
                    return replace(cached, source="memory")
            entry = self._from_volume(lora_model_id, sha256) or self._download(lora_model_id, url, sha256)
            with self._lock:
                self._entries[lora_model_id] = entry
                self._entries.move_to_end(lora_model_id)
                self._evict(keep=lora_model_id)
            return entry

    def __contains__(self, lora_model_id: str) -> bool:
        return lora_model_id in self._entries

    @property
    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self._entries.values())

    def _target(self, lora_model_id: str) -> Path:
        return self.root / f"{lora_model_id}.safetensors"

    def _from_volume(self, lora_model_id: str, sha256: str) -> CachedLora | None:
        """The training app keeps every LoRA on the shared volume at its object key (`loras/*/{id}.safetensors`;
        an expert file of a pair is cached as `{id}.{expert}`, which is its key's file name too)."""
        if self.volume_root is None:
            return None
        for candidate in sorted((self.volume_root / "loras").glob(f"*/{lora_model_id}.safetensors")):
            try:
                return self._admit(candidate, lora_model_id, sha256, source="volume", copy=True)
            except LoraIntegrityError:
                continue  # a stale volume copy: fall back to the URL
        return None

    def _download(self, lora_model_id: str, url: str, sha256: str) -> CachedLora:
        tmp = self.root / f".{lora_model_id}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            self.fetch(url, tmp)
        except LoraCacheError:
            tmp.unlink(missing_ok=True)
            raise
        except Exception as exc:  # noqa: BLE001 - any transport failure is "could not fetch"
            tmp.unlink(missing_ok=True)
            raise LoraCacheError(f"could not download LoRA {lora_model_id}: {exc.__class__.__name__}") from None
        try:
            return self._admit(tmp, lora_model_id, sha256, source="download", copy=False)
        finally:
            tmp.unlink(missing_ok=True)

    def _admit(self, source_path: Path, lora_model_id: str, sha256: str, *, source: str, copy: bool) -> CachedLora:
        try:
            inspection = inspect_lora_file(source_path)
        except InvalidLoraFileError as exc:
            raise LoraIntegrityError(f"LoRA {lora_model_id} is not a valid safetensors file: {exc}") from None
        if inspection.sha256 != sha256:
            raise LoraIntegrityError(
                f"LoRA {lora_model_id} has sha256 {inspection.sha256}, the request expects {sha256}")
        target = self._target(lora_model_id)
        if copy:
            tmp = target.with_name(f".{target.name}.copy")
            shutil.copyfile(source_path, tmp)
            os.replace(tmp, target)
        else:
            os.replace(source_path, target)
        return CachedLora(lora_model_id, target, inspection.sha256, inspection.size_bytes, inspection.base_model,
                          inspection.detected_from, source)

    def _evict(self, *, keep: str) -> None:
        while self.total_bytes > self.max_bytes and len(self._entries) > 1:
            oldest = next(k for k in self._entries if k != keep)
            self._entries.pop(oldest).path.unlink(missing_ok=True)
