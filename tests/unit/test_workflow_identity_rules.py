"""No workflow that silently does nothing: PuLID-Flux on a model that is not Flux is refused, the withdrawn
z-image-pulid name says why and what replaces it, and Z-Image's face fallback carries the face (Modal face swap)."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from lora_pipelines.cli.workflow import workflow as workflow_cli
from lora_pipelines.domain.model_registry import get_model
from lora_pipelines.workflows.builders import (
    WORKFLOWS,
    InvalidWorkflowError,
    RetiredWorkflowError,
    build_workflow,
    check_workflow,
    workflow_base_model,
)
from lora_pipelines.workflows.graph_rules import check_identity_nodes, model_family
from lora_pipelines.workflows.lora import insert_lora


def pulid_on(model_graph: dict) -> dict:
    """`model_graph` with flux-pulid's PuLID nodes spliced between its diffusion-model loader and the next node."""
    flux = build_workflow("flux-pulid", "a portrait", reference_image="face.png")
    graph = copy.deepcopy(model_graph)
    offset = max(int(n) for n in graph)
    ids = {nid: str(int(nid) + offset) for nid, node in flux.items()
           if node["class_type"].startswith(("Pulid", "ApplyPulid")) or node["class_type"] == "LoadImage"}
    unet = next(nid for nid, node in graph.items() if node["class_type"] == "UNETLoader")
    for nid, new in ids.items():
        node = copy.deepcopy(flux[nid])
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = [ids.get(value[0], unet), value[1]]
        graph[new] = node
    apply = next(new for nid, new in ids.items() if flux[nid]["class_type"] == "ApplyPulidFlux")
    for nid, node in graph.items():
        if nid != apply and node["inputs"].get("model") == [unet, 0]:
            node["inputs"]["model"] = [apply, 0]
    return graph


def test_pulid_on_z_image_or_qwen_image_is_refused():
    for name, family in (("z-image-danrisi", "z-image-turbo"), ("qwen-image", "qwen-image")):
        graph = pulid_on(build_workflow(name, "a portrait"))
        with pytest.raises(InvalidWorkflowError, match=rf"ApplyPulidFlux \(node \d+\) patches Flux .* is {family}"):
            check_identity_nodes(graph)
        with pytest.raises(InvalidWorkflowError, match="ignore the face"):
            check_workflow(graph, source="my_template.json")


def test_the_text_encoder_tells_the_model_when_the_file_name_does_not():
    graph = pulid_on(build_workflow("z-image-danrisi", "a portrait"))
    unet = next(nid for nid, node in graph.items() if node["class_type"] == "UNETLoader")
    graph[unet]["inputs"]["unet_name"] = "my_own_finetune.safetensors"
    apply = next(nid for nid, node in graph.items() if node["class_type"] == "ApplyPulidFlux")
    assert model_family(graph, apply) == ("z-image-turbo", "CLIPLoader type lumina2")
    with pytest.raises(InvalidWorkflowError, match="CLIPLoader type lumina2"):
        check_identity_nodes(graph)


def test_pulid_on_flux_is_accepted_with_or_without_a_lora():
    graph = build_workflow("flux-pulid", "a portrait", reference_image="face.png")
    check_identity_nodes(graph)
    check_identity_nodes(insert_lora(graph, "lora-1.safetensors", 1.0, 0.0))
    assert check_workflow(graph) == graph


def test_z_image_pulid_is_withdrawn_with_a_reason():
    assert "z-image-pulid" not in WORKFLOWS
    for call in (lambda: build_workflow("z-image-pulid", "a portrait", reference_image="face.png"),
                 lambda: workflow_base_model("z-image-pulid")):
        with pytest.raises(RetiredWorkflowError, match="z-image-pulid was withdrawn: PuLID-Flux patches Flux"):
            call()
    result = CliRunner().invoke(workflow_cli, ["build", "--workflow", "z-image-pulid", "--prompt", "a portrait",
                                               "--reference-image", "face.png"])
    assert result.exit_code == 2 and "was withdrawn" in result.output and "/face-swap" in result.output
    built = CliRunner().invoke(workflow_cli, ["build", "--workflow", "flux-pulid", "--prompt", "a portrait",
                                              "--reference-image", "face.png"])
    assert built.exit_code == 0 and "ApplyPulidFlux" in {n["class_type"] for n in json.loads(built.output).values()}


def test_no_model_routes_a_face_through_a_graph_that_ignores_it():
    for name in ("z-image-turbo", "flux", "qwen-image", "one-2.1", "one-2.2"):
        route = get_model(name).face_swap_route
        if route.kind == "comfyui_workflow":
            graph = build_workflow(route.target, "a portrait", reference_image="face.png")
            assert any(node["class_type"] == "ApplyPulidFlux" for node in graph.values())
            check_identity_nodes(graph)
        else:
            assert route.target == "/face-swap"
    assert get_model("z-image-turbo").face_swap_route.target == "/face-swap"


def test_the_simulated_pod_ignores_pulid_on_z_image_as_the_real_one_does(faces_dir):
    """The simulator may not be kinder than the pack: a graph posted straight to /prompt with PuLID on Z-Image
    runs, warns, and shows someone else; the same reference through flux-pulid shows the person."""
    from gpu_support import SAME_PERSON, TRAIN_PERSON, distance_to, embed, reference_embeddings, shared_sim
    from lora_pipelines.gpu.comfyui import ComfyUIClient

    sim = shared_sim(faces_dir)
    person = reference_embeddings(faces_dir, TRAIN_PERSON)
    client = ComfyUIClient(sim.url, timeout_s=30)
    photo = sorted((faces_dir / TRAIN_PERSON).iterdir())[5]
    name = client.upload_image(photo.read_bytes(), "ref-identity-rules.jpg")
    graph = pulid_on(build_workflow("z-image-danrisi", "portrait", seed=2, steps=4, width=512, height=512))
    for node in graph.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = name

    prompt_id = client.queue_prompt(graph)
    client.wait(prompt_id, timeout_s=30)
    (ignored,) = client.fetch_outputs(prompt_id)
    messages = client.history(prompt_id)["status"]["messages"]
    assert any(m[0] == "log" and "reference face is ignored" in m[1]["message"] for m in messages)
    assert distance_to(embed(ignored), person) >= SAME_PERSON

    _, (applied,) = client.run(build_workflow("flux-pulid", "portrait", seed=2, steps=4, width=512, height=512,
                                              reference_image=name), timeout_s=30)
    assert distance_to(embed(applied), person) < SAME_PERSON
