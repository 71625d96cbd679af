"""The Modal generation web endpoints: `/flux-lora`, `/qwen-image-2512-lora`, `/standard`, `/face-swap`.

A LoRA route fetches the LoRA (cached by sha256, as the Modal apps' volume cache), refuses one made for
another base model, and shows the character only when the prompt carries the trigger word.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from fastapi import APIRouter, Depends

from lora_pipelines.gpu.schemas import (
    LORA_ROUTES,
    AppliedLora,
    ErrorResponse,
    FaceSwapRequest,
    GenerateRequest,
    GenerateResponse,
)
from sim_gpu.likeness import copy_rate, lora_weight
from sim_gpu.routes.common import State, error_response, inject_faults, modal_auth
from sim_gpu.state import SimState
from sim_gpu.studio import LoraRejected, is_triggered, seed_for

router = APIRouter()
_RESPONSES: dict[int | str, dict[str, Any]] = {401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def _generate(sim: SimState, route: str, req: GenerateRequest) -> Any:
    started = time.perf_counter()
    time.sleep(min(req.steps * sim.config.step_ms / 1000, 30.0))
    expected = LORA_ROUTES.get(route)
    if expected and req.lora is None:
        return error_response(422, "this endpoint applies a LoRA: request.lora is missing", f"/{route}")
    if not expected and req.lora is not None:
        return error_response(422,
                              "the standard endpoint does not apply LoRAs; use /flux-lora or /qwen-image-2512-lora")
    applied, identity, weight, copies, photos = None, [], 0.0, 0.0, ()
    if req.lora is not None:
        try:
            lora = sim.studio.fetch_lora(req.lora.url, req.lora.sha256)
        except LoraRejected as exc:
            return error_response(422, str(exc), f"lora {req.lora.lora_model_id}")
        if lora.base_model != expected:
            return error_response(422, f"lora base model mismatch: the file is a {lora.base_model} LoRA, "
                                       f"/{route} runs {expected}", f"lora {req.lora.lora_model_id}")
        trigger = lora.trigger_word or req.lora.trigger_word
        triggered = is_triggered(req.prompt, trigger)
        if triggered and req.lora.strength_model > 0:
            identity = list(lora.faces)
            weight = lora_weight(lora.traits, strength=req.lora.strength_model, applied=True)
            copies, photos = copy_rate(lora.traits), lora.photos
        applied = AppliedLora(lora_model_id=req.lora.lora_model_id, loaded=True,
                              strength_model=req.lora.strength_model, strength_clip=req.lora.strength_clip,
                              detected_base_model=lora.base_model,
                              ignored_reason=None if identity else
                              (f"trigger word {trigger!r} not in prompt" if not triggered else "strength_model <= 0"))
    png, _shown = sim.studio.render(seed=seed_for(req.seed, route, req.prompt), width=req.width, height=req.height,
                                    identity=identity, weight=weight, copy_rate=copies, copy_from=photos,
                                    info={"mode": "lora" if req.lora else "standard", "route": route,
                                          "seed": str(req.seed), "lora": req.lora.lora_model_id if req.lora else ""})
    return GenerateResponse(image_b64=base64.b64encode(png).decode(), mode="lora" if req.lora else "standard",
                            model=req.model, prompt=req.prompt, seed=req.seed, lora=applied, backend="simulated",
                            duration_ms=(time.perf_counter() - started) * 1000)


@router.post("/flux-lora", response_model=GenerateResponse, responses=_RESPONSES)
def flux_lora(req: GenerateRequest, sim: State, _plan=Depends(inject_faults("flux-lora")),
              _=Depends(modal_auth)) -> Any:
    return _generate(sim, "flux-lora", req)


@router.post("/qwen-image-2512-lora", response_model=GenerateResponse, responses=_RESPONSES)
def qwen_lora(req: GenerateRequest, sim: State, _plan=Depends(inject_faults("qwen-image-2512-lora")),
              _=Depends(modal_auth)) -> Any:
    return _generate(sim, "qwen-image-2512-lora", req)


@router.post("/standard", response_model=GenerateResponse, responses=_RESPONSES)
def standard(req: GenerateRequest, sim: State, _plan=Depends(inject_faults("standard")),
             _=Depends(modal_auth)) -> Any:
    return _generate(sim, "standard", req)


@router.post("/face-swap", response_model=GenerateResponse, responses=_RESPONSES)
def face_swap(req: FaceSwapRequest, sim: State, _plan=Depends(inject_faults("face-swap")),
              _=Depends(modal_auth)) -> Any:
    started = time.perf_counter()
    try:
        reference = sim.studio.reference_face(base64.b64decode(req.reference_image_b64, validate=True))
    except (binascii.Error, OSError, ValueError):
        return error_response(422, "reference_image_b64 is not a base64 PNG/JPEG image")
    if reference is None:
        return error_response(422, "no face found in the reference image")
    png, _shown = sim.studio.render(seed=seed_for(req.seed, "face-swap", req.prompt), width=req.width,
                                    height=req.height, reference=reference,
                                    info={"mode": "face_swap", "seed": str(req.seed)})
    return GenerateResponse(image_b64=base64.b64encode(png).decode(), mode="face_swap", model=req.model,
                            prompt=req.prompt, seed=req.seed, backend="simulated",
                            duration_ms=(time.perf_counter() - started) * 1000)
