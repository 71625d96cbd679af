"""Scoring a LoRA checkpoint's sample images for likeness, behind one small interface.

A scorer turns the sample images of one checkpoint into one number, higher is better, comparable between the
checkpoints (and the trainings) of one character. `HeldOutScorer` is faces/likeness.py's held-out likeness: FaceSim
(SFace cosine) of each image's face to the nearest reference photo, an image without a face or whose face is a near
copy of a training photo counting 0; the score is the mean over the images that rendered.

Which photos are the references is named in `reference`: the held-out photos (the training never saw them) when the
character has some, else the training photos themselves (in-sample, said so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


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
    name: str  # e.g. "heldout-facesim"
    reference: str  # what the references are: "held-out photos (n)" or "training photos (n, in-sample)"

    def score(self, images: Sequence[bytes | None]) -> SampleScores:
        """One checkpoint's sample images (None: a sample that failed to render)."""
        ...


class HeldOutScorer:
    """faces/likeness.py's held-out likeness, one image at a time (an image seen before is not embedded again:
    checkpoints that render alike cost one scoring)."""

    name = "heldout-facesim"

    def __init__(self, references: Sequence[np.ndarray], training: Sequence[np.ndarray], *, reference: str,
                 recogniser=None) -> None:
        from lora_pipelines.faces.recognisers import SFaceRecogniser

        if len(references) == 0:
            raise ValueError("a likeness scorer needs at least one reference face")
        self.recogniser = recogniser or SFaceRecogniser()
        self.references, self.training, self.reference = list(references), list(training), reference
        self._seen: dict[str, tuple[float, bool, bool]] = {}

    def _one(self, image: bytes) -> tuple[float, bool, bool]:
        """(score, has a face, near copy)."""
        from lora_pipelines.faces.likeness import heldout_likeness

        digest = hashlib.sha256(image).hexdigest()
        if digest not in self._seen:
            one = heldout_likeness([image], self.references, self.training, recogniser=self.recogniser)
            self._seen[digest] = (one.mean, one.faces_found > 0, one.near_copies > 0)
        return self._seen[digest]

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
