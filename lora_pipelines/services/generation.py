"""Running one generation job: LoRA when one can be used, else face swap / PuLID, else standard.

A generation never fails because a LoRA is missing, broken or unreachable: each failed route is recorded
and the next one runs. Only when every route fails does the job fail.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from lora_pipelines.domain.keys import generation_output_key
from lora_pipelines.domain.lora_selection import LORA_IGNORED, LORA_ROUTE_FAILED, LoraSelection
from lora_pipelines.domain.model_registry import ModelEntry, Route, UnknownModelError, get_model
from lora_pipelines.domain.prompts import InvalidPromptError, apply_trigger_word, clean_prompt
from lora_pipelines.gpu.limits import SlotWait
from lora_pipelines.gpu.schemas import FaceSwapRequest, GenerateRequest, LoraRef
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.lora_files import is_pair, second_expert_ref
from lora_pipelines.services.lora_lookup import get_lora_for_generation
from lora_pipelines.services.references import training_photo_keys
from lora_pipelines.services.route_limits import route_slot
from lora_pipelines.services.scoring import score_job_output
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.generation_jobs import GenerationJobsRepository

GENERATION_SIZE = 512  # the simulated service renders this size; real backends take width/height as given


@dataclass
class RouteAttempt:
    mode: str
    route: str
    ok: bool
    error: str | None = None
    duration_ms: float = 0.0
    wait_ms: float = 0.0  # waiting for a free GPU call slot, before duration_ms starts


@dataclass
class Rendered:
    image: bytes
    backend: str
    sent_prompt: str
    lora_loaded: bool | None = None
    lora_strength: float | None = None  # the model strength the backend applied (None: no LoRA)


@dataclass
class GenerationOutcome:
    job_id: int
    status: str
    mode: str | None = None
    lora_model_id: int | None = None
    trigger_word: str | None = None
    lora_skipped_reason: str | None = None
    attempts: list[RouteAttempt] = field(default_factory=list)


class LoraNotApplied(RuntimeError):
    """The backend answered but did not really apply the LoRA: treated as a LoRA-path failure."""


def _route_name(route: Route) -> str:
    return f"{route.kind}:{route.target}"


def _seed(job_id: int) -> int:
    return (job_id * 2654435761) % (2**31)


def _lora_ref(ctx: PipelineContext, selection: LoraSelection, model: ModelEntry,
              strengths: tuple[float, float] | None = None) -> LoraRef:
    lora = selection.lora
    strengths = strengths or model.lora_strengths()
    return LoraRef(
        lora_model_id=str(lora.id), url=ctx.store.presigned_url(lora.model_path), sha256=lora.sha256,
        base_model=lora.base_model, trigger_word=lora.trigger_word,
        strength_model=strengths[0], strength_clip=strengths[1],
        second_expert=second_expert_ref(ctx, lora),
    )


def _via_endpoint(ctx: PipelineContext, route: Route, mode: str, model: ModelEntry, prompt: str, seed: int,
                  selection: LoraSelection | None, reference: bytes | None,
                  strengths: tuple[float, float] | None = None) -> Rendered:
    endpoints = ctx.gpu.endpoints
    if endpoints is None:
        raise RuntimeError(f"route {route.target} needs the Modal endpoints; set LORA_PIPELINES_MODAL_ENDPOINT_URL")
    name = route.target.lstrip("/")
    if mode == "face_swap":
        response = endpoints.face_swap(FaceSwapRequest(
            model=model.name, prompt=prompt, reference_image_b64=base64.b64encode(reference).decode(),
            width=GENERATION_SIZE, height=GENERATION_SIZE, seed=seed,
        ))
    else:
        lora = _lora_ref(ctx, selection, model, strengths) if mode == "lora" else None
        response = endpoints.generate(name, GenerateRequest(
            model=model.name, prompt=prompt, width=GENERATION_SIZE, height=GENERATION_SIZE, seed=seed, lora=lora,
        ))
        if lora is not None and not (response.lora and response.lora.loaded):
            reason = response.lora.ignored_reason if response.lora else "no LoRA in the response"
            raise LoraNotApplied(f"{route.target} did not apply LoRA {lora.lora_model_id}: {reason}")
    return Rendered(base64.b64decode(response.image_b64), response.backend, response.prompt,
                    response.lora.loaded if response.lora else None,
                    response.lora.strength_model if response.lora else None)


def _via_comfyui(ctx: PipelineContext, route: Route, mode: str, model: ModelEntry, prompt: str, seed: int,
                 selection: LoraSelection | None, reference: bytes | None,
                 strengths: tuple[float, float] | None = None) -> Rendered:
    from lora_pipelines.gpu.pod_cache import use_lora
    from lora_pipelines.workflows.builders import build_workflow
    from lora_pipelines.workflows.lora import insert_lora

    comfy = ctx.gpu.comfyui
    if comfy is None:
        raise RuntimeError(f"workflow {route.target} needs a ComfyUI pod; set LORA_PIPELINES_COMFYUI_URL")
    reference_name = comfy.upload_image(reference, f"reference-{seed}.png") if mode == "face_swap" else None
    workflow = build_workflow(route.target, prompt, seed=seed, width=GENERATION_SIZE, height=GENERATION_SIZE,
                              reference_image=reference_name)
    strength_model, strength_clip = strengths or model.lora_strengths()
    with ExitStack() as in_use:
        if mode == "lora":
            lora = selection.lora
            if is_pair(lora.base_model):  # use_lora places one file; a pair would be half applied
                raise RuntimeError(f"workflow {route.target} takes one LoRA file; LoRA {lora.id} is an expert pair")
            # the file stays on the pod (never evicted) until ComfyUI has run the prompt
            in_use.enter_context(use_lora(
                str(lora.id), lora.sha256, lambda dest: ctx.store.download_file(lora.model_path, dest),
                ctx.gpu.loras_root, ctx.settings.comfyui_lora_cache_bytes,
            ))
            workflow = insert_lora(workflow, f"{lora.id}.safetensors", strength_model, strength_clip)
        comfy.preflight(workflow)  # node types against /object_info, LoRA files against /models/loras
        prompt_id = comfy.queue_prompt(workflow)
        entry = comfy.wait(prompt_id, timeout_s=ctx.settings.gpu_timeout_seconds)
        if mode == "lora" and (warning := _lora_not_loaded(entry, f"{selection.lora.id}.safetensors")):
            raise LoraNotApplied(f"ComfyUI did not apply LoRA {selection.lora.id}: {warning}")
        images = comfy.fetch_outputs(prompt_id)
    if not images:
        raise RuntimeError(f"ComfyUI prompt {prompt_id} produced no image")
    return Rendered(images[0], "simulated" if ctx.gpu.backend_name == "simulated" else "comfyui", prompt,
                    lora_strength=strength_model if mode == "lora" else None)


def _attempt(mode: str, route: Route, started: float, waited: SlotWait, error: str | None) -> RouteAttempt:
    """The route's own duration, and apart from it the wait for a GPU call slot."""
    elapsed = time.perf_counter() - started
    return RouteAttempt(mode, _route_name(route), error is None, error, round((elapsed - waited.seconds) * 1000, 1),
                        round(waited.seconds * 1000, 1))


