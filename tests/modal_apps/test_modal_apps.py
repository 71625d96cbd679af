"""The Modal GPU side without a GPU or a Modal account: configs, artifacts on moto's S3, the LoRA cache, endpoints."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import textwrap
import types
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from conftest import REPO_ROOT, person_photos
from lora_files import sha256, write_lora
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.gpu.schemas import FaceSwapRequest, GenerateRequest, GenerateResponse, TrainingResult, TrainingSpec
from lora_pipelines.gpu.sim_launcher import free_port
from modal_apps import artifacts, trainer_config
from modal_apps.dataset import DatasetError, prepare_dataset, unpack_flat
from modal_apps.generation_service import GenerationService, InputRejected
from modal_apps.lora_cache import LoraCache, LoraIntegrityError, http_fetch
from modal_apps.training_job import run_training

# ---------------------------------------------------------------- helpers and test stand-ins

def spec_dict(**overrides) -> dict:
    spec = {
        "character_id": "char-1", "lora_model_id": "lora-abc", "base_model": "flux",
        "dataset_url": "http://unused.invalid/ds.zip", "dataset_sha256": "0" * 64, "trigger_word": "ohwx_anna",
        "output_key": "loras/flux-character-char-1/lora-abc.safetensors", "steps": 40, "rank": 8,
        "learning_rate": 2e-4, "idempotency_key": "train-char-1-flux-1",
    }
    spec.update(overrides)
    return spec


class StandInTrainer:
    """Test stand-in for ai-toolkit: checks the dataset folder it was given, writes a small LoRA where ai-toolkit would,
    with the partial metadata ai-toolkit writes (no modelspec, no trigger phrase)."""

    def __init__(self) -> None:
        self.configs: list[dict] = []

    def run(self, config, *, work_dir, on_step):
        self.configs.append(config)
        process = config["config"]["process"][0]
        dataset = Path(process["datasets"][0]["folder_path"])
        images = sorted(p for p in dataset.iterdir() if p.suffix != ".txt")
        assert images and all(p.with_suffix(".txt").is_file() for p in images)
        total = process["train"]["steps"]
        for step in (0, total // 2, total):
            on_step(step, total)
        name = config["config"]["name"]
        base = config["meta"]["base_model"]
        metadata = {"software": "ai-toolkit", "ss_output_name": name, "format": "pt"}
        folder = Path(process["training_folder"]) / name
        if base == "one-2.2":  # Wan 2.2 14B: one file per expert, as ai-toolkit's save_lora splits them
            for seed, expert in enumerate(("high_noise", "low_noise")):
                write_lora(folder / f"{name}_{expert}.safetensors", base, metadata, seed=seed)
            return folder
        return write_lora(folder / f"{name}.safetensors", base, metadata)


class FailingTrainer:
    def run(self, config, *, work_dir, on_step):
        raise AssertionError("the trainer must not run again for a finished idempotency key")


def png_bytes(color: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


class StandInPipeline:
    """Test stand-in for the diffusers runner: a tiny PNG whose colour depends on the seed; records what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def text_to_image(self, request, *, lora):
        self.calls.append(("text_to_image", lora))
        return png_bytes((request.seed % 256, 0, 0))

    def face_swap(self, request, *, reference):
        image = Image.open(io.BytesIO(reference))
        if min(image.size) < 32:
            raise InputRejected("no face found in the reference photo")
        self.calls.append(("face_swap", image.size))
        return png_bytes((0, request.seed % 256, 0))


def dataset_zip(faces_dir: Path, dest: Path, *, evil_member: str | None = None) -> Path:
    """Real photos in sub-folders with captions and a manifest, like the dataset asset's zip."""
    photos = person_photos(faces_dir, "barack_obama")[:3]
    with zipfile.ZipFile(dest, "w") as archive:
        for i, photo in enumerate(photos):
            archive.write(photo, f"images/{i:02d}{photo.suffix.lower()}")
            if i < 2:  # the last image has no caption: it gets the trigger word
                archive.writestr(f"images/{i:02d}.txt", f"ohwx_anna, photo {i} of a person")
        archive.writestr("manifest.json", json.dumps({"images": len(photos)}))
        if evil_member:
            archive.writestr(evil_member, "x")
    return dest


