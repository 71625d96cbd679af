"""Finish a trained LoRA: metadata into its safetensors header, checksum, volume copy, R2 upload; read it back."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lora_pipelines.domain.lora_format import trainer_metadata
from lora_pipelines.domain.safetensors_inspect import read_safetensors_header
from modal_apps.transfer import sha256_file

# Always ours: what the generation side and the inspector decide on. Other trainer keys are kept.
AUTHORITATIVE_KEYS = (
    "ss_base_model_version",
    "modelspec.architecture",
    "modelspec.trigger_phrase",
    "lora_pipelines.base_model",
    "lora_pipelines.trigger_word",
    "lora_pipelines.character_id",
    "lora_pipelines.dataset_hash",
    "lora_pipelines.expert",
)


def write_metadata(path: Path, metadata: Mapping[str, str]) -> dict[str, str]:
    """Merge `metadata` into the file's `__metadata__` in place (tensor bytes untouched); returns the result."""
    header, data_start = read_safetensors_header(path)
    merged = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    merged.update({str(k): str(v) for k, v in metadata.items()})
    header["__metadata__"] = merged
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads the header with spaces to 8-byte alignment
    tmp = path.with_name(path.name + ".tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        dst.write(struct.pack("<Q", len(encoded)))
        dst.write(encoded)
        src.seek(data_start)
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, path)
    return merged


def lora_metadata(base_model: str, trigger_word: str, *, rank: int, steps: int, existing: Mapping[str, str],
                  expert: str | None = None, character_id: str | None = None,
                  dataset_hash: str | None = None) -> dict[str, str]:
    """What to write: our authoritative keys always (whose LoRA it is among them); the rest of trainer_metadata
    only where the trainer left a gap. One file of a two-expert LoRA also says which expert it is
    (`lora_pipelines.expert`)."""
    ours = trainer_metadata(base_model, trigger_word, rank=rank, steps=steps, trainer="ai-toolkit",
                            character_id=character_id, dataset_hash=dataset_hash)
    if expert is not None:
        ours["lora_pipelines.expert"] = expert
    return {k: v for k, v in ours.items() if k in AUTHORITATIVE_KEYS or k not in existing}


@dataclass(frozen=True)
class FinalizedLora:
    path: Path
    sha256: str
    size_bytes: int
    metadata: dict[str, str]


def finalize_lora(path: Path, *, base_model: str, trigger_word: str, rank: int, steps: int,
                  expert: str | None = None, character_id: str | None = None,
                  dataset_hash: str | None = None) -> FinalizedLora:
    """Fix up the header, then checksum the final bytes."""
    header, _ = read_safetensors_header(path)
    existing = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    metadata = write_metadata(path, lora_metadata(base_model, trigger_word, rank=rank, steps=steps, existing=existing,
                                                  expert=expert, character_id=character_id,
                                                  dataset_hash=dataset_hash))
    return FinalizedLora(path=path, sha256=sha256_file(path), size_bytes=path.stat().st_size, metadata=metadata)


class Uploader(Protocol):
    def upload(self, path: Path, key: str, *, sha256: str) -> None: ...


class R2Uploader:
    """boto3 against R2 (or any S3-protocol endpoint) with region "auto"."""

    def __init__(self, *, endpoint_url: str, bucket: str, region_name: str = "auto", connect_timeout: float = 10.0,
                 max_attempts: int = 3) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name,
            config=Config(signature_version="s3v4", connect_timeout=connect_timeout,
                          retries={"max_attempts": max_attempts, "mode": "standard"}),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> R2Uploader:
        """R2_ENDPOINT_URL and R2_BUCKET (credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read by boto3)."""
        missing = [name for name in ("R2_ENDPOINT_URL", "R2_BUCKET") if not env.get(name)]
        if missing:
            raise KeyError(f"missing environment variable(s) {', '.join(missing)} (the R2 Modal secret)")
        return cls(endpoint_url=env["R2_ENDPOINT_URL"], bucket=env["R2_BUCKET"],
                   region_name=env.get("R2_REGION", "auto"))

    def upload(self, path: Path, key: str, *, sha256: str) -> None:
        with path.open("rb") as body:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/octet-stream",
                Metadata={"sha256": sha256},
            )


@dataclass(frozen=True)
class Published:
    volume_path: Path
    object_key: str | None
    upload_error: str | None


