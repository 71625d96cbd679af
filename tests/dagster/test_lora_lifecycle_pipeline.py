"""The LoRA lifecycle through Dagster on the simulated service: the published checkpoint is the one with the best
likeness (an over-trained final one copies photos, an early one is under-trained), a worse retrain stays ready but
not active until activated by hand, per-job strength and pins, and retention's dry run and run."""

from __future__ import annotations

import time

import pytest

from lora_pipelines.domain.checkpoints import best_step
from lora_pipelines.services.enqueue import enqueue_generations
from lora_pipelines.services.lora_versions import activate, active_lora_id
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from pipeline_helpers import check_results, open_world, person_photos


@pytest.fixture(scope="module")
def world(faces_dir, tmp_path_factory):
    with open_world(tmp_path_factory.mktemp("lifecycle"), env={"LORA_PIPELINES_TRAIN_BASE_MODELS": "flux"}) as w:
        with w.active():
            yield w


def _train(world, monkeypatch, character, steps: int):
    monkeypatch.setenv("LORA_PIPELINES_TRAINING_STEPS", str(steps))
    result = world.train(character.id, "flux")
    assert result.success
    rows = LoraModelsRepository(world.ctx.db).find_by_character_and_model(character.id, "flux")
    return result, rows[-1]


def _scores(row) -> dict[int, float | None]:
    return {c["step"]: c["likeness"] for c in row.validation["checkpoints"]}


def test_the_published_checkpoint_is_the_best_likeness_not_the_over_trained_last(world, faces_dir, monkeypatch):
    """4 photos, 3000 steps: 750 steps per photo at the end, where the simulated LoRA copies its training photos."""
    obama = world.add_character("Barack Obama", person_photos(faces_dir, "barack_obama"))
    result, row = _train(world, monkeypatch, obama, 3000)

    scores = _scores(row)
    assert list(scores) == [750, 1500, 2250, 3000]
    chosen = row.validation["chosen_step"]
    assert chosen == best_step(list(scores.items())) and chosen in (750, 1500)
    assert scores[3000] < scores[chosen] - 0.2  # copies score nothing
    final = next(c for c in row.validation["checkpoints"] if c["step"] == 3000)
    assert final["near_copies"] >= 2
    # 4 photos, the training minimum: none held out, so the scores are in-sample and say so
    assert row.validation_score == scores[chosen] and row.validation["reference"].startswith("training photos")
    published = next(c for c in row.validation["checkpoints"] if c["step"] == chosen)
    assert row.sha256 == published["sha256"] != final["sha256"]  # the file at the LoRA's key is the chosen one
    assert world.ctx.store.sha256(row.model_path) == published["sha256"]
    assert world.ctx.store.list(row.model_path.removesuffix("safetensors")) == \
        [world.ctx.store.stat(row.model_path)]  # the other checkpoints are gone from the store
    assert not list((world.home / "sim_gpu" / "trained").glob(f"{row.gpu_call_id}.step*"))

    # chosen where the training's result is: the run that finishes it; shown on trained_lora too
    [observed] = [o for o in result.asset_observations_for_node("lora_artifact")
                  if o.asset_key.to_user_string() == "trained_lora"]
    for metadata in (result.asset_materializations_for_node("lora_artifact")[0].metadata, observed.metadata):
        assert metadata["chosen_step"].value == chosen
        assert [r.data["step"] for r in metadata["checkpoint_scores"].records] == ["750", "1500", "2250", "3000"]
        assert metadata["checkpoint_plot"].md_str.startswith("![checkpoint likeness](data:image/png;base64,")


def test_an_under_trained_early_checkpoint_scores_lower(world, faces_dir, monkeypatch):
    """4 photos, 600 steps: the simulated LoRA learns the face gradually and never copies at 150 steps a photo."""
    matt = world.add_character("Matt Damon", person_photos(faces_dir, "matt_damon"))
    _, row = _train(world, monkeypatch, matt, 600)
    scores = _scores(row)
    assert list(scores) == [150, 300, 450, 600]
    assert scores[150] < scores[300] < scores[600] and row.validation["chosen_step"] in (450, 600)
    assert all(c["near_copies"] == 0 for c in row.validation["checkpoints"])


