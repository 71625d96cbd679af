"""The simulated service's quality model: how much of the character a generated face carries.

This is the one place the simulator decides likeness; the pipeline's checks measure what it produces with real
recognisers (dlib and SFace), so nothing here is a score, only a mix of pixels.

A generated face is a mix of two aligned faces, `w * learned + (1 - w) * nobody`:
  learned  what the LoRA learned: a blend of two of its training crops (never one photo as it was), or, for face
           swap, the reference photo's face;
  nobody   a face from the "nobody" pool (sim_gpu/nobody.py), never any character's.
Then the face is varied (pose, light, blur) and pasted into a scene (sim_gpu/images.py).

LoRA generations: w = quality(LoRA) * strength, plus a little per-image noise (sd NOISE), where

  quality  = data * training * capacity
  data     = 1 - exp(-n_eff / 2)           n_eff = 1 + (photos - 1) * diversity: near-duplicate photos teach
                                             little more than one; 1 photo 0.39, 3 diverse 0.78, 5 diverse 0.92
  diversity = min(1, mean pairwise dlib distance of the training faces / 0.4)   (same person, different photos:
                                             about 0.4; re-encoded copies: under 0.15)
  training = 1 - exp(-steps / 300)         1000 steps 0.96, 300 steps 0.63, 100 steps 0.28
  capacity = min(1, log2(1 + rank) / 4)    rank 16 and up 1.0, rank 8 0.79, rank 4 0.58, rank 1 0.25
  strength = strength_model clipped to [0, 1] (a LoRA at half strength carries about half of it)

and w = 0 when the LoRA is not applied: not triggered (the trigger word is not in the prompt), strength <= 0, or
ignored (made for another base model). Measured on ../shared/faces with dlib and SFace: the generated face matches
its person (dlib <= 0.6, SFace >= 0.363) from about w = 0.65 (dlib) and w = 0.7 (SFace); below w = 0.55 neither
recogniser matches.

Face swap: w = 0.95 * swap_quality(reference photo), where
  swap_quality = size * sharpness * pose
  size      = clip((face px - 40) / 110, 0, 1)       a small face is upscaled into mush
  sharpness = clip(laplacian variance / 40, 0, 1)    of the aligned 128 px grey crop: a blurred photo loses detail
  pose      = 1 - 0.7 * |yaw|                        a turned head gives the swap model less face to work with
and the swapped output is degraded more than a LoRA image (sim_gpu/images.py "swap").

Standard generation, an untriggered or ignored LoRA, and a failed swap show a nobody face (w = 0).

Over-training: past COPYING_FROM_STEPS_PER_PHOTO steps per training photo a LoRA starts to reproduce its photos, an
image being one of its training photos as it was (the LoRA file carries them, at most 384 px a side; sim_gpu/images.py
"copy") with probability

  copy_rate = clip((steps / photos - 350) / (700 - 350), 0, 1)

so 1000 steps on 3 photos or more never copy, 1000 steps on one photo always do. With `training` above, this is
what makes a training's checkpoints differ: under-trained early, copying when over-trained (issue 18's
best-checkpoint choice is tested against it). A copy is a near copy of its training photo to SFace (FaceSim 0.92 to
0.99 on ../shared/faces, where a generated face blended from two crops scores at most 0.87), so held-out likeness,
which scores a face at 0.9 or more to a training photo as 0, catches them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

NOISE = 0.04  # per-image spread of w: two images of one LoRA are never equally good
COPYING_FROM_STEPS_PER_PHOTO = 350.0
ALL_COPIES_STEPS_PER_PHOTO = 700.0
DIVERSITY_DISTANCE = 0.4
STEPS_SCALE = 300.0


@dataclass(frozen=True)
class LoraTraits:
    """What the quality of a trained LoRA depends on, as its file records it."""

    photos: int
    diversity: float  # 0..1
    steps: int
    rank: int


def diversity(descriptors: list[np.ndarray]) -> float:
    """0..1 from the mean pairwise dlib distance of the training faces (0 for fewer than two)."""
    if len(descriptors) < 2:
        return 0.0
    matrix = np.stack(descriptors).astype(np.float64)
    pairwise = np.linalg.norm(matrix[:, None, :] - matrix[None, :, :], axis=-1)
    mean = float(pairwise[np.triu_indices(len(matrix), k=1)].mean())
    return min(1.0, mean / DIVERSITY_DISTANCE)


def lora_quality(traits: LoraTraits) -> float:
    """0..1: how much of the character a fully applied LoRA carries."""
    if traits.photos <= 0:
        return 0.0
    n_eff = 1 + (traits.photos - 1) * max(0.0, min(1.0, traits.diversity))
    data = 1 - math.exp(-n_eff / 2)
    training = 1 - math.exp(-max(0, traits.steps) / STEPS_SCALE)
    capacity = min(1.0, math.log2(1 + max(0, traits.rank)) / 4)
    return data * training * capacity


def lora_weight(traits: LoraTraits, *, strength: float, applied: bool) -> float:
    """w of a LoRA generation before the per-image noise."""
    if not applied or strength <= 0:
        return 0.0
    return lora_quality(traits) * min(1.0, strength)


def copy_rate(traits: LoraTraits) -> float:
    """0..1: the chance that an image of this LoRA is one of its training photos as it was (over-training)."""
    if traits.photos <= 0:
        return 0.0
    per_photo = max(0, traits.steps) / traits.photos
    span = ALL_COPIES_STEPS_PER_PHOTO - COPYING_FROM_STEPS_PER_PHOTO
    return min(1.0, max(0.0, (per_photo - COPYING_FROM_STEPS_PER_PHOTO) / span))


def swap_quality(*, face_px: int, sharpness: float, yaw: float) -> float:
    """0..1: how well a face-swap model can carry the reference photo's face."""
    size = min(1.0, max(0.0, (face_px - 40) / 110))
    sharp = min(1.0, max(0.0, sharpness / 40))
    pose = 1 - 0.7 * min(1.0, abs(yaw))
    return size * sharp * pose


def swap_weight(*, face_px: int, sharpness: float, yaw: float) -> float:
    return 0.95 * swap_quality(face_px=face_px, sharpness=sharpness, yaw=yaw)


def with_noise(weight: float, rng: random.Random) -> float:
    """One image's w: the model's w plus a little noise, in [0, 1]; exactly 0 stays 0 (nothing was applied)."""
    if weight <= 0:
        return 0.0
    return min(1.0, max(0.0, weight + rng.gauss(0.0, NOISE)))


def mix(learned: np.ndarray, nobody: np.ndarray | None, weight: float) -> np.ndarray:
    """`weight * learned + (1 - weight) * nobody` (aligned crops of one size); without a nobody face, learned."""
    if nobody is None or weight >= 1:
        return learned
    if nobody.shape != learned.shape:
        from PIL import Image

        nobody = np.asarray(Image.fromarray(nobody).resize((learned.shape[1], learned.shape[0])))
    mixed = weight * learned.astype(np.float32) + (1 - weight) * nobody.astype(np.float32)
    return np.clip(mixed, 0, 255).astype(np.uint8)
