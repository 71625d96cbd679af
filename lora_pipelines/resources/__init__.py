"""Dagster resources: thin, config-visible handles on the app database, the object store and the GPU backends."""

from __future__ import annotations

from functools import lru_cache

import dagster as dg

from lora_pipelines.services.context import PipelineContext
from lora_pipelines.settings import load_settings
from lora_pipelines.store.database import Database
from lora_pipelines.store.objects import ObjectStore, open_store


@lru_cache(maxsize=8)
def _database(url: str) -> Database:
    return Database(url)


@lru_cache(maxsize=8)
def _store(url: str, endpoint_url: str | None) -> ObjectStore:
    return open_store(url, endpoint_url=endpoint_url)


@lru_cache(maxsize=8)
def _context(database_url: str, store_url: str, endpoint_url: str | None, gpu_backend: str) -> PipelineContext:
    settings = load_settings().model_copy(update={"gpu_backend": gpu_backend})
    return PipelineContext(settings=settings, db=_database(database_url), store=_store(store_url, endpoint_url))


class AppDatabaseResource(dg.ConfigurableResource):
    """The app database: SQLite under LORA_PIPELINES_HOME by default, PostgreSQL in production."""

    url: str

    def get(self) -> Database:
        return _database(self.url)


class ObjectStoreResource(dg.ConfigurableResource):
    """Where photos, datasets, LoRA files, generations and reports live: a folder, or R2/S3 (`s3://bucket/prefix`)."""

    url: str
    endpoint_url: str | None = None

    def get(self) -> ObjectStore:
        return _store(self.url, self.endpoint_url)


class GpuResource(dg.ConfigurableResource):
    """Which GPU backend trains and generates: `simulated` (default), `modal` or `comfyui`.

    Endpoints, tokens and pod settings come from LORA_PIPELINES_* variables, never from run config,
    so no secret is shown in the UI.
    """

    backend: str = "simulated"


def pipeline_context(database: AppDatabaseResource, store: ObjectStoreResource, gpu: GpuResource) -> PipelineContext:
    """One PipelineContext per process and configuration, shared by every asset and sensor in it."""
    return _context(database.url, store.url, store.endpoint_url, gpu.backend)


def _env_or(var: str, default: str | None):
    """An EnvVar when the variable is set (so its value is never shown in the UI), else the embedded default."""
    import os

    return dg.EnvVar(var) if os.environ.get(var) else default


def build_resources() -> dict[str, dg.ConfigurableResource]:
    settings = load_settings()
    return {
        "database": AppDatabaseResource(url=_env_or("LORA_PIPELINES_DATABASE_URL", settings.resolved_database_url)),
        "object_store": ObjectStoreResource(
            url=_env_or("LORA_PIPELINES_STORE_URL", settings.resolved_store_url),
            endpoint_url=_env_or("LORA_PIPELINES_S3_ENDPOINT_URL", None),
        ),
        "gpu": GpuResource(backend=settings.gpu_backend),
    }
