"""The code location loads: one Definitions object with every asset, check, job, sensor and schedule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def test_definitions_hold_the_whole_pipeline(lp_home):
    from lora_pipelines.definitions import defs as definitions

    defs = definitions()
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"training_dataset", "trained_lora", "lora_artifact", "generation_outputs", "lora_quality_report"} <= keys
    assert {s.name for s in defs.sensors} == {"new_characters", "training_completion", "pending_generations",
                                              "training_failures"}
    checks = {key.name for key in graph.asset_check_keys}
    assert {"face_consistency", "lora_usage_rate", "generation_success_rate", "fallback_success",
            "enough_photos", "single_identity", "header_valid", "base_model_matches", "checksum_matches"} <= checks
    for job in ("training_job", "generation_job", "report_job"):
        assert defs.resolve_job_def(job) is not None
    upstream = {k.to_user_string() for k in graph.get(next(k for k in graph.get_all_asset_keys()
                                                           if k.to_user_string() == "generation_outputs")).parent_keys}
    assert upstream == {"lora_artifact"}


def test_definitions_read_the_environment_when_called_not_at_import(lp_home, monkeypatch):
    from lora_pipelines.definitions import defs

    monkeypatch.setenv("LORA_PIPELINES_GPU_BACKEND", "modal")
    assert defs().resources["pipeline"].gpu_backend == "modal"
    monkeypatch.setenv("LORA_PIPELINES_GPU_BACKEND", "comfyui")
    monkeypatch.setenv("LORA_PIPELINES_STORE_URL", str(lp_home / "elsewhere"))
    pipeline = defs().resources["pipeline"]
    assert pipeline.gpu_backend == "comfyui"
    assert pipeline.store_url.env_var_name == "LORA_PIPELINES_STORE_URL"  # an EnvVar: the UI shows the name


def test_dagster_definitions_validate_passes(lp_home, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dh")}
    (tmp_path / "dh").mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_secret_bearing_settings_are_env_vars_not_values(lp_home, monkeypatch):
    """A database URL with a password must not be baked into resource config (the UI shows config)."""
    monkeypatch.setenv("LORA_PIPELINES_DATABASE_URL", "postgresql://app:hunter2-secret@db.example/app")
    from lora_pipelines.definitions import defs

    resource = defs().resources["pipeline"]
    assert "hunter2-secret" not in repr(resource.database_url)


def test_training_partitions_are_the_base_models_characters_are_trained_for(lp_home, monkeypatch):
    """No one-2.1/one-2.2 partitions nobody trains (every training asset looked 60% filled): the sensors' setting."""
    from lora_pipelines.definitions import defs

    default = ["z-image-turbo", "flux", "qwen-image"]
    for setting, expected in (("flux,qwen-image", ["flux", "qwen-image"]), (None, default)):
        if setting is None:
            monkeypatch.delenv("LORA_PIPELINES_TRAIN_BASE_MODELS", raising=False)
        else:
            monkeypatch.setenv("LORA_PIPELINES_TRAIN_BASE_MODELS", setting)
        built = defs()
        for asset in ("training_dataset", "trained_lora", "lora_artifact"):
            partitions = built.resolve_assets_def(asset).partitions_def
            [base_models] = [d.partitions_def for d in partitions.partitions_defs if d.name == "base_model"]
            assert base_models.get_partition_keys() == expected, asset
        assert built.resolve_job_def("training_job").partitions_def.partitions_defs[0].partitions_def \
            .get_partition_keys() == expected
