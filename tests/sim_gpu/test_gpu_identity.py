"""The simulated service's honesty: the character's face appears only when its LoRA was delivered, loaded,
made for the running base model and triggered. Judged with real dlib embeddings of the shared photos."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from gpu_support import (
    MODAL_KEY,
    MODAL_SECRET,
    SAME_PERSON,
    TRAIN_PERSON,
    distance_to,
    embed,
    reference_embeddings,
    trained_lora,
)
from lora_pipelines.gpu.comfyui import ComfyUIClient
from lora_pipelines.gpu.endpoints import ModalEndpointsClient
from lora_pipelines.gpu.errors import GpuPermanentError
from lora_pipelines.gpu.pod_cache import ensure_lora_on_pod
from lora_pipelines.gpu.schemas import FaceSwapRequest, GenerateRequest, LoraRef
from lora_pipelines.workflows.builders import build_workflow
from lora_pipelines.workflows.lora import insert_lora
from sim_gpu.files import faces_in_lora

SIZE = 512


@pytest.fixture(scope="module")
def endpoints(sim):
    return ModalEndpointsClient(sim.url, key=MODAL_KEY, secret=MODAL_SECRET, timeout_s=30, name="simulated")


@pytest.fixture(scope="module")
def person(faces_dir):
    return reference_embeddings(faces_dir, TRAIN_PERSON)


def lora_ref(trained, **overrides) -> LoraRef:
    fields = dict(lora_model_id=trained.lora_model_id, url=trained.path.as_uri(), sha256=trained.result.sha256,
                  base_model=trained.result.base_model, trigger_word=trained.trigger)
    return LoraRef(**{**fields, **overrides})


def png_text(png: bytes) -> dict[str, str]:
    return dict(Image.open(io.BytesIO(png)).text)


def test_flux_lora_with_trigger_shows_the_character_but_never_a_copy(faces_dir, endpoints, person, sim):
    trained = trained_lora(faces_dir, "flux")
    crops = [embed(Image.fromarray(face)) for face in faces_in_lora(trained.path.read_bytes())]
    distances, to_nearest_crop = [], []
    for seed in range(6):
        response = endpoints.generate("flux-lora", GenerateRequest(
            model="flux-dev", prompt=f"{trained.trigger}, portrait on a beach", width=SIZE, height=SIZE, seed=seed,
            lora=lora_ref(trained)))
        png = base64.b64decode(response.image_b64)
        assert response.backend == "simulated" and png_text(png)["backend"] == "simulated"
        assert response.mode == "lora" and response.lora.loaded and response.lora.detected_base_model == "flux"
        face = embed(png)
        distances.append(distance_to(face, person))
        if face is not None:
            to_nearest_crop.append(min(float(np.linalg.norm(face - c)) for c in crops if c is not None))
    print(f"\nLoRA+trigger: distance to {TRAIN_PERSON} {np.round(distances, 3)}; "
          f"to nearest training crop {np.round(to_nearest_crop, 3)}")
    assert sum(d < SAME_PERSON for d in distances) >= 5
    assert min(to_nearest_crop) > 0.1  # a varied face, not a pasted training photo


def test_without_trigger_word_someone_else_appears(faces_dir, endpoints, person):
    trained = trained_lora(faces_dir, "flux")
    distances = []
    for seed in range(3):
        response = endpoints.generate("flux-lora", GenerateRequest(
            model="flux-dev", prompt="portrait on a beach", width=SIZE, height=SIZE, seed=seed, lora=lora_ref(trained)))
        assert "trigger word" in response.lora.ignored_reason
        png = base64.b64decode(response.image_b64)
        assert png_text(png)["face"] in ("nobody", "none")
        distances.append(distance_to(embed(png), person))
    assert all(d >= SAME_PERSON for d in distances), distances


def test_standard_generation_shows_a_different_person(endpoints, person):
    response = endpoints.generate("standard", GenerateRequest(model="z-image-turbo", prompt="a portrait", width=SIZE,
                                                              height=SIZE, seed=3))
    png = base64.b64decode(response.image_b64)
    face = embed(png)
    assert face is not None  # the crowd folder holds two other people
    assert distance_to(face, person) >= SAME_PERSON
    assert response.mode == "standard" and response.lora is None


def test_modal_endpoint_refuses_a_lora_of_another_base_model(faces_dir, endpoints):
    qwen = trained_lora(faces_dir, "qwen-image")
    with pytest.raises(GpuPermanentError) as caught:
        endpoints.generate("flux-lora", GenerateRequest(model="flux-dev", prompt=f"{qwen.trigger}, portrait",
                                                        width=256, height=256, lora=lora_ref(qwen)))
    assert caught.value.status_code == 422
    assert "base model mismatch" in str(caught.value) and "qwen-image" in str(caught.value)


def test_modal_endpoint_refuses_a_wrong_checksum(faces_dir, endpoints):
    trained = trained_lora(faces_dir, "flux")
    with pytest.raises(GpuPermanentError, match="lora checksum mismatch"):
        endpoints.generate("flux-lora", GenerateRequest(model="flux-dev", prompt=f"{trained.trigger}, portrait",
                                                        width=256, height=256,
                                                        lora=lora_ref(trained, sha256="ab" * 32)))


def test_face_swap_keeps_identity_mostly(faces_dir, endpoints, person):
    photo = sorted((faces_dir / TRAIN_PERSON).iterdir())[5]  # not one of the training photos
    reference = base64.b64encode(photo.read_bytes()).decode()
    results = []
    for seed in range(5):
        response = endpoints.face_swap(FaceSwapRequest(model="flux-dev", prompt="portrait",
                                                       reference_image_b64=reference, width=SIZE, height=SIZE,
                                                       seed=seed))
        assert response.mode == "face_swap" and response.backend == "simulated"
        results.append(distance_to(embed(base64.b64decode(response.image_b64)), person))
    print(f"\nface swap: distance to {TRAIN_PERSON} {np.round(results, 3)}")
    assert sum(d < SAME_PERSON for d in results) >= 3


def _comfy_run(sim, workflow) -> tuple[bytes, dict]:
    client = ComfyUIClient(sim.url, timeout_s=30)
    prompt_id, images = client.run(workflow, timeout_s=30)
    return images[0], client.history(prompt_id)


def test_comfyui_applies_a_matching_lora_and_ignores_another_base_models(faces_dir, sim, person):
    qwen, flux = trained_lora(faces_dir, "qwen-image"), trained_lora(faces_dir, "flux")
    budget = 1 << 30
    for lora in (qwen, flux):  # delivered to the pod through the cache, as the pipeline does
        ensure_lora_on_pod(lora.lora_model_id, lora.result.sha256, lora.result.download_url, sim.loras_dir, budget)
    assert {"41.safetensors", "42.safetensors"} <= set(ComfyUIClient(sim.url).list_loras())
    prompt = f"{qwen.trigger}, portrait in a garden"
    base = build_workflow("qwen-image", prompt, seed=11, steps=4, width=SIZE, height=SIZE)

    matching, _ = _comfy_run(sim, insert_lora(base, "42.safetensors"))
    mismatched, history = _comfy_run(sim, insert_lora(base, "41.safetensors"))
    untriggered, _ = _comfy_run(sim, insert_lora(build_workflow("qwen-image", "portrait in a garden", seed=11, steps=4,
                                                                width=SIZE, height=SIZE), "42.safetensors"))

    assert distance_to(embed(matching), person) < SAME_PERSON
    assert distance_to(embed(mismatched), person) >= SAME_PERSON
    assert distance_to(embed(untriggered), person) >= SAME_PERSON
    assert history["status"]["status_str"] == "success"
    logs = [m[1]["message"] for m in history["status"]["messages"] if m[0] == "log"]
    assert any("lora key not loaded" in line for line in logs)
    assert png_text(mismatched)["backend"] == "simulated"
    # history keeps ComfyUI's shape (meta per output node); the simulated marker rides in a status message
    assert set(history["meta"]) == set(history["outputs"])
    assert all(m["node_id"] == n for n, m in history["meta"].items())
    assert any(m[0] == "sim_info" and m[1]["backend"] == "simulated" for m in history["status"]["messages"])


def test_comfyui_pulid_uses_the_uploaded_reference(faces_dir, sim, person):
    client = ComfyUIClient(sim.url, timeout_s=30)
    photo = sorted((faces_dir / TRAIN_PERSON).iterdir())[5]
    name = client.upload_image(photo.read_bytes(), "ref-jennifer.jpg")
    shown = []
    for seed in range(3):
        _, images = client.run(build_workflow("flux-pulid", "portrait", seed=seed, steps=4, width=SIZE, height=SIZE,
                                              reference_image=name), timeout_s=30)
        shown.append(distance_to(embed(images[0]), person))
    assert sum(d < SAME_PERSON for d in shown) >= 2, shown
