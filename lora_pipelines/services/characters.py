"""Adding characters: photos are checked, copied into the object store, and the row created."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from lora_pipelines.domain.keys import photo_key
from lora_pipelines.faces.images import ImageDecodeError, decode_image
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import CharactersRepository

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


class PhotoFolderError(ValueError):
    pass


def photos_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PhotoFolderError(f"photo folder {folder} does not exist or is not a folder")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise PhotoFolderError(f"photo folder {folder} has no .jpg/.jpeg/.png/.webp files")
    return photos


def add_character(ctx: PipelineContext, name: str, photos: list[Path], *, lora_enabled: bool,
                  trigger_word: str | None = None) -> tuple[object, list[str]]:
    """Create the character with every decodable photo; returns (character, skipped-photo messages).

    Photos are stored under a content-hash name, so a re-run never duplicates them and no user-chosen
    file name reaches a key.
    """
    if not name or not name.strip() or "\x00" in name:
        raise ValueError("character name is empty or contains a NUL byte")
    usable: list[tuple[Path, bytes]] = []
    skipped: list[str] = []
    for path in photos:
        data = path.read_bytes()
        try:
            decode_image(data, name=path.name)
        except ImageDecodeError as exc:
            skipped.append(str(exc))
            continue
        usable.append((path, data))
    if photos and not usable:
        raise PhotoFolderError(f"none of the {len(photos)} photos is usable: " + "; ".join(skipped))
    repo = CharactersRepository(ctx.db)
    character = repo.create(name=name.strip(), lora_enabled=lora_enabled, photo_keys=[], trigger_word=trigger_word)
    keys: list[str] = []
    try:
        for path, data in usable:
            digest = hashlib.sha256(data).hexdigest()[:16]
            key = photo_key(str(character.id), f"{digest}{path.suffix.lower()}")
            if key not in keys:
                ctx.store.put_bytes(key, data)
                keys.append(key)
        return repo.update(character.id, photo_keys=keys), skipped
    except BaseException:
        # no half-made character (a row without its photos) is left behind when the store refuses an upload
        for key in keys:
            with contextlib.suppress(Exception):
                ctx.store.delete(key)
        repo.delete(character.id)
        raise
