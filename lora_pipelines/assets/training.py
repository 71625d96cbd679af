"""Training lineage per character × base model: training_dataset → trained_lora → lora_artifact.

trained_lora submits the training and ends; lora_artifact is materialized by whichever run finds the call ended:
the training run itself when the training is shorter than LORA_PIPELINES_TRAINING_WAIT_SECONDS, otherwise the run
the training_completion sensor requests for lora_artifact alone."""

import dagster as dg

from lora_pipelines.assets.metadata import character_label, image_md, inline_images, string_table
from lora_pipelines.partitions import character_model_partitions, split_partition_key
from lora_pipelines.resources import PipelineResource
from lora_pipelines.services import training as svc
from lora_pipelines.services.checkpoints import discard_checkpoints
from lora_pipelines.services.previews import dataset_crops, dataset_preview
from lora_pipelines.services.training_completion import TrainingNotSubmitted, finish_training
from lora_pipelines.services.training_state import record_dataset, record_preparing, record_run_failure
from lora_pipelines.store.lora_models import LoraModelsRepository

GPU_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@dg.asset(
    partitions_def=character_model_partitions,
    group_name="training",
    kinds={"python", "s3"},
    check_specs=[
        dg.AssetCheckSpec("enough_photos", asset="training_dataset", blocking=True,
                          description="At least LORA_PIPELINES_MIN_PHOTOS usable photos with exactly one face."),
        dg.AssetCheckSpec("single_identity", asset="training_dataset", blocking=True,
                          description="Every face is within the match threshold of the medoid face."),
        dg.AssetCheckSpec("no_duplicates", asset="training_dataset",
                          description="No near-duplicate photos were submitted (they are dropped either way)."),
    ],
)
def training_dataset(context: dg.AssetExecutionContext, pipeline: PipelineResource):
    """Faces found, cropped, captioned with the trigger word and de-duplicated; stored with a hashed manifest."""
    character_id, base_model = split_partition_key(context)
    ctx = pipeline.context
    run_id = context.run.run_id
    record_preparing(ctx, character_id, base_model, run_id)
    try:
        descriptor = svc.prepare_dataset(ctx, character_id, base_model)
    except Exception as exc:
        record_run_failure(ctx, character_id, base_model, run_id, f"run {run_id[:8]} failed in training_dataset: {exc}")
        raise
    record_dataset(ctx, descriptor, run_id)
    yield dg.Output(
        descriptor.to_dict(),
        metadata={
            **character_label(ctx, character_id),
            "dataset_hash": descriptor.dataset_hash,
            "usable_photos": descriptor.usable,
            "dropped_photos": len(descriptor.dropped),
            "dropped": string_table(descriptor.dropped, ["name", "reason", "detail"]),
            "preview": image_md(dataset_preview(ctx, descriptor.zip_key), "training crops"),
            "prefix": descriptor.prefix,
            "trigger_word": descriptor.trigger_word,
            **inline_images([(f"crop {name}", png) for name, png in dataset_crops(ctx, descriptor.zip_key)]),
        },
    )
    yield dg.AssetCheckResult(
        check_name="enough_photos", passed=descriptor.usable >= descriptor.min_photos,
        metadata={"usable": descriptor.usable, "minimum": descriptor.min_photos},
    )
    yield dg.AssetCheckResult(
        check_name="single_identity", passed=not descriptor.outliers,
        metadata={"outliers": dg.MetadataValue.json(descriptor.outliers)},
    )
    yield dg.AssetCheckResult(
        check_name="no_duplicates", passed=not descriptor.duplicates, severity=dg.AssetCheckSeverity.WARN,
        metadata={"duplicates_dropped": dg.MetadataValue.json(descriptor.duplicates)},
    )


class LoraArtifactConfig(dg.Config):
    lora_model_id: int | None = None
    """The lora_models row to finish (the training_completion sensor names it); empty means the row that this
    partition's latest trained_lora materialization submitted."""


@dg.asset(
    partitions_def=character_model_partitions,
    group_name="training",
    kinds={"python", "modal"},
    pool="gpu_training",
    retry_policy=GPU_RETRY,
)
def trained_lora(
    context: dg.AssetExecutionContext, training_dataset: dict, pipeline: PipelineResource
) -> dg.Output[dict]:
    """The LoRA training submitted to the GPU backend, once per dataset; the call id is kept on the lora_models row.

    Submitting takes seconds and ends the step: the training runs on the GPU side, the training_completion sensor
    shows its progress here (observations) and requests lora_artifact when it ends."""
    ctx = pipeline.context
    descriptor = svc.DatasetDescriptor(**training_dataset)
    problems = svc.dataset_is_trainable(descriptor)
    if problems:
        raise dg.Failure(description="dataset not trainable: " + "; ".join(problems), allow_retries=False)
    row = svc.start_training(ctx, descriptor)
    context.log.info(f"lora_models {row.id}: {row.status}, GPU call {row.gpu_call_id} on {row.backend}")
    return dg.Output(
        {"lora_model_id": row.id, "gpu_call_id": row.gpu_call_id, "status": row.status,
         "already_ready": row.status == "ready"},
        metadata={"lora_model_id": row.id, "gpu_call_id": row.gpu_call_id or "", "status": row.status,
                  "backend": row.backend or "", "attempt": row.attempt},
    )


