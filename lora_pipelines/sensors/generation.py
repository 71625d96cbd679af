"""pending_generations: requests generation runs for new pending jobs, and retries the ones the reaper requeued."""

from datetime import timedelta

import dagster as dg

from lora_pipelines.jobs import generation_job
from lora_pipelines.planning.generation import plan_pending_generations
from lora_pipelines.resources import PipelineResource
from lora_pipelines.services.reaper import requeue_stale_generations


@dg.sensor(name="pending_generations", job=generation_job, minimum_interval_seconds=5,
           default_status=dg.DefaultSensorStatus.RUNNING)
def pending_generations_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
    ctx = pipeline.context
    stale_after = timedelta(seconds=ctx.settings.generation_stale_seconds)
    requeued = requeue_stale_generations(ctx.db, stale_after=stale_after,
                                         max_attempts=ctx.settings.generation_max_attempts)
    batches, next_after = plan_pending_generations(ctx.db, int(context.cursor or 0), requeued=requeued,
                                                   stale_after=stale_after)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=batch.run_key,
                run_config={"ops": {"generation_outputs": {"config": {"job_ids": list(batch.job_ids)}}}},
                tags={"lora_pipelines/jobs": f"{batch.job_ids[0]}-{batch.job_ids[-1]}"},
            )
            for batch in batches
        ],
        cursor=str(next_after),
    )
