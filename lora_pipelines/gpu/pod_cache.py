"""The LoRA cache on a ComfyUI pod: `{loras_root}/{loraModelId}.safetensors`.

Check before download, verify sha256, write a temp file in the same folder and rename; one download per file
at a time across threads and processes (flock on `{name}.lock`); evict least-recently-used files past a size
budget, never one in use (`use_lora` holds a shared lock on `{name}.inuse` while a generation runs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from lora_pipelines.domain.keys import validate_id
from lora_pipelines.store.objects.files import atomic_path, sha256_of_file

Fetch = Callable[[Path], None] | str
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_CHUNK = 1024 * 1024


class PodCacheError(RuntimeError):
    pass


class LoraChecksumError(PodCacheError):
    """The downloaded file is not the one asked for; nothing was kept."""


@contextlib.contextmanager
def _flock(path: Path, mode: int, timeout_s: float | None) -> Iterator[bool]:
    """Hold flock `mode` on `path`; with timeout_s=0 yields False instead of waiting when it is taken."""
    fh = path.open("a")
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    if timeout_s == 0:
                        yield False
                        return
                    raise PodCacheError(f"waited {timeout_s:g}s for the lock {path.name}") from None
                time.sleep(0.02)
        yield True
    finally:
        fh.close()  # closing releases the lock


def _verified_marker(final: Path) -> Path:
    return final.with_name(f".{final.name}.sha256")


def _is_valid(final: Path, sha256: str) -> bool:
    """The file is there with the expected content. A marker written after our own check saves re-hashing big
    files; without it (a file put there by hand) the file is hashed."""
    if not final.is_file():
        return False
    marker = _verified_marker(final)
    size = final.stat().st_size
    if marker.is_file() and marker.read_text().strip() == f"{sha256} {size}":
        return True
    if sha256_of_file(final) == sha256:
        marker.write_text(f"{sha256} {size}")
        return True
    return False


def _download(fetch: Fetch, dest: Path, timeout_s: float) -> None:
    if callable(fetch):
        fetch(dest)
        return
    with httpx.stream("GET", fetch, timeout=timeout_s, follow_redirects=True) as response:
        if response.status_code != 200:
            raise PodCacheError(f"LoRA download answered HTTP {response.status_code}")
        with dest.open("wb") as fh:
            for chunk in response.iter_bytes(_CHUNK):
                fh.write(chunk)


def ensure_lora_on_pod(lora_model_id: str, sha256: str, fetch: Fetch, loras_root: Path, budget_bytes: int, *,
                       timeout_s: float = 600.0) -> Path:
    """Path of the verified `{lora_model_id}.safetensors` under `loras_root`, downloading it at most once.

    `fetch` is a URL or a callable that writes the file to the path it is given.
    """
    validate_id(lora_model_id, "lora model id")
    if not _SHA256.match(sha256 or ""):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    root = Path(loras_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{lora_model_id}.safetensors"
    with _flock(root / f"{final.name}.lock", fcntl.LOCK_EX, timeout_s):
        if _is_valid(final, sha256):
            os.utime(final)  # most recently used
        else:
            with atomic_path(final) as tmp:
                _download(fetch, tmp, timeout_s)
                got = sha256_of_file(tmp)
                if got != sha256:
                    raise LoraChecksumError(f"LoRA {lora_model_id}: downloaded file has sha256 {got[:12]}…, "
                                            f"expected {sha256[:12]}…; discarded")
            _verified_marker(final).write_text(f"{sha256} {final.stat().st_size}")
    evict_lru(root, budget_bytes, keep=final)
    return final


def evict_lru(loras_root: Path, budget_bytes: int, *, keep: Path | None = None) -> list[Path]:
    """Delete least-recently-used LoRA files until the folder fits `budget_bytes`; skips files in use
    (or being downloaded). Returns what was deleted."""
    root = Path(loras_root)
    files = sorted((p for p in root.glob("*.safetensors") if p.is_file()), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed: list[Path] = []
    for path in files:
        if total <= budget_bytes:
            break
        if keep is not None and path.resolve() == Path(keep).resolve():
            continue
        with _flock(root / f"{path.name}.inuse", fcntl.LOCK_EX, 0) as free, \
                _flock(root / f"{path.name}.lock", fcntl.LOCK_EX, 0) as idle:
            if not (free and idle):
                continue
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            _verified_marker(path).unlink(missing_ok=True)
            total -= size
            removed.append(path)
    return removed


@contextlib.contextmanager
def use_lora(lora_model_id: str, sha256: str, fetch: Fetch, loras_root: Path, budget_bytes: int, *,
             timeout_s: float = 600.0) -> Iterator[Path]:
    """Ensure the LoRA is on the pod and keep it from eviction while the `with` block runs a generation."""
    validate_id(lora_model_id, "lora model id")
    root = Path(loras_root)
    root.mkdir(parents=True, exist_ok=True)
    with _flock(root / f"{lora_model_id}.safetensors.inuse", fcntl.LOCK_SH, timeout_s):
        yield ensure_lora_on_pod(lora_model_id, sha256, fetch, root, budget_bytes, timeout_s=timeout_s)


def remove_from_pod(lora_model_id: str, loras_root: Path) -> str:
    """Delete `{lora_model_id}.safetensors` from the pod's LoRA folder unless a generation is using it or it is
    being downloaded: "removed", "absent" or "in_use" (left in place)."""
    validate_id(lora_model_id, "lora model id")
    root = Path(loras_root)
    path = root / f"{lora_model_id}.safetensors"
    if not path.is_file():
        return "absent"
    with _flock(root / f"{path.name}.inuse", fcntl.LOCK_EX, 0) as free, \
            _flock(root / f"{path.name}.lock", fcntl.LOCK_EX, 0) as idle:
        if not (free and idle):
            return "in_use"
        path.unlink(missing_ok=True)
        _verified_marker(path).unlink(missing_ok=True)
    return "removed"  # the lock files stay, as after an eviction: removing them would race another locker