def test_a_worse_retrain_does_not_take_over_until_activated_by_hand(world, faces_dir, monkeypatch):
    jack = world.add_character("Jack Dorsey", person_photos(faces_dir, "jack_dorsey"))
    first_run, first = _train(world, monkeypatch, jack, 1000)
    assert check_results(first_run)["not_worse_than_active"].passed
    assert active_lora_id(world.ctx, jack.id, "flux") == first.id

    # a retrain on fewer photos with far too few steps: ready, worse, not used
    CharactersRepository(world.ctx.db).update(jack.id, photo_keys=jack.photo_keys[:4])
    retrain_run, second = _train(world, monkeypatch, jack, 100)
    assert second.id != first.id and second.status == "ready"
    assert second.validation_score < first.validation_score - 0.03
    gate = check_results(retrain_run)["not_worse_than_active"]
    assert not gate.passed and gate.severity.value == "WARN"
    shown = {k: v.value for k, v in gate.metadata.items()}
    assert shown["active_lora_model_id"] == first.id and shown["activated"] is False
    assert shown["validation_score"] == pytest.approx(second.validation_score)
    assert shown["active_validation_score"] == pytest.approx(first.validation_score)
    assert "below active LoRA" in LoraModelsRepository(world.ctx.db).get(second.id).gate_reason

    jobs = GenerationJobsRepository(world.ctx.db)
    [used_first] = enqueue_generations(world.ctx, jack.id, "flux", "portrait on a boat")
    [pinned] = enqueue_generations(world.ctx, jack.id, "flux", "portrait on a boat", strength=0.6, lora_id=second.id)
    assert world.generate([used_first, pinned]).success
    assert jobs.get(used_first).lora_model_id == first.id and jobs.get(used_first).lora_strength == 1.0
    job = jobs.get(pinned)
    assert (job.lora_model_id, job.requested_strength, job.lora_strength) == (second.id, 0.6, 0.6)
    assert job.input_metadata["loraStrengthModel"] == 0.6 and job.input_metadata["requestedLoraModelId"] == second.id

    activate(world.ctx, second.id, by="tester", reason="the new photos are what the client wants")
    [used_second] = enqueue_generations(world.ctx, jack.id, "flux", "portrait on a boat")
    assert world.generate([used_second]).success
    assert jobs.get(used_second).lora_model_id == second.id

    # retention: the first LoRA is idle since the activation; a pending job pinning it keeps it
    [waiting] = enqueue_generations(world.ctx, jack.id, "flux", "later", lora_id=first.id)
    time.sleep(0.2)
    config = {"ops": {"lora_retention": {"config": {"dry_run": True, "older_than_days": 1e-6}}}}
    dry = world.run_job("lora_retention_job", run_config=config)
    assert dry.success
    meta = dry.asset_materializations_for_node("lora_retention")[0].metadata
    assert meta["dry_run"].value is True and meta["kept"].value.get("pinned", 0) >= 1
    assert first.id not in [int(r.data["lora_model_id"]) for r in meta["loras"].records]

    assert world.generate([waiting]).success  # no longer pending: nothing keeps the first LoRA now
    config["ops"]["lora_retention"]["config"]["dry_run"] = True
    dry = world.run_job("lora_retention_job", run_config=config)
    would = [int(r.data["lora_model_id"]) for r in dry.asset_materializations_for_node("lora_retention")[0]
             .metadata["loras"].records]
    assert first.id in would and second.id not in would
    assert LoraModelsRepository(world.ctx.db).get(first.id).status == "ready"  # a dry run changes nothing

    config["ops"]["lora_retention"]["config"]["dry_run"] = False
    run = world.run_job("lora_retention_job", run_config=config)
    assert run.success
    meta = run.asset_materializations_for_node("lora_retention")[0].metadata
    assert first.id in [int(r.data["lora_model_id"]) for r in meta["loras"].records] and meta["errors"].value == 0
    archived = LoraModelsRepository(world.ctx.db).get(first.id)
    assert archived.status == "archived" and not world.ctx.store.exists(archived.model_path)
    assert not list((world.home / "sim_gpu" / "trained").glob(f"{archived.gpu_call_id}*"))
    assert LoraModelsRepository(world.ctx.db).get(second.id).status == "ready"
    assert world.ctx.store.exists(LoraModelsRepository(world.ctx.db).get(second.id).model_path)
