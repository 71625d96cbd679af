"""training_failures: a failed training run leaves its reason where `status` and `character show` read it.

A run can fail before any lora_models row records it (the dataset step crashed, the GPU refused the submit, the
artifact could not be stored); without this the character would look queued forever.
"""

import dagster as dg

from lora_pipelines.jobs import training_job
from lora_pipelines.jobs.cli_runs import step_failure_text
from lora_pipelines.resources import PipelineResource
from lora_pipelines.services.training_state import record_run_failure

PARTITION_TAG = "dagster/partition/{}"


def failure_reason(run_id: str, step_failures: list[dg.DagsterEvent], fallback: str) -> str:
    """`run 1a2b3c4d failed in trained_lora: <first line of the error>` (or the run's own message)."""
    for event in step_failures:
        return f"run {run_id[:8]} failed in {event.step_key}: {step_failure_text(event)}"
    return f"run {run_id[:8]} failed: {fallback.strip().splitlines()[0] if fallback.strip() else 'see the run'}"


@dg.run_failure_sensor(name="training_failures", monitored_jobs=[training_job], minimum_interval_seconds=30,
                       default_status=dg.DefaultSensorStatus.RUNNING)
def training_failures_sensor(context: dg.RunFailureSensorContext, pipeline: PipelineResource) -> None:
    """Records why a training run failed on its character × base model."""
    tags = context.dagster_run.tags
    character, base_model = tags.get(PARTITION_TAG.format("character")), tags.get(PARTITION_TAG.format("base_model"))
    if not character or not character.isdigit() or not base_model:
        return
    run_id = context.dagster_run.run_id
    reason = failure_reason(run_id, context.get_step_failure_events(), context.failure_event.message or "")
    if record_run_failure(pipeline.context, int(character), base_model, run_id, reason):
        context.log.info(f"character {character} {base_model}: {reason}")
