"""Face consistency of a generated image against its character's reference faces, recorded on the job."""

from __future__ import annotations

from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.references import load_reference_embeddings
from lora_pipelines.store.generation_jobs import GenerationJobsRepository


def score_job_output(ctx: PipelineContext, job_id: int, character, image: bytes):
    """Distance, match and face count of the output; None distance when there is no face or no reference."""
    from lora_pipelines.faces.consistency import CharacterReference, score_image

    embeddings = load_reference_embeddings(ctx, character.id, character.photo_keys)
    jobs = GenerationJobsRepository(ctx.db)
    if not embeddings:
        return jobs.record_face_score(job_id, None, None, 0)
    score = score_image(image, CharacterReference.from_embeddings(embeddings), ctx.analyzer)
    jobs.merge_input_metadata(job_id, {"faceFlags": list(score.flags), "faceThreshold": score.threshold})
    return jobs.record_face_score(job_id, score.distance, score.match, score.face_count)
