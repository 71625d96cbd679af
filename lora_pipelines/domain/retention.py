"""Which ready LoRAs retention archives: never one in use, only those idle for longer than the configured age.

A LoRA is kept when it is the active one of its character and base model, when a pending or running job pinned it,
or when it was in use less than `max_age` ago. "In use until" is the moment something replaced it: the activation
after the last one naming it, or (before any activation, when the newest ready LoRA is the one used) the moment a
newer LoRA of the same base model became ready. Every moment counted is a lower bound of the real last use, taken
as late as the records allow, so a LoRA is archived later rather than sooner.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

ACTIVE, PINNED, RECENT, ARCHIVE = "active", "pinned", "recent", "archive"


@dataclass(frozen=True)
class RetentionLora:
    id: int
    character_id: int
    base_model: str
    finished_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Activation:
    character_id: int
    base_model: str
    lora_model_id: int
    created_at: datetime


@dataclass(frozen=True)
class RetentionDecision:
    lora: RetentionLora
    action: str  # ACTIVE | PINNED | RECENT (kept) or ARCHIVE
    idle_since: datetime | None  # when it was last in use (None: in use now)

    @property
    def archive(self) -> bool:
        return self.action == ARCHIVE


def _ready_at(lora: RetentionLora) -> datetime:
    return lora.finished_at or lora.created_at


def idle_since(lora: RetentionLora, pair: Sequence[RetentionLora], activations: Sequence[Activation]) -> datetime:
    """When this (not active) LoRA was last in use, from its own pair's LoRAs and activations (oldest first)."""
    moments = [_ready_at(lora)]
    named = [i for i, a in enumerate(activations) if a.lora_model_id == lora.id]
    if named and named[-1] + 1 < len(activations):
        moments.append(activations[named[-1] + 1].created_at)
    first_activation = activations[0].created_at if activations else None
    newer = [_ready_at(other) for other in pair if other.id != lora.id and _ready_at(other) >= _ready_at(lora)]
    if newer:  # used as the newest ready LoRA until a newer one arrived (or until the first activation)
        superseded = min(newer)
        moments.append(superseded if first_activation is None else min(superseded, first_activation))
    return max(moments)


def plan_retention(loras: Iterable[RetentionLora], activations: Iterable[Activation], active_ids: set[int],
                   pinned_ids: set[int], *, now: datetime, max_age: timedelta) -> list[RetentionDecision]:
    """A decision for every ready LoRA given (those of a character and base model should all be given)."""
    if max_age <= timedelta(0):
        raise ValueError(f"max_age must be positive, got {max_age}")
    loras = list(loras)
    pairs: dict[tuple[int, str], list[RetentionLora]] = {}
    for lora in loras:
        pairs.setdefault((lora.character_id, lora.base_model), []).append(lora)
    logs: dict[tuple[int, str], list[Activation]] = {}
    for activation in activations:
        logs.setdefault((activation.character_id, activation.base_model), []).append(activation)
    decisions = []
    for lora in loras:
        key = (lora.character_id, lora.base_model)
        if lora.id in active_ids:
            decisions.append(RetentionDecision(lora, ACTIVE, None))
            continue
        since = idle_since(lora, pairs[key], sorted(logs.get(key, []), key=lambda a: a.created_at))
        if lora.id in pinned_ids:
            action = PINNED
        else:
            action = ARCHIVE if now - since > max_age else RECENT
        decisions.append(RetentionDecision(lora, action, since))
    return decisions
