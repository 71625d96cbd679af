"""ai-toolkit's LoRA files for each base model we run, loaded by the real diffusers loaders on CPU.

Tiny, randomly initialised transformers of each family (configs from diffusers' own model tests) get a LoRA on
exactly the modules ai-toolkit trains, written in ai-toolkit's key layout and metadata (lora_format; ai-toolkit
27a03a91f23eb1b757d5ec2e80ee3e129cfcc350), fixed up by the Modal trainer's header rewrite (modal_apps/artifacts.py),
read by `inspect-lora`, then loaded the way modal_apps/diffusers_runner.py loads them (`pipe.load_lora_weights`;
Wan 2.2's low-noise expert with `load_into_transformer_2=True`).

Needs the `formats` extra (CPU torch, diffusers, peft): skipped without it, a failure under CI=true.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import _need
from lora_pipelines.cli import main as cli
from lora_pipelines.domain import lora_format
from lora_pipelines.domain.lora_selection import CharacterFacts, InspectOutcome, LoraCandidate, select_lora
from lora_pipelines.domain.model_registry import get_model
from lora_pipelines.domain.safetensors_inspect import inspect_lora_file
from modal_apps.artifacts import finalize_lora

RANK = 4
TRIGGER = "ohwx_anna"
ADAPTER = "lora_7"  # what DiffusersRunner._adapter_name makes of LoRA id 7
IMAGE_FAMILIES = ("flux", "qwen-image", "z-image-turbo", "one-2.1")
# get_base_model_version() of ai-toolkit's model classes (toolkit/stable_diffusion_model.py for FLUX.1,
# extensions_built_in/diffusion_models/{z_image,qwen_image,wan22}/, toolkit/models/wan21/wan21.py)
AI_TOOLKIT_VERSION = {"flux": "flux.1", "z-image-turbo": "zimage", "qwen-image": "qwen_image", "one-2.1": "wan_2.1",
                      "one-2.2": "wan_2.2_14b"}


@pytest.fixture(scope="module")
def torch():
    try:
        import diffusers  # noqa: F401
        import peft  # noqa: F401
        import torch
    except ImportError as exc:
        _need(False, f"the formats extra is not installed ({exc.name} missing): "
                     "pip install torch==2.13.0 -e '.[formats]'")
    torch.set_num_threads(2)
    return torch


def tiny_transformer(torch, base_model: str, seed: int):
    """Each family's diffusers transformer at the size of diffusers' tests/models/transformers/test_models_*.py."""
    import diffusers

    torch.manual_seed(seed)
    if base_model == "flux":
        return diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    if base_model == "qwen-image":
        return diffusers.QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
            joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    if base_model == "z-image-turbo":
        return diffusers.ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=16, n_layers=1, n_refiner_layers=1,
            n_heads=1, n_kv_heads=2, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
            axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    return diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32)


def pipeline(base_model: str, transformer, transformer_2=None):
    """The family's diffusers pipeline around the transformer(s); no text encoder or VAE is needed to load LoRAs."""
    import diffusers

    if base_model == "flux":
        return diffusers.FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                      text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    if base_model == "qwen-image":
        return diffusers.QwenImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                           transformer=transformer)
    if base_model == "z-image-turbo":
        return diffusers.ZImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                        transformer=transformer)
    boundary = 0.875 if transformer_2 is not None else None  # ai-toolkit's wan22_14b multistage boundary
    return diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=transformer,
                                 transformer_2=transformer_2, boundary_ratio=boundary)


def ai_toolkit_lora(torch, base_model: str, transformer, seed: int) -> tuple[dict, dict]:
    """({module: (lora_A, lora_B)}, state dict) for every Linear ai-toolkit trains, saved in float16
    (our trainer config's save dtype) under ai-toolkit's names."""
    generator = torch.Generator().manual_seed(seed)
    modules, state = {}, OrderedDict()
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and lora_format.ai_toolkit_targets(base_model, name):
            down = torch.randn(RANK, module.in_features, generator=generator).half()
            up = torch.randn(module.out_features, RANK, generator=generator).half()
            modules[name] = (down, up)
            key = lora_format.ai_toolkit_module_key(base_model, name)
            state[f"{key}.lora_A.weight"], state[f"{key}.lora_B.weight"] = down, up
    return modules, state


