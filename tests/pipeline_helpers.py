"""Shared helpers for the Dagster pipeline tests: an isolated world with its own home, simulated GPU service,
Definitions and Dagster instance, plus small actions (add a character, run a job, evaluate a sensor).

A world sets LORA_PIPELINES_* only while it is active (`with world.active():`), so other test files in the
same session never see its settings.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from conftest import person_photos
from lora_pipelines.resources import PipelineResource
from lora_pipelines.services.context import PipelineContext
from sim_gpu.faults import FaultConfig
from sim_gpu.server import SimGpuServer

BASE_ENV = {
    "LORA_PIPELINES_MIN_PHOTOS": "4",
    "LORA_PIPELINES_TRAIN_BASE_MODELS": "flux,z-image-turbo",
    "LORA_PIPELINES_TRAINING_STEPS": "1000",  # a realistic LoRA: the simulated likeness depends on steps
    "LORA_PIPELINES_TRAINING_WAIT_SECONDS": "60",
    "LORA_PIPELINES_GPU_TIMEOUT_SECONDS": "30",
}
CLEARED_ENV = ("LORA_PIPELINES_DATABASE_URL", "LORA_PIPELINES_STORE_URL", "LORA_PIPELINES_S3_ENDPOINT_URL",
               "LORA_PIPELINES_GPU_BACKEND", "LORA_PIPELINES_COMFYUI_URL", "LORA_PIPELINES_MODAL_ENDPOINT_URL",
               "LORA_PIPELINES_SIM_FAULTS")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def photo_name(data: bytes, suffix: str) -> str:
    """The file name add_character stores a photo under (its content hash), which datasets report."""
    return f"{hashlib.sha256(data).hexdigest()[:16]}{suffix.lower()}"


class CachingAnalyzer:
    """The real FaceAnalyzer, remembering each image's faces: tests reuse the same photos across worlds and
    base models, and dlib on a busy 2-core machine is the slowest part of a training run."""

    def __init__(self) -> None:
        from lora_pipelines.faces.embeddings import FaceAnalyzer

        self._inner = FaceAnalyzer()
        self._memo: dict[tuple, list] = {}
        self.misses = 0

    def warm_up(self) -> None:
        self._inner.warm_up()

    def analyze(self, img, **kwargs: Any) -> list:
        key = (hashlib.sha256(img.tobytes()).hexdigest(), img.mode, img.size, tuple(sorted(kwargs.items())))
        if key not in self._memo:
            self.misses += 1
            self._memo[key] = self._inner.analyze(img, **kwargs)
        return self._memo[key]


SHARED_ANALYZER = CachingAnalyzer()


class MemoizingPipelineResource(PipelineResource):
    """The project's resource; the context it builds for each run and tick uses SHARED_ANALYZER."""

    def build_context(self) -> PipelineContext:
        ctx = super().build_context()
        ctx.__dict__["analyzer"] = SHARED_ANALYZER  # PipelineContext.analyzer is a cached_property
        return ctx


def build_definitions() -> dg.Definitions:
    """The project's definitions, built by its definitions function from the current environment, with the
    pipeline resource swapped for one whose contexts share SHARED_ANALYZER."""
    from lora_pipelines.definitions import defs

    built = defs()
    return dg.Definitions(assets=built.assets, asset_checks=built.asset_checks, jobs=built.jobs, sensors=built.sensors,
                          schedules=built.schedules,
                          resources={**built.resources, "pipeline": MemoizingPipelineResource.from_environment()})


