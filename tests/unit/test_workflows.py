"""Every workflow, with and without a LoRA, is accepted by the real ComfyUI 0.3.64 schema with the pod's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from lora_pipelines.cli.workflow import workflow as workflow_cli
from lora_pipelines.domain import lora_format
from lora_pipelines.workflows import comfy_schema
from lora_pipelines.workflows.builders import (
    WORKFLOW_BASE_MODEL,
    WORKFLOWS,
    InvalidWorkflowError,
    build_workflow,
    load_workflow_template,
)
from lora_pipelines.workflows.comfy_schema import validate_prompt
from lora_pipelines.workflows.lora import insert_lora, lora_file_name
from lora_pipelines.workflows.model_files import POD_MODEL_FILES, UNET_BASE_MODEL

LORA_NAME = "lora-7f3a.safetensors"
REFERENCE = "reference_face.png"


@pytest.fixture(scope="session")
def pod_files():
    return {**POD_MODEL_FILES, "loras": [LORA_NAME], "input": [REFERENCE]}


def build(name: str, **kwargs) -> dict:
    return build_workflow(name, "portrait of a woman in a garden", negative_prompt="blurry", seed=42,
                          reference_image=REFERENCE, **kwargs)


def consumers(graph: dict, node_id: str, slot: int) -> list[tuple[str, str]]:
    return [(nid, name) for nid, node in graph.items() for name, value in node["inputs"].items()
            if isinstance(value, list) and value == [node_id, slot]]


def node_of(graph: dict, class_type: str) -> str:
    (found,) = [nid for nid, node in graph.items() if node["class_type"] == class_type]
    return found


def assert_links_valid(graph: dict, schema: dict) -> None:
    for nid, node in graph.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                source, slot = value
                assert isinstance(source, str) and source in graph, f"{nid}.{name} -> missing node {source}"
                assert 0 <= slot < len(schema[graph[source]["class_type"]]["output"]), f"{nid}.{name} bad slot"


@pytest.mark.parametrize("name", WORKFLOWS)
@pytest.mark.parametrize("clip_strength", [None, 0.0, 0.8])
def test_workflow_is_accepted_by_the_real_schema(name, clip_strength, real_schema, pod_files):
    graph = build(name)
    if clip_strength is not None:
        graph = insert_lora(graph, LORA_NAME, 0.9, clip_strength)

    for schema in (real_schema, comfy_schema.load_object_info()):
        result = validate_prompt(graph, schema, pod_files)
        assert result.ok and result.node_errors == {}, result.error_summary()
    assert_links_valid(graph, real_schema)
    unet = graph[node_of(graph, "UNETLoader")]["inputs"]["unet_name"]
    assert UNET_BASE_MODEL[unet] == WORKFLOW_BASE_MODEL[name]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_lora_takes_every_consumer_of_the_loaders(name, real_schema):
    plain = build(name)
    unet = node_of(plain, "UNETLoader")
    clip = next(nid for nid, n in plain.items() if n["class_type"] in ("CLIPLoader", "DualCLIPLoader"))
    model_users, clip_users = consumers(plain, unet, 0), consumers(plain, clip, 0)

    graph = insert_lora(plain, LORA_NAME, 1.0, 1.0)

    lora = node_of(graph, "LoraLoader")
    assert lora == str(max(int(n) for n in plain) + 1)
    assert graph[lora]["inputs"] == {"model": [unet, 0], "clip": [clip, 0], "lora_name": LORA_NAME,
                                     "strength_model": 1.0, "strength_clip": 1.0}
    assert consumers(graph, unet, 0) == [(lora, "model")]
    assert consumers(graph, clip, 0) == [(lora, "clip")]
    assert sorted(consumers(graph, lora, 0)) == sorted(model_users)
    assert sorted(consumers(graph, lora, 1)) == sorted(clip_users)
    assert list(graph).index(lora) == list(graph).index(clip) + 1
    assert plain == build(name), "insert_lora must not modify its input"


def test_flux_scheduler_and_pulid_both_read_the_lora_model():
    graph = insert_lora(build("flux-pulid"), LORA_NAME, 1.0, 0.0)
    lora = node_of(graph, "LoraLoaderModelOnly")
    for class_type in ("BasicScheduler", "ApplyPulidFlux"):
        assert graph[node_of(graph, class_type)]["inputs"]["model"] == [lora, 0]
    assert consumers(graph, node_of(graph, "UNETLoader"), 0) == [(lora, "model")]


def test_z_image_lora_sits_before_aura_flow():
    graph = insert_lora(build("z-image-danrisi"), LORA_NAME, 1.0, 0.0)
    lora = node_of(graph, "LoraLoaderModelOnly")
    assert graph[node_of(graph, "ModelSamplingAuraFlow")]["inputs"]["model"] == [lora, 0]


def test_schema_facts_the_builders_rely_on(real_schema):
    clip_types = real_schema["CLIPLoader"]["input"]["required"]["type"][0]
    assert "lumina2" in clip_types and "qwen_image" in clip_types and "z_image" not in clip_types
    assert "flux" in real_schema["DualCLIPLoader"]["input"]["required"]["type"][0]
    graph = build("z-image-danrisi")
    assert set(graph[node_of(graph, "KSampler")]["inputs"]) >= {"seed", "steps", "cfg", "sampler_name", "scheduler",
                                                                "denoise"}


def test_unknown_lora_name_is_value_not_in_list(real_schema, pod_files):
    graph = insert_lora(build("z-image-danrisi"), "other.safetensors", 1.0, 0.0)
    result = validate_prompt(graph, real_schema, pod_files)
    body = result.as_http_400_body()
    (entry,) = body["node_errors"].values()
    assert result.http_status == 400 and entry["class_type"] == "LoraLoaderModelOnly"
    assert entry["errors"][0]["type"] == "value_not_in_list"
    assert entry["errors"][0]["details"] == f"lora_name: 'other.safetensors' not in ['{LORA_NAME}']"


def test_missing_model_file_and_missing_reference_photo_are_rejected(real_schema, pod_files):
    no_flux = {**pod_files, "diffusion_models": ["z_image_turbo_bf16.safetensors"]}
    assert not validate_prompt(build("flux-pulid"), real_schema, no_flux).ok
    graph = build_workflow("flux-pulid", "a portrait", reference_image="nobody.png")
    errors = validate_prompt(graph, real_schema, pod_files).node_errors
    assert [e["type"] for entry in errors.values() for e in entry["errors"]] == ["custom_validation_failed"]


def test_insert_lora_refuses_bad_input():
    graph = insert_lora(build("qwen-image"), LORA_NAME, 1.0, 0.0)
    with pytest.raises(InvalidWorkflowError, match="already has a LoRA loader"):
        insert_lora(graph, LORA_NAME, 1.0, 0.0)
    for bad in ("../etc/passwd.safetensors", "loras/x.safetensors", "x.ckpt", "", "x .safetensors"):
        with pytest.raises(InvalidWorkflowError, match="must look like"):
            insert_lora(build("qwen-image"), bad, 1.0, 0.0)
    with pytest.raises(InvalidWorkflowError, match="strength_model"):
        insert_lora(build("qwen-image"), LORA_NAME, float("nan"), 0.0)
    no_loader = {k: v for k, v in build("qwen-image").items() if v["class_type"] != "UNETLoader"}
    with pytest.raises(InvalidWorkflowError, match="no diffusion-model loader"):
        insert_lora(no_loader, LORA_NAME)
    assert lora_file_name("0b6c-91") == "0b6c-91.safetensors"


def test_build_parameters_and_refusals():
    graph = build_workflow("qwen-image", "  a {cat} ${HOME}  ", seed=7, steps=12, width=768, height=512)
    sampler = graph[node_of(graph, "KSampler")]["inputs"]
    assert (sampler["seed"], sampler["steps"]) == (7, 12)
    texts = [n["inputs"]["text"] for n in graph.values() if n["class_type"] == "CLIPTextEncode"]
    assert texts[0] == "a {cat} ${HOME}"
    latent = graph[node_of(graph, "EmptySD3LatentImage")]["inputs"]
    assert (latent["width"], latent["height"]) == (768, 512)
    with pytest.raises(InvalidWorkflowError, match="unknown workflow 'sdxl'"):
        build_workflow("sdxl", "x")
    with pytest.raises(InvalidWorkflowError, match="needs a reference_image"):
        build_workflow("flux-pulid", "x")
    with pytest.raises(InvalidWorkflowError, match="width"):
        build_workflow("qwen-image", "x", width=1000)
    with pytest.raises(InvalidWorkflowError, match="steps"):
        build_workflow("qwen-image", "x", steps=0)


def test_user_template_replaces_the_danrisi_graph(tmp_path, real_schema, pod_files):
    mine = build("z-image-danrisi")
    sampler = node_of(mine, "KSampler")
    mine[sampler]["inputs"].update(sampler_name="dpmpp_2m", scheduler="beta", cfg=1.5)
    path = tmp_path / "my_danrisi.json"
    path.write_text(json.dumps(mine))

    graph = build_workflow("z-image-danrisi", "a new prompt", seed=99, template=load_workflow_template(path))

    assert graph[sampler]["inputs"]["sampler_name"] == "dpmpp_2m"
    assert graph[sampler]["inputs"]["seed"] == 99
    positive = graph[sampler]["inputs"]["positive"][0]
    assert graph[positive]["inputs"]["text"] == "a new prompt"
    assert validate_prompt(insert_lora(graph, LORA_NAME, 1.0, 0.0), real_schema, pod_files).ok

    mine[sampler]["inputs"]["sampler_name"] = "warp_drive"
    path.write_text(json.dumps(mine))
    with pytest.raises(InvalidWorkflowError, match="value_not_in_list"):
        load_workflow_template(path)
    path.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(InvalidWorkflowError, match="UI-format"):
        load_workflow_template(path)


@pytest.fixture()
def lora_files(tmp_path):
    def make(base_model: str) -> str:
        path = tmp_path / f"{base_model}-lora1.safetensors"
        tensors = {k: np.zeros(s, np.float16) for k, s in lora_format.lora_tensor_shapes(base_model, 4).items()}
        save_file(tensors, path, metadata=lora_format.trainer_metadata(base_model, "ohwx", rank=4, steps=1,
                                                                        trainer="test"))
        return str(path)
    return make


def test_cli_build_inserts_a_matching_lora(lora_files, real_schema):
    path = lora_files("z-image-turbo")
    out = CliRunner().invoke(workflow_cli, ["build", "--workflow", "z-image-danrisi", "--prompt", "ohwx smiling",
                                            "--lora", path, "--strength", "0.8", "--seed", "5"])
    assert out.exit_code == 0, out.output
    graph = json.loads(out.output)
    lora = node_of(graph, "LoraLoaderModelOnly")
    assert graph[lora]["inputs"]["lora_name"] == "z-image-turbo-lora1.safetensors"
    assert graph[lora]["inputs"]["strength_model"] == 0.8
    files = {**POD_MODEL_FILES, "loras": ["z-image-turbo-lora1.safetensors"]}
    assert validate_prompt(graph, real_schema, files).ok


def test_cli_refuses_a_lora_for_another_base_model(lora_files):
    out = CliRunner().invoke(workflow_cli, ["build", "--workflow", "z-image-danrisi", "--prompt", "x",
                                            "--lora", lora_files("flux")])
    assert out.exit_code == 2
    assert out.stderr.strip() == (f"error: {lora_files('flux')} is a flux LoRA (from modelspec.architecture); "
                                  "workflow z-image-danrisi runs z-image-turbo")
