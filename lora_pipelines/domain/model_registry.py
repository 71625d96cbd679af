"""The generation models we route to: whether each takes a LoRA, and where each kind of generation goes.

Three routes per model, tried in this order by the generation flow:
  lora_route       a LoRA-capable endpoint/workflow (None when the model does not support LoRA)
  face_swap_route  identity from the reference photo (PuLID / face swap) when no LoRA can be used
  standard_route   plain text-to-image: the last resort, which never needs anything character-specific
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RouteKind = Literal["modal_endpoint", "comfyui_workflow"]


class UnknownModelError(ValueError):
    pass


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    target: str  # Modal endpoint path ("/flux-lora") or ComfyUI workflow name ("z-image-danrisi")

    def __post_init__(self) -> None:
        if self.kind == "modal_endpoint" and not self.target.startswith("/"):
            raise ValueError(f"a Modal endpoint is a path starting with '/', got {self.target!r}")


def modal(path: str) -> Route:
    return Route("modal_endpoint", path)


def comfyui(workflow: str) -> Route:
    return Route("comfyui_workflow", workflow)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    base_model: str  # LoRA family a LoRA must be trained for (lora_models.baseModel)
    supports_lora: bool
    lora_route: Route | None
    face_swap_route: Route
    standard_route: Route
    default_strength_model: float = 1.0
    default_strength_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.supports_lora != (self.lora_route is not None):
            raise ValueError(f"model {self.name!r}: supports_lora must match having a lora_route")

    def lora_strengths(self, requested: float | None = None) -> tuple[float, float]:
        """(model, CLIP) strength to apply: the registry's defaults, or a job's requested strength for the model
        with the CLIP strength scaled alike (0 stays 0: those text encoders are never trained)."""
        if requested is None:
            return self.default_strength_model, self.default_strength_clip
        if self.default_strength_model == 0:
            return requested, self.default_strength_clip
        return requested, self.default_strength_clip * requested / self.default_strength_model

    @property
    def route_kind(self) -> RouteKind:
        """Kind of the route a LoRA generation takes (the standard route's when LoRA is unsupported)."""
        return (self.lora_route or self.standard_route).kind

    @property
    def endpoint(self) -> str | None:
        route = self.lora_route or self.standard_route
        return route.target if route.kind == "modal_endpoint" else None

    @property
    def workflows(self) -> tuple[str, ...]:
        """Every ComfyUI workflow this model uses, in route order."""
        routes = (self.lora_route, self.face_swap_route, self.standard_route)
        names: list[str] = []
        for route in routes:
            if route is not None and route.kind == "comfyui_workflow" and route.target not in names:
                names.append(route.target)
        return tuple(names)


MODELS: tuple[ModelEntry, ...] = (
    # Z-Image Turbo runs on the ComfyUI pod: the Danrisi workflow takes the LoRA; without one it is the standard graph.
    # Its text encoder is a Qwen LLM, so the LoRA's CLIP strength is 0 (LoraLoaderModelOnly); trainers target the DiT.
    # No PuLID exists for Z-Image (PuLID-Flux patches Flux blocks only), so its face fallback is Modal's face swap.
    ModelEntry(
        name="z-image-turbo", base_model="z-image-turbo", supports_lora=True,
        lora_route=comfyui("z-image-danrisi"), face_swap_route=modal("/face-swap"),
        standard_route=comfyui("z-image-danrisi"), default_strength_model=1.0, default_strength_clip=0.0,
    ),
    ModelEntry(
        name="flux", base_model="flux", supports_lora=True,
        lora_route=modal("/flux-lora"), face_swap_route=comfyui("flux-pulid"),
        standard_route=modal("/standard"), default_strength_model=1.0, default_strength_clip=1.0,
    ),
    ModelEntry(
        name="qwen-image", base_model="qwen-image", supports_lora=True,
        lora_route=modal("/qwen-image-2512-lora"), face_swap_route=modal("/face-swap"),
        standard_route=modal("/standard"), default_strength_model=1.0, default_strength_clip=0.0,
    ),
    # "one-2.1"/"one-2.2" (Wan 2.1 / 2.2 14B, video DiTs). LoRAs can be trained for them (lora_format has their
    # layout), but no generation surface in the product applies one: no Modal LoRA endpoint and no ComfyUI
    # workflow for them exists, so claiming support would route a LoRA nowhere. Registered so generation requests
    # for them still work through face swap / standard.
    ModelEntry(
        name="one-2.1", base_model="one-2.1", supports_lora=False,
        lora_route=None, face_swap_route=modal("/face-swap"), standard_route=modal("/standard"),
    ),
    ModelEntry(
        name="one-2.2", base_model="one-2.2", supports_lora=False,
        lora_route=None, face_swap_route=modal("/face-swap"), standard_route=modal("/standard"),
    ),
)

_BY_NAME = {entry.name: entry for entry in MODELS}


def get_model(name: str) -> ModelEntry:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(_BY_NAME)}") from None


def model_names() -> tuple[str, ...]:
    return tuple(_BY_NAME)
