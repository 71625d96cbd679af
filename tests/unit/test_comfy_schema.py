"""The validator answers like ComfyUI 0.3.64's POST /prompt: the four recorded probes, then the other error kinds."""

from __future__ import annotations

import copy
import json

import pytest

from lora_pipelines.workflows import comfy_schema
from lora_pipelines.workflows.comfy_schema import load_object_info, validate_prompt, with_available_files

PROBE_FILES = {"loras": ["test_lora.safetensors"], "diffusion_models": ["z_image_turbo_bf16.safetensors"],
               "text_encoders": ["qwen_3_4b.safetensors"], "vae": ["ae.safetensors"]}


def probe_graph(lora_name: str = "test_lora.safetensors") -> dict:
    """The Z-Image + LoRA graph the probes were sent (node ids as in probe_responses.json)."""
    return {
        "1": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "z_image_turbo_bf16.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "qwen_3_4b.safetensors", "type": "lumina2"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "LoraLoaderModelOnly",
              "inputs": {"model": ["1", 0], "lora_name": lora_name, "strength_model": 1.0}},
        "5": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["4", 0], "shift": 3.0}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a portrait", "clip": ["2", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "8": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["5", 0], "seed": 1, "steps": 8, "cfg": 1.0,
                                                   "sampler_name": "res_multistep", "scheduler": "simple",
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["8", 0],
                                                   "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["3", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "probe"}},
    }


@pytest.fixture(scope="session")
def probes(comfyui_schema_dir):
    return json.loads((comfyui_schema_dir / "probe_responses.json").read_text())


def test_packaged_schema_is_the_shared_dump(real_schema):
    packaged = load_object_info()
    pulid_ll = {name for name, node in packaged.items()
                if node["python_module"] == "custom_nodes.ComfyUI_PuLID_Flux_ll"}
    assert {k: v for k, v in packaged.items() if k not in pulid_ll} == {
        k: v for k, v in real_schema.items() if not v["python_module"].startswith("custom_nodes.")}
    # The PuLID pack the pod runs (lldacing's) keeps the names, inputs and outputs of the shared balazik dump.
    for name, node in real_schema.items():
        if node["python_module"].startswith("custom_nodes."):
            assert name in pulid_ll and packaged[name]["input"]["required"] == node["input"]["required"]
            assert packaged[name]["output"] == node["output"]
    assert comfy_schema.file_combo_folders()["LoraLoader"] == {"lora_name": ["loras"]}


def test_probe_a_valid_graph_is_accepted(real_schema, probes):
    result = validate_prompt(probe_graph(), real_schema, PROBE_FILES)
    assert probes["a_zimage_lora_valid"]["http_status"] == 200
    assert result.ok and result.http_status == 200
    assert result.node_errors == probes["a_zimage_lora_valid"]["response"]["node_errors"]


def test_probe_b_unknown_lora_is_value_not_in_list(real_schema, probes):
    result = validate_prompt(probe_graph("no_such_lora.safetensors"), real_schema, PROBE_FILES)
    assert result.http_status == probes["b_unknown_lora"]["http_status"]
    assert result.as_http_400_body() == probes["b_unknown_lora"]["response"]


def test_probe_c_wrong_link_type(real_schema, probes):
    graph = probe_graph()
    graph["9"]["inputs"]["model"] = ["2", 0]
    result = validate_prompt(graph, real_schema, PROBE_FILES)
    assert result.http_status == probes["c_wrong_link_type"]["http_status"]
    assert result.as_http_400_body() == probes["c_wrong_link_type"]["response"]


def test_probe_d_missing_required_input(real_schema, probes):
    graph = probe_graph()
    del graph["9"]["inputs"]["steps"]
    result = validate_prompt(graph, real_schema, PROBE_FILES)
    assert result.http_status == probes["d_missing_required"]["http_status"]
    assert result.as_http_400_body() == probes["d_missing_required"]["response"]


def test_without_file_lists_any_model_file_name_passes_but_other_names_do_not():
    assert validate_prompt(probe_graph("anything.safetensors")).ok
    result = validate_prompt(probe_graph("notes.txt"))
    assert result.node_errors["4"]["errors"][0]["type"] == "value_not_in_list"


