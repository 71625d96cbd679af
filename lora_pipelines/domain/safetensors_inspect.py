"""Read a LoRA's safetensors header (never its tensors): validate the layout, detect the base model, find the
trigger word.

ComfyUI silently ignores a LoRA made for another base model, so the base model is read from the file itself:
`modelspec.architecture`, then `ss_base_model_version`, then tensor key patterns. A file for a family we do not
run (FLUX.2, Chroma, Lumina 2, Wan 2.2 5B, SDXL...: lora_families) is refused with ForeignLoraFamilyError.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lora_pipelines.domain import lora_families, lora_format
from lora_pipelines.domain.base_models import BASE_MODELS

MAX_HEADER_BYTES = 100 * 1024 * 1024
UNKNOWN_BASE_MODEL = "unknown"
_HASH_CHUNK = 1024 * 1024

# Bits per element; sub-byte float formats exist in recent safetensors.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

# Kohya names the same modules with underscores (lora_unet_layers_0_attention_...); lora_format's patterns
# cover the dotted (PEFT/diffusers) names and Kohya Flux.
_EXTRA_KEY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("qwen-image", re.compile(r"lora_unet_transformer_blocks_\d+_img_mlp")),
    ("z-image-turbo", re.compile(r"lora_unet_layers_\d+_attention")),
    ("one-2.1", re.compile(r"lora_unet_blocks_\d+_cross_attn")),
)

_PICKLE_MAGICS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


class InvalidLoraFileError(ValueError):
    """The bytes are not a well-formed safetensors file; the message is one line saying why."""


class ForeignLoraFamilyError(InvalidLoraFileError):
    """A well-formed LoRA for a model family we do not run; `family` names it, `evidence` says what showed it."""

    def __init__(self, family: str, evidence: str) -> None:
        self.family = family
        self.evidence = evidence
        super().__init__(f"LoRA for {family} (from {evidence}), not a base model lora_pipelines runs "
                         f"({', '.join(BASE_MODELS)})")


@dataclass(frozen=True)
class LoraInspection:
    base_model: str
    detected_from: str | None  # "modelspec.architecture" | "ss_base_model_version" | "key_pattern" | None
    format: str  # "peft" | "kohya" | "diffusers" | "unknown"
    rank: int | None
    trigger_word: str | None
    tensors: int
    size_bytes: int
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The fields a user looks at (what `lora-pipelines inspect-lora` prints)."""
        data = asdict(self)
        data.pop("metadata")
        return data


@dataclass(frozen=True)
class _Header:
    tensors: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    data_start: int  # byte offset where the tensor data begins (8 + header length)


def inspect_lora_file(path: str | Path) -> LoraInspection:
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        header = _read_header(fh, size)
        fh.seek(0)
        sha256 = _sha256_stream(fh)
    return _inspection(header, size, sha256)


def read_safetensors_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """The raw header (tensor entries and `__metadata__`) and the offset where tensor data starts, validated
    exactly like `inspect_lora_file` (for code that rewrites a header, e.g. the Modal trainer's metadata fix-up)."""
    path = Path(path)
    with path.open("rb") as fh:
        header = _read_header(fh, path.stat().st_size)
    return {**header.tensors, "__metadata__": dict(header.metadata)}, header.data_start


def inspect_lora_bytes(data: bytes) -> LoraInspection:
    import io

    header = _read_header(io.BytesIO(data), len(data))
    return _inspection(header, len(data), hashlib.sha256(data).hexdigest())


