"""How the simulated ComfyUI pod "executes" an API-format prompt.

It reads the graph the way the real nodes would act on it: the base model from UNETLoader.unet_name, LoRA
loaders on the sampler's MODEL path (a LoRA for another base model is ignored with "lora key not loaded",
as ComfyUI does), the positive prompt text, the seed and size, and PuLID with its LoadImage reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_pipelines.workflows.model_files import UNET_BASE_MODEL
from sim_gpu.likeness import copy_rate, lora_weight
from sim_gpu.studio import LoraRejected, Studio, is_triggered, read_lora, seed_for

LORA_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")
SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "BasicGuider", "CFGGuider", "DualCFGGuider")
MODEL_SOURCES = ("UNETLoader", "CheckpointLoaderSimple", "CheckpointLoader", "UnetLoaderGGUF")
LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo", "EmptyFluxLatentImage")


@dataclass
class Execution:
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (output node id, png)
    messages: list[list[Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None


def _link(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        return value[0]
    return None


def _model_path(prompt: Mapping[str, Any], start: str) -> list[str]:
    """Node ids from `start` back along `model` inputs to the diffusion-model loader."""
    path, seen, node_id = [], set(), start
    while node_id in prompt and node_id not in seen:
        seen.add(node_id)
        path.append(node_id)
        node_id = _link(prompt[node_id].get("inputs", {}).get("model"))
        if node_id is None:
            break
    return path


def _texts_upstream(prompt: Mapping[str, Any], start: str | None) -> list[str]:
    """Texts of the CLIPTextEncode nodes feeding a conditioning input (through guidance/PuLID nodes)."""
    texts, stack, seen = [], [start] if start else [], set()
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        node = prompt[node_id]
        inputs = node.get("inputs", {})
        if node.get("class_type", "").startswith("CLIPTextEncode"):
            texts.extend(str(v) for k, v in inputs.items()
                         if k in ("text", "t5xxl", "clip_l", "prompt") and isinstance(v, str))
            continue
        for name, value in inputs.items():
            if name in ("conditioning", "positive", "conditioning_1", "conditioning_2", "guider") and _link(value):
                stack.append(_link(value))
    return texts


def execute(prompt: Mapping[str, Any], output_ids: list[str], *, studio: Studio, loras_dir: Path, input_dir: Path,
            prompt_id: str) -> Execution:
    run = Execution()
    samplers = [nid for nid, n in prompt.items() if n.get("class_type") in SAMPLERS]
    if not samplers:
        run.error = {"node_id": output_ids[0] if output_ids else "", "exception_message": "no sampler in the graph",
                     "exception_type": "RuntimeError"}
        return run
    sampler = prompt[samplers[0]]
    chain = _model_path(prompt, samplers[0])
    source = next((nid for nid in chain if prompt[nid]["class_type"] in MODEL_SOURCES), None)
    source_inputs = prompt[source]["inputs"] if source else {}
    unet_name = source_inputs.get("unet_name") or source_inputs.get("ckpt_name")
    base_model = UNET_BASE_MODEL.get(str(unet_name))

    positive = " ".join(_texts_upstream(prompt, _link(sampler["inputs"].get("positive"))
                                        or _link(sampler["inputs"].get("conditioning"))))
    seed = next((int(n["inputs"][k]) for n in prompt.values() for k in ("seed", "noise_seed")
                 if isinstance(n.get("inputs", {}).get(k), int)), 0)
    latent = next((n["inputs"] for n in prompt.values() if n.get("class_type") in LATENTS), {})
    width, height = int(latent.get("width", 1024)), int(latent.get("height", 1024))

    identity, weight, copies, photos, lora_info = [], 0.0, 0.0, (), []
    for nid in chain:
        node = prompt[nid]
        if node["class_type"] not in LORA_LOADERS:
            continue
        name = str(node["inputs"].get("lora_name"))
        try:
            lora = read_lora((loras_dir / name).read_bytes())
        except (OSError, LoraRejected) as exc:
            run.error = {"node_id": nid, "node_type": node["class_type"], "exception_type": type(exc).__name__,
                         "exception_message": str(exc)}
            return run
        strength = float(node["inputs"].get("strength_model", 1.0))
        if base_model is None or lora.base_model != base_model:
            run.messages.append(["log", {"level": "warning", "node_id": nid,
                                         "message": f"lora key not loaded: {name} is a {lora.base_model} LoRA, "
                                                    f"the model is {base_model or unet_name}"}])
            lora_info.append(f"{name}:ignored")
            continue
        if strength <= 0:
            lora_info.append(f"{name}:strength0")
            continue
        triggered = is_triggered(positive, lora.trigger_word)
        lora_info.append(f"{name}:loaded" + ("" if triggered else ":untriggered"))
        if triggered:
            loaded = lora_weight(lora.traits, strength=strength, applied=True)
            if loaded > weight:  # of several LoRAs, the strongest decides whose face it is
                identity, weight, copies, photos = list(lora.faces), loaded, copy_rate(lora.traits), lora.photos

    reference = None
    pulid = next((nid for nid in chain if prompt[nid]["class_type"] == "ApplyPulidFlux"), None)
    if pulid is not None and base_model != "flux":  # PuLID-Flux patches Flux blocks; elsewhere it changes nothing
        run.messages.append(["log", {"level": "warning", "node_id": pulid,
                                     "message": f"ApplyPulidFlux on a {base_model or unet_name} model: no Flux blocks "
                                                "to patch, the reference face is ignored"}])
    elif pulid is not None:
        image_node = prompt.get(_link(prompt[pulid]["inputs"].get("image")) or "", {})
        if image_node.get("class_type") == "LoadImage":
            path = input_dir / str(image_node["inputs"].get("image"))
            try:
                reference = studio.reference_face(path.read_bytes())
            except OSError as exc:
                run.error = {"node_id": pulid, "node_type": "LoadImage", "exception_type": type(exc).__name__,
                             "exception_message": f"reference image {path.name} unreadable"}
                return run

    info = {"base_model": base_model or "unknown", "loras": ",".join(lora_info), "prompt_id": prompt_id,
            "pulid": "yes" if pulid else "no"}
    for index, output_id in enumerate(output_ids):
        png, shown = studio.render(seed=seed_for(seed, index, positive), width=width, height=height, identity=identity,
                                   weight=weight, reference=reference, info=info, copy_rate=copies,
                                   copy_from=photos)
        run.images.append((output_id, png))
    run.messages.append(["sim_info", {"backend": "simulated", "base_model": base_model, "loras": lora_info,
                                      "face": shown if output_ids else None}])
    return run
