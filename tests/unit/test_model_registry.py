"""The registry says, per model, whether a LoRA can be used and where each kind of generation goes."""

from __future__ import annotations

import pytest

from lora_pipelines.domain.base_models import BASE_MODELS
from lora_pipelines.domain.model_registry import MODELS, UnknownModelError, get_model
from lora_pipelines.workflows.builders import WORKFLOW_BASE_MODEL, WORKFLOWS


def test_every_base_model_is_registered():
    assert {m.name for m in MODELS} >= set(BASE_MODELS)
    assert all(m.base_model in BASE_MODELS for m in MODELS)


def test_spec_routes():
    z = get_model("z-image-turbo")
    assert (z.supports_lora, z.route_kind, z.lora_route.target) == (True, "comfyui_workflow", "z-image-danrisi")
    # no PuLID for Z-Image
    assert (z.face_swap_route.kind, z.face_swap_route.target) == ("modal_endpoint", "/face-swap")
    assert z.standard_route.target == "z-image-danrisi"
    flux = get_model("flux")
    assert (flux.route_kind, flux.endpoint) == ("modal_endpoint", "/flux-lora")
    assert (flux.face_swap_route.kind, flux.face_swap_route.target) == ("comfyui_workflow", "flux-pulid")
    assert get_model("qwen-image").endpoint == "/qwen-image-2512-lora"
    for name in ("one-2.1", "one-2.2"):
        wan = get_model(name)
        assert not wan.supports_lora and wan.lora_route is None and wan.standard_route.target == "/standard"


def test_every_comfyui_route_is_a_buildable_workflow_for_the_same_family():
    for model in MODELS:
        for workflow in model.workflows:
            assert workflow in WORKFLOWS
            assert WORKFLOW_BASE_MODEL[workflow] == model.base_model


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError, match=r"unknown model 'sdxl'; known models: z-image-turbo, flux"):
        get_model("sdxl")


def test_entries_are_frozen():
    with pytest.raises(AttributeError):
        get_model("flux").supports_lora = False