def _sha256_stream(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _read_header(fh: BinaryIO, size: int) -> _Header:
    prefix = fh.read(8)
    # A real header length can begin with the same bytes as a pickle (0x80 0x05 is 1408), so the magic only
    # names the file when the safetensors framing (a length that fits, then '{') does not hold.
    looks_pickled = prefix.startswith(_PICKLE_MAGICS)
    not_safetensors = InvalidLoraFileError("looks like a pickle/PyTorch zip, not safetensors")
    if len(prefix) < 8:
        if looks_pickled:
            raise not_safetensors
        raise InvalidLoraFileError(f"file is {size} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        if looks_pickled:
            raise not_safetensors
        if header_len > MAX_HEADER_BYTES:
            raise InvalidLoraFileError(
                f"header length {header_len} exceeds the {MAX_HEADER_BYTES // (1024 * 1024)} MB limit")
        raise InvalidLoraFileError(f"header length {header_len} runs past the end of the file ({size} bytes)")
    raw = fh.read(header_len)
    if looks_pickled and not raw.lstrip().startswith(b"{"):
        raise not_safetensors
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidLoraFileError(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidLoraFileError(f"header is not JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise InvalidLoraFileError("header JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's int-string digit limit
        raise InvalidLoraFileError(f"header JSON has an unreadable value ({str(exc)[:80]})") from None
    if not isinstance(parsed, dict):
        raise InvalidLoraFileError(f"header is a JSON {type(parsed).__name__}, not an object")
    metadata = _check_metadata(parsed.pop("__metadata__", {}))
    tensors = _check_tensors(parsed, data_size=size - 8 - header_len)
    return _Header(tensors=tensors, metadata=metadata, data_start=8 + header_len)


def _check_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise InvalidLoraFileError("__metadata__ is not an object")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise InvalidLoraFileError(f"__metadata__[{key!r}] is a {type(value).__name__}, not a string")
    return dict(metadata)


def _check_tensors(entries: dict[str, Any], data_size: int) -> dict[str, dict[str, Any]]:
    if not entries:
        raise InvalidLoraFileError("file contains no tensors")
    spans: list[tuple[int, int, str]] = []
    for name, info in entries.items():
        if not isinstance(info, dict) or not all(k in info for k in ("dtype", "shape", "data_offsets")):
            raise InvalidLoraFileError(f"tensor {name!r} lacks dtype/shape/data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_BITS:
            raise InvalidLoraFileError(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise InvalidLoraFileError(f"tensor {name!r} has an invalid shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
                or offsets[0] > offsets[1]):
            raise InvalidLoraFileError(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        elements = 1
        for dim in shape:
            elements *= dim
        bits = elements * DTYPE_BITS[dtype]
        begin, end = offsets
        if bits % 8 or end - begin != bits // 8:
            raise InvalidLoraFileError(
                f"tensor {name!r} spans {end - begin} bytes but {dtype} x {shape} needs {bits / 8:g}")
        if end > data_size:
            raise InvalidLoraFileError(
                f"tensor {name!r} ends at byte {end}, past the end of the data section ({data_size} bytes)")
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin < position:
            raise InvalidLoraFileError(f"tensor {name!r} overlaps the previous tensor at byte {begin}")
        if begin > position:
            raise InvalidLoraFileError(f"gap of {begin - position} bytes before tensor {name!r}")
        position = end
    if position != data_size:
        raise InvalidLoraFileError(f"data section is {data_size} bytes but the tensors cover {position}")
    return entries


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _inspection(header: _Header, size: int, sha256: str) -> LoraInspection:
    if foreign := lora_families.foreign_family(header.metadata, header.tensors):
        raise ForeignLoraFamilyError(foreign.name, foreign.evidence)
    base_model, detected_from = detect_base_model(header.metadata, header.tensors)
    return LoraInspection(
        base_model=base_model,
        detected_from=detected_from,
        format=detect_format(header.tensors),
        rank=detect_rank(header.tensors),
        trigger_word=detect_trigger_word(header.metadata),
        tensors=len(header.tensors),
        size_bytes=size,
        sha256=sha256,
        metadata=header.metadata,
    )


def _from_architecture(value: str) -> str | None:
    arch = value.strip().lower()
    for prefix in sorted(lora_format.ARCHITECTURE_PREFIXES, key=len, reverse=True):
        if arch.startswith(prefix):
            return lora_format.ARCHITECTURE_PREFIXES[prefix]
    return None


def _from_ss_version(value: str) -> str | None:
    version = value.strip().lower()
    if version in lora_format.SS_VERSION_ALIASES:
        return lora_format.SS_VERSION_ALIASES[version]
    for alias in sorted(lora_format.SS_VERSION_ALIASES, key=len, reverse=True):
        if version.startswith(alias):
            return lora_format.SS_VERSION_ALIASES[alias]
    return None


def detect_base_model(metadata: Mapping[str, str], tensor_names: Any) -> tuple[str, str | None]:
    """(base model, where it was read from); ("unknown", None) when nothing matches."""
    if found := _from_architecture(metadata.get("modelspec.architecture", "")):
        return found, "modelspec.architecture"
    if found := _from_ss_version(metadata.get("ss_base_model_version", "")):
        return found, "ss_base_model_version"
    names = list(tensor_names)
    for base_model, pattern in lora_format.KEY_PATTERNS + _EXTRA_KEY_PATTERNS:
        if any(pattern.search(name) for name in names):
            return base_model, "key_pattern"
    return UNKNOWN_BASE_MODEL, None


def detect_format(tensor_names: Any) -> str:
    """peft: `.lora_A/.lora_B`; kohya: `lora_unet_*` / `lora_te*` with lora_down/lora_up; diffusers: dotted
    module names with `lora_down`/`lora.down`."""
    names = list(tensor_names)
    if any(".lora_A." in n or ".lora_B." in n for n in names):
        return "peft"
    if any(n.startswith(("lora_unet_", "lora_te", "lora_transformer_")) for n in names):
        return "kohya"
    if any(".lora_down." in n or ".lora_up." in n or ".lora.down." in n for n in names):
        return "diffusers"
    return "unknown"


def detect_rank(tensors: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The most common first dimension of the down projections (lora_A / lora_down)."""
    ranks = Counter(
        info["shape"][0] for name, info in tensors.items()
        if (".lora_A." in name or ".lora_down." in name or ".lora.down." in name) and len(info["shape"]) >= 2
    )
    if not ranks:
        return None
    return max(ranks.items(), key=lambda item: (item[1], item[0]))[0]


def detect_trigger_word(metadata: Mapping[str, str]) -> str | None:
    for key in ("modelspec.trigger_phrase", "lora_pipelines.trigger_word"):
        if value := metadata.get(key, "").strip():
            return value
    try:
        frequencies = json.loads(metadata.get("ss_tag_frequency", "") or "{}")
    except json.JSONDecodeError:
        return None
    totals: Counter[str] = Counter()
    if isinstance(frequencies, dict):
        for tags in frequencies.values():
            if isinstance(tags, dict):
                for tag, count in tags.items():
                    if isinstance(count, int) and tag.strip():
                        totals[tag.strip()] += count
    if not totals:
        return None
    return min(totals.items(), key=lambda item: (-item[1], item[0]))[0]
