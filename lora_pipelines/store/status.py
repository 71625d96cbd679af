"""Which status moves a row may make. Pure rules, no database.

LoRA models:      pending → training → ready | failed, and pending → failed; ready → archived (retention removed
                  its files; only a LoRA nothing uses is archived, see services/retention.py).
Generation jobs:  pending → running → succeeded | failed, and pending → failed (a job refused before it ran);
                  running → pending only through `requeue_stale` (a worker vanished).
Staying in the same status (to update other fields) is always allowed; everything else is refused.
"""

from __future__ import annotations

from typing import Literal, get_args

LoraStatus = Literal["pending", "training", "ready", "failed", "archived"]
GenerationStatus = Literal["pending", "running", "succeeded", "failed"]
LORA_STATUSES: tuple[str, ...] = get_args(LoraStatus)
GENERATION_STATUSES: tuple[str, ...] = get_args(GenerationStatus)

LORA_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"training", "failed"}),
    "training": frozenset({"ready", "failed"}),
    "ready": frozenset({"archived"}),
    "failed": frozenset(),
    "archived": frozenset(),
}
GENERATION_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "failed"}),
    "running": frozenset({"succeeded", "failed"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
}
# Only the stale-job sweeper may put a running job back in the queue.
GENERATION_REQUEUE: tuple[str, str] = ("running", "pending")


class StatusError(ValueError):
    """Base of the status errors."""


class UnknownStatusError(StatusError):
    """A status value that is not one of the table's statuses."""


class IllegalStatusTransition(StatusError):
    """A move the status rules refuse, e.g. `lora_models 7: training -> pending is not allowed`."""


def validate_lora_status(status: object) -> str:
    if status not in LORA_STATUSES:
        raise UnknownStatusError(f"unknown lora_models status {status!r}; known: {', '.join(LORA_STATUSES)}")
    return status  # type: ignore[return-value]


def validate_generation_status(status: object) -> str:
    if status not in GENERATION_STATUSES:
        raise UnknownStatusError(
            f"unknown generation_jobs status {status!r}; known: {', '.join(GENERATION_STATUSES)}"
        )
    return status  # type: ignore[return-value]


def check_lora_transition(row_id: int, current: str, new: str) -> None:
    """Raise unless a lora_models row may move from `current` to `new`."""
    validate_lora_status(new)
    validate_lora_status(current)
    if new != current and new not in LORA_TRANSITIONS[current]:
        raise IllegalStatusTransition(f"lora_models {row_id}: {current} -> {new} is not allowed")


def check_generation_transition(row_id: int, current: str, new: str, *, requeue: bool = False) -> None:
    """Raise unless a generation_jobs row may move from `current` to `new` (`requeue` is the sweeper's permit)."""
    validate_generation_status(new)
    validate_generation_status(current)
    if new == current or new in GENERATION_TRANSITIONS[current]:
        return
    if requeue and (current, new) == GENERATION_REQUEUE:
        return
    raise IllegalStatusTransition(f"generation_jobs {row_id}: {current} -> {new} is not allowed")
