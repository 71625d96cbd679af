"""A Wan 2.2 14B LoRA end to end on the simulated GPU service: trained as a high_noise + low_noise pair, published
and verified as ONE lora_models row with two files, re-checked, selected, and handed to the GPU side as one LoraRef
whose second_expert the generation service loads. A missing, corrupt or swapped file never leaves a ready row."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from conftest import person_photos
from lora_pipelines.domain.keys import lora_expert_key, lora_key
from lora_pipelines.domain.lora_selection import CharacterFacts, LoraCandidate, select_lora
from lora_pipelines.domain.model_registry import ModelEntry, modal
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from lora_pipelines.gpu.errors import GpuTransientError
from lora_pipelines.gpu.schemas import GenerateRequest, TrainingResult
from lora_pipelines.services import generation as generation_svc
from lora_pipelines.services import training as training_svc
from lora_pipelines.services.lora_files import IncompleteLoraPairError, lora_object_keys
from lora_pipelines.services.lora_lookup import get_lora_for_generation, inspect_stored_lora
from lora_pipelines.services.status import system_status
from lora_pipelines.store.lora_models import LoraModelsRepository
from pipeline_helpers import check_results, open_world
from sim_gpu.files import lora_file_bytes

pytest_plugins = ["pipeline_helpers"]

# No Wan LoRA route is deployed (domain/model_registry.py routes none); this entry stands for the one that would be.
WAN_LORA_MODEL = ModelEntry(name="one-2.2", base_model="one-2.2", supports_lora=True,
                            lora_route=modal("/wan-2.2-lora"), face_swap_route=modal("/face-swap"),
                            standard_route=modal("/standard"))


@pytest.fixture(scope="module")
def wan(tmp_path_factory, faces_dir):
    """Its own world: Katy Perry trained for one-2.2 through training_job."""
    # one-2.2 is a training partition only when characters are trained for it (the sensors' setting)
    with open_world(tmp_path_factory.mktemp("wan_world"),
                    env={"LORA_PIPELINES_TRAIN_BASE_MODELS": "flux,z-image-turbo,one-2.2"}) as world, world.active():
        world.katy = world.add_character("Katy Wan", person_photos(faces_dir, "katy_perry"))
        world.run = world.train(world.katy.id, "one-2.2")
        [world.row] = LoraModelsRepository(world.ctx.db).find_by_character_and_model(world.katy.id, "one-2.2")
        call_id = world.run.output_for_node("trained_lora")["gpu_call_id"]
        world.result = TrainingResult.model_validate(world.ctx.gpu.training.poll(call_id).result.model_dump())
        yield world


@pytest.fixture()
def world(wan):
    with wan.active():
        wan.set_faults({})
        yield wan
        wan.set_faults({})


def keys(world, row_id: int) -> tuple[str, str]:
    return tuple(lora_expert_key("one-2.2", str(world.katy.id), str(row_id), e) for e in ("high_noise", "low_noise"))


def stored(world, key: str) -> Path:
    return world.home / "objects" / key


def test_training_publishes_both_experts_as_one_ready_lora(world):
    row = world.row
    assert world.run.success
    assert {name: c.passed for name, c in check_results(world.run).items()
            if name in ("header_valid", "base_model_matches", "checksum_matches")} == {
        "header_valid": True, "base_model_matches": True, "checksum_matches": True}
    high, low = keys(world, row.id)
    assert (row.status, row.model_path, row.second_expert_path) == ("ready", high, low)
    assert not world.ctx.store.exists(lora_key("one-2.2", str(world.katy.id), str(row.id)))
    for key, sha, size, expert in ((high, row.sha256, row.size_bytes, "high_noise"),
                                   (low, row.second_expert_sha256, row.second_expert_size_bytes, "low_noise")):
        inspection = inspect_lora_file(stored(world, key))
        assert (inspection.base_model, inspection.sha256, inspection.size_bytes) == ("one-2.2", sha, size)
        assert inspection.metadata["lora_pipelines.expert"] == expert
        assert inspection.trigger_word == world.katy.trigger_word
    assert row.sha256 != row.second_expert_sha256
    assert (world.result.expert, world.result.second_expert.expert) == ("high_noise", "low_noise")
    assert lora_object_keys(row) == [high, low]
    metadata = world.run.asset_materializations_for_node("lora_artifact")[0].metadata
    assert metadata["second_expert_path"].value == low and metadata["model_path"].value == high
    [shown] = [c for c in system_status(world.ctx)["characters"] if c["id"] == world.katy.id][0]["loras"]
    assert (shown["model_path"], shown["second_expert"]) == (
        high, {"path": low, "sha256": row.second_expert_sha256, "size_bytes": row.second_expert_size_bytes})


def test_a_rerun_re_verifies_both_stored_files_without_training(world):
    spawns = world.spawns()
    again = world.train(world.katy.id, "one-2.2")
    assert again.success and again.output_for_node("trained_lora")["already_ready"] is True
    assert world.spawns() == spawns
    checks = check_results(again)
    assert checks["checksum_matches"].passed and checks["header_valid"].passed
    assert checks["checksum_matches"].metadata["second_expert_stored"].value == world.row.second_expert_sha256

    low = stored(world, world.row.second_expert_path)
    original = low.read_bytes()
    try:
        low.write_bytes(original[:-64] + bytes(64))  # the low_noise object rots in the store
        checks = training_svc.verify_ready_artifact(world.ctx, world.row)
        assert checks.header_valid and checks.base_model_matches and not checks.checksum_matches
        assert checks.detail["second_expert"]["stored_sha256"] != world.row.second_expert_sha256
        low.unlink()
        missing = training_svc.verify_ready_artifact(world.ctx, world.row)
        assert not missing.passed and "no object at" in missing.detail["second_expert"]["unavailable"]
    finally:
        low.write_bytes(original)
    assert training_svc.verify_ready_artifact(world.ctx, world.row).passed


def _training_row(world, n: int):
    repo = LoraModelsRepository(world.ctx.db)
    row = repo.create(character_id=world.katy.id, base_model="one-2.2", trigger_word=world.katy.trigger_word,
                      idempotency_key=f"wan-publish:{world.katy.id}:{n}", dataset_hash=f"{n:064x}",
                      training_model="ai-toolkit")
    return repo.transition(row.id, "training", gpu_call_id=f"fc-wan-{n}", job_id=str(row.id), backend="simulated")


def _second(result, **changes):
    return result.model_copy(update={"second_expert": result.second_expert.model_copy(update=changes)})


def _nothing_stored(world, row_id: int) -> bool:
    return not any(world.ctx.store.exists(key) for key in keys(world, row_id))


def test_a_missing_second_file_fails_the_lora_and_publishes_neither(world):
    row = _training_row(world, 1)
    gone = world.result.second_expert.download_url.rsplit("/", 1)[0] + "/fc-gone.low_noise.safetensors"

    checks = training_svc.publish_artifact(world.ctx, row.id, _second(world.result, download_url=gone))

    assert not checks.passed
    failed = LoraModelsRepository(world.ctx.db).get(row.id)
    assert failed.status == "failed" and failed.model_path is None and failed.second_expert_path is None
    assert failed.error.startswith("artifact verification failed: low_noise file unavailable (")
    assert "404" in failed.error and "\n" not in failed.error
    assert _nothing_stored(world, row.id)


def test_a_corrupt_second_file_the_gpu_side_uploaded_fails_the_lora(world):
    row = _training_row(world, 2)
    _, low_key = keys(world, row.id)
    good = Path(world.result.second_expert.volume_path)  # the simulated trainer's own copy
    corrupt = bytearray(good.read_bytes())
    corrupt[-10:] = bytes(10)
    world.ctx.store.put_bytes(low_key, bytes(corrupt))  # what a cut-short GPU-side upload leaves

    checks = training_svc.publish_artifact(world.ctx, row.id, _second(world.result, object_key=low_key))

    assert checks.header_valid and checks.base_model_matches and not checks.checksum_matches
    failed = LoraModelsRepository(world.ctx.db).get(row.id)
    assert (failed.status, failed.error) == ("failed", "artifact verification failed: low_noise file: checksum")
    assert not world.ctx.store.exists(keys(world, row.id)[0]), "the high_noise file is not published alone"


def test_swapped_experts_fail_the_base_model_check(world):
    row = _training_row(world, 3)
    primary = world.result
    swapped = _second(primary, sha256=primary.sha256, size_bytes=primary.size_bytes,
                      download_url=primary.download_url, volume_path=primary.volume_path)

    checks = training_svc.publish_artifact(world.ctx, row.id, swapped)

    assert checks.header_valid and checks.checksum_matches and not checks.base_model_matches
    assert checks.detail["second_expert"]["detected_expert"] == "high_noise"
    failed = LoraModelsRepository(world.ctx.db).get(row.id)
    assert failed.error == "artifact verification failed: low_noise file: base model"
    assert _nothing_stored(world, row.id)


def test_a_wan_22_result_without_its_second_file_is_refused(world):
    row = _training_row(world, 4)
    half = world.result.model_copy(update={"expert": None, "second_expert": None})

    with pytest.raises(IncompleteLoraPairError, match="two files .high_noise \\+ low_noise.; the training result "
                                                      "has no second_expert"):
        training_svc.publish_artifact(world.ctx, row.id, half)

    failed = LoraModelsRepository(world.ctx.db).get(row.id)
    assert failed.status == "failed" and "no second_expert" in failed.error
    assert _nothing_stored(world, row.id)


def test_a_gpu_outage_leaves_the_row_training_and_a_later_publish_completes_it(world):
    row = _training_row(world, 5)
    world.set_faults({"endpoints": {"files": {"error_rate": 1.0, "error_statuses": [503]}}})
    world.ctx.gpu.training.http.backoff_initial_s = 0.01

    with pytest.raises(GpuTransientError):
        training_svc.publish_artifact(world.ctx, row.id, world.result)
    assert LoraModelsRepository(world.ctx.db).get(row.id).status == "training"
    assert _nothing_stored(world, row.id)

    world.set_faults({})
    assert training_svc.publish_artifact(world.ctx, row.id, world.result).passed
    ready = LoraModelsRepository(world.ctx.db).get(row.id)
    assert (ready.status, ready.model_path, ready.second_expert_path) == ("ready", *keys(world, row.id))


def _candidate(row, **changes) -> LoraCandidate:
    fields = dict(id=row.id, base_model=row.base_model, trigger_word=row.trigger_word, model_path=row.model_path,
                  sha256=row.sha256, finished_at=row.finished_at, second_expert_path=row.second_expert_path,
                  second_expert_sha256=row.second_expert_sha256)
    return LoraCandidate(**{**fields, **changes})


def test_selection_checks_both_files(world):
    row, facts = world.row, CharacterFacts(id=world.katy.id, lora_enabled=True)

    def select(candidate):
        world.ctx.lora_inspections.clear()
        return select_lora(facts, WAN_LORA_MODEL, [candidate], lambda c: inspect_stored_lora(world.ctx, c))

    assert select(_candidate(row)).used
    unrecorded = select(_candidate(row, second_expert_path=None, second_expert_sha256=None))
    assert (unrecorded.reason, unrecorded.detail) == ("lora_file_unreachable",
                                                      f"LoRA {row.id}: the row records no low_noise file")
    wrong_sum = select(_candidate(row, second_expert_sha256="0" * 64))
    assert wrong_sum.reason == "checksum_mismatch" and row.second_expert_path in wrong_sum.detail
    swapped = select(_candidate(row, second_expert_path=row.model_path, second_expert_sha256=row.sha256))
    assert swapped.reason == "lora_file_invalid" and "is the high_noise expert, not low_noise" in swapped.detail
    flux = lora_file_bytes(base_model="flux", trigger_word="ohwx", rank=4, steps=1, faces=[], character_id="1", seed=1)
    world.ctx.store.put_bytes("loras/elsewhere/1.safetensors", flux)
    foreign_primary = select(_candidate(row, model_path="loras/elsewhere/1.safetensors",
                                        sha256=hashlib.sha256(flux).hexdigest()))
    assert foreign_primary.reason == "base_model_mismatch" and "its file is for flux" in foreign_primary.detail
    # the registry itself routes no Wan LoRA, so a real generation request never asks for one
    assert get_lora_for_generation(world.ctx, world.katy.id, "one-2.2").reason == "model_does_not_support_lora"


def test_the_lora_ref_carries_both_files_and_the_generation_service_loads_both(world, tmp_path, monkeypatch):
    from modal_apps import generation_service
    from modal_apps.generation_service import GenerationService
    from modal_apps.lora_cache import LoraCache

    row = world.row
    selection = select_lora(CharacterFacts(id=world.katy.id, lora_enabled=True), WAN_LORA_MODEL, [_candidate(row)],
                            lambda c: inspect_stored_lora(world.ctx, c))

    ref = generation_svc._lora_ref(world.ctx, selection, WAN_LORA_MODEL)

    assert (ref.sha256, ref.second_expert.expert, ref.second_expert.sha256) == (
        row.sha256, "low_noise", row.second_expert_sha256)

    class Recording:
        def __init__(self) -> None:
            self.loras = []

        def text_to_image(self, request, *, lora):
            from PIL import Image

            self.loras.append(lora)
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8)).save(buffer, format="PNG")
            return buffer.getvalue()

    def fetch_file_url(url: str, dest: Path) -> None:  # the local store presigns file:// URLs
        shutil.copyfile(unquote(urlparse(url).path), dest)

    monkeypatch.setitem(generation_service.LORA_ROUTES, "wan-2.2-lora", "one-2.2")
    runner = Recording()
    service = GenerationService(runner, LoraCache(tmp_path / "cache", fetch=fetch_file_url))
    answer = service.lora_route("wan-2.2-lora", GenerateRequest(model="one-2.2", prompt="portrait", lora=ref))

    assert answer.lora.loaded
    [used] = runner.loras
    assert used.path.read_bytes() == stored(world, row.model_path).read_bytes()
    assert used.second_expert.path.read_bytes() == stored(world, row.second_expert_path).read_bytes()
