"""Rules a graph must follow beyond the node schema, because breaking them is not an error in ComfyUI but a
silent no-op: an identity node on a model it cannot patch runs and ignores the face.

PuLID-Flux (balazik's pack and lldacing's ComfyUI_PuLID_Flux_ll) patches the double and single blocks of a Flux
transformer (`("double_block", i)` / `("single_block", i)` patches in pulidflux.py). No PuLID exists for Z-Image,
Qwen-Image or Wan, so ApplyPulidFlux is refused on any model that is known not to be Flux.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lora_pipelines.workflows.errors import InvalidWorkflowError
from lora_pipelines.workflows.model_files import UNET_BASE_MODEL

FLUX_ONLY_NODES = ("ApplyPulidFlux",)
MODEL_SOURCES = ("UNETLoader", "CheckpointLoaderSimple", "CheckpointLoader", "UnetLoaderGGUF")
# The text encoder a graph loads tells the family when the diffusion-model file name is not one we know.
CLIP_TYPE_FAMILY = {("DualCLIPLoader", "flux"): "flux", ("CLIPLoader", "lumina2"): "z-image-turbo",
                    ("CLIPLoader", "qwen_image"): "qwen-image", ("CLIPLoader", "wan"): "wan"}


def _link(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0])
    return None


def model_source(workflow: Mapping[str, Any], node_id: str) -> str | None:
    """The diffusion-model loader that `node_id`'s MODEL input comes from, following `model` links upstream."""
    seen: set[str] = set()
    current = _link(workflow[node_id].get("inputs", {}).get("model"))
    while current is not None and current in workflow and current not in seen:
        seen.add(current)
        node = workflow[current]
        if node.get("class_type") in MODEL_SOURCES:
            return current
        current = _link(node.get("inputs", {}).get("model"))
    return None


def model_family(workflow: Mapping[str, Any], node_id: str) -> tuple[str | None, str]:
    """(family, how it was told) of the model reaching `node_id`: from the loader's file name, else the graph's
    text-encoder type; (None, ...) when neither says."""
    source = model_source(workflow, node_id)
    if source is not None:
        inputs = workflow[source].get("inputs", {})
        name = inputs.get("unet_name") or inputs.get("ckpt_name")
        if name in UNET_BASE_MODEL:
            return UNET_BASE_MODEL[name], f"{workflow[source]['class_type']} {name}"
    for node in workflow.values():
        key = (node.get("class_type"), node.get("inputs", {}).get("type"))
        if key in CLIP_TYPE_FAMILY:
            return CLIP_TYPE_FAMILY[key], f"{key[0]} type {key[1]}"
    return None, "unknown model"


def check_identity_nodes(workflow: Mapping[str, Any], source: str = "workflow") -> None:
    """Refuse PuLID-Flux nodes fed by a model that is not Flux (they would run and ignore the reference face)."""
    for node_id, node in workflow.items():
        if not isinstance(node, Mapping) or node.get("class_type") not in FLUX_ONLY_NODES:
            continue
        family, told_by = model_family(workflow, node_id)
        if family is not None and family != "flux":
            raise InvalidWorkflowError(
                f"{source}: {node['class_type']} (node {node_id}) patches Flux transformer blocks only, and its model "
                f"is {family} ({told_by}); it would run and ignore the face. Use a Flux model, or face swap")
