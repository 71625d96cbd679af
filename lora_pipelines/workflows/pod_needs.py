"""What a ComfyUI pod must have to run a graph: a ComfyUI version, node types (and the node packs that bring
them) and model files. Read off the graph itself, so a user's template is checked like a built workflow.

Sources (docs/modal.md lists them with dates): Z-Image support is ComfyUI v0.3.75 (Comfy-Org/docs
changelog/index.mdx: "v0.3.75, November 26, 2025: Added Z Image model"); every graph here is validated against
the v0.3.64 node schema (comfy_schema), the oldest version we accept; PuLID's nodes come from
lldacing/ComfyUI_PuLID_Flux_ll (pulidflux.py NODE_CLASS_MAPPINGS at commit ba90657f).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lora_pipelines.workflows.comfy_schema import COMFYUI_VERSION, file_combo_folders
from lora_pipelines.workflows.graph_rules import model_family, model_source

# The node schema our graphs are validated against; older servers are not supported.
BASELINE_COMFYUI_VERSION = COMFYUI_VERSION
# Base model -> (first ComfyUI release that loads it, where that was read). Flux and Qwen-Image (v0.3.49)
# predate the baseline.
BASE_MODEL_MIN_COMFYUI: dict[str, tuple[str, str]] = {
    "z-image-turbo": ("0.3.75", "Z-Image support, ComfyUI v0.3.75"),
}
# Folders whose files are not model files of the pod: the LoRA is delivered per job (checked against
# /models/loras separately) and the reference photo is uploaded just before queueing.
PER_JOB_FOLDERS = frozenset({"loras", "input"})
# The folder named in messages when a combo lists several (the first is the current name in ComfyUI).
_PREFERRED_FOLDERS = ("diffusion_models", "text_encoders")


@dataclass(frozen=True)
class NodePack:
    name: str
    repository: str  # GitHub owner/name; install with `git clone https://github.com/{repository}` into custom_nodes/
    commit: str  # the commit whose nodes the packaged schema copies
    node_types: tuple[str, ...]
    note: str = ""


NODE_PACKS: tuple[NodePack, ...] = (
    NodePack(
        name="ComfyUI_PuLID_Flux_ll",
        repository="lldacing/ComfyUI_PuLID_Flux_ll",
        commit="ba90657fe6ffa8072ac169a949bfa5e4153bf48a",
        node_types=("PulidFluxModelLoader", "PulidFluxInsightFaceLoader", "PulidFluxEvaClipLoader", "ApplyPulidFlux",
                    "FixPulidFluxPatch", "PulidFluxOptions", "PulidFluxFaceDetector"),
        note="same node names and inputs as balazik/ComfyUI-PuLID-Flux, whose patched forward breaks at sampling "
             "on current ComfyUI; install one of the two, not both. Downloads antelopev2 (models/insightface), "
             "EVA02-CLIP-L-14-336 (models/clip) and facexlib models (models/facexlib) on first use",
    ),
)


@dataclass(frozen=True)
class ModelFile:
    folder: str  # the models/ folder named in messages
    name: str
    folders: tuple[str, ...]  # every folder ComfyUI looks in for this input
    used_by: str  # "UNETLoader.unet_name"

    def __str__(self) -> str:
        return f"{self.folder}/{self.name}"


@dataclass(frozen=True)
class PodNeeds:
    min_comfyui_version: str
    version_reason: str
    node_types: tuple[str, ...]
    node_packs: tuple[NodePack, ...]
    model_files: tuple[ModelFile, ...]
    base_model: str | None


def version_tuple(version: str) -> tuple[int, ...]:
    """`"0.3.75"` -> (0, 3, 75); a suffix after the numbers ("0.4.0-rc1", "v0.3.75") is ignored."""
    match = re.match(r"^v?(\d+(?:\.\d+)*)", str(version).strip())
    if not match:
        raise ValueError(f"not a ComfyUI version: {str(version)[:40]!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def pack_of(node_type: str) -> NodePack | None:
    return next((pack for pack in NODE_PACKS if node_type in pack.node_types), None)


def _graph_base_model(workflow: Mapping[str, Any]) -> str | None:
    """The family of the diffusion model the graph samples with (its loaders), None when it cannot be told."""
    for node_id, node in workflow.items():
        if "model" in node.get("inputs", {}) and model_source(workflow, node_id) is not None:
            family, _ = model_family(workflow, node_id)
            return family
    return None


def model_files(workflow: Mapping[str, Any]) -> tuple[ModelFile, ...]:
    """The model files the graph's loaders name (file-combo inputs), LoRAs and input images excluded."""
    combos = file_combo_folders()
    found: dict[tuple[str, str], ModelFile] = {}
    for node in workflow.values():
        class_type = node.get("class_type")
        for input_name, folders in combos.get(class_type, {}).items():
            value = node.get("inputs", {}).get(input_name)
            if not isinstance(value, str) or PER_JOB_FOLDERS.intersection(folders):
                continue
            shown = next((f for f in _PREFERRED_FOLDERS if f in folders), folders[0])
            found.setdefault((shown, value), ModelFile(shown, value, tuple(folders), f"{class_type}.{input_name}"))
    return tuple(found[key] for key in sorted(found))


def pod_needs(workflow: Mapping[str, Any]) -> PodNeeds:
    """What a pod needs to run `workflow` (an API-format graph)."""
    node_types = tuple(sorted({str(node.get("class_type")) for node in workflow.values()}))
    packs = tuple(pack for pack in NODE_PACKS if set(pack.node_types) & set(node_types))
    base_model = _graph_base_model(workflow)
    version = BASELINE_COMFYUI_VERSION
    reason = f"the node schema these graphs are checked against, ComfyUI v{BASELINE_COMFYUI_VERSION}"
    if base_model in BASE_MODEL_MIN_COMFYUI:
        needed, why = BASE_MODEL_MIN_COMFYUI[base_model]
        if version_tuple(needed) > version_tuple(version):
            version, reason = needed, why
    return PodNeeds(version, reason, node_types, packs, model_files(workflow), base_model)


def named_workflow_needs() -> dict[str, PodNeeds]:
    """PodNeeds of every named workflow, as built (the table docs/modal.md shows)."""
    from lora_pipelines.workflows.builders import WORKFLOWS, build_workflow

    return {name: pod_needs(build_workflow(name, "a portrait", reference_image="reference.png")) for name in WORKFLOWS}