def ai_toolkit_metadata(base_model: str, job_name: str, state: dict) -> dict[str, str]:
    """`__metadata__` as ai-toolkit's BaseSDTrainProcess.save writes it for our job config (trainer_config.py's
    `meta`): the job meta, update_training_metadata()'s keys, toolkit/metadata.py get_meta_for_safetensors and
    add_model_hash_to_meta (sd-webui-additional-networks hashes, toolkit/train_tools.py)."""
    from safetensors.torch import save

    meta = OrderedDict(name="[name]", version="1.0", lora_model_id="7", character_id=3, base_model=base_model)
    meta["training_info"] = OrderedDict(step=10, epoch=0)
    meta["ss_base_model_version"] = AI_TOOLKIT_VERSION[base_model]
    meta["ss_output_name"] = job_name
    meta["ss_tag_frequency"] = {f"1_{TRIGGER}": {TRIGGER: 1}}
    meta = json.loads(json.dumps(meta).replace("[name]", job_name), object_pairs_hook=OrderedDict)
    meta["software"] = {"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit", "version": "0.12.26"}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    meta["format"] = "pt"
    hashed = io.BytesIO(save(state, {k: v for k, v in meta.items() if k.startswith("ss_")}))
    (length,) = (int.from_bytes(hashed.read(8), "little"),)
    hashed.seek(8 + length)
    meta["sshs_model_hash"] = hashlib.sha256(hashed.read()).hexdigest()
    hashed.seek(0x100000)
    meta["sshs_legacy_hash"] = hashlib.sha256(hashed.read(0x10000)).hexdigest()[:8]
    return meta


def write_lora(path: Path, base_model: str, state: dict) -> Path:
    from safetensors.torch import save_file

    save_file(state, path, ai_toolkit_metadata(base_model, path.stem, state))
    return path


def inspect_cli(path: Path) -> dict:
    out = CliRunner().invoke(cli, ["inspect-lora", str(path)])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def trained_file(tmp_path: Path, base_model: str, state: dict, name: str = "lora_7") -> Path:
    """ai-toolkit's file, read as ai-toolkit left it, then through the trainer's header rewrite, read again."""
    path = write_lora(tmp_path / f"{name}.safetensors", base_model, state)
    raw = inspect_cli(path)
    assert (raw["base_model"], raw["detected_from"], raw["trigger_word"]) == (
        base_model, "ss_base_model_version", TRIGGER)
    assert (raw["format"], raw["rank"], raw["tensors"]) == ("peft", RANK, len(state))
    finalize_lora(path, base_model=base_model, trigger_word=TRIGGER, rank=RANK, steps=10)
    final = inspect_cli(path)
    assert (final["base_model"], final["detected_from"], final["trigger_word"]) == (
        base_model, "modelspec.architecture", TRIGGER)
    assert inspect_lora_file(path).metadata["sshs_model_hash"] == raw_hash(state, base_model, path.stem)
    return path


def raw_hash(state: dict, base_model: str, job_name: str) -> str:
    return ai_toolkit_metadata(base_model, job_name, state)["sshs_model_hash"]


def base_weights(torch, transformer, modules) -> dict:
    return {name: transformer.get_submodule(name).weight.detach().clone() for name in modules}


def assert_fully_applied(torch, transformer, modules: dict, before: dict) -> None:
    """Every LoRA module injected with the file's values (no key left unloaded), nothing else touched."""
    from peft.tuners.lora import LoraLayer

    injected = {name for name, m in transformer.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A}
    assert injected == set(modules)
    for name, (down, up) in modules.items():
        layer = transformer.get_submodule(name)
        assert torch.equal(layer.lora_A[ADAPTER].weight, down.float()), name
        assert torch.equal(layer.lora_B[ADAPTER].weight, up.float()), name
        assert layer.scaling[ADAPTER] == 1.0  # PEFT files carry no alpha: ai-toolkit trains with alpha == rank
        assert torch.equal(layer.get_base_layer().weight, before[name])


