"""The sensors, evaluated as the daemon would (build_sensor_context + cursor): what they request, and the run keys."""

from __future__ import annotations

import time
from datetime import timedelta

import dagster as dg
import pytest

from conftest import person_photos
from lora_pipelines.domain.keys import photo_key
from lora_pipelines.partitions import partition_key
from lora_pipelines.planning.generation import plan_pending_generations
from lora_pipelines.services.reaper import requeue_stale_generations
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from pipeline_helpers import open_world, photo_name


@pytest.fixture(scope="module")
def sensor_world(tmp_path_factory):
    with open_world(tmp_path_factory.mktemp("sensor_world")) as world:
        yield world


@pytest.fixture()
def world(sensor_world):
    with sensor_world.active():
        yield sensor_world


def _keys(result: dg.SensorResult) -> list[str]:
    return sorted(r.run_key for r in result.run_requests or [])


def _added_partitions(result: dg.SensorResult) -> list[str]:
    return sorted(k for r in result.dynamic_partitions_requests or [] for k in r.partition_keys)


def _add_photos(world, character_id: int, photos) -> None:
    keys = []
    for path in photos:
        data = path.read_bytes()
        key = photo_key(str(character_id), photo_name(data, path.suffix))
        world.ctx.store.put_bytes(key, data)
        keys.append(key)
    CharactersRepository(world.ctx.db).add_photo_keys(character_id, keys)


def test_new_characters_requests_each_training_once_with_deterministic_keys(world, faces_dir):
    ready = world.add_character("Angelina Jolie", person_photos(faces_dir, "angelina_jolie"))
    disabled = world.add_character("Joe Biden", person_photos(faces_dir, "joe_biden"), lora_enabled=False)
    too_few = world.add_character("Jack Dorsey", person_photos(faces_dir, "jack_dorsey")[:2])

    first = world.evaluate_sensor("new_characters")
    second = world.evaluate_sensor("new_characters", first.cursor)
    replay = world.evaluate_sensor("new_characters")

    assert _added_partitions(first) == sorted([str(ready.id), str(too_few.id)])
    assert str(disabled.id) not in _added_partitions(first)
    requests = {(r.partition_key.keys_by_dimension["character"], r.partition_key.keys_by_dimension["base_model"])
                for r in first.run_requests}
    assert requests == {(str(ready.id), "flux"), (str(ready.id), "z-image-turbo")}
    assert all(r.run_key.startswith(f"train:{ready.id}:") for r in first.run_requests)
    assert second.run_requests == [] and _added_partitions(second) == []
    assert second.cursor == first.cursor
    assert _keys(replay) == _keys(first), "same inputs, same run keys"

    # new photos: a new key for that character only (it is a legitimately new training)
    time.sleep(0.01)
    _add_photos(world, too_few.id, person_photos(faces_dir, "jack_dorsey")[2:])
    _add_photos(world, ready.id, person_photos(faces_dir, "jennifer_aniston")[:1])
    third = world.evaluate_sensor("new_characters", second.cursor)

    new_keys = _keys(third)
    assert len(new_keys) == 4
    characters = {r.partition_key.keys_by_dimension["character"] for r in third.run_requests}
    assert characters == {str(ready.id), str(too_few.id)}
    assert not set(new_keys) & set(_keys(first))
    assert world.evaluate_sensor("new_characters", third.cursor).run_requests == []


def test_training_completion_requests_the_finishing_run_for_ended_calls(world, faces_dir, monkeypatch):
    character = world.add_character("Kit Harington", person_photos(faces_dir, "kit_harington")[:1])
    repo = LoraModelsRepository(world.ctx.db)
    row = repo.create(character_id=character.id, base_model="flux", trigger_word=character.trigger_word,
                      idempotency_key=f"sensor-test:{character.id}", dataset_hash="1" * 64, training_model="ai-toolkit")
    repo.transition(row.id, "training", gpu_call_id="fc-never-existed", job_id=str(row.id), backend="simulated")
    world.add_partition(character.id)

    first = world.evaluate_sensor("training_completion")
    again = world.evaluate_sensor("training_completion")

    mine = [r for r in first.run_requests if r.run_key.startswith(f"complete:{row.id}:")]
    assert [r.run_key for r in mine] == [f"complete:{row.id}:fc-never-existed:lost"]
    assert mine[0].partition_key == partition_key(character.id, "flux")
    assert _keys(again) == _keys(first)

    # while a run of that partition is in progress, the sensor leaves it alone
    job = world.defs.resolve_job_def("training_job")
    tags = {f"dagster/partition/{d}": v for d, v in partition_key(character.id, "flux").keys_by_dimension.items()}
    world.instance.create_run_for_job(job, tags=tags, status=dg.DagsterRunStatus.STARTED)
    busy = world.evaluate_sensor("training_completion")
    assert not [r for r in busy.run_requests if r.run_key.startswith(f"complete:{row.id}:")]

    # ...unless that run started longer ago than any training run can poll: it died without being marked
    import lora_pipelines.sensors.training as training_sensors

    wait = world.ctx.settings.training_wait_seconds
    monkeypatch.setattr(training_sensors, "DEAD_RUN_SLACK_SECONDS", -wait - 60)  # "now" is past the horizon
    dead = world.evaluate_sensor("training_completion")
    assert [r.run_key for r in dead.run_requests if r.run_key.startswith(f"complete:{row.id}:")] == [mine[0].run_key]
    repo.transition(row.id, "failed", error="test over")


