"""Does a generated image show the character? Scored against the character's own reference faces.

Distance: the candidate face's Euclidean dlib distance to the *nearest* reference face (a new photo
resembles some reference pose better than the average); the distance to the centroid is reported too.
Threshold, per character: the 95th percentile of the pairwise distances among its own reference faces
plus a 0.05 margin, never below 0.5 and never above the global 0.6 (dlib's same-person limit). Fewer than
two reference faces: the global threshold. A character whose photos agree closely is held to a stricter bar.
Near copy: a face closer than near_copy_distance to a reference face is the training photo coming back,
not consistency; it is flagged "near_copy" and does not count as a match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lora_pipelines.faces.embeddings import DetectedFace, FaceAnalyzer
from lora_pipelines.faces.images import ImageDecodeError, decode_image

GLOBAL_THRESHOLD = 0.6
THRESHOLD_FLOOR = 0.5
SPREAD_MARGIN = 0.05
NEAR_COPY_DISTANCE = 0.1


@dataclass(frozen=True)
class CharacterReference:
    embeddings: np.ndarray  # (n, 128) float32
    centroid: np.ndarray  # (128,)
    threshold: float
    near_copy_distance: float
    spread_p95: float | None  # pairwise p95 of the reference faces; None with one face

    @classmethod
    def from_embeddings(
        cls,
        embeddings: Sequence[np.ndarray],
        *,
        global_threshold: float = GLOBAL_THRESHOLD,
        near_copy_distance: float = NEAR_COPY_DISTANCE,
        floor: float = THRESHOLD_FLOOR,
    ) -> CharacterReference:
        if len(embeddings) == 0:
            raise ValueError("a character reference needs at least one face embedding")
        matrix = np.stack([np.asarray(e, dtype=np.float32).reshape(-1) for e in embeddings])
        if matrix.shape[1] != 128:
            raise ValueError(f"face embeddings must have 128 values, got {matrix.shape[1]}")
        spread = None
        threshold = global_threshold
        if len(matrix) >= 2:
            pairwise = np.linalg.norm(matrix[:, None, :] - matrix[None, :, :], axis=-1)
            spread = float(np.percentile(pairwise[np.triu_indices(len(matrix), k=1)], 95))
            threshold = min(global_threshold, max(min(floor, global_threshold), spread + SPREAD_MARGIN))
        return cls(matrix, matrix.mean(axis=0), round(threshold, 4), near_copy_distance, spread)

    def distances(self, embedding: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.embeddings.astype(np.float64) - np.asarray(embedding, dtype=np.float64), axis=1)

    def summary(self) -> dict:
        return {
            "faces": int(len(self.embeddings)),
            "threshold": self.threshold,
            "near_copy_distance": self.near_copy_distance,
            "spread_p95": None if self.spread_p95 is None else round(self.spread_p95, 4),
        }


@dataclass(frozen=True)
class FaceScore:
    distance: float | None  # to the nearest reference face; None without a face
    centroid_distance: float | None
    match: bool
    face_count: int
    threshold: float
    flags: list[str] = field(default_factory=list)  # "no_face" | "several_faces" | "near_copy" | "corrupt"
    box: tuple[int, int, int, int] | None = None
    detail: str | None = None

    def as_dict(self) -> dict:
        return {
            "distance": None if self.distance is None else round(self.distance, 4),
            "centroid_distance": None if self.centroid_distance is None else round(self.centroid_distance, 4),
            "match": self.match,
            "face_count": self.face_count,
            "threshold": self.threshold,
            "flags": list(self.flags),
            "box": list(self.box) if self.box else None,
            "detail": self.detail,
        }


def score_faces(faces: Sequence[DetectedFace], reference: CharacterReference) -> FaceScore:
    """Score the best-matching face among those found; several faces are scored but flagged."""
    if not faces:
        return FaceScore(None, None, False, 0, reference.threshold, ["no_face"])
    best, best_distances = min(((f, reference.distances(f.embedding)) for f in faces), key=lambda fd: fd[1].min())
    distance = float(best_distances.min())
    centroid_distance = float(np.linalg.norm(best.embedding.astype(np.float64) - reference.centroid))
    flags = []
    if len(faces) > 1:
        flags.append("several_faces")
    if distance < reference.near_copy_distance:
        flags.append("near_copy")
    match = distance <= reference.threshold and "near_copy" not in flags
    return FaceScore(distance, centroid_distance, match, len(faces), reference.threshold, flags, best.box)


def corrupt_score(reference: CharacterReference, detail: str) -> FaceScore:
    return FaceScore(None, None, False, 0, reference.threshold, ["corrupt"], detail=detail)


def score_image(
    image: Image.Image | bytes,
    reference: CharacterReference,
    analyzer: FaceAnalyzer,
    *,
    name: str = "image",
    detect_max_side: int | None = 800,
) -> FaceScore:
    """Decode (if bytes), detect and score one generated image; an undecodable image scores as "corrupt"."""
    if isinstance(image, (bytes, bytearray)):
        try:
            image = decode_image(bytes(image), name=name)
        except ImageDecodeError as exc:
            return corrupt_score(reference, str(exc))
    return score_faces(analyzer.analyze(image, detect_max_side=detect_max_side), reference)