def assert_fuses_and_unfuses(torch, pipe, components: list[str], experts: list[tuple]) -> None:
    """Fusing adds B @ A to every targeted weight; unfusing restores each one."""
    pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=[ADAPTER])
    for transformer, modules, before in experts:
        for name, (down, up) in modules.items():
            fused = transformer.get_submodule(name).get_base_layer().weight
            assert torch.allclose(fused - before[name], up.float() @ down.float(), atol=1e-3, rtol=1e-4), name
    pipe.unfuse_lora(components=components)
    for transformer, modules, before in experts:
        for name in modules:
            assert torch.allclose(transformer.get_submodule(name).get_base_layer().weight, before[name], atol=1e-4)


@pytest.mark.parametrize("base_model", IMAGE_FAMILIES)
def test_an_ai_toolkit_lora_is_fully_applied_by_the_diffusers_pipeline(torch, tmp_path, base_model):
    transformer = tiny_transformer(torch, base_model, seed=1)
    modules, state = ai_toolkit_lora(torch, base_model, transformer, seed=2)
    path = trained_file(tmp_path, base_model, state)
    before = base_weights(torch, transformer, modules)
    pipe = pipeline(base_model, transformer)

    pipe.load_lora_weights(str(path), adapter_name=ADAPTER)

    assert modules and len(state) == 2 * len(modules)
    assert_fully_applied(torch, transformer, modules, before)
    assert_fuses_and_unfuses(torch, pipe, ["transformer"], [(transformer, modules, before)])


def test_wan_2_2_high_and_low_noise_loras_load_into_both_experts(torch, tmp_path):
    """ai-toolkit trains both experts and saves one file each (wan22_14b_model.py save_lora,
    split_multistage_loras defaults to True): `_high_noise` for `transformer`, `_low_noise` for `transformer_2`."""
    high, low = tiny_transformer(torch, "one-2.2", seed=1), tiny_transformer(torch, "one-2.2", seed=3)
    high_modules, high_state = ai_toolkit_lora(torch, "one-2.2", high, seed=2)
    low_modules, low_state = ai_toolkit_lora(torch, "one-2.2", low, seed=4)
    high_path = trained_file(tmp_path, "one-2.2", high_state, "lora_7_high_noise")
    low_path = trained_file(tmp_path, "one-2.2", low_state, "lora_7_low_noise")
    before_high, before_low = base_weights(torch, high, high_modules), base_weights(torch, low, low_modules)
    pipe = pipeline("one-2.2", high, low)

    pipe.load_lora_weights(str(high_path), adapter_name=ADAPTER)
    pipe.load_lora_weights(str(low_path), adapter_name=ADAPTER, load_into_transformer_2=True)

    assert set(high_state) == set(low_state)  # the same names; the file says which expert
    assert_fully_applied(torch, high, high_modules, before_high)
    assert_fully_applied(torch, low, low_modules, before_low)
    pipe.set_adapters([ADAPTER], adapter_weights=[0.8])  # what DiffusersRunner does for the strength
    for transformer, modules in ((high, high_modules), (low, low_modules)):
        assert {transformer.get_submodule(n).scaling[ADAPTER] for n in modules} == {0.8}
    pipe.set_adapters([ADAPTER], adapter_weights=[1.0])
    assert_fuses_and_unfuses(torch, pipe, ["transformer", "transformer_2"],
                             [(high, high_modules, before_high), (low, low_modules, before_low)])


