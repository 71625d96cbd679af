"""A character's LoRA versions: which one generation uses, the quality gate, and activating one by hand.

The rules are in domain/lora_versions.py; activations (with who, when and why) in store/lora_activations.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lora_pipelines.domain.lora_versions import GateDecision
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_activations import LoraActivation, LoraActivationsRepository
from lora_pipelines.store.lora_models import LoraModel, LoraModelsRepository
from lora_pipelines.store.rows import RecordNotFoundError


@dataclass(frozen=True)
class LoraVersion:
    lora: LoraModel
    active: bool
    pinned: bool  # by a pending or running generation job

    def as_dict(self) -> dict:
        r = self.lora
        return {"id": r.id, "base_model": r.base_model, "status": r.status, "active": self.active,
                "pinned": self.pinned, "validation_score": r.validation_score,
                "chosen_step": (r.validation or {}).get("chosen_step"), "gate_reason": r.gate_reason,
                "finished_at": _iso(r.finished_at), "archived_at": _iso(r.archived_at), "model_path": r.model_path,
                "error": r.error}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def list_versions(ctx: PipelineContext, character_id: int) -> list[LoraVersion]:
    """Every LoRA of the character, oldest first, with which one is in use per base model."""
    if CharactersRepository(ctx.db).get(character_id) is None:
        raise RecordNotFoundError(f"character {character_id} does not exist")
    rows = LoraModelsRepository(ctx.db).find_by_character_id(character_id)
    active = set(LoraActivationsRepository(ctx.db).active_ids([character_id]).values())
    pinned = GenerationJobsRepository(ctx.db).pinned_lora_ids()
    return [LoraVersion(r, r.id in active, r.id in pinned) for r in rows]


def activation_history(ctx: PipelineContext, character_id: int, limit: int = 20) -> list[LoraActivation]:
    return LoraActivationsRepository(ctx.db).history(character_id, limit=limit)


def activate(ctx: PipelineContext, lora_model_id: int, *, by: str, reason: str) -> LoraActivation:
    """Roll back or forward: this ready LoRA is used from now on for its character and base model."""
    return LoraActivationsRepository(ctx.db).activate(lora_model_id, by=by, reason=reason)


def apply_quality_gate(ctx: PipelineContext, lora_model_id: int) -> tuple[GateDecision, LoraModel]:
    """Decide once whether a LoRA that just became ready replaces the one in use (the decision is on the row)."""
    return LoraActivationsRepository(ctx.db).gate(lora_model_id, ctx.settings.lora_gate_tolerance)


def active_lora_id(ctx: PipelineContext, character_id: int, base_model: str) -> int | None:
    return LoraActivationsRepository(ctx.db).active_id(character_id, base_model)
