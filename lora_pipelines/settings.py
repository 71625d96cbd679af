"""Environment → typed settings. Every default is an embedded one that needs no set-up."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lora_pipelines.domain.lora_versions import GATE_TOLERANCE
from lora_pipelines.home import APP_DB_NAME, HomeLocation, locate_home

GpuBackendName = Literal["simulated", "modal", "comfyui"]


class Settings(BaseSettings):
    """All configuration of lora_pipelines, read from `LORA_PIPELINES_*` variables."""

    model_config = SettingsConfigDict(env_prefix="LORA_PIPELINES_", extra="ignore")

    home: Path | None = Field(
        default=None, description="Root of every embedded default; found from the current folder when unset (home.py).")
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL (it may hold a password); SQLite under home when unset.")
    store_url: str | None = Field(
        default=None, description="Folder or s3://bucket/prefix; a folder under home when unset.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-protocol endpoint, e.g. https://<account>.r2.cloudflarestorage.com.")
    gpu_backend: GpuBackendName = "simulated"
    sim_gpu_url: str | None = Field(
        default=None, description="URL of a running simulated GPU service; started on demand when unset.")
    modal_training_app: str = "lora-training"
    modal_training_function: str = "train_lora"
    modal_endpoint_url: str | None = Field(default=None, description="Base URL of the Modal generation web endpoints.")
    modal_key: SecretStr | None = None
    modal_secret: SecretStr | None = None
    comfyui_url: str | None = Field(default=None, description="Base URL of the ComfyUI pod.")
    comfyui_loras_root: Path = Path("/workspace/models/loras")
    comfyui_lora_cache_bytes: int = 20 * 1024**3
    min_photos: int = Field(default=5, ge=1, description="Usable photos a character needs before training.")
    gpu_timeout_seconds: float = 120.0
    training_steps: int = Field(default=1000, ge=1)
    training_rank: int = Field(default=16, ge=1)
    training_wait_seconds: float = Field(
        default=0.0, ge=0, description="How long lora_artifact polls a training call that has not ended before "
        "leaving it to the training_completion sensor (0: submit and end the run; trainings take minutes).")
    gpu_concurrency: int = Field(
        default=8, ge=1, le=256, description="GPU calls one process (a generation run) makes at once.")
    comfyui_concurrency: int = Field(
        default=2, ge=1, le=64, description="Calls in flight to the one ComfyUI pod, across every process using it.")
    scoring_processes: int = Field(
        default=0, ge=0, le=64, description="Worker processes that score generated faces while the GPU calls go "
        "on; 0: one thread of the run's own process (dlib releases the GIL while it works).")
    generation_stale_seconds: float = Field(
        default=1800.0, gt=0, description="A running generation job older than this is requeued by the reaper."
    )
    generation_max_attempts: int = Field(default=3, ge=1)
    train_base_models: str = Field(
        default="z-image-turbo,flux,qwen-image", description="Base models every LoRA-enabled character is trained for.")
    training_checkpoints: int = Field(
        default=4, ge=1, le=10,
        description="Checkpoints a training keeps (evenly spaced); the one with the best likeness is published.")
    checkpoint_samples: int = Field(default=4, ge=1, le=16, description="Sample images scored per checkpoint.")
    lora_gate_tolerance: float = Field(
        default=GATE_TOLERANCE, ge=0, le=1,
        description="A new LoRA replaces the active one only if its likeness is at least the active one's minus this.")
    lora_retention_days: float = Field(
        default=30.0, gt=0, description="Retention archives LoRAs not in use for longer than this many days.")

    @cached_property
    def home_location(self) -> HomeLocation:
        return locate_home(self.home)

    @property
    def resolved_home(self) -> Path:
        return self.home_location.path

    @property
    def default_database_path(self) -> Path | None:
        """The SQLite file of the embedded default, or None when LORA_PIPELINES_DATABASE_URL is set."""
        return None if self.database_url is not None else self.resolved_home / APP_DB_NAME

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.resolved_home / APP_DB_NAME}"

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or str(self.resolved_home / "objects")

    @property
    def train_base_model_list(self) -> list[str]:
        from lora_pipelines.domain.base_models import validate_base_model

        names = [validate_base_model(name.strip()) for name in self.train_base_models.split(",") if name.strip()]
        return list(dict.fromkeys(names))

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.resolved_home / "dagster_home")


def load_settings() -> Settings:
    return Settings()
