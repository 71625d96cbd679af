"""The `characters` repository: a person to keep consistent, their reference photos and trigger word.

Each method runs in its own transaction and returns detached, frozen records (never live ORM objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lora_pipelines.domain.trigger_words import MAX_TRIGGER_WORD_LENGTH, trigger_word_for, validate_trigger_word
from lora_pipelines.store.database import Database
from lora_pipelines.store.rows import Table, lock_row, to_record, update_locked
from lora_pipelines.store.tables import (
    CharacterRow,
    GenerationJobRow,
    LoraModelRow,
    TrainingStateRow,
    UTCDateTime,
    utcnow,
)
from lora_pipelines.store.validation import check_fields, check_keys, check_page, check_text, only

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Character:
    id: int
    name: str
    lora_enabled: bool
    trigger_word: str
    photo_keys: list[str]
    created_at: datetime
    updated_at: datetime


class TriggerWordTakenError(ValueError):
    """Another character already has this trigger word (they are unique: a prompt must name one LoRA)."""


@dataclass(frozen=True)
class RemovedRows:
    lora_models: int
    generation_job_ids: list[int]
    training_states: int


CHARACTERS = Table("characters", CharacterRow, Character)
_UPDATABLE = frozenset({"name", "lora_enabled", "trigger_word", "photo_keys"})


def check_name(name: object) -> str:
    """The name, stripped; ValueError naming the problem when it is empty, too long or holds control characters."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("character name is empty")
    name = check_text(name.strip(), "character name")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"character name is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    return name


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
        """A new character. A trigger word derived from the name gets a `_2`, `_3`... suffix when another character
        has it; an explicit one that is taken raises TriggerWordTakenError."""
        name = check_name(name)
        word = validate_trigger_word(trigger_word) if trigger_word is not None else None
        if not isinstance(lora_enabled, bool):
            raise ValueError("lora_enabled must be a bool")
        keys = check_keys(photo_keys, "photo_keys")
        now = utcnow()
        with self.db.session() as session:
            owner = None if word is None else self._taken(session, word)
            if owner is not None:
                raise TriggerWordTakenError(f"trigger word {word!r} is taken by character {owner}")
            row = CharacterRow(name=name, lora_enabled=lora_enabled,
                               trigger_word=word or self._free_trigger_word(session, trigger_word_for(name)),
                               photo_keys=keys, created_at=now, updated_at=now)
            session.add(row)
            session.flush()
            return to_record(Character, row)

    @staticmethod
    def _taken(session: Session, word: str) -> int | None:
        return session.scalar(sa.select(CharacterRow.id).where(CharacterRow.trigger_word == word))

    def _free_trigger_word(self, session: Session, word: str) -> str:
        used = set(session.scalars(sa.select(CharacterRow.trigger_word).where(CharacterRow.trigger_word.startswith(
            word, autoescape=True))))
        number = 1
        candidate = word
        while candidate in used:
            number += 1
            suffix = f"_{number}"
            candidate = word[:MAX_TRIGGER_WORD_LENGTH - len(suffix)] + suffix
        return candidate

    def find_by_name(self, name: str) -> list[Character]:
        """Characters with this name, ignoring case and surrounding spaces, oldest first."""
        stmt = (sa.select(CharacterRow).where(sa.func.lower(CharacterRow.name) == name.strip().lower())
                .order_by(CharacterRow.id))
        with self.db.session(readonly=True) as session:
            return [to_record(Character, r) for r in session.scalars(stmt)]

    def remove(self, character_id: int) -> RemovedRows:
        """Delete the character with its LoRA rows, generation jobs and training states, in one transaction."""
        with self.db.session() as session:
            character = lock_row(session, CHARACTERS, character_id)
            job_ids = list(session.scalars(sa.select(GenerationJobRow.id)
                                           .where(GenerationJobRow.character_id == character_id)
                                           .order_by(GenerationJobRow.id)))
            loras = session.execute(sa.delete(LoraModelRow).where(LoraModelRow.character_id == character_id)).rowcount
            session.execute(sa.delete(GenerationJobRow).where(GenerationJobRow.character_id == character_id))
            states = session.execute(
                sa.delete(TrainingStateRow).where(TrainingStateRow.character_id == character_id)).rowcount
            session.delete(character)
            return RemovedRows(lora_models=loras, generation_job_ids=job_ids, training_states=states)

    def get(self, character_id: int) -> Character | None:
        with self.db.session(readonly=True) as session:
            row = session.get(CharacterRow, character_id)
            return None if row is None else to_record(Character, row)

    def update(self, character_id: int, **fields_: Any) -> Character:
        only(fields_, _UPDATABLE, "characters")
        if "name" in fields_:
            fields_["name"] = check_name(fields_["name"])
        if "photo_keys" in fields_:
            fields_["photo_keys"] = check_keys(fields_["photo_keys"], "photo_keys")
        check_fields(fields_, "characters")
        try:
            return update_locked(self.db, CHARACTERS, character_id, fields_)
        except IntegrityError:
            if "trigger_word" in fields_:
                raise TriggerWordTakenError(f"trigger word {fields_['trigger_word']!r} is taken") from None
            raise

    def add_photo_keys(self, character_id: int, keys: Iterable[str]) -> Character:
        """Append keys not already present, under a row lock (safe against concurrent uploads)."""
        new_keys = check_keys(keys, "photo_keys")

        def merged(row: CharacterRow) -> dict[str, Any]:
            current = list(row.photo_keys)
            return {"photo_keys": current + [k for k in dict.fromkeys(new_keys) if k not in current]}

        return update_locked(self.db, CHARACTERS, character_id, merged)

    def delete(self, character_id: int) -> None:
        """Remove a character nothing refers to yet: undoes an `add_character` whose photo upload failed."""
        with self.db.session() as session:
            session.delete(lock_row(session, CHARACTERS, character_id))

    def list(self, limit: int = 100, offset: int = 0) -> list[Character]:
        check_page(limit, offset)
        stmt = sa.select(CharacterRow).order_by(CharacterRow.id).limit(limit).offset(offset)
        with self.db.session(readonly=True) as session:
            return [to_record(Character, r) for r in session.scalars(stmt)]

    def changed_since(self, after_updated_at: datetime | None, after_id: int = 0, limit: int = 100) -> list[Character]:
        """Characters whose (updated_at, id) comes after the cursor, oldest first: a sensor's next page."""
        check_page(limit)
        stmt = sa.select(CharacterRow)
        if after_updated_at is not None:
            cursor = sa.tuple_(sa.literal(after_updated_at, UTCDateTime()), sa.literal(after_id, sa.Integer()))
            stmt = stmt.where(sa.tuple_(CharacterRow.updated_at, CharacterRow.id) > cursor)
        stmt = stmt.order_by(CharacterRow.updated_at, CharacterRow.id).limit(limit)
        with self.db.session(readonly=True) as session:
            return [to_record(Character, r) for r in session.scalars(stmt)]

    def existing_ids(self, ids: Iterable[int]) -> set[int]:
        """Which of these ids are characters."""
        ids = list(ids)
        found: set[int] = set()
        with self.db.session(readonly=True) as session:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                found.update(session.scalars(sa.select(CharacterRow.id).where(CharacterRow.id.in_(chunk))))
        return found

    def count(self) -> int:
        with self.db.session(readonly=True) as session:
            return session.scalar(sa.select(sa.func.count()).select_from(CharacterRow)) or 0
