"""Insert one LoRA into an API-format workflow, right after the diffusion-model and CLIP loaders.

Every consumer of the loader's MODEL output and of the CLIP loader's CLIP output is rewired to the LoRA node,
not only the sampler: in Flux graphs `BasicScheduler` reads MODEL straight from `UNETLoader`, and PuLID /
ModelSamplingAuraFlow sit between loader and sampler. A consumer left on the bare model would sample without it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from lora_pipelines.workflows.builders import CLIP_LOADERS, MODEL_LOADERS, InvalidWorkflowError, Workflow

LORA_NODES = ("LoraLoader", "LoraLoaderModelOnly")
_LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.safetensors\Z")


def lora_file_name(lora_model_id: str) -> str:
    """`{loraModelId}.safetensors`, the name a LoRA has in the pod's models/loras folder."""
    return check_lora_name(f"{lora_model_id}.safetensors")


def check_lora_name(lora_name: str) -> str:
    if not isinstance(lora_name, str) or len(lora_name) > 140 or not _LORA_NAME.match(lora_name):
        raise InvalidWorkflowError(
            f"lora_name {str(lora_name)[:60]!r} must look like '{{loraModelId}}.safetensors' "
            "(letters, digits, '.', '_', '-'; no folders)")
    return lora_name


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _links_to(value: Any, node_id: str, slot: int) -> bool:
    return _is_link(value) and str(value[0]) == node_id and value[1] == slot


def _only(workflow: Mapping[str, Any], classes: tuple[str, ...], what: str) -> str | None:
    found = [node_id for node_id, node in workflow.items() if node.get("class_type") in classes]
    if len(found) > 1:
        raise InvalidWorkflowError(
            f"workflow has {len(found)} {what} ({', '.join(found)}); cannot tell where the LoRA goes")
    return found[0] if found else None


def _next_id(workflow: Mapping[str, Any]) -> str:
    numeric = [int(node_id) for node_id in workflow if str(node_id).isdigit()]
    return str(max(numeric, default=0) + 1)


def insert_lora(workflow: Mapping[str, Any], lora_name: str, strength_model: float = 1.0,
                strength_clip: float = 1.0) -> Workflow:
    """A new workflow with one LoraLoader (LoraLoaderModelOnly when strength_clip is 0); the input is untouched."""
    check_lora_name(lora_name)
    for what, value in (("strength_model", strength_model), ("strength_clip", strength_clip)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise InvalidWorkflowError(f"{what} must be a number in [-100, 100], got {value!r}")
    existing = [node_id for node_id, node in workflow.items() if node.get("class_type") in LORA_NODES]
    if existing:
        raise InvalidWorkflowError(
            f"workflow already has a LoRA loader (node {existing[0]}); only one LoRA is inserted")

    model_loader = _only(workflow, MODEL_LOADERS, "diffusion-model loaders")
    if model_loader is None:
        raise InvalidWorkflowError(f"workflow has no diffusion-model loader ({' / '.join(MODEL_LOADERS)})")
    model_only = float(strength_clip) == 0.0
    clip_source: tuple[str, int] | None = None
    if not model_only:
        if workflow[model_loader]["class_type"] == "CheckpointLoaderSimple":
            clip_source = (model_loader, 1)
        else:
            clip_loader = _only(workflow, CLIP_LOADERS, "CLIP loaders")
            if clip_loader is None:
                raise InvalidWorkflowError("workflow has no CLIP loader; use strength_clip=0 for a model-only LoRA")
            clip_source = (clip_loader, 0)

    result: Workflow = copy.deepcopy(dict(workflow))
    lora_id = _next_id(result)
    for node in result.values():
        inputs = node.get("inputs", {})
        for name, value in inputs.items():
            if _links_to(value, model_loader, 0):
                inputs[name] = [lora_id, 0]
            elif clip_source is not None and _links_to(value, *clip_source):
                inputs[name] = [lora_id, 1]

    if model_only:
        lora_node = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": [model_loader, 0], "lora_name": lora_name, "strength_model": strength_model}}
    else:
        assert clip_source is not None
        lora_node = {"class_type": "LoraLoader",
                     "inputs": {"model": [model_loader, 0], "clip": [clip_source[0], clip_source[1]],
                                "lora_name": lora_name, "strength_model": strength_model,
                                "strength_clip": strength_clip}}
    # Place the node right after the loaders in the JSON too, so the exported graph reads in order.
    after = max((list(result).index(model_loader), list(result).index(clip_source[0]) if clip_source else -1))
    items = list(result.items())
    items.insert(after + 1, (lora_id, lora_node))
    return dict(items)


def lora_nodes(workflow: Mapping[str, Any]) -> list[str]:
    return [node_id for node_id, node in workflow.items() if node.get("class_type") in LORA_NODES]
