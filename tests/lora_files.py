"""Small real LoRA files for the tests: the base model's key layout at a reduced width, random fp16 weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from lora_pipelines.domain.lora_format import lora_tensor_shapes


def write_lora(path: Path, base_model: str, metadata: dict[str, str] | None = None, *, rank: int = 4,
               seed: int = 0) -> Path:
    """A small real safetensors file in the base model's key layout."""
    rng = np.random.default_rng(seed)
    tensors = {name: rng.standard_normal(shape).astype(np.float16)
               for name, shape in lora_tensor_shapes(base_model, rank, scale_down=64).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
