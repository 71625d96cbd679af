"""Managing characters after `character add`: rename, enable or disable LoRAs, add photos, remove.

Adding photos changes the photo set, so the new_characters sensor requests a new training under a new run key.
Disabling stops new trainings and LoRA use (a GPU call already in flight finishes, so re-enabling does not pay for
it twice). Removing deletes the character's rows and, unless kept, its objects under its own prefixes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lora_pipelines.domain.base_models import BASE_MODELS
from lora_pipelines.domain.keys import validate_id
from lora_pipelines.services.characters import refuse_duplicate_name, store_photos, usable_photos
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import Character, CharactersRepository, RemovedRows
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository


class CharacterNotFoundError(LookupError):
    pass


class CharacterBusyError(RuntimeError):
    """Work of this character is in flight; removing it now would pull rows from under a running run."""


def get_character(ctx: PipelineContext, character_id: int) -> Character:
    character = CharactersRepository(ctx.db).get(character_id)
    if character is None:
        raise CharacterNotFoundError(f"character {character_id} does not exist (`lora-pipelines character list` "
                                     "shows the ids)")
    return character


def update_character(ctx: PipelineContext, character_id: int, *, name: str | None = None,
                     lora_enabled: bool | None = None, allow_duplicate_name: bool = False) -> Character:
    """Rename and/or switch LoRAs on or off. The trigger word stays: the character's LoRAs were trained on it."""
    character = get_character(ctx, character_id)
    changes: dict = {}
    if name is not None and name.strip() != character.name:
        if not allow_duplicate_name and name.strip().lower() != character.name.lower():
            refuse_duplicate_name(ctx, name)
        changes["name"] = name
    if lora_enabled is not None and lora_enabled != character.lora_enabled:
        changes["lora_enabled"] = lora_enabled
    if not changes:
        return character
    return CharactersRepository(ctx.db).update(character_id, **changes)


@dataclass(frozen=True)
class AddedPhotos:
    character: Character
    added: list[str]
    already_stored: int
    skipped: list[str]


def add_photos(ctx: PipelineContext, character_id: int, photos: list[Path]) -> AddedPhotos:
    """Check and store more photos; a changed photo set is trained again (new run key)."""
    character = get_character(ctx, character_id)
    intake = usable_photos(photos)
    added = store_photos(ctx, character_id, intake.usable, existing=list(character.photo_keys))
    if added:
        character = CharactersRepository(ctx.db).add_photo_keys(character_id, added)
    return AddedPhotos(character, added, len(intake.usable) - len(added), intake.skipped)


@dataclass(frozen=True)
class Removal:
    character: Character
    rows: RemovedRows
    deleted_objects: int
    kept_objects: int


def object_prefixes(character_id: int, job_ids: list[int]) -> list[str]:
    """Every prefix holding this character's objects, '/'-terminated so character 1 never matches character 12."""
    cid = validate_id(str(character_id), "character id")
    prefixes = [f"characters/{cid}/"]
    for base_model in BASE_MODELS:
        prefixes += [f"loras/{base_model}-character-{cid}/", f"datasets/{base_model}-character-{cid}/"]
    prefixes += [f"generations/{int(job_id)}/" for job_id in job_ids]
    return prefixes


def remove_character(ctx: PipelineContext, character_id: int, *, keep_files: bool = False) -> Removal:
    """Delete the character's rows (LoRAs, generation jobs, training states) and, unless `keep_files`, its photos,
    datasets, LoRA files and generated images. Refused while one of its trainings or generations is running."""
    character = get_character(ctx, character_id)
    training = [r for r in LoraModelsRepository(ctx.db).find_by_character_id(character_id) if r.status == "training"]
    if training:
        busy = ", ".join(f"lora_models {r.id} ({r.base_model})" for r in training)
        raise CharacterBusyError(
            f"character {character_id} has trainings in flight ({busy}); run `lora-pipelines character update "
            f"{character_id} --no-lora-enabled` and remove it once they end")
    running = GenerationJobsRepository(ctx.db).list(status="running", character_id=character_id, limit=20)
    if running:
        raise CharacterBusyError(f"character {character_id} has running generation jobs "
                                 f"({', '.join(str(j.id) for j in running)}); remove it once they end")
    rows = CharactersRepository(ctx.db).remove(character_id)  # rows first: no row ever names a deleted object
    keys = [info.key for prefix in object_prefixes(character_id, rows.generation_job_ids)
            for info in ctx.store.list(prefix)]
    if not keep_files:
        for key in keys:
            ctx.store.delete(key)
    return Removal(character, rows, 0 if keep_files else len(keys), len(keys) if keep_files else 0)
