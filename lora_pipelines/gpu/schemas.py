"""Request and response models shared by the Modal apps, the Modal client and the simulated GPU service.

One module so the three cannot drift apart. Only pydantic, the standard library and the
dependency-free domain are imported here, because `modal_apps/` ships this package into its containers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lora_pipelines.domain.base_models import BaseModelName, ExpertName

BackendName = Literal["simulated", "modal", "comfyui"]
TrainingState = Literal["queued", "running", "succeeded", "failed", "lost"]
GenerationMode = Literal["lora", "face_swap", "standard"]

# Generation routes of the Modal apps (and of the simulated service): route -> base model it runs.
LORA_ROUTES: dict[str, str] = {"flux-lora": "flux", "qwen-image-2512-lora": "qwen-image"}
GENERATION_ROUTES: tuple[str, ...] = ("flux-lora", "qwen-image-2512-lora", "standard", "face-swap")

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_LORA_KEY = r"^loras/[A-Za-z0-9][A-Za-z0-9._-]{0,200}/[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.safetensors$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingSpec(_Strict):
    """What a training call needs. `idempotency_key` makes a second submit return the first call."""

    character_id: str = Field(pattern=_ID)
    lora_model_id: str = Field(pattern=_ID, description="lora_models.id; the jobId of the artifact key")
    base_model: BaseModelName
    dataset_url: str = Field(description="URL of the dataset zip (images + captions + manifest.json)")
    dataset_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    trigger_word: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    dataset_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{16,128}$",
                                     description="lora_models.datasetHash; the trainer writes it into the file")
    # The Modal app writes the file at {volume}/{output_key}: a pattern, so no key climbs out with '..' or '/'.
    output_key: str = Field(
        pattern=_LORA_KEY,
        description="object key the artifact belongs at: loras/{model}-character-{id}/{jobId}.safetensors")
    steps: int = Field(default=1000, ge=1, le=20000)
    rank: int = Field(default=16, ge=1, le=256)
    learning_rate: float = Field(default=1e-4, gt=0, le=1e-2)
    idempotency_key: str = Field(min_length=8, max_length=200)
    checkpoints: int = Field(default=1, ge=1, le=10, description=(
        "evenly spaced saves to keep and return (the last is the final file), so the best can be published"))


class ExpertFile(_Strict):
    """The second file of a two-expert LoRA (Wan 2.2 14B: the low-noise expert), published like the primary one at
    `loras/{model}-character-{id}/{jobId}.{expert}.safetensors`."""

    expert: ExpertName
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    object_key: str | None = Field(default=None, description="set when the GPU side uploaded it to the object store")
    download_url: str | None = None
    volume_path: str | None = None
    upload_error: str | None = None


class CheckpointFile(_Strict):
    """One saved checkpoint of a training (the final file is the last), published like the LoRA itself at
    `loras/{model}-character-{id}/{jobId}.step{step:06d}.safetensors` (the final: at the LoRA's own key)."""

    step: int = Field(ge=1, le=999_999)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    object_key: str | None = None
    download_url: str | None = None
    volume_path: str | None = None
    upload_error: str | None = None


class TrainingResult(_Strict):
    """What a finished training call returns. A two-expert LoRA (Wan 2.2 14B) is the primary file (the fields
    below, `expert="high_noise"`) plus `second_expert` (`low_noise`); a single-file LoRA has neither."""

    base_model: BaseModelName
    trigger_word: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    object_key: str | None = Field(default=None,
                                   description="set when the GPU side uploaded to the object store itself")
    download_url: str | None = Field(default=None, description="where to fetch the file when it did not")
    volume_path: str | None = None
    upload_error: str | None = Field(default=None, description="object-store upload failure; the volume copy remains")
    backend: BackendName
    expert: ExpertName | None = Field(default=None, description="which expert the primary file is, for a pair")
    second_expert: ExpertFile | None = None
    checkpoints: list[CheckpointFile] = Field(default_factory=list, max_length=10, description=(
        "every checkpoint kept, oldest first, the final file last (empty: only the final file, above)"))

    @model_validator(mode="after")
    def _pair_is_complete(self) -> TrainingResult:
        if (self.expert is None) != (self.second_expert is None):
            raise ValueError("expert and second_expert come together: a two-expert LoRA names both files")
        if self.second_expert is not None and self.second_expert.expert == self.expert:
            raise ValueError(f"both files of the pair are the {self.expert} expert")
        return self


class TrainingPoll(_Strict):
    call_id: str
    state: TrainingState
    progress: float | None = Field(default=None, ge=0, le=100)
    result: TrainingResult | None = None
    error: str | None = None


class SpawnResponse(_Strict):
    call_id: str


class ExpertRef(_Strict):
    """Where the GPU side can fetch the second expert file of a two-expert LoRA."""

    expert: ExpertName
    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class LoraRef(_Strict):
    """A LoRA a generation should apply, with where the GPU side can fetch it."""

    lora_model_id: str = Field(pattern=_ID)
    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    base_model: BaseModelName
    trigger_word: str
    strength_model: float = Field(default=1.0, ge=-10, le=10)
    strength_clip: float = Field(default=1.0, ge=-10, le=10)
    second_expert: ExpertRef | None = Field(
        default=None,
        description="the low-noise file of a Wan 2.2 14B pair; `url`/`sha256` above are the high-noise one")


class GenerateRequest(_Strict):
    model: str = Field(min_length=1, max_length=64)
    prompt: str = Field(min_length=1, max_length=4000)
    negative_prompt: str = Field(default="", max_length=4000)
    width: int = Field(default=1024, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=1024, ge=64, le=2048, multiple_of=8)
    steps: int = Field(default=8, ge=1, le=150)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    lora: LoraRef | None = None


class FaceSwapRequest(_Strict):
    model: str = Field(min_length=1, max_length=64)
    prompt: str = Field(min_length=1, max_length=4000)
    reference_image_b64: str = Field(min_length=1, description="base64 PNG/JPEG of the character's reference photo")
    width: int = Field(default=1024, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=1024, ge=64, le=2048, multiple_of=8)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)


class AppliedLora(_Strict):
    """What the backend really did with the requested LoRA."""

    lora_model_id: str
    loaded: bool
    strength_model: float
    strength_clip: float
    detected_base_model: str | None = None
    ignored_reason: str | None = None


class GenerateResponse(_Strict):
    image_b64: str
    content_type: Literal["image/png"] = "image/png"
    mode: GenerationMode
    model: str
    prompt: str = Field(description="the prompt as the backend received it")
    seed: int
    lora: AppliedLora | None = None
    backend: BackendName
    duration_ms: float = Field(ge=0)


class ErrorResponse(BaseModel):
    error: str
    detail: str | None = None
