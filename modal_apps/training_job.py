"""One training call from spec to TrainingResult, with the trainer and the uploader behind seams."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from lora_pipelines.gpu.schemas import TrainingResult, TrainingSpec
from modal_apps import artifacts, trainer_config
from modal_apps.dataset import prepare_dataset
from modal_apps.transfer import sha256_file

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]
"""(state, percent 0-100); state is one of TrainingPoll's states ("running", "succeeded", "failed")."""

# Share of the overall progress each phase ends at.
_DATASET_DONE, _TRAINING_DONE = 5.0, 95.0


class TrainerRunner(Protocol):
    """Runs one trainer job; returns the .safetensors it wrote. `on_step(step, total)` reports training progress."""

    def run(self, config: dict[str, Any], *, work_dir: Path, on_step: Callable[[int, int], None]) -> Path: ...


def _result_marker(volume_path: Path) -> Path:
    return volume_path.with_name(volume_path.name + ".result.json")


def _previous_result(spec: TrainingSpec, volume_root: Path) -> dict[str, Any] | None:
    """A finished run of the same idempotency key (a Modal retry after the artifact was written)."""
    volume_path = volume_root / spec.output_key
    marker = _result_marker(volume_path)
    if not (marker.is_file() and volume_path.is_file()):
        return None
    saved = json.loads(marker.read_text())
    if saved.get("idempotency_key") != spec.idempotency_key:
        return None
    result = saved["result"]
    if sha256_file(volume_path) != result["sha256"]:
        return None
    return result


def run_training(
    spec_input: TrainingSpec | dict[str, Any],
    *,
    work_dir: Path,
    volume_root: Path,
    trainer: TrainerRunner,
    uploader_factory: Callable[[], artifacts.Uploader],
    on_progress: ProgressCallback = lambda state, percent: None,
) -> dict[str, Any]:
    """Train, finalize, keep on the volume, upload; returns TrainingResult as a JSON-ready dict."""
    spec = TrainingSpec.model_validate(spec_input)
    artifacts_key = spec.output_key
    previous = _previous_result(spec, volume_root)
    if previous is not None:
        on_progress("succeeded", 100.0)
        return previous

    on_progress("running", 0.0)
    job_dir = work_dir / trainer_config.job_name(spec)
    if job_dir.exists():
        shutil.rmtree(job_dir)
    dataset = prepare_dataset(spec.dataset_url, spec.dataset_sha256, job_dir / "dataset",
                              trigger_word=spec.trigger_word)
    log.info("dataset ready: %d images (%d captions set to the trigger word)", dataset.images, dataset.captions_written)
    on_progress("running", _DATASET_DONE)

    config = trainer_config.build_trainer_config(spec, dataset_dir=dataset.folder, output_dir=job_dir / "output")

    def on_step(step: int, total: int) -> None:
        on_progress("running", _DATASET_DONE + (_TRAINING_DONE - _DATASET_DONE) * min(step, total) / total)

    trained = trainer.run(config, work_dir=job_dir, on_step=on_step)
    on_progress("running", _TRAINING_DONE)

    final = artifacts.finalize_lora(trained, base_model=spec.base_model, trigger_word=spec.trigger_word,
                                    rank=spec.rank, steps=spec.steps)
    try:
        uploader: artifacts.Uploader | None = uploader_factory()
        setup_error = None
    except Exception as exc:  # noqa: BLE001 - a missing secret must not lose a trained LoRA
        uploader, setup_error = None, f"object store not configured ({exc.__class__.__name__}: {exc})"
    published = artifacts.publish(final, output_key=artifacts_key, volume_root=volume_root, uploader=uploader)
    result = TrainingResult(
        base_model=spec.base_model,
        trigger_word=spec.trigger_word,
        sha256=final.sha256,
        size_bytes=final.size_bytes,
        object_key=published.object_key,
        volume_path=str(published.volume_path),
        upload_error=setup_error or published.upload_error,
        backend="modal",
    ).model_dump(mode="json")
    if result["object_key"] is not None:
        # Only a fully published artifact is reused by a retry; a failed upload is tried again.
        _result_marker(published.volume_path).write_text(
            json.dumps({"idempotency_key": spec.idempotency_key, "result": result})
        )
    on_progress("succeeded", 100.0)
    return result
