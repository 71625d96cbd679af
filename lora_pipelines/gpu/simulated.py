"""Training on the simulated GPU service, over HTTP routes shaped like Modal FunctionCalls."""

from __future__ import annotations

from pathlib import Path

from lora_pipelines.gpu.downloads import download_verified
from lora_pipelines.gpu.errors import GpuPermanentError
from lora_pipelines.gpu.http import RetryingHttp
from lora_pipelines.gpu.schemas import SpawnResponse, TrainingPoll, TrainingResult, TrainingSpec


class SimulatedTrainingBackend:
    name = "simulated"

    def __init__(self, base_url: str, *, app: str = "lora-training", function: str = "train_lora",
                 timeout_s: float = 30.0, attempts: int = 4) -> None:
        self.base_url = base_url.rstrip("/")
        self.app, self.function = app, function
        self.http = RetryingHttp(self.name, self.base_url, timeout_s=timeout_s, attempts=attempts)

    def close(self) -> None:
        self.http.close()

    def submit_training(self, spec: TrainingSpec) -> str:
        body = self.http.json("POST", f"/functions/{self.app}/{self.function}/spawn", endpoint="spawn",
                              json=spec.model_dump(mode="json"))
        return self.http.parse(SpawnResponse, body, endpoint="spawn").call_id

    def poll(self, call_id: str) -> TrainingPoll:
        body = self.http.json("GET", f"/function-calls/{call_id}", endpoint="poll", call_id=call_id, ok_statuses=(404,))
        if isinstance(body, dict) and "state" not in body:  # 404: the service no longer knows the call
            return TrainingPoll(call_id=call_id, state="lost", error=f"call not found: {body.get('error', 'unknown')}")
        return self.http.parse(TrainingPoll, body, endpoint="poll", call_id=call_id)

    def cancel(self, call_id: str) -> None:
        self.http.request("POST", f"/function-calls/{call_id}/cancel", endpoint="cancel", call_id=call_id,
                          ok_statuses=(404,))

    def remove_trained_files(self, call_id: str | None, keys: list[str]) -> list[str]:
        """Delete the service's own copies (its stand-in for the Modal volume) of the files at `keys` that call
        `call_id` trained: a checkpoint or expert key names that file, the LoRA's own key the final file."""
        if not call_id or not keys:
            return []
        # `{jobId}.safetensors` is the final file; `{jobId}.step000250.safetensors`, `{jobId}.low_noise.safetensors`…
        parts = {".".join(k.rsplit("/", 1)[-1].split(".")[1:-1]) or "final" for k in keys}
        only = ",".join(sorted(parts))
        body = self.http.json("DELETE", f"/function-calls/{call_id}/files", endpoint="files", call_id=call_id,
                              params={"only": only}, ok_statuses=(404,))
        return list(body.get("removed", [])) if isinstance(body, dict) else []

    def fetch_artifact(self, result: TrainingResult, dest_path: Path) -> Path:
        if not result.download_url:
            raise GpuPermanentError("result has no download_url; fetch result.object_key from the object store",
                                    backend=self.name, endpoint="files")
        return download_verified(self.http, result.download_url, dest_path, result.sha256, endpoint="files")
