"""What the generation endpoints do, independent of Modal: validate, fetch + check the LoRA, run, answer.

The Modal classes in generation.py call these methods; tests mount the same methods on a plain FastAPI app.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import replace
from typing import Protocol

from fastapi import HTTPException

from lora_pipelines.domain.base_models import lora_experts
from lora_pipelines.domain.model_registry import UnknownModelError, get_model
from lora_pipelines.gpu.schemas import AppliedLora, FaceSwapRequest, GenerateRequest, GenerateResponse
from modal_apps.lora_cache import CachedLora, LoraCache, LoraCacheError

# Endpoint label → the base model whose LoRAs it applies.
LORA_ROUTES = {"flux-lora": "flux", "qwen-image-2512-lora": "qwen-image"}
ROUTES = (*LORA_ROUTES, "standard", "face-swap")
_PNG = b"\x89PNG\r\n\x1a\n"
_IMAGE_MAGICS = (_PNG, b"\xff\xd8\xff", b"RIFF")


class InputRejected(ValueError):
    """Raised by a runner when the request cannot be served as asked (e.g. no face in the reference photo)."""


class PipelineRunner(Protocol):
    """The GPU part: text-to-image (optionally with a LoRA) and face swap, each returning PNG bytes."""

    def text_to_image(self, request: GenerateRequest, *, lora: CachedLora | None) -> bytes: ...

    def face_swap(self, request: FaceSwapRequest, *, reference: bytes) -> bytes: ...


class GenerationService:
    def __init__(self, runner: PipelineRunner, cache: LoraCache) -> None:
        self.runner = runner
        self.cache = cache

    def lora_route(self, label: str, body: GenerateRequest) -> GenerateResponse:
        """Generate with the request's LoRA; any base-model mismatch is a 422, never a silent no-op."""
        started = time.perf_counter()
        family = LORA_ROUTES[label]
        model_base = _model_base(body.model)
        if model_base != family:
            raise HTTPException(422, f"model {body.model!r} (base model {model_base}) is not served by /{label}, "
                                     f"which serves {family}")
        if body.lora is None:
            raise HTTPException(422, f"/{label} applies a LoRA and the request has none; use /standard")
        lora = body.lora
        if lora.base_model != family:
            raise HTTPException(422, f"LoRA {lora.lora_model_id} is declared for {lora.base_model}; "
                                     f"/{label} serves {family}")
        experts = lora_experts(family)
        if bool(experts) != (lora.second_expert is not None):
            shape = " + ".join(experts) + " files" if experts else "one file"
            has = "has" if lora.second_expert else "lacks"
            raise HTTPException(422, f"a {family} LoRA is {shape}; LoRA {lora.lora_model_id} {has} a second_expert")
        cached = self._fetch(label, family, lora.lora_model_id, f".{experts[0]}" if experts else "", lora.url,
                             lora.sha256)
        if lora.second_expert is not None:
            if lora.second_expert.expert != experts[1]:
                raise HTTPException(422, f"the second file of a {family} LoRA is the {experts[1]} expert, "
                                         f"not {lora.second_expert.expert}")
            second = self._fetch(label, family, lora.lora_model_id, f".{experts[1]}", lora.second_expert.url,
                                 lora.second_expert.sha256)
            cached = replace(cached, second_expert=second)
        png = self._run(lambda: self.runner.text_to_image(body, lora=cached))
        applied = AppliedLora(lora_model_id=lora.lora_model_id, loaded=True, strength_model=lora.strength_model,
                              strength_clip=lora.strength_clip, detected_base_model=cached.base_model)
        return _response(png, "lora", body.model, body.prompt, body.seed, applied, started)

    def _fetch(self, label: str, family: str, lora_model_id: str, suffix: str, url: str, sha256: str) -> CachedLora:
        """One LoRA file, verified against its sha256 and its header's base model (`suffix`: `.{expert}` of a pair)."""
        try:
            cached = self.cache.get(f"{lora_model_id}{suffix}", url=url, sha256=sha256)
        except LoraCacheError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        if cached.base_model != family:
            source = f" (from {cached.detected_from})" if cached.detected_from else ""
            raise HTTPException(422, f"LoRA {lora_model_id}{suffix} file header says base model "
                                     f"{cached.base_model}{source}; /{label} serves {family}; refusing to apply it")
        return replace(cached, lora_model_id=lora_model_id)

    def standard(self, body: GenerateRequest) -> GenerateResponse:
        started = time.perf_counter()
        _model_base(body.model)
        if body.lora is not None:
            raise HTTPException(422, "/standard does not apply LoRAs; send LoRA requests to /flux-lora or "
                                     "/qwen-image-2512-lora")
        png = self._run(lambda: self.runner.text_to_image(body, lora=None))
        return _response(png, "standard", body.model, body.prompt, body.seed, None, started)

    def face_swap(self, body: FaceSwapRequest) -> GenerateResponse:
        started = time.perf_counter()
        _model_base(body.model)
        try:
            reference = base64.b64decode(body.reference_image_b64, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, "reference_image_b64 is not valid base64") from None
        if not reference.startswith(_IMAGE_MAGICS):
            raise HTTPException(422, "reference_image_b64 is not a PNG, JPEG or WebP image")
        png = self._run(lambda: self.runner.face_swap(body, reference=reference))
        return _response(png, "face_swap", body.model, body.prompt, body.seed, None, started)

    @staticmethod
    def _run(call) -> bytes:
        try:
            png = call()
        except InputRejected as exc:
            raise HTTPException(422, str(exc)) from None
        if not isinstance(png, bytes) or not png.startswith(_PNG):
            raise HTTPException(500, "the pipeline did not return a PNG image")
        return png


def _model_base(model: str) -> str:
    try:
        return get_model(model).base_model
    except UnknownModelError as exc:
        raise HTTPException(422, str(exc)) from None


def _response(png: bytes, mode: str, model: str, prompt: str, seed: int, lora: AppliedLora | None,
              started: float) -> GenerateResponse:
    return GenerateResponse(image_b64=base64.b64encode(png).decode("ascii"), mode=mode, model=model, prompt=prompt,
                            seed=seed, lora=lora, backend="modal", duration_ms=(time.perf_counter() - started) * 1000)