def _lora_not_loaded(entry: dict, lora_name: str) -> str | None:
    """ComfyUI's "lora key not loaded" warning for this file among the prompt's messages, if it logged one."""
    messages = ((entry or {}).get("status") or {}).get("messages") or []
    for message in messages:
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            text = str(message[1].get("message", ""))
            if "lora key not loaded" in text and lora_name in text:
                return text[:300]
    return None


def _render(ctx, route: Route, *args, **kwargs) -> Rendered:
    runner = _via_endpoint if route.kind == "modal_endpoint" else _via_comfyui
    return runner(ctx, route, *args, **kwargs)


def _row_id(value) -> int | None:
    """A lora_models id as the column takes it (selection's candidates carry the row id)."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


ScoreLater = Callable[[Callable[[PipelineContext], None]], None]


def run_generation_job(ctx: PipelineContext, job_id: int, worker: str, *,
                       score_later: ScoreLater | None = None) -> GenerationOutcome | None:
    """Claim and run one job. None when another worker has it (so no job is generated twice).

    `score_later` takes the face scoring of the output (a function of a context) to run it off this thread, so
    the next GPU call need not wait for it; without it the output is scored here."""
    jobs = GenerationJobsRepository(ctx.db)
    job = jobs.claim(job_id, worker)
    if job is None:
        return None
    try:
        model = get_model(job.model)
        clean_prompt(job.prompt)
    except (UnknownModelError, InvalidPromptError) as exc:
        jobs.finish(job.id, "failed", error=str(exc))
        return GenerationOutcome(job.id, "failed")
    character = CharactersRepository(ctx.db).get(job.character_id)
    selection = get_lora_for_generation(ctx, job.character_id, model.name, pinned_id=job.requested_lora_model_id)
    strengths = model.lora_strengths(job.requested_strength)
    reference, reference_error = None, None
    swap_photos = training_photo_keys(ctx, character) if character and character.photo_keys else []
    if swap_photos:  # a training photo: a held-out one would make its own score a copy
        try:
            reference = ctx.store.get_bytes(swap_photos[0])
        except Exception as exc:  # noqa: BLE001 - an unreadable reference photo only skips face swap
            reference_error = f"{exc.__class__.__name__}: {exc}"[:500]

    chain: list[tuple[str, Route]] = []
    if selection.lora is not None:
        chain.append(("lora", model.lora_route))
    if reference is not None:
        chain.append(("face_swap", model.face_swap_route))
    chain.append(("standard", model.standard_route))

    seed = _seed(job.id)
    attempts: list[RouteAttempt] = []
    rendered: Rendered | None = None
    mode = None
    ignored = False
    for mode, route in chain:
        started, waited = time.perf_counter(), SlotWait()
        try:
            prompt = apply_trigger_word(job.prompt, selection.lora.trigger_word if mode == "lora" else None)
            with route_slot(ctx, route.kind, waited):
                rendered = _render(ctx, route, mode, model, prompt, seed, selection, reference, strengths=strengths)
        except Exception as exc:  # noqa: BLE001 - any route failure falls back; the reason is kept on the job
            ignored = ignored or isinstance(exc, LoraNotApplied)
            attempts.append(_attempt(mode, route, started, waited, f"{exc.__class__.__name__}: {exc}"[:500]))
            continue
        attempts.append(_attempt(mode, route, started, waited, None))
        break

    used_lora = rendered is not None and mode == "lora"
    skipped = None
    if not used_lora:
        skipped = selection.reason or ((LORA_IGNORED if ignored else LORA_ROUTE_FAILED)
                                       if selection.lora is not None else None)
    lora_id = selection.lora.id if used_lora else None
    trigger = selection.lora.trigger_word if used_lora else None
    metadata = {
        "loraModelId": lora_id,
        "triggerWord": trigger,
        "loraSkippedReason": skipped,
        "loraSkippedDetail": None if used_lora else selection.detail,
        "candidateLoraModelId": selection.lora.id if selection.lora is not None else None,
        "requestedLoraModelId": job.requested_lora_model_id,
        "requestedStrength": job.requested_strength,
        "loraStrengthModel": strengths[0] if used_lora else None,
        "loraStrengthClip": strengths[1] if used_lora else None,
        "loraIdentity": selection.identity if used_lora else None,  # "unverified": the file names no owner
        "routes": [asdict(a) for a in attempts],
        "fallback": mode != "lora" and rendered is not None,
    }
    if reference_error:
        metadata["referencePhotoError"] = reference_error
    candidate = selection.candidate.id if selection.candidate is not None else None
    if rendered is None:
        jobs.finish(job.id, "failed", error="every route failed: " + "; ".join(a.error or "" for a in attempts),
                    input_metadata={**job.input_metadata, **metadata}, lora_skipped_reason=skipped,
                    lora_candidate_id=_row_id(candidate))
        return GenerationOutcome(job.id, "failed", None, None, None, skipped, attempts)

    key = generation_output_key(str(job.id), 0)
    ctx.store.put_bytes(key, rendered.image, content_type="image/png")
    metadata["backend"] = rendered.backend
    jobs.finish(
        job.id, "succeeded", output_keys=[key], sent_prompt=rendered.sent_prompt, lora_model_id=lora_id,
        trigger_word=trigger, lora_skipped_reason=skipped, mode=mode, backend=rendered.backend,
        input_metadata={**job.input_metadata, **metadata}, lora_candidate_id=_row_id(candidate),
        lora_strength=rendered.lora_strength if used_lora else None,
    )
    if character is not None:
        scoring = functools.partial(_score_output, job_id=job.id, character=character, image=rendered.image)
        if score_later is None:
            scoring(ctx)
        else:
            score_later(scoring)
    return GenerationOutcome(job.id, "succeeded", mode, lora_id, trigger, skipped, attempts)


def _score_output(ctx: PipelineContext, *, job_id: int, character, image: bytes) -> None:
    try:
        score_job_output(ctx, job_id, character, image)
    except Exception as exc:  # noqa: BLE001 - the job succeeded; it stays unscored and says why
        GenerationJobsRepository(ctx.db).merge_input_metadata(
            job_id, {"faceScoreError": f"{exc.__class__.__name__}: {exc}"[:500]})
