"""What the system holds, in the JSON shape of `lora-pipelines status --json`."""

from __future__ import annotations

from lora_pipelines.reporting import feedback, metrics
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.outputs import output_urls
from lora_pipelines.services.training_state import training_states
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_activations import LoraActivationsRepository
from lora_pipelines.store.lora_models import LoraModelsRepository


def _lora(row, active: set[int] = frozenset()) -> dict:
    return {"id": row.id, "status": row.status, "base_model": row.base_model, "model_path": row.model_path,
            "model_url": row.model_url, "sha256": row.sha256, "trigger_word": row.trigger_word,
            "size_bytes": row.size_bytes, "error": row.error, "second_expert": _second_expert(row),
            "active": row.id in active, "validation_score": row.validation_score, "gate_reason": row.gate_reason}


def _second_expert(row) -> dict | None:
    """The low_noise file of a Wan 2.2 14B pair (model_path is the high_noise one); None for a single file."""
    if row.second_expert_path is None:
        return None
    return {"path": row.second_expert_path, "sha256": row.second_expert_sha256,
            "size_bytes": row.second_expert_size_bytes}


def _job(job) -> dict:
    meta = job.input_metadata or {}
    return {"id": job.id, "character_id": job.character_id, "model": job.model, "status": job.status,
            "prompt": job.sent_prompt if job.sent_prompt is not None else job.prompt, "user_prompt": job.prompt,
            "lora_model_id": job.lora_model_id, "trigger_word": job.trigger_word,
            "lora_skipped_reason": job.lora_skipped_reason, "mode": job.mode, "backend": job.backend,
            "output_keys": list(job.output_keys or []), "face_distance": job.face_distance,
            "face_match": job.face_match, "routes": meta.get("routes", []), "error": job.error,
            "face_reference": job.face_reference, "sface_similarity": job.sface_similarity,
            "sface_match": job.sface_match, "in_sample_face_match": job.in_sample_face_match,
            "in_sample_sface_match": job.in_sample_sface_match, "lora_candidate_id": job.lora_candidate_id,
            "lora_identity": meta.get("loraIdentity")}


def system_status(ctx: PipelineContext, *, limit: int = 200) -> dict:
    loras = LoraModelsRepository(ctx.db)
    characters = CharactersRepository(ctx.db).list(limit=limit)
    states = training_states(ctx, characters, with_progress=True)
    active = set(LoraActivationsRepository(ctx.db).active_ids([c.id for c in characters]).values())
    return {
        "store": {"url": ctx.store.url},
        "characters": [
            {"id": c.id, "name": c.name, "lora_enabled": c.lora_enabled, "trigger_word": c.trigger_word,
             "photo_keys": list(c.photo_keys),
             "loras": [_lora(r, active) for r in loras.find_by_character_id(c.id)],
             "training": [s.as_dict() for s in states[c.id]]}
            for c in characters
        ],
        "generation_jobs": [{**_job(j), "output_urls": output_urls(ctx.store, list(j.output_keys or []))}
                            for j in GenerationJobsRepository(ctx.db).list(limit=limit, newest_first=True)],
        "metrics": metrics.headline(ctx.db),
        # held-out vs in-sample references, by dlib and by SFace, and where the two disagree
        "face_match": metrics.face_match_summary(ctx.db),
        "user_satisfaction": feedback.summary(ctx.db),
    }
