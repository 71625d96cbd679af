"""Who appears in a simulated image, and the LoRA files the service fetches to decide it.

The honesty rule lives here: the character's face appears only when its LoRA was delivered, loaded, made for
the base model that runs, and triggered. Face swap shows the reference face, less reliably. Everything else
shows someone from the crowd (other characters, photos in {home}/crowd/) or, with no crowd, a faceless scene.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sim_gpu.faces import face_crop, open_rgb
from sim_gpu.files import faces_in_lora, fetch_url, sha256_hex
from sim_gpu.images import synthesize
from sim_gpu.learning import FULLY_LEARNED, Stage, stage_of

SWAP_SUCCESS_RATE = 0.8
_PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class LoraRejected(ValueError):
    """The LoRA cannot be used: not downloadable, wrong checksum, not a LoRA file."""


@dataclass(frozen=True)
class LoraFile:
    data: bytes
    base_model: str
    trigger_word: str | None
    character_id: str | None
    faces: tuple[np.ndarray, ...]
    stage: Stage = FULLY_LEARNED  # how far its training got (sim_gpu/learning.py)


def read_lora(data: bytes) -> LoraFile:
    """Inspect a LoRA file's header (base model, trigger word) and take the faces it carries."""
    try:
        from lora_pipelines.domain.safetensors_inspect import inspect_lora_bytes

        inspection = inspect_lora_bytes(data)
        base_model, trigger = inspection.base_model, inspection.trigger_word
        metadata = inspection.metadata
        faces = tuple(faces_in_lora(data))
    except Exception as exc:  # InvalidLoraFileError, or safetensors refusing the bytes
        raise LoraRejected(f"not a valid LoRA file: {exc}") from None
    return LoraFile(data=data, base_model=base_model,
                    trigger_word=trigger or metadata.get("lora_pipelines.trigger_word"),
                    character_id=metadata.get("lora_pipelines.character_id"), faces=faces,
                    stage=stage_of(metadata))


def is_triggered(prompt: str, trigger_word: str | None) -> bool:
    if not trigger_word:
        return False
    words = {w.strip(",.;:!?()[]{}\"'").lower() for w in prompt.split()}
    return trigger_word.lower() in words


