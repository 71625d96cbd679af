"""ComfyUI API-format graphs for each named workflow: `{"id": {"class_type", "inputs"}}`, links `["id", slot]`.

Every class, input and combo value here is accepted by the packaged ComfyUI 0.3.64 schema, and every file name
is one of `model_files.POD_MODEL_FILES`. A user may replace a built graph with their own JSON
(`load_workflow_template` + `parameterize_workflow`), e.g. their own copy of the Danrisi Z-Image workflow.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lora_pipelines.domain.prompts import clean_prompt
from lora_pipelines.workflows.comfy_schema import validate_prompt
from lora_pipelines.workflows.errors import InvalidWorkflowError, RetiredWorkflowError, UnknownWorkflowError
from lora_pipelines.workflows.graph_rules import check_identity_nodes

Workflow = dict[str, dict[str, Any]]

Z_IMAGE_UNET = "z_image_turbo_bf16.safetensors"
Z_IMAGE_TEXT_ENCODER = "qwen_3_4b.safetensors"
FLUX_UNET = "flux1-dev.safetensors"
FLUX_CLIP_L = "clip_l.safetensors"
FLUX_T5 = "t5xxl_fp8_e4m3fn.safetensors"
QWEN_UNET = "qwen_image_fp8_e4m3fn.safetensors"
QWEN_TEXT_ENCODER = "qwen_2.5_vl_7b_fp8_scaled.safetensors"
AE_VAE = "ae.safetensors"
QWEN_VAE = "qwen_image_vae.safetensors"
PULID_MODEL = "pulid_flux_v0.9.1.safetensors"

MODEL_LOADERS = ("UNETLoader", "CheckpointLoaderSimple")
CLIP_LOADERS = ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader", "QuadrupleCLIPLoader")

# workflow name -> base model family its diffusion model runs (a LoRA must match it)
WORKFLOW_BASE_MODEL = {
    "z-image-danrisi": "z-image-turbo",
    "flux-pulid": "flux",
    "qwen-image": "qwen-image",
}
WORKFLOWS: tuple[str, ...] = tuple(WORKFLOW_BASE_MODEL)
NEEDS_REFERENCE_IMAGE = frozenset({"flux-pulid"})
DEFAULT_STEPS = {"z-image-danrisi": 8, "flux-pulid": 20, "qwen-image": 20}
# Names that no longer build, with what to use instead.
RETIRED_WORKFLOWS = {
    "z-image-pulid": "PuLID-Flux patches Flux transformer blocks only: on Z-Image the graph ran and ignored the face, "
                     "and no PuLID exists for Z-Image. Z-Image's face fallback is the Modal /face-swap endpoint "
                     "(Z-Image generation, then InsightFace's inswapper with the reference photo); on the pod, "
                     "use flux-pulid",
}


class _Graph:
    """Adds nodes with consecutive string ids and returns links to their outputs."""

    def __init__(self) -> None:
        self.nodes: Workflow = {}

    def add(self, class_type: str, title: str | None = None, **inputs: Any) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        if title:
            self.nodes[node_id]["_meta"] = {"title": title}
        return node_id


def link(node_id: str, slot: int = 0) -> list[Any]:
    return [node_id, slot]


def _z_image_graph(prompt: str, negative: str, seed: int, steps: int, width: int, height: int) -> Workflow:
    """ComfyUI's Z-Image-Turbo template (image_z_image_turbo): 8 steps, cfg 1, res_multistep / simple, shift 3."""
    g = _Graph()
    unet = g.add("UNETLoader", unet_name=Z_IMAGE_UNET, weight_dtype="default")
    clip = g.add("CLIPLoader", clip_name=Z_IMAGE_TEXT_ENCODER, type="lumina2")
    vae = g.add("VAELoader", vae_name=AE_VAE)
    sampling = g.add("ModelSamplingAuraFlow", model=link(unet), shift=3.0)
    positive = g.add("CLIPTextEncode", "Positive", text=prompt, clip=link(clip))
    negative_node = g.add("CLIPTextEncode", "Negative", text=negative, clip=link(clip))
    latent = g.add("EmptySD3LatentImage", width=width, height=height, batch_size=1)
    sampler = g.add("KSampler", model=link(sampling), seed=seed, steps=steps, cfg=1.0, sampler_name="res_multistep",
                    scheduler="simple", positive=link(positive), negative=link(negative_node),
                    latent_image=link(latent), denoise=1.0)
    decoded = g.add("VAEDecode", samples=link(sampler), vae=link(vae))
    g.add("SaveImage", images=link(decoded), filename_prefix="z-image")
    return g.nodes