@dataclass
class World:
    """One isolated pipeline: LORA_PIPELINES_HOME, a SimGpuServer in this process, Definitions, an instance.

    `ctx` is this world's own PipelineContext on the same settings, for arranging and asserting; each run and
    sensor tick builds its own through the pipeline resource."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    training_seconds: float = 0.4
    faults: dict | None = None

    def __post_init__(self) -> None:
        self.home = self.root / "lp_home"
        self._stack = contextlib.ExitStack()

    # ---- lifecycle ----
    def start(self, instance: dg.DagsterInstance | None = None) -> World:
        self.home.mkdir(parents=True, exist_ok=True)
        store_root = self.home / "objects"
        store_root.mkdir(parents=True, exist_ok=True)
        self.sim = SimGpuServer(self.home / "sim_gpu", allowed_roots=[store_root],
                                training_seconds=self.training_seconds,
                                faults=FaultConfig.model_validate(self.faults or {}))
        self._stack.callback(self.sim.stop)
        self.sim.start()
        self.env = {**BASE_ENV, **self.env, "LORA_PIPELINES_HOME": str(self.home),
                    "LORA_PIPELINES_SIM_GPU_URL": self.sim.url}
        self.instance = instance or self._stack.enter_context(dg.instance_for_test())
        with self.active():
            self.defs = build_definitions()
            self.ctx = PipelineContext.from_settings()
            self.ctx.__dict__["analyzer"] = SHARED_ANALYZER
            self._stack.callback(self.ctx.close)
            self.ctx.db.upgrade()
        return self

    def close(self) -> None:
        self._stack.close()

    @contextlib.contextmanager
    def active(self) -> Iterator[World]:
        with pytest.MonkeyPatch.context() as mp:
            for var in CLEARED_ENV:
                if var not in self.env:
                    mp.delenv(var, raising=False)
            for var, value in self.env.items():
                mp.setenv(var, value)
            yield self

    # ---- the simulated GPU service ----
    def set_faults(self, config: dict | None = None) -> None:
        httpx.post(f"{self.sim.url}/_sim/faults", json=config or {}, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.sim.url}/_sim/stats", timeout=10).json()

    def reset_stats(self) -> None:
        httpx.post(f"{self.sim.url}/_sim/reset_stats", timeout=10).raise_for_status()

    def spawns(self) -> int:
        return self.stats()["requests"].get("spawn", 0)

    # ---- arranging ----
    def add_character(self, name: str, photos: list[Path], *, lora_enabled: bool = True):
        from lora_pipelines.services.characters import add_character

        character, _skipped = add_character(self.ctx, name, photos, lora_enabled=lora_enabled,
                                            allow_duplicate_name=True)
        return character

    def add_partition(self, character_id: int) -> None:
        self.instance.add_dynamic_partitions("characters", [str(character_id)])

    # ---- acting ----
    def run_job(self, job_name: str, *, partition_key: Any = None, run_config: dict | None = None,
                tags: dict | None = None,
                asset_selection: list[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            instance=self.instance, partition_key=partition_key, run_config={**QUIET, **(run_config or {})},
            tags=tags, raise_on_error=False, asset_selection=asset_selection,
        )

    def train(self, character_id: int, base_model: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        from lora_pipelines.partitions import partition_key

        self.add_partition(character_id)
        return self.run_job("training_job", partition_key=partition_key(character_id, base_model), **kwargs)

    def generate(self, job_ids: list[int]) -> dg.ExecuteInProcessResult:
        return self.run_job("generation_job",
                            run_config={"ops": {"generation_outputs": {"config": {"job_ids": list(job_ids)}}}})

    def evaluate_sensor(self, name: str, cursor: str | None = None) -> dg.SensorResult:
        sensor = self.defs.resolve_sensor_def(name)
        with dg.build_sensor_context(instance=self.instance, cursor=cursor, definitions=self.defs,
                                     resources=self.defs.resources) as context:
            return sensor(context)

    def run_sensor_requests(self, name: str, job_name: str, cursor: str | None = None):
        """Evaluate a sensor and run what it asks for, skipping keys already run (as the daemon does)."""
        from lora_pipelines.demo.sensor_runs import apply_sensor_result

        result = self.evaluate_sensor(name, cursor)
        apply_sensor_result(self.instance, result)
        results = []
        for request in result.run_requests or []:
            if self.instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": request.run_key}), limit=1):
                continue
            results.append(self.run_job(job_name, partition_key=request.partition_key,
                                        run_config=request.run_config or None,
                                        tags={**(request.tags or {}), "dagster/run_key": request.run_key},
                                        asset_selection=request.asset_selection))
        return result, results


@contextlib.contextmanager
def open_world(root: Path, **kwargs: Any) -> Iterator[World]:
    world = World(root, **kwargs)
    try:
        world.start()
        yield world
    finally:
        world.close()


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Check name → evaluation, from the run's events."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            out[evaluation.check_name] = evaluation
    return out


def step_keys(result: dg.ExecuteInProcessResult, event_type: str) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == event_type and e.step_key}


@pytest.fixture(scope="session")
def trained_world(faces_dir, tmp_path_factory) -> Iterator[World]:
    """One world shared by the training and generation tests: Katy Perry (6 photos) trained for flux and
    z-image-turbo through training_job. `world.katy` is her character, `world.katy_runs` the two runs."""
    with open_world(tmp_path_factory.mktemp("trained_world")) as world:
        with world.active():
            world.katy = world.add_character("Katy Perry", person_photos(faces_dir, "katy_perry"))
            world.katy_spawns_before = world.spawns()
            world.katy_runs = {model: world.train(world.katy.id, model) for model in ("flux", "z-image-turbo")}
            world.katy_spawns_after = world.spawns()
        yield world


@pytest.fixture()
def world(trained_world) -> Iterator[World]:
    """The shared trained world, active and without faults for one test (a test module may override it)."""
    with trained_world.active():
        trained_world.set_faults({})
        yield trained_world
        trained_world.set_faults({})
