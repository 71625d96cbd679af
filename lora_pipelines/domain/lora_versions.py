"""Which of a character's ready LoRAs for a base model generation uses, and whether a new one takes over.

The active LoRA is the one the newest activation names (the quality gate's, or a person's `lora activate`) while it
is ready; with no activation at all, the newest ready LoRA, as the spec says.

The quality gate: a new LoRA becomes active only when its validation score (the best checkpoint's likeness) is at
least the active one's minus GATE_TOLERANCE; otherwise it stays ready but not active, and the row says why. With
no score on either side there is nothing to compare: the newest ready LoRA is used.

GATE_TOLERANCE is 0.03 FaceSim (cosine): a score is the mean of a few sample images, and on the simulated service
the same LoRA scored on different seeds moves by about that much (per-image spread ~0.05, four samples), so a
retrain of the same quality is not refused for noise, while a LoRA that is clearly worse is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

GATE_TOLERANCE = 0.03


@dataclass(frozen=True)
class Version:
    """A ready LoRA of one character and base model, as the rules see it."""

    id: int
    finished_at: datetime | None
    validation_score: float | None = None


@dataclass(frozen=True)
class GateDecision:
    activate: bool
    reason: str
    active_id: int | None  # the LoRA in use before the decision
    active_score: float | None
    new_score: float | None
    tolerance: float


def newest(versions: Sequence[Version]) -> Version | None:
    """The most recently finished (then highest id): `find_ready_by_character_id`'s order."""
    if not versions:
        return None
    return max(versions, key=lambda v: (v.finished_at is not None, v.finished_at.timestamp() if v.finished_at else 0.0,
                                        v.id))


def active_version(ready: Sequence[Version], activated_id: int | None) -> Version | None:
    """The ready LoRA in use: the one the newest activation names while it is ready, else the newest ready."""
    for version in ready:
        if version.id == activated_id:
            return version
    return newest(ready)


def _score(value: float | None) -> str:
    return "no score" if value is None else f"{value:.3f}"


def gate(new: Version, active: Version | None, tolerance: float = GATE_TOLERANCE) -> GateDecision:
    """Does `new` replace `active` (the LoRA in use before `new` became ready)?"""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")

    def decision(activate: bool, reason: str) -> GateDecision:
        return GateDecision(activate, reason, active.id if active else None,
                            active.validation_score if active else None, new.validation_score, tolerance)

    if active is None:
        return decision(True, "the first ready LoRA for this base model")
    if new.validation_score is None or active.validation_score is None:
        return decision(True, f"no scores to compare (new {_score(new.validation_score)}, active LoRA {active.id} "
                              f"{_score(active.validation_score)}): the newest ready LoRA is used")
    if new.validation_score >= active.validation_score - tolerance:
        return decision(True, f"validation score {new.validation_score:.3f} is at least active LoRA {active.id}'s "
                              f"{active.validation_score:.3f} minus the tolerance {tolerance:g}")
    return decision(False, f"validation score {new.validation_score:.3f} is below active LoRA {active.id}'s "
                           f"{active.validation_score:.3f} by more than the tolerance {tolerance:g}; "
                           f"`lora-pipelines lora activate {new.id}` uses it anyway")
