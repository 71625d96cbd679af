"""Training checkpoints: which steps a training saves, where each is kept, and which one is published.

A training with `count` checkpoints saves every ceil(steps / count) steps and at the end (ai-toolkit's
`save_every`: `{name}_{step:09d}.safetensors` at each multiple below `steps`, `{name}.safetensors` at the end).
Each is scored on a few sample images; the best likeness is published (ties go to the earlier step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lora_pipelines.domain.keys import InvalidIdError, validate_key

MAX_CHECKPOINTS = 10


def save_every(steps: int, count: int) -> int:
    if not 1 <= count <= MAX_CHECKPOINTS:
        raise ValueError(f"checkpoints must be between 1 and {MAX_CHECKPOINTS}, got {count}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return max(1, math.ceil(steps / count))


def checkpoint_steps(steps: int, count: int) -> list[int]:
    """The steps a training with `count` checkpoints saves at, the last being `steps` itself."""
    every = save_every(steps, count)
    return [*range(every, steps, every), steps]


def checkpoint_key(lora_file_key: str, step: int) -> str:
    """`loras/{model}-character-{id}/{jobId}.step{step:06d}.safetensors`, beside the LoRA's own key."""
    validate_key(lora_file_key)
    if not lora_file_key.endswith(".safetensors") or not 1 <= step <= 999_999:
        raise InvalidIdError(f"no checkpoint key for {lora_file_key[:60]!r} at step {step}")
    return f"{lora_file_key.removesuffix('.safetensors')}.step{step:06d}.safetensors"


def best_step(scores: Sequence[tuple[int, float | None]]) -> int | None:
    """The step with the highest score, the earlier one on a tie (the same likeness with less over-fitting);
    None when nothing was scored."""
    scored = [(score, -step) for step, score in scores if score is not None]
    return -max(scored)[1] if scored else None
