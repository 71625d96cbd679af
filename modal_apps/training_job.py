"""One training call from spec to TrainingResult, with the trainer and the uploader behind seams."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from lora_pipelines.domain.base_models import lora_experts
from lora_pipelines.domain.checkpoints import checkpoint_key
from lora_pipelines.domain.keys import expert_key
from lora_pipelines.gpu.schemas import CheckpointFile, ExpertFile, TrainingResult, TrainingSpec
from modal_apps import artifacts, trainer_config
from modal_apps.dataset import prepare_dataset
from modal_apps.transfer import sha256_file

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]
"""(state, percent 0-100); state is one of TrainingPoll's states ("running", "succeeded", "failed")."""

# Share of the overall progress each phase ends at.
_DATASET_DONE, _TRAINING_DONE = 5.0, 95.0


class TrainerRunner(Protocol):
    """Runs one trainer job, writing where ai-toolkit writes (`{training_folder}/{name}/`); the files are found
    there afterwards (trainer_config.find_trained_loras). `on_step(step, total)` reports training progress."""

    def run(self, config: dict[str, Any], *, work_dir: Path, on_step: Callable[[int, int], None]) -> object: ...


def artifact_key(spec: TrainingSpec, expert: str | None) -> str:
    """Where one file of the LoRA is published: `spec.output_key`, or `{jobId}.{expert}.safetensors` beside it."""
    return spec.output_key if expert is None else expert_key(spec.output_key, expert)


def _result_marker(volume_path: Path) -> Path:
    return volume_path.with_name(volume_path.name + ".result.json")


def _previous_result(spec: TrainingSpec, volume_root: Path) -> dict[str, Any] | None:
    """A finished run of the same idempotency key (a Modal retry after every file was published)."""
    experts = lora_experts(spec.base_model) or (None,)
    volume_path = volume_root / artifact_key(spec, experts[0])
    marker = _result_marker(volume_path)
    if not (marker.is_file() and volume_path.is_file()):
        return None
    saved = json.loads(marker.read_text())
    if saved.get("idempotency_key") != spec.idempotency_key:
        return None
    result = saved["result"]
    files = [(volume_path, result["sha256"])]
    if result.get("second_expert"):
        second = result["second_expert"]
        files.append((volume_root / artifact_key(spec, second["expert"]), second["sha256"]))
    if any(not path.is_file() or sha256_file(path) != digest for path, digest in files):
        return None
    return result


def _checkpoint(spec: TrainingSpec, step: int, path: Path, volume_root: Path,
                uploader: artifacts.Uploader | None) -> CheckpointFile:
    """One step save: header fixed up (its own step count), kept on the volume and uploaded at its checkpoint key."""
    final = artifacts.finalize_lora(path, base_model=spec.base_model, trigger_word=spec.trigger_word, rank=spec.rank,
                                    steps=step)
    published = artifacts.publish(final, output_key=checkpoint_key(spec.output_key, step), volume_root=volume_root,
                                  uploader=uploader)
    return CheckpointFile(step=step, sha256=final.sha256, size_bytes=final.size_bytes,
                          object_key=published.object_key, volume_path=str(published.volume_path),
                          upload_error=published.upload_error)


def run_training(
    spec_input: TrainingSpec | dict[str, Any],
    *,
    work_dir: Path,
    volume_root: Path,
    trainer: TrainerRunner,
    uploader_factory: Callable[[], artifacts.Uploader],
    on_progress: ProgressCallback = lambda state, percent: None,
) -> dict[str, Any]:
    """Train, finalize, keep on the volume, upload every file; returns TrainingResult as a JSON-ready dict.

    A Wan 2.2 14B LoRA is two files (high-noise and low-noise expert): both are finalized, checksummed, kept on
    the volume and uploaded; the high-noise one is the primary file of the result, the other `second_expert`.
    """
    spec = TrainingSpec.model_validate(spec_input)
    previous = _previous_result(spec, volume_root)
    if previous is not None:
        on_progress("succeeded", 100.0)
        return previous

    on_progress("running", 0.0)
    name = trainer_config.job_name(spec)
    job_dir = work_dir / name
    if job_dir.exists():
        shutil.rmtree(job_dir)
    dataset = prepare_dataset(spec.dataset_url, spec.dataset_sha256, job_dir / "dataset",
                              trigger_word=spec.trigger_word)
    log.info("dataset ready: %d images (%d captions set to the trigger word)", dataset.images, dataset.captions_written)
    on_progress("running", _DATASET_DONE)

    output_dir = job_dir / "output"
    config = trainer_config.build_trainer_config(spec, dataset_dir=dataset.folder, output_dir=output_dir)

    def on_step(step: int, total: int) -> None:
        on_progress("running", _DATASET_DONE + (_TRAINING_DONE - _DATASET_DONE) * min(step, total) / total)

    trainer.run(config, work_dir=job_dir, on_step=on_step)
    trained = trainer_config.find_trained_loras(output_dir, name, spec.base_model)
    step_saves = [] if lora_experts(spec.base_model) or spec.checkpoints == 1 else \
        trainer_config.find_step_saves(output_dir, name)
    on_progress("running", _TRAINING_DONE)

    finals = [(expert, artifacts.finalize_lora(path, base_model=spec.base_model, trigger_word=spec.trigger_word,
                                               rank=spec.rank, steps=spec.steps, expert=expert,
                                               character_id=spec.character_id, dataset_hash=spec.dataset_hash))
              for expert, path in trained]
    try:
        uploader: artifacts.Uploader | None = uploader_factory()
        setup_error = None
    except Exception as exc:  # noqa: BLE001 - a missing secret must not lose a trained LoRA
        uploader, setup_error = None, f"object store not configured ({exc.__class__.__name__}: {exc})"
    published = [(expert, final, artifacts.publish(final, output_key=artifact_key(spec, expert),
                                                   volume_root=volume_root, uploader=uploader))
                 for expert, final in finals]

    (expert, final, primary), *rest = published
    second = None
    if rest:
        (second_expert, second_final, second_published), = rest
        second = ExpertFile(expert=second_expert, sha256=second_final.sha256, size_bytes=second_final.size_bytes,
                            object_key=second_published.object_key, volume_path=str(second_published.volume_path),
                            upload_error=second_published.upload_error)
    checkpoints = [_checkpoint(spec, step, path, volume_root, uploader) for step, path in step_saves]
    if checkpoints:  # the final file is the last checkpoint
        checkpoints.append(CheckpointFile(step=spec.steps, sha256=final.sha256, size_bytes=final.size_bytes,
                                          object_key=primary.object_key, volume_path=str(primary.volume_path),
                                          upload_error=primary.upload_error))
    upload_error = setup_error or next((p.upload_error for _, _, p in published if p.upload_error), None)
    result = TrainingResult(
        base_model=spec.base_model,
        trigger_word=spec.trigger_word,
        sha256=final.sha256,
        size_bytes=final.size_bytes,
        object_key=primary.object_key,
        volume_path=str(primary.volume_path),
        upload_error=upload_error,
        backend="modal",
        expert=expert,
        second_expert=second,
        checkpoints=checkpoints,
    ).model_dump(mode="json")
    if all(p.object_key is not None for _, _, p in published):
        # Only a fully published artifact is reused by a retry; a failed upload is tried again.
        _result_marker(primary.volume_path).write_text(
            json.dumps({"idempotency_key": spec.idempotency_key, "result": result})
        )
    on_progress("succeeded", 100.0)
    return result
