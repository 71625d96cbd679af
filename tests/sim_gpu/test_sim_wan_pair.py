"""The simulated trainer writes a Wan 2.2 14B LoRA as ai-toolkit does: a high_noise and a low_noise file, each in
the Wan key layout and saying which expert it is; a single-file base model stays one file."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from pathlib import Path

from safetensors import safe_open

from lora_pipelines.domain.lora_format import lora_tensor_shapes
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.gpu.schemas import TrainingSpec
from sim_gpu.files import FACE_TENSOR_PREFIX, PHOTO_TENSOR_PREFIX
from sim_gpu.training import TrainingCalls


def dataset(faces_dir: Path, folder: Path) -> tuple[Path, str]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, photo in enumerate(sorted((faces_dir / "katy_perry").glob("*.jp*g"))[:2]):
            archive.writestr(f"images/{i:03d}.jpg", photo.read_bytes())
    path = folder / "dataset.zip"
    path.write_bytes(buffer.getvalue())
    return path, hashlib.sha256(buffer.getvalue()).hexdigest()


def train(calls: TrainingCalls, zip_path: Path, sha: str, base_model: str):
    spec = TrainingSpec(character_id="5", lora_model_id="8", base_model=base_model, dataset_url=zip_path.as_uri(),
                        dataset_sha256=sha, trigger_word="ohwx_wan",
                        output_key=f"loras/{base_model}-character-5/8.safetensors", steps=10, rank=4,
                        idempotency_key=f"sim-pair-{base_model}")
    call_id = calls.spawn(spec, base_url="http://sim.test/")
    deadline = time.monotonic() + 60
    while (call := calls.get(call_id)).state not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert call.state == "succeeded", call.error
    return call


def test_a_wan_22_call_writes_both_experts_and_a_restart_still_knows_them(faces_dir, tmp_path):
    zip_path, sha = dataset(faces_dir, tmp_path)
    calls = TrainingCalls(tmp_path / "home", [tmp_path], duration_s=0.05)

    call = train(calls, zip_path, sha, "one-2.2")

    result = call.result
    assert (result.expert, result.second_expert.expert) == ("high_noise", "low_noise")
    files = {"high_noise": (Path(result.volume_path), result.sha256, result.size_bytes, result.download_url),
             "low_noise": (Path(result.second_expert.volume_path), result.second_expert.sha256,
                           result.second_expert.size_bytes, result.second_expert.download_url)}
    for expert, (path, digest, size, url) in files.items():
        assert path == calls.file_path(call.call_id, expert) and url == f"http://sim.test/files/{path.name}"
        assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size) == (digest, size)
        inspection = inspect_lora_file(path)
        assert (inspection.base_model, inspection.trigger_word, inspection.rank) == ("one-2.2", "ohwx_wan", 4)
        assert inspection.metadata["lora_pipelines.expert"] == expert
        with safe_open(str(path), "np") as lora:
            lora_keys = {k for k in lora.keys() if not k.startswith((FACE_TENSOR_PREFIX, PHOTO_TENSOR_PREFIX))}
        assert lora_keys == set(lora_tensor_shapes("one-2.2", 4))  # ai-toolkit's Wan layout
    assert result.sha256 != result.second_expert.sha256
    assert not calls.file_path(call.call_id).exists()

    restarted = TrainingCalls(tmp_path / "home", [tmp_path])
    assert restarted.get(call.call_id).result == result


def test_other_base_models_stay_one_file(faces_dir, tmp_path):
    zip_path, sha = dataset(faces_dir, tmp_path)
    calls = TrainingCalls(tmp_path / "home", [tmp_path], duration_s=0.05)

    call = train(calls, zip_path, sha, "one-2.1")

    assert call.result.expert is None and call.result.second_expert is None
    assert Path(call.result.volume_path) == calls.file_path(call.call_id)
    assert "lora_pipelines.expert" not in inspect_lora_file(calls.file_path(call.call_id)).metadata
