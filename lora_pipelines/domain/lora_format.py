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
# musubi-tuner writes "wan2.1" for every Wan, 2.2 included (src/musubi_tuner/utils/sai_model_spec.py ARCH_WAN).
ARCHITECTURE_PREFIXES = {"flux-1": "flux", "flux.1": "flux", "z-image": "z-image-turbo", "zimage": "z-image-turbo",
                         "qwen-image": "qwen-image", "qwen_image": "qwen-image", "wan-2.1": "one-2.1",
                         "wan-2.2": "one-2.2", "wan_2.1": "one-2.1", "wan_2.2": "one-2.2", "wan2.1": "one-2.1"}

# Key patterns, tried in this order when the metadata says nothing. Wan 2.1 and 2.2 share a layout,
# so a metadata-less Wan file is reported as one-2.1 (the older, more common one).
KEY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("flux", re.compile(
        r"(single_transformer_blocks\.\d+|lora_unet_double_blocks_|lora_unet_single_blocks_|double_blocks\.\d+)")),
    ("qwen-image", re.compile(r"transformer_blocks\.\d+\.img_mlp")),
    ("z-image-turbo", re.compile(r"(^|\.)layers\.\d+\.attention")),
    ("one-2.1", re.compile(r"(^|\.)blocks\.\d+\.cross_attn")),
)

# ai-toolkit's key layout, read at ostris/ai-toolkit 27a03a91f23eb1b757d5ec2e80ee3e129cfcc350:
# toolkit/lora_special.py (create_modules) LoRAs every Linear whose dotted name contains one of the model's
# get_transformer_block_names() and names it "transformer.<module>"; toolkit/network_mixins.py (get_state_dict)
# writes it in PEFT form (`.lora_A.weight` / `.lora_B.weight`, no `.alpha`: alpha == rank); then each model's
# convert_lora_weights_before_save renames the prefix: FLUX.1 (toolkit/stable_diffusion_model.py) keeps
# "transformer."; z_image.py and qwen_image.py use "diffusion_model."; Wan (toolkit/models/wan21/wan_lora_convert.py
# convert_to_original) also renames the modules to the original Wan names.
AI_TOOLKIT_BLOCK_NAMES = {
    "flux": "transformer_blocks",  # lora_special.py's is_flux branch; also matches single_transformer_blocks
    "qwen-image": "transformer_blocks",
    "z-image-turbo": "layers",
    "one-2.1": "blocks",
    "one-2.2": "blocks",
}


def _wan_original_name(key: str) -> str:
    """wan_lora_convert.convert_to_original, transcribed (its if/elif order included)."""
    if key.startswith("transformer."):
        key = key.replace("transformer.", "diffusion_model.")
    if "attn1" in key:
        key = key.replace("attn1", "self_attn")
    elif "attn2" in key:
        key = key.replace("attn2", "cross_attn")
    if "to_out.0" in key:
        key = key.replace("to_out.0", "o")
    elif "to_q" in key:
        key = key.replace("to_q", "q")
    elif "to_k" in key:
        key = key.replace("to_k", "k")
    elif "to_v" in key:
        key = key.replace("to_v", "v")
    elif "add_k_proj" in key:
        key = key.replace("add_k_proj", "k_img")
    elif "add_v_proj" in key:
        key = key.replace("add_v_proj", "v_img")
    if "ffn.net.0.proj" in key:
        key = key.replace("ffn.net.0.proj", "ffn.0")
    elif "ffn.net.2" in key:
        key = key.replace("ffn.net.2", "ffn.2")
    return key


def ai_toolkit_targets(base_model: str, module_name: str) -> bool:
    """Whether ai-toolkit puts a LoRA on this Linear of the diffusers transformer (dotted module name)."""
    return AI_TOOLKIT_BLOCK_NAMES[base_model] in f"transformer.{module_name}"


def ai_toolkit_module_key(base_model: str, module_name: str) -> str:
    """The tensor-name prefix ai-toolkit writes for a diffusers transformer module (append `.lora_A.weight`)."""
    key = f"transformer.{module_name}"
    if base_model == "flux":
        return key
    if base_model in ("one-2.1", "one-2.2"):
        return _wan_original_name(key)
    return key.replace("transformer.", "diffusion_model.")  # str.replace, as ai-toolkit does it


# One representative module per base model with the real (in, out) features, from the diffusers configs:
# FLUX.1 24 heads x 128 = 3072; Qwen-Image 24 x 128 = 3072 with a 4x GELU MLP; Z-Image dim 3840;
# Wan 14B 40 x 128 = 5120 (diffusers scripts/convert_wan_to_diffusers.py).
_TARGETS = {
    "flux": ("single_transformer_blocks.{i}.attn.to_q", 3072, 3072),
    "qwen-image": ("transformer_blocks.{i}.img_mlp.net.0.proj", 3072, 12288),
    "z-image-turbo": ("layers.{i}.attention.to_q", 3840, 3840),
    "one-2.1": ("blocks.{i}.attn2.to_q", 5120, 5120),
    "one-2.2": ("blocks.{i}.attn2.to_q", 5120, 5120),
}


def lora_tensor_shapes(base_model: str, rank: int, blocks: int = 2, scale_down: int = 1) -> dict[str, tuple[int, int]]:
    """Tensor name -> shape of a small LoRA in ai-toolkit's layout (lora_A: rank x in, lora_B: out x rank).

    `scale_down` divides the hidden sizes (real ones by default, which the inspector's shape checks expect).
    """
    pattern, fan_in, fan_out = _TARGETS[base_model]
    shapes: dict[str, tuple[int, int]] = {}
    for i in range(blocks):
        module = ai_toolkit_module_key(base_model, pattern.format(i=i))
        shapes[f"{module}.lora_A.weight"] = (rank, fan_in // scale_down)
        shapes[f"{module}.lora_B.weight"] = (fan_out // scale_down, rank)
    return shapes


# Who a LoRA of ours belongs to: written by every trainer of ours, compared with the lora_models row before the
# file is published (lora_artifact's identity_matches) and before it is used (domain/lora_identity.py).
CHARACTER_ID_KEY = "lora_pipelines.character_id"
TRIGGER_WORD_KEY = "lora_pipelines.trigger_word"
DATASET_HASH_KEY = "lora_pipelines.dataset_hash"
IDENTITY_KEYS = (CHARACTER_ID_KEY, TRIGGER_WORD_KEY, DATASET_HASH_KEY)


def trainer_metadata(base_model: str, trigger_word: str, *, rank: int, steps: int, trainer: str,
                     character_id: str | None = None, dataset_hash: str | None = None) -> dict[str, str]:
    """`__metadata__` a finished LoRA of ours carries (all values strings): what the Modal trainer's header rewrite
    adds to ai-toolkit's own (ai-toolkit writes `ss_base_model_version` and `ss_tag_frequency` of these, no
    modelspec), so the inspector reads base model and trigger word from every file we make, and selection reads
    whose LoRA it is (character id, trigger word, dataset hash)."""
    import json

    identity = {CHARACTER_ID_KEY: str(character_id)} if character_id is not None else {}
    if dataset_hash is not None:
        identity[DATASET_HASH_KEY] = str(dataset_hash)
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
        TRIGGER_WORD_KEY: trigger_word,
        **identity,
    }