def _add_pulid(g: _Graph, model: list[Any], reference_image: str) -> str:
    """lldacing/ComfyUI_PuLID_Flux_ll's nodes (same names and inputs as balazik's pack, which breaks at sampling
    on current ComfyUI); Flux only, see graph_rules."""
    pulid = g.add("PulidFluxModelLoader", pulid_file=PULID_MODEL)
    face = g.add("PulidFluxInsightFaceLoader", provider="CUDA")
    eva = g.add("PulidFluxEvaClipLoader")
    image = g.add("LoadImage", "Reference photo", image=reference_image)
    return g.add("ApplyPulidFlux", model=model, pulid_flux=link(pulid), eva_clip=link(eva),
                 face_analysis=link(face), image=link(image), weight=1.0, start_at=0.0, end_at=1.0)


def build_z_image_danrisi(prompt: str, negative: str, seed: int, steps: int, width: int, height: int,
                          reference_image: str | None = None) -> Workflow:
    return _z_image_graph(prompt, negative, seed, steps, width, height)


def build_flux_pulid(prompt: str, negative: str, seed: int, steps: int, width: int, height: int,
                     reference_image: str | None = None) -> Workflow:
    """Flux dev with PuLID. BasicGuider has no negative conditioning, so `negative` is not used."""
    reference = _need_reference("flux-pulid", reference_image)
    g = _Graph()
    unet = g.add("UNETLoader", unet_name=FLUX_UNET, weight_dtype="default")
    clip = g.add("DualCLIPLoader", clip_name1=FLUX_CLIP_L, clip_name2=FLUX_T5, type="flux")
    vae = g.add("VAELoader", vae_name=AE_VAE)
    pulid_model = _add_pulid(g, link(unet), reference)
    positive = g.add("CLIPTextEncode", "Positive", text=prompt, clip=link(clip))
    guidance = g.add("FluxGuidance", conditioning=link(positive), guidance=3.5)
    guider = g.add("BasicGuider", model=link(pulid_model), conditioning=link(guidance))
    noise = g.add("RandomNoise", noise_seed=seed)
    sampler_select = g.add("KSamplerSelect", sampler_name="euler")
    # The scheduler reads MODEL straight from the loader, as in ComfyUI's Flux templates.
    sigmas = g.add("BasicScheduler", model=link(unet), scheduler="simple", steps=steps, denoise=1.0)
    latent = g.add("EmptySD3LatentImage", width=width, height=height, batch_size=1)
    sampled = g.add("SamplerCustomAdvanced", noise=link(noise), guider=link(guider), sampler=link(sampler_select),
                    sigmas=link(sigmas), latent_image=link(latent))
    decoded = g.add("VAEDecode", samples=link(sampled), vae=link(vae))
    g.add("SaveImage", images=link(decoded), filename_prefix="flux-pulid")
    return g.nodes


def build_qwen_image(prompt: str, negative: str, seed: int, steps: int, width: int, height: int,
                     reference_image: str | None = None) -> Workflow:
    g = _Graph()
    unet = g.add("UNETLoader", unet_name=QWEN_UNET, weight_dtype="default")
    clip = g.add("CLIPLoader", clip_name=QWEN_TEXT_ENCODER, type="qwen_image")
    vae = g.add("VAELoader", vae_name=QWEN_VAE)
    sampling = g.add("ModelSamplingAuraFlow", model=link(unet), shift=3.1)
    positive = g.add("CLIPTextEncode", "Positive", text=prompt, clip=link(clip))
    negative_node = g.add("CLIPTextEncode", "Negative", text=negative, clip=link(clip))
    latent = g.add("EmptySD3LatentImage", width=width, height=height, batch_size=1)
    sampler = g.add("KSampler", model=link(sampling), seed=seed, steps=steps, cfg=2.5, sampler_name="euler",
                    scheduler="simple", positive=link(positive), negative=link(negative_node),
                    latent_image=link(latent), denoise=1.0)
    decoded = g.add("VAEDecode", samples=link(sampler), vae=link(vae))
    g.add("SaveImage", images=link(decoded), filename_prefix="qwen-image")
    return g.nodes


_BUILDERS: dict[str, Callable[..., Workflow]] = {
    "z-image-danrisi": build_z_image_danrisi,
    "flux-pulid": build_flux_pulid,
    "qwen-image": build_qwen_image,
}


def _need_reference(name: str, reference_image: str | None) -> str:
    if not reference_image:
        raise InvalidWorkflowError(f"workflow {name} needs a reference_image (a file name in the pod's input/ folder)")
    return reference_image


def _check_params(seed: int, steps: int, width: int, height: int) -> None:
    if not isinstance(seed, int) or not 0 <= seed <= 0xFFFFFFFFFFFFFFFF:
        raise InvalidWorkflowError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if not isinstance(steps, int) or not 1 <= steps <= 10000:
        raise InvalidWorkflowError(f"steps must be an integer in [1, 10000], got {steps!r}")
    for what, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or not 16 <= value <= 16384 or value % 16:
            raise InvalidWorkflowError(f"{what} must be a multiple of 16 in [16, 16384], got {value!r}")