def test_steps_zero_is_smaller_than_min():
    graph = probe_graph()
    graph["9"]["inputs"]["steps"] = 0
    err = validate_prompt(graph).node_errors["9"]["errors"][0]
    assert (err["type"], err["message"], err["details"]) == (
        "value_smaller_than_min", "Value 0 smaller than min of 1", "steps")


def test_too_large_and_unconvertible_values():
    graph = probe_graph()
    graph["8"]["inputs"]["width"] = 20000
    graph["9"]["inputs"]["cfg"] = "high"
    errors = validate_prompt(graph).node_errors
    assert errors["8"]["errors"][0]["type"] == "value_bigger_than_max"
    assert errors["9"]["errors"][0]["type"] == "invalid_input_type"
    assert errors["9"]["errors"][0]["details"].startswith("cfg, high, could not convert")


def test_bad_sampler_name_lists_length_not_choices():
    graph = probe_graph()
    graph["9"]["inputs"]["sampler_name"] = "turbo"
    err = validate_prompt(graph).node_errors["9"]["errors"][0]
    assert err["type"] == "value_not_in_list"
    assert err["details"].startswith("sampler_name: 'turbo' not in (list of length")
    assert err["extra_info"]["input_config"] is None


def test_unknown_class_and_no_outputs():
    graph = probe_graph()
    graph["12"] = {"class_type": "FancyFaceNode", "inputs": {}}
    result = validate_prompt(graph)
    assert result.error == {"type": "invalid_prompt",
                            "message": "Cannot execute because node FancyFaceNode does not exist.",
                            "details": "Node ID '#12'", "extra_info": {}}
    graph = probe_graph()
    del graph["11"]
    assert validate_prompt(graph).error["type"] == "prompt_no_outputs"


def test_bad_slot_and_missing_source_are_inner_validation_exceptions():
    graph = probe_graph()
    graph["9"]["inputs"]["positive"] = ["6", 3]
    errors = validate_prompt(graph).node_errors
    assert errors["9"]["errors"][0]["type"] == "exception_during_inner_validation"
    assert errors["9"]["dependent_outputs"] == ["11"]
    graph = probe_graph()
    graph["9"]["inputs"]["latent_image"] = ["42", 0]
    err = validate_prompt(graph).node_errors["9"]["errors"][0]
    assert (err["type"], err["details"]) == ("exception_during_inner_validation", "'42'")


def test_only_output_ancestors_are_validated():
    graph = probe_graph()
    graph["20"] = {"class_type": "KSampler", "inputs": {}}  # unused and broken: skipped, like the server
    assert validate_prompt(graph).ok


def test_union_and_wildcard_link_types():
    assert comfy_schema.validate_node_input("IMAGE", "IMAGE,MASK")
    assert comfy_schema.validate_node_input("*", "MODEL")
    assert comfy_schema.validate_node_input("LATENT", "*")
    assert not comfy_schema.validate_node_input("CLIP", "MODEL")
    assert not comfy_schema.validate_node_input("CLIP", ["a", "b"])


def test_served_object_info_lists_the_pod_files():
    served = with_available_files(load_object_info(), PROBE_FILES)
    assert served["LoraLoader"]["input"]["required"]["lora_name"][0] == ["test_lora.safetensors"]
    assert served["VAELoader"]["input"]["required"]["vae_name"][0] == ["ae.safetensors", "pixel_space"]
    assert load_object_info()["LoraLoader"]["input"]["required"]["lora_name"][0] == []
    two_vaes = with_available_files(load_object_info(), {"vae": ["qwen_image_vae.safetensors", "ae.safetensors"]})
    assert two_vaes["VAELoader"]["input"]["required"]["vae_name"][0] == [
        "ae.safetensors", "qwen_image_vae.safetensors", "pixel_space"]


def test_validation_does_not_mutate_the_prompt():
    graph = probe_graph()
    graph["9"]["inputs"]["steps"] = "8"
    before = copy.deepcopy(graph)
    assert validate_prompt(graph).ok
    assert graph == before