def presigned(endpoint: str, bucket: str, key: str, body: bytes) -> str:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(signature_version="s3v4"))
    client.put_object(Bucket=bucket, Key=key, Body=body)
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600)


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


# ---------------------------------------------------------------- trainer config

EXPECTED_MODEL = {
    "flux": ("black-forest-labs/FLUX.1-dev", {"is_flux": True}),
    "z-image-turbo": ("Tongyi-MAI/Z-Image-Turbo", {"arch": "zimage"}),
    "qwen-image": ("Qwen/Qwen-Image-2512", {"arch": "qwen_image"}),
    "one-2.1": ("Wan-AI/Wan2.1-T2V-14B-Diffusers", {"arch": "wan21"}),
    "one-2.2": ("ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16", {"arch": "wan22_14b"}),
}


@pytest.mark.parametrize("base_model", sorted(EXPECTED_MODEL))
def test_trainer_config_per_base_model(base_model, tmp_path):
    spec = TrainingSpec.model_validate(spec_dict(base_model=base_model, steps=1234, rank=32, learning_rate=3e-4))
    config = trainer_config.build_trainer_config(spec, dataset_dir=tmp_path / "ds", output_dir=tmp_path / "out")

    assert yaml.safe_load(trainer_config.config_yaml(config)) == config
    process = config["config"]["process"][0]
    dataset = process["datasets"][0]
    assert config["config"]["name"] == "lora-abc"
    assert dataset["folder_path"] == str(tmp_path / "ds") and dataset["caption_ext"] == "txt"
    assert process["training_folder"] == str(tmp_path / "out")
    assert process["trigger_word"] == "ohwx_anna"
    assert process["network"] == {"type": "lora", "linear": 32, "linear_alpha": 32}
    assert process["train"]["steps"] == 1234 and process["train"]["lr"] == 3e-4
    assert process["save"]["save_every"] == 1234
    name_or_path, flags = EXPECTED_MODEL[base_model]
    assert process["model"]["name_or_path"] == name_or_path
    assert flags.items() <= process["model"].items()
    if base_model == "z-image-turbo":
        assert process["model"]["assistant_lora_path"].startswith("ostris/zimage_turbo_training_adapter/")
    else:
        assert "assistant_lora_path" not in process["model"]
    if base_model.startswith("one-"):
        assert dataset["num_frames"] == 1
    if base_model == "one-2.2":
        assert process["model"]["model_kwargs"] == {"train_high_noise": True, "train_low_noise": True}
        assert process["train"]["switch_boundary_every"] > 0
    if base_model == "qwen-image":
        assert not process["train"].get("cache_text_embeddings"), "cached embeddings drop the trigger word"


def test_progress_lines_are_read_only_from_the_training_bar():
    assert trainer_config.parse_progress("lora-abc:  10%|#         | 100/1000 [01:23<12:34,  1.20it/s, lr: 1e-04]",
                                         "lora-abc") == (100, 1000)
    assert trainer_config.parse_progress("Loading checkpoint shards:  67%|######6   | 2/3 [00:02<00:01]",
                                         "lora-abc") is None
    assert trainer_config.parse_progress("lora-abc: saving", "lora-abc") is None


def test_find_trained_lora_prefers_the_final_file(tmp_path):
    folder = tmp_path / "job"
    write_lora(folder / "job_000000250.safetensors", "flux")
    with pytest.raises(FileNotFoundError):
        trainer_config.find_trained_lora(tmp_path, "other")
    assert trainer_config.find_trained_lora(tmp_path, "job").name == "job_000000250.safetensors"
    write_lora(folder / "job.safetensors", "flux")
    assert trainer_config.find_trained_lora(tmp_path, "job").name == "job.safetensors"