def workflow_base_model(name: str) -> str:
    try:
        return WORKFLOW_BASE_MODEL[name]
    except KeyError:
        if name in RETIRED_WORKFLOWS:
            raise RetiredWorkflowError(f"workflow {name} was withdrawn: {RETIRED_WORKFLOWS[name]}") from None
        raise UnknownWorkflowError(f"unknown workflow {name!r}; known workflows: {', '.join(WORKFLOWS)}") from None


def build_workflow(name: str, prompt: str, *, negative_prompt: str = "", seed: int = 0, steps: int | None = None,
                   width: int = 1024, height: int = 1024, reference_image: str | None = None,
                   template: Mapping[str, Any] | None = None) -> Workflow:
    """The API-format graph of workflow `name`; `template` (from `load_workflow_template`) replaces the built graph."""
    workflow_base_model(name)
    steps = DEFAULT_STEPS[name] if steps is None else steps
    prompt = clean_prompt(prompt)
    _check_params(seed, steps, width, height)
    if template is not None:
        workflow = parameterize_workflow(template, prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                                         width=width, height=height, reference_image=reference_image)
    else:
        workflow = _BUILDERS[name](prompt, negative_prompt, seed, steps, width, height, reference_image)
    check_identity_nodes(workflow)
    return workflow


def load_workflow_template(path: str | Path) -> Workflow:
    """A user's API-format workflow JSON ("Export (API)" in ComfyUI), checked against the packaged schema."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidWorkflowError(f"cannot read workflow template {path}: {exc}") from None
    return check_workflow(data, source=str(path))


def check_workflow(data: Any, source: str = "workflow") -> Workflow:
    """Refuse anything that is not an API-format graph the 0.3.64 schema accepts (model files are not checked)."""
    if not isinstance(data, dict) or not data:
        raise InvalidWorkflowError(f"{source} is not an API-format workflow (a non-empty JSON object of nodes)")
    if "nodes" in data and "links" in data:
        raise InvalidWorkflowError(f"{source} is a UI-format workflow; export it with 'Export (API)' instead")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict) or "class_type" not in node:
            raise InvalidWorkflowError(f"{source}: node {node_id!r} needs class_type and an inputs object")
    result = validate_prompt(data)
    if not result.ok:
        raise InvalidWorkflowError(f"{source} fails ComfyUI validation: {result.error_summary()}")
    check_identity_nodes(data, source)
    return copy.deepcopy(data)


def _node_of(workflow: Mapping[str, Any], value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and str(value[0]) in workflow:
        return str(value[0])
    return None


def _text_node(workflow: Mapping[str, Any], value: Any) -> str | None:
    """Follow a CONDITIONING link back (through FluxGuidance & co.) to the CLIPTextEncode that makes it."""
    node_id = _node_of(workflow, value)
    for _ in range(16):
        if node_id is None:
            return None
        node = workflow[node_id]
        if node["class_type"] == "CLIPTextEncode":
            return node_id
        node_id = _node_of(workflow, node["inputs"].get("conditioning"))
    return None


def parameterize_workflow(template: Mapping[str, Any], prompt: str, *, negative_prompt: str = "", seed: int = 0,
                          steps: int | None = None, width: int = 1024, height: int = 1024,
                          reference_image: str | None = None) -> Workflow:
    """Put prompt, seed, steps, size and reference photo into a template's sampler, text, latent and image nodes."""
    workflow = copy.deepcopy(dict(template))
    positives: set[str] = set()
    negatives: set[str] = set()
    for node in workflow.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind in ("KSampler", "KSamplerAdvanced"):
            inputs["noise_seed" if kind == "KSamplerAdvanced" else "seed"] = seed
            if steps is not None:
                inputs["steps"] = steps
            positives.add(_text_node(workflow, inputs.get("positive")) or "")
            negatives.add(_text_node(workflow, inputs.get("negative")) or "")
        elif kind in ("BasicGuider", "CFGGuider"):
            positives.add(_text_node(workflow, inputs.get("conditioning", inputs.get("positive"))) or "")
            negatives.add(_text_node(workflow, inputs.get("negative")) or "")
        elif kind == "RandomNoise":
            inputs["noise_seed"] = seed
        elif kind == "BasicScheduler" and steps is not None:
            inputs["steps"] = steps
        elif kind in ("EmptySD3LatentImage", "EmptyLatentImage"):
            inputs["width"], inputs["height"] = width, height
        elif kind == "LoadImage":
            inputs["image"] = _need_reference("template", reference_image)
    positives.discard("")
    negatives.discard("")
    if len(positives) != 1:
        raise InvalidWorkflowError(
            f"template needs exactly one positive CLIPTextEncode feeding a sampler, found {len(positives)}")
    positive = positives.pop()
    workflow[positive]["inputs"]["text"] = prompt
    for node_id in negatives - {positive}:
        workflow[node_id]["inputs"]["text"] = negative_prompt
    return workflow
