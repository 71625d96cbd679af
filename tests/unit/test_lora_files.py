"""Which files a LoRA is, and what a training result must name: single files, and Wan 2.2 14B expert pairs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lora_pipelines.gpu.schemas import ExpertFile, TrainingResult
from lora_pipelines.services.lora_files import (
    FileCheck,
    IncompleteLoraPairError,
    StoredFile,
    lora_object_keys,
    pair_files,
    stored_files,
)

SHA_A, SHA_B = "a" * 64, "b" * 64


def row(base_model: str, **fields) -> SimpleNamespace:
    values = dict(id=12, character_id=3, base_model=base_model, model_path=None, sha256=None,
                  second_expert_path=None, second_expert_sha256=None)
    return SimpleNamespace(**{**values, **fields})


def result(**fields) -> TrainingResult:
    return TrainingResult(base_model="one-2.2", trigger_word="ohwx", sha256=SHA_A, size_bytes=10,
                          download_url="http://gpu/files/fc-1.high_noise.safetensors", backend="simulated", **fields)


LOW = ExpertFile(expert="low_noise", sha256=SHA_B, size_bytes=20, download_url="http://gpu/files/fc-1.low.safetensors",
                 volume_path="/vol/fc-1.low_noise.safetensors", object_key="loras/x/1.low_noise.safetensors")


def test_object_keys_of_a_single_file_lora_and_of_a_pair():
    assert lora_object_keys(row("flux")) == ["loras/flux-character-3/12.safetensors"]
    pair = ["loras/one-2.2-character-3/12.high_noise.safetensors", "loras/one-2.2-character-3/12.low_noise.safetensors"]
    assert lora_object_keys(row("one-2.2")) == pair  # a failed row: where the GPU side may have uploaded
    assert lora_object_keys(row("one-2.2", model_path=pair[0], second_expert_path=pair[1])) == pair
    assert lora_object_keys(row("flux", model_path="loras/old/7.safetensors")) == [
        "loras/old/7.safetensors", "loras/flux-character-3/12.safetensors"]


def test_a_pair_row_always_lists_both_experts():
    assert stored_files(row("qwen-image", model_path="k", sha256=SHA_A)) == [StoredFile(None, "k", SHA_A)]
    assert stored_files(row("one-2.2", model_path="h", sha256=SHA_A)) == [
        StoredFile("high_noise", "h", SHA_A), StoredFile("low_noise", None, None)]


def test_pair_files_gives_each_file_its_key_and_a_single_file_view_to_fetch_it():
    high, low = pair_files(row("one-2.2"), result(expert="high_noise", second_expert=LOW))

    assert (high.expert, high.key) == ("high_noise", "loras/one-2.2-character-3/12.high_noise.safetensors")
    assert (low.expert, low.key) == ("low_noise", "loras/one-2.2-character-3/12.low_noise.safetensors")
    assert (high.result.sha256, high.result.second_expert, high.result.expert) == (SHA_A, None, None)
    assert (low.result.sha256, low.result.size_bytes, low.result.download_url, low.result.volume_path,
            low.result.object_key, low.result.second_expert) == (SHA_B, 20, LOW.download_url, LOW.volume_path,
                                                                 LOW.object_key, None)


@pytest.mark.parametrize(("base_model", "fields", "message"), [
    ("one-2.2", {}, "lora_models 12: a one-2.2 LoRA is two files (high_noise + low_noise); the training result has "
                    "no second_expert, so the low_noise expert was not published"),
    ("one-2.2", {"expert": "low_noise", "second_expert": LOW.model_copy(update={"expert": "high_noise"})},
     "lora_models 12: a one-2.2 LoRA is high_noise + low_noise; the training result names low_noise + high_noise"),
    ("flux", {"expert": "high_noise", "second_expert": LOW},
     "lora_models 12: a flux LoRA is one file; the training result names a second high_noise file"),
])
def test_a_result_that_is_not_the_base_models_pair_is_refused(base_model, fields, message):
    with pytest.raises(IncompleteLoraPairError) as refused:
        pair_files(row(base_model), result(**fields))
    assert str(refused.value) == message


def test_a_file_check_names_the_expert_and_what_failed():
    assert FileCheck("low_noise", header_valid=True, base_model_matches=True).failures() == "low_noise file: checksum"
    assert FileCheck(None).failures() == "file: header, base model, checksum"
    assert FileCheck("high_noise", unavailable="HTTP 404").failures() == "high_noise file unavailable (HTTP 404)"
    assert FileCheck("x", True, True, True).passed and FileCheck("x", True, True, True).failures() == ""
