"""A character's reference faces, kept at characters/{id}/reference.json: the embeddings of its training photos
(in-sample) and of its held-out photos (never trained on), by each recogniser (dlib and SFace).

A score against held-out photos is the honest one; a score against training photos flatters a LoRA that
memorised its photos. Scoring records which it used (`face_reference`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lora_pipelines.services.context import PipelineContext

HELD_OUT = "held_out"
IN_SAMPLE = "in_sample"
FORMAT = 2  # 1: {"embeddings": [...]} (dlib, every usable photo)


@dataclass(frozen=True)
class References:
    """Embeddings by recogniser name ("dlib", "sface"), of the training photos and of the held-out photos."""

    in_sample: dict[str, list[np.ndarray]]
    held_out: dict[str, list[np.ndarray]] = field(default_factory=dict)
    held_out_photos: list[str] = field(default_factory=list)  # file names of the held-out photos

    @property
    def empty(self) -> bool:
        return not self.in_sample.get("dlib")

    @property
    def primary_kind(self) -> str:
        """held_out when there are held-out faces for dlib, else in_sample."""
        return HELD_OUT if self.held_out.get("dlib") else IN_SAMPLE

    def primary(self, recogniser: str) -> list[np.ndarray]:
        return (self.held_out if self.primary_kind == HELD_OUT else self.in_sample).get(recogniser, [])


def reference_key(character_id: int) -> str:
    return f"characters/{int(character_id)}/reference.json"


def _vectors(embeddings: Sequence) -> list[list[float]]:
    return [np.asarray(e, dtype=float).round(6).tolist() for e in embeddings]


def save_references(ctx: PipelineContext, character_id: int, references: References) -> None:
    payload = {
        "format": FORMAT,
        "embeddings": _vectors(references.in_sample.get("dlib", [])),  # format 1's key: the in-sample dlib faces
        "in_sample": {name: _vectors(v) for name, v in references.in_sample.items()},
        "held_out": {name: _vectors(v) for name, v in references.held_out.items()},
        "held_out_photos": list(references.held_out_photos),
    }
    ctx.store.put_bytes(reference_key(character_id), json.dumps(payload).encode(), content_type="application/json")


def save_reference(ctx: PipelineContext, character_id: int, embeddings: list) -> None:
    """Format 1: dlib embeddings of every usable photo, nothing held out (kept for callers that only have these)."""
    save_references(ctx, character_id, References(in_sample={"dlib": list(embeddings)}))


def _parse(payload: dict) -> References | None:
    if payload.get("format") != FORMAT:
        return None  # an older file: computed again, with SFace too

    def arrays(group: dict) -> dict[str, list[np.ndarray]]:
        return {name: [np.asarray(e, dtype=np.float32) for e in values] for name, values in group.items()}

    return References(arrays(payload.get("in_sample", {})), arrays(payload.get("held_out", {})),
                      list(payload.get("held_out_photos", [])))


def embed_photos(ctx: PipelineContext, photos: Sequence[tuple[str, bytes]]) -> dict[str, list[np.ndarray]]:
    """Each recogniser's embedding of the largest face of each photo (photos without a face are skipped)."""
    from lora_pipelines.faces.recognisers import DlibRecogniser, SFaceRecogniser, reference_embeddings

    return {r.name: reference_embeddings(r, photos)[0] for r in (DlibRecogniser(ctx.analyzer), SFaceRecogniser())}


def load_references(ctx: PipelineContext, character) -> References:
    """Stored references, or computed from all the character's photos (all in-sample) and stored for next time."""
    key = reference_key(character.id)
    if ctx.store.exists(key):
        stored = _parse(json.loads(ctx.store.get_bytes(key)))
        if stored is not None:
            return stored
    from lora_pipelines.faces.images import ImageDecodeError, decode_image

    photos = []
    for photo_key in character.photo_keys:
        data = ctx.store.get_bytes(photo_key)
        try:
            faces = ctx.analyzer.analyze(decode_image(data, name=photo_key))
        except ImageDecodeError:
            continue
        if len(faces) == 1:  # a photo of the character alone
            photos.append((photo_key.rsplit("/", 1)[-1], data))
    references = References(in_sample=embed_photos(ctx, photos))
    if not references.empty:
        save_references(ctx, character.id, references)
    return references


def load_reference_embeddings(ctx: PipelineContext, character_id: int, photo_keys: list[str]) -> list[np.ndarray]:
    """The dlib embeddings of the training photos (format 1's view, for older callers)."""
    from types import SimpleNamespace

    return load_references(ctx, SimpleNamespace(id=character_id, photo_keys=photo_keys)).in_sample.get("dlib", [])


def training_photo_keys(ctx: PipelineContext, character) -> list[str]:
    """The character's photos minus the held-out ones (what face swap may use as its reference)."""
    key = reference_key(character.id)
    if not ctx.store.exists(key):
        return list(character.photo_keys)
    held = set((_parse(json.loads(ctx.store.get_bytes(key))) or References({})).held_out_photos)
    return [k for k in character.photo_keys if k.rsplit("/", 1)[-1] not in held]
