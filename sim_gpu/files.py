"""Files the simulated GPU service reads and writes: fetching URLs (http(s), file:// under allowed roots),
the trained LoRA file (real layout + the face crops as tensors) and reading those faces back."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import numpy as np

from lora_pipelines.domain.lora_format import lora_tensor_shapes, trainer_metadata

FACE_TENSOR_PREFIX = "sim.faces."
PHOTO_TENSOR_PREFIX = "sim.photos."  # the training photos themselves (JPEG bytes), what an over-trained LoRA copies
SIM_SOFTWARE = "lora_pipelines-sim"
MAX_DOWNLOAD_BYTES = 2 * 1024**3


class FetchRefused(ValueError):
    """A URL the service will not read (scheme, or a file outside the allowed roots)."""


def fetch_url(url: str, allowed_roots: Sequence[Path], *, timeout_s: float = 60.0) -> bytes:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path)).resolve()
        if not any(path.is_relative_to(root) for root in allowed_roots):
            raise FetchRefused(f"file URL {path} is outside the allowed roots")
        if not path.is_file():
            raise FetchRefused(f"file URL {path} does not exist")
        return path.read_bytes()
    if parsed.scheme in ("http", "https"):
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
            response = client.get(url)
        if response.status_code != 200:
            raise FetchRefused(
                f"GET {parsed.scheme}://{parsed.netloc}{parsed.path} answered HTTP {response.status_code}")
        if len(response.content) > MAX_DOWNLOAD_BYTES:
            raise FetchRefused("download larger than 2 GiB")
        return response.content
    raise FetchRefused(f"unsupported URL scheme {parsed.scheme!r}; use http(s) or file://")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lora_file_bytes(*, base_model: str, trigger_word: str, rank: int, steps: int, faces: Sequence[np.ndarray],
                    character_id: str, seed: int, expert: str | None = None, dataset_hash: str | None = None,
                    photos: int | None = None, diversity: float | None = None,
                    photo_jpegs: Sequence[bytes] = ()) -> bytes:
    """A valid .safetensors LoRA in the base model's layout, carrying the face crops as uint8 tensors, whose owner
    (character, trigger word, dataset) and training (photos, their diversity, steps, rank) its header records.
    `expert`: one file of a two-expert pair, which says so in its header as the Modal trainer's header rewrite does."""
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in lora_tensor_shapes(base_model, rank).items():
        scale = 0.0 if name.endswith("lora_B.weight") else 0.02  # B starts at zero, as PEFT initialises it
        tensors[name] = (rng.standard_normal(shape) * scale + (0.001 if scale == 0 else 0)).astype(np.float16)
    for i, face in enumerate(faces):
        tensors[f"{FACE_TENSOR_PREFIX}{i:03d}"] = np.ascontiguousarray(face, dtype=np.uint8)
    for i, jpeg in enumerate(photo_jpegs):
        tensors[f"{PHOTO_TENSOR_PREFIX}{i:03d}"] = np.frombuffer(jpeg, dtype=np.uint8).copy()
    metadata = trainer_metadata(base_model, trigger_word, rank=rank, steps=steps, trainer=SIM_SOFTWARE,
                                character_id=character_id, dataset_hash=dataset_hash)
    metadata.update({"backend": "simulated", "sim.faces": str(len(faces)),
                     "sim.photos": str(len(faces) if photos is None else photos)})
    if diversity is not None:
        metadata["sim.diversity"] = f"{diversity:.4f}"
    if expert is not None:
        metadata["lora_pipelines.expert"] = expert
    return save(tensors, metadata=metadata)


def faces_in_lora(data: bytes) -> list[np.ndarray]:
    """The face crops a simulated LoRA carries (none for a file from elsewhere)."""
    from safetensors.numpy import load

    tensors = load(data)
    names = sorted(n for n in tensors if n.startswith(FACE_TENSOR_PREFIX))
    return [tensors[n] for n in names if tensors[n].ndim == 3 and tensors[n].shape[2] == 3]




def photos_in_lora(data: bytes) -> list[bytes]:
    """The training photos (JPEG bytes) a simulated LoRA carries, for over-trained copies (none from elsewhere)."""
    from safetensors.numpy import load

    tensors = load(data)
    return [tensors[n].tobytes() for n in sorted(n for n in tensors if n.startswith(PHOTO_TENSOR_PREFIX))
            if tensors[n].ndim == 1]