def test_pending_generations_batches_new_jobs_once_and_retries_stale_ones(world, faces_dir):
    character = world.add_character("Matt Damon", person_photos(faces_dir, "matt_damon")[:1], lora_enabled=False)
    jobs = GenerationJobsRepository(world.ctx.db)
    ids = jobs.enqueue(character.id, "flux", "a portrait", count=3)
    start = str(ids[0] - 1)

    first = world.evaluate_sensor("pending_generations", start)
    second = world.evaluate_sensor("pending_generations", first.cursor)
    replay = world.evaluate_sensor("pending_generations", start)

    [request] = first.run_requests
    assert request.run_key == f"gen:{ids[0]}-{ids[-1]}:3"
    assert request.run_config["ops"]["generation_outputs"]["config"]["job_ids"] == ids
    assert first.cursor == str(ids[-1])
    assert second.run_requests == [] and second.cursor == first.cursor
    assert _keys(replay) == _keys(first)

    more = jobs.enqueue(character.id, "flux", "another portrait", count=2)
    [later] = world.evaluate_sensor("pending_generations", second.cursor).run_requests
    assert later.run_config["ops"]["generation_outputs"]["config"]["job_ids"] == more

    # a job claimed by a worker that died goes back to pending, under a key naming its attempt
    assert jobs.claim(ids[0], "dead-worker") is not None
    requeued = requeue_stale_generations(world.ctx.db, stale_after=timedelta(milliseconds=1))
    batches, _ = plan_pending_generations(world.ctx.db, more[-1], requeued=requeued,
                                          stale_after=timedelta(milliseconds=1))
    assert [b.run_key for b in batches if ids[0] in b.job_ids] == [f"gen-retry:{ids[0]}:1"]
    assert jobs.get(ids[0]).status == "pending" and jobs.get(ids[0]).attempts == 1


def test_training_completion_retries_a_finishing_run_that_failed_under_a_new_key(world, faces_dir):
    """Dagster never reruns a key: a finishing run that failed (or died) must not leave the row `training`."""
    from lora_pipelines.sensors.training import COMPLETES_TAG, MAX_COMPLETION_RUNS

    character = world.add_character("Kit Retried", person_photos(faces_dir, "kit_harington")[:1])
    repo = LoraModelsRepository(world.ctx.db)
    row = repo.create(character_id=character.id, base_model="flux", trigger_word=character.trigger_word,
                      idempotency_key=f"sensor-rerun:{character.id}", dataset_hash="2" * 64,
                      training_model="ai-toolkit")
    repo.transition(row.id, "training", gpu_call_id="fc-gone-too", job_id=str(row.id), backend="simulated")
    world.add_partition(character.id)
    job = world.defs.resolve_job_def("training_job")
    base = f"complete:{row.id}:fc-gone-too:lost"

    def mine() -> list[dg.RunRequest]:
        return [r for r in world.evaluate_sensor("training_completion").run_requests
                if r.run_key.startswith(f"complete:{row.id}:")]

    keys = []
    for _ in range(MAX_COMPLETION_RUNS):
        [request] = mine()
        assert [r.run_key for r in mine()] == [request.run_key], "deterministic between failures"
        assert request.tags[COMPLETES_TAG] == base
        keys.append(request.run_key)
        world.instance.create_run_for_job(job, tags={**request.tags, "dagster/run_key": request.run_key},
                                          status=dg.DagsterRunStatus.FAILURE)
    assert keys == [base, f"{base}:rerun1", f"{base}:rerun2"]
    assert mine() == [], "past the cap the sensor stops asking"
    repo.transition(row.id, "failed", error="test over")