def _submitted_row_id(context: dg.AssetExecutionContext) -> int | None:
    """The row the latest trained_lora materialization of this partition submitted."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=trained_lora.key, asset_partitions=[context.partition_key]), limit=1,
    ).records
    if not records:
        return None
    value = records[0].asset_materialization.metadata.get("lora_model_id")
    return int(value.value) if value is not None else None


def checkpoint_metadata(choice) -> dict:
    """Every checkpoint's likeness as a table and a small plot; the chosen step and its score."""
    from lora_pipelines.reporting.checkpoint_plot import plot_checkpoint_likeness
    from lora_pipelines.reporting.plots import png_data_uri

    rows = [{"step": c.step, "likeness": None if c.likeness is None else f"{c.likeness:.3f}",
             "faces": c.scores.faces if c.scores else None, "near_copies": c.scores.near_copies if c.scores else None,
             "published": "yes" if c.step == choice.chosen_step else "", "error": c.error} for c in choice.checkpoints]
    plot = plot_checkpoint_likeness([(c.step, c.likeness, c.scores.near_copies if c.scores else 0)
                                     for c in choice.checkpoints], choice.chosen_step, choice.reference)
    score = choice.validation_score
    return {
        "chosen_step": choice.chosen_step,
        "validation_score": dg.MetadataValue.null() if score is None else dg.MetadataValue.float(score),
        "checkpoint_choice": choice.reason,
        "likeness_reference": choice.reference or "",
        "checkpoint_scores": string_table(rows, ["step", "likeness", "faces", "near_copies", "published", "error"]),
        "checkpoint_plot": dg.MetadataValue.md(f"![checkpoint likeness]({png_data_uri(plot)})"),
    }


