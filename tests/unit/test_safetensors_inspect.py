"""LoRA files written by the real safetensors library in every base-model layout, and hostile files refused."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import zipfile

import numpy as np
import pytest
import safetensors
from click.testing import CliRunner
from safetensors.numpy import save, save_file

from lora_pipelines.cli.inspect_lora import inspect_lora
from lora_pipelines.domain import lora_format
from lora_pipelines.domain.base_models import BASE_MODELS
from lora_pipelines.domain.safetensors_inspect import (
    ForeignLoraFamilyError,
    InvalidLoraFileError,
    inspect_lora_bytes,
    inspect_lora_file,
)


def lora_tensors(base_model: str, rank: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {name: rng.standard_normal(shape).astype(np.float16)
            for name, shape in lora_format.lora_tensor_shapes(base_model, rank).items()}


def raw_file(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


@pytest.mark.parametrize("base_model", BASE_MODELS)
def test_trainer_written_file_reports_its_base_model_and_trigger(tmp_path, base_model):
    path = tmp_path / "lora.safetensors"
    metadata = lora_format.trainer_metadata(base_model, "zxq person", rank=4, steps=100, trainer="ai-toolkit")
    save_file(lora_tensors(base_model), path, metadata=metadata)

    result = inspect_lora_file(path)

    assert (result.base_model, result.detected_from) == (base_model, "modelspec.architecture")
    assert (result.format, result.rank, result.trigger_word, result.tensors) == ("peft", 4, "zxq person", 4)
    assert result.size_bytes == path.stat().st_size
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.metadata["ss_steps"] == "100"


@pytest.mark.parametrize("base_model", BASE_MODELS)
def test_ss_base_model_version_is_used_without_modelspec(base_model):
    metadata = {"ss_base_model_version": lora_format.SS_BASE_MODEL_VERSION[base_model]}
    result = inspect_lora_bytes(save(lora_tensors(base_model), metadata=metadata))
    assert (result.base_model, result.detected_from) == (base_model, "ss_base_model_version")


@pytest.mark.parametrize("base_model", ["flux", "qwen-image", "z-image-turbo", "one-2.1"])
def test_key_patterns_identify_a_file_without_metadata(base_model):
    result = inspect_lora_bytes(save(lora_tensors(base_model)))
    assert (result.base_model, result.detected_from, result.trigger_word) == (base_model, "key_pattern", None)


def test_kohya_flux_file_and_kohya_version_alias():
    tensors = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": np.zeros((16, 64), np.float32),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": np.zeros((192, 16), np.float32),
               "lora_unet_double_blocks_0_img_attn_qkv.alpha": np.array(16.0, np.float32)}
    tags = json.dumps({"10_sks": {"sks woman": 12, "smiling": 3}, "reg": {"smiling": 5}})
    result = inspect_lora_bytes(save(tensors, metadata={"ss_base_model_version": "flux1", "ss_tag_frequency": tags}))
    assert (result.base_model, result.format, result.rank, result.trigger_word) == ("flux", "kohya", 16, "sks woman")
    assert inspect_lora_bytes(save(tensors)).detected_from == "key_pattern"


def test_metadata_is_tried_in_order_and_unknown_when_nothing_matches():
    flux_keys = lora_tensors("flux")
    # modelspec wins over ss_base_model_version, which wins over the keys
    meta = {"modelspec.architecture": "qwen-image/lora", "ss_base_model_version": "zimage"}
    assert inspect_lora_bytes(save(flux_keys, metadata=meta)).base_model == "qwen-image"
    zimage_only = {"ss_base_model_version": "zimage"}
    assert inspect_lora_bytes(save(flux_keys, metadata=zimage_only)).base_model == "z-image-turbo"
    other = {"some_adapter.proj.lora_down.weight": np.zeros((4, 8), np.float16)}
    result = inspect_lora_bytes(save(other, metadata={"modelspec.architecture": "some-new-model/lora",
                                                       "ss_base_model_version": "some_new_model"}))
    assert (result.base_model, result.detected_from) == ("unknown", None)


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x01\x02", "shorter than the 8-byte"),
    (raw_file(b"{}", length=200 * 1024 * 1024), "exceeds the 100 MB limit"),
    (raw_file(b'{"a":', length=5000), "runs past the end of the file"),
    (raw_file(b"{not json"), "not JSON"),
    (raw_file(b"\xff\xfe{}"), "not UTF-8"),
    (raw_file([1, 2]), "not an object"),
    (raw_file({"w": {"dtype": "F32", "shape": [2]}}), "lacks dtype/shape/data_offsets"),
    (raw_file({"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "unknown dtype"),
    (raw_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 6]}}, b"\0" * 6), "needs 8"),
    (raw_file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "past the end of the data"),
    (raw_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "overlaps"),
    (raw_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "gap of 4 bytes"),
    (raw_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9), "data section is 9 bytes"),
    (raw_file({"__metadata__": {"steps": 10}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
     "not a string"),
    (raw_file({"__metadata__": {"x": "y"}}), "no tensors"),
    (pickle.dumps({"lora": [1.0, 2.0]}, protocol=2), "looks like a pickle/PyTorch zip"),
    # json.loads raises RecursionError / a plain ValueError on these, which no caller catches
    (raw_file(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    (raw_file(b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', b"\0" * 4),
     "unreadable value"),
])
def test_hostile_files_are_refused_with_a_reason(data, reason):
    with pytest.raises(InvalidLoraFileError, match=reason.replace("(", r"\(")):
        inspect_lora_bytes(data)


def test_hostile_files_are_refused_by_safetensors_too():
    """Our structural checks agree with the real library on the cases it checks."""
    overlapping = raw_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12)
    past_end = raw_file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    for data in (overlapping, past_end):
        with pytest.raises(safetensors.SafetensorError):
            safetensors.deserialize(data)
        with pytest.raises(InvalidLoraFileError):
            inspect_lora_bytes(data)


def test_truncated_download_and_renamed_torch_zip_are_refused(tmp_path):
    good = save(lora_tensors("z-image-turbo"), metadata={"ss_base_model_version": "zimage"})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) - 100])
    with pytest.raises(InvalidLoraFileError, match="past the end of the data section"):
        inspect_lora_file(truncated)

    renamed = tmp_path / "model.safetensors"
    with zipfile.ZipFile(renamed, "w") as archive:  # torch.save's format: a zip holding data.pkl
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    with pytest.raises(InvalidLoraFileError, match="looks like a pickle/PyTorch zip, not safetensors"):
        inspect_lora_file(renamed)


def test_cli_prints_json_and_refuses_bad_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(lora_tensors("flux"), good, metadata=lora_format.trainer_metadata(
        "flux", "ohwx", rank=4, steps=10, trainer="ai-toolkit"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw_file(b"{not json"))
    runner = CliRunner()

    out = runner.invoke(inspect_lora, [str(good)])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.output)
    assert printed["base_model"] == "flux" and printed["trigger_word"] == "ohwx" and printed["rank"] == 4
    assert set(printed) == {"base_model", "detected_from", "format", "rank", "trigger_word", "tensors",
                            "size_bytes", "sha256"}

    out = runner.invoke(inspect_lora, [str(bad)])
    assert out.exit_code == 2
    assert out.stderr.startswith("error: header is not JSON") and out.stderr.count("\n") == 1


@pytest.mark.parametrize("magic_length", [0x0580, 0x0380, 0x0480, 0x0403 << 16 | 0x4B50])
def test_a_valid_file_whose_header_length_begins_like_a_pickle_or_zip_is_read(magic_length):
    """0x580 = 1408 is written as 80 05 ...: pickle protocol 5's magic. Such a file is still safetensors."""
    tensors = {name: np.ones(shape, np.float16)  # one block keeps the header under the smallest magic length
               for name, shape in lora_format.lora_tensor_shapes("qwen-image", 4, blocks=1).items()}
    metadata = lora_format.trainer_metadata("qwen-image", "ohwx_q", rank=4, steps=10, trainer="test")
    base = save(tensors, metadata=metadata)
    (length,) = struct.unpack("<Q", base[:8])
    header = base[8:8 + length].rstrip()
    assert len(header) < magic_length
    padded = header + b" " * (magic_length - len(header))  # JSON allows trailing spaces
    data = struct.pack("<Q", magic_length) + padded + base[8 + length:]
    assert data[:2] in (b"\x80\x05", b"\x80\x03", b"\x80\x04", b"\x80\x02", b"PK")
    assert set(safetensors.numpy.load(data)) == set(tensors)  # the reference reader agrees
    info = inspect_lora_bytes(data)
    assert (info.base_model, info.trigger_word) == ("qwen-image", "ohwx_q")