def test_an_orphaned_pending_job_is_requested_again_when_its_orphan_run_dies_too(world, faces_dir):
    character = world.add_character("Matt Orphan", person_photos(faces_dir, "matt_damon")[:1], lora_enabled=False)
    jobs = GenerationJobsRepository(world.ctx.db)
    [job_id] = jobs.enqueue(character.id, "flux", "a portrait")
    stale = timedelta(seconds=1)

    def orphan_keys() -> list[str]:
        batches, _ = plan_pending_generations(world.ctx.db, job_id, stale_after=stale)
        return [b.run_key for b in batches if b.job_ids == (job_id,)]

    assert orphan_keys() == [], "not stale yet: its batch run may still be on its way"
    time.sleep(1.1)
    first = orphan_keys()
    assert first == [f"gen-orphan:{job_id}:0:1"] and orphan_keys() == first, "one key per stale period"
    time.sleep(1.0)  # the run requested under that key died before claiming the job: its key is spent
    assert orphan_keys() == [f"gen-orphan:{job_id}:0:2"]
    assert jobs.claim(job_id, "test") is not None and jobs.finish(job_id, "failed", error="test over")


def test_demo_runs_are_tagged_so_the_daemon_never_reruns_their_keys(world, faces_dir):
    """The sensor daemon treats a run key as used only by a run tagged with the same sensor name: the demo's
    runs must carry it, or `dagster dev` on the demo's instance would request every demo run again."""
    from lora_pipelines.demo.sensor_runs import execute_request

    character = world.add_character("Demo Tagged", person_photos(faces_dir, "matt_damon")[:1], lora_enabled=False)
    jobs = GenerationJobsRepository(world.ctx.db)
    [job_id] = jobs.enqueue(character.id, "flux", "a portrait")
    assert jobs.claim(job_id, "test") is not None and jobs.finish(job_id, "failed", error="done elsewhere")
    request = dg.RunRequest(run_key=f"gen:{job_id}-{job_id}:1",
                            run_config={"ops": {"generation_outputs": {"config": {"job_ids": [job_id]}}}})

    assert execute_request(world.instance, world.defs, "generation_job", request, lambda _message: None,
                    sensor_name="pending_generations")

    [run] = world.instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": request.run_key}))
    assert run.tags.get("dagster/sensor_name") == "pending_generations"
    assert jobs.get(job_id).status == "failed", "a finished job is not generated again"


def test_a_sensor_tick_never_starts_the_simulated_gpu_service(lp_home, faces_dir, monkeypatch):
    """Ticks use the database and the store. training_completion polls the simulated service only when one is
    already running; otherwise it leaves the polling to the finishing run it requests, which starts one."""
    import json
    import os
    import signal

    from lora_pipelines.definitions import defs as definitions
    from lora_pipelines.gpu.sim_launcher import STATE_FILE, ensure_sim_gpu_running, sim_home
    from lora_pipelines.services.characters import add_character
    from lora_pipelines.services.context import PipelineContext

    monkeypatch.setenv("LORA_PIPELINES_GPU_BACKEND", "simulated")
    ctx = PipelineContext.from_settings()
    ctx.db.upgrade()
    character, _ = add_character(ctx, "Kit Offline", person_photos(faces_dir, "kit_harington")[:1], lora_enabled=True)
    repo = LoraModelsRepository(ctx.db)
    row = repo.create(character_id=character.id, base_model="flux", trigger_word=character.trigger_word,
                      idempotency_key=f"offline:{character.id}", dataset_hash="3" * 64, training_model="ai-toolkit")
    repo.transition(row.id, "training", gpu_call_id="fc-of-a-stopped-service", job_id=str(row.id), backend="simulated")
    GenerationJobsRepository(ctx.db).enqueue(character.id, "flux", "a portrait")
    defs = definitions()

    def tick(instance, name: str) -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
            return defs.resolve_sensor_def(name)(context)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("characters", [str(character.id)])
        names = ("new_characters", "training_completion", "pending_generations")
        ticks = {name: tick(instance, name) for name in names}

        assert not sim_home(lp_home).exists(), "a tick started (or tried to start) the simulated service"
        assert _added_partitions(ticks["new_characters"]) == [str(character.id)]
        assert len(ticks["pending_generations"].run_requests) == 1
        [finishing] = ticks["training_completion"].run_requests
        assert finishing.run_key == f"complete:{row.id}:fc-of-a-stopped-service:unpolled"
        assert finishing.partition_key == partition_key(character.id, "flux")

        # a run started the service: the next tick asks it (it never knew the call: lost) and starts no other
        ensure_sim_gpu_running(lp_home, idle_exit_s=60)
        state = (sim_home(lp_home) / STATE_FILE).read_text()
        pid = json.loads(state)["pid"]
        try:
            polled = tick(instance, "training_completion")
            assert _keys(polled) == [f"complete:{row.id}:fc-of-a-stopped-service:lost"]
            assert (sim_home(lp_home) / STATE_FILE).read_text() == state
        finally:
            os.kill(pid, signal.SIGTERM)
    ctx.close()
