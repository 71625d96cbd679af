"""What new_characters tells the UI besides its run requests: each changed character's training state as an
observation on its partitions (name, state, reason), a log line and skip reason per character, and the partitions
of removed characters to delete."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from lora_pipelines.partitions import partition_key
from lora_pipelines.planning.training import CharacterCursor
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.training_state import training_states
from lora_pipelines.store.characters import CharactersRepository

OBSERVED_ASSETS = ("training_dataset",)  # the first asset of the lineage; one event per partition keeps ticks small
NAME_TAG = "lora_pipelines/character_name"
MAX_TAG_NAME = 100


@dataclass
class PartitionNotes:
    observations: list[dg.AssetObservation] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)

    def skip_reason(self) -> str | None:
        return "; ".join(self.log_lines)[:1000] or None


def partition_notes(ctx: PipelineContext, cursor: CharacterCursor, *, existing: set[str], added: list[str],
                    requested: set[tuple[int, str]], limit: int = 500) -> PartitionNotes:
    """Observations and log lines for the characters changed since `cursor` (the same page planning read)."""
    changed = CharactersRepository(ctx.db).changed_since(cursor.updated_at, cursor.id, limit=limit)
    notes = PartitionNotes(names={c.id: c.name for c in changed})
    visible = [c for c in changed if str(c.id) in existing or str(c.id) in added]
    for character in changed:
        if not character.lora_enabled and str(character.id) not in existing:
            notes.log_lines.append(f"character {character.id} {character.name!r}: LoRA disabled, nothing to train")
    for character_id, states in training_states(ctx, visible).items():
        name = notes.names[character_id]
        for state in states:
            if state.base_model not in ctx.settings.train_base_model_list:
                continue
            key = partition_key(character_id, state.base_model)
            metadata = {"character": f"{character_id} {name}", "character_id": character_id, "state": state.state,
                        "reason": state.reason}
            if state.usable_photos is not None:
                metadata["usable_photos"] = state.usable_photos
                metadata["required_photos"] = state.required_photos or 0
            if (character_id, state.base_model) in requested:
                metadata["state"], metadata["reason"] = "queued", "training run requested by new_characters"
            notes.observations.extend(dg.AssetObservation(asset_key=asset, partition=key, metadata=metadata)
                                      for asset in OBSERVED_ASSETS)
            if (character_id, state.base_model) not in requested:
                notes.log_lines.append(f"character {character_id} {name!r} {state.base_model}: {state.state}: "
                                       f"{state.reason}")
    return notes


def removed_partitions(ctx: PipelineContext, keys: list[str]) -> list[str]:
    """Character partitions whose character no longer exists (`character remove`)."""
    ids = [int(k) for k in keys if k.isdigit()]
    alive = {str(i) for i in CharactersRepository(ctx.db).existing_ids(ids)}
    return [k for k in keys if k.isdigit() and k not in alive]
