"""Repositories: the only code that reads and writes the app database's rows.

Each method runs in its own transaction and returns detached, frozen records (never live ORM objects).

Status rules (enforced here, defined in `status.py`):

- `lora_models`: pending → training → ready | failed, and pending → failed. `ready` and `failed` are final.
- `generation_jobs`: pending → running (only through `claim`) → succeeded | failed (through `finish`), and
  pending → failed. running → pending happens only in `requeue_stale`, when a worker vanished.
- Writing the same status again to update other fields is allowed.
- Any other move raises `IllegalStatusTransition` and changes nothing; an unknown status value raises
  `UnknownStatusError`.

Concurrency: every read-modify-write locks its row first (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite write
transactions take the database write lock up front), and `claim` is a conditional UPDATE whose row count
decides the winner, so two workers never both run one job and concurrent updates never lose a write.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lora_pipelines.domain.base_models import validate_base_model
from lora_pipelines.domain.keys import validate_key
from lora_pipelines.domain.trigger_words import trigger_word_for, validate_trigger_word
from lora_pipelines.store.database import Database
from lora_pipelines.store.status import (
    check_generation_transition,
    check_lora_transition,
    validate_generation_status,
    validate_lora_status,
)
from lora_pipelines.store.tables import (
    GENERATION_MODES,
    CharacterRow,
    GenerationJobRow,
    LoraModelRow,
    UTCDateTime,
    utcnow,
)

MAX_NAME_LENGTH = 200
MAX_PAGE = 10_000
MAX_ENQUEUE = 1_000
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


class RecordNotFoundError(LookupError):
    """The row an update (or a new row's foreign key) names does not exist."""


class IdempotencyConflictError(ValueError):
    """An idempotency key already names a LoRA for another character or base model."""


# --- records -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Character:
    id: int
    name: str
    lora_enabled: bool
    trigger_word: str
    photo_keys: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LoraModel:
    id: int
    character_id: int
    status: str
    base_model: str
    trigger_word: str
    training_model: str | None
    job_id: str | None
    model_path: str | None
    model_url: str | None
    sha256: str | None
    size_bytes: int | None
    gpu_call_id: str | None
    backend: str | None
    dataset_hash: str | None
    idempotency_key: str
    attempt: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    training_started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class GenerationJob:
    id: int
    character_id: int
    model: str
    prompt: str
    status: str
    sent_prompt: str | None
    lora_model_id: int | None
    trigger_word: str | None
    lora_skipped_reason: str | None
    mode: str | None
    backend: str | None
    input_metadata: dict[str, Any]
    output_keys: list[str]
    face_distance: float | None
    face_match: bool | None
    face_count: int | None
    error: str | None
    attempts: int
    claimed_by: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


R = TypeVar("R")


def _record(cls: type[R], row: Any) -> R:
    return cls(**{f.name: copy.deepcopy(getattr(row, f.name)) for f in fields(cls)})  # type: ignore[arg-type]


# --- field validation ----------------------------------------------------------------------------------


def _check_text(value: str, what: str) -> str:
    """Refuse text no database column can hold: NUL (PostgreSQL text refuses it) and undecodable bytes
    (lone surrogates from non-UTF-8 input, which no driver can encode)."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8 text (undecodable byte at position {exc.start})") from None
    return value


def _storable(text: str) -> str:
    """Error text as it can be stored: NUL and undecodable bytes escaped, so recording a failure never fails."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("character name is empty")
    name = _check_text(name.strip(), "character name")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"character name is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    return name


def _check_keys(keys: object, what: str) -> list[str]:
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        raise ValueError(f"{what} must be a list of object keys")
    return [validate_key(k) for k in keys]


def _check_page(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


def _check_json(value: object, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serializable: {exc}") from None


def _check_short_text(value: object, what: str, max_length: int) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > max_length):
        raise ValueError(f"{what} must be a string of at most {max_length} characters")
    if value is not None:
        _check_text(value, what)


def _check_common(fields_: dict[str, Any], table: str) -> None:
    """Validate the fields a write sets. Text a backend produced (`error`, `sent_prompt`) is escaped in place
    instead of refused: recording a job's outcome must never fail."""
    for name in ("error", "sent_prompt"):
        if isinstance(fields_.get(name), str):
            fields_[name] = _storable(fields_[name])
    for name, value in fields_.items():
        if name in {"sent_prompt", "model_url"} and value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{table}.{name} must be a string")
            _check_text(value, f"{table}.{name}")
        elif name in {"trigger_word"} and value is not None:
            validate_trigger_word(value)
        elif name == "model_path" and value is not None:
            validate_key(value)
        elif name == "sha256" and value is not None and not (isinstance(value, str) and _SHA256.match(value)):
            raise ValueError(f"{table}.sha256 must be 64 lowercase hex digits")
        elif name in {"size_bytes", "attempt", "attempts", "face_count", "lora_model_id"} and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{table}.{name} must be an integer >= 0, got {value!r}")
        elif name in {"training_started_at", "started_at", "finished_at"} and value is not None:
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValueError(f"{table}.{name} must be a timezone-aware datetime")
        elif name in {"job_id", "gpu_call_id", "training_model", "claimed_by"}:
            _check_short_text(value, f"{table}.{name}", 200)
        elif name == "backend":
            _check_short_text(value, f"{table}.backend", 32)
        elif name == "lora_skipped_reason":
            _check_short_text(value, f"{table}.lora_skipped_reason", 500)
        elif name == "dataset_hash":
            _check_short_text(value, f"{table}.dataset_hash", 128)
        elif name == "mode" and value is not None and value not in GENERATION_MODES:
            raise ValueError(f"unknown generation mode {value!r}; known: {', '.join(GENERATION_MODES)}")
        elif name == "output_keys":
            _check_keys(value, f"{table}.output_keys")
        elif name == "input_metadata":
            if not isinstance(value, dict):
                raise ValueError(f"{table}.input_metadata must be a dict")
            _check_json(value, f"{table}.input_metadata")
        elif name == "face_distance" and value is not None:
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{table}.face_distance must be a finite number >= 0, got {value!r}")
        elif name in {"face_match", "lora_enabled"} and value is not None and not isinstance(value, bool):
            raise ValueError(f"{table}.{name} must be a bool")


def _only(fields_: Mapping[str, Any], allowed: frozenset[str], table: str) -> None:
    unknown = sorted(set(fields_) - allowed)
    if unknown:
        raise ValueError(
            f"{table} has no updatable field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _locked(session: Session, model: type[R], row_id: int, table: str) -> R:
    # FOR UPDATE on PostgreSQL; on SQLite the write transaction already holds the database lock
    row = session.scalars(sa.select(model).where(model.id == row_id).with_for_update()).one_or_none()  # type: ignore[attr-defined]
    if row is None:
        raise RecordNotFoundError(f"{table} {row_id} does not exist")
    return row


def _apply(row: Any, fields_: Mapping[str, Any]) -> None:
    for name, value in fields_.items():
        setattr(row, name, copy.deepcopy(value))
    row.updated_at = utcnow()


# --- characters ----------------------------------------------------------------------------------------

_CHARACTER_FIELDS = frozenset({"name", "lora_enabled", "trigger_word", "photo_keys"})


class CharactersRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        lora_enabled: bool = False,
        photo_keys: Iterable[str] = (),
        trigger_word: str | None = None,
    ) -> Character:
        name = _check_name(name)
        word = validate_trigger_word(trigger_word) if trigger_word is not None else trigger_word_for(name)
        if not isinstance(lora_enabled, bool):
            raise ValueError("lora_enabled must be a bool")
        now = utcnow()
        row = CharacterRow(
            name=name,
            lora_enabled=lora_enabled,
            trigger_word=word,
            photo_keys=_check_keys(photo_keys, "photo_keys"),
            created_at=now,
            updated_at=now,
        )
        with self.db.session() as session:
            session.add(row)
            session.flush()
            return _record(Character, row)

    def get(self, character_id: int) -> Character | None:
        with self.db.session(readonly=True) as session:
            row = session.get(CharacterRow, character_id)
            return None if row is None else _record(Character, row)

    def update(self, character_id: int, **fields_: Any) -> Character:
        _only(fields_, _CHARACTER_FIELDS, "characters")
        if "name" in fields_:
            fields_["name"] = _check_name(fields_["name"])
        if "photo_keys" in fields_:
            fields_["photo_keys"] = _check_keys(fields_["photo_keys"], "photo_keys")
        _check_common(fields_, "characters")
        with self.db.session() as session:
            row = _locked(session, CharacterRow, character_id, "characters")
            _apply(row, fields_)
            session.flush()
            return _record(Character, row)

    def add_photo_keys(self, character_id: int, keys: Iterable[str]) -> Character:
        """Append keys not already present, under a row lock (safe against concurrent uploads)."""
        new_keys = _check_keys(keys, "photo_keys")
        with self.db.session() as session:
            row = _locked(session, CharacterRow, character_id, "characters")
            merged = list(row.photo_keys)
            merged += [k for k in dict.fromkeys(new_keys) if k not in merged]
            _apply(row, {"photo_keys": merged})
            session.flush()
            return _record(Character, row)

    def delete(self, character_id: int) -> None:
        """Remove a character nothing refers to yet: undoes an `add_character` whose photo upload failed."""
        with self.db.session() as session:
            session.delete(_locked(session, CharacterRow, character_id, "characters"))

    def list(self, limit: int = 100, offset: int = 0) -> list[Character]:
        _check_page(limit, offset)
        stmt = sa.select(CharacterRow).order_by(CharacterRow.id).limit(limit).offset(offset)
        with self.db.session(readonly=True) as session:
            return [_record(Character, r) for r in session.scalars(stmt)]

    def changed_since(self, after_updated_at: datetime | None, after_id: int = 0, limit: int = 100) -> list[Character]:
        """Characters whose (updated_at, id) comes after the cursor, oldest first: a sensor's next page."""
        _check_page(limit)
        stmt = sa.select(CharacterRow)
        if after_updated_at is not None:
            cursor = sa.tuple_(sa.literal(after_updated_at, UTCDateTime()), sa.literal(after_id, sa.Integer()))
            stmt = stmt.where(sa.tuple_(CharacterRow.updated_at, CharacterRow.id) > cursor)
        stmt = stmt.order_by(CharacterRow.updated_at, CharacterRow.id).limit(limit)
        with self.db.session(readonly=True) as session:
            return [_record(Character, r) for r in session.scalars(stmt)]

    def count(self) -> int:
        with self.db.session(readonly=True) as session:
            return session.scalar(sa.select(sa.func.count()).select_from(CharacterRow)) or 0


# --- LoRA models ---------------------------------------------------------------------------------------

_LORA_FIELDS = frozenset(
    {
        "training_model", "job_id", "model_path", "model_url", "sha256", "size_bytes", "gpu_call_id", "backend",
        "dataset_hash", "attempt", "error", "trigger_word", "training_started_at", "finished_at",
    }
)  # fmt: skip


class LoraModelsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        character_id: int,
        base_model: str,
        trigger_word: str,
        idempotency_key: str,
        dataset_hash: str | None = None,
        training_model: str | None = None,
        **fields_: Any,
    ) -> LoraModel:
        """A pending LoRA row, or the existing row with this `idempotency_key` (get-or-create, race-safe)."""
        validate_base_model(base_model)
        validate_trigger_word(trigger_word)
        if not isinstance(idempotency_key, str) or not idempotency_key or len(idempotency_key) > 255:
            raise ValueError("idempotency_key must be a non-empty string of at most 255 characters")
        _only(fields_, _LORA_FIELDS - {"trigger_word", "dataset_hash", "training_model"}, "lora_models")
        values = {"dataset_hash": dataset_hash, "training_model": training_model, **fields_}
        _check_common(values, "lora_models")
        existing = self.find_by_idempotency_key(idempotency_key)
        if existing is None:
            now = utcnow()
            try:
                with self.db.session() as session:
                    row = LoraModelRow(
                        character_id=character_id,
                        base_model=base_model,
                        trigger_word=trigger_word,
                        idempotency_key=idempotency_key,
                        status="pending",
                        created_at=now,
                        updated_at=now,
                        **values,
                    )
                    session.add(row)
                    session.flush()
                    return _record(LoraModel, row)
            except IntegrityError:
                # lost a race to another creator, or the character does not exist
                existing = self.find_by_idempotency_key(idempotency_key)
                if existing is None:
                    if CharactersRepository(self.db).get(character_id) is None:
                        raise RecordNotFoundError(f"characters {character_id} does not exist") from None
                    raise
        if (existing.character_id, existing.base_model) != (character_id, base_model):
            raise IdempotencyConflictError(
                f"idempotency key {idempotency_key!r} already names lora_models {existing.id} "
                f"(character {existing.character_id}, {existing.base_model})"
            )
        return existing

    def get(self, lora_model_id: int) -> LoraModel | None:
        with self.db.session(readonly=True) as session:
            row = session.get(LoraModelRow, lora_model_id)
            return None if row is None else _record(LoraModel, row)

    def _select(self, stmt: sa.Select[Any]) -> list[LoraModel]:
        with self.db.session(readonly=True) as session:
            return [_record(LoraModel, r) for r in session.scalars(stmt)]

    def find_by_character_id(self, character_id: int) -> list[LoraModel]:
        return self._select(
            sa.select(LoraModelRow).where(LoraModelRow.character_id == character_id).order_by(LoraModelRow.id)
        )

    def find_by_character_and_model(self, character_id: int, base_model: str) -> list[LoraModel]:
        """Every LoRA of this character for this base model, oldest first."""
        validate_base_model(base_model)
        return self._select(
            sa.select(LoraModelRow)
            .where(LoraModelRow.character_id == character_id, LoraModelRow.base_model == base_model)
            .order_by(LoraModelRow.id)
        )

    def find_ready_by_character_id(self, character_id: int, base_model: str | None = None) -> LoraModel | None:
        """The most recently finished `ready` LoRA of the character (for `base_model` when given)."""
        stmt = sa.select(LoraModelRow).where(LoraModelRow.character_id == character_id, LoraModelRow.status == "ready")
        if base_model is not None:
            stmt = stmt.where(LoraModelRow.base_model == validate_base_model(base_model))
        stmt = stmt.order_by(LoraModelRow.finished_at.desc().nulls_last(), LoraModelRow.id.desc()).limit(1)
        found = self._select(stmt)
        return found[0] if found else None

    def find_by_idempotency_key(self, idempotency_key: str) -> LoraModel | None:
        found = self._select(sa.select(LoraModelRow).where(LoraModelRow.idempotency_key == idempotency_key))
        return found[0] if found else None

    def list_by_status(self, status: str, limit: int = 100, after_id: int = 0) -> list[LoraModel]:
        validate_lora_status(status)
        _check_page(limit)
        return self._select(
            sa.select(LoraModelRow)
            .where(LoraModelRow.status == status, LoraModelRow.id > after_id)
            .order_by(LoraModelRow.id)
            .limit(limit)
        )

    def count_by_status(self) -> dict[str, int]:
        stmt = sa.select(LoraModelRow.status, sa.func.count()).group_by(LoraModelRow.status)
        with self.db.session(readonly=True) as session:
            return {status: count for status, count in session.execute(stmt)}

    def transition(self, lora_model_id: int, new_status: str, **fields_: Any) -> LoraModel:
        """Move to `new_status` (checked against the rules) and write `fields_`, atomically.

        Entering `training` stamps training_started_at and entering `ready`/`failed` stamps finished_at,
        unless the caller passes them.
        """
        validate_lora_status(new_status)
        _only(fields_, _LORA_FIELDS, "lora_models")
        _check_common(fields_, "lora_models")
        with self.db.session() as session:
            row = _locked(session, LoraModelRow, lora_model_id, "lora_models")
            check_lora_transition(lora_model_id, row.status, new_status)
            if new_status != row.status:
                if new_status == "training":
                    fields_.setdefault("training_started_at", utcnow())
                elif new_status in {"ready", "failed"}:
                    fields_.setdefault("finished_at", utcnow())
            _apply(row, {**fields_, "status": new_status})
            session.flush()
            return _record(LoraModel, row)

    def update_fields(self, lora_model_id: int, **fields_: Any) -> LoraModel:
        """Write fields without touching the status."""
        if "status" in fields_:
            raise ValueError("update_fields does not change status; use transition()")
        _only(fields_, _LORA_FIELDS, "lora_models")
        _check_common(fields_, "lora_models")
        with self.db.session() as session:
            row = _locked(session, LoraModelRow, lora_model_id, "lora_models")
            _apply(row, fields_)
            session.flush()
            return _record(LoraModel, row)


# --- generation jobs -----------------------------------------------------------------------------------

_GENERATION_FIELDS = frozenset(
    {
        "sent_prompt", "lora_model_id", "trigger_word", "lora_skipped_reason", "mode", "backend", "input_metadata",
        "output_keys", "face_distance", "face_match", "face_count", "error",
    }
)  # fmt: skip


class GenerationJobsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(
        self,
        character_id: int,
        model: str,
        prompt: str,
        count: int = 1,
        input_metadata: dict[str, Any] | None = None,
    ) -> list[int]:
        """Insert `count` pending jobs; returns their ids in order."""
        if not isinstance(model, str) or not model or len(model) > 64:
            raise ValueError("model must be a non-empty string of at most 64 characters")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        _check_text(model, "model")
        _check_text(prompt, "prompt")
        if not 1 <= count <= MAX_ENQUEUE:
            raise ValueError(f"count must be between 1 and {MAX_ENQUEUE}, got {count}")
        metadata = dict(input_metadata or {})
        _check_common({"input_metadata": metadata}, "generation_jobs")
        with self.db.session() as session:
            if session.get(CharacterRow, character_id) is None:
                raise RecordNotFoundError(f"characters {character_id} does not exist")
            now = utcnow()
            rows = [
                GenerationJobRow(
                    character_id=character_id, model=model, prompt=prompt, input_metadata=dict(metadata),
                    created_at=now, updated_at=now,
                )  # fmt: skip
                for _ in range(count)
            ]
            session.add_all(rows)
            session.flush()
            return [r.id for r in rows]

    def get(self, job_id: int) -> GenerationJob | None:
        with self.db.session(readonly=True) as session:
            row = session.get(GenerationJobRow, job_id)
            return None if row is None else _record(GenerationJob, row)

    def _select(self, stmt: sa.Select[Any]) -> list[GenerationJob]:
        with self.db.session(readonly=True) as session:
            return [_record(GenerationJob, r) for r in session.scalars(stmt)]

    def pending_after(self, after_id: int = 0, limit: int = 100) -> list[GenerationJob]:
        """Pending jobs with id > `after_id`, by id: a sensor's next page."""
        _check_page(limit)
        return self._select(
            sa.select(GenerationJobRow)
            .where(GenerationJobRow.status == "pending", GenerationJobRow.id > after_id)
            .order_by(GenerationJobRow.id)
            .limit(limit)
        )

    def claim(self, job_id: int, worker: str) -> GenerationJob | None:
        """pending → running for `worker`; None when the job is not pending (someone else has it)."""
        _check_short_text(worker, "worker", 200)
        if not worker:
            raise ValueError("worker is empty")
        now = utcnow()
        stmt = (
            sa.update(GenerationJobRow)
            .where(GenerationJobRow.id == job_id, GenerationJobRow.status == "pending")
            .values(status="running", claimed_by=worker, started_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        with self.db.session() as session:
            if session.execute(stmt).rowcount != 1:
                return None
            return _record(GenerationJob, session.get(GenerationJobRow, job_id))

    def finish(self, job_id: int, status: str, **fields_: Any) -> GenerationJob:
        """running → succeeded | failed, writing the job's results; stamps finished_at."""
        validate_generation_status(status)
        if status not in {"succeeded", "failed"}:
            raise ValueError(f"finish() takes 'succeeded' or 'failed', got {status!r}")
        _only(fields_, _GENERATION_FIELDS | {"finished_at"}, "generation_jobs")
        _check_common(fields_, "generation_jobs")
        with self.db.session() as session:
            row = _locked(session, GenerationJobRow, job_id, "generation_jobs")
            check_generation_transition(job_id, row.status, status)
            if row.status != status:
                fields_.setdefault("finished_at", utcnow())
            _apply(row, {**fields_, "status": status})
            session.flush()
            return _record(GenerationJob, row)

    def update_fields(self, job_id: int, **fields_: Any) -> GenerationJob:
        """Write result fields without touching the status."""
        if "status" in fields_:
            raise ValueError("update_fields does not change status; use claim() or finish()")
        _only(fields_, _GENERATION_FIELDS, "generation_jobs")
        _check_common(fields_, "generation_jobs")
        with self.db.session() as session:
            row = _locked(session, GenerationJobRow, job_id, "generation_jobs")
            _apply(row, fields_)
            session.flush()
            return _record(GenerationJob, row)

    def add_output_key(self, job_id: int, key: str) -> GenerationJob:
        """Append one output object key under a row lock."""
        validate_key(key)
        with self.db.session() as session:
            row = _locked(session, GenerationJobRow, job_id, "generation_jobs")
            _apply(row, {"output_keys": [*row.output_keys, key]})
            session.flush()
            return _record(GenerationJob, row)

    def merge_input_metadata(self, job_id: int, values: Mapping[str, Any]) -> GenerationJob:
        """Merge `values` into input_metadata under a row lock (keys in `values` win)."""
        with self.db.session() as session:
            row = _locked(session, GenerationJobRow, job_id, "generation_jobs")
            merged = {**row.input_metadata, **values}
            _check_common({"input_metadata": merged}, "generation_jobs")
            _apply(row, {"input_metadata": merged})
            session.flush()
            return _record(GenerationJob, row)

    def record_face_score(self, job_id: int, distance: float | None, match: bool | None,
                          face_count: int) -> GenerationJob:
        return self.update_fields(job_id, face_distance=distance, face_match=match, face_count=face_count)

    def requeue_stale(self, older_than: timedelta, max_attempts: int = 3, limit: int = 1000) -> list[int]:
        """Running jobs started before now - `older_than`: back to pending with attempts + 1, or failed
        ("stale after N attempts") once attempts reaches `max_attempts`. Returns the ids it touched."""
        if older_than <= timedelta(0):
            raise ValueError("older_than must be positive")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        cutoff = utcnow() - older_than
        stmt = (
            sa.select(GenerationJobRow)
            .where(GenerationJobRow.status == "running", GenerationJobRow.started_at < cutoff)
            .order_by(GenerationJobRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        touched: list[int] = []
        with self.db.session() as session:
            for row in session.scalars(stmt):
                attempts = row.attempts + 1
                if attempts >= max_attempts:
                    check_generation_transition(row.id, row.status, "failed")
                    _apply(row, {"status": "failed", "attempts": attempts, "finished_at": utcnow(),
                                 "error": f"stale after {attempts} attempts"})  # fmt: skip
                else:
                    check_generation_transition(row.id, row.status, "pending", requeue=True)
                    _apply(row, {"status": "pending", "attempts": attempts, "claimed_by": None, "started_at": None})
                touched.append(row.id)
        return touched

    def list(
        self,
        *,
        status: str | None = None,
        character_id: int | None = None,
        model: str | None = None,
        mode: str | None = None,
        created_after: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[GenerationJob]:
        _check_page(limit)
        stmt = sa.select(GenerationJobRow).where(GenerationJobRow.id > after_id)
        if status is not None:
            stmt = stmt.where(GenerationJobRow.status == validate_generation_status(status))
        if character_id is not None:
            stmt = stmt.where(GenerationJobRow.character_id == character_id)
        if model is not None:
            stmt = stmt.where(GenerationJobRow.model == model)
        if mode is not None:
            stmt = stmt.where(GenerationJobRow.mode == mode)
        if created_after is not None:
            stmt = stmt.where(GenerationJobRow.created_at > created_after)
        order = GenerationJobRow.id.desc() if newest_first else GenerationJobRow.id
        return self._select(stmt.order_by(order).limit(limit))

    def count_by_status(self, created_after: datetime | None = None) -> dict[str, int]:
        return self._count_by(GenerationJobRow.status, created_after)

    def count_by_mode(self, created_after: datetime | None = None) -> dict[str | None, int]:
        """Succeeded jobs per mode (lora / face_swap / standard / None): the LoRA usage rate's inputs."""
        return self._count_by(GenerationJobRow.mode, created_after, GenerationJobRow.status == "succeeded")

    def _count_by(self, column: Any, created_after: datetime | None, *where: Any) -> dict[Any, int]:
        stmt = sa.select(column, sa.func.count()).where(*where).group_by(column)
        if created_after is not None:
            stmt = stmt.where(GenerationJobRow.created_at > created_after)
        with self.db.session(readonly=True) as session:
            return {key: count for key, count in session.execute(stmt)}
