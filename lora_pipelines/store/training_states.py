"""The `training_states` repository: per character × base model, what the training assets last learned about the
character's photo set (dataset built, or the check or error that stopped it), and which run said so.

One row per character and base model, overwritten by each run (`record`); the lora_models rows hold the rest of
the story (queued → training → ready | failed), and `services/training_state.py` combines both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from lora_pipelines.domain.base_models import validate_base_model
from lora_pipelines.store.database import Database
from lora_pipelines.store.rows import to_record
from lora_pipelines.store.tables import TRAINING_STATES, TrainingStateRow, utcnow

MAX_REASON_LENGTH = 2000


@dataclass(frozen=True)
class TrainingStateRecord:
    character_id: int
    base_model: str
    photo_set: str
    state: str  # preparing | dataset_ready | failed
    check_name: str | None
    reason: str | None
    run_id: str | None
    dataset_hash: str | None
    usable: int | None
    required: int | None
    created_at: datetime
    updated_at: datetime


class TrainingStatesRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, character_id: int, base_model: str, *, photo_set: str, state: str, check_name: str | None = None,
               reason: str | None = None, run_id: str | None = None, dataset_hash: str | None = None,
               usable: int | None = None, required: int | None = None) -> TrainingStateRecord:
        """Write the state of this character × base model (insert or overwrite), in one transaction."""
        validate_base_model(base_model)
        if state not in TRAINING_STATES:
            raise ValueError(f"training state must be one of {', '.join(TRAINING_STATES)}, got {state!r}")
        values = {"photo_set": photo_set, "state": state, "check_name": check_name,
                  "reason": None if reason is None else reason[:MAX_REASON_LENGTH], "run_id": run_id,
                  "dataset_hash": dataset_hash, "usable": usable, "required": required, "updated_at": utcnow()}
        with self.db.session() as session:
            stmt = sa.select(TrainingStateRow).where(TrainingStateRow.character_id == character_id,
                                                     TrainingStateRow.base_model == base_model).with_for_update()
            row = session.scalars(stmt).one_or_none()
            if row is None:
                row = TrainingStateRow(character_id=character_id, base_model=base_model,
                                       created_at=values["updated_at"])
                session.add(row)
            for name, value in values.items():
                setattr(row, name, value)
            session.flush()
            return to_record(TrainingStateRecord, row)

    def get(self, character_id: int, base_model: str) -> TrainingStateRecord | None:
        with self.db.session(readonly=True) as session:
            row = session.get(TrainingStateRow, (character_id, base_model))
            return None if row is None else to_record(TrainingStateRecord, row)

    def for_characters(self, character_ids: list[int]) -> dict[tuple[int, str], TrainingStateRecord]:
        """(character id, base model) → state, for these characters (one query)."""
        if not character_ids:
            return {}
        stmt = sa.select(TrainingStateRow).where(TrainingStateRow.character_id.in_(character_ids))
        with self.db.session(readonly=True) as session:
            return {(r.character_id, r.base_model): to_record(TrainingStateRecord, r) for r in session.scalars(stmt)}
