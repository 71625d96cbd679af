"""Two face recognisers behind one interface, so a face match can be reported by both.

"dlib": dlib's ResNet, Euclidean distance, same person at or below 0.6 (lower is closer).
"sface": OpenCV Zoo's SFace, cosine similarity ("FaceSim"), same person at or above 0.363 (higher is closer).
Embeddings of one recogniser are never compared with the other's: each scores against references it embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from PIL import Image

from lora_pipelines.faces.consistency import GLOBAL_THRESHOLD
from lora_pipelines.faces.embeddings import FaceAnalyzer, default_analyzer, face_distance
from lora_pipelines.faces.images import ImageDecodeError, decode_image
from lora_pipelines.faces.sface import SFACE_THRESHOLD, SFaceAnalyzer, cosine_similarity, default_sface_analyzer

ImageInput = Image.Image | bytes


class NoFaceError(ValueError):
    """An image in which the recogniser found no face."""


@dataclass(frozen=True)
class FaceVector:
    box: tuple[int, int, int, int]  # left, top, right, bottom
    vector: np.ndarray
    detector_score: float


class Recogniser(Protocol):
    name: str  # "dlib" | "sface"
    metric: Literal["distance", "cosine"]  # distance: lower is closer; cosine: higher is closer
    threshold: float

    def embed(self, image: ImageInput, *, name: str = "image") -> list[FaceVector]:
        """Every face, largest first ([] without a face); bytes are decoded (ImageDecodeError if unusable)."""
        ...

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """The recogniser's own comparison of two of its embeddings."""
        ...

    def is_match(self, score: float) -> bool: ...


def _as_image(image: ImageInput, name: str) -> Image.Image:
    if isinstance(image, (bytes, bytearray)):
        return decode_image(bytes(image), name=name)
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name}: expected a PIL image or image bytes, got {type(image).__name__}")
    return image


class _AnalyzerRecogniser:
    """Embedding through an analyzer (detection on a copy at most `detect_max_side` px), judged at `threshold`."""

    def __init__(self, analyzer, *, threshold: float, detect_max_side: int) -> None:
        self.analyzer = analyzer
        self.threshold = threshold
        self.detect_max_side = detect_max_side

    def embed(self, image: ImageInput, *, name: str = "image") -> list[FaceVector]:
        faces = self.analyzer.analyze(_as_image(image, name), detect_max_side=self.detect_max_side)
        return [FaceVector(f.box, f.embedding, f.score) for f in faces]


class DlibRecogniser(_AnalyzerRecogniser):
    name = "dlib"
    metric: Literal["distance", "cosine"] = "distance"

    def __init__(
        self, analyzer: FaceAnalyzer | None = None, *, threshold: float = GLOBAL_THRESHOLD, detect_max_side: int = 800
    ) -> None:
        super().__init__(analyzer or default_analyzer(), threshold=threshold, detect_max_side=detect_max_side)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        return face_distance(a, b)

    def is_match(self, score: float) -> bool:
        return score <= self.threshold


class SFaceRecogniser(_AnalyzerRecogniser):
    name = "sface"
    metric: Literal["distance", "cosine"] = "cosine"

    def __init__(
        self, analyzer: SFaceAnalyzer | None = None, *, threshold: float = SFACE_THRESHOLD, detect_max_side: int = 640
    ) -> None:
        super().__init__(analyzer or default_sface_analyzer(), threshold=threshold, detect_max_side=detect_max_side)

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        return cosine_similarity(a, b)

    def is_match(self, score: float) -> bool:
        return score >= self.threshold


def default_recognisers() -> list[Recogniser]:
    """Both recognisers on this process's shared analyzers."""
    return [DlibRecogniser(), SFaceRecogniser()]


def embed_one(recogniser: Recogniser, image: ImageInput, *, name: str = "image") -> np.ndarray:
    """The largest face's embedding; NoFaceError names the image when there is none."""
    faces = recogniser.embed(image, name=name)
    if not faces:
        raise NoFaceError(f"{name}: no face found by the {recogniser.name} recogniser")
    return faces[0].vector


