"""Held-out likeness of a set of generated images: what a checkpoint (or a LoRA) is judged by.

FaceSim (SFace cosine similarity, as identity papers report it) of each image's best face to the nearest held-out
photo (one the LoRA never saw), averaged over the images. An image whose face is a near copy of a training photo
scores 0 (memorising a photo is not likeness), as does an image without a face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lora_pipelines.faces.images import ImageDecodeError
from lora_pipelines.faces.recognisers import ImageInput, Recogniser, SFaceRecogniser, nearest_score

NEAR_COPY_FACESIM = 0.9  # SFace cosine to a training photo at or above which a face is that photo coming back


@dataclass(frozen=True)
class LikenessScore:
    mean: float  # mean FaceSim to the held-out photos, near copies and faceless images counted as 0
    images: int
    faces_found: int
    near_copies: int
    matches: int  # images at or above the recogniser's same-person threshold (near copies excluded)
    per_image: list[float | None] = field(default_factory=list)  # FaceSim of each image; None without a face

    @property
    def match_rate(self) -> float | None:
        return None if self.images == 0 else self.matches / self.images


def heldout_likeness(images: Sequence[ImageInput], heldout_refs: Sequence[np.ndarray],
                     training_refs: Sequence[np.ndarray] = (), *, recogniser: Recogniser | None = None,
                     near_copy: float = NEAR_COPY_FACESIM) -> LikenessScore:
    """Score `images` (PIL images or bytes) against SFace embeddings of held-out photos, penalising near copies of
    the training photos (`training_refs`, SFace embeddings too). ValueError without held-out references."""
    if len(heldout_refs) == 0:
        raise ValueError("heldout_likeness needs at least one held-out reference embedding")
    recogniser = recogniser or SFaceRecogniser()
    if recogniser.metric != "cosine":
        raise ValueError(f"heldout_likeness is a FaceSim (cosine) score; the {recogniser.name} recogniser is not")
    per_image: list[float | None] = []
    total, faces_found, copies, matches = 0.0, 0, 0, 0
    for index, image in enumerate(images):
        try:
            faces = recogniser.embed(image, name=f"image {index}")
        except ImageDecodeError:
            faces = []
        if not faces:
            per_image.append(None)
            continue
        faces_found += 1
        score, best = max(((nearest_score(recogniser, f.vector, heldout_refs), f) for f in faces),
                          key=lambda scored: scored[0])
        per_image.append(round(score, 4))
        if len(training_refs) and nearest_score(recogniser, best.vector, training_refs) >= near_copy:
            copies += 1
            continue
        total += score
        matches += recogniser.is_match(score)
    count = len(per_image)
    return LikenessScore(mean=total / count if count else 0.0, images=count, faces_found=faces_found,
                         near_copies=copies, matches=matches, per_image=per_image)
