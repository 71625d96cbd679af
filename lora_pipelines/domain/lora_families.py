"""Which other model family a LoRA file is for, when it is not one of ours.

A LoRA made for another family is the "LoRA silently not applied" failure: its keys match nothing (diffusers
then injects nothing and says so only in a log line) or only part of the model. So the inspector refuses such a
file, naming the family. A file says what it is for in its metadata (the trainers always write
`ss_base_model_version`, kohya and musubi also `modelspec.architecture`); without metadata, key names and the
hidden width read from the LoRA's down projections tell the families apart.

Values were read in the trainers' sources:
  ai-toolkit  ostris/ai-toolkit 27a03a91f23eb1b757d5ec2e80ee3e129cfcc350: every get_base_model_version() in
              extensions_built_in/diffusion_models/*/ and toolkit/stable_diffusion_model.py (the legacy
              families), toolkit/models/base_model.py (default: the `arch` attribute, e.g. cogview4's)
  sd-scripts  kohya-ss/sd-scripts 48d368fa557731ad0488c07304dfeba8c07910eb: library/sai_model_spec.py (ARCH_*),
              MODEL_VERSION_* in library/{flux_utils,lumina_util,sdxl_model_util,hunyuan_image_utils}.py,
              library/model_util.py get_model_version_str_for_sd1_sd2
  musubi      kohya-ss/musubi-tuner 30c658c4f4b0bf05038b3346eff9670259b10fc7: ss_base_model_version is
              ARCHITECTURE_*_FULL (src/musubi_tuner/dataset/architectures.py), modelspec.architecture is ARCH_*
              (src/musubi_tuner/utils/sai_model_spec.py); it writes "wan"/"wan2.1" for every Wan, 2.2 included
Widths from huggingface/diffusers 58eb52c0803ea9af3abec60841c2a093bdf1f951 (scripts/convert_wan_to_diffusers.py,
the transformer configs) and the trainers' model code named below.

Same architecture, different checkpoint: Qwen-Image-Edit (QwenImageTransformer2DModel, Qwen-Image's config) and
FLUX.1 Kontext (FLUX.1's transformer) LoRAs inject completely into our models, but they were trained on editing
checkpoints with reference-image conditioning that our text-to-image routes do not run, so a file that declares
one is refused; without metadata they cannot be told from qwen-image / flux LoRAs (ai-toolkit writes
"qwen_image" for its Qwen-Image-Edit LoRAs too) and are read as those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lora_pipelines.domain import lora_format


@dataclass(frozen=True)
class ForeignFamily:
    name: str  # as a user knows it, e.g. "FLUX.2"
    evidence: str  # what in the file says so, e.g. "ss_base_model_version 'flux2'"


FLUX_2 = "FLUX.2"
CHROMA = "Chroma"
LUMINA_2 = "Lumina-Image 2.0"
WAN_22_5B = "Wan 2.2 TI2V 5B"
WAN_21_1_3B = "Wan 2.1 1.3B"
WAN_21_I2V = "Wan 2.1 image-to-video"
HUNYUAN_VIDEO = "HunyuanVideo"

# ss_base_model_version (lowercased) -> family; matched exactly or as the longest prefix, against ours too
# (lora_format.SS_VERSION_ALIASES), so "wan_2.2_5b" is not read as our "wan_2.2".
FOREIGN_SS_VERSIONS = {
    # ai-toolkit
    "flux2": FLUX_2, "flux2_klein_4b": "FLUX.2 [klein] 4B", "flux2_klein_9b": "FLUX.2 [klein] 9B",
    "flux.1_kontext": "FLUX.1 Kontext", "chroma": CHROMA, "chroma_radiance": "Chroma Radiance",
    "zeta_chroma": "Zeta-Chroma", "lumina2": LUMINA_2, "wan_2.2_5b": WAN_22_5B, "hidream_i1": "HiDream-I1",
    "hidream_o1": "HiDream-O1", "omnigen2": "OmniGen2", "ltx2": "LTX-2", "anima": "Anima", "f-lite": "F-Lite",
    "ideogram4": "Ideogram 4", "krea2": "Krea 2", "mageflow": "MageFlow", "minimax_h3": "MiniMax H3",
    "boogu_image": "Boogu Image", "nucleus_image": "Nucleus Image", "ernie_image": "ERNIE-Image",
    "prx_pixel": "PRX Pixel", "cogview4": "CogView4", "flex2": "Flex.2", "pixart": "PixArt", "sd_3": "SD3",
    "auraflow": "AuraFlow", "ssd": "SSD-1B", "vega": "Vega", "sdxl_1.0": "SDXL", "sd_2.1": "Stable Diffusion 2.x",
    "sd_1.5": "Stable Diffusion 1.x",
    # sd-scripts
    "sd_v1": "Stable Diffusion 1.x", "sd_v2": "Stable Diffusion 2.x", "sdxl_base_v1-0": "SDXL",
    "hunyuan-image-2.1": "HunyuanImage 2.1",
    # musubi-tuner
    "flux_kontext": "FLUX.1 Kontext", "flux_2_dev": FLUX_2, "flux_2_klein_4b": "FLUX.2 [klein] 4B",
    "flux_2_klein_9b": "FLUX.2 [klein] 9B", "qwen_image_edit": "Qwen-Image-Edit",
    "qwen_image_layered": "Qwen-Image-Layered", "hunyuan_video": HUNYUAN_VIDEO,
    "hunyuan_video_1_5": "HunyuanVideo 1.5", "framepack": "FramePack", "kandinsky5": "Kandinsky 5",
    "hidream_o1_image": "HiDream-O1",
}

# modelspec.architecture prefixes (lowercased), matched like FOREIGN_SS_VERSIONS against
# lora_format.ARCHITECTURE_PREFIXES. musubi writes "Flux.1-dev" for Kontext: its ss_base_model_version names it.
FOREIGN_ARCHITECTURES = {
    # sd-scripts
    "stable-diffusion-v1": "Stable Diffusion 1.x", "stable-diffusion-v2": "Stable Diffusion 2.x",
    "stable-diffusion-xl": "SDXL", "stable-diffusion-3": "SD3", "chroma": CHROMA, "lumina": LUMINA_2,
    "hunyuan-image": "HunyuanImage 2.1", "anima": "Anima",
    # musubi-tuner
    "hunyuan-video": HUNYUAN_VIDEO, "hunyuan-video-1.5": "HunyuanVideo 1.5", "framepack": "FramePack",
    "flux.2": FLUX_2, "flux.2-klein-4b": "FLUX.2 [klein] 4B", "flux.2-klein-9b": "FLUX.2 [klein] 9B",
    "qwen-image-edit": "Qwen-Image-Edit", "qwen-image-layered": "Qwen-Image-Layered",
    "kandinsky-5": "Kandinsky 5", "hidream-o1-image": "HiDream-O1", "ideogram-4": "Ideogram 4", "krea-2": "Krea 2",
}


def _longest_prefix(value: str, table: Iterable[str]) -> str:
    return max((p for p in table if value.startswith(p)), key=len, default="")


def _from_value(value: str, foreign: Mapping[str, str], ours: Iterable[str]) -> str | None:
    value = value.strip().lower()
    theirs = _longest_prefix(value, foreign)
    return foreign[theirs] if theirs and len(theirs) > len(_longest_prefix(value, ours)) else None


def foreign_family_from_metadata(metadata: Mapping[str, str]) -> ForeignFamily | None:
    """The family either metadata key names, when it is not ours (both are read: musubi's Kontext files carry
    FLUX.1's architecture and say Kontext only in ss_base_model_version)."""
    checks = (("modelspec.architecture", FOREIGN_ARCHITECTURES, lora_format.ARCHITECTURE_PREFIXES),
              ("ss_base_model_version", FOREIGN_SS_VERSIONS, lora_format.SS_VERSION_ALIASES))
    for key, foreign, ours in checks:
        value = metadata.get(key, "")
        if value and (family := _from_value(value, foreign, ours)):
            return ForeignFamily(family, f"{key} {value.strip()!r}")
    return None


# ---- tensor names and shapes (files without metadata)

_DOWN = re.compile(r"^(?P<module>.+?)\.(lora_A|lora_down|lora\.down)\.weight$")
_UP = re.compile(r"^(?P<module>.+?)\.(lora_B|lora_up|lora\.up)\.weight$")

# Key names only one family has.
_NAMED = (
    # ai-toolkit chroma/src/model.py and diffusers ChromaTransformer2DModel: FLUX.1's modulation replaced by this
    (re.compile(r"distilled_guidance_layer"), CHROMA),
    # diffusers transformer_flux2.py (Flux2Transformer2DModel): fused single-block projection, SwiGLU ff
    (re.compile(r"to_qkv_mlp_proj|(^|[._])ff(_context)?[._]linear_(in|out)"), FLUX_2),
    # Wan 2.1 I2V's image cross-attention (convert_to_original's k_img / v_img, diffusers add_k_proj)
    (re.compile(r"(^|[._])blocks[._]\d+[._](cross_attn|attn2)[._](k_img|v_img|add_k_proj|add_v_proj)"), WAN_21_I2V),
    # UNet blocks (kohya lora_unet_down_blocks_..., diffusers unet.down_blocks...; LDM input_blocks)
    (re.compile(r"(^|[._])(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)[._]\d"),
     "Stable Diffusion (UNet)"),
)
# SD's cross-attention key projection reads the text encoder's width: CLIP-L 768 (SD 1.x), OpenCLIP-H 1024
# (SD 2.x), CLIP-L + bigG 2048 (SDXL).
_UNET_CROSS_ATTN_K = re.compile(r"attn2[._]to_k$")
_UNET_BY_CONTEXT_WIDTH = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL"}

# Attention projections whose input is the hidden width, per layout we read.
_ZIMAGE_ATTN = re.compile(r"(^|[._])layers[._]\d+[._]attention[._](to_q|to_k|to_v|qkv|to_out|out)")
_WAN_ATTN = re.compile(
    r"(^|[._])blocks[._]\d+[._](self_attn|cross_attn|attn1|attn2)[._](q|k|v|o|to_q|to_k|to_v|to_out)")
_BFL_DOUBLE = re.compile(r"(^|[._])double_blocks[._](?P<i>\d+)[._]")
_BFL_SINGLE = re.compile(r"(^|[._])single_blocks[._](?P<i>\d+)[._]")
_DIFFUSERS_DOUBLE = re.compile(r"(^|[._])transformer_blocks[._](?P<i>\d+)[._]")
_DIFFUSERS_SINGLE = re.compile(r"(^|[._])single_transformer_blocks[._](?P<i>\d+)[._]")
# musubi hunyuan_model/models.py: ModulateDiT's `.linear` (FLUX.1's Modulation is `.lin`)
_HUNYUAN_MODULATION = re.compile(r"(img_mod|txt_mod|modulation)[._]linear")
# Modules in BFL blocks that read the hidden width (all but the MLP's down projections)
_BFL_READS_HIDDEN = re.compile(r"(double|single)_blocks[._]\d+[._](img_attn[._]qkv|txt_attn[._]qkv|img_attn[._]proj"
                               r"|txt_attn[._]proj|img_mlp[._]0|txt_mlp[._]0|linear1)$")

# Z-Image dim 3840 (Tongyi-MAI Z-Image config; diffusers ZImageTransformer2DModel); Lumina 2 NextDiT dim 2304
# (sd-scripts library/lumina_models.py NextDiT_2B_GQA_patch2_Adaln_Refiner), same layers.N.attention names.
_ZIMAGE_WIDTHS = {2304: LUMINA_2}
# Wan: 14B 5120, 2.2 TI2V 5B 3072, 2.1 1.3B 1536 (convert_wan_to_diffusers.py; musubi wan/configs/*.py).
_WAN_WIDTHS = {3072: WAN_22_5B, 1536: WAN_21_1_3B}
# BFL double/single blocks: FLUX.2 dev 6144, klein 9B 4096, klein 4B 3072 like FLUX.1 (ai-toolkit
# flux2/src/model.py Flux2Params / Klein9BParams / Klein4BParams). HunyuanVideo (3072, 20 double and 40 single
# blocks) has FLUX.1's widths; FLUX.1 has 19 and 38.
_BFL_WIDTHS = {6144: FLUX_2, 4096: "FLUX.2 [klein] 9B"}


def _down_shapes(tensors: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    return {m["module"]: tuple(info.get("shape") or ()) for name, info in tensors.items() if (m := _DOWN.match(name))}


def _up_shapes(tensors: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    return {m["module"]: tuple(info.get("shape") or ()) for name, info in tensors.items() if (m := _UP.match(name))}


def _in_widths(downs: Mapping[str, tuple[int, ...]], pattern: re.Pattern[str]) -> set[int]:
    return {shape[1] for module, shape in downs.items() if len(shape) == 2 and pattern.search(module)}


def _flux2_mlp(downs: Mapping[str, tuple[int, ...]], ups: Mapping[str, tuple[int, ...]], width: int) -> bool:
    """FLUX.2's SwiGLU MLP is 3 x width wide (FLUX.1's GELU one 4 x): img_mlp.0 writes 6W, img_mlp.2 reads 3W,
    single linear1 writes 3W + 6W, linear2 reads W + 3W (ai-toolkit flux2/src/model.py; FLUX.1: 4W, 4W, 7W, 5W)."""
    checks = ((ups, r"_mlp[._]0$", 0, 6 * width), (downs, r"_mlp[._]2$", 1, 3 * width),
              (ups, r"single_blocks[._]\d+[._]linear1$", 0, 9 * width),
              (downs, r"single_blocks[._]\d+[._]linear2$", 1, 4 * width))
    return any(len(shape) == 2 and shape[axis] == expected and re.search(pattern, module)
               for shapes, pattern, axis, expected in checks for module, shape in shapes.items())


def _past_flux1_blocks(names: list[str], double: re.Pattern[str], single: re.Pattern[str]) -> bool:
    """Block indices FLUX.1 (19 double, 38 single) does not have, in a file that has single blocks."""
    singles = {int(m["i"]) for n in names if (m := single.search(n))}
    if not singles:
        return False
    doubles = {int(m["i"]) for n in names if (m := double.search(n)) and not single.search(n)}
    return max(singles) >= 38 or max(doubles, default=-1) >= 19


def foreign_family_from_tensors(tensors: Mapping[str, Mapping[str, Any]]) -> ForeignFamily | None:
    """The family the key names or the hidden width point to, when it is not ours; None when they fit ours or
    tell nothing (e.g. a LoKr file, or the scaled-down widths of a test file)."""
    names = list(tensors)
    downs = _down_shapes(tensors)
    for pattern, family in _NAMED:
        if hit := next((n for n in names if pattern.search(n)), None):
            if family == "Stable Diffusion (UNet)":
                widths = _in_widths(downs, _UNET_CROSS_ATTN_K)
                family = next((_UNET_BY_CONTEXT_WIDTH[w] for w in sorted(widths) if w in _UNET_BY_CONTEXT_WIDTH),
                              family)
            return ForeignFamily(family, f"tensor {hit!r}")
    for pattern, table in ((_ZIMAGE_ATTN, _ZIMAGE_WIDTHS), (_WAN_ATTN, _WAN_WIDTHS), (_BFL_READS_HIDDEN, _BFL_WIDTHS)):
        for width in sorted(_in_widths(downs, pattern)):
            if width in table:
                return ForeignFamily(table[width], f"hidden width {width} in its attention projections")
    in_bfl_blocks = [n for n in names if _BFL_DOUBLE.search(n) or _BFL_SINGLE.search(n)]
    if in_bfl_blocks:
        ups = _up_shapes(tensors)
        for width in sorted(_in_widths(downs, _BFL_READS_HIDDEN)):
            if _flux2_mlp(downs, ups, width):
                return ForeignFamily("FLUX.2 [klein] 4B" if width == 3072 else FLUX_2,
                                     f"a SwiGLU MLP 3 x the hidden width {width} (FLUX.1's is 4 x)")
    hunyuan_modulation = any(_HUNYUAN_MODULATION.search(n) for n in in_bfl_blocks)
    if hunyuan_modulation or _past_flux1_blocks(names, _BFL_DOUBLE, _BFL_SINGLE) or _past_flux1_blocks(
            names, _DIFFUSERS_DOUBLE, _DIFFUSERS_SINGLE):
        return ForeignFamily(HUNYUAN_VIDEO, "more double/single blocks than FLUX.1's 19 + 38, or `mod.linear` "
                                            "modulation (HunyuanVideo has 20 + 40)")
    return None


def foreign_family(metadata: Mapping[str, str], tensors: Mapping[str, Mapping[str, Any]]) -> ForeignFamily | None:
    return foreign_family_from_metadata(metadata) or foreign_family_from_tensors(tensors)
