"""Enqueueing generation requests, with a job's own LoRA strength and pinned LoRA checked before anything runs.

Everything a request asks for is refused here, with one line, rather than failing later in a worker: an unknown
model, a strength outside 0..2, a pin on a LoRA that is not this character's, not ready, or of another base model.
"""

from __future__ import annotations

from lora_pipelines.domain.model_registry import get_model
from lora_pipelines.domain.prompts import apply_trigger_word
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository, PinRefused, check_strength
from lora_pipelines.store.rows import RecordNotFoundError


class GenerationRequestError(ValueError):
    """A generation request that is refused at enqueue."""


def enqueue_generations(ctx: PipelineContext, character_id: int, model: str, prompt: str, count: int = 1, *,
                        strength: float | None = None, lora_id: int | None = None) -> list[int]:
    """Pending job ids; GenerationRequestError (one line) for anything the request cannot get."""
    try:
        entry = get_model(model)
        apply_trigger_word(prompt, None)  # the prompt rules, checked once here
        check_strength(strength)
    except ValueError as exc:
        raise GenerationRequestError(str(exc)) from None
    if (strength is not None or lora_id is not None) and not entry.supports_lora:
        asked = "--lora" if lora_id is not None else "--strength"
        raise GenerationRequestError(f"model {model} does not apply LoRAs, so {asked} cannot be used with it")
    if CharactersRepository(ctx.db).get(character_id) is None:
        raise GenerationRequestError(f"character {character_id} does not exist")
    try:
        return GenerationJobsRepository(ctx.db).enqueue(character_id, model, prompt, count=count, strength=strength,
                                                       lora_model_id=lora_id, base_model=entry.base_model)
    except (PinRefused, RecordNotFoundError) as exc:  # (or the character went away in between)
        raise GenerationRequestError(str(exc)) from None