def reference_embeddings(
    recogniser: Recogniser, photos: Sequence[tuple[str, ImageInput]]
) -> tuple[list[np.ndarray], list[str]]:
    """The largest face of each reference photo, and the names of the photos skipped (unreadable or no face)."""
    vectors, skipped = [], []
    for photo_name, image in photos:
        try:
            vectors.append(embed_one(recogniser, image, name=photo_name))
        except (ImageDecodeError, NoFaceError):
            skipped.append(photo_name)
    return vectors, skipped


def nearest_score(recogniser: Recogniser, vector: np.ndarray, references: Sequence[np.ndarray]) -> float:
    """The score against the closest reference (smallest distance, largest cosine)."""
    if len(references) == 0:
        raise ValueError("nearest_score needs at least one reference embedding")
    scores = [recogniser.score(vector, ref) for ref in references]
    return min(scores) if recogniser.metric == "distance" else max(scores)


@dataclass(frozen=True)
class FaceMatch:
    recogniser: str
    metric: str
    score: float | None  # nearest reference, best face; None without a face
    threshold: float
    match: bool
    face_count: int
    flags: list[str] = field(default_factory=list)  # "no_face" | "several_faces" | "corrupt"
    box: tuple[int, int, int, int] | None = None
    detail: str | None = None

    def as_dict(self) -> dict:
        return {
            "recogniser": self.recogniser,
            "metric": self.metric,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": self.threshold,
            "match": self.match,
            "face_count": self.face_count,
            "flags": list(self.flags),
            "box": list(self.box) if self.box else None,
            "detail": self.detail,
        }


def face_match(
    recogniser: Recogniser, image: ImageInput, references: Sequence[np.ndarray], *, name: str = "image"
) -> FaceMatch:
    """Does image show the person of references (embedded by the same recogniser)? Never raises on a bad image."""
    try:
        faces = recogniser.embed(image, name=name)
    except ImageDecodeError as exc:
        return FaceMatch(
            recogniser.name, recogniser.metric, None, recogniser.threshold, False, 0, ["corrupt"], detail=str(exc)
        )
    if not faces:
        return FaceMatch(recogniser.name, recogniser.metric, None, recogniser.threshold, False, 0, ["no_face"])
    scored = [(nearest_score(recogniser, f.vector, references), f) for f in faces]
    best_score, best = (min if recogniser.metric == "distance" else max)(scored, key=lambda sf: sf[0])
    flags = ["several_faces"] if len(faces) > 1 else []
    return FaceMatch(
        recogniser.name,
        recogniser.metric,
        best_score,
        recogniser.threshold,
        recogniser.is_match(best_score),
        len(faces),
        flags,
        best.box,
    )


def face_matches(
    image: ImageInput,
    references: dict[str, Sequence[np.ndarray]],
    recognisers: Sequence[Recogniser] | None = None,
    *,
    name: str = "image",
) -> dict[str, FaceMatch]:
    """One FaceMatch per recogniser; references maps each recogniser's name to the embeddings it made.

    Bytes are decoded once, so a corrupt image is reported as "corrupt" by every recogniser.
    """
    recognisers = list(recognisers) if recognisers is not None else default_recognisers()
    missing = [r.name for r in recognisers if r.name not in references]
    if missing:
        raise ValueError(f"no reference embeddings for the {', '.join(missing)} recogniser(s)")
    if isinstance(image, (bytes, bytearray)):
        try:
            image = decode_image(bytes(image), name=name)
        except ImageDecodeError as exc:
            return {
                r.name: FaceMatch(r.name, r.metric, None, r.threshold, False, 0, ["corrupt"], detail=str(exc))
                for r in recognisers
            }
    return {r.name: face_match(r, image, references[r.name], name=name) for r in recognisers}
