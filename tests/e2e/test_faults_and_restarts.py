"""Reliability: a flaky GPU backend, runs killed with SIGKILL mid-flight, a faulty object store, a dropped
PostgreSQL connection. Nothing is lost, nothing is done twice, nothing is marked ready unverified."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from conftest import REPO_ROOT, person_photos, wait_for
from lora_pipelines.partitions import partition_key
from lora_pipelines.planning.generation import plan_pending_generations
from lora_pipelines.services import training as training_svc
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.generation import run_generation_job
from lora_pipelines.services.reaper import requeue_stale_generations
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.objects import ObjectStoreError
from lora_pipelines.store.objects.local import LocalObjectStore
from pipeline_helpers import open_world

pytest_plugins = ["pipeline_helpers"]

TESTS_DIR = REPO_ROOT / "tests"
TINY = timedelta(milliseconds=1)


# ---------------------------------------------------------------- flaky GPU backend, end to end

FLAKY = {
    "seed": 11,
    "endpoints": {
        "*": {"error_rate": 0.3, "error_statuses": [503, 500]},
        "spawn": {"error_rate": 0.3, "error_statuses": [503], "cold_start_ms": 1500},
        "flux-lora": {"error_rate": 0.3, "error_statuses": [503, 500], "cold_start_ms": 1500},
        "prompt": {"error_rate": 0.3, "error_statuses": [503, 500], "cold_start_ms": 1000},
    },
}


def _drive(world, deadline_s: float) -> None:
    """What the daemon does: tick the sensors, run what they request (once per run key), until all settle."""
    cursors: dict[str, str | None] = {}
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ran = 0
        for sensor, job in (("new_characters", "training_job"), ("training_completion", "training_job"),
                            ("pending_generations", "generation_job")):
            result, runs = world.run_sensor_requests(sensor, job, cursors.get(sensor))
            cursors[sensor] = result.cursor
            ran += len(runs)
        lora_rows = LoraModelsRepository(world.ctx.db).count_by_status()
        jobs = GenerationJobsRepository(world.ctx.db).count_by_status()
        if not ran and not lora_rows.get("training") and not lora_rows.get("pending") \
                and not jobs.get("pending") and not jobs.get("running"):
            return
    raise AssertionError("the pipeline did not settle in time")


@pytest.mark.slow
def test_flaky_gpu_still_gives_one_ready_lora_each_and_every_job_succeeds(tmp_path, faces_dir):
    with open_world(tmp_path, faults=FLAKY) as world, world.active():
        # one lost call on the first submission, on top of the random errors
        world.set_faults({**FLAKY, "endpoints": {**FLAKY["endpoints"], "spawn": {
            **FLAKY["endpoints"]["spawn"], "lost_call": True, "max_faults": 1, "error_rate": 0.0}}})
        people = {name: world.add_character(name, person_photos(faces_dir, folder))
                  for name, folder in (("Katy Perry", "katy_perry"), ("Jennifer Aniston", "jennifer_aniston"))}
        _drive(world, 150)  # trains every character × base model
        jobs = GenerationJobsRepository(world.ctx.db)
        ids = [i for c in people.values() for m in ("flux", "z-image-turbo")
               for i in jobs.enqueue(c.id, m, "a portrait", count=3)]
        _drive(world, 120)

        stats = world.stats()
        lora_repo = LoraModelsRepository(world.ctx.db)
        for character in people.values():
            rows = lora_repo.find_by_character_id(character.id)
            for model in ("flux", "z-image-turbo"):
                assert [r.status for r in rows if r.base_model == model] == ["ready"], rows
        assert stats["requests"]["spawn"] == 4 + 1, "four trainings, one resubmission of the lost call"
        assert sum(int(k) >= 500 for s in stats["statuses"].values() for k in s) > 0, "faults were injected"
        finished = [jobs.get(i) for i in ids]
        assert [j.status for j in finished] == ["succeeded"] * 12
        assert all(len(j.output_keys) == 1 for j in finished)
        assert sum(j.mode == "lora" for j in finished) >= 9


# ---------------------------------------------------------------- killed processes

RUNNER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import dagster as dg
    from pipeline_helpers import QUIET, build_definitions
    from lora_pipelines.partitions import partition_key
    defs = build_definitions()
    instance = dg.DagsterInstance.from_config({dagster_home!r})
    job = defs.resolve_job_def(sys.argv[1])
    if sys.argv[1] == "training_job":
        job.execute_in_process(instance=instance, partition_key=partition_key(int(sys.argv[2]), sys.argv[3]),
                               run_config=QUIET, tags={{"dagster/run_key": "killed-" + sys.argv[2]}})
    else:
        ids = [int(i) for i in sys.argv[2].split(",")]
        ops = {{"generation_outputs": {{"config": {{"job_ids": ids}}}}}}
        job.execute_in_process(instance=instance, run_config={{**QUIET, "ops": ops}})
""")


