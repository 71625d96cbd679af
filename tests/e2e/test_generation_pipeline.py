"""generation_job through Dagster: LoRA generations keep the face; without a usable LoRA they fall back and succeed."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest
from click.testing import CliRunner

from conftest import person_photos
from lora_pipelines.domain.keys import lora_key
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from pipeline_helpers import check_results

pytest_plugins = ["pipeline_helpers"]

PROMPT = "portrait photo in a sunlit park, 85mm"


def _ready(world, character_id: int, base_model: str):
    [row] = [r for r in LoraModelsRepository(world.ctx.db).find_by_character_and_model(character_id, base_model)
             if r.status == "ready"]
    return row


def _jobs(world, ids):
    repo = GenerationJobsRepository(world.ctx.db)
    return [repo.get(i) for i in ids]


@pytest.fixture(scope="module")
def lora_batch(trained_world):
    """Ten generations of Katy with her LoRAs: five on flux (Modal-style endpoint), five on z-image-turbo (ComfyUI)."""
    world = trained_world
    with world.active():
        repo = GenerationJobsRepository(world.ctx.db)
        ids = repo.enqueue(world.katy.id, "flux", PROMPT, count=5)
        ids += repo.enqueue(world.katy.id, "z-image-turbo", PROMPT, count=5)
        before = world.stats()["requests"]
        result = world.generate(ids)
        after = world.stats()["requests"]
    return {"ids": ids, "result": result, "before": before, "after": after}


def test_generations_with_a_ready_lora_keep_the_face(trained_world, lora_batch):
    world = trained_world
    assert lora_batch["result"].success
    jobs = _jobs(world, lora_batch["ids"])
    loras = {m: _ready(world, world.katy.id, m) for m in ("flux", "z-image-turbo")}

    assert [j.status for j in jobs] == ["succeeded"] * 10
    assert [j.mode for j in jobs] == ["lora"] * 10
    assert all(j.lora_model_id == loras[j.model].id for j in jobs)
    assert all(j.trigger_word == world.katy.trigger_word and j.sent_prompt.startswith(f"{j.trigger_word}, ")
               for j in jobs)
    assert all(j.input_metadata["loraModelId"] == j.lora_model_id for j in jobs)
    matched = [j.face_distance is not None and j.face_distance < j.input_metadata["faceThreshold"] for j in jobs]
    assert sum(matched) / len(matched) >= 0.95, [(j.model, j.face_distance) for j in jobs]
    assert all(world.ctx.store.exists(j.output_keys[0]) for j in jobs)
    # both routes were really used: five Modal-style LoRA calls, five ComfyUI prompts
    assert lora_batch["after"].get("flux-lora", 0) - lora_batch["before"].get("flux-lora", 0) == 5
    assert lora_batch["after"].get("prompt", 0) - lora_batch["before"].get("prompt", 0) == 5
    checks = check_results(lora_batch["result"])
    assert checks["face_consistency"].passed and checks["generation_success_rate"].passed


def test_running_the_same_batch_twice_generates_nothing_twice(world, lora_batch):
    before = world.stats()["requests"]
    outputs = {j.id: list(j.output_keys) for j in _jobs(world, lora_batch["ids"])}

    again = world.generate(lora_batch["ids"])

    assert again.success
    metadata = again.asset_materializations_for_node("generation_outputs")[0].metadata
    assert metadata["jobs"].value == 0
    after = world.stats()["requests"]
    assert after.get("flux-lora") == before.get("flux-lora") and after.get("prompt") == before.get("prompt")
    assert {j.id: list(j.output_keys) for j in _jobs(world, lora_batch["ids"])} == outputs
    assert all(len(keys) == 1 for keys in outputs.values())


def test_a_character_without_lora_falls_back_and_still_succeeds(world, faces_dir):
    character = world.add_character("Jennifer Aniston", person_photos(faces_dir, "jennifer_aniston"),
                                    lora_enabled=False)
    repo = GenerationJobsRepository(world.ctx.db)
    ids = repo.enqueue(character.id, "flux", PROMPT) + repo.enqueue(character.id, "z-image-turbo", PROMPT)

    result = world.generate(ids)

    assert result.success
    for job in _jobs(world, ids):
        assert job.status == "succeeded"
        assert job.mode == "face_swap"
        assert job.lora_skipped_reason == "lora_disabled"
        assert job.lora_model_id is None and job.trigger_word is None
        assert job.sent_prompt == PROMPT
        assert job.input_metadata["fallback"] is True
        assert len(job.output_keys) == 1


def test_a_lora_of_the_wrong_base_model_is_refused_before_use(world, faces_dir):
    """A ready flux row whose stored file is really a z-image-turbo LoRA (right sha256): refused, never sent."""
    character = world.add_character("Katy Mislabelled", person_photos(faces_dir, "katy_perry"))
    z_image = _ready(world, world.katy.id, "z-image-turbo")
    repo = LoraModelsRepository(world.ctx.db)
    row = repo.create(character_id=character.id, base_model="flux", trigger_word=character.trigger_word,
                      idempotency_key=f"crafted:{character.id}", dataset_hash="0" * 64, training_model="ai-toolkit")
    key = lora_key("flux", str(character.id), str(row.id))
    local = world.root / "crafted.safetensors"
    world.ctx.store.download_file(z_image.model_path, local)
    info = world.ctx.store.put_file(key, local)
    repo.transition(row.id, "training", gpu_call_id="fc-crafted", job_id=str(row.id), backend="simulated")
    repo.transition(row.id, "ready", model_path=key, model_url=world.ctx.store.uri(key), sha256=z_image.sha256,
                    size_bytes=info.size_bytes)
    ids = GenerationJobsRepository(world.ctx.db).enqueue(character.id, "flux", PROMPT, count=2)
    before = world.stats()["requests"].get("flux-lora", 0)

    result = world.generate(ids)

    assert result.success
    for job in _jobs(world, ids):
        assert job.status == "succeeded" and job.mode == "face_swap"
        assert job.lora_skipped_reason == "base_model_mismatch"
        assert "z-image-turbo" in job.input_metadata["loraSkippedDetail"]
        assert job.lora_model_id is None and job.trigger_word is None
        assert not any(a["mode"] == "lora" for a in job.input_metadata["routes"])
    assert world.stats()["requests"].get("flux-lora", 0) == before
    assert not (world.sim.home / "models" / "loras" / f"{row.id}.safetensors").exists()


def test_a_backend_failing_every_lora_call_still_succeeds_through_fallback(world, tmp_path, monkeypatch):
    """flux: /flux-lora answers 503 every time. z-image-turbo: the pod's LoRA folder is not the one ComfyUI reads,
    so every LoRA workflow is refused (400 value_not_in_list) while the other workflows run."""
    from lora_pipelines.gpu import factory

    world.set_faults({"endpoints": {"flux-lora": {"error_rate": 1.0, "error_statuses": [503]}}})
    served = world.sim.home / "models" / "loras"
    hidden = tmp_path / "served_loras_backup"
    shutil.copytree(served, hidden)
    for f in served.glob("*.safetensors"):
        f.unlink()
    real_build = factory.build_gpu_services

    def services_with_a_pod_cache_not_served(settings):  # what the run's context builds
        services = real_build(settings)
        services.loras_root = tmp_path / "pod_cache_not_served"
        return services

    monkeypatch.setattr(factory, "build_gpu_services", services_with_a_pod_cache_not_served)
    try:
        repo = GenerationJobsRepository(world.ctx.db)
        ids = (repo.enqueue(world.katy.id, "flux", PROMPT, count=2)
               + repo.enqueue(world.katy.id, "z-image-turbo", PROMPT, count=2))
        result = world.generate(ids)
    finally:
        monkeypatch.undo()
        for f in hidden.glob("*.safetensors"):
            shutil.copy(f, served / f.name)

    assert result.success
    for job in _jobs(world, ids):
        assert job.status == "succeeded", job.error
        assert job.mode == "face_swap"
        assert job.lora_skipped_reason == "lora_route_failed"
        first = job.input_metadata["routes"][0]
        assert first["mode"] == "lora" and first["ok"] is False and first["error"]
        assert job.input_metadata["candidateLoraModelId"] == _ready(world, world.katy.id, job.model).id
        assert job.lora_model_id is None
    flux_errors = [j.input_metadata["routes"][0]["error"] for j in _jobs(world, ids) if j.model == "flux"]
    comfy_errors = [j.input_metadata["routes"][0]["error"] for j in _jobs(world, ids) if j.model == "z-image-turbo"]
    assert all("503" in e for e in flux_errors), flux_errors
    # the pre-queue check of GET /models/loras refuses it before ComfyUI would (value_not_in_list)
    zimage_lora = _ready(world, world.katy.id, "z-image-turbo").id
    assert all("LoraNotOnPodError" in e and f"{zimage_lora}.safetensors" in e for e in comfy_errors), comfy_errors
    assert world.stats()["statuses"]["flux-lora"].get("503", 0) >= 2


def test_generate_cli_with_wait_prints_the_outputs(world, monkeypatch):
    from lora_pipelines.cli import main

    monkeypatch.setenv("DAGSTER_HOME", world.instance.root_directory)  # the instance the command records in

    cli = CliRunner().invoke(main, ["generate", "--character", str(world.katy.id), "--model", "flux",
                                    "--prompt", PROMPT, "--count", "2", "--wait"])

    assert cli.exit_code == 0, cli.output
    lines = cli.stdout.strip().splitlines()
    assert lines[0].startswith("enqueued generation jobs ")
    printed = [json.loads(line) for line in lines[1:]]
    assert len(printed) == 2
    for job in printed:
        assert job["status"] == "succeeded" and job["mode"] == "lora"
        assert job["lora_model_id"] == _ready(world, world.katy.id, "flux").id
        assert job["prompt"] == f"{world.katy.trigger_word}, {PROMPT}"
        assert len(job["output_uris"]) == 1 and job["output_uris"][0].startswith("file://")
        assert (world.home / "objects" / job["output_keys"][0]).stat().st_size > 0
        assert job["output_urls"] == job["output_uris"]  # a folder store: file URLs that open the image

    # the jobs ran as a generation_job run on the Dagster instance of DAGSTER_HOME: the run, its materialization
    # and its checks are recorded there
    [run_id] = {job["dagster_run_id"] for job in printed}
    instance = world.instance
    run = instance.get_run_by_id(run_id)
    assert run.job_name == "generation_job" and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["lora_pipelines/launched_by"] == "cli"
    [record] = [r for r in instance.fetch_materializations(dg.AssetKey("generation_outputs"), limit=50).records
                if r.run_id == run_id]
    assert record.asset_materialization.metadata["job_ids"].value == [job["id"] for job in printed]
    check = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey("generation_outputs"), "generation_success_rate"))
    assert check is not None and check.run_id == run_id


def test_generate_cli_with_wait_waits_for_jobs_another_worker_claimed(world, monkeypatch):
    """--wait prints final jobs: one the sensor's run claimed first is waited for, not printed while running."""
    import threading

    from lora_pipelines.cli import main
    from lora_pipelines.services import generation_batch

    def claimed_elsewhere(ctx, job_id, worker, finish_after_s):
        repo = GenerationJobsRepository(ctx.db)
        assert repo.claim(job_id, "sensor-run") is not None
        if finish_after_s is not None:
            threading.Timer(finish_after_s, repo.finish, args=(job_id, "failed"),
                            kwargs={"error": "ran elsewhere"}).start()
        return None

    args = ["generate", "--character", str(world.katy.id), "--model", "flux", "--prompt", PROMPT, "--wait"]
    monkeypatch.setattr(generation_batch, "run_generation_job",
                        lambda c, j, worker, **_: claimed_elsewhere(c, j, worker, 0.5))
    waited = CliRunner().invoke(main, [*args, "--timeout", "30"])
    monkeypatch.setattr(generation_batch, "run_generation_job",
                        lambda c, j, worker, **_: claimed_elsewhere(c, j, worker, None))
    timed_out = CliRunner().invoke(main, [*args, "--timeout", "1"])

    assert waited.exit_code == 0, waited.output
    [printed] = [json.loads(line) for line in waited.stdout.strip().splitlines()[1:]]
    assert printed["status"] == "failed" and printed["error"] == "ran elsewhere"
    assert timed_out.exit_code != 0 and "still running elsewhere" in timed_out.output
    [stuck] = [int(i) for i in timed_out.output.splitlines()[0].rsplit(" ", 1)[1].split(",")]
    GenerationJobsRepository(world.ctx.db).finish(stuck, "failed", error="test over")
