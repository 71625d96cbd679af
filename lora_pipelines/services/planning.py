"""What the sensors decide, as plain functions: which trainings and generations to request, with which run keys.

A run key names exactly what makes a run legitimate (Dagster never runs the same key twice, failed or not):
the character's photo set for training, the call id for finishing a training, the job ids and attempt for
generation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lora_pipelines.store.database import Database
from lora_pipelines.store.repositories import CharactersRepository, GenerationJobsRepository, LoraModelsRepository


@dataclass(frozen=True)
class TrainingRequest:
    character_id: int
    base_model: str
    run_key: str


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


def plan_training_completion(db: Database, poll, *, after_id: int = 0,
                             limit: int = 50) -> tuple[list[TrainingRequest], int]:
    """In-flight trainings whose GPU call has ended (or was lost): request the run that finishes them.

    Reads only rows in `training`, a page at a time, so the cost follows what is in flight, not the table size.
    Returns the requests and the id to continue from next tick (0 wraps around).
    """
    rows = LoraModelsRepository(db).list_by_status("training", limit=limit, after_id=after_id)
    requests = []
    for row in rows:
        if not row.gpu_call_id:
            continue
        state = poll(row.gpu_call_id).state
        if state in ("succeeded", "failed", "lost"):
            requests.append(TrainingRequest(
                row.character_id, row.base_model, f"complete:{row.id}:{row.gpu_call_id}:{state}"
            ))
    next_after = rows[-1].id if len(rows) == limit else 0
    return requests, next_after


@dataclass(frozen=True)
class GenerationBatch:
    job_ids: tuple[int, ...]
    run_key: str


def plan_pending_generations(
    db: Database, after_id: int, *, batch_size: int = 16, max_batches: int = 10,
    stale_after: timedelta = timedelta(minutes=30), max_attempts: int = 3,
) -> tuple[list[GenerationBatch], int]:
    """Batches of new pending jobs after the cursor, plus stale running jobs the reaper put back to pending, plus
    pending jobs behind the cursor left unclaimed for `stale_after` (their batch run died before reaching them)."""
    repo = GenerationJobsRepository(db)
    batches: list[GenerationBatch] = []
    requeued = repo.requeue_stale(stale_after, max_attempts=max_attempts)
    for job_id in requeued:
        job = repo.get(job_id)
        if job is not None and job.status == "pending":
            batches.append(GenerationBatch((job_id,), f"gen-retry:{job_id}:{job.attempts}"))
    # pending jobs behind the cursor whose batch run died before claiming them: their run key is spent. The key
    # names how many stale periods the job has waited, so an orphan run that dies too is followed by another.
    retried = {b.job_ids[0] for b in batches}
    now = datetime.now(UTC)
    for job in repo.list(status="pending", limit=batch_size * max_batches):
        if job.id > after_id:
            break
        periods = int((now - job.updated_at) / stale_after)
        if job.id not in retried and periods >= 1:
            batches.append(GenerationBatch((job.id,), f"gen-orphan:{job.id}:{job.attempts}:{periods}"))
    jobs = repo.pending_after(after_id, limit=batch_size * max_batches)
    for start in range(0, len(jobs), batch_size):
        ids = tuple(job.id for job in jobs[start:start + batch_size])
        batches.append(GenerationBatch(ids, f"gen:{ids[0]}-{ids[-1]}:{len(ids)}"))
    return batches, (jobs[-1].id if jobs else after_id)
