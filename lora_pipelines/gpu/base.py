"""The interfaces every GPU backend implements: training calls and generation endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from lora_pipelines.gpu.schemas import (
    FaceSwapRequest,
    GenerateRequest,
    GenerateResponse,
    TrainingPoll,
    TrainingResult,
    TrainingSpec,
)


@runtime_checkable
class TrainingBackend(Protocol):
    """Long-running LoRA training as a call id that survives restarts of the caller."""

    name: str

    def submit_training(self, spec: TrainingSpec) -> str:
        """Start training; the same `spec.idempotency_key` returns the same call id."""

    def poll(self, call_id: str) -> TrainingPoll:
        """queued / running (progress) / succeeded (result) / failed (error) / lost."""

    def cancel(self, call_id: str) -> None: ...

    def fetch_artifact(self, result: TrainingResult, dest_path: Path) -> Path:
        """Write the trained file to `dest_path`, verified against `result.sha256`: from `result.download_url`, or
        (Modal, when the object-store upload failed) from `result.volume_path` on the backend's volume. A result
        with only `object_key` is the caller's to fetch from the object store."""


@runtime_checkable
class GenerationEndpoints(Protocol):
    """Text-to-image (optionally with a LoRA) and face swap, answering what was really applied."""

    name: str

    def generate(self, route: str, request: GenerateRequest) -> GenerateResponse: ...

    def face_swap(self, request: FaceSwapRequest) -> GenerateResponse: ...


@runtime_checkable
class RemovesTrainedFiles(Protocol):
    """A training backend that keeps its own copies of trained LoRAs (the Modal volume; the simulated service's
    folder) and can delete them when retention archives a LoRA."""

    def remove_trained_files(self, call_id: str | None, keys: list[str]) -> list[str]:
        """Delete the copies of the files at `keys` (object keys) made by call `call_id`; returns what was removed."""
