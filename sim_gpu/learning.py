"""How much of a face a simulated LoRA has learned at a training step: under-trained early, copying when over-trained.

A real LoRA's likeness grows with the steps it trains per photo, then it starts to reproduce its training photos
(over-fitting). The simulated service keeps that shape on a compressed scale, so a test trains in a hundred steps:

    learned    = min(1, steps per photo / FULL_LIKENESS_STEPS_PER_PHOTO)
                 the share of the character in a generated face; the rest is someone else (a crowd face, or with
                 no crowd a featureless version of the face), so an under-trained LoRA shows a weaker likeness
    copy rate  = 0 up to COPYING_FROM_STEPS_PER_PHOTO, rising linearly to 1 at ALL_COPIES_STEPS_PER_PHOTO
                 the chance that an image is one training crop reproduced as it was (a near-copy, not a likeness)

Both are written into each checkpoint's file (`sim.learned`, `sim.copy_rate`) when it is saved, and the service
renders what the file says. With the defaults (1000 steps, 5 photos, 4 checkpoints) the middle checkpoints are the
best: the first already knows the face, the last copies photos; at the tests' 100 steps the last one is best.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_LIKENESS_STEPS_PER_PHOTO = 10.0
COPYING_FROM_STEPS_PER_PHOTO = 100.0
ALL_COPIES_STEPS_PER_PHOTO = 250.0
LEARNED_KEY = "sim.learned"
COPY_RATE_KEY = "sim.copy_rate"


@dataclass(frozen=True)
class Stage:
    learned: float  # 0..1
    copy_rate: float  # 0..1

    def metadata(self) -> dict[str, str]:
        return {LEARNED_KEY: f"{self.learned:.4f}", COPY_RATE_KEY: f"{self.copy_rate:.4f}"}


FULLY_LEARNED = Stage(1.0, 0.0)  # a LoRA without the simulator's keys


def stage(steps: int, photos: int) -> Stage:
    per_photo = steps / max(1, photos)
    learned = min(1.0, per_photo / FULL_LIKENESS_STEPS_PER_PHOTO)
    span = ALL_COPIES_STEPS_PER_PHOTO - COPYING_FROM_STEPS_PER_PHOTO
    copy_rate = min(1.0, max(0.0, (per_photo - COPYING_FROM_STEPS_PER_PHOTO) / span))
    return Stage(round(learned, 4), round(copy_rate, 4))


def stage_of(metadata: dict[str, str]) -> Stage:
    """What a file says; a LoRA from elsewhere (no keys) is fully learned and never copies."""

    def read(key: str, default: float) -> float:
        try:
            return min(1.0, max(0.0, float(metadata.get(key, default))))
        except (TypeError, ValueError):
            return default

    if LEARNED_KEY not in metadata and COPY_RATE_KEY not in metadata:
        return FULLY_LEARNED
    return Stage(read(LEARNED_KEY, 1.0), read(COPY_RATE_KEY, 0.0))