@pytest.fixture(scope="module")
def restart_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("restart_world")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    world = open_world(root, training_seconds=6.0)
    with world as w:
        w.dagster_home = dagster_home
        w.instance = instance
        yield w
    instance.dispose()


def _spawn_runner(world, *args: str, **env_vars: str) -> subprocess.Popen:
    script = RUNNER.format(tests=str(TESTS_DIR), dagster_home=str(world.dagster_home))
    env = {**os.environ, **world.env, **env_vars}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()


@pytest.mark.slow
def test_killing_a_training_run_mid_call_trains_the_dataset_once(restart_world, faces_dir):
    world = restart_world
    with world.active():
        character = world.add_character("Katy Restarted", person_photos(faces_dir, "katy_perry"))
        world.add_partition(character.id)
        repo = LoraModelsRepository(world.ctx.db)
        runner = _spawn_runner(world, "training_job", str(character.id), "flux")
        try:
            row = wait_for(lambda: next((r for r in repo.find_by_character_id(character.id)
                                          if r.status == "training" and r.gpu_call_id), None), 120, "the GPU call")
            assert runner.poll() is None, runner.stderr.read().decode()[-2000:]
        finally:
            _kill(runner)
        assert world.spawns() == 1
        [dead] = world.instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": f"killed-{character.id}"}))
        assert dead.status == dg.DagsterRunStatus.STARTED  # the process died without saying so

        wait_for(lambda: world.ctx.gpu.training.poll(row.gpu_call_id).state == "succeeded", 60, "the call to end")
        mine = lambda result: [r for r in result.run_requests if r.partition_key == partition_key(character.id, "flux")]  # noqa: E731
        assert mine(world.evaluate_sensor("training_completion")) == [], "a run still marked started is left alone"
        world.instance.report_run_failed(dead)  # what run monitoring does for a run whose process died
        [request] = mine(world.evaluate_sensor("training_completion"))
        assert request.run_key == f"complete:{row.id}:{row.gpu_call_id}:succeeded"

        assert request.asset_selection == [dg.AssetKey("lora_artifact")], "only the finish: no dataset, no submit"
        resumed = world.run_job("training_job", partition_key=request.partition_key, run_config=request.run_config,
                                tags={"dagster/run_key": request.run_key}, asset_selection=request.asset_selection)

        assert resumed.success
        assert resumed.asset_materializations_for_node("lora_artifact")
        assert world.spawns() == 1, "the dataset was submitted to the GPU once"
        [final] = repo.find_by_character_id(character.id)
        assert final.id == row.id and final.status == "ready" and final.gpu_call_id == row.gpu_call_id


