"""What a LoRA file for each base model looks like: tensor names, metadata keys, detection patterns.

Shared by the inspector (reads), the simulated GPU service and the Modal trainer (write), so that what
one writes the other recognises.
"""

from __future__ import annotations

import re

# ss_base_model_version as trainers write it (ai-toolkit; kohya writes "flux1" for Flux).
SS_BASE_MODEL_VERSION = {
    "flux": "flux.1",
    "z-image-turbo": "zimage",
    "qwen-image": "qwen_image",
    "one-2.1": "wan_2.1",
    "one-2.2": "wan_2.2_14b",
}
SS_VERSION_ALIASES = {"flux1": "flux", "flux.1": "flux", "flux-1": "flux", "zimage": "z-image-turbo",
                      "z_image": "z-image-turbo", "qwen_image": "qwen-image", "qwen-image": "qwen-image",
                      "wan_2.1": "one-2.1", "wan2.1": "one-2.1", "wan_2.2_14b": "one-2.2", "wan_2.2": "one-2.2",
                      "wan2.2": "one-2.2"}

# modelspec.architecture (the SAI model spec), "<arch>/lora".
MODELSPEC_ARCHITECTURE = {
    "flux": "flux-1-dev/lora",
    "z-image-turbo": "z-image-turbo/lora",
    "qwen-image": "qwen-image/lora",
    "one-2.1": "wan-2.1/lora",
    "one-2.2": "wan-2.2/lora",
}
ARCHITECTURE_PREFIXES = {"flux-1": "flux", "flux.1": "flux", "z-image": "z-image-turbo", "zimage": "z-image-turbo",
                         "qwen-image": "qwen-image", "qwen_image": "qwen-image", "wan-2.1": "one-2.1",
                         "wan-2.2": "one-2.2", "wan_2.1": "one-2.1", "wan_2.2": "one-2.2"}

# Key patterns, tried in this order when the metadata says nothing. Wan 2.1 and 2.2 share a layout,
# so a metadata-less Wan file is reported as one-2.1 (the older, more common one).
KEY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("flux", re.compile(
        r"(single_transformer_blocks\.\d+|lora_unet_double_blocks_|lora_unet_single_blocks_|double_blocks\.\d+)")),
    ("qwen-image", re.compile(r"transformer_blocks\.\d+\.img_mlp")),
    ("z-image-turbo", re.compile(r"(^|\.)layers\.\d+\.attention")),
    ("one-2.1", re.compile(r"(^|\.)blocks\.\d+\.cross_attn")),
)

# One representative target module per base model: (module name pattern, in_features, out_features).
_TARGETS = {
    "flux": ("transformer.single_transformer_blocks.{i}.attn.to_q", 3072, 3072),
    "qwen-image": ("transformer.transformer_blocks.{i}.img_mlp.net.0.proj", 3072, 12288),
    "z-image-turbo": ("diffusion_model.layers.{i}.attention.to_q", 3840, 3840),
    "one-2.1": ("diffusion_model.blocks.{i}.cross_attn.q", 5120, 5120),
    "one-2.2": ("diffusion_model.blocks.{i}.cross_attn.q", 5120, 5120),
}


def lora_tensor_shapes(base_model: str, rank: int, blocks: int = 2, scale_down: int = 16) -> dict[str, tuple[int, int]]:
    """Tensor name -> shape of a small LoRA in the base model's layout (lora_A: rank x in, lora_B: out x rank).

    `scale_down` divides the hidden sizes so simulated files stay small while keeping real names.
    """
    pattern, fan_in, fan_out = _TARGETS[base_model]
    shapes: dict[str, tuple[int, int]] = {}
    for i in range(blocks):
        module = pattern.format(i=i)
        shapes[f"{module}.lora_A.weight"] = (rank, fan_in // scale_down)
        shapes[f"{module}.lora_B.weight"] = (fan_out // scale_down, rank)
    return shapes


def trainer_metadata(base_model: str, trigger_word: str, *, rank: int, steps: int, trainer: str) -> dict[str, str]:
    """`__metadata__` as ai-toolkit writes it (all values strings), including the trigger word."""
    import json

    return {
        "format": "pt",
        "software": trainer,
        "ss_base_model_version": SS_BASE_MODEL_VERSION[base_model],
        "modelspec.architecture": MODELSPEC_ARCHITECTURE[base_model],
        "modelspec.trigger_phrase": trigger_word,
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(rank),
        "ss_steps": str(steps),
        "ss_tag_frequency": json.dumps({"dataset": {trigger_word: 1}}),
        "lora_pipelines.base_model": base_model,
        "lora_pipelines.trigger_word": trigger_word,
    }
