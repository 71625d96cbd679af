"""Checks on the fields a repository writes, so bad input fails with a one-line error before any SQL runs."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from lora_pipelines.domain.keys import validate_key
from lora_pipelines.domain.trigger_words import validate_trigger_word
from lora_pipelines.store.tables import GENERATION_MODES

MAX_PAGE = 10_000
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def check_text(value: str, what: str) -> str:
    """Refuse text no database column can hold: NUL (PostgreSQL text refuses it) and undecodable bytes
    (lone surrogates from non-UTF-8 input, which no driver can encode)."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8 text (undecodable byte at position {exc.start})") from None
    return value


def storable(text: str) -> str:
    """Error text as it can be stored: NUL and undecodable bytes escaped, so recording a failure never fails."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def check_keys(keys: object, what: str) -> list[str]:
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        raise ValueError(f"{what} must be a list of object keys")
    return [validate_key(k) for k in keys]


def check_page(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


def check_json(value: object, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serializable: {exc}") from None


def check_short_text(value: object, what: str, max_length: int) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > max_length):
        raise ValueError(f"{what} must be a string of at most {max_length} characters")
    if value is not None:
        check_text(value, what)


def check_fields(fields_: dict[str, Any], table: str) -> None:
    """Validate the fields a write sets. Text a backend produced (`error`, `sent_prompt`) is escaped in place
    instead of refused: recording a job's outcome must never fail."""
    for name in ("error", "sent_prompt"):
        if isinstance(fields_.get(name), str):
            fields_[name] = storable(fields_[name])
    for name, value in fields_.items():
        if name in {"sent_prompt", "model_url"} and value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{table}.{name} must be a string")
            check_text(value, f"{table}.{name}")
        elif name in {"trigger_word"} and value is not None:
            validate_trigger_word(value)
        elif name in {"model_path", "second_expert_path"} and value is not None:
            validate_key(value)
        elif name in {"sha256", "second_expert_sha256"} and value is not None and not (
                isinstance(value, str) and _SHA256.match(value)):
            raise ValueError(f"{table}.{name} must be 64 lowercase hex digits")
        elif name == "face_reference" and value not in (None, "held_out", "in_sample"):
            raise ValueError(f"{table}.face_reference must be 'held_out' or 'in_sample', got {value!r}")
        elif name in {"size_bytes", "second_expert_size_bytes", "attempt", "attempts", "face_count",
                      "lora_model_id", "lora_candidate_id"} and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{table}.{name} must be an integer >= 0, got {value!r}")
        elif name in {"training_started_at", "started_at", "finished_at", "gated_at", "archived_at",
                      "rated_at"} and value is not None:
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValueError(f"{table}.{name} must be a timezone-aware datetime")
        elif name in {"job_id", "gpu_call_id", "training_model", "claimed_by"}:
            check_short_text(value, f"{table}.{name}", 200)
        elif name == "backend":
            check_short_text(value, f"{table}.backend", 32)
        elif name == "lora_skipped_reason":
            check_short_text(value, f"{table}.lora_skipped_reason", 500)
        elif name == "dataset_hash":
            check_short_text(value, f"{table}.dataset_hash", 128)
        elif name == "mode" and value is not None and value not in GENERATION_MODES:
            raise ValueError(f"unknown generation mode {value!r}; known: {', '.join(GENERATION_MODES)}")
        elif name == "output_keys":
            check_keys(value, f"{table}.output_keys")
        elif name == "input_metadata":
            if not isinstance(value, dict):
                raise ValueError(f"{table}.input_metadata must be a dict")
            check_json(value, f"{table}.input_metadata")
        elif name == "face_distance" and value is not None:
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{table}.face_distance must be a finite number >= 0, got {value!r}")
        elif name in {"face_match", "lora_enabled"} and value is not None and not isinstance(value, bool):
            raise ValueError(f"{table}.{name} must be a bool")
        elif name in {"validation_score", "requested_strength", "lora_strength"} and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{table}.{name} must be a finite number, got {value!r}")
        elif name == "validation" and value is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{table}.validation must be a dict")
            check_json(value, f"{table}.validation")
        elif name in {"gate_reason", "note"} and value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{table}.{name} must be a string")
            check_text(value, f"{table}.{name}")
        elif name == "requested_lora_model_id" and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{table}.{name} must be a positive integer, got {value!r}")


def only(fields_: Mapping[str, Any], allowed: frozenset[str], table: str) -> None:
    unknown = sorted(set(fields_) - allowed)
    if unknown:
        raise ValueError(
            f"{table} has no updatable field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
