"""Whether a generation uses the character's LoRA, and if not, why (a stable reason code).

A LoRA is used only when all hold, checked in this order:
  1. the character exists and has loraEnabled             else character_not_found / lora_disabled
  2. the model's registry entry supports LoRA             else model_does_not_support_lora
  3. the character has a ready LoRA                       else no_ready_lora
  4. one is ready for the model's family                  else base_model_mismatch (no ready LoRA for this family)
     the candidate: the job's pinned LoRA when it pinned one (else pinned_lora_unavailable), otherwise the active
     one (domain/lora_versions.py: the newest activation's, or with none the most recent ready)
  5. its file can be fetched, matches the recorded sha256 and is a valid safetensors file (every file of a
     two-expert pair, each the expert it should be)
                                                          else lora_file_unreachable / checksum_mismatch /
                                                               lora_file_invalid
  6. the FILE's base model (from its header) is the model's family, since ComfyUI silently ignores a LoRA
     made for another model (one for a family we do not run, e.g. FLUX.2, names it)
                                                          else base_model_mismatch
  7. the file does not name another character, trigger word or dataset than the row (domain/lora_identity.py)
                                                          else lora_identity_mismatch
     A file naming no character (trained elsewhere) is used on the row's trigger word, `identity` "unverified".

When the active LoRA for the family is broken we report it and do not fall back to an older one: an older LoRA is
a superseded training (often retrained because it was bad), and quietly using it would hide a broken artifact
from the fallback metrics. The generation itself still succeeds through the face-swap / standard route.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from lora_pipelines.domain.lora_identity import UNVERIFIED, LoraIdentity, identity_mismatches
from lora_pipelines.domain.model_registry import ModelEntry
from lora_pipelines.domain.safetensors_inspect import ForeignLoraFamilyError, InvalidLoraFileError, LoraInspection

CHARACTER_NOT_FOUND = "character_not_found"
LORA_DISABLED = "lora_disabled"
MODEL_DOES_NOT_SUPPORT_LORA = "model_does_not_support_lora"
NO_READY_LORA = "no_ready_lora"
BASE_MODEL_MISMATCH = "base_model_mismatch"
LORA_FILE_UNREACHABLE = "lora_file_unreachable"
CHECKSUM_MISMATCH = "checksum_mismatch"
LORA_FILE_INVALID = "lora_file_invalid"
LORA_IDENTITY_MISMATCH = "lora_identity_mismatch"
PINNED_LORA_UNAVAILABLE = "pinned_lora_unavailable"

REASONS = (CHARACTER_NOT_FOUND, LORA_DISABLED, MODEL_DOES_NOT_SUPPORT_LORA, NO_READY_LORA, BASE_MODEL_MISMATCH,
           LORA_FILE_UNREACHABLE, CHECKSUM_MISMATCH, LORA_FILE_INVALID, LORA_IDENTITY_MISMATCH, PINNED_LORA_UNAVAILABLE)
FILE_FAILURES = (LORA_FILE_UNREACHABLE, CHECKSUM_MISMATCH, LORA_FILE_INVALID)
# After selection: the LoRA was chosen and sent, but the route errored, or the backend said it did not apply it.
LORA_ROUTE_FAILED = "lora_route_failed"
LORA_IGNORED = "lora_ignored"
# A job skipped for one of these had a ready LoRA for its base model: it stays in the LoRA usage rate's denominator.
REFUSALS = (*FILE_FAILURES, LORA_IDENTITY_MISMATCH, LORA_ROUTE_FAILED, LORA_IGNORED)


@dataclass(frozen=True)
class CharacterFacts:
    id: str
    lora_enabled: bool


@dataclass(frozen=True)
class LoraCandidate:
    """A lora_models row as selection sees it."""

    id: str
    base_model: str
    status: str = "ready"
    trigger_word: str | None = None
    sha256: str | None = None
    model_path: str | None = None
    finished_at: datetime | None = None  # when it became ready (updatedAt)
    second_expert_path: str | None = None  # the second file of a two-expert LoRA (Wan 2.2 14B: low_noise)
    second_expert_sha256: str | None = None
    character_id: str | None = None  # the row's characterId, compared with the file's own
    dataset_hash: str | None = None
    active: bool = False  # the one generation uses for its base model (domain/lora_versions.py)


@dataclass(frozen=True)
class InspectOutcome:
    """What the I/O layer learned fetching the candidate's file: the file's base model (and, when it has it, the
    whole inspection), or a failure code from FILE_FAILURES with a human-readable detail.

    Build it with `InspectOutcome.success(inspection_or_base_model)` / `InspectOutcome.failure(code, detail)`, or
    `InspectOutcome.refused(error)` for a file the inspector refused.
    """

    base_model: str | None = None
    reason: str | None = None
    detail: str = ""
    inspection: LoraInspection | None = None

    def __post_init__(self) -> None:
        if (self.base_model is None) == (self.reason is None):
            raise ValueError("InspectOutcome needs exactly one of base_model or a failure reason")
        if self.reason is not None and self.reason not in FILE_FAILURES:
            raise ValueError(f"unknown file failure {self.reason!r}; expected one of {', '.join(FILE_FAILURES)}")

    @classmethod
    def success(cls, inspected: LoraInspection | str) -> InspectOutcome:
        if isinstance(inspected, LoraInspection):
            return cls(base_model=inspected.base_model, inspection=inspected)
        return cls(base_model=inspected)

    @classmethod
    def refused(cls, error: InvalidLoraFileError, where: str = "") -> InspectOutcome:
        """A file for a family we do not run has that family as its base model (a mismatch naming it); any other
        refusal is lora_file_invalid."""
        if isinstance(error, ForeignLoraFamilyError):
            return cls(base_model=error.family, detail=f"from {error.evidence}")
        return cls.failure(LORA_FILE_INVALID, f"{where}{error}")

    @classmethod
    def failure(cls, reason: str, detail: str = "") -> InspectOutcome:
        return cls(reason=reason, detail=detail)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class LoraSelection:
    lora: LoraCandidate | None
    reason: str | None  # None when the LoRA is used, else one of REASONS
    detail: str
    inspection: LoraInspection | None = None
    trigger_word: str | None = None
    identity: str | None = None  # "verified" | "unverified" when used
    candidate: LoraCandidate | None = None  # the ready LoRA for the model's family, used or not

    @property
    def used(self) -> bool:
        return self.lora is not None


def _skip(reason: str, detail: str, inspection: LoraInspection | None = None,
          candidate: LoraCandidate | None = None) -> LoraSelection:
    return LoraSelection(lora=None, reason=reason, detail=detail, inspection=inspection, candidate=candidate)


def _recency(candidate: LoraCandidate) -> tuple[bool, float, int, str]:
    """Newest first by finished_at (rows without one are oldest), then by id: numerically for database ids, so
    id 10 is newer than id 9, as in `find_ready_by_character_id`."""
    finished = candidate.finished_at
    key = str(candidate.id)
    return (finished is not None, finished.timestamp() if finished else 0.0, len(key) if key.isdigit() else 0, key)


def select_lora(
    character: CharacterFacts | None,
    model: ModelEntry,
    ready_loras: Sequence[LoraCandidate],
    inspect: Callable[[LoraCandidate], InspectOutcome],
    pinned_id: str | int | None = None,
) -> LoraSelection:
    if character is None:
        return _skip(CHARACTER_NOT_FOUND, "no such character")
    if not character.lora_enabled:
        return _skip(LORA_DISABLED, f"character {character.id} has loraEnabled off")
    if not model.supports_lora:
        return _skip(MODEL_DOES_NOT_SUPPORT_LORA, f"model {model.name} does not support LoRA")

    ready = [c for c in ready_loras if c.status == "ready"]
    if not ready:
        return _skip(NO_READY_LORA, f"character {character.id} has no ready LoRA")
    family = [c for c in ready if c.base_model == model.base_model]
    if not family:
        others = ", ".join(sorted({c.base_model for c in ready}))
        return _skip(BASE_MODEL_MISMATCH,
                     f"character {character.id} has ready LoRAs for {others}, none for {model.base_model}")
    if pinned_id is not None:
        candidate = next((c for c in family if str(c.id) == str(pinned_id)), None)
        if candidate is None:
            return _skip(PINNED_LORA_UNAVAILABLE,
                         f"pinned LoRA {pinned_id} is not a ready {model.base_model} LoRA of character {character.id}")
    else:
        candidate = next((c for c in family if c.active), None) or max(family, key=_recency)

    try:
        outcome = inspect(candidate)
    except InvalidLoraFileError as exc:
        outcome = InspectOutcome.refused(exc)
    except OSError as exc:
        outcome = InspectOutcome.failure(LORA_FILE_UNREACHABLE, f"{type(exc).__name__}: {exc}")
    if outcome.reason is not None:
        return _skip(outcome.reason, f"LoRA {candidate.id}: {outcome.detail or outcome.reason}", candidate=candidate)
    inspection = outcome.inspection

    if inspection is not None and candidate.sha256 and inspection.sha256 != candidate.sha256:
        return _skip(CHECKSUM_MISMATCH,
                     f"LoRA {candidate.id}: file sha256 {inspection.sha256[:12]}… != recorded {candidate.sha256[:12]}…",
                     inspection, candidate)
    if outcome.base_model != model.base_model:
        detected = inspection.detected_from if inspection is not None else None
        source = f"from {detected}" if detected else outcome.detail
        return _skip(BASE_MODEL_MISMATCH,
                     f"LoRA {candidate.id} is recorded as {candidate.base_model} but its file is for "
                     f"{outcome.base_model}" + (f" ({source})" if source else ""),
                     inspection, candidate)

    identity = LoraIdentity.from_metadata(inspection.metadata if inspection is not None else None)
    mismatches = identity_mismatches(identity, character_id=candidate.character_id or character.id,
                                     trigger_word=candidate.trigger_word, dataset_hash=candidate.dataset_hash)
    if mismatches:
        return _skip(LORA_IDENTITY_MISMATCH, f"LoRA {candidate.id}: " + "; ".join(mismatches), inspection, candidate)

    trigger_word = candidate.trigger_word or (inspection.trigger_word if inspection is not None else None)
    status = identity.status if inspection is not None else UNVERIFIED
    return LoraSelection(lora=candidate, reason=None, detail=f"using LoRA {candidate.id} ({model.base_model})",
                         inspection=inspection, trigger_word=trigger_word, identity=status, candidate=candidate)
