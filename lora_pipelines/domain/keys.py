"""Object-store key builders. Every id that enters a key is validated here, at the edge."""

from __future__ import annotations

import re
from datetime import date

MAX_ID_LENGTH = 128
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")  # \Z: "$" would accept a trailing newline


class InvalidIdError(ValueError):
    """An id that is empty, too long, or could escape its prefix."""


def validate_id(value: object, what: str = "id") -> str:
    """Return `value` if it is a safe path segment, else raise InvalidIdError naming what was wrong."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed")
    if "\x00" in value:
        raise InvalidIdError(f"{what} contains a NUL byte")
    if value in {".", ".."} or ".." in value or not _ID_PATTERN.match(value):
        raise InvalidIdError(
            f"{what} {value[:40]!r} may only use letters, digits, '.', '_' and '-' (no '/', '..' or leading '.')"
        )
    return value


def validate_key(key: str) -> str:
    """A store key: relative, '/'-separated, every segment a safe id."""
    if not isinstance(key, str) or not key:
        raise InvalidIdError("object key is empty")
    if key.startswith("/") or "\\" in key:
        raise InvalidIdError(f"object key {key[:60]!r} must be relative and use '/'")
    for segment in key.split("/"):
        validate_id(segment, "object key segment")
    return key


def lora_key(base_model: str, character_id: str, job_id: str) -> str:
    """`loras/{model}-character-{id}/{jobId}.safetensors` (the spec's convention)."""
    return (
        f"loras/{validate_id(base_model, 'base model')}-character-{validate_id(character_id, 'character id')}"
        f"/{validate_id(job_id, 'job id')}.safetensors"
    )


EXPERT_NAMES = ("high_noise", "low_noise")


def expert_key(lora_file_key: str, expert: str) -> str:
    """The key of one expert's file of a two-expert LoRA, beside the single-file key:
    `loras/{model}-character-{id}/{jobId}.safetensors` ->
    `loras/{model}-character-{id}/{jobId}.{expert}.safetensors`."""
    if expert not in EXPERT_NAMES:
        raise InvalidIdError(f"expert must be one of {', '.join(EXPERT_NAMES)}, got {str(expert)[:40]!r}")
    validate_key(lora_file_key)
    if not lora_file_key.endswith(".safetensors"):
        raise InvalidIdError(f"object key {lora_file_key[:60]!r} is not a .safetensors key")
    return f"{lora_file_key.removesuffix('.safetensors')}.{expert}.safetensors"


def lora_expert_key(base_model: str, character_id: str, job_id: str, expert: str) -> str:
    """`loras/{model}-character-{id}/{jobId}.{expert}.safetensors`: one file of a Wan 2.2 14B LoRA pair
    (`high_noise` is the primary file, `low_noise` the second)."""
    return expert_key(lora_key(base_model, character_id, job_id), expert)


def photo_key(character_id: str, filename: str) -> str:
    return f"characters/{validate_id(character_id, 'character id')}/photos/{validate_id(filename, 'photo file name')}"


def dataset_prefix(base_model: str, character_id: str, dataset_hash: str) -> str:
    return (
        f"datasets/{validate_id(base_model, 'base model')}-character-{validate_id(character_id, 'character id')}"
        f"/{validate_id(dataset_hash, 'dataset hash')}"
    )


def generation_output_key(job_id: str, index: int, extension: str = "png") -> str:
    if index < 0:
        raise InvalidIdError(f"output index must be >= 0, got {index}")
    return f"generations/{validate_id(job_id, 'generation job id')}/{index:03d}.{validate_id(extension, 'extension')}"


def report_prefix(day: date) -> str:
    return f"reports/{day.isoformat()}"
