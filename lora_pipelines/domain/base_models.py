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