@dg.multi_asset(
    specs=[dg.AssetSpec("lora_artifact", deps=[trained_lora], partitions_def=character_model_partitions,
                        group_name="training", kinds={"python", "s3"},
                        description="The verified .safetensors at loras/{model}-character-{id}/{jobId}.safetensors; "
                                    "only this makes a LoRA ready. Materialized once the training call has ended.")],
    check_specs=[
        dg.AssetCheckSpec("header_valid", asset="lora_artifact", blocking=True,
                          description="The .safetensors header parses and its tensors fit the file."),
        dg.AssetCheckSpec("base_model_matches", asset="lora_artifact", blocking=True,
                          description="The base model read from the file equals the row's baseModel."),
        dg.AssetCheckSpec("checksum_matches", asset="lora_artifact", blocking=True,
                          description="The stored object's sha256 equals the recorded sha256."),
        dg.AssetCheckSpec("identity_matches", asset="lora_artifact", blocking=True,
                          description="The file's own character id, trigger word and dataset hash "
                                      "(lora_pipelines.* metadata) are the row's."),
        dg.AssetCheckSpec("not_worse_than_active", asset="lora_artifact",
                          description="The quality gate: a new LoRA replaces the one in use only if its likeness is "
                                      "at least the active one's minus the tolerance; both scores shown."),
    ],
    can_subset=True,  # its outputs are optional: nothing is materialized while the training still runs
)
def lora_artifact(context: dg.AssetExecutionContext, config: LoraArtifactConfig, pipeline: PipelineResource):
    """Finish the partition's training once its GPU call has ended: fetch, verify and publish the file (Wan 2.2 14B:
    the {jobId}.high_noise + .low_noise pair beside it)."""
    ctx = pipeline.context
    character_id, base_model = split_partition_key(context)
    row_id = config.lora_model_id or _submitted_row_id(context)
    if row_id is None:
        raise dg.Failure(description="trained_lora has not submitted a training for this partition",
                         allow_retries=False)
    row = LoraModelsRepository(ctx.db).get(row_id)
    if row is None or (row.character_id, row.base_model) != (character_id, base_model):
        raise dg.Failure(description=f"lora_models {row_id} is not a LoRA of this partition", allow_retries=False)
    last = {"progress": None}

    def report(poll):
        if poll.progress is not None and poll.progress != last["progress"]:
            last["progress"] = poll.progress
            context.log.info(f"training {poll.call_id}: {poll.state} {poll.progress:.0f}%")

    try:
        finish = finish_training(ctx, row_id, wait_s=ctx.settings.training_wait_seconds, on_progress=report)
    except TrainingNotSubmitted as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    row = finish.row
    if finish.state == "running":
        context.log.info(f"lora_models {row.id}: GPU call {row.gpu_call_id} still running; the "
                         "training_completion sensor requests this asset again when it ends")
        return
    if finish.checks is None:  # the row is final: retrying would only re-read the same failure
        raise dg.Failure(description=f"lora_models {row.id} failed: {row.error}",
                         metadata={"lora_model_id": row.id, "error": row.error or ""}, allow_retries=False)
    checks = finish.checks
    choice = finish.choice
    scores = checkpoint_metadata(choice) if choice is not None else {}
    if choice is not None:
        context.log.info(f"lora_models {row.id}: published the checkpoint of step {choice.chosen_step} "
                         f"({choice.reason})")
        # the scores belong to the training: shown on trained_lora too, whose run ended at submission
        context.log_event(dg.AssetObservation(asset_key="trained_lora", partition=context.partition_key,
                                              metadata={"lora_model_id": row.id, **scores}))
    if row.status == "ready":
        discard_checkpoints(ctx, row_id)  # the published one is at the LoRA's key now
    # a two-expert LoRA (Wan 2.2 14B): model_path is the high_noise file, these the low_noise one
    second = checks.detail.get("second_expert") or {}
    second_file = {"second_expert_path": row.second_expert_path or "",
                   "second_expert_sha256": row.second_expert_sha256 or ""} if second else {}
    yield dg.MaterializeResult(
        asset_key="lora_artifact",
        metadata={**character_label(ctx, row.character_id),
                  "lora_model_id": row.id, "status": row.status, "model_path": row.model_path or "",
                  "model_url": dg.MetadataValue.url(row.model_url) if row.model_url else "",
                  "sha256": row.sha256 or "", "size_bytes": row.size_bytes or 0,
                  "detected_base_model": str(checks.detail.get("detected_base_model")),
                  "gpu_call_id": row.gpu_call_id or "", "verified_only": finish.state == "verified", **second_file,
                  **scores},
    )
    detail = dg.MetadataValue.json({k: v for k, v in checks.detail.items() if v is not None})
    yield dg.AssetCheckResult(asset_key="lora_artifact", check_name="header_valid", passed=checks.header_valid,
                              metadata={"detail": detail})
    yield dg.AssetCheckResult(asset_key="lora_artifact", check_name="base_model_matches",
                              passed=checks.base_model_matches,
                              metadata={"expected": row.base_model,
                                        "detected": str(checks.detail.get("detected_base_model"))})
    second_sums = {"second_expert_recorded": row.second_expert_sha256 or "",
                   "second_expert_stored": str(second.get("stored_sha256"))} if second else {}
    yield dg.AssetCheckResult(asset_key="lora_artifact", check_name="checksum_matches",
                              passed=checks.checksum_matches,
                              metadata={"recorded": row.sha256 or "",
                                        "stored": str(checks.detail.get("stored_sha256")), **second_sums})
    yield dg.AssetCheckResult(
        asset_key="lora_artifact", check_name="identity_matches", passed=checks.identity_matches,
        description="; ".join(checks.detail.get("identity_problems", [])) or checks.detail.get("identity"),
        metadata={"row": dg.MetadataValue.json({"character_id": row.character_id, "trigger_word": row.trigger_word,
                                                "dataset_hash": row.dataset_hash}),
                  "file": dg.MetadataValue.json({k: checks.detail.get(f"file_{k}")
                                                 for k in ("character_id", "trigger_word", "dataset_hash")}),
                  "identity": str(checks.detail.get("identity"))})
    yield quality_gate_result(ctx, row)


def quality_gate_result(ctx, row) -> dg.AssetCheckResult:
    """The quality gate's decision on a ready LoRA (made once, on the row), as the not_worse_than_active check."""
    from lora_pipelines.services.lora_versions import apply_quality_gate

    if row.status != "ready":
        return dg.AssetCheckResult(asset_key="lora_artifact", check_name="not_worse_than_active", passed=False,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   description=f"LoRA {row.id} is {row.status}: no version to compare")
    decision, row = apply_quality_gate(ctx, row.id)

    def score(value):
        return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(value)

    return dg.AssetCheckResult(
        asset_key="lora_artifact", check_name="not_worse_than_active", passed=decision.activate,
        severity=dg.AssetCheckSeverity.WARN,
        description=("active: " if decision.activate else "kept ready, not active: ") + decision.reason,
        metadata={"lora_model_id": row.id, "validation_score": score(decision.new_score),
                  "active_lora_model_id": decision.active_id if decision.active_id is not None
                  else dg.MetadataValue.null(),
                  "active_validation_score": score(decision.active_score), "tolerance": decision.tolerance,
                  "activated": decision.activate})
