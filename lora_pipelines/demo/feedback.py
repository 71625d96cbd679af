"""The demo's users: a feedback CSV, as the product's app would export it, imported like any other.

There are no real users in a demo, so each rating stands in for one: a LoRA generation whose face matched the
character is rated "better" than without the LoRA, one that did not match "worse"; the others (no LoRA) "same".
"""

from __future__ import annotations

import csv
from pathlib import Path

from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.feedback import ImportResult, import_feedback
from lora_pipelines.store.generation_jobs import GenerationJobsRepository

DEMO_RATERS = ("demo-user-1", "demo-user-2")


def write_demo_feedback(ctx: PipelineContext, path: Path, job_ids: list[int]) -> int:
    """One rating per succeeded job, by alternating stand-in users; returns how many rows were written."""
    jobs = GenerationJobsRepository(ctx.db)
    rows = []
    for i, job_id in enumerate(job_ids):
        job = jobs.get(job_id)
        if job is None or job.status != "succeeded":
            continue
        if job.lora_model_id is None:
            rating, note = "same", "no LoRA used"
        else:
            rating, note = ("better", "") if job.face_match else ("worse", "does not look like them")
        rows.append({"job_id": job_id, "rating": rating, "note": note, "rated_by": DEMO_RATERS[i % 2]})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["job_id", "rating", "note", "rated_by"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def record_demo_feedback(ctx: PipelineContext, path: Path, job_ids: list[int]) -> ImportResult | None:
    if write_demo_feedback(ctx, path, job_ids) == 0:
        return None
    return import_feedback(ctx, path, by="demo")
