"""The Modal training app keeps ai-toolkit's checkpoints and returns them; retention removes a LoRA's volume copies
through the app's remove_lora function. No GPU and no Modal account: ai-toolkit is a stand-in writing where it would."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lora_pipelines.domain.checkpoints import checkpoint_steps
from lora_pipelines.domain.lora_format import lora_tensor_shapes
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.gpu.modal_backend import ModalTrainingBackend
from lora_pipelines.gpu.schemas import TrainingResult, TrainingSpec
from modal_apps import artifacts, trainer_config
from modal_apps.training_job import run_training

KEY = "loras/flux-character-7/41.safetensors"


def _spec(**overrides) -> dict:
    spec = {"character_id": "7", "lora_model_id": "41", "base_model": "flux", "dataset_url": "", "dataset_sha256": "",
            "trigger_word": "ohwx_anna", "output_key": KEY, "steps": 1000, "rank": 4, "idempotency_key": "train-7-41",
            "checkpoints": 4}
    spec.update(overrides)
    return spec


def _lora(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tensors = {name: rng.standard_normal(shape).astype(np.float16)
               for name, shape in lora_tensor_shapes("flux", 4, scale_down=64).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"software": "ai-toolkit", "format": "pt"})


class StepSavingTrainer:
    """ai-toolkit as the config asks: `{name}_{step:09d}.safetensors` at every multiple of save_every below the
    last step, `{name}.safetensors` at the end."""

    def run(self, config, *, work_dir, on_step):
        process = config["config"]["process"][0]
        name, steps, every = config["config"]["name"], process["train"]["steps"], process["save"]["save_every"]
        folder = Path(process["training_folder"]) / name
        for step in range(every, steps, every):
            _lora(folder / f"{name}_{step:09d}.safetensors", seed=step)
        _lora(folder / f"{name}.safetensors", seed=steps)
        on_step(steps, steps)


@pytest.fixture()
def dataset(faces_dir, tmp_path) -> dict:
    photo = sorted((faces_dir / "barack_obama").iterdir())[0]
    path = tmp_path / "ds.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(photo, f"images/00{photo.suffix.lower()}")
        archive.writestr("manifest.json", json.dumps({"images": 1}))
    return {"dataset_url": str(path), "dataset_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_the_trainer_config_asks_for_evenly_spaced_saves():
    spec = TrainingSpec.model_validate(_spec(dataset_url="x", dataset_sha256="0" * 64))
    save = trainer_config.build_trainer_config(spec, dataset_dir=Path("/d"), output_dir=Path("/o"))["config"][
        "process"][0]["save"]
    assert (save["save_every"], save["max_step_saves_to_keep"]) == (250, 4)
    assert checkpoint_steps(1000, 4) == [250, 500, 750, 1000] and checkpoint_steps(10, 4) == [3, 6, 9, 10]
    wan = TrainingSpec.model_validate(_spec(dataset_url="x", dataset_sha256="0" * 64, base_model="one-2.2",
                                            output_key="loras/one-2.2-character-7/41.safetensors"))
    save = trainer_config.build_trainer_config(wan, dataset_dir=Path("/d"), output_dir=Path("/o"))["config"][
        "process"][0]["save"]
    assert save["save_every"] == 1000  # a two-expert LoRA keeps its final pair only


def test_every_checkpoint_is_finalized_kept_on_the_volume_and_returned(dataset, tmp_path):
    volume = tmp_path / "vol"
    result = TrainingResult.model_validate(run_training(
        _spec(**dataset), work_dir=tmp_path / "work", volume_root=volume, trainer=StepSavingTrainer(),
        uploader_factory=lambda: None))

    assert [c.step for c in result.checkpoints] == [250, 500, 750, 1000]
    final = result.checkpoints[-1]
    assert (final.sha256, final.volume_path) == (result.sha256, result.volume_path)
    for checkpoint in result.checkpoints[:-1]:
        path = Path(checkpoint.volume_path)
        assert path == volume / f"loras/flux-character-7/41.step{checkpoint.step:06d}.safetensors"
        inspection = inspect_lora_file(path)
        assert inspection.sha256 == checkpoint.sha256 and inspection.metadata["ss_steps"] == str(checkpoint.step)
        assert inspection.base_model == "flux" and inspection.trigger_word == "ohwx_anna"
    assert len({c.sha256 for c in result.checkpoints}) == 4

    single = TrainingResult.model_validate(run_training(
        _spec(**dataset, checkpoints=1, idempotency_key="train-7-41-b"), work_dir=tmp_path / "work2",
        volume_root=tmp_path / "vol2", trainer=StepSavingTrainer(), uploader_factory=lambda: None))
    assert single.checkpoints == []


def test_remove_lora_deletes_volume_copies_and_refuses_other_paths(dataset, tmp_path):
    volume = tmp_path / "vol"
    result = TrainingResult.model_validate(run_training(
        _spec(**dataset), work_dir=tmp_path / "work", volume_root=volume, trainer=StepSavingTrainer(),
        uploader_factory=lambda: None))
    keys = [KEY, *(f"loras/flux-character-7/41.step{s:06d}.safetensors" for s in (250, 500, 750))]
    assert all((volume / k).is_file() for k in keys) and (volume / f"{KEY}.result.json").is_file() is False

    calls = []

    class VolumeCaller:
        """remove_lora's body on this test's volume folder (what `Function.from_name(...).remote(**payload)` runs)."""

        def call(self, app, function, payload):
            calls.append((app, function))
            return artifacts.remove_volume_loras(volume, **payload)

    backend = ModalTrainingBackend(VolumeCaller(), app="lora-training", function="train_lora")
    assert backend.remove_trained_files("fc-1", keys[1:3]) == keys[1:3]
    assert not (volume / keys[1]).exists() and (volume / keys[0]).exists()
    assert backend.remove_trained_files("fc-1", keys) == [keys[0], keys[3]]  # gone ones are not errors
    assert calls == [("lora-training", "remove_lora")] * 2 and result.sha256

    for bad in (["../etc/passwd.safetensors"], ["datasets/x/y.safetensors"], ["loras/a/b.json"], []):
        with pytest.raises(ValueError):
            artifacts.remove_volume_loras(volume, bad)


def test_the_remove_lora_function_commits_the_volume(tmp_path, monkeypatch):
    from modal._utils.async_utils import synchronizer

    from modal_apps import training

    class Volume:
        reloads = commits = 0

        def reload(self):
            self.reloads += 1

        def commit(self):
            self.commits += 1

    volume = Volume()
    _lora(tmp_path / KEY, seed=1)
    monkeypatch.setattr(training, "LORA_ROOT", str(tmp_path))
    monkeypatch.setattr(training, "lora_volume", volume)
    function = synchronizer._translate_in(training.remove_lora)
    assert function._raw_f([KEY]) == [KEY] and not (tmp_path / KEY).exists()
    assert (volume.reloads, volume.commits) == (1, 1)
    assert set(function._spec.volumes) == {"/loras"} and function._spec.cpu == 0.25
