"""Face consistency of a generated image against its character's reference faces, recorded on the job.

Two recognisers (dlib's ResNet distance, SFace's cosine "FaceSim") each score the image against the held-out photos
when the character has some (`face_reference` "held_out"), else against its training photos ("in_sample"); both
also score it against the training photos (`in_sample_*`), so the report can show how much an in-sample score
flatters. A face nearer than the near-copy distance to a training photo is that photo coming back, not a match.
"""

from __future__ import annotations

from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.references import HELD_OUT, load_references
from lora_pipelines.store.generation_jobs import GenerationJobsRepository


def score_job_output(ctx: PipelineContext, job_id: int, character, image: bytes):
    """Distance, match and face count of the output by both recognisers; None when there is no reference."""
    from lora_pipelines.faces.consistency import CharacterReference, corrupt_score, score_faces
    from lora_pipelines.faces.images import ImageDecodeError, decode_image
    from lora_pipelines.faces.recognisers import SFaceRecogniser, nearest_score

    references = load_references(ctx, character)
    jobs = GenerationJobsRepository(ctx.db)
    if references.empty:
        return jobs.record_face_score(job_id, None, None, 0)
    kind = references.primary_kind
    primary = CharacterReference.from_embeddings(references.primary("dlib"))
    training = CharacterReference.from_embeddings(references.in_sample["dlib"])
    try:
        decoded = decode_image(image, name=f"job {job_id}")
    except ImageDecodeError as exc:
        score = corrupt_score(primary, str(exc))
        jobs.merge_input_metadata(job_id, {"faceFlags": score.flags, "faceThreshold": score.threshold,
                                           "faceReference": kind})
        return jobs.record_face_score(job_id, None, False, 0, face_reference=kind, sface_match=False,
                                      in_sample_face_match=False, in_sample_sface_match=False)

    faces = ctx.analyzer.analyze(decoded, detect_max_side=800)
    score = score_faces(faces, primary)
    in_sample = score_faces(faces, training)
    flags = list(score.flags)
    copied = "near_copy" in in_sample.flags
    if copied and "near_copy" not in flags:  # scored on held-out photos, but it is a training photo coming back
        flags.append("near_copy")

    sface = SFaceRecogniser()
    vectors = [f.vector for f in sface.embed(decoded, name=f"job {job_id}")]

    def best(refs) -> float | None:
        return max(nearest_score(sface, v, refs) for v in vectors) if vectors and refs else None

    similarity, in_sample_similarity = best(references.primary("sface")), best(references.in_sample.get("sface"))
    sface_match = similarity is not None and sface.is_match(similarity) and not copied
    in_sample_sface = in_sample_similarity is not None and sface.is_match(in_sample_similarity) and not copied
    jobs.merge_input_metadata(job_id, {
        "faceFlags": flags, "faceThreshold": score.threshold, "faceReference": kind,
        "faceScores": {
            "dlib": {kind: _round(score.distance), **({"in_sample": _round(in_sample.distance)} if kind == HELD_OUT
                                                      else {}), "threshold": score.threshold},
            "sface": {kind: _round(similarity), **({"in_sample": _round(in_sample_similarity)} if kind == HELD_OUT
                                                   else {}), "threshold": sface.threshold, "faces": len(vectors)},
        },
    })
    return jobs.record_face_score(
        job_id, score.distance, score.match and not copied, score.face_count, face_reference=kind,
        sface_similarity=similarity, sface_match=sface_match, in_sample_face_match=in_sample.match and not copied,
        in_sample_sface_match=in_sample_sface,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