# ---------------------------------------------------------------- dataset

def test_dataset_unpacks_flat_with_captions(faces_dir, tmp_path):
    zip_path = dataset_zip(faces_dir, tmp_path / "ds.zip")
    prepared = prepare_dataset(f"file://{zip_path}", sha256(zip_path), tmp_path / "work", trigger_word="ohwx_anna")

    images = sorted(p for p in prepared.folder.iterdir() if p.suffix != ".txt")
    assert prepared.images == len(images) == 3 and prepared.captions_written == 1
    captions = [p.with_suffix(".txt").read_text() for p in images]
    assert captions[0] == "ohwx_anna, photo 0 of a person" and captions[2] == "ohwx_anna"
    with Image.open(images[0]) as first:
        assert first.size[0] > 32
    assert not (prepared.folder / "manifest.json").exists()


@pytest.mark.parametrize("member", ["../escape.txt", "/etc/evil.jpg", "images/../../x.png"])
def test_dataset_zip_slip_is_refused(faces_dir, tmp_path, member):
    zip_path = dataset_zip(faces_dir, tmp_path / "ds.zip", evil_member=member)
    with pytest.raises(DatasetError, match="escape"):
        unpack_flat(zip_path, tmp_path / "out", trigger_word="t")
    assert not (tmp_path / "escape.txt").exists()


def test_dataset_checksum_mismatch_is_refused(faces_dir, tmp_path):
    zip_path = dataset_zip(faces_dir, tmp_path / "ds.zip")
    with pytest.raises(DatasetError, match="sha256"):
        prepare_dataset(str(zip_path), "f" * 64, tmp_path / "work", trigger_word="t")


# ---------------------------------------------------------------- artifacts

def test_metadata_fix_up_keeps_tensors_and_trainer_keys(tmp_path):
    path = write_lora(tmp_path / "x.safetensors", "qwen-image",
                      {"software": "ai-toolkit", "ss_base_model_version": "wrong"})
    before = inspect_lora_file(path)

    final = artifacts.finalize_lora(path, base_model="qwen-image", trigger_word="ohwx_bob", rank=4, steps=10)

    after = inspect_lora_file(path)
    assert after.base_model == "qwen-image" and after.detected_from == "modelspec.architecture"
    assert after.trigger_word == "ohwx_bob"
    assert after.metadata["ss_base_model_version"] == "qwen_image"
    assert after.metadata["software"] == "ai-toolkit"
    assert after.tensors == before.tensors and after.rank == before.rank
    assert final.sha256 == sha256(path) and final.size_bytes == path.stat().st_size
    from safetensors.numpy import load_file

    assert all(v.dtype == np.float16 for v in load_file(str(path)).values())


