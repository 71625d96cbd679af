"""Who appears in a simulated image, and the LoRA files the service fetches to decide it.

The honesty rule lives here: the character's face appears only when its LoRA was delivered, loaded, made for
the base model that runs, and triggered, and then only as much of it as the LoRA learned (sim_gpu/likeness.py:
photos, diversity, steps, rank, strength). Face swap carries the reference photo's face as well as that photo
allows. Everything else shows a face from the nobody pool (sim_gpu/nobody.py), which holds no character.
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

from sim_gpu.faces import FoundFace, find_face, open_rgb
from sim_gpu.files import faces_in_lora, fetch_url, photos_in_lora, sha256_hex
from sim_gpu.images import synthesize
from sim_gpu.likeness import LoraTraits, mix, swap_weight, with_noise
from sim_gpu.nobody import NobodyPool

REFERENCE_CACHE_SIZE = 256  # reference photos whose face is remembered


class LoraRejected(ValueError):
    """The LoRA cannot be used: not downloadable, wrong checksum, not a LoRA file."""


@dataclass(frozen=True)
class LoraFile:
    data: bytes
    base_model: str
    trigger_word: str | None
    character_id: str | None
    faces: tuple[np.ndarray, ...]
    traits: LoraTraits
    photos: tuple[bytes, ...] = ()  # the training photos, which an over-trained LoRA reproduces


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def _traits(metadata: dict[str, str], faces: int, rank: int | None) -> LoraTraits:
    """What the file says about its training (a file without the sim's keys: its faces, 0.5 diversity)."""
    try:
        diversity = float(metadata.get("sim.diversity", "0.5"))
    except ValueError:
        diversity = 0.5
    return LoraTraits(photos=_int(metadata.get("sim.photos", faces), faces), diversity=diversity,
                      steps=_int(metadata.get("ss_steps", 1000), 1000),
                      rank=_int(metadata.get("ss_network_dim", rank or 16), rank or 16))


def read_lora(data: bytes) -> LoraFile:
    """Inspect a LoRA file's header (base model, trigger word) and take the faces it carries."""
    try:
        from lora_pipelines.domain.safetensors_inspect import inspect_lora_bytes

        inspection = inspect_lora_bytes(data)
        base_model, trigger = inspection.base_model, inspection.trigger_word
        metadata = inspection.metadata
        faces = tuple(faces_in_lora(data))
        photos = tuple(photos_in_lora(data))
    except Exception as exc:  # InvalidLoraFileError, or safetensors refusing the bytes
        raise LoraRejected(f"not a valid LoRA file: {exc}") from None
    return LoraFile(data=data, base_model=base_model,
                    trigger_word=trigger or metadata.get("lora_pipelines.trigger_word"),
                    character_id=metadata.get("lora_pipelines.character_id"), faces=faces,
                    traits=_traits(metadata, len(faces), inspection.rank), photos=photos)


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
        self._file_locks: dict[str, threading.Lock] = {}
        self._reference_cache: dict[str, FoundFace | None] = {}
        self.nobody = NobodyPool(home / "crowd", home / "characters")

    # --- LoRA delivery (Modal apps keep a volume cache keyed by sha256) ---
    def _file_lock(self, sha256: str) -> threading.Lock:
        """One download per file; calls with other LoRAs (or none) go on meanwhile."""
        with self._lock:
            return self._file_locks.setdefault(sha256, threading.Lock())

    def fetch_lora(self, url: str, sha256: str) -> LoraFile:
        cached = self.lora_cache / f"{sha256}.safetensors"
        with self._file_lock(sha256):
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
    def reference_face(self, image_bytes: bytes) -> FoundFace | None:
        """The face of a reference photo, found once per photo: detection is CPU work of this simulator, which
        would otherwise serialize concurrent face swaps that a real GPU service runs side by side."""
        digest = hashlib.sha256(image_bytes).hexdigest()
        with self._lock:
            if digest in self._reference_cache:
                return self._reference_cache[digest]
        face = find_face(open_rgb(image_bytes))
        with self._lock:
            if len(self._reference_cache) >= REFERENCE_CACHE_SIZE:
                self._reference_cache.pop(next(iter(self._reference_cache)))
            self._reference_cache[digest] = face
        return face

    # --- rendering ---
    def render(self, *, seed: int, width: int, height: int, identity: Sequence[np.ndarray] = (),
               weight: float = 0.0, reference: FoundFace | None = None,
               info: dict[str, str] | None = None, copy_rate: float = 0.0,
               copy_from: Sequence[bytes] = ()) -> tuple[bytes, str]:
        """PNG + which face it shows: "character" (a LoRA's), "reference" (a swap's), "nobody" or "none".

        `weight`: how much of the LoRA's face it carries (sim_gpu/likeness.py); a reference face carries as much
        as the photo allows. `copy_rate`: the chance that an over-trained LoRA reproduces one of its training photos
        (`copy_from`) as it was."""
        rng = random.Random(seed)
        info = dict(info or {})
        nobody = self.nobody.pick(rng)
        degradation = "lora"
        # its own draws: the same seed gives the same image whatever the copy rate, so checkpoints compare fairly
        copying = random.Random(f"copy-{seed}")
        if identity and weight > 0 and copy_from and copy_rate > 0 and copying.random() < copy_rate:
            photo = open_rgb(copy_from[copying.randrange(len(copy_from))])
            face, shown, degradation = np.asarray(photo), "character", "copy"
            info["likeness_weight"] = "copy"
        elif identity and weight > 0:
            w = with_noise(weight, rng)
            face, shown = mix(_blend_two(identity, rng), nobody, w), "character"
            info["likeness_weight"] = f"{w:.3f}"
        elif reference is not None:
            w = with_noise(swap_weight(face_px=reference.size_px, sharpness=reference.sharpness, yaw=reference.yaw),
                           rng)
            face, shown, degradation = mix(reference.crop, nobody, w), "reference", "swap"
            info["likeness_weight"] = f"{w:.3f}"
        else:
            face, shown = nobody, ("nobody" if nobody is not None else "none")
        info["face"] = shown
        png = synthesize(seed=seed, width=width, height=height, face=face, degradation=degradation, info=info)
        return png, shown


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