@pytest.mark.slow
def test_killing_a_generation_batch_leaves_no_job_lost_or_generated_twice(restart_world, faces_dir):
    world = restart_world
    with world.active():
        world.set_faults({"endpoints": {"face-swap": {"latency_ms": 1200}}})
        character = world.add_character("Jack Dorsey", person_photos(faces_dir, "jack_dorsey"), lora_enabled=False)
        jobs = GenerationJobsRepository(world.ctx.db)
        ids = jobs.enqueue(character.id, "qwen-image", "a portrait", count=6)
        # two calls at a time: killed with jobs done, jobs in flight and jobs not started
        runner = _spawn_runner(world, "generation_job", ",".join(map(str, ids)), LORA_PIPELINES_GPU_CONCURRENCY="2")
        try:
            wait_for(lambda: sum(jobs.get(i).status == "succeeded" for i in ids) >= 2, 120, "two finished jobs")
            wait_for(lambda: any(jobs.get(i).status == "running" for i in ids), 30, "a job in flight")
        finally:
            _kill(runner)
        world.set_faults({})
        before = {i: jobs.get(i) for i in ids}
        done_before = {i for i, j in before.items() if j.status == "succeeded"}
        assert done_before and len(done_before) < len(ids)
        assert any(j.status == "running" for j in before.values())

        requeued = requeue_stale_generations(world.ctx.db, stale_after=TINY)
        batches, _ = plan_pending_generations(world.ctx.db, after_id=ids[-1], requeued=requeued, stale_after=TINY)
        retried = sorted(i for b in batches for i in b.job_ids)
        for batch in batches:
            world.generate(list(batch.job_ids))
        requeued = requeue_stale_generations(world.ctx.db, stale_after=TINY)
        again, _ = plan_pending_generations(world.ctx.db, after_id=ids[-1], requeued=requeued, stale_after=TINY)

        assert retried == sorted(set(ids) - done_before), "every unfinished job, and only those, is retried"
        after = [jobs.get(i) for i in ids]
        assert [j.status for j in after] == ["succeeded"] * len(ids)
        assert all(len(j.output_keys) == 1 for j in after)
        assert all(before[i].output_keys == jobs.get(i).output_keys for i in done_before)
        assert again == []


# ---------------------------------------------------------------- object store faults


