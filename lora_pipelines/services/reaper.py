"""The reaper: generation jobs left `running` by a worker that died go back to pending, or fail past the cap."""

from __future__ import annotations

from datetime import timedelta

from lora_pipelines.store.database import Database
from lora_pipelines.store.generation_jobs import GenerationJobsRepository


def requeue_stale_generations(
    db: Database, *, stale_after: timedelta = timedelta(minutes=30), max_attempts: int = 3
) -> list[int]:
    """Running jobs started longer than `stale_after` ago: back to pending with one more attempt, or failed once
    `max_attempts` is reached. Returns the ids it touched (the pending_generations sensor retries them)."""
    return GenerationJobsRepository(db).requeue_stale(stale_after, max_attempts=max_attempts)
