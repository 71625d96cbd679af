"""Training requests: new or changed characters to train, and ended GPU calls to finish."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from lora_pipelines.gpu.schemas import TrainingPoll
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.database import Database
from lora_pipelines.store.lora_models import LoraModelsRepository

ENDED = ("succeeded", "failed", "lost")
UNPOLLED = "unpolled"  # the GPU service could not be asked without starting it: the requested run asks


@dataclass(frozen=True)
class TrainingRequest:
    character_id: int
    base_model: str
    run_key: str
    lora_model_id: int | None = None  # set when finishing that row's call


@dataclass(frozen=True)
class TrainingInFlight:
    """A call still queued or running, as the tick saw it (shown on trained_lora as an observation)."""

    lora_model_id: int
    character_id: int
    base_model: str
    call_id: str
    state: str
    progress: float | None


@dataclass(frozen=True)
class TrainingSurvey:
    requests: list[TrainingRequest]
    in_flight: list[TrainingInFlight]
    next_after: int


@dataclass(frozen=True)
class CharacterCursor:
    updated_at: datetime | None = None
    id: int = 0

    def dumps(self) -> str:
        return json.dumps({"updated_at": self.updated_at.isoformat() if self.updated_at else None, "id": self.id})

    @classmethod
    def loads(cls, raw: str | None) -> CharacterCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(datetime.fromisoformat(data["updated_at"]) if data.get("updated_at") else None, int(data["id"]))


def photo_set_hash(photo_keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(photo_keys)).encode()).hexdigest()[:16]


def plan_new_character_training(
    db: Database, cursor: CharacterCursor, *, base_models: list[str], min_photos: int, limit: int = 500
) -> tuple[list[str], list[TrainingRequest], CharacterCursor]:
    """Partitions to add and trainings to request for characters changed since the cursor."""
    changed = CharactersRepository(db).changed_since(cursor.updated_at, cursor.id, limit=limit)
    partitions: list[str] = []
    requests: list[TrainingRequest] = []
    for character in changed:
        if not character.lora_enabled:
            continue
        partitions.append(str(character.id))
        if len(character.photo_keys) < min_photos:
            continue
        photos = photo_set_hash(character.photo_keys)
        for base_model in base_models:
            requests.append(TrainingRequest(character.id, base_model, f"train:{character.id}:{base_model}:{photos}"))
    next_cursor = CharacterCursor(changed[-1].updated_at, changed[-1].id) if changed else cursor
    return partitions, requests, next_cursor


def plan_training_completion(
    db: Database, poll: Callable[[str], TrainingPoll] | None, *, after_id: int = 0, limit: int = 50
) -> tuple[list[TrainingRequest], int]:
    """In-flight trainings whose GPU call has ended (or was lost): request the run that finishes them.
    Returns the requests and the id to continue from next tick (0 wraps around); see `survey_training`."""
    survey = survey_training(db, poll, after_id=after_id, limit=limit)
    return survey.requests, survey.next_after


def survey_training(
    db: Database, poll: Callable[[str], TrainingPoll] | None, *, after_id: int = 0, limit: int = 50
) -> TrainingSurvey:
    """Every in-flight training of one page: a finishing request for each call that has ended, the progress of
    the others.

    Reads only rows in `training`, a page at a time, so the cost follows what is in flight, not the table size.
    `poll` None means the GPU service is not running (a simulated service that stopped: every call it had has
    ended, kept on disk or lost), so every in-flight call gets a finishing run, which starts the service and polls.
    """
    rows = LoraModelsRepository(db).list_by_status("training", limit=limit, after_id=after_id)
    requests, in_flight = [], []
    for row in rows:
        if not row.gpu_call_id:
            continue
        answer = poll(row.gpu_call_id) if poll is not None else None
        state = answer.state if answer is not None else UNPOLLED
        if state in (*ENDED, UNPOLLED):
            requests.append(TrainingRequest(
                row.character_id, row.base_model, f"complete:{row.id}:{row.gpu_call_id}:{state}", row.id
            ))
        else:
            in_flight.append(TrainingInFlight(row.id, row.character_id, row.base_model, row.gpu_call_id, state,
                                              answer.progress))
    next_after = rows[-1].id if len(rows) == limit else 0
    return TrainingSurvey(requests, in_flight, next_after)
