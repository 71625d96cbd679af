"""Choosing the checkpoint to publish, as a use case on the simulated service: a checkpoint the GPU side lost is
left out (and says why), a base model no surface generates with is published unscored, a re-run reuses the recorded
choice, and another scorer plugs in through `scorer_factory`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_pipelines.faces.likeness_scoring import SampleScores
from lora_pipelines.services import training as svc
from lora_pipelines.services.characters import add_character
from lora_pipelines.services.checkpoints import choose_checkpoint
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.lora_models import LoraModelsRepository


@pytest.fixture()
def trained(faces_dir, tmp_path, monkeypatch):
    """Train one character through the use cases (no Dagster) on an in-process simulated service."""
    from sim_gpu.server import SimGpuServer

    sim = SimGpuServer(tmp_path / "sim", allowed_roots=[tmp_path], training_seconds=0.2)
    sim.start()
    monkeypatch.setenv("LORA_PIPELINES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORA_PIPELINES_SIM_GPU_URL", sim.url)
    monkeypatch.setenv("LORA_PIPELINES_MIN_PHOTOS", "4")
    monkeypatch.setenv("LORA_PIPELINES_TRAINING_STEPS", "600")
    ctx = PipelineContext.from_settings()
    ctx.db.upgrade()
    character, _ = add_character(ctx, "Matt", sorted((faces_dir / "matt_damon").iterdir()), lora_enabled=True)

    def train(base_model: str):
        descriptor = svc.prepare_dataset(ctx, character.id, base_model)
        row = svc.start_training(ctx, descriptor)
        return row, svc.wait_for_training(ctx, row.id, descriptor, timeout_s=60, poll_interval_s=0.1)

    yield ctx, train, tmp_path / "sim"
    ctx.close()
    sim.stop()


def test_a_lost_checkpoint_is_left_out_and_a_rerun_reuses_the_choice(trained):
    ctx, train, sim_home = trained
    row, result = train("flux")
    assert [c.step for c in result.checkpoints] == [150, 300, 450, 600]
    (sim_home / "trained" / f"{row.gpu_call_id}.step000450.safetensors").unlink()

    choice = choose_checkpoint(ctx, row.id, result)

    lost = next(c for c in choice.checkpoints if c.step == 450)
    assert lost.likeness is None and lost.error.startswith("not fetched:")
    scored = {c.step: c.likeness for c in choice.checkpoints if c.step != 450}
    assert scored[150] < scored[300] < scored[600] and choice.chosen_step == 600
    assert choice.result.sha256 == result.checkpoints[-1].sha256
    record = LoraModelsRepository(ctx.db).get(row.id).validation
    assert record["chosen_step"] == 600 and len(record["checkpoints"]) == 4

    again = choose_checkpoint(ctx, row.id, result, scorer_factory=lambda *_: pytest.fail("scored twice"))
    assert again.reused and again.chosen_step == 600 and again.result.sha256 == choice.result.sha256


def test_a_base_model_without_a_lora_surface_publishes_the_final_checkpoint_unscored(trained):
    ctx, train, _ = trained
    row, result = train("one-2.1")
    assert result.checkpoints == []  # not asked for: nothing could compare them

    choice = choose_checkpoint(ctx, row.id, result)

    assert choice.validation_score is None and choice.chosen_step == 600
    assert choice.reason == "no generation surface applies one-2.1 LoRAs: the final checkpoint, unscored"
    assert LoraModelsRepository(ctx.db).get(row.id).validation_score is None


class EarliestWins:
    """Another scorer: it only has to turn a checkpoint's samples into a number (here, rewarding earlier ones)."""

    name, reference = "earliest", "none"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, images):
        self.calls += 1
        assert all(isinstance(image, bytes) and image.startswith(b"\x89PNG") for image in images)
        return SampleScores(1.0 / self.calls, [1.0 / self.calls] * len(images), len(images), 0)


def test_the_scorer_is_pluggable(trained):
    ctx, train, _ = trained
    row, result = train("z-image-turbo")  # ComfyUI route: samples go through the pod cache
    scorer = EarliestWins()

    choice = choose_checkpoint(ctx, row.id, result, scorer_factory=lambda _ctx, _character: scorer)

    assert scorer.calls == 4 and choice.chosen_step == 150 and choice.scorer == "earliest"
    assert Path(ctx.gpu.loras_root, f"{row.id}.step000150.safetensors").exists()  # sampled on the pod
