"""Scoring a LoRA checkpoint's sample images for likeness, behind one small interface.

A scorer turns the sample images of one checkpoint into one number, higher is better, comparable between the
checkpoints (and the trainings) of one character. `FaceSimScorer` is FaceSim (SFace cosine) of each image's face to
the nearest reference photo, with a near-copy penalty: an image whose face is as close to a training photo as a
re-encoded copy of it (NEAR_COPY_FACESIM) scores 0, as does an image without a face; the score is the mean.

Which photos are the references is the caller's choice, and is named in `reference`: held-out photos (the training
never saw them) when the character has them, else the training photos themselves (in-sample, said so).

NEAR_COPY_FACESIM 0.88, measured with the simulated service on ../shared/faces (7 people, 8 seeds each): a training
crop reproduced as the whole image scores 0.889-0.974 against its photo, a generated blend of two training crops
0.679-0.867.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

NEAR_COPY_FACESIM = 0.88


@dataclass(frozen=True)
class SampleScores:
    likeness: float | None  # mean over the images that rendered; None when none did
    per_image: list[float | None] = field(default_factory=list)  # None: the image did not render
    faces: int = 0  # images with a face
    near_copies: int = 0

    def as_dict(self) -> dict:
        return {"likeness": None if self.likeness is None else round(self.likeness, 4),
                "per_image": [None if s is None else round(s, 4) for s in self.per_image],
                "faces": self.faces, "near_copies": self.near_copies}


class LikenessScorer(Protocol):
    name: str  # e.g. "facesim-sface"
    reference: str  # what the references are: "held-out photos (n)" or "training photos (n, in-sample)"

    def score(self, images: Sequence[bytes | None]) -> SampleScores:
        """One checkpoint's sample images (None: a sample that failed to render)."""
        ...


class FaceSimScorer:
    """FaceSim to the nearest reference, near-copies of a training photo and faceless images scoring 0."""

    name = "facesim-sface"

    def __init__(self, references: Sequence[np.ndarray], training: Sequence[np.ndarray], *, reference: str,
                 recogniser=None, near_copy: float = NEAR_COPY_FACESIM) -> None:
        from lora_pipelines.faces.recognisers import SFaceRecogniser

        if not references:
            raise ValueError("a likeness scorer needs at least one reference face")
        self.recogniser = recogniser or SFaceRecogniser()
        self.references, self.training = list(references), list(training)
        self.reference, self.near_copy = reference, near_copy
        self._seen: dict[str, tuple[float, bool, bool]] = {}

    @classmethod
    def from_photos(cls, references: Sequence[tuple[str, bytes]], training: Sequence[tuple[str, bytes]], *,
                    reference: str, recogniser=None) -> FaceSimScorer:
        """Embeds the photos (those without one clear face are skipped); ValueError when no reference has one."""
        from lora_pipelines.faces.recognisers import SFaceRecogniser, reference_embeddings

        recogniser = recogniser or SFaceRecogniser()
        refs, _ = reference_embeddings(recogniser, list(references))
        same = [name for name, _ in references] == [name for name, _ in training]
        train = refs if same else reference_embeddings(recogniser, list(training))[0]
        return cls(refs, train, reference=reference, recogniser=recogniser)

    def _one(self, image: bytes) -> tuple[float, bool, bool]:
        """(score, has a face, near copy); an image seen before (checkpoints that render alike) is not re-embedded."""
        digest = hashlib.sha256(image).hexdigest()
        if digest not in self._seen:
            self._seen[digest] = self._embed_and_score(image)
        return self._seen[digest]

    def _embed_and_score(self, image: bytes) -> tuple[float, bool, bool]:
        from lora_pipelines.faces.images import ImageDecodeError
        from lora_pipelines.faces.recognisers import nearest_score

        try:
            faces = self.recogniser.embed(image, name="sample")
        except ImageDecodeError:
            return 0.0, False, False
        if not faces:
            return 0.0, False, False
        vector = faces[0].vector
        if self.training and nearest_score(self.recogniser, vector, self.training) >= self.near_copy:
            return 0.0, True, True
        return max(0.0, nearest_score(self.recogniser, vector, self.references)), True, False

    def score(self, images: Sequence[bytes | None]) -> SampleScores:
        per_image: list[float | None] = []
        faces = copies = 0
        for image in images:
            if image is None:
                per_image.append(None)
                continue
            value, has_face, copy = self._one(image)
            per_image.append(value)
            faces += has_face
            copies += copy
        rendered = [s for s in per_image if s is not None]
        return SampleScores(sum(rendered) / len(rendered) if rendered else None, per_image, faces, copies)
