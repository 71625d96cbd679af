"""A LoRA proves whose face it carries: a row filed onto another character's file (its checksum recorded, so every
file check passes) is refused with lora_identity_mismatch, and a file naming no owner is used on the row's word,
said to be unverified, and scored as not matching by both recognisers."""

from __future__ import annotations

import hashlib

import pytest
from safetensors import safe_open
from safetensors.numpy import load, save

from conftest import person_photos
from lora_pipelines.domain.keys import lora_key
from lora_pipelines.domain.lora_format import IDENTITY_KEYS
from lora_pipelines.reporting import metrics
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository

pytest_plugins = ["pipeline_helpers"]

PROMPT = "portrait photo on a balcony"


def _file_row_onto(world, character, data: bytes, label: str):
    """A ready flux row of `character` whose file (and recorded sha256) is `data`."""
    loras = LoraModelsRepository(world.ctx.db)
    row = loras.create(character.id, "flux", character.trigger_word, f"mixup-{label}-{character.id}",
                       dataset_hash=hashlib.sha256(label.encode()).hexdigest())
    key = lora_key("flux", str(character.id), str(row.id))
    world.ctx.store.put_bytes(key, data)
    loras.transition(row.id, "training", gpu_call_id=f"fc-{label}")
    return loras.transition(row.id, "ready", model_path=key, model_url=world.ctx.store.uri(key),
                            sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def _without_identity(data: bytes, path) -> bytes:
    """The same LoRA with every key that names its owner or trigger word removed (trained elsewhere)."""
    path.write_bytes(data)
    with safe_open(str(path), framework="numpy") as f:
        metadata = dict(f.metadata() or {})
    drop = {*IDENTITY_KEYS, "modelspec.trigger_phrase", "ss_tag_frequency"}
    return save(load(data), metadata={k: v for k, v in metadata.items() if k not in drop})


@pytest.fixture(scope="module")
def anna(trained_world, faces_dir):
    with trained_world.active():
        return trained_world.add_character("Anna", person_photos(faces_dir, "scarlett_johansson"))


def test_another_characters_lora_is_refused_and_a_nameless_one_is_not_a_match(world, anna, tmp_path):
    jobs = GenerationJobsRepository(world.ctx.db)
    katy_row = next(r for r in LoraModelsRepository(world.ctx.db).find_by_character_and_model(world.katy.id, "flux")
                    if r.status == "ready")
    katy_file = world.ctx.store.get_bytes(katy_row.model_path)

    mixed_up = _file_row_onto(world, anna, katy_file, "katy")
    ids = jobs.enqueue(anna.id, "flux", PROMPT, count=2)
    assert world.generate(ids).success
    for job in (jobs.get(i) for i in ids):
        assert (job.status, job.lora_skipped_reason, job.lora_model_id) == ("succeeded", "lora_identity_mismatch", None)
        assert job.lora_candidate_id == mixed_up.id and job.mode == "face_swap"
        assert f"character {world.katy.id}'s" in job.input_metadata["loraSkippedDetail"]
    usage = metrics.lora_usage_rate(world.ctx.db)
    assert usage.denominator >= 2 and set(ids) <= set(usage.offenders)  # a refusal stays in the denominator
    assert metrics.lora_usage_misses_by_reason(world.ctx.db)["lora_identity_mismatch"] >= 2

    nameless = _file_row_onto(world, anna, _without_identity(katy_file, tmp_path / "katy.safetensors"), "nameless")
    ids = jobs.enqueue(anna.id, "flux", PROMPT, count=3)
    assert world.generate(ids).success
    for job in (jobs.get(i) for i in ids):
        assert (job.status, job.mode, job.lora_model_id) == ("succeeded", "lora", nameless.id)
        assert job.trigger_word == anna.trigger_word and job.input_metadata["loraIdentity"] == "unverified"
        # Katy's face (or nobody's) is not Anna's, by either recogniser
        assert job.face_count is not None and job.face_match is False and job.sface_match is False, job
        assert job.face_reference == "in_sample"  # Anna never trained here: her photos are all in-sample
