"""The real PipelineRunner: diffusers pipelines on the GPU (diffusers 0.39.0, see modal_apps/pins.py). The calls
were read in that release's source; none was run here (no GPU), see docs/modal.md.

torch, diffusers, PIL and insightface are imported inside methods so this module imports anywhere.
"""

from __future__ import annotations

import io
import os
import re
from collections import OrderedDict
from typing import Any

from lora_pipelines.gpu.schemas import FaceSwapRequest, GenerateRequest
from modal_apps import pins
from modal_apps.generation_service import InputRejected
from modal_apps.lora_cache import CachedLora

# Generation model (lora_pipelines.domain.model_registry name) → diffusers repository.
MODEL_REPOS = {
    "flux": pins.FLUX_DEV_REPO,
    "qwen-image": pins.QWEN_IMAGE_2512_REPO,
    "z-image-turbo": pins.Z_IMAGE_TURBO_REPO,
    "one-2.1": pins.WAN21_T2V_14B_REPO,
    "one-2.2": pins.WAN22_T2V_A14B_REPO,  # WanPipeline with transformer (high noise) + transformer_2 (low noise)
}
# Face swap model: InsightFace's inswapper_128.onnx from the Hub repository ReActor's installer downloads it from.
INSWAPPER_REPO = os.environ.get("INSWAPPER_REPO", pins.INSWAPPER_REPO)
INSWAPPER_REPO_TYPE = os.environ.get("INSWAPPER_REPO_TYPE", pins.INSWAPPER_REPO_TYPE)
INSWAPPER_FILE = os.environ.get("INSWAPPER_FILE", pins.INSWAPPER_FILE)
MAX_LOADED_ADAPTERS = 8


def _adapter_name(lora_model_id: str) -> str:
    # PEFT adapter names become module attribute names: no dots or dashes.
    return "lora_" + re.sub(r"\W", "_", lora_model_id)


class DiffusersRunner:
    """One pipeline in GPU memory at a time; LoRA adapters stay loaded (up to a few) and are switched per request."""

    def __init__(self) -> None:
        self._model: str | None = None
        self._pipe: Any = None
        self._adapters: OrderedDict[str, None] = OrderedDict()
        self._face_analysis: Any = None
        self._swapper: Any = None

    def load(self, model: str) -> Any:
        if self._model == model:
            return self._pipe
        import torch
        from diffusers import DiffusionPipeline

        if model not in MODEL_REPOS:
            raise InputRejected(f"no diffusers pipeline configured for model {model!r}")
        self._pipe = None
        self._adapters.clear()
        torch.cuda.empty_cache()
        self._pipe = DiffusionPipeline.from_pretrained(MODEL_REPOS[model], torch_dtype=torch.bfloat16).to("cuda")
        self._model = model
        return self._pipe

    def text_to_image(self, request: GenerateRequest, *, lora: CachedLora | None) -> bytes:
        pipe = self.load(request.model)
        if lora is not None:
            self._activate(pipe, lora, request.lora.strength_model if request.lora else 1.0)
        elif self._adapters:
            pipe.disable_lora()
        return _png(self._generate(pipe, request.model, request.prompt, request.negative_prompt, request.width,
                                   request.height, request.steps, request.seed))

    def _activate(self, pipe: Any, lora: CachedLora, strength: float) -> None:
        """Load (once) and switch to the LoRA. A two-expert pipeline (Wan 2.2: `transformer` runs the high-noise
        steps, `transformer_2` the low-noise ones) takes a pair: the primary file into `transformer`, the second
        with `load_into_transformer_2=True`, under one adapter name that `set_adapters` weights on both."""
        two_experts = getattr(pipe, "transformer_2", None) is not None
        if two_experts and lora.second_expert is None:
            raise InputRejected(f"LoRA {lora.lora_model_id} is one file; this model has two experts (transformer and "
                                "transformer_2) and takes a high_noise + low_noise pair")
        if not two_experts and lora.second_expert is not None:
            raise InputRejected(f"LoRA {lora.lora_model_id} is an expert pair; this model has one transformer")
        name = _adapter_name(lora.lora_model_id)
        if name not in self._adapters:
            if len(self._adapters) >= MAX_LOADED_ADAPTERS:
                oldest, _ = self._adapters.popitem(last=False)
                pipe.delete_adapters([oldest])
            pipe.load_lora_weights(str(lora.path), adapter_name=name)
            if two_experts:
                pipe.load_lora_weights(str(lora.second_expert.path), adapter_name=name, load_into_transformer_2=True)
        self._adapters[name] = None
        self._adapters.move_to_end(name)
        pipe.enable_lora()
        # One weight for every component the LoRA touches; our trainer trains the transformer only.
        pipe.set_adapters([name], adapter_weights=[strength])

    def _generate(self, pipe: Any, model: str, prompt: str, negative: str, width: int, height: int, steps: int,
                  seed: int) -> Any:
        import torch

        generator = torch.Generator("cuda").manual_seed(seed)
        kwargs: dict[str, Any] = {"prompt": prompt, "width": width, "height": height,
                                  "num_inference_steps": steps, "generator": generator}
        if model == "flux":
            kwargs["guidance_scale"] = 3.5
        elif model == "qwen-image":
            kwargs.update(negative_prompt=negative or " ", true_cfg_scale=4.0)
        elif model == "z-image-turbo":
            kwargs["guidance_scale"] = 0.0  # distilled: no CFG
        elif model in {"one-2.1", "one-2.2"}:
            out = pipe(**kwargs, negative_prompt=negative or None, num_frames=1, output_type="pil")
            return out.frames[0][0]
        return pipe(**kwargs).images[0]

    def face_swap(self, request: FaceSwapRequest, *, reference: bytes) -> bytes:
        import numpy as np
        from PIL import Image

        source_face = self._largest_face(np.array(Image.open(io.BytesIO(reference)).convert("RGB"))[:, :, ::-1])
        if source_face is None:
            raise InputRejected("no face found in the reference photo")
        pipe = self.load(request.model)
        if self._adapters:
            pipe.disable_lora()
        generated = self._generate(pipe, request.model, request.prompt, "", request.width, request.height,
                                   8 if request.model == "z-image-turbo" else 28, request.seed)
        frame = np.array(generated.convert("RGB"))[:, :, ::-1].copy()
        target_face = self._largest_face(frame)
        if target_face is None:
            raise InputRejected("the generated image has no face to swap; try a prompt that shows the person")
        swapped = self._swapper.get(frame, target_face, source_face, paste_back=True)
        return _png(Image.fromarray(swapped[:, :, ::-1]))

    def _largest_face(self, bgr: Any) -> Any:
        if self._face_analysis is None:
            import insightface
            from huggingface_hub import hf_hub_download

            self._face_analysis = insightface.app.FaceAnalysis(name="buffalo_l", providers=["CUDAExecutionProvider"])
            self._face_analysis.prepare(ctx_id=0, det_size=(640, 640))
            self._swapper = insightface.model_zoo.get_model(
                hf_hub_download(INSWAPPER_REPO, INSWAPPER_FILE, repo_type=INSWAPPER_REPO_TYPE))
        faces = self._face_analysis.get(bgr)
        if not faces:
            return None
        return max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
