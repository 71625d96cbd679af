"""A fast first look at incoming photos: how many faces each shows, with dlib's HOG detector alone.

No landmarks and no embeddings (whose models take seconds to load), but the same downscale, upsampling and minimum
face size as the training dataset (`dataset.py`), so a photo judged usable here shows the one face the dataset
step will find; the dataset may still drop it as a near-duplicate or a face of someone else.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lora_pipelines.faces.images import ImageDecodeError, decode_image, downscale

DETECT_MAX_SIDE = 800  # as FaceAnalyzer.analyze
UPSAMPLE = 1
MIN_FACE_PX = 64  # as build_training_dataset

_lock = threading.Lock()
_detector = None


def _hog_detector():
    global _detector
    with _lock:
        if _detector is None:
            import dlib

            _detector = dlib.get_frontal_face_detector()
        return _detector


def face_sizes(img: Image.Image) -> list[int]:
    """The smaller side, in pixels of `img`, of every face found; largest first."""
    small = downscale(img.convert("RGB") if img.mode != "RGB" else img, DETECT_MAX_SIDE)
    scale = img.width / small.width
    rects = _hog_detector()(np.asarray(small), UPSAMPLE)
    return sorted((round(min(r.width(), r.height()) * scale) for r in rects), reverse=True)


@dataclass(frozen=True)
class PhotoVerdict:
    name: str
    faces: int
    reason: str | None  # None: usable; else corrupt_image | too_large | no_face | multiple_faces | face_too_small
    detail: str

    @property
    def usable(self) -> bool:
        return self.reason is None


def judge_photo(data: bytes, name: str, *, min_face_px: int = MIN_FACE_PX) -> PhotoVerdict:
    """Whether a photo shows exactly one face large enough to train on, and if not, why (the dataset's reasons)."""
    try:
        img = decode_image(data, name=name)
    except ImageDecodeError as exc:
        return PhotoVerdict(name, 0, exc.reason, str(exc))
    sizes = face_sizes(img)
    if not sizes:
        return PhotoVerdict(name, 0, "no_face", f"{name}: no face found")
    if len(sizes) > 1:
        return PhotoVerdict(name, len(sizes), "multiple_faces",
                            f"{name}: {len(sizes)} faces; use photos of one person alone")
    if sizes[0] < min_face_px:
        return PhotoVerdict(name, 1, "face_too_small", f"{name}: face is {sizes[0]} px, need at least {min_face_px} px")
    return PhotoVerdict(name, 1, None, f"{name}: one face, {sizes[0]} px")