# ---- other trainers' files, and families we do not run

def kohya_tensors(modules: dict[str, tuple[int, int]], rank: int = 4) -> dict[str, np.ndarray]:
    """kohya / musubi layout: `<module>.lora_down.weight` (rank x in), `.lora_up.weight` (out x rank), `.alpha`."""
    tensors = {}
    for module, (fan_in, fan_out) in modules.items():
        tensors[f"{module}.lora_down.weight"] = np.zeros((rank, fan_in), np.float16)
        tensors[f"{module}.lora_up.weight"] = np.zeros((fan_out, rank), np.float16)
        tensors[f"{module}.alpha"] = np.array(rank, np.float16)
    return tensors


def peft_tensors(modules: dict[str, tuple[int, int]], rank: int = 4) -> dict[str, np.ndarray]:
    """ai-toolkit / diffusers layout: `<module>.lora_A.weight`, `.lora_B.weight`, no alpha."""
    tensors = {}
    for module, (fan_in, fan_out) in modules.items():
        tensors[f"{module}.lora_A.weight"] = np.zeros((rank, fan_in), np.float16)
        tensors[f"{module}.lora_B.weight"] = np.zeros((fan_out, rank), np.float16)
    return tensors


# Our families as the other trainers write them (metadata values from musubi-tuner's architectures.py and
# sai_model_spec.py, sd-scripts' flux_utils.py and sai_model_spec.py).
OURS_FROM_OTHER_TRAINERS = {
    "musubi z-image": (kohya_tensors({"lora_unet_layers_0_attention_to_q": (3840, 3840)}),
                       {"ss_base_model_version": "z_image", "modelspec.architecture": "Z-Image/lora"}, "z-image-turbo"),
    "comfy-format z-image": (kohya_tensors({"lora_unet_layers_0_attention_qkv": (3840, 11520)}), {}, "z-image-turbo"),
    "musubi qwen-image": (kohya_tensors({"lora_unet_transformer_blocks_0_img_mlp_net_0_proj": (3072, 12288)}),
                          {"ss_base_model_version": "qwen_image", "modelspec.architecture": "Qwen-Image/lora"},
                          "qwen-image"),
    "musubi wan 14B": (kohya_tensors({"lora_unet_blocks_0_cross_attn_q": (5120, 5120)}),
                       {"ss_base_model_version": "wan", "modelspec.architecture": "wan2.1/lora"}, "one-2.1"),
    "kohya flux.1 mlp": (kohya_tensors({"lora_unet_double_blocks_0_img_mlp_0": (3072, 12288),
                                        "lora_unet_single_blocks_37_linear1": (3072, 21504),
                                        "lora_unet_double_blocks_18_img_mod_lin": (3072, 18432)}),
                         {"ss_base_model_version": "flux1", "modelspec.architecture": "flux-1-dev/lora"}, "flux"),
    "diffusers flux.1": (peft_tensors({"transformer.single_transformer_blocks.37.attn.to_q": (3072, 3072),
                                       "transformer.transformer_blocks.18.attn.add_q_proj": (3072, 3072)}), {}, "flux"),
    "ai-toolkit wan 2.2 14B": (peft_tensors({"diffusion_model.blocks.39.self_attn.q": (5120, 5120)}),
                               {"ss_base_model_version": "wan_2.2_14b"}, "one-2.2"),
}