class FaultyStore(LocalObjectStore):
    """The local store with the faults of a bad network path: failing uploads, cut-off uploads or downloads."""

    def __init__(self, root: Path, mode: str) -> None:
        super().__init__(root)
        self.mode = mode

    def _is_lora(self, key: str) -> bool:
        return key.startswith("loras/")

    def put_file(self, key, path, content_type=None):
        if self._is_lora(key) and self.mode == "fail_upload":
            raise ObjectStoreError(f"upload of {key} failed: connection reset")
        if self._is_lora(key) and self.mode == "truncate_upload":
            data = Path(path).read_bytes()
            return self.put_bytes(key, data[: len(data) // 2], content_type)
        return super().put_file(key, path, content_type)

    def download_file(self, key, dest_path, expected_sha256=None):
        info = super().download_file(key, dest_path, expected_sha256)
        if self._is_lora(key) and self.mode == "truncate_download":
            data = Path(dest_path).read_bytes()
            Path(dest_path).write_bytes(data[: len(data) - 4096])
        return info

    def get_bytes(self, key):
        if "/photos/" in key and self.mode == "fail_photo_read":
            raise ObjectStoreError(f"read of {key} failed: connection reset")
        return super().get_bytes(key)

    def sha256(self, key):
        if self._is_lora(key) and self.mode == "truncate_download":
            import hashlib

            return hashlib.sha256(self.get_bytes(key)[:-4096]).hexdigest()
        return super().sha256(key)


def _training_row(world, character, n: int, dataset_hash: str):
    """Another row for the same dataset (the file names its dataset: identity_matches compares it)."""
    repo = LoraModelsRepository(world.ctx.db)
    row = repo.create(character_id=character.id, base_model="flux", trigger_word=character.trigger_word,
                      idempotency_key=f"store-fault:{character.id}:{n}", dataset_hash=dataset_hash,
                      training_model="ai-toolkit")
    return repo.transition(row.id, "training", gpu_call_id=f"fc-store-{n}", job_id=str(row.id), backend="simulated")


def test_a_faulty_object_store_never_leads_to_a_ready_lora(trained_world, faces_dir):
    world = trained_world
    with world.active():
        world.set_faults({})
        character = world.add_character("Katy Store Faults", person_photos(faces_dir, "katy_perry"))
        descriptor = training_svc.prepare_dataset(world.ctx, character.id, "flux")
        trained = training_svc.start_training(world.ctx, descriptor)
        result = training_svc.wait_for_training(world.ctx, trained.id, descriptor, timeout_s=60, poll_interval_s=0.2)
        assert result is not None
        repo = LoraModelsRepository(world.ctx.db)
        store_root = world.home / "objects"

        def faulty_ctx(mode: str) -> PipelineContext:
            return PipelineContext(settings=world.ctx.settings, db=world.ctx.db, store=FaultyStore(store_root, mode),
                                   _gpu=world.ctx.gpu)

        # an upload cut short: the stored object's checksum differs → failed
        cut = _training_row(world, character, 1, descriptor.dataset_hash)
        checks = training_svc.publish_artifact(faulty_ctx("truncate_upload"), cut.id, result)
        assert not checks.checksum_matches
        assert repo.get(cut.id).status == "failed" and "checksum" in repo.get(cut.id).error

        # the GPU side uploaded the file itself; our download of it comes back short → failed
        uploaded = _training_row(world, character, 2, descriptor.dataset_hash)
        key = f"loras/flux-character-{character.id}/{uploaded.id}.safetensors"
        world.ctx.gpu.training.fetch_artifact(result, world.root / "gpu_upload.safetensors")
        world.ctx.store.put_file(key, world.root / "gpu_upload.safetensors")
        checks = training_svc.publish_artifact(faulty_ctx("truncate_download"), uploaded.id,
                                               result.model_copy(update={"object_key": key}))
        assert not checks.passed
        assert repo.get(uploaded.id).status == "failed"

        # an upload that fails outright: a clear error, the row is not ready, and a later healthy retry publishes it
        failing = _training_row(world, character, 3, descriptor.dataset_hash)
        with pytest.raises(ObjectStoreError, match="connection reset"):
            training_svc.publish_artifact(faulty_ctx("fail_upload"), failing.id, result)
        assert repo.get(failing.id).status == "training"
        assert training_svc.publish_artifact(world.ctx, failing.id, result).passed
        assert repo.get(failing.id).status == "ready" and repo.get(failing.id).sha256 == result.sha256

        # and a ready LoRA whose download comes back short is not used for generation
        from lora_pipelines.services import lora_lookup

        selection = lora_lookup.get_lora_for_generation(faulty_ctx("truncate_download"), character.id, "flux")
        assert selection.lora is None and selection.reason == "checksum_mismatch"


# ---------------------------------------------------------------- PostgreSQL connection dropped


@pytest.mark.postgres
def test_a_dropped_postgres_connection_leaves_no_half_written_job(trained_world, postgres_url, faces_dir, monkeypatch):
    import sqlalchemy as sa

    from lora_pipelines.services import generation as generation_svc
    from lora_pipelines.services.characters import add_character
    from lora_pipelines.store.database import Database

    world = trained_world
    with world.active():
        db = Database(postgres_url)
        db.upgrade()
        ctx = PipelineContext(settings=world.ctx.settings, db=db, store=world.ctx.store, _gpu=world.ctx.gpu)
        ctx.__dict__["analyzer"] = world.ctx.analyzer
        character, _ = add_character(ctx, "Kit Harington", person_photos(faces_dir, "kit_harington"),
                                     lora_enabled=False)
        jobs = GenerationJobsRepository(db)
        [job_id] = jobs.enqueue(character.id, "qwen-image", "a portrait")
        admin = sa.create_engine(postgres_url)
        ours: set[int] = set()  # only this Database's connections: the server is shared with other tests
        sa.event.listen(db.engine, "connect", lambda dbapi_conn, _record: ours.add(dbapi_conn.info.backend_pid))
        db.engine.dispose()

        def terminate(pids) -> None:
            with admin.connect() as conn:
                for pid in sorted(pids):
                    conn.execute(sa.text("select pg_terminate_backend(:pid, 5000)"), {"pid": pid})

        # 1. between two repository calls: every idle pooled connection is killed after the claim
        real_lookup = generation_svc.get_lora_for_generation

        def lookup_after_drop(*args, **kwargs):
            terminate(ours)
            return real_lookup(*args, **kwargs)

        monkeypatch.setattr(generation_svc, "get_lora_for_generation", lookup_after_drop)
        # 2. inside a transaction: the connection dies as the job's result is written
        killed = []

        def kill_on_finish(conn, cursor, statement, parameters, context, executemany):
            finishing = statement.lstrip().upper().startswith("UPDATE GENERATION_JOBS") and "output_keys" in statement
            if not killed and finishing:
                killed.append(conn.connection.dbapi_connection.info.backend_pid)
                terminate(killed)

        sa.event.listen(db.engine, "before_cursor_execute", kill_on_finish)
        try:
            with pytest.raises(sa.exc.OperationalError):
                run_generation_job(ctx, job_id, worker="doomed")
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", kill_on_finish)
            monkeypatch.setattr(generation_svc, "get_lora_for_generation", real_lookup)

        assert killed, "the connection was dropped inside the finishing transaction"
        half = jobs.get(job_id)
        assert half.status == "running" and half.output_keys == [] and half.mode is None and half.backend is None

        requeued = requeue_stale_generations(db, stale_after=TINY)
        batches, _ = plan_pending_generations(db, after_id=job_id, requeued=requeued, stale_after=TINY)
        assert [b.job_ids for b in batches] == [(job_id,)]
        outcome = run_generation_job(ctx, job_id, worker="retry")

        assert outcome is not None and outcome.status == "succeeded"
        done = jobs.get(job_id)
        assert done.status == "succeeded" and len(done.output_keys) == 1 and done.attempts == 1
        admin.dispose()
        db.engine.dispose()


# ---------------------------------------------------------------- a crash while resubmitting a lost call


def test_a_crash_while_resubmitting_a_lost_call_does_not_use_up_the_retry(trained_world, faces_dir, monkeypatch):
    world = trained_world
    with world.active():
        world.set_faults({})
        character = world.add_character("Katy Resubmit Crash", person_photos(faces_dir, "katy_perry"))
        descriptor = training_svc.prepare_dataset(world.ctx, character.id, "flux")
        repo = LoraModelsRepository(world.ctx.db)
        row = repo.create(character_id=character.id, base_model="flux", trigger_word=character.trigger_word,
                          idempotency_key=f"resubmit-crash:{character.id}", dataset_hash=descriptor.dataset_hash,
                          training_model="ai-toolkit")
        row = repo.transition(row.id, "training", gpu_call_id="fc-lost-before-crash", job_id=str(row.id),
                              backend="simulated")
        training = world.ctx.gpu.training

        def die(spec):
            raise RuntimeError("the run process died while submitting")

        monkeypatch.setattr(training, "submit_training", die)
        with pytest.raises(RuntimeError, match="died"):
            training_svc.wait_for_training(world.ctx, row.id, descriptor, timeout_s=30, poll_interval_s=0.2)
        monkeypatch.undo()
        crashed = repo.get(row.id)
        assert (crashed.status, crashed.attempt, crashed.gpu_call_id) == ("training", 1, "fc-lost-before-crash")

        spawns = world.spawns()
        result = training_svc.wait_for_training(world.ctx, row.id, descriptor, timeout_s=60, poll_interval_s=0.2)

        assert result is not None, repo.get(row.id).error
        assert world.spawns() == spawns + 1
        assert repo.get(row.id).attempt == 2
        assert training_svc.publish_artifact(world.ctx, row.id, result).passed


def test_an_unreadable_reference_photo_falls_back_to_standard_generation(trained_world, faces_dir):
    world = trained_world
    with world.active():
        world.set_faults({})
        character = world.add_character("Jennifer Unreadable", person_photos(faces_dir, "jennifer_aniston")[:1],
                                        lora_enabled=False)
        ctx = PipelineContext(settings=world.ctx.settings, db=world.ctx.db,
                              store=FaultyStore(world.home / "objects", "fail_photo_read"), _gpu=world.ctx.gpu)
        ctx.__dict__["analyzer"] = world.ctx.analyzer
        jobs = GenerationJobsRepository(world.ctx.db)
        [job_id] = jobs.enqueue(character.id, "qwen-image", "a portrait")

        outcome = run_generation_job(ctx, job_id, worker="test")

        job = jobs.get(job_id)
        assert outcome is not None and job.status == "succeeded" and job.mode == "standard"
        assert "connection reset" in job.input_metadata["referencePhotoError"]
        assert len(job.output_keys) == 1
        assert job.face_count is None and "connection reset" in job.input_metadata["faceScoreError"]
