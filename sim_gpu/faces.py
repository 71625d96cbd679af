"""Face finding for the simulated GPU service: dlib's detector, landmark and ResNet models, aligned face crops.

The simulator finds a face, crops it, and measures what its quality model needs (sim_gpu/likeness.py): the face's
size, sharpness and head turn, and a dlib descriptor (to measure a dataset's diversity and to keep every character
out of the "nobody" pool). Whether a generated image shows the character is judged elsewhere (lora_pipelines.faces).
"""

from __future__ import annotations

import importlib.util
import io
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

CROP_SIZE = 128
CROP_PADDING = 0.45  # context around the face (hair, chin) so a pasted crop still looks like a head
_DETECT_MAX_SIDE = 640
_lock = threading.Lock()  # dlib objects are not documented as thread-safe


def _model_file(filename: str) -> str:
    """A file of the face_recognition_models package, found without importing it (its __init__ needs
    pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("dlib's face models are missing: install face_recognition_models")
    return str(Path(spec.submodule_search_locations[0]) / "models" / filename)


@lru_cache(maxsize=1)
def _models():
    import dlib

    predictor = dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat"))
    encoder = dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))
    return dlib.get_frontal_face_detector(), predictor, encoder


@dataclass(frozen=True)
class FoundFace:
    crop: np.ndarray  # aligned HxWx3 uint8
    descriptor: np.ndarray  # dlib's 128-d embedding
    size_px: int  # the detector box's side in the original image
    sharpness: float  # variance of the Laplacian of the aligned grey crop (blur lowers it)
    yaw: float  # head turn from the landmarks: 0 facing the camera, +-1 in full profile


def open_rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def _laplacian_variance(crop: np.ndarray) -> float:
    grey = crop.astype(np.float32).mean(axis=2)
    lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
    return float(lap.var())


def find_face(image: Image.Image, size: int = CROP_SIZE, padding: float = CROP_PADDING,
              upsample: int = 1) -> FoundFace | None:
    """The largest face, aligned and measured, or None when no face is found."""
    import dlib

    scale = min(1.0, _DETECT_MAX_SIDE / max(image.size))
    small = image if scale == 1.0 else image.resize((round(image.width * scale), round(image.height * scale)))
    pixels = np.asarray(small, dtype=np.uint8)
    detector, predictor, encoder = _models()
    with _lock:
        boxes = detector(pixels, upsample)
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        shape = predictor(pixels, box)
        if scale != 1.0:  # re-fit the landmarks on the full image for a sharper crop
            full = np.asarray(image, dtype=np.uint8)
            box = dlib.rectangle(round(box.left() / scale), round(box.top() / scale),
                                 round(box.right() / scale), round(box.bottom() / scale))
            shape = predictor(full, box)
            pixels = full
        chip = np.asarray(dlib.get_face_chip(pixels, shape, size=size, padding=padding), dtype=np.uint8)
        descriptor = np.asarray(encoder.compute_face_descriptor(pixels, shape), dtype=np.float32)
        points = [(shape.part(i).x, shape.part(i).y) for i in (0, 16, 30)]
    (jaw_left, _), (jaw_right, _), (nose, _) = points
    span = jaw_right - jaw_left
    yaw = float(np.clip(2 * (nose - jaw_left) / span - 1, -1, 1)) if span > 0 else 0.0
    return FoundFace(chip, descriptor, int(min(box.width(), box.height())), _laplacian_variance(chip), yaw)


def face_crop(image: Image.Image, size: int = CROP_SIZE, padding: float = CROP_PADDING) -> np.ndarray | None:
    """An aligned HxWx3 uint8 crop of the largest face, or None when no face is found."""
    found = find_face(image, size, padding)
    return None if found is None else found.crop


def descriptor_of_crop(crop: np.ndarray) -> np.ndarray | None:
    """dlib's descriptor of a face already cropped (a training crop, a pool face); None when none is found."""
    image = Image.fromarray(crop)
    found = find_face(image.resize((image.width * 2, image.height * 2)), upsample=0) or find_face(image, upsample=1)
    return None if found is None else found.descriptor


def square_resize(image: Image.Image, size: int = CROP_SIZE) -> np.ndarray:
    """Center square crop, resized: the fallback when no face is found in a training image."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size)), dtype=np.uint8)
