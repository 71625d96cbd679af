"""Adding characters: photos are checked (decoded, faces counted), copied into the object store, and the row created.

Only photos that show exactly one face large enough to train on are kept: icons, landscapes, noise and group
photos are skipped with the reason, before anything is stored. A fast detection pass (faces/detection.py) counts
them, so `character add` can say at once whether the character can be trained and what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

from lora_pipelines.domain.keys import photo_key
from lora_pipelines.faces.detection import judge_photo
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import Character, CharactersRepository, check_name

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


class PhotoFolderError(ValueError):
    pass


class DuplicateCharacterError(ValueError):
    """A character with this name exists; a second one needs allow_duplicate_name."""


def photos_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PhotoFolderError(f"photo folder {folder} does not exist or is not a folder")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise PhotoFolderError(f"photo folder {folder} has no .jpg/.jpeg/.png/.webp files")
    return photos


@dataclass(frozen=True)
class PhotoIntake:
    usable: list[tuple[Path, bytes]]
    skipped: list[str]  # one message per photo left out, naming it and why


def check_photos(photos: list[Path]) -> PhotoIntake:
    """Read every photo and keep those with exactly one face large enough to train on."""
    usable: list[tuple[Path, bytes]] = []
    skipped: list[str] = []
    for path in photos:
        data = path.read_bytes()
        verdict = judge_photo(data, path.name)
        if verdict.usable:
            usable.append((path, data))
        else:
            skipped.append(verdict.detail)
    return PhotoIntake(usable, skipped)


def usable_photos(photos: list[Path]) -> PhotoIntake:
    """`check_photos`, refusing a set in which no photo is usable (naming why each was left out)."""
    intake = check_photos(photos)
    if photos and not intake.usable:
        raise PhotoFolderError(f"none of the {len(photos)} photos is usable: " + "; ".join(intake.skipped))
    return intake


def store_photos(ctx: PipelineContext, character_id: int, usable: list[tuple[Path, bytes]],
                 existing: list[str] = ()) -> list[str]:
    """Put photos under content-hash names (a re-run never duplicates them; no user-chosen file name reaches a
    key); returns the keys of photos not already in `existing`. Uploads made before a failure are removed."""
    keys: list[str] = []
    try:
        for path, data in usable:
            digest = hashlib.sha256(data).hexdigest()[:16]
            key = photo_key(str(character_id), f"{digest}{path.suffix.lower()}")
            if key not in keys and key not in existing:
                ctx.store.put_bytes(key, data)
                keys.append(key)
        return keys
    except BaseException:
        for key in keys:
            with contextlib.suppress(Exception):
                ctx.store.delete(key)
        raise


def refuse_duplicate_name(ctx: PipelineContext, name: str) -> None:
    same = CharactersRepository(ctx.db).find_by_name(name)
    if same:
        first = same[0]
        raise DuplicateCharacterError(
            f"character {first.id} is already named {first.name!r} (trigger word {first.trigger_word}): add photos "
            f"to it with `lora-pipelines character add-photos {first.id} --photos DIR`, or pass "
            "--allow-duplicate-name for a second character")


def add_character(ctx: PipelineContext, name: str, photos: list[Path], *, lora_enabled: bool,
                  trigger_word: str | None = None, allow_duplicate_name: bool = False,
                  intake: PhotoIntake | None = None) -> tuple[Character, list[str]]:
    """Create the character with every usable photo; returns (character, skipped-photo messages). `intake`: the
    photos already checked (`usable_photos`), so they are not looked at twice."""
    check_name(name)
    if not allow_duplicate_name:
        refuse_duplicate_name(ctx, name)
    intake = intake or usable_photos(photos)
    repo = CharactersRepository(ctx.db)
    character = repo.create(name=name.strip(), lora_enabled=lora_enabled, photo_keys=[], trigger_word=trigger_word)
    try:
        keys = store_photos(ctx, character.id, intake.usable)
        return repo.update(character.id, photo_keys=keys), intake.skipped
    except BaseException:
        # no half-made character (a row without its photos) is left behind when the store refuses an upload
        repo.delete(character.id)
        raise
