"""A character's reference photos -> a LoRA training dataset: one aligned, captioned face crop per usable photo.

Rules, in order, for each photo (processed in a canonical order, so input order never matters):
  unreadable or not JPEG/PNG/WebP -> corrupt_image; over the byte/pixel limits -> too_large;
  no face -> no_face; more than one face -> multiple_faces; face box under min_face_px -> face_too_small;
  embedding within duplicate_distance of an already kept face -> near_duplicate_of:<kept name>
  (larger faces are kept first, so the best copy of a duplicated photo survives).
Then every kept face is compared with the medoid face: beyond identity_threshold it is an identity outlier
(a photo of someone else). Outliers stay in `items`; `identity.passed` is False and names them.

Held out: given the training minimum, when more photos are usable than it, a deterministic ~20% of them (at least
one, never taking training below the minimum; chosen by content hash, so input order and names never matter) is
kept out of the training set, for scoring only: a likeness measured on photos the LoRA never saw.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from lora_pipelines.domain.trigger_words import validate_trigger_word
from lora_pipelines.faces.embeddings import DetectedFace, aligned_crop, default_analyzer, face_distance
from lora_pipelines.faces.images import MAX_BYTES, MAX_PIXELS, ImageDecodeError, decode_image, to_png_bytes

MANIFEST_VERSION = 1
IDENTITY_THRESHOLD = 0.6
# Re-encoding or resizing one photo moves its embedding by <= 0.09 on the shared test photos;
# two different photos of one person are >= 0.25 apart.
DUPLICATE_DISTANCE = 0.15
HELD_OUT_SHARE = 0.2
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class Analyzer(Protocol):
    def analyze(self, img: Image.Image) -> list[DetectedFace]: ...


@dataclass(frozen=True)
class DatasetItem:
    name: str
    stem: str  # "001": the item is images/001.png + images/001.txt
    image_png: bytes
    caption: str
    embedding: np.ndarray
    source_sha256: str

    @property
    def image_sha256(self) -> str:
        return hashlib.sha256(self.image_png).hexdigest()

    @property
    def caption_sha256(self) -> str:
        return hashlib.sha256(self.caption.encode()).hexdigest()


@dataclass(frozen=True)
class HeldOutPhoto:
    """A usable photo kept out of training, for scoring only."""

    name: str
    source_sha256: str
    embedding: np.ndarray


@dataclass(frozen=True)
class DroppedPhoto:
    name: str
    reason: str  # corrupt_image | too_large | no_face | multiple_faces | face_too_small | near_duplicate_of:<name>
    detail: str
    source_sha256: str


@dataclass(frozen=True)
class IdentityCheck:
    medoid: str | None
    threshold: float
    distances: dict[str, float]  # every kept photo -> distance to the medoid face
    outliers: list[tuple[str, float]]  # beyond threshold, farthest first

    @property
    def passed(self) -> bool:
        return not self.outliers


@dataclass(frozen=True)
class TrainingDataset:
    trigger_word: str
    training_size: int
    items: list[DatasetItem]
    dropped: list[DroppedPhoto]
    identity: IdentityCheck
    manifest: dict = field(repr=False)
    dataset_hash: str = ""
    held_out: list[HeldOutPhoto] = field(default_factory=list)

    def to_zip_bytes(self) -> bytes:
        """images/NNN.png, images/NNN.txt and manifest.json with fixed timestamps: same dataset, same bytes."""
        entries = [("manifest.json", canonical_json(self.manifest, indent=2).encode())]
        for item in self.items:
            entries.append((f"images/{item.stem}.png", item.image_png))
            entries.append((f"images/{item.stem}.txt", item.caption.encode()))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for name, data in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        return out.getvalue()


def canonical_json(value: object, *, indent: int | None = None) -> str:
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=indent, separators=separators)


@dataclass
class _Candidate:
    name: str
    sha256: str
    image: Image.Image
    face: DetectedFace


def build_training_dataset(
    photos: Sequence[tuple[str, bytes]],
    *,
    trigger_word: str,
    analyzer: Analyzer | None = None,
    training_size: int = 512,
    min_face_px: int = 64,
    duplicate_distance: float = DUPLICATE_DISTANCE,
    identity_threshold: float = IDENTITY_THRESHOLD,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    min_photos: int | None = None,
) -> TrainingDataset:
    """Faces found, aligned, captioned and deduplicated; drops and identity outliers explained.

    analyzer: anything with analyze(img) -> list[DetectedFace]; default: this process's shared FaceAnalyzer.
    min_photos: the training minimum; with more usable photos than it, some are held out (`held_out`).
    """
    validate_trigger_word(trigger_word)
    analyzer = analyzer or default_analyzer()
    if not 64 <= training_size <= 4096:
        raise ValueError(f"training_size must be between 64 and 4096 pixels, got {training_size}")
    names = [name for name, _ in photos]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"photo names must be unique; repeated: {', '.join(repeated)}")

    dropped: list[DroppedPhoto] = []
    candidates: list[_Candidate] = []
    for name, data in sorted(photos, key=lambda photo: photo[0]):
        sha = hashlib.sha256(data).hexdigest()
        try:
            image = decode_image(data, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
        except ImageDecodeError as exc:
            dropped.append(DroppedPhoto(name, exc.reason, str(exc), sha))
            continue
        faces = analyzer.analyze(image)
        if not faces:
            dropped.append(DroppedPhoto(name, "no_face", f"{name}: no face found", sha))
        elif len(faces) > 1:
            dropped.append(DroppedPhoto(name, "multiple_faces",
                                        f"{name}: {len(faces)} faces; use photos of one person alone", sha))
        elif faces[0].size < min_face_px:
            dropped.append(
                DroppedPhoto(name, "face_too_small",
                             f"{name}: face is {faces[0].size} px, need at least {min_face_px} px", sha)
            )
        else:
            candidates.append(_Candidate(name, sha, image, faces[0]))

    kept: list[_Candidate] = []
    for cand in sorted(candidates, key=lambda c: (-c.face.width * c.face.height, c.sha256, c.name)):
        twin = next(
            (k for k in kept
             if k.sha256 == cand.sha256 or face_distance(k.face.embedding, cand.face.embedding) < duplicate_distance),
            None,
        )
        if twin is None:
            kept.append(cand)
            continue
        distance = face_distance(twin.face.embedding, cand.face.embedding)
        dropped.append(
            DroppedPhoto(
                cand.name,
                f"near_duplicate_of:{twin.name}",
                f"{cand.name}: same photo as {twin.name} (face distance {distance:.3f} < {duplicate_distance})",
                cand.sha256,
            )
        )
    kept.sort(key=lambda c: c.name)
    dropped.sort(key=lambda d: d.name)
    held_shas = choose_held_out([c.sha256 for c in kept], held_out_count(len(kept), min_photos))
    held_out = [HeldOutPhoto(c.name, c.sha256, c.face.embedding) for c in kept if c.sha256 in held_shas]

    items = []
    for number, cand in enumerate([c for c in kept if c.sha256 not in held_shas], start=1):
        crop = aligned_crop(cand.image, cand.face, size=training_size)
        caption = f"a photo of {trigger_word}, {describe_face(cand.face, crop)}"
        items.append(DatasetItem(cand.name, f"{number:03d}", to_png_bytes(crop), caption, cand.face.embedding,
                                 cand.sha256))

    identity = check_identity({c.name: c.face.embedding for c in kept}, threshold=identity_threshold)
    settings = {"min_face_px": min_face_px, "duplicate_distance": duplicate_distance,
                "identity_threshold": identity_threshold}
    manifest = _manifest(trigger_word, training_size, items, dropped, identity, settings)
    if held_out:  # named in the manifest (so in the dataset hash), never in the zip's images
        manifest["held_out"] = [{"source_name": h.name, "source_sha256": h.source_sha256} for h in held_out]
    dataset_hash = hashlib.sha256(canonical_json(manifest).encode()).hexdigest()
    return TrainingDataset(trigger_word, training_size, items, dropped, identity, manifest, dataset_hash, held_out)


def held_out_count(usable: int, min_photos: int | None) -> int:
    """How many usable photos to hold out: ~20%, at least one, only when more than the minimum are usable, and
    never so many that training falls below the minimum."""
    if min_photos is None or usable <= min_photos:
        return 0
    return min(max(1, round(usable * HELD_OUT_SHARE)), usable - min_photos)


def choose_held_out(source_sha256s: Sequence[str], count: int) -> set[str]:
    """Which photos (by content hash) to hold out: the first `count` in an order fixed by their content alone."""
    ranked = sorted(set(source_sha256s), key=lambda sha: hashlib.sha256(f"held-out:{sha}".encode()).hexdigest())
    return set(ranked[:count])


def check_identity(embeddings: dict[str, np.ndarray], *, threshold: float = IDENTITY_THRESHOLD) -> IdentityCheck:
    """Distances of every face to the medoid (the face with the smallest total distance to the others)."""
    if not embeddings:
        return IdentityCheck(None, threshold, {}, [])
    names = sorted(embeddings)
    matrix = np.stack([np.asarray(embeddings[n], dtype=np.float64) for n in names])
    pairwise = np.linalg.norm(matrix[:, None, :] - matrix[None, :, :], axis=-1)
    medoid = int(np.argmin(pairwise.sum(axis=1)))  # argmin takes the first (alphabetical) on ties
    distances = {name: round(float(pairwise[medoid, i]), 4) for i, name in enumerate(names)}
    outliers = sorted(((n, d) for n, d in distances.items() if d > threshold), key=lambda nd: (-nd[1], nd[0]))
    return IdentityCheck(names[medoid], threshold, distances, outliers)


def describe_face(face: DetectedFace, crop: Image.Image) -> str:
    """A short, deterministic caption tail: head pose from the landmarks, colour from the crop."""
    pts = face.landmarks
    jaw_left, jaw_right, nose = pts[0, 0], pts[16, 0], pts[30, 0]
    span = jaw_right - jaw_left
    position = (nose - jaw_left) / span if span > 0 else 0.5
    if position < 0.38:
        pose = "head turned to the left"
    elif position > 0.62:
        pose = "head turned to the right"
    else:
        pose = "facing the camera"
    hsv = np.asarray(crop.convert("HSV"), dtype=np.float32)
    colour = "black and white photo" if float(hsv[..., 1].mean()) < 20 else "color photo"
    return f"head and shoulders portrait, {pose}, {colour}"


def _manifest(
    trigger_word: str,
    training_size: int,
    items: list[DatasetItem],
    dropped: list[DroppedPhoto],
    identity: IdentityCheck,
    settings: dict,
) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "trigger_word": trigger_word,
        "training_size": training_size,
        "settings": settings,
        "items": [
            {
                "source_name": item.name,
                "source_sha256": item.source_sha256,
                "image": f"images/{item.stem}.png",
                "image_sha256": item.image_sha256,
                "caption": f"images/{item.stem}.txt",
                "caption_sha256": item.caption_sha256,
                "caption_text": item.caption,
            }
            for item in items
        ],
        "dropped": [
            {"name": d.name, "reason": d.reason, "detail": d.detail, "source_sha256": d.source_sha256} for d in dropped
        ],
        "identity": {
            "medoid": identity.medoid,
            "threshold": identity.threshold,
            "medoid_distances": identity.distances,
            "outliers": [{"name": n, "distance": d} for n, d in identity.outliers],
            "passed": identity.passed,
        },
    }
