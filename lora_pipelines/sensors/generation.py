"""pending_generations: requests generation runs for new pending jobs, and retries the ones the reaper requeued."""

from datetime import timedelta

import dagster as dg

from lora_pipelines.jobs import generation_job
from lora_pipelines.resources import AppDatabaseResource, GpuResource, ObjectStoreResource, pipeline_context
from lora_pipelines.services.planning import plan_pending_generations


@dg.sensor(name="pending_generations", job=generation_job, minimum_interval_seconds=15,
           default_status=dg.DefaultSensorStatus.RUNNING)
def pending_generations_sensor(
    context: dg.SensorEvaluationContext, database: AppDatabaseResource, object_store: ObjectStoreResource,
    gpu: GpuResource,
) -> dg.SensorResult:
    ctx = pipeline_context(database, object_store, gpu)
    batches, next_after = plan_pending_generations(
        ctx.db, int(context.cursor or 0), stale_after=timedelta(seconds=ctx.settings.generation_stale_seconds),
        max_attempts=ctx.settings.generation_max_attempts,
    )
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
