"""Finishing a training whose GPU call was submitted earlier, by whichever run gets there: poll the call (for at most
a short wait), and once it has ended choose the best checkpoint (services/checkpoints.py), publish and verify it,
mark the row failed, or resubmit a lost call.

Submitting (`services.training.start_training`) and finishing are separate so that no run, and no GPU pool slot,
is held for the length of a training: the `training_completion` sensor requests the finishing run when the call
ends. Everything needed to finish is on the lora_models row, so the finishing run needs no dataset step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from lora_pipelines.domain.keys import dataset_prefix
from lora_pipelines.gpu.schemas import TrainingPoll
from lora_pipelines.services import training as svc
from lora_pipelines.services.checkpoints import CheckpointChoice, choose_checkpoint
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.lora_models import LoraModelsRepository

FinishState = Literal["published", "verified", "failed", "running"]


class TrainingNotSubmitted(RuntimeError):
    """The row has no GPU call to finish."""


@dataclass
class TrainingFinish:
    state: FinishState  # published: ready now; verified: was ready, file re-checked; running: not ended yet
    row: object  # the lora_models row as it is now
    checks: svc.ArtifactChecks | None = None
    choice: CheckpointChoice | None = None  # the checkpoint published and every checkpoint's score (published only)


def resubmission_descriptor(ctx: PipelineContext, row) -> svc.DatasetDescriptor:
    """What a lost call is resubmitted with, from the row: its dataset zip is where training_dataset put it."""
    prefix = dataset_prefix(row.base_model, str(row.character_id), row.dataset_hash)
    zip_key = f"{prefix}/dataset.zip"
    return svc.DatasetDescriptor(
        character_id=row.character_id, base_model=row.base_model, trigger_word=row.trigger_word,
        dataset_hash=row.dataset_hash, prefix=prefix, zip_key=zip_key, zip_sha256=ctx.store.sha256(zip_key),
        usable=0, min_photos=0,
    )


class _LazyDescriptor:
    """Built only if the call turns out lost (reading the zip's checksum costs a store request)."""

    def __init__(self, ctx: PipelineContext, row) -> None:
        self._ctx, self._row, self._built = ctx, row, None

    def __getattr__(self, name: str):
        if self._built is None:
            self._built = resubmission_descriptor(self._ctx, self._row)
        return getattr(self._built, name)


def finish_training(ctx: PipelineContext, row_id: int, *, wait_s: float, poll_interval_s: float = 1.0,
                    on_progress: Callable[[TrainingPoll], None] | None = None) -> TrainingFinish:
    """Finish the row's training if its call has ended (waiting up to `wait_s` for that), else say it runs on."""
    repo = LoraModelsRepository(ctx.db)
    row = repo.get(row_id)
    if row is None:
        raise LookupError(f"lora_models {row_id} does not exist")
    if row.status == "ready":
        return TrainingFinish("verified", row, svc.verify_ready_artifact(ctx, row))
    if row.status == "failed":
        return TrainingFinish("failed", row)
    if not row.gpu_call_id:
        raise TrainingNotSubmitted(f"lora_models {row.id} is {row.status} without a GPU call; materialize "
                                   f"trained_lora for its partition first")
    try:
        result = svc.wait_for_training(ctx, row.id, _LazyDescriptor(ctx, row), timeout_s=wait_s,
                                       poll_interval_s=poll_interval_s, on_progress=on_progress)
    except svc.TrainingStillRunning:
        return TrainingFinish("running", repo.get(row.id))
    if result is None:
        row = repo.get(row.id)
        if row.status == "ready":  # another run finished it meanwhile: check the file it published
            return TrainingFinish("verified", row, svc.verify_ready_artifact(ctx, row))
        return TrainingFinish("failed", row)
    choice = choose_checkpoint(ctx, row.id, result)  # the best checkpoint by held-out likeness, not the last
    checks = svc.publish_artifact(ctx, row.id, choice.result)
    return TrainingFinish("published" if checks.passed else "failed", repo.get(row.id), checks, choice)
