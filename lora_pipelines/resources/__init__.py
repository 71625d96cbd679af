"""The one Dagster resource: the settings an operator sees in the UI, and the PipelineContext the use cases get."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, PrivateAttr, SecretStr

from lora_pipelines.services.context import PipelineContext
from lora_pipelines.settings import Settings, load_settings


def _env_or(var: str, default: str | None) -> str | None:
    """An EnvVar when the variable is set (so its value is never shown in the UI), else the embedded default."""
    return dg.EnvVar(var) if os.environ.get(var) else default


class PipelineResource(dg.ConfigurableResource):
    """The app database, the object store and the GPU backend of this deployment.

    URLs come from their LORA_PIPELINES_* variable as an EnvVar when it is set, so the UI shows the variable's
    name, never a password in a URL. Tokens, keys and every other setting are read from LORA_PIPELINES_*
    variables when a run or tick starts, never from run config. Unset fields mean the same: the variable, or the
    embedded default under LORA_PIPELINES_HOME.
    """

    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the app database.")
    store_url: str | None = Field(default=None, description="Object store: a folder, or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(default=None, description="S3-protocol endpoint (R2), for s3:// stores.")
    gpu_backend: str | None = Field(default=None, description="simulated, modal or comfyui.")
    sim_gpu_url: str | None = Field(default=None, description="A running simulated GPU service; else runs start one.")
    modal_endpoint_url: str | None = Field(default=None, description="Base URL of the Modal generation endpoints.")
    comfyui_url: str | None = Field(default=None, description="Base URL of the ComfyUI pod.")

    _context: PipelineContext | None = PrivateAttr(default=None)

    @classmethod
    def from_environment(cls) -> PipelineResource:
        """The resource as `dagster dev` shows it: every field filled in from LORA_PIPELINES_* or its default."""
        settings = load_settings()
        return cls(
            database_url=_env_or("LORA_PIPELINES_DATABASE_URL", settings.resolved_database_url),
            store_url=_env_or("LORA_PIPELINES_STORE_URL", settings.resolved_store_url),
            s3_endpoint_url=_env_or("LORA_PIPELINES_S3_ENDPOINT_URL", None),
            gpu_backend=settings.gpu_backend,
            sim_gpu_url=_env_or("LORA_PIPELINES_SIM_GPU_URL", None),
            modal_endpoint_url=_env_or("LORA_PIPELINES_MODAL_ENDPOINT_URL", None),
            comfyui_url=_env_or("LORA_PIPELINES_COMFYUI_URL", None),
        )

    def settings(self) -> Settings:
        """LORA_PIPELINES_* settings with this resource's fields (as the run or tick resolved them) on top."""
        fields = {name: getattr(self, name) for name in PipelineResource.model_fields}
        # a run or tick sees EnvVars resolved; outside one (a script, a test) they are resolved here
        fields = {name: v.get_value() if isinstance(v, dg.EnvVar) else v for name, v in fields.items()}
        update = {name: value for name, value in fields.items() if value is not None}
        if "database_url" in update:
            update["database_url"] = SecretStr(update["database_url"])
        return load_settings().model_copy(update=update)

    def build_context(self) -> PipelineContext:
        """A new context on these settings; the resource builds one per run or sensor tick."""
        return PipelineContext.from_settings(self.settings())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._context = self.build_context()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None

    @property
    def context(self) -> PipelineContext:
        """The PipelineContext of this run or tick: the database and store, and the GPU services on first use."""
        if self._context is None:
            raise RuntimeError("PipelineResource.context exists only inside a run or sensor tick")
        return self._context
