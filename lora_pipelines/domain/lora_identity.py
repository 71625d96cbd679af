"""Whose LoRA a file is, read from its own header, compared with the lora_models row that points at it.

Our trainers (the Modal training app and the simulated service) write `lora_pipelines.character_id`,
`lora_pipelines.trigger_word` and `lora_pipelines.dataset_hash`. A file whose header names another character,
trigger word or dataset than its row is another LoRA (a mix-up at publish time whose checksum was recorded for
the wrong file): it is refused. A file naming no character was trained elsewhere: it is used on the row's
trigger word and reported as "unverified".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lora_pipelines.domain.lora_format import CHARACTER_ID_KEY, DATASET_HASH_KEY, TRIGGER_WORD_KEY

VERIFIED = "verified"
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class LoraIdentity:
    character_id: str | None
    trigger_word: str | None
    dataset_hash: str | None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> LoraIdentity:
        metadata = metadata or {}

        def value(key: str) -> str | None:
            return (metadata.get(key) or "").strip() or None

        return cls(value(CHARACTER_ID_KEY), value(TRIGGER_WORD_KEY), value(DATASET_HASH_KEY))

    @property
    def status(self) -> str:
        """verified: the file names its character; unverified: it does not (trained elsewhere)."""
        return VERIFIED if self.character_id is not None else UNVERIFIED


def identity_mismatches(identity: LoraIdentity, *, character_id: object, trigger_word: str | None,
                        dataset_hash: str | None) -> list[str]:
    """What the file says that contradicts the row ("character 7 != 3", ...); empty when nothing does.

    Only what both sides state is compared: a key the file lacks, or a row without a dataset hash, proves nothing.
    """
    problems = []
    if identity.character_id is not None and identity.character_id != str(character_id):
        problems.append(f"the file is character {identity.character_id}'s, the row is character {character_id}'s")
    if identity.trigger_word is not None and trigger_word and identity.trigger_word != trigger_word:
        problems.append(f"the file's trigger word is {identity.trigger_word!r}, the row's {trigger_word!r}")
    if identity.dataset_hash is not None and dataset_hash and identity.dataset_hash != dataset_hash:
        problems.append(f"the file was trained on dataset {identity.dataset_hash[:12]}…, "
                        f"the row on {dataset_hash[:12]}…")
    return problems
