"""`PipelineContext`: the handles a use case needs, built once from settings (or by a test)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from lora_pipelines.settings import Settings, load_settings
from lora_pipelines.store.database import Database
from lora_pipelines.store.objects import ObjectStore, open_store_from_settings

if TYPE_CHECKING:
    from lora_pipelines.domain.lora_selection import InspectOutcome
    from lora_pipelines.faces.embeddings import FaceAnalyzer
    from lora_pipelines.gpu.base import TrainingBackend
    from lora_pipelines.gpu.factory import GpuServices


@dataclass
class PipelineContext:
    settings: Settings
    db: Database
    store: ObjectStore
    _gpu: GpuServices | None = field(default=None, repr=False)
    _running_training: TrainingBackend | None = field(default=None, repr=False)
    _gpu_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # (object key, sha256) → outcome of checking that stored LoRA file (services.lora_lookup)
    lora_inspections: dict[tuple[str, str], InspectOutcome] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PipelineContext:
        settings = settings or load_settings()
        return cls(settings=settings, db=Database(settings.resolved_database_url),
                   store=open_store_from_settings(settings))

    @property
    def gpu(self) -> GpuServices:
        """The GPU services; in simulated mode this starts the simulated service on first use (once, however many
        threads of a generation batch ask at the same time)."""
        if self._gpu is None:
            with self._gpu_lock:
                if self._gpu is None:
                    from lora_pipelines.gpu.factory import build_gpu_services

                    self._gpu = build_gpu_services(self.settings)
        return self._gpu

    def running_training_backend(self) -> TrainingBackend | None:
        """The training backend if it can be asked without starting anything (what a sensor tick may use), or
        None when the simulated service is neither configured nor already running."""
        if self._gpu is not None:
            return self._gpu.training
        if self._running_training is None:
            from lora_pipelines.gpu.factory import connect_training_backend

            self._running_training = connect_training_backend(self.settings)
        return self._running_training

    @cached_property
    def analyzer(self) -> FaceAnalyzer:
        from lora_pipelines.faces.embeddings import default_analyzer

        return default_analyzer()  # the models load once per process, however many contexts there are

    def close(self) -> None:
        """Closes the database connections and the GPU clients this context opened."""
        if self._gpu is not None:
            self._gpu.close()
        if self._running_training is not None and hasattr(self._running_training, "close"):
            self._running_training.close()
        self.db.dispose()
