"""The `lora_models` repository: one trained (or training) LoRA of a character for a base model.

Status moves only forward: pending → training → ready | failed, and pending → failed; ready → archived when
retention removed its files; `failed` and `archived` are final (rules in `status.py`). Writing the same status
again to update other fields is allowed; any other move raises `IllegalStatusTransition` and changes nothing.
Every method runs in its own transaction and returns detached, frozen records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from lora_pipelines.domain.base_models import validate_base_model
from lora_pipelines.domain.trigger_words import validate_trigger_word
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database
from lora_pipelines.store.rows import RecordNotFoundError, Table, to_record, update_locked
from lora_pipelines.store.status import check_lora_transition, validate_lora_status
from lora_pipelines.store.tables import LoraModelRow, utcnow
from lora_pipelines.store.validation import check_fields, check_page, only


class IdempotencyConflictError(ValueError):
    """An idempotency key already names a LoRA for another character or base model."""


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
    second_expert_path: str | None  # the second file of a two-expert LoRA (lora_files); None for a single file
    second_expert_sha256: str | None
    second_expert_size_bytes: int | None
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
    validation_score: float | None = None
    validation: dict[str, Any] | None = None
    gate_reason: str | None = None
    gated_at: datetime | None = None
    archived_at: datetime | None = None


LORA_MODELS = Table(
    "lora_models",
    LoraModelRow,
    LoraModel,
    check_transition=check_lora_transition,
    stamps={"training": "training_started_at", "ready": "finished_at", "failed": "finished_at",
            "archived": "archived_at"},
)
_UPDATABLE = frozenset(
    {
        "training_model", "job_id", "model_path", "model_url", "sha256", "size_bytes", "gpu_call_id", "backend",
        "dataset_hash", "attempt", "error", "trigger_word", "training_started_at", "finished_at",
        "second_expert_path", "second_expert_sha256", "second_expert_size_bytes",
        "validation_score", "validation", "gate_reason", "gated_at", "archived_at",
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
        only(fields_, _UPDATABLE - {"trigger_word", "dataset_hash", "training_model"}, "lora_models")
        values = {"dataset_hash": dataset_hash, "training_model": training_model, **fields_}
        check_fields(values, "lora_models")
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
                    return to_record(LoraModel, row)
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
            return None if row is None else to_record(LoraModel, row)

    def _select(self, stmt: sa.Select[Any]) -> list[LoraModel]:
        with self.db.session(readonly=True) as session:
            return [to_record(LoraModel, r) for r in session.scalars(stmt)]

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
        check_page(limit)
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
        only(fields_, _UPDATABLE, "lora_models")
        check_fields(fields_, "lora_models")
        return update_locked(self.db, LORA_MODELS, lora_model_id, fields_, status=new_status)

    def update_fields(self, lora_model_id: int, **fields_: Any) -> LoraModel:
        """Write fields without touching the status."""
        if "status" in fields_:
            raise ValueError("update_fields does not change status; use transition()")
        only(fields_, _UPDATABLE, "lora_models")
        check_fields(fields_, "lora_models")
        return update_locked(self.db, LORA_MODELS, lora_model_id, fields_)
