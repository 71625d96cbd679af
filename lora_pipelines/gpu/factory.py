"""Settings → the GPU services a pipeline uses. The one place that picks simulated / Modal / ComfyUI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lora_pipelines.gpu.base import GenerationEndpoints, TrainingBackend
from lora_pipelines.gpu.comfyui import ComfyUIClient
from lora_pipelines.gpu.endpoints import ModalEndpointsClient
from lora_pipelines.settings import Settings


class GpuConfigError(ValueError):
    """The settings do not describe a usable GPU backend; the message names the variable to set."""


@dataclass
class GpuServices:
    training: TrainingBackend
    endpoints: GenerationEndpoints | None
    comfyui: ComfyUIClient | None
    loras_root: Path | None  # where the ComfyUI server reads LoRA files (the pod cache folder)
    backend_name: str
    lora_cache_bytes: int = 20 * 1024**3

    def close(self) -> None:
        """Closes the HTTP clients (a run's context closes them when the run ends)."""
        for client in (self.training, self.endpoints, self.comfyui):
            close = getattr(client, "close", None)
            if close is not None:
                close()


def _modal_training(settings: Settings):
    from lora_pipelines.gpu.modal_backend import ModalFunctionCaller, ModalTrainingBackend

    return ModalTrainingBackend(ModalFunctionCaller(), app=settings.modal_training_app,
                                function=settings.modal_training_function,
                                state_path=settings.resolved_home / "gpu" / "modal_calls.json",
                                timeout_s=min(settings.gpu_timeout_seconds, 60.0))


def _modal_endpoints(settings: Settings) -> ModalEndpointsClient | None:
    if not settings.modal_endpoint_url:
        return None
    if not (settings.modal_key and settings.modal_secret):
        raise GpuConfigError("LORA_PIPELINES_MODAL_ENDPOINT_URL is set but LORA_PIPELINES_MODAL_KEY / "
                             "LORA_PIPELINES_MODAL_SECRET are not (the endpoints require proxy auth)")
    return ModalEndpointsClient(settings.modal_endpoint_url, key=settings.modal_key, secret=settings.modal_secret,
                                timeout_s=settings.gpu_timeout_seconds)


def _local_store_root(settings: Settings) -> list[Path]:
    """The local object store folder, so the simulated service may read file:// dataset URLs from it."""
    url = settings.resolved_store_url
    return [] if "://" in url else [Path(url).expanduser().resolve()]


def build_gpu_services(settings: Settings) -> GpuServices:
    timeout = settings.gpu_timeout_seconds
    if settings.gpu_backend == "simulated":
        from lora_pipelines.gpu.sim_launcher import ensure_sim_gpu_running, sim_home
        from lora_pipelines.gpu.simulated import SimulatedTrainingBackend

        if settings.sim_gpu_url:
            url = settings.sim_gpu_url.rstrip("/")
            loras_root = _remote_sim_loras_root(url)
        else:
            url = ensure_sim_gpu_running(settings.resolved_home, allowed_roots=_local_store_root(settings))
            loras_root = sim_home(settings.resolved_home) / "models" / "loras"
        return GpuServices(
            training=SimulatedTrainingBackend(url, app=settings.modal_training_app,
                                              function=settings.modal_training_function, timeout_s=min(timeout, 60.0)),
            endpoints=ModalEndpointsClient(url, timeout_s=timeout, name="simulated"),
            comfyui=ComfyUIClient(url, timeout_s=min(timeout, 60.0), name="simulated-comfyui"),
            loras_root=loras_root, backend_name="simulated", lora_cache_bytes=settings.comfyui_lora_cache_bytes)
    if settings.gpu_backend == "modal":
        comfy = ComfyUIClient(settings.comfyui_url, timeout_s=min(timeout, 60.0)) if settings.comfyui_url else None
        endpoints = _modal_endpoints(settings)
        if endpoints is None:
            raise GpuConfigError("gpu_backend=modal needs LORA_PIPELINES_MODAL_ENDPOINT_URL (e.g. https://ws--{route}.modal.run)")
        return GpuServices(training=_modal_training(settings), endpoints=endpoints, comfyui=comfy,
                           loras_root=settings.comfyui_loras_root if comfy else None, backend_name="modal",
                           lora_cache_bytes=settings.comfyui_lora_cache_bytes)
    if settings.gpu_backend == "comfyui":
        if not settings.comfyui_url:
            raise GpuConfigError("gpu_backend=comfyui needs LORA_PIPELINES_COMFYUI_URL")
        return GpuServices(training=_modal_training(settings), endpoints=_modal_endpoints(settings),
                           comfyui=ComfyUIClient(settings.comfyui_url, timeout_s=min(timeout, 60.0)),
                           loras_root=settings.comfyui_loras_root, backend_name="comfyui",
                           lora_cache_bytes=settings.comfyui_lora_cache_bytes)
    raise GpuConfigError(f"unknown gpu_backend {settings.gpu_backend!r}; use simulated, modal or comfyui")


def connect_training_backend(settings: Settings) -> TrainingBackend | None:
    """The training backend without starting anything, for a sensor tick: a tick must never start the simulated
    service. None when the simulated service is neither configured (LORA_PIPELINES_SIM_GPU_URL) nor already
    running for this home; Modal is always reachable (or fails with its own error)."""
    if settings.gpu_backend != "simulated":
        return _modal_training(settings)
    from lora_pipelines.gpu.simulated import SimulatedTrainingBackend

    url = settings.sim_gpu_url.rstrip("/") if settings.sim_gpu_url else _running_sim_url(settings.resolved_home)
    if url is None:
        return None
    return SimulatedTrainingBackend(url, app=settings.modal_training_app, function=settings.modal_training_function,
                                    timeout_s=min(settings.gpu_timeout_seconds, 60.0))


def _running_sim_url(home: Path) -> str | None:
    """The URL ensure_sim_gpu_running recorded for this home, if that service still answers."""
    from lora_pipelines.gpu.sim_launcher import STATE_FILE, is_healthy, sim_home

    try:
        url = json.loads((sim_home(home) / STATE_FILE).read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if is_healthy(url) else None


def _remote_sim_loras_root(url: str) -> Path | None:
    """A running simulated service on this machine says where its home is; its loras folder is the pod cache."""
    import httpx

    try:
        home = httpx.get(f"{url}/health", timeout=5).json().get("home")
    except (httpx.HTTPError, ValueError):
        return None
    return Path(home) / "models" / "loras" if home else None
