"""Modal app "lora-training": function `train_lora(spec) -> TrainingResult dict` on one GPU with ai-toolkit, and
`read_lora(volume_path, offset, length) -> bytes` on a small CPU, which hands a LoRA on the volume to the
orchestrator when the R2 upload failed.

Deploy: `modal deploy -m modal_apps.training` (see docs/modal.md). Only `modal` and the constants of
`modal_apps.pins` are imported at module level; everything heavy is imported inside the function, in the container.

Progress: a modal.Dict named PROGRESS_DICT, keyed by the FunctionCall id (`fc-...`), holds
`{"state", "progress" (0-100), "lora_model_id", "updated_at"}` for the client's poll.
"""

from __future__ import annotations

import time

import modal

from modal_apps import pins

APP_NAME = "lora-training"  # = lora_pipelines.settings.Settings.modal_training_app
FUNCTION_NAME = "train_lora"  # = Settings.modal_training_function
READ_FUNCTION_NAME = "read_lora"  # = ModalTrainingBackend(read_function=...)
REMOVE_FUNCTION_NAME = "remove_lora"  # = lora_pipelines.gpu.modal_backend.REMOVE_FUNCTION
PROGRESS_DICT = "lora-training-progress"
LORA_VOLUME = "lora-pipelines-loras"
HF_CACHE_VOLUME = "lora-pipelines-hf-cache"
R2_SECRET = "lora-pipelines-r2"  # R2_ENDPOINT_URL, R2_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
HF_SECRET = "huggingface"  # HF_TOKEN (FLUX.1-dev is gated)
LORA_ROOT = "/loras"
HF_HOME = "/hf-cache"
WORK_ROOT = "/tmp/lora-training"

AI_TOOLKIT_DIR = "/opt/ai-toolkit"

# Pins (ai-toolkit commit, torch / torchvision / torchaudio triple, apt packages) live in modal_apps/pins.py;
# docs/modal.md says where each was read. torchaudio is required: ai-toolkit's toolkit/config_modules.py imports it.
image = (
    modal.Image.debian_slim(python_version=pins.AI_TOOLKIT_PYTHON)
    .apt_install(*pins.AI_TOOLKIT_APT)
    .pip_install(*pins.TORCH_PACKAGES, index_url=pins.TORCH_INDEX_URL)
    .run_commands(
        f"git clone {pins.AI_TOOLKIT_REPO} {AI_TOOLKIT_DIR}",
        f"cd {AI_TOOLKIT_DIR} && git checkout {pins.AI_TOOLKIT_COMMIT} && git submodule update --init --recursive",
        f"pip install -r {AI_TOOLKIT_DIR}/requirements.txt",
    )
    .pip_install("boto3>=1.36", "httpx>=0.27", "pydantic>=2.6", "pyyaml>=6")
    # huggingface_hub 1.x (pinned by ai-toolkit) ignores HF_HUB_ENABLE_HF_TRANSFER and downloads through Xet.
    .env({"HF_HOME": HF_HOME, "HF_XET_HIGH_PERFORMANCE": "1", "DISABLE_TELEMETRY": "YES"})
    .add_local_python_source("lora_pipelines", "modal_apps")
)

# read_lora needs only the standard library and our packages: no torch image to start for a file read.
reader_image = modal.Image.debian_slim(python_version="3.11").add_local_python_source("lora_pipelines", "modal_apps")

app = modal.App(APP_NAME, image=image)
lora_volume = modal.Volume.from_name(LORA_VOLUME, create_if_missing=True)
hf_cache = modal.Volume.from_name(HF_CACHE_VOLUME, create_if_missing=True)
progress_dict = modal.Dict.from_name(PROGRESS_DICT, create_if_missing=True)


class DictProgress:
    """Writes progress to the modal.Dict at most every few seconds (and always for a state change)."""

    def __init__(self, store: modal.Dict, call_id: str | None, lora_model_id: str, min_interval: float = 5.0) -> None:
        self.store, self.call_id, self.lora_model_id = store, call_id, lora_model_id
        self.min_interval = min_interval
        self._last: tuple[str, float] = ("", 0.0)

    def __call__(self, state: str, percent: float) -> None:
        now = time.monotonic()
        if self.call_id is None or (state == self._last[0] and now - self._last[1] < self.min_interval):
            return
        self._last = (state, now)
        try:
            self.store.put(self.call_id, {"state": state, "progress": round(percent, 1),
                                          "lora_model_id": self.lora_model_id, "updated_at": time.time()})
        except Exception as exc:  # noqa: BLE001 - progress is advisory; never fail a training for it
            print(f"progress update failed: {exc.__class__.__name__}")


@app.function(
    gpu="A100-80GB",
    timeout=4 * 60 * 60,
    retries=modal.Retries(max_retries=1, initial_delay=30.0),
    volumes={LORA_ROOT: lora_volume, HF_HOME: hf_cache},
    secrets=[modal.Secret.from_name(R2_SECRET, required_keys=["R2_ENDPOINT_URL", "R2_BUCKET"]),
             modal.Secret.from_name(HF_SECRET)],
)
def train_lora(spec: dict) -> dict:
    """Validate the TrainingSpec, train, keep the file on the volume, upload to R2; returns TrainingResult as a dict."""
    from pathlib import Path

    from modal_apps.artifacts import R2Uploader
    from modal_apps.trainer_runner import AiToolkitRunner
    from modal_apps.training_job import run_training

    progress = DictProgress(progress_dict, modal.current_function_call_id(), str(spec.get("lora_model_id", "")))
    try:
        result = run_training(
            spec,
            work_dir=Path(WORK_ROOT),
            volume_root=Path(LORA_ROOT),
            trainer=AiToolkitRunner(Path(AI_TOOLKIT_DIR)),
            uploader_factory=R2Uploader.from_env,
            on_progress=progress,
        )
    except BaseException:
        progress("failed", 0.0)
        raise
    lora_volume.commit()
    return result


@app.function(image=reader_image, cpu=0.25, memory=512, timeout=5 * 60, volumes={LORA_ROOT: lora_volume})
def read_lora(volume_path: str, offset: int = 0, length: int = 32 * 1024 * 1024) -> bytes:
    """Bytes [offset, offset+length) of a .safetensors under the LoRA volume (see artifacts.read_volume_lora).

    Read in chunks, not one return value: a whole LoRA is hundreds of MB, and each chunk is a call the client can
    time out and retry on its own.
    """
    from pathlib import Path

    from modal_apps.artifacts import read_volume_lora

    if offset == 0:
        lora_volume.reload()  # a warm container sees what train_lora committed after it started only after a reload
    return read_volume_lora(Path(LORA_ROOT), volume_path, offset, length)


@app.function(image=reader_image, cpu=0.25, memory=512, timeout=5 * 60, volumes={LORA_ROOT: lora_volume})
def remove_lora(keys: list[str]) -> list[str]:
    """Delete the volume copies of an archived LoRA (`loras/....safetensors` keys); returns those that were there."""
    from pathlib import Path

    from modal_apps.artifacts import remove_volume_loras

    lora_volume.reload()
    removed = remove_volume_loras(Path(LORA_ROOT), keys)
    lora_volume.commit()
    return removed