@pytest.mark.parametrize("target", IMAGE_FAMILIES)
def test_a_lora_of_another_family_is_refused_and_never_fully_applied(torch, tmp_path, target):
    """Selection refuses it from the file itself; loaded anyway, diffusers raises or injects at most a part."""
    from peft.tuners.lora import LoraLayer

    for source in IMAGE_FAMILIES:
        if source == target:
            continue
        modules, state = ai_toolkit_lora(torch, source, tiny_transformer(torch, source, seed=1), seed=2)
        path = trained_file(tmp_path, source, state, f"{source}_lora")
        entry = get_model(target)
        candidate = LoraCandidate(id="7", base_model=entry.base_model, sha256=inspect_lora_file(path).sha256)
        selection = select_lora(CharacterFacts(id="anna", lora_enabled=True), entry, [candidate],
                                lambda _c, p=path: InspectOutcome.success(inspect_lora_file(p)))
        if entry.supports_lora:
            assert selection.reason == "base_model_mismatch" and f"its file is for {source}" in selection.detail

        transformer = tiny_transformer(torch, target, seed=5)
        try:
            pipeline(target, transformer).load_lora_weights(str(path), adapter_name=ADAPTER)
        except Exception:  # noqa: BLE001 - refusing is one of the two acceptable outcomes
            continue
        injected = {n for n, m in transformer.named_modules() if isinstance(m, LoraLayer)}
        assert len(injected) < len(modules), f"a {source} LoRA was fully applied to {target}"


@pytest.mark.parametrize(("base_model", "module", "saved_as"), [
    # read off ai-toolkit's code: FLUX.1 keeps "transformer." (stable_diffusion_model.py does not convert),
    ("flux", "single_transformer_blocks.0.proj_mlp", "transformer.single_transformer_blocks.0.proj_mlp"),
    # z_image.py / qwen_image.py convert_lora_weights_before_save: "transformer." -> "diffusion_model."
    ("z-image-turbo", "layers.0.attention.to_out.0", "diffusion_model.layers.0.attention.to_out.0"),
    ("qwen-image", "transformer_blocks.0.img_mod.1", "diffusion_model.transformer_blocks.0.img_mod.1"),
    # wan_lora_convert.py convert_to_original, then wan22_14b_model.py save_lora drops ".transformer_1."
    ("one-2.1", "blocks.0.attn1.to_out.0", "diffusion_model.blocks.0.self_attn.o"),
    ("one-2.2", "blocks.3.attn2.to_k", "diffusion_model.blocks.3.cross_attn.k"),
    ("one-2.2", "blocks.3.ffn.net.0.proj", "diffusion_model.blocks.3.ffn.0"),
])
def test_ai_toolkit_names_as_its_saving_code_writes_them(base_model, module, saved_as):
    assert lora_format.ai_toolkit_targets(base_model, module)
    assert lora_format.ai_toolkit_module_key(base_model, module) == saved_as


@pytest.mark.parametrize(("base_model", "module"), [
    ("flux", "x_embedder"), ("flux", "norm_out.linear"), ("qwen-image", "img_in"),
    ("z-image-turbo", "noise_refiner.0.attention.to_q"), ("z-image-turbo", "cap_embedder.1"),
    ("one-2.1", "condition_embedder.time_proj"),
])
def test_ai_toolkit_trains_only_the_transformer_blocks(base_model, module):
    """transformer_only defaults to True (toolkit/config_modules.py NetworkConfig)."""
    assert not lora_format.ai_toolkit_targets(base_model, module)


@pytest.mark.parametrize("base_model", [*IMAGE_FAMILIES, "one-2.2"])
def test_the_simulated_trainer_writes_names_ai_toolkit_writes(torch, base_model):
    import re

    def shape_of(name: str) -> str:
        return re.sub(r"\.\d+\.", ".N.", name)

    _, state = ai_toolkit_lora(torch, base_model, tiny_transformer(torch, base_model, seed=1), seed=2)
    simulated = lora_format.lora_tensor_shapes(base_model, RANK)
    assert {shape_of(n) for n in simulated} <= {shape_of(n) for n in state}
