"""Wan 2.2 14B LoRAs are two files (high-noise and low-noise expert): the Modal side finds, fixes up, checksums,
keeps and uploads both, the result names both, and generation loads one into each transformer."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from lora_files import sha256, write_lora
from lora_pipelines.domain.keys import InvalidIdError, expert_key, lora_expert_key, lora_key
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.gpu.schemas import ExpertFile, ExpertRef, GenerateRequest, LoraRef, TrainingResult
from modal_apps import generation_service, trainer_config
from modal_apps.diffusers_runner import DiffusersRunner
from modal_apps.generation_service import GenerationService, InputRejected
from modal_apps.lora_cache import CachedLora, LoraCache
from modal_apps.training_job import run_training

PAIR_DIR = "loras/one-2.2-character-char-9"


def spec(dataset: Path) -> dict:
    return {"character_id": "char-9", "lora_model_id": "lora-77", "base_model": "one-2.2",
            "dataset_url": str(dataset), "dataset_sha256": sha256(dataset), "trigger_word": "ohwx_wan",
            "output_key": f"{PAIR_DIR}/lora-77.safetensors", "steps": 20, "rank": 4,
            "idempotency_key": "train-char-9-one-2.2-1"}


def dataset_zip(faces_dir: Path, dest: Path) -> Path:
    photos = sorted((faces_dir / "barack_obama").glob("*.jp*g"))[:2]
    with zipfile.ZipFile(dest, "w") as archive:
        for i, photo in enumerate(photos):
            archive.write(photo, f"images/{i:02d}.jpg")
    return dest


class WanTrainer:
    """Test stand-in for ai-toolkit training Wan 2.2 14B with both experts: it saves what wan22_14b_model.py's
    save_lora does with split_multistage_loras (the default): `{name}_high_noise` and `{name}_low_noise`, plus an
    older step save of each, which must not be taken for the final files."""

    def __init__(self) -> None:
        self.runs = 0

    def run(self, config, *, work_dir, on_step):
        self.runs += 1
        assert config["config"]["process"][0]["model"]["model_kwargs"] == {"train_high_noise": True,
                                                                             "train_low_noise": True}
        name = config["config"]["name"]
        folder = Path(config["config"]["process"][0]["training_folder"]) / name
        for seed, expert in enumerate(("high_noise", "low_noise")):
            write_lora(folder / f"{name}_000000010_{expert}.safetensors", "one-2.2", seed=10 + seed)
            write_lora(folder / f"{name}_{expert}.safetensors", "one-2.2", seed=seed)
        on_step(20, 20)


class RecordingUploader:
    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.objects: dict[str, tuple[bytes, str]] = {}

    def upload(self, path: Path, key: str, *, sha256: str) -> None:
        if self.fail_on and self.fail_on in key:
            raise ConnectionError("simulated R2 outage")
        self.objects[key] = (path.read_bytes(), sha256)


# ---------------------------------------------------------------- keys and result schema

def test_pair_keys_sit_beside_the_single_file_key():
    single = lora_key("one-2.2", "char-9", "lora-77")
    assert single == f"{PAIR_DIR}/lora-77.safetensors"
    assert lora_expert_key("one-2.2", "char-9", "lora-77", "high_noise") == f"{PAIR_DIR}/lora-77.high_noise.safetensors"
    assert expert_key(single, "low_noise") == f"{PAIR_DIR}/lora-77.low_noise.safetensors"
    for bad in ("middle_noise", "../x"):
        with pytest.raises(InvalidIdError):
            expert_key(single, bad)
    with pytest.raises(InvalidIdError):
        expert_key("loras/../x.safetensors", "high_noise")


def test_a_result_names_both_files_of_a_pair_or_neither():
    base = {"base_model": "one-2.2", "trigger_word": "t", "sha256": "a" * 64, "size_bytes": 3, "backend": "modal"}
    second = ExpertFile(expert="low_noise", sha256="b" * 64, size_bytes=4)
    assert TrainingResult(**base, expert="high_noise", second_expert=second).second_expert.expert == "low_noise"
    assert TrainingResult(**base).second_expert is None
    with pytest.raises(ValidationError, match="come together"):
        TrainingResult(**base, expert="high_noise")
    with pytest.raises(ValidationError, match="come together"):
        TrainingResult(**base, second_expert=second)
    with pytest.raises(ValidationError, match="both files"):
        TrainingResult(**base, expert="low_noise", second_expert=second)


# ---------------------------------------------------------------- finding ai-toolkit's files

def test_both_experts_are_found_final_files_first(tmp_path):
    folder = tmp_path / "job"
    write_lora(folder / "job_000000250_high_noise.safetensors", "one-2.2")
    write_lora(folder / "job_000000500_high_noise.safetensors", "one-2.2")
    with pytest.raises(FileNotFoundError, match="low_noise expert"):
        trainer_config.find_trained_loras(tmp_path, "job", "one-2.2")
    write_lora(folder / "job_000000500_low_noise.safetensors", "one-2.2")

    found = trainer_config.find_trained_loras(tmp_path, "job", "one-2.2")
    assert [(e, p.name) for e, p in found] == [("high_noise", "job_000000500_high_noise.safetensors"),
                                               ("low_noise", "job_000000500_low_noise.safetensors")]
    write_lora(folder / "job_high_noise.safetensors", "one-2.2")
    write_lora(folder / "job_low_noise.safetensors", "one-2.2")
    assert [p.name for _, p in trainer_config.find_trained_loras(tmp_path, "job", "one-2.2")] == [
        "job_high_noise.safetensors", "job_low_noise.safetensors"]

    write_lora(tmp_path / "flux-job" / "flux-job.safetensors", "flux")
    assert [(e, p.name) for e, p in trainer_config.find_trained_loras(tmp_path, "flux-job", "flux")] == [
        (None, "flux-job.safetensors")]


# ---------------------------------------------------------------- publishing

def test_both_experts_are_finalized_kept_and_uploaded(faces_dir, tmp_path):
    dataset = dataset_zip(faces_dir, tmp_path / "ds.zip")
    uploader, trainer = RecordingUploader(), WanTrainer()

    result = TrainingResult.model_validate(run_training(spec(dataset), work_dir=tmp_path / "work",
                                                        volume_root=tmp_path / "vol", trainer=trainer,
                                                        uploader_factory=lambda: uploader))

    high, low = f"{PAIR_DIR}/lora-77.high_noise.safetensors", f"{PAIR_DIR}/lora-77.low_noise.safetensors"
    assert (result.expert, result.object_key, result.upload_error) == ("high_noise", high, None)
    assert (result.second_expert.expert, result.second_expert.object_key) == ("low_noise", low)
    assert set(uploader.objects) == {high, low}
    for key, digest, size in ((high, result.sha256, result.size_bytes),
                              (low, result.second_expert.sha256, result.second_expert.size_bytes)):
        body, declared = uploader.objects[key]
        assert hashlib.sha256(body).hexdigest() == digest == declared and len(body) == size
        assert sha256(tmp_path / "vol" / key) == digest
    assert result.sha256 != result.second_expert.sha256, "two experts, two different files"
    for key, expert in ((high, "high_noise"), (low, "low_noise")):
        inspection = inspect_lora_file(tmp_path / "vol" / key)
        assert (inspection.base_model, inspection.trigger_word) == ("one-2.2", "ohwx_wan")
        assert inspection.metadata["lora_pipelines.expert"] == expert
    assert not (tmp_path / "vol" / f"{PAIR_DIR}/lora-77.safetensors").exists()

    again = run_training(spec(dataset), work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=trainer,
                         uploader_factory=lambda: uploader)
    assert TrainingResult.model_validate(again) == result and trainer.runs == 1, "a retry reuses the published pair"

    (tmp_path / "vol" / low).write_bytes(b"damaged")
    run_training(spec(dataset), work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=trainer,
                 uploader_factory=lambda: uploader)
    assert trainer.runs == 2, "a pair whose second file changed on the volume is not reused"


def test_a_failed_upload_of_one_expert_is_reported_and_not_reused(faces_dir, tmp_path):
    dataset = dataset_zip(faces_dir, tmp_path / "ds.zip")
    trainer = WanTrainer()
    result = TrainingResult.model_validate(run_training(
        spec(dataset), work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=trainer,
        uploader_factory=lambda: RecordingUploader(fail_on="low_noise")))

    assert result.object_key == f"{PAIR_DIR}/lora-77.high_noise.safetensors"
    assert result.second_expert.object_key is None and "ConnectionError" in result.second_expert.upload_error
    assert result.upload_error == result.second_expert.upload_error
    assert Path(result.second_expert.volume_path).is_file(), "the volume copy survives the failed upload"
    assert not list((tmp_path / "vol").rglob("*.result.json"))

    run_training(spec(dataset), work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=trainer,
                 uploader_factory=RecordingUploader)
    assert trainer.runs == 2


# ---------------------------------------------------------------- generation: one file into each transformer

class FakeWanPipeline:
    """Records what the runner asks of a diffusers pipeline; `transformer_2` is set only for a two-expert model."""

    def __init__(self, two_experts: bool) -> None:
        self.transformer = object()
        self.transformer_2 = object() if two_experts else None
        self.calls: list[tuple] = []

    def load_lora_weights(self, path, adapter_name=None, **kwargs):
        self.calls.append(("load", Path(path).name, adapter_name, kwargs))

    def enable_lora(self):
        self.calls.append(("enable",))

    def set_adapters(self, names, adapter_weights=None):
        self.calls.append(("set", tuple(names), tuple(adapter_weights)))

    def delete_adapters(self, names):
        self.calls.append(("delete", tuple(names)))


def cached(path: Path, lora_id: str = "lora-77", second: CachedLora | None = None) -> CachedLora:
    return CachedLora(lora_id, path, sha256(path), path.stat().st_size, "one-2.2", "ss_base_model_version", "volume",
                      second_expert=second)


def test_a_pair_loads_one_expert_into_each_transformer(tmp_path):
    high = write_lora(tmp_path / "lora-77.high_noise.safetensors", "one-2.2")
    low = write_lora(tmp_path / "lora-77.low_noise.safetensors", "one-2.2", seed=1)
    pipe, runner = FakeWanPipeline(two_experts=True), DiffusersRunner()

    runner._activate(pipe, cached(high, second=cached(low)), 0.8)
    runner._activate(pipe, cached(high, second=cached(low)), 0.8)

    loads = [c for c in pipe.calls if c[0] == "load"]
    assert loads == [("load", high.name, "lora_lora_77", {}),
                     ("load", low.name, "lora_lora_77", {"load_into_transformer_2": True})], "loaded once, both experts"
    assert pipe.calls[-1] == ("set", ("lora_lora_77",), (0.8,))

    with pytest.raises(InputRejected, match="two experts"):
        runner._activate(FakeWanPipeline(two_experts=True), cached(high, "lora-78"), 1.0)
    with pytest.raises(InputRejected, match="one transformer"):
        runner._activate(FakeWanPipeline(two_experts=False), cached(high, second=cached(low)), 1.0)


class RecordingRunner:
    def __init__(self) -> None:
        self.loras: list[CachedLora] = []

    def text_to_image(self, request, *, lora):
        self.loras.append(lora)
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        return buffer.getvalue()


def test_the_service_fetches_and_checks_both_files_of_a_pair(tmp_path, monkeypatch):
    volume = tmp_path / "vol"
    high = write_lora(volume / PAIR_DIR / "lora-77.high_noise.safetensors", "one-2.2",
                      metadata={"ss_base_model_version": "wan_2.2_14b"})
    low = write_lora(volume / PAIR_DIR / "lora-77.low_noise.safetensors", "one-2.2", seed=1,
                     metadata={"ss_base_model_version": "wan_2.2_14b"})
    flux = write_lora(volume / "loras/flux-character-char-9/lora-77.low_noise.safetensors", "flux",
                      metadata={"ss_base_model_version": "flux.1"})
    # No Wan LoRA route is deployed (the model registry routes none); one is mounted here to exercise the pair path.
    monkeypatch.setitem(generation_service.LORA_ROUTES, "wan-2.2-lora", "one-2.2")
    runner = RecordingRunner()
    service = GenerationService(runner, LoraCache(tmp_path / "cache", volume_root=volume))
    unused = "http://unused.invalid/x"

    def request(second: ExpertRef | None, sha: str = sha256(high)) -> GenerateRequest:
        return GenerateRequest(model="one-2.2", prompt="ohwx_wan, portrait", lora=LoraRef(
            lora_model_id="lora-77", url=unused, sha256=sha, base_model="one-2.2", trigger_word="ohwx_wan",
            second_expert=second))

    answer = service.lora_route("wan-2.2-lora", request(ExpertRef(expert="low_noise", url=unused, sha256=sha256(low))))
    (used,) = runner.loras
    assert answer.lora.loaded and used.lora_model_id == "lora-77"
    assert (used.sha256, used.second_expert.sha256) == (sha256(high), sha256(low))
    assert used.path.read_bytes() == high.read_bytes() and used.second_expert.path.read_bytes() == low.read_bytes()

    for second, message in ((None, "lacks a second_expert"),
                            (ExpertRef(expert="high_noise", url=unused, sha256=sha256(low)), "low_noise expert")):
        with pytest.raises(HTTPException) as refused:
            service.lora_route("wan-2.2-lora", request(second))
        assert refused.value.status_code == 422 and message in refused.value.detail
    with pytest.raises(HTTPException) as wrong_file:
        service.lora_route("wan-2.2-lora", request(ExpertRef(expert="low_noise", url=unused, sha256=sha256(flux))))
    assert wrong_file.value.status_code == 422 and "lora-77.low_noise file header says base model flux" in \
        wrong_file.value.detail
    with pytest.raises(HTTPException) as single_file_route:
        service.lora_route("flux-lora", GenerateRequest(model="flux", prompt="x", lora=LoraRef(
            lora_model_id="lora-1", url=unused, sha256="0" * 64, base_model="flux", trigger_word="t",
            second_expert=ExpertRef(expert="low_noise", url=unused, sha256="0" * 64))))
    assert single_file_route.value.status_code == 422 and "one file" in single_file_route.value.detail
    assert len(runner.loras) == 1
    assert json.loads(request(None).model_dump_json())["lora"]["second_expert"] is None
