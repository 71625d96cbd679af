"""A character's reference faces (embeddings of its usable photos), kept at characters/{id}/reference.json."""

from __future__ import annotations

import json

import numpy as np

from lora_pipelines.services.context import PipelineContext


def reference_key(character_id: int) -> str:
    return f"characters/{int(character_id)}/reference.json"


def save_reference(ctx: PipelineContext, character_id: int, embeddings: list) -> None:
    payload = {"embeddings": [np.asarray(e, dtype=float).round(6).tolist() for e in embeddings]}
    ctx.store.put_bytes(reference_key(character_id), json.dumps(payload).encode(), content_type="application/json")


def load_reference_embeddings(ctx: PipelineContext, character_id: int, photo_keys: list[str]) -> list[np.ndarray]:
    """Stored embeddings, or computed from the photos (single-face ones only) and stored for next time."""
    key = reference_key(character_id)
    if ctx.store.exists(key):
        return [np.asarray(e, dtype=np.float32) for e in json.loads(ctx.store.get_bytes(key))["embeddings"]]
    from lora_pipelines.faces.images import ImageDecodeError, decode_image

    embeddings = []
    for photo_key in photo_keys:
        try:
            faces = ctx.analyzer.analyze(decode_image(ctx.store.get_bytes(photo_key), name=photo_key))
        except ImageDecodeError:
            continue
        if len(faces) == 1:
            embeddings.append(faces[0].embedding)
    if embeddings:
        save_reference(ctx, character_id, embeddings)
    return embeddings