class Studio:
    def __init__(self, home: Path, allowed_roots: Sequence[Path],
                 count: Callable[[str], None] = lambda e: None) -> None:
        self.home = home
        self.allowed_roots = list(allowed_roots)
        self._count = count
        self.lora_cache = home / "lora_cache"
        self.lora_cache.mkdir(parents=True, exist_ok=True)
        (home / "crowd").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._crop_cache: dict[tuple[str, float], np.ndarray | None] = {}

    # --- LoRA delivery (Modal apps keep a volume cache keyed by sha256) ---
    def fetch_lora(self, url: str, sha256: str) -> LoraFile:
        cached = self.lora_cache / f"{sha256}.safetensors"
        with self._lock:
            if not cached.exists():
                try:
                    data = fetch_url(url, self.allowed_roots)
                except Exception as exc:  # noqa: BLE001 - any failure to fetch is the caller's URL problem
                    raise LoraRejected(f"lora download failed: {exc}") from None
                self._count("lora_downloads")
                if sha256_hex(data) != sha256:
                    raise LoraRejected(f"lora checksum mismatch: expected {sha256[:12]}…, got {sha256_hex(data)[:12]}…")
                read_lora(data)  # refuse junk before caching it
                tmp = cached.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(cached)
        return read_lora(cached.read_bytes())

    # --- faces ---
    def _crop_of(self, path: Path) -> np.ndarray | None:
        key = (str(path), path.stat().st_mtime)
        if key not in self._crop_cache:
            image = Image.open(path).convert("RGB")
            self._crop_cache[key] = np.asarray(image) if path.parent.parent.name == "characters" else face_crop(image)
        return self._crop_cache[key]

    def crowd(self, *, known_character: str | None) -> list[np.ndarray]:
        """Faces that are NOT the character: crowd photos, plus other trained characters when the request says
        whose it is (a plain standard request does not, so then only {home}/crowd/ is safe)."""
        paths = sorted(p for p in (self.home / "crowd").iterdir() if p.suffix.lower() in _PHOTO_SUFFIXES)
        if known_character is not None:
            for folder in sorted((self.home / "characters").glob("*")):
                if folder.name != known_character:
                    paths.extend(sorted(folder.glob("*.png"))[:1])
        faces = [self._crop_of(p) for p in paths]
        return [f for f in faces if f is not None]

    def reference_face(self, image_bytes: bytes) -> np.ndarray | None:
        return face_crop(open_rgb(image_bytes))

    # --- rendering ---
    def render(self, *, seed: int, width: int, height: int, identity: Sequence[np.ndarray] = (),
               reference: np.ndarray | None = None, known_character: str | None = None,
               info: dict[str, str] | None = None, stage: Stage = FULLY_LEARNED) -> tuple[bytes, str]:
        """PNG + which face it shows: "character", "reference", "crowd" or "none". `stage`: how far the LoRA that
        carries `identity` was trained (an under-trained one shows a weaker likeness, an over-trained one copies)."""
        rng = random.Random(seed)
        info = dict(info or {})
        # its own draw: the same seed gives the same blend whatever the copy rate, so checkpoints compare fairly
        if identity and stage.copy_rate > 0 and random.Random(f"copy-{seed}").random() < stage.copy_rate:
            face = identity[rng.randrange(len(identity))]  # over-trained: a training crop as it was
            shown, degradation = "character", "copy"
        elif identity:
            face = _blend_two(identity, rng)
            if stage.learned < 1.0:
                face = _dilute(face, self._someone_else(rng), stage.learned)
            shown, degradation = "character", "lora"
        elif reference is not None and rng.random() < SWAP_SUCCESS_RATE:
            face, shown, degradation = reference, "reference", "swap"
        else:
            crowd = self.crowd(known_character=known_character)
            face = crowd[rng.randrange(len(crowd))] if crowd else None
            shown, degradation = ("crowd" if crowd else "none"), "lora"
        info["face"] = shown
        png = synthesize(seed=seed, width=width, height=height, face=face, degradation=degradation, info=info)
        return png, shown

    def _someone_else(self, rng: random.Random) -> np.ndarray | None:
        """A face that is not the character: from {home}/crowd/ (None without a crowd)."""
        crowd = self.crowd(known_character=None)
        return crowd[rng.randrange(len(crowd))] if crowd else None


def _dilute(face: np.ndarray, other: np.ndarray | None, learned: float) -> np.ndarray:
    """An under-trained LoRA's face: `learned` of the character, the rest someone else (with no crowd, the same face
    without its features: its colours and layout at 6 x 6 pixels)."""
    if other is None:
        small = Image.fromarray(face).resize((6, 6), Image.BILINEAR)
        other = np.asarray(small.resize((face.shape[1], face.shape[0]), Image.BICUBIC))
    elif other.shape != face.shape:
        other = np.asarray(Image.fromarray(other).resize((face.shape[1], face.shape[0])))
    mixed = learned * face.astype(np.float32) + (1.0 - learned) * other.astype(np.float32)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _blend_two(faces: Sequence[np.ndarray], rng: random.Random) -> np.ndarray:
    """What the 'LoRA learned': a blend of two aligned training crops, never one photo as it was."""
    i = rng.randrange(len(faces))
    if len(faces) == 1:
        return faces[i]
    j = (i + 1 + rng.randrange(len(faces) - 1)) % len(faces)
    a, b = faces[i], faces[j]
    if a.shape != b.shape:
        b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0])))
    weight = rng.uniform(0.5, 0.72)
    return np.clip(weight * a.astype(np.float32) + (1 - weight) * b.astype(np.float32), 0, 255).astype(np.uint8)


def seed_for(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:15], 16)
