"""lora_models records the second file of a two-expert LoRA (Wan 2.2 14B) beside the primary one."""

from __future__ import annotations

import pytest

from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.lora_models import LoraModelsRepository

HIGH = "loras/one-2.2-character-1/1.high_noise.safetensors"
LOW = "loras/one-2.2-character-1/1.low_noise.safetensors"


def test_a_ready_pair_keeps_both_files_and_bad_values_are_refused(app_db):
    character = CharactersRepository(app_db).create(name="Wan", trigger_word="ohwx_wan")
    repo = LoraModelsRepository(app_db)
    row = repo.create(character.id, "one-2.2", "ohwx_wan", idempotency_key="train:1:one-2.2:h")
    repo.transition(row.id, "training", gpu_call_id="fc-1")

    ready = repo.transition(row.id, "ready", model_path=HIGH, sha256="a" * 64, size_bytes=10,
                            second_expert_path=LOW, second_expert_sha256="b" * 64, second_expert_size_bytes=20)

    assert (ready.second_expert_path, ready.second_expert_sha256, ready.second_expert_size_bytes) == (LOW, "b" * 64, 20)
    assert repo.get(row.id) == ready
    for field, value, message in (("second_expert_sha256", "B" * 64, "second_expert_sha256 must be 64 lowercase hex"),
                                  ("second_expert_path", "../etc/passwd", "object key segment"),
                                  ("second_expert_size_bytes", -1, "second_expert_size_bytes must be an integer >= 0")):
        with pytest.raises(ValueError, match=message):
            repo.update_fields(row.id, **{field: value})
    assert repo.get(row.id) == ready