@pytest.mark.parametrize("case", sorted(OURS_FROM_OTHER_TRAINERS))
def test_other_trainers_files_of_our_families_are_read(case):
    tensors, metadata, expected = OURS_FROM_OTHER_TRAINERS[case]
    assert inspect_lora_bytes(save(tensors, metadata=metadata or None)).base_model == expected


# (tensors, metadata, family named). Layouts and widths as the trainers' sources write them; see lora_families.py.
FOREIGN = {
    "ai-toolkit FLUX.2": (peft_tensors({"diffusion_model.double_blocks.0.img_attn.qkv": (6144, 18432)}),
                          {"ss_base_model_version": "flux2"}, "FLUX.2"),
    "ai-toolkit FLUX.2 no metadata": (peft_tensors({"diffusion_model.double_blocks.0.img_attn.qkv": (6144, 18432)}),
                                      {}, "FLUX.2"),
    "musubi FLUX.2 klein 4B": (kohya_tensors({"lora_unet_double_blocks_0_img_mlp_0": (3072, 18432)}),
                               {"ss_base_model_version": "flux_2_klein_4b",
                                "modelspec.architecture": "Flux.2-klein-4b/lora"}, "FLUX.2 [klein] 4B"),
    "FLUX.2 klein 4B no metadata": (kohya_tensors({"lora_unet_single_blocks_0_linear1": (3072, 27648),
                                                   "lora_unet_single_blocks_0_linear2": (12288, 3072)}),
                                    {}, "FLUX.2 [klein] 4B"),
    "FLUX.2 klein 4B MLP only, no metadata": (kohya_tensors({"lora_unet_double_blocks_0_img_mlp_0": (3072, 18432)}),
                                              {}, "FLUX.2 [klein] 4B"),
    "FLUX.2 diffusers names": (peft_tensors({"transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj":
                                             (3072, 27648)}), {}, "FLUX.2"),
    "ai-toolkit Chroma": (peft_tensors({"diffusion_model.double_blocks.0.img_attn.qkv": (3072, 9216)}),
                          {"ss_base_model_version": "chroma"}, "Chroma"),
    "kohya Chroma": (kohya_tensors({"lora_unet_double_blocks_0_img_attn_qkv": (3072, 9216)}),
                     {"ss_base_model_version": "chroma", "modelspec.architecture": "chroma/lora"}, "Chroma"),
    "Chroma guidance layer": (peft_tensors({"transformer.distilled_guidance_layer.layers.0.linear_1": (5120, 5120)}),
                              {}, "Chroma"),
    "kohya Lumina 2": (kohya_tensors({"lora_unet_layers_0_attention_qkv": (2304, 3840)}),
                       {"ss_base_model_version": "lumina2", "modelspec.architecture": "lumina-2/lora"},
                       "Lumina-Image 2.0"),
    "kohya Lumina 2 no metadata": (kohya_tensors({"lora_unet_layers_0_attention_qkv": (2304, 3840)}), {},
                                   "Lumina-Image 2.0"),
    "ai-toolkit Wan 2.2 5B": (peft_tensors({"diffusion_model.blocks.0.self_attn.q": (3072, 3072)}),
                              {"ss_base_model_version": "wan_2.2_5b"}, "Wan 2.2 TI2V 5B"),
    "Wan 2.2 5B no metadata": (peft_tensors({"diffusion_model.blocks.0.cross_attn.q": (3072, 3072)}), {},
                               "Wan 2.2 TI2V 5B"),
    # ai-toolkit writes "wan_2.1" for the 1.3B too: the width decides, whatever the metadata says
    "ai-toolkit Wan 2.1 1.3B": (peft_tensors({"diffusion_model.blocks.0.self_attn.q": (1536, 1536)}),
                                {"ss_base_model_version": "wan_2.1"}, "Wan 2.1 1.3B"),
    "musubi FLUX.1 Kontext": (kohya_tensors({"lora_unet_double_blocks_0_img_attn_qkv": (3072, 9216)}),
                              {"ss_base_model_version": "flux_kontext", "modelspec.architecture": "Flux.1-dev/lora"},
                              "FLUX.1 Kontext"),
    "musubi Qwen-Image-Edit": (kohya_tensors({"lora_unet_transformer_blocks_0_img_mlp_net_0_proj": (3072, 12288)}),
                               {"ss_base_model_version": "qwen_image_edit",
                                "modelspec.architecture": "Qwen-Image-Edit/lora"}, "Qwen-Image-Edit"),
    "kohya SDXL": (kohya_tensors({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (2048, 640)}),
                   {"ss_base_model_version": "sdxl_base_v1-0"}, "SDXL"),
    "SD 1.5 no metadata": (kohya_tensors({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k":
                                          (768, 320)}), {}, "Stable Diffusion 1.x"),
    "musubi HunyuanVideo": (kohya_tensors({"lora_unet_double_blocks_19_img_attn_qkv": (3072, 9216)}),
                            {"ss_base_model_version": "hunyuan_video", "modelspec.architecture": "hunyuan-video/lora"},
                            "HunyuanVideo"),
    "HunyuanVideo no metadata": (kohya_tensors({"lora_unet_double_blocks_0_img_mod_linear": (3072, 18432),
                                                "lora_unet_single_blocks_39_linear1": (3072, 21504)}), {},
                                 "HunyuanVideo"),
    "ai-toolkit HiDream": (peft_tensors({"diffusion_model.double_stream_blocks.0.block.attn1.to_q": (2560, 2560)}),
                           {"ss_base_model_version": "hidream_i1"}, "HiDream-I1"),
    "ai-toolkit OmniGen2": (peft_tensors({"transformer.layers.0.attn.to_q": (2520, 2520)}),
                            {"ss_base_model_version": "omnigen2"}, "OmniGen2"),
    "ai-toolkit LTX-2": (peft_tensors({"diffusion_model.transformer_blocks.0.attn1.to_q": (4096, 4096)}),
                         {"ss_base_model_version": "ltx2"}, "LTX-2"),
    "kohya SD3": (kohya_tensors({"lora_unet_joint_blocks_0_x_block_attn_qkv": (1536, 4608)}),
                  {"ss_base_model_version": "medium", "modelspec.architecture": "stable-diffusion-3-medium/lora"},
                  "SD3"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_a_lora_for_a_family_we_do_not_run_is_refused_naming_it(case):
    tensors, metadata, family = FOREIGN[case]
    with pytest.raises(ForeignLoraFamilyError) as refused:
        inspect_lora_bytes(save(tensors, metadata=metadata or None))
    assert refused.value.family == family
    assert str(refused.value).startswith(f"LoRA for {family} (from ") and "\n" not in str(refused.value)


def test_inspect_lora_refuses_a_foreign_file_in_one_line_naming_the_family(tmp_path):
    tensors, metadata, _ = FOREIGN["kohya Lumina 2 no metadata"]
    path = tmp_path / "lumina.safetensors"
    save_file(tensors, path)

    out = CliRunner().invoke(inspect_lora, [str(path)])

    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"error: {path}: LoRA for Lumina-Image 2.0 (from hidden width 2304")
    assert "z-image-turbo, flux, qwen-image, one-2.1, one-2.2" in out.stderr
