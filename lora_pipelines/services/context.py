"""`PipelineContext`: the handles a use case needs, built once from settings (or by a test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from lora_pipelines.settings import Settings, load_settings
from lora_pipelines.store.database import Database
from lora_pipelines.store.objects import ObjectStore, open_store_from_settings

if TYPE_CHECKING:
    from lora_pipelines.faces.embeddings import FaceAnalyzer
    from lora_pipelines.gpu.factory import GpuServices


@dataclass
class PipelineContext:
    settings: Settings
    db: Database
    store: ObjectStore
    _gpu: GpuServices | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PipelineContext:
        settings = settings or load_settings()
        return cls(settings=settings, db=Database(settings.resolved_database_url),
                   store=open_store_from_settings(settings))

    @property
    def gpu(self) -> GpuServices:
        """The GPU services; in simulated mode this starts the simulated service on first use."""
        if self._gpu is None:
            from lora_pipelines.gpu.factory import build_gpu_services

            self._gpu = build_gpu_services(self.settings)
        return self._gpu

    @cached_property
    def analyzer(self) -> FaceAnalyzer:
        from lora_pipelines.faces.embeddings import FaceAnalyzer

        return FaceAnalyzer()
