"""The Z-Image graph matches ComfyUI's official Z-Image-Turbo template, read from the PyPI package
comfyui-workflow-templates-json (templates/image_z_image_turbo.json: UI format, the graph inside a subgraph)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from lora_pipelines.workflows.builders import build_workflow
from lora_pipelines.workflows.comfy_schema import load_object_info
from lora_pipelines.workflows.pod_needs import pod_needs

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@pytest.fixture(scope="module")
def template() -> dict:
    import comfyui_workflow_templates_json as package  # the dev extra pins it

    return json.loads(resources.files(package).joinpath("templates", "image_z_image_turbo.json").read_text())


@pytest.fixture(scope="module")
def subgraph(template) -> dict:
    (graph,) = template["definitions"]["subgraphs"]
    return graph


def widget_values(node: dict, schema: dict) -> dict:
    """A UI node's widgets_values by input name: widget inputs in the schema's order; the frontend adds
    control_after_generate after a seed."""
    info = schema[node["type"]]
    names = []
    for category in ("required", "optional"):
        for name in info["input_order"].get(category, []):
            spec = info["input"][category][name]
            if isinstance(spec[0], list) or spec[0] in WIDGET_TYPES:
                names.append(name)
                if name in ("seed", "noise_seed"):
                    names.append("control_after_generate")
    assert len(names) == len(node["widgets_values"]), (node["type"], names, node["widgets_values"])
    return dict(zip(names, node["widgets_values"], strict=True))


def test_the_template_is_the_one_we_compare_against(template, subgraph):
    outer = {n["type"] for n in template["nodes"]}
    assert "SaveImage" in outer and subgraph["name"] == "Text to Image (Z-Image-Turbo)"


def test_loaders_sampling_and_latent_match_the_official_template(subgraph):
    schema = load_object_info()
    ours = build_workflow("z-image-danrisi", "a portrait")
    by_type = {node["class_type"]: node["inputs"] for node in ours.values()}
    official = {node["type"]: widget_values(node, schema) for node in subgraph["nodes"]
                if node["type"] != "ConditioningZeroOut"}
    wanted = {
        "UNETLoader": ("unet_name", "weight_dtype"),
        "CLIPLoader": ("clip_name", "type"),
        "VAELoader": ("vae_name",),
        "ModelSamplingAuraFlow": ("shift",),
        "KSampler": ("steps", "cfg", "sampler_name", "scheduler", "denoise"),
        "EmptySD3LatentImage": ("batch_size",),
    }
    for class_type, inputs in wanted.items():
        assert class_type in official and class_type in by_type, class_type
        for name in inputs:
            assert by_type[class_type][name] == official[class_type][name], (class_type, name)
    assert official["CLIPLoader"]["type"] == "lumina2" and official["KSampler"]["steps"] == 8
    # The template's negative is ConditioningZeroOut of the prompt; ours is an (empty) negative prompt. At cfg 1
    # ComfyUI samples the positive only, so the two give the same image.
    assert official["KSampler"]["cfg"] == 1


def test_the_model_flows_through_the_same_nodes(subgraph):
    nodes = {n["id"]: n["type"] for n in subgraph["nodes"]}
    official = {(nodes.get(link["origin_id"]), nodes.get(link["target_id"]), link["type"])
                for link in subgraph["links"] if link["origin_id"] in nodes and link["target_id"] in nodes}
    ours_graph = build_workflow("z-image-danrisi", "a portrait")
    ours = {(ours_graph[value[0]]["class_type"], node["class_type"]) for node in ours_graph.values()
            for value in node["inputs"].values() if isinstance(value, list)}
    for origin, target, kind in (("UNETLoader", "ModelSamplingAuraFlow", "MODEL"),
                                 ("ModelSamplingAuraFlow", "KSampler", "MODEL"),
                                 ("EmptySD3LatentImage", "KSampler", "LATENT"),
                                 ("CLIPLoader", "CLIPTextEncode", "CLIP"),
                                 ("KSampler", "VAEDecode", "LATENT"), ("VAELoader", "VAEDecode", "VAE")):
        assert (origin, target, kind) in official and (origin, target) in ours


def test_model_files_and_folders_are_the_templates(subgraph):
    official = {(model["directory"], model["name"]) for node in subgraph["nodes"]
                for model in node.get("properties", {}).get("models", [])}
    ours = {(f.folder, f.name) for f in pod_needs(build_workflow("z-image-danrisi", "a portrait")).model_files}
    assert ours == official == {("diffusion_models", "z_image_turbo_bf16.safetensors"),
                                ("text_encoders", "qwen_3_4b.safetensors"), ("vae", "ae.safetensors")}
