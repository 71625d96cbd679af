"""The base-model families a LoRA can be trained for."""

from typing import Literal, get_args

BaseModelName = Literal["z-image-turbo", "flux", "qwen-image", "one-2.1", "one-2.2"]
BASE_MODELS: tuple[str, ...] = get_args(BaseModelName)


class UnknownBaseModelError(ValueError):
    pass


def validate_base_model(name: str) -> str:
    if name not in BASE_MODELS:
        raise UnknownBaseModelError(f"unknown base model {name!r}; known: {', '.join(BASE_MODELS)}")
    return name


ExpertName = Literal["high_noise", "low_noise"]

# Base models whose diffusion model is two experts, each with its own LoRA file. Wan 2.2 14B (A14B) runs a
# high-noise expert for the early steps and a low-noise one for the rest; ai-toolkit writes
# `{name}_high_noise.safetensors` and `{name}_low_noise.safetensors`. The first expert is the primary file.
LORA_EXPERTS: dict[str, tuple[ExpertName, ExpertName]] = {"one-2.2": ("high_noise", "low_noise")}


def lora_experts(base_model: str) -> tuple[ExpertName, ...]:
    """The expert files a LoRA for `base_model` consists of, primary first; () for a single-file LoRA."""
    return LORA_EXPERTS.get(base_model, ())
