"""The "nobody" pool: faces the simulated service shows when an image must not show the character (standard
generation, an untriggered or ignored LoRA, a failed face swap) and mixes into a weak LoRA's face.

Where the faces come from, with no ../shared and no network:
  - Grace Hopper's portrait that matplotlib (a dependency) ships as sample data (mpl-data/sample_data/
    grace_hopper.jpg, public domain, U.S. Navy): always there, so every service has at least one nobody;
  - every photo an operator or a test puts in {home}/crowd/.
Disjoint from every character: a pool face within dlib's same-person distance (0.6) of any face a character
trained on this service is left out, so a wrong, untriggered or weak LoRA can never show a character by accident.
A character the service never trained (one without LoRA) is unknown to it: keep such people out of crowd/.
"""

from __future__ import annotations

import importlib.util
import random
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from sim_gpu.faces import find_face

SAME_PERSON = 0.6
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
DESCRIPTORS_FILE = "descriptors.npy"  # in {home}/characters/{id}/, written when the service trains a character


def builtin_photos() -> list[Path]:
    """The pool's photos shipped in installed packages (matplotlib's sample Grace Hopper portrait)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return []
    photo = Path(spec.submodule_search_locations[0]) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return [photo] if photo.is_file() else []


class NobodyPool:
    def __init__(self, crowd_dir: Path, characters_dir: Path) -> None:
        self.crowd_dir, self.characters_dir = crowd_dir, characters_dir
        self._lock = threading.Lock()
        self._found: dict[tuple[str, float], tuple[np.ndarray, np.ndarray] | None] = {}
        self._cached: tuple[tuple, list[np.ndarray]] | None = None

    def _photos(self) -> list[Path]:
        crowd = sorted(p for p in self.crowd_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES) \
            if self.crowd_dir.is_dir() else []
        return builtin_photos() + crowd

    def _character_descriptors(self) -> list[Path]:
        return sorted(self.characters_dir.glob(f"*/{DESCRIPTORS_FILE}")) if self.characters_dir.is_dir() else []

    def _face(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        key = (str(path), path.stat().st_mtime)
        if key not in self._found:
            found = find_face(Image.open(path).convert("RGB"))
            self._found[key] = None if found is None else (found.crop, found.descriptor)
        return self._found[key]

    def faces(self) -> list[np.ndarray]:
        """The pool's face crops, every one far from every character trained here."""
        photos, characters = self._photos(), self._character_descriptors()
        state = tuple((str(p), p.stat().st_mtime) for p in [*photos, *characters])
        with self._lock:
            if self._cached is not None and self._cached[0] == state:
                return self._cached[1]
            known = [np.load(path) for path in characters]
            known_matrix = np.concatenate([k.reshape(-1, 128) for k in known]) if known else np.zeros((0, 128))
            faces = []
            for photo in photos:
                found = self._face(photo)
                if found is None:
                    continue
                crop, descriptor = found
                if len(known_matrix) and np.linalg.norm(known_matrix - descriptor, axis=1).min() < SAME_PERSON:
                    continue  # this face is (or looks like) a character
                faces.append(crop)
            self._cached = (state, faces)
            return faces

    def pick(self, rng: random.Random) -> np.ndarray | None:
        """One nobody face (mirrored half of the time), or None when the pool is empty."""
        faces = self.faces()
        if not faces:
            return None
        face = faces[rng.randrange(len(faces))]
        return face[:, ::-1].copy() if rng.random() < 0.5 else face
