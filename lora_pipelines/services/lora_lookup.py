"""`get_lora_for_generation`: the I/O half of LoRA selection (the rules are in domain/lora_selection.py).

The file itself is checked, not only the row: it is fetched once per (key, sha256) per context (a run, or a CLI
command), its checksum verified and its header inspected, and the outcome kept, so a batch pays for one download
per LoRA. Both files of a two-expert pair (Wan 2.2 14B) are checked.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from lora_pipelines.domain.lora_selection import (
    CharacterFacts,
    InspectOutcome,
    LoraCandidate,
    LoraSelection,
    select_lora,
)
from lora_pipelines.domain.model_registry import get_model
from lora_pipelines.domain.safetensors_inspect import InvalidLoraFileError, inspect_lora_file
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.lora_files import StoredFile, file_expert, stored_files
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.lora_activations import LoraActivationsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.objects.files import sha256_of_file

_inspections_lock = threading.Lock()
_file_locks: dict[tuple[str, str], threading.Lock] = {}


def _one_check_at_a_time(cache_key: tuple[str, str]) -> threading.Lock:
    """The jobs of a concurrent batch wait for one check of a file instead of each downloading it."""
    with _inspections_lock:
        return _file_locks.setdefault(cache_key, threading.Lock())


def inspect_stored_lora(ctx: PipelineContext, candidate: LoraCandidate) -> InspectOutcome:
    files = stored_files(candidate)
    cache_key = ("|".join(file.key or "" for file in files), "|".join(file.sha256 or "" for file in files))
    with _one_check_at_a_time(cache_key):
        with _inspections_lock:
            cached = ctx.lora_inspections.get(cache_key)
        if cached is not None and cached.ok and all(ctx.store.exists(file.key) for file in files):
            return cached
        outcome = _inspect_uncached(ctx, candidate, files)
        with _inspections_lock:
            ctx.lora_inspections[cache_key] = outcome
        return outcome


def _inspect_uncached(ctx: PipelineContext, candidate: LoraCandidate, files: list[StoredFile]) -> InspectOutcome:
    """The first file's outcome that fails or shows another base model than the row's, else the primary file's."""
    if not candidate.model_path:
        return InspectOutcome.failure("lora_file_unreachable", "the row has no modelPath")
    outcomes = []
    for file in files:
        outcomes.append(_inspect_file(ctx, file))
        if not outcomes[-1].ok or outcomes[-1].base_model != candidate.base_model:
            return outcomes[-1]
    return outcomes[0]


def _inspect_file(ctx: PipelineContext, file: StoredFile) -> InspectOutcome:
    if not file.key:
        return InspectOutcome.failure("lora_file_unreachable", f"the row records no {file.expert} file")
    with tempfile.TemporaryDirectory(prefix="lora-check-") as tmp:
        local = Path(tmp) / "lora.safetensors"
        try:
            ctx.store.download_file(file.key, local)
        except Exception as exc:  # noqa: BLE001 - any store failure means "unreachable"; the reason is recorded
            return InspectOutcome.failure("lora_file_unreachable", f"{file.key}: {exc.__class__.__name__}: {exc}")
        digest = sha256_of_file(local)
        if digest != file.sha256:
            return InspectOutcome.failure(
                "checksum_mismatch",
                f"{file.key}: sha256 {digest[:12]}… != recorded {str(file.sha256)[:12]}…",
            )
        try:
            inspection = inspect_lora_file(local)
        except InvalidLoraFileError as exc:
            return InspectOutcome.refused(exc, f"{file.key}: ")
    said = file_expert(inspection)
    if file.expert is not None and said not in (None, file.expert):
        return InspectOutcome.failure("lora_file_invalid", f"{file.key}: the file is the {said} expert, "
                                                           f"not {file.expert}")
    return InspectOutcome.success(inspection)  # the whole header: selection compares its identity with the row


def get_lora_for_generation(ctx: PipelineContext, character_id: int, model: str,
                            pinned_id: int | None = None) -> LoraSelection:
    """The LoRA to use for this character and model (the job's pinned one, else the active one), or the reason
    none is used."""
    entry = get_model(model)
    character = CharactersRepository(ctx.db).get(character_id)
    facts = None if character is None else CharacterFacts(id=character.id, lora_enabled=character.lora_enabled)
    # every ready LoRA of the character: selection tells "none ready" from "ready, but for another base model"
    rows = [] if character is None else LoraModelsRepository(ctx.db).find_by_character_id(character_id)
    active = LoraActivationsRepository(ctx.db).active_id(character_id, entry.base_model) if rows else None
    candidates = [
        LoraCandidate(id=r.id, base_model=r.base_model, trigger_word=r.trigger_word, model_path=r.model_path,
                      sha256=r.sha256, finished_at=r.finished_at, second_expert_path=r.second_expert_path,
                      second_expert_sha256=r.second_expert_sha256, character_id=str(r.character_id),
                      dataset_hash=r.dataset_hash, active=r.id == active)
        for r in rows if r.status == "ready"
    ]
    return select_lora(facts, entry, candidates, lambda c: inspect_stored_lora(ctx, c), pinned_id=pinned_id)