def publish(lora: FinalizedLora, *, output_key: str, volume_root: Path, uploader: Uploader | None) -> Published:
    """Copy to the volume first (it survives any upload failure), then upload to the object store."""
    volume_path = volume_root / output_key
    volume_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = volume_path.with_name(volume_path.name + ".tmp")
    shutil.copyfile(lora.path, tmp)
    os.replace(tmp, volume_path)
    if uploader is None:
        return Published(volume_path, None, "no object-store uploader configured; the file is only on the volume")
    try:
        uploader.upload(volume_path, output_key, sha256=lora.sha256)
    except Exception as exc:  # noqa: BLE001 - any upload failure leaves the volume copy as the artifact
        return Published(volume_path, None,
                         f"upload to the object store failed ({_describe(exc)}); the file is on the volume")
    return Published(volume_path, output_key, None)


def _describe(exc: BaseException) -> str:
    """Class name plus a short message; boto3 messages carry the endpoint but never the keys."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


# ---- reading a LoRA back from the volume (the orchestrator's way in when the upload failed)

MAX_READ_BYTES = 64 * 1024 * 1024  # per read call: bounds the function's memory and each reply's size


class VolumePathError(ValueError):
    """A path read_lora will not serve: outside the LoRA volume, not a .safetensors, or climbing with '..'."""


def resolve_volume_lora(volume_root: Path, volume_path: str) -> Path:
    """The .safetensors file `volume_path` names inside `volume_root` (absolute, or relative to the root).

    Refuses '..', paths (or symlinks) that resolve outside the root, and anything not ending in .safetensors.
    """
    if not isinstance(volume_path, str) or not volume_path or "\x00" in volume_path:
        raise VolumePathError("volume path must be a non-empty string without NUL bytes")
    raw = Path(volume_path)
    if ".." in raw.parts:
        raise VolumePathError(f"volume path {volume_path!r} contains '..'")
    if raw.suffix != ".safetensors":
        raise VolumePathError(f"volume path {volume_path!r} is not a .safetensors file")
    root = Path(volume_root).resolve()
    resolved = (raw if raw.is_absolute() else root / raw).resolve()  # follows every symlink on the way
    if not resolved.is_relative_to(root) or resolved == root:
        raise VolumePathError(f"volume path {volume_path!r} is outside the LoRA volume {volume_root}")
    if resolved.suffix != ".safetensors":
        raise VolumePathError(f"volume path {volume_path!r} links to {resolved.name!r}, not a .safetensors file")
    if not resolved.is_file():
        raise FileNotFoundError(f"no LoRA file at {volume_path!r} on the volume")
    return resolved


def read_volume_lora(volume_root: Path, volume_path: str, offset: int = 0, length: int = MAX_READ_BYTES) -> bytes:
    """Up to `length` bytes of the LoRA at `volume_path` from `offset` (b"" past the end)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= MAX_READ_BYTES:
        raise ValueError(f"length must be an integer in 1..{MAX_READ_BYTES}, got {length!r}")
    path = resolve_volume_lora(volume_root, volume_path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # a symlink swapped in after the check
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        return f.read(length)


# ---- removing a LoRA's volume copies (retention archived it)

MAX_REMOVE_KEYS = 100


def remove_volume_loras(volume_root: Path, keys: list[str]) -> list[str]:
    """Delete each `loras/....safetensors` key's copy on the volume (and a training result marker beside it).
    Returns the keys whose file was there; a missing file is not an error."""
    from lora_pipelines.domain.keys import validate_key

    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_REMOVE_KEYS:
        raise ValueError(f"keys must be a list of 1 to {MAX_REMOVE_KEYS} object keys")
    paths = []
    for key in keys:
        validate_key(key)
        if not key.startswith("loras/"):
            raise VolumePathError(f"{key!r} is not a LoRA key (loras/...)")
        try:
            paths.append((key, resolve_volume_lora(volume_root, key)))  # refuses non-.safetensors and escapes
        except FileNotFoundError:
            continue
    removed = []
    for key, path in paths:
        path.unlink(missing_ok=True)
        _result_marker_of(path).unlink(missing_ok=True)
        removed.append(key)
    return removed


def _result_marker_of(path: Path) -> Path:
    """training_job.py keeps `{file}.result.json` beside the primary file of a finished training."""
    return path.with_name(path.name + ".result.json")
