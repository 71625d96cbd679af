"""generation_outputs: a batch of generation jobs, each with its LoRA when one can be used.

Batches rather than per-character partitions: jobs arrive continuously for many characters, and one run per
batch keeps the run count (and sensor work) proportional to traffic. Lineage still reads
lora_artifact → generation_outputs, and each job row names the LoRA it used.
"""

import os
import socket

import dagster as dg

from lora_pipelines.assets.metadata import image_md, inline_images, string_table
from lora_pipelines.resources import PipelineResource
from lora_pipelines.services.generation_batch import run_generation_batch
from lora_pipelines.services.previews import output_images, outputs_preview
from lora_pipelines.store.generation_jobs import GenerationJobsRepository


class GenerationBatchConfig(dg.Config):
    job_ids: list[int] = []
    """Jobs to run; empty means the oldest pending ones, up to `limit`."""
    limit: int = 32


@dg.asset(
    group_name="generation",
    kinds={"python", "modal", "s3"},
    pool="gpu_generation",
    deps=["lora_artifact"],
)
def generation_outputs(
    context: dg.AssetExecutionContext, config: GenerationBatchConfig, pipeline: PipelineResource
) -> dg.MaterializeResult:
    """Images for pending generation jobs: LoRA → face swap / PuLID → standard, recorded on each job.

    The jobs run concurrently, up to LORA_PIPELINES_GPU_CONCURRENCY GPU calls at once in this run."""
    ctx = pipeline.context
    job_ids = config.job_ids or [j.id for j in GenerationJobsRepository(ctx.db).pending_after(0, limit=config.limit)]
    worker = f"{socket.gethostname()}:{os.getpid()}:{context.run.run_id[:8]}"
    outcomes = []
    for job_id, outcome in run_generation_batch(ctx, job_ids, worker):
        if outcome is None:
            context.log.info(f"job {job_id}: not pending (done or claimed elsewhere), skipped")
            continue
        outcomes.append(outcome)
        context.log.info(
            f"job {job_id}: {outcome.status} via {outcome.mode}"
            + (f" with LoRA {outcome.lora_model_id}" if outcome.lora_model_id else f" ({outcome.lora_skipped_reason})")
        )
    outcomes.sort(key=lambda o: o.job_id)
    rows = [{"job_id": o.job_id, "status": o.status, "mode": o.mode, "lora_model_id": o.lora_model_id,
             "lora_skipped_reason": o.lora_skipped_reason, "output": output_uri(ctx, o)} for o in outcomes]
    thumbnails = [(f"image #{job_id} {mode}", image) for job_id, mode, image in output_images(ctx, outcomes)]
    return dg.MaterializeResult(metadata={
        "jobs": len(outcomes),
        "succeeded": sum(o.status == "succeeded" for o in outcomes),
        "with_lora": sum(o.lora_model_id is not None for o in outcomes),
        "job_ids": dg.MetadataValue.json([o.job_id for o in outcomes]),
        "results": string_table(rows, ["job_id", "status", "mode", "lora_model_id", "lora_skipped_reason", "output"]),
        **inline_images(thumbnails),
        "preview": image_md(outputs_preview(ctx, outcomes), "generated images"),
    })


def output_uri(ctx, outcome) -> str:
    """Where the job's first image is (s3:// or file://): metadata outlives any presigned link."""
    from lora_pipelines.domain.keys import generation_output_key

    return ctx.store.uri(generation_output_key(str(outcome.job_id), 0)) if outcome.status == "succeeded" else ""
