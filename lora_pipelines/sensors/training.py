"""new_characters and training_completion: cursor-driven, small work per tick, deterministic run keys."""

import json
import time

import dagster as dg

from lora_pipelines.jobs import training_job
from lora_pipelines.partitions import characters_partitions, partition_key
from lora_pipelines.planning.training import CharacterCursor, plan_new_character_training, survey_training
from lora_pipelines.resources import PipelineResource
from lora_pipelines.sensors.partition_notes import MAX_TAG_NAME, NAME_TAG, partition_notes, removed_partitions

DEAD_RUN_SLACK_SECONDS = 600
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]
ENDED_WITHOUT_SUCCESS = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
MAX_COMPLETION_RUNS = 3  # runs that may try to finish one ended GPU call before an operator must look
COMPLETES_TAG = "lora_pipelines/completes"  # the plain completion key a run was requested for


@dg.sensor(name="new_characters", job=training_job, minimum_interval_seconds=5,
           default_status=dg.DefaultSensorStatus.RUNNING)
def new_characters_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
    """Adds a partition per LoRA-enabled character and requests training for each base model once it has photos;
    says on each changed character's partitions where it stands, and deletes the partitions of removed ones."""
    ctx = pipeline.context
    cursor = CharacterCursor.loads(context.cursor)
    partitions, requests, next_cursor = plan_new_character_training(
        ctx.db, cursor, base_models=ctx.settings.train_base_model_list, min_photos=ctx.settings.min_photos
    )
    existing = context.instance.get_dynamic_partitions(characters_partitions.name)
    notes = partition_notes(ctx, cursor, existing=set(existing), added=partitions,
                            requested={(r.character_id, r.base_model) for r in requests})
    for line in notes.log_lines:
        context.log.info(line)
    removed = removed_partitions(ctx, existing)
    partition_requests = [characters_partitions.build_add_request(partitions)] if partitions else []
    if removed:
        context.log.info(f"deleting the partitions of removed characters {', '.join(removed)}")
        partition_requests.append(characters_partitions.build_delete_request(removed))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=r.run_key, partition_key=partition_key(r.character_id, r.base_model),
                          tags={"lora_pipelines/character": str(r.character_id),
                                NAME_TAG: notes.names.get(r.character_id, "")[:MAX_TAG_NAME]})
            for r in requests
        ],
        dynamic_partitions_requests=partition_requests,
        asset_events=notes.observations,
        skip_reason=None if requests else notes.skip_reason(),
        cursor=next_cursor.dumps(),
    )


@dg.sensor(name="training_completion", job=training_job, minimum_interval_seconds=5,
           default_status=dg.DefaultSensorStatus.RUNNING)
def training_completion_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
    """Polls GPU calls in flight: shows their progress on trained_lora, and requests lora_artifact for each ended
    one (a restart loses nothing; no run waits for a training).

    A tick never starts the simulated GPU service: when it is not running, the requested runs poll instead."""
    ctx = pipeline.context
    after_id, shown = _load_cursor(context.cursor)
    backend = ctx.running_training_backend()
    survey = survey_training(ctx.db, backend.poll if backend else None, after_id=after_id)
    horizon = time.time() - ctx.settings.training_wait_seconds - DEAD_RUN_SLACK_SECONDS
    run_requests = []
    for r in survey.requests:
        key = partition_key(r.character_id, r.base_model)
        if _partition_run_in_progress(context.instance, key, horizon):
            continue
        run_key = _completion_run_key(context.instance, r.run_key, horizon)
        if run_key is None:
            context.log.warning(f"{r.run_key}: {MAX_COMPLETION_RUNS} runs failed to finish it; not requesting more")
            continue
        run_requests.append(dg.RunRequest(
            run_key=run_key, partition_key=key, tags={COMPLETES_TAG: r.run_key},
            asset_selection=[dg.AssetKey("lora_artifact")],
            run_config={"ops": {"lora_artifact": {"config": {"lora_model_id": r.lora_model_id}}}},
        ))
    observations, progress = [], {}
    for call in survey.in_flight:
        seen = f"{call.state}:{call.progress:.0f}" if call.progress is not None else call.state
        progress[str(call.lora_model_id)] = seen
        if shown.get(str(call.lora_model_id)) != seen:
            observations.append(dg.AssetObservation(
                asset_key="trained_lora", partition=partition_key(call.character_id, call.base_model),
                metadata={"lora_model_id": call.lora_model_id, "gpu_call_id": call.call_id, "state": call.state,
                          "progress_percent": dg.MetadataValue.float(call.progress or 0.0)},
            ))
    if after_id:  # a later page: keep what earlier pages showed
        progress = {**shown, **progress}
    return dg.SensorResult(run_requests=run_requests, asset_events=observations,
                           cursor=json.dumps({"after": survey.next_after, "shown": progress}))


def _load_cursor(raw: str | None) -> tuple[int, dict[str, str]]:
    """(row id to continue after, the progress last shown per row); an older cursor is a bare row id."""
    if not raw:
        return 0, {}
    if raw.lstrip().startswith("{"):
        data = json.loads(raw)
        return int(data.get("after") or 0), dict(data.get("shown") or {})
    return int(raw), {}


def _started(record: dg.RunRecord) -> float:
    return record.start_time or record.create_timestamp.timestamp()


def _partition_run_in_progress(instance: dg.DagsterInstance, key: dg.MultiPartitionKey, horizon: float) -> bool:
    """A live run of this partition will finish the call itself. A run started before `horizon` (longer ago than
    a training run can poll, plus slack) is dead even if nothing marked it so (no run monitoring): don't wait for it."""
    tags = {f"dagster/partition/{dim}": value for dim, value in key.keys_by_dimension.items()}
    records = instance.get_run_records(
        dg.RunsFilter(job_name=training_job.name, tags=tags, statuses=IN_PROGRESS),
        limit=5,
    )
    return any(_started(r) > horizon for r in records)


def _completion_run_key(instance: dg.DagsterInstance, base_key: str, horizon: float) -> str | None:
    """The run key for finishing this call: the plain key first, then one more per earlier finishing run that
    failed or died (Dagster never reruns a key, and the row would stay `training` forever); None past the cap."""
    records = instance.get_run_records(dg.RunsFilter(tags={COMPLETES_TAG: base_key}), limit=MAX_COMPLETION_RUNS + 1)
    ended = sum(r.dagster_run.status in ENDED_WITHOUT_SUCCESS
                or (r.dagster_run.status in IN_PROGRESS and _started(r) <= horizon) for r in records)
    if ended >= MAX_COMPLETION_RUNS:
        return None
    return base_key if ended == 0 else f"{base_key}:rerun{ended}"