def test_training_uploads_to_r2_with_metadata_and_checksum(faces_dir, s3_bucket, tmp_path, monkeypatch):
    endpoint, bucket = s3_bucket
    zip_path = dataset_zip(faces_dir, tmp_path / "ds.zip")
    url = presigned(endpoint, bucket, "datasets/flux-character-char-1/h1/dataset.zip", zip_path.read_bytes())
    spec = spec_dict(dataset_url=url, dataset_sha256=sha256(zip_path))
    monkeypatch.setenv("R2_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("R2_BUCKET", bucket)
    progress: list[tuple[str, float]] = []
    trainer = StandInTrainer()

    result = run_training(spec, work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=trainer,
                          uploader_factory=artifacts.R2Uploader.from_env,
                          on_progress=lambda s, p: progress.append((s, p)))

    parsed = TrainingResult.model_validate(result)
    assert parsed.backend == "modal" and parsed.upload_error is None
    assert parsed.object_key == spec["output_key"]
    body = s3_client(endpoint).get_object(Bucket=bucket, Key=parsed.object_key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == parsed.sha256 and len(body) == parsed.size_bytes
    downloaded = tmp_path / "downloaded.safetensors"
    downloaded.write_bytes(body)
    inspection = inspect_lora_file(downloaded)
    assert (inspection.base_model, inspection.trigger_word) == ("flux", "ohwx_anna")
    assert inspection.metadata["modelspec.architecture"] == "flux-1-dev/lora"
    assert Path(parsed.volume_path) == tmp_path / "vol" / spec["output_key"]
    assert sha256(Path(parsed.volume_path)) == parsed.sha256
    percents = [p for _, p in progress]
    assert percents == sorted(percents) and progress[-1] == ("succeeded", 100.0) and len(progress) >= 5
    assert len(trainer.configs) == 1

    # A Modal retry of the same call returns the published result without training again.
    again = run_training(spec, work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=FailingTrainer(),
                         uploader_factory=artifacts.R2Uploader.from_env)
    assert again == result


def test_upload_failure_keeps_the_volume_copy_and_says_so(faces_dir, tmp_path, monkeypatch):
    zip_path = dataset_zip(faces_dir, tmp_path / "ds.zip")
    spec = spec_dict(base_model="one-2.2", dataset_url=str(zip_path), dataset_sha256=sha256(zip_path),
                     output_key="loras/one-2.2-character-char-1/lora-abc.safetensors")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-123")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id-456")

    def dead_uploader():
        return artifacts.R2Uploader(endpoint_url=dead_endpoint(), bucket="loras", connect_timeout=1, max_attempts=1)

    result = TrainingResult.model_validate(run_training(
        spec, work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=StandInTrainer(),
        uploader_factory=dead_uploader))

    assert result.object_key is None and result.second_expert.object_key is None
    assert result.upload_error and "failed" in result.upload_error and "volume" in result.upload_error
    assert "very-secret-value-123" not in result.upload_error
    volume_file = tmp_path / "vol" / "loras/one-2.2-character-char-1/lora-abc.high_noise.safetensors"
    assert result.volume_path == str(volume_file) and sha256(volume_file) == result.sha256
    assert inspect_lora_file(volume_file).base_model == "one-2.2"
    second_file = tmp_path / "vol" / "loras/one-2.2-character-char-1/lora-abc.low_noise.safetensors"
    assert result.second_expert.volume_path == str(second_file) and sha256(second_file) == result.second_expert.sha256

    missing_secret = TrainingResult.model_validate(run_training(
        spec, work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=StandInTrainer(),
        uploader_factory=lambda: artifacts.R2Uploader.from_env({})))
    assert missing_secret.object_key is None and "R2_ENDPOINT_URL" in missing_secret.upload_error


@pytest.mark.parametrize("output_key", ["../../etc/cron.d/x.safetensors", "/etc/x.safetensors",
                                        "loras/../../outside.safetensors", "loras/flux-character-1/.hidden.safetensors",
                                        "loras/flux-character-1/41.safetensors/../x", "loras/41.safetensors"])
def test_an_output_key_outside_the_lora_layout_is_refused_before_anything_is_written(tmp_path, output_key):
    from pydantic import ValidationError

    trainer = StandInTrainer()
    with pytest.raises(ValidationError, match="output_key"):
        run_training(spec_dict(output_key=output_key), work_dir=tmp_path / "work", volume_root=tmp_path / "vol",
                     trainer=trainer, uploader_factory=lambda: None)
    assert trainer.configs == [] and not list(tmp_path.rglob("*"))


# ---------------------------------------------------------------- reading a LoRA back from the volume

@pytest.fixture()
def volume(tmp_path) -> Path:
    """A LoRA volume with one trained file, a non-LoRA file, and files outside it that links point to."""
    root = tmp_path / "vol"
    write_lora(root / "loras" / "flux-character-7" / "41.safetensors", "flux")
    (root / "loras" / "flux-character-7" / "41.safetensors.result.json").write_text("{}")
    write_lora(tmp_path / "outside" / "other.safetensors", "flux", seed=1)
    (tmp_path / "outside" / "secret.safetensors").write_bytes(b"not for read_lora")
    links = root / "loras" / "links"
    links.mkdir(parents=True)
    (links / "out.safetensors").symlink_to(tmp_path / "outside" / "secret.safetensors")
    (links / "dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (links / "json.safetensors").symlink_to(root / "loras" / "flux-character-7" / "41.safetensors.result.json")
    (links / "ok.safetensors").symlink_to(root / "loras" / "flux-character-7" / "41.safetensors")
    return root


@pytest.mark.parametrize("volume_path", [
    "../outside/other.safetensors", "loras/../../outside/other.safetensors", "{root}/../outside/other.safetensors",
    "{tmp}/outside/other.safetensors", "/etc/passwd", "/etc/x.safetensors",
    "loras/flux-character-7/41.safetensors.result.json",
    "loras/links/out.safetensors", "loras/links/dir/other.safetensors", "loras/links/json.safetensors",
    "{root}", "", "loras/x\x00/../41.safetensors", "loras/x\x00.safetensors",
])
def test_read_lora_serves_only_safetensors_inside_the_volume(volume, volume_path):
    with pytest.raises(artifacts.VolumePathError):
        artifacts.read_volume_lora(volume, volume_path.format(root=volume, tmp=volume.parent))


def test_read_lora_reads_inside_paths_by_offset(volume):
    lora = volume / "loras" / "flux-character-7" / "41.safetensors"
    body = lora.read_bytes()
    assert artifacts.read_volume_lora(volume, str(lora)) == body
    assert artifacts.read_volume_lora(volume, "loras/flux-character-7/41.safetensors", 100, 50) == body[100:150]
    assert artifacts.read_volume_lora(volume, "loras/links/ok.safetensors", len(body) - 10, 1000) == body[-10:]
    assert artifacts.read_volume_lora(volume, str(lora), len(body), 10) == b""
    with pytest.raises(FileNotFoundError, match="no LoRA file"):
        artifacts.read_volume_lora(volume, "loras/flux-character-7/42.safetensors")
    with pytest.raises(ValueError, match="length"):
        artifacts.read_volume_lora(volume, str(lora), 0, artifacts.MAX_READ_BYTES + 1)
    with pytest.raises(ValueError, match="offset"):
        artifacts.read_volume_lora(volume, str(lora), -1, 10)


def test_the_read_lora_function_reloads_the_volume_and_reads_below_its_mount(volume, monkeypatch):
    from modal._utils.async_utils import synchronizer

    from modal_apps import training

    class Reloads:
        count = 0

        def reload(self):
            self.count += 1

    reloads = Reloads()
    monkeypatch.setattr(training, "LORA_ROOT", str(volume))
    monkeypatch.setattr(training, "lora_volume", reloads)
    function = synchronizer._translate_in(training.read_lora)
    body = (volume / "loras" / "flux-character-7" / "41.safetensors").read_bytes()

    first = function._raw_f(f"{volume}/loras/flux-character-7/41.safetensors", 0, 64)
    rest = function._raw_f(f"{volume}/loras/flux-character-7/41.safetensors", 64, len(body))
    assert first + rest == body and reloads.count == 1, "reloaded once per file, at its first chunk"
    with pytest.raises(artifacts.VolumePathError):
        function._raw_f("/etc/passwd")
    assert not function._is_generator and (function._spec.cpu, function._spec.memory) == (0.25, 512)
    assert set(function._spec.volumes) == {"/loras"}


def test_a_failed_upload_is_recovered_from_the_volume_by_the_orchestrator(faces_dir, tmp_path, monkeypatch):
    """The training app's volume fallback, fed to the Dagster side's Modal backend reading through read_lora."""
    from lora_pipelines.gpu.modal_backend import ModalTrainingBackend

    zip_path = dataset_zip(faces_dir, tmp_path / "ds.zip")
    spec = spec_dict(dataset_url=str(zip_path), dataset_sha256=sha256(zip_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id-456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-123")
    result = TrainingResult.model_validate(run_training(
        spec, work_dir=tmp_path / "work", volume_root=tmp_path / "vol", trainer=StandInTrainer(),
        uploader_factory=lambda: artifacts.R2Uploader(endpoint_url=dead_endpoint(), bucket="loras",
                                                      connect_timeout=1, max_attempts=1)))
    assert result.object_key is None and result.download_url is None and result.volume_path

    class VolumeCaller:
        """read_lora's body on this test's volume folder (what `Function.from_name(...).remote(**payload)` runs)."""

        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def call(self, app, function, payload):
            self.calls.append((app, function))
            return artifacts.read_volume_lora(tmp_path / "vol", **payload)

    caller = VolumeCaller()
    backend = ModalTrainingBackend(caller, app="lora-training", function="train_lora", read_chunk_bytes=1024)
    dest = backend.fetch_artifact(result, tmp_path / "dagster" / "lora.safetensors")

    assert sha256(dest) == result.sha256 and dest.stat().st_size == result.size_bytes
    assert dest.read_bytes() == Path(result.volume_path).read_bytes()
    assert inspect_lora_file(dest).base_model == "flux" and inspect_lora_file(dest).trigger_word == "ohwx_anna"
    assert set(caller.calls) == {("lora-training", "read_lora")} and len(caller.calls) > 1


# ---------------------------------------------------------------- LoRA cache

@pytest.fixture()
def lora_urls(s3_bucket, tmp_path):
    """Real LoRA files behind presigned URLs on moto's S3 server: {name: (url, sha256)}."""
    endpoint, bucket = s3_bucket
    files = {
        "flux": write_lora(tmp_path / "src" / "flux.safetensors", "flux",
                           {"ss_base_model_version": "flux.1", "modelspec.architecture": "flux-1-dev/lora"}),
        "qwen": write_lora(tmp_path / "src" / "qwen.safetensors", "qwen-image",
                           {"ss_base_model_version": "qwen_image"}),
        "bare_qwen": write_lora(tmp_path / "src" / "bare.safetensors", "qwen-image", seed=3),
    }
    return {name: (presigned(endpoint, bucket, f"loras/x/{name}.safetensors", p.read_bytes()), sha256(p))
            for name, p in files.items()}


def counting_fetch(counter: list[str]):
    def fetch(url: str, dest: Path) -> None:
        counter.append(url)
        http_fetch(url, dest)
    return fetch


def test_lora_cache_hit_miss_and_checksum(lora_urls, tmp_path):
    fetched: list[str] = []
    cache = LoraCache(tmp_path / "cache", fetch=counting_fetch(fetched))
    url, digest = lora_urls["flux"]

    first = cache.get("lora-1", url=url, sha256=digest)
    second = cache.get("lora-1", url=url, sha256=digest)

    assert (first.source, second.source) == ("download", "memory") and second.hit
    assert len(fetched) == 1 and first.path == tmp_path / "cache" / "lora-1.safetensors"
    assert sha256(first.path) == digest and first.base_model == "flux"

    qwen_url, _ = lora_urls["qwen"]
    with pytest.raises(LoraIntegrityError, match="sha256"):
        cache.get("lora-2", url=qwen_url, sha256=digest)
    assert "lora-2" not in cache and not list((tmp_path / "cache").glob("*lora-2*"))


def test_lora_cache_reads_the_training_volume_and_evicts_lru(lora_urls, tmp_path):
    volume = tmp_path / "vol"
    on_volume = write_lora(volume / "loras" / "flux-character-c1" / "lora-vol.safetensors", "flux",
                           {"ss_base_model_version": "flux.1"}, seed=7)
    fetched: list[str] = []
    url, digest = lora_urls["flux"]
    size = Path(on_volume).stat().st_size
    cache = LoraCache(tmp_path / "cache", volume_root=volume, max_bytes=int(size * 1.5), fetch=counting_fetch(fetched))

    from_volume = cache.get("lora-vol", url="http://unused.invalid/x", sha256=sha256(on_volume))
    assert from_volume.source == "volume" and fetched == []

    cache.get("lora-dl", url=url, sha256=digest)
    assert "lora-vol" not in cache and not from_volume.path.exists(), "least recently used file evicted past the budget"
    assert on_volume.exists(), "eviction never touches the volume"


# ---------------------------------------------------------------- endpoints

def endpoint_app(service: GenerationService) -> FastAPI:
    """The Modal classes' own endpoint methods, mounted on a plain FastAPI app at their labels."""
    from modal_apps import generation

    app = FastAPI()
    instances: dict[type, object] = {}
    for label, (cls, method) in generation.ENDPOINTS.items():
        user_cls = cls._get_user_cls()
        instance = instances.setdefault(user_cls, user_cls())
        instance.service = service  # what @modal.enter would build, with test stand-ins
        raw = user_cls.__dict__[method]._get_raw_f()
        app.post(f"/{label}")(types.MethodType(raw, instance))
    return app


@pytest.fixture()
def endpoints(tmp_path):
    pipeline = StandInPipeline()
    cache = LoraCache(tmp_path / "cache")
    return TestClient(endpoint_app(GenerationService(pipeline, cache))), pipeline


def lora_body(url: str, digest: str, *, base_model: str = "flux", model: str = "flux", **extra) -> dict:
    return {"model": model, "prompt": "ohwx_anna, portrait", "seed": 42, "width": 512, "height": 512, **extra,
            "lora": {"lora_model_id": "lora-1", "url": url, "sha256": digest, "base_model": base_model,
                     "trigger_word": "ohwx_anna", "strength_model": 0.8, "strength_clip": 0.5}}


def test_endpoint_functions_take_and_return_the_shared_schemas():
    from modal._utils.async_utils import synchronizer

    from modal_apps import generation

    assert set(generation.ENDPOINTS) == {"flux-lora", "qwen-image-2512-lora", "standard", "face-swap"}
    for label, (cls, method) in generation.ENDPOINTS.items():
        partial = cls._get_user_cls().__dict__[method]
        hints = typing.get_type_hints(partial._get_raw_f())
        expected_body = FaceSwapRequest if label == "face-swap" else GenerateRequest
        assert hints == {"body": expected_body, "return": GenerateResponse}
        webhook = synchronizer._translate_in(partial).params.webhook_config
        assert (webhook.requested_suffix, webhook.method, webhook.requires_proxy_auth) == (label, "POST", True)


def test_flux_lora_applies_a_matching_lora(endpoints, lora_urls):
    client, pipeline = endpoints
    url, digest = lora_urls["flux"]

    response = client.post("/flux-lora", json=lora_body(url, digest))

    assert response.status_code == 200, response.text
    answer = GenerateResponse.model_validate(response.json())
    assert (answer.mode, answer.backend, answer.seed, answer.prompt) == ("lora", "modal", 42, "ohwx_anna, portrait")
    assert answer.lora.loaded and answer.lora.detected_base_model == "flux" and answer.lora.strength_model == 0.8
    assert Image.open(io.BytesIO(base64.b64decode(answer.image_b64))).getpixel((0, 0)) == (42, 0, 0)
    (_, lora), = pipeline.calls
    assert lora.lora_model_id == "lora-1" and sha256(lora.path) == digest


def test_lora_for_another_base_model_is_refused_with_422(endpoints, lora_urls):
    client, pipeline = endpoints
    url, digest = lora_urls["qwen"]

    # Declared flux, but the file's header says Qwen-Image: ComfyUI would silently ignore it; we refuse.
    response = client.post("/flux-lora", json=lora_body(url, digest))
    assert response.status_code == 422
    assert "qwen-image" in response.json()["detail"] and "ss_base_model_version" in response.json()["detail"]

    # No metadata at all: the key layout still gives it away.
    bare_url, bare_digest = lora_urls["bare_qwen"]
    response = client.post("/flux-lora", json=lora_body(bare_url, bare_digest))
    assert response.status_code == 422 and "key_pattern" in response.json()["detail"]

    response = client.post("/qwen-image-2512-lora", json=lora_body(url, digest, base_model="flux", model="qwen-image"))
    assert response.status_code == 422 and "declared for flux" in response.json()["detail"]
    assert pipeline.calls == []


def test_wrong_model_for_route_and_checksum_mismatch_are_422(endpoints, lora_urls):
    client, pipeline = endpoints
    url, digest = lora_urls["qwen"]
    wrong_route = client.post("/flux-lora", json=lora_body(url, digest, base_model="qwen-image", model="qwen-image"))
    assert wrong_route.status_code == 422
    response = client.post("/qwen-image-2512-lora",
                           json=lora_body(url, "a" * 64, base_model="qwen-image", model="qwen-image"))
    assert response.status_code == 422 and "sha256" in response.json()["detail"]
    ok = client.post("/qwen-image-2512-lora", json=lora_body(url, digest, base_model="qwen-image", model="qwen-image"))
    assert ok.status_code == 200 and ok.json()["lora"]["detected_base_model"] == "qwen-image"


@pytest.mark.parametrize("body", [
    {"prompt": "no model"},
    {"model": "flux", "prompt": "x", "width": 500},
    {"model": "flux", "prompt": "x", "unexpected": 1},
    {"model": "flux", "prompt": ""},
    {"model": "no-such-model", "prompt": "x"},
    {"model": "flux", "prompt": "x", "lora": {"lora_model_id": "l", "url": "u", "sha256": "0" * 64,
                                              "base_model": "flux", "trigger_word": "t"}},
])
def test_bad_standard_bodies_are_422(endpoints, body):
    client, pipeline = endpoints
    response = client.post("/standard", json=body)
    assert response.status_code == 422, response.text
    assert pipeline.calls == []


def test_standard_and_face_swap(endpoints, faces_dir):
    client, pipeline = endpoints
    standard = client.post("/standard", json={"model": "one-2.1", "prompt": "a lighthouse", "seed": 7})
    assert standard.status_code == 200 and standard.json()["mode"] == "standard" and standard.json()["lora"] is None

    photo = person_photos(faces_dir, "barack_obama")[0].read_bytes()
    body = {"model": "qwen-image", "prompt": "a person on a beach", "seed": 9,
            "reference_image_b64": base64.b64encode(photo).decode()}
    swapped = client.post("/face-swap", json=body)
    assert swapped.status_code == 200, swapped.text
    assert GenerateResponse.model_validate(swapped.json()).mode == "face_swap"
    assert pipeline.calls[-1][0] == "face_swap"

    not_an_image = client.post("/face-swap", json={**body, "reference_image_b64": base64.b64encode(b"hello").decode()})
    tiny = client.post("/face-swap",
                       json={**body, "reference_image_b64": base64.b64encode(png_bytes((1, 2, 3))).decode()})
    assert not_an_image.status_code == 422 and tiny.status_code == 422 and "no face" in tiny.json()["detail"]


# ---------------------------------------------------------------- deployability

def test_apps_import_with_only_modal_installed():
    """`modal deploy` runs on machines without torch/diffusers/boto3/pydantic: the app modules must not need them."""
    script = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = {"torch", "diffusers", "boto3", "botocore", "pydantic", "fastapi", "yaml", "httpx", "safetensors",
                   "numpy", "PIL", "insightface", "lora_pipelines"}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked for this test: {name}")
        sys.meta_path.insert(0, Block())
        import modal_apps.training, modal_apps.generation
        assert modal_apps.training.train_lora is not None and modal_apps.training.read_lora is not None
        assert len(modal_apps.generation.ENDPOINTS) == 4
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
