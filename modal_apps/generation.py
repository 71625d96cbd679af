"""Modal app "lora-generation": the web endpoints /flux-lora, /qwen-image-2512-lora, /standard, /face-swap.

Each endpoint is `@modal.fastapi_endpoint(method="POST", requires_proxy_auth=True, label=...)`, so its URL is
`https://<workspace>--<label>.modal.run` and callers send `Modal-Key` / `Modal-Secret` headers. Bodies and
answers are the models of lora_pipelines.gpu.schemas; the logic lives in modal_apps.generation_service.
Deploy: `modal deploy -m modal_apps.generation`.
"""

from __future__ import annotations

import modal

from modal_apps import pins

APP_NAME = "lora-generation"
LORA_VOLUME = "lora-pipelines-loras"  # the training app's volume: LoRAs trained here are read without a download
HF_CACHE_VOLUME = "lora-pipelines-hf-cache"
HF_SECRET = "huggingface"
LORA_ROOT = "/loras"
HF_HOME = "/hf-cache"
LORA_CACHE_DIR = "/tmp/lora-cache"
LORA_CACHE_BYTES = 20 * 1024**3

# Pins live in modal_apps/pins.py (docs/modal.md says where each was read).
image = (
    modal.Image.debian_slim(python_version=pins.GENERATION_PYTHON)
    .apt_install("git", "libgl1", "libglib2.0-0")
    .pip_install(*pins.GENERATION_TORCH_PACKAGES, index_url=pins.TORCH_INDEX_URL)
    .pip_install(*pins.GENERATION_ML_PACKAGES, *pins.FACE_SWAP_PACKAGES, "pillow>=10.2", "numpy>=1.26",
                 "fastapi[standard]>=0.110", "pydantic>=2.6", "httpx>=0.27")
    # insightface declares the CPU onnxruntime, which would shadow onnxruntime-gpu: its other needs are above.
    .pip_install(pins.INSIGHTFACE_PACKAGE, extra_options="--no-deps")
    .env({"HF_HOME": HF_HOME, "HF_XET_HIGH_PERFORMANCE": "1"})
    .add_local_python_source("lora_pipelines", "modal_apps")
)

# Evaluated in the container (where FastAPI resolves the endpoint annotations); locally optional.
with image.imports():
    from lora_pipelines.gpu.schemas import FaceSwapRequest, GenerateRequest, GenerateResponse

app = modal.App(APP_NAME, image=image)
lora_volume = modal.Volume.from_name(LORA_VOLUME, create_if_missing=True)
hf_cache = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)
_SERVER_OPTIONS = dict(
    gpu="H100",
    timeout=15 * 60,
    scaledown_window=10 * 60,
    volumes={LORA_ROOT: lora_volume, HF_HOME: hf_cache},
    secrets=[modal.Secret.from_name(HF_SECRET)],
)


def build_service(preload_model: str | None):
    """The production GenerationService: diffusers runner + per-container LoRA cache reading the training volume."""
    from pathlib import Path

    from modal_apps.diffusers_runner import DiffusersRunner
    from modal_apps.generation_service import GenerationService
    from modal_apps.lora_cache import LoraCache

    runner = DiffusersRunner()
    if preload_model:
        runner.load(preload_model)
    cache = LoraCache(Path(LORA_CACHE_DIR), volume_root=Path(LORA_ROOT), max_bytes=LORA_CACHE_BYTES)
    return GenerationService(runner, cache)


@app.cls(**_SERVER_OPTIONS)
class FluxLora:
    """FLUX.1-dev with per-request LoRA."""

    @modal.enter()
    def load(self) -> None:
        self.service = build_service("flux")

    @modal.fastapi_endpoint(method="POST", label="flux-lora", requires_proxy_auth=True)
    def flux_lora(self, body: GenerateRequest) -> GenerateResponse:
        return self.service.lora_route("flux-lora", body)


@app.cls(**_SERVER_OPTIONS)
class QwenImageLora:
    """Qwen-Image-2512 with per-request LoRA."""

    @modal.enter()
    def load(self) -> None:
        self.service = build_service("qwen-image")

    @modal.fastapi_endpoint(method="POST", label="qwen-image-2512-lora", requires_proxy_auth=True)
    def qwen_image_lora(self, body: GenerateRequest) -> GenerateResponse:
        return self.service.lora_route("qwen-image-2512-lora", body)


@app.cls(**_SERVER_OPTIONS)
class StandardGeneration:
    """Text-to-image without a LoRA, and face swap from a reference photo; loads the requested model on demand."""

    @modal.enter()
    def load(self) -> None:
        self.service = build_service(None)

    @modal.fastapi_endpoint(method="POST", label="standard", requires_proxy_auth=True)
    def standard(self, body: GenerateRequest) -> GenerateResponse:
        return self.service.standard(body)

    @modal.fastapi_endpoint(method="POST", label="face-swap", requires_proxy_auth=True)
    def face_swap(self, body: FaceSwapRequest) -> GenerateResponse:
        return self.service.face_swap(body)


# label → (class, method): what tests mount on a plain FastAPI app, and what docs/modal.md lists.
ENDPOINTS = {
    "flux-lora": (FluxLora, "flux_lora"),
    "qwen-image-2512-lora": (QwenImageLora, "qwen_image_lora"),
    "standard": (StandardGeneration, "standard"),
    "face-swap": (StandardGeneration, "face_swap"),
}
