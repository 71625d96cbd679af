"""Generation requests: batches of new pending jobs, and single-job retries for requeued and orphaned ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lora_pipelines.store.database import Database
from lora_pipelines.store.generation_jobs import GenerationJobsRepository


@dataclass(frozen=True)
class GenerationBatch:
    job_ids: tuple[int, ...]
    run_key: str


def plan_pending_generations(
    db: Database, after_id: int, *, requeued: Iterable[int] = (), batch_size: int = 16, max_batches: int = 10,
    stale_after: timedelta = timedelta(minutes=30),
) -> tuple[list[GenerationBatch], int]:
    """Batches of new pending jobs after the cursor, plus the jobs the reaper just put back to pending
    (`requeued`), plus pending jobs behind the cursor left unclaimed for `stale_after` (their batch run died
    before reaching them)."""
    repo = GenerationJobsRepository(db)
    batches: list[GenerationBatch] = []
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
