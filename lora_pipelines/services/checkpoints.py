"""Publishing the best checkpoint of a training, not the last: each is scored on a few sample images.

Every checkpoint the GPU side returned is put in the object store beside the LoRA's key
(`{jobId}.step{step:06d}.safetensors`), generated with on the model's LoRA route (the same code path generation
uses: Modal endpoint or ComfyUI pod) on SAMPLE_PROMPTS with fixed seeds, so checkpoints and retrains of a character
are compared on the same images, and scored by a `LikenessScorer` (faces/likeness_scoring.py: held-out likeness).
The best score (ties: the earlier step) is published; all scores go on the row (`validation`) and its score is the row's
`validation_score`, which the quality gate compares between versions.

Nothing is scored when the base model has no LoRA generation surface (Wan) or the character has no usable
reference face: the final checkpoint is published unscored, and the row says why.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lora_pipelines.domain.base_models import lora_experts
from lora_pipelines.domain.checkpoints import best_step, checkpoint_key
from lora_pipelines.domain.keys import lora_key
from lora_pipelines.domain.lora_selection import LoraCandidate, LoraSelection
from lora_pipelines.domain.model_registry import MODELS, ModelEntry
from lora_pipelines.domain.prompts import apply_trigger_word
from lora_pipelines.faces.likeness_scoring import LikenessScorer, SampleScores
from lora_pipelines.gpu.schemas import CheckpointFile, TrainingResult
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.lora_models import LoraModel, LoraModelsRepository
from lora_pipelines.store.objects.files import sha256_of_file

SAMPLE_PROMPTS = (
    "portrait photo, soft window light",
    "close-up portrait outdoors, natural light",
    "portrait photo in a cafe, 50mm",
    "headshot, studio lighting, neutral background",
)
SAMPLE_SEED = 7_000  # sample i uses seed SAMPLE_SEED + i, for every checkpoint of every training
ScorerFactory = Callable[[PipelineContext, object], LikenessScorer | None]


@dataclass
class CheckpointScore:
    step: int
    sha256: str
    key: str
    scores: SampleScores | None = None
    error: str | None = None

    @property
    def likeness(self) -> float | None:
        return None if self.scores is None else self.scores.likeness

    def as_dict(self) -> dict:
        return {"step": self.step, "sha256": self.sha256, "key": self.key,
                **(self.scores.as_dict() if self.scores else {"likeness": None}), "error": self.error}


@dataclass
class CheckpointChoice:
    result: TrainingResult  # the chosen checkpoint as the result to publish
    checkpoints: list[CheckpointScore]
    chosen_step: int
    scorer: str | None
    reference: str | None
    reason: str
    reused: bool = False
    validation: dict = field(default_factory=dict)

    @property
    def validation_score(self) -> float | None:
        """The chosen checkpoint's likeness, as recorded (4 decimals)."""
        score = next((c.likeness for c in self.checkpoints if c.step == self.chosen_step), None)
        return None if score is None else round(score, 4)


def sampling_model(base_model: str) -> ModelEntry | None:
    """The registry model that generates with this base model's LoRAs (None: no surface applies one)."""
    return next((m for m in MODELS if m.base_model == base_model and m.supports_lora), None)


def checkpoints_to_train(ctx: PipelineContext, base_model: str) -> int:
    """How many checkpoints to ask the trainer for: one when they could not be compared (no LoRA generation
    surface for the base model, or a two-expert LoRA)."""
    if sampling_model(base_model) is None or lora_experts(base_model):
        return 1
    return ctx.settings.training_checkpoints


def heldout_scorer(ctx: PipelineContext, character) -> LikenessScorer | None:
    """Held-out likeness (faces/likeness.py) against the character's held-out photos, near copies of its training
    photos scoring 0. A character with no held-out photo (no more usable photos than the training minimum) is scored
    against its training photos, and the record says "in-sample"."""
    from lora_pipelines.faces.likeness_scoring import HeldOutScorer
    from lora_pipelines.services.references import load_references

    references = load_references(ctx, character)
    held_out, training = references.held_out.get("sface", []), references.in_sample.get("sface", [])
    if held_out:
        return HeldOutScorer(held_out, training, reference=f"held-out photos ({len(held_out)})")
    if training:
        return HeldOutScorer(training, training, reference=f"training photos ({len(training)}, in-sample)")
    return None


def _files(result: TrainingResult, final_step: int) -> list[CheckpointFile]:
    if result.checkpoints:
        return list(result.checkpoints)
    return [CheckpointFile(step=final_step, sha256=result.sha256, size_bytes=result.size_bytes,
                           object_key=result.object_key, download_url=result.download_url,
                           volume_path=result.volume_path, upload_error=result.upload_error)]


def _store_checkpoint(ctx: PipelineContext, row: LoraModel, result: TrainingResult, cp: CheckpointFile,
                      final: bool) -> str:
    """The store key holding this checkpoint (fetched from the GPU side and verified when it is not there yet)."""
    main = lora_key(row.base_model, str(row.character_id), str(row.id))
    if final and cp.object_key and ctx.store.exists(cp.object_key):
        return cp.object_key
    key = checkpoint_key(main, cp.step)
    if cp.object_key and cp.object_key != key and ctx.store.exists(cp.object_key):
        key = cp.object_key
    if ctx.store.exists(key) and ctx.store.sha256(key) == cp.sha256:
        return key
    with tempfile.TemporaryDirectory(prefix="lora-checkpoint-") as tmp:
        local = Path(tmp) / "checkpoint.safetensors"
        source = result.model_copy(update={"sha256": cp.sha256, "size_bytes": cp.size_bytes, "object_key": None,
                                           "download_url": cp.download_url, "volume_path": cp.volume_path})
        ctx.gpu.training.fetch_artifact(source, local)
        if sha256_of_file(local) != cp.sha256:
            raise ValueError(f"checkpoint at step {cp.step} does not match its sha256")
        ctx.store.put_file(key, local)
    return key


def sample_image(ctx: PipelineContext, model: ModelEntry, lora: LoraCandidate, index: int) -> bytes | None:
    """Sample `index` generated with this LoRA file on the model's LoRA route (None when it failed)."""
    from lora_pipelines.gpu.limits import SlotWait
    from lora_pipelines.services.generation import _render
    from lora_pipelines.services.route_limits import route_slot

    selection = LoraSelection(lora=lora, reason=None, detail="checkpoint sample", trigger_word=lora.trigger_word)
    prompt = apply_trigger_word(SAMPLE_PROMPTS[index % len(SAMPLE_PROMPTS)], lora.trigger_word)
    try:  # the same call slots as generations: a ComfyUI pod's limit holds for samples too
        with route_slot(ctx, model.lora_route.kind, SlotWait()):
            return _render(ctx, model.lora_route, "lora", model, prompt, SAMPLE_SEED + index, selection, None).image
    except Exception:  # noqa: BLE001 - a sample that fails counts as missing, not as a bad likeness
        return None


def sample_images(ctx: PipelineContext, model: ModelEntry, loras: list[LoraCandidate],
                  count: int) -> list[list[bytes | None]]:
    """`count` sample images of each LoRA file, generated a few at a time (the GPU side runs them in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    # as many at once as a generation run makes: route_slot holds them to LORA_PIPELINES_GPU_CONCURRENCY anyway
    workers = ctx.settings.gpu_concurrency
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="checkpoint-sample") as pool:
        futures = [[pool.submit(sample_image, ctx, model, lora, i) for i in range(count)] for lora in loras]
        return [[f.result() for f in row] for row in futures]


def sample_lora_id(row_id: int, step: int) -> str:
    """The id a checkpoint is generated under (its file name on the pod): `{row}.step{step:06d}`."""
    return f"{row_id}.step{step:06d}"


def choose_checkpoint(ctx: PipelineContext, row_id: int, result: TrainingResult, *,
                      scorer_factory: ScorerFactory = heldout_scorer) -> CheckpointChoice:
    """Score every checkpoint, record the scores on the row and return the best as the result to publish.
    Decided once per row: a re-run with the chosen file still in the store reuses the recorded choice."""
    repo = LoraModelsRepository(ctx.db)
    row = repo.get(row_id)
    reused = _recorded_choice(ctx, row, result)
    if reused is not None:
        return reused
    files = _files(result, ctx.settings.training_steps)
    final_step = files[-1].step
    scored = []
    for cp in files:
        if cp is files[-1]:  # the final file must be there: it is what is published when nothing can be scored
            scored.append(CheckpointScore(cp.step, cp.sha256, _store_checkpoint(ctx, row, result, cp, True)))
            continue
        try:
            scored.append(CheckpointScore(cp.step, cp.sha256, _store_checkpoint(ctx, row, result, cp, False)))
        except Exception as exc:  # noqa: BLE001 - a checkpoint that cannot be fetched is left out, and says why
            scored.append(CheckpointScore(cp.step, cp.sha256, "", error=f"not fetched: {type(exc).__name__}: "
                                                                         f"{str(exc)[:200]}"))
    fetched = [c for c in scored if c.key]
    model = sampling_model(row.base_model)
    character = CharactersRepository(ctx.db).get(row.character_id)
    scorer = scorer_factory(ctx, character) if model is not None and character is not None else None
    if model is None:
        reason = f"no generation surface applies {row.base_model} LoRAs: the final checkpoint, unscored"
    elif scorer is None:
        reason = "no reference face to score against: the final checkpoint, unscored"
    else:
        candidates = [LoraCandidate(id=sample_lora_id(row.id, c.step), base_model=row.base_model,
                                    trigger_word=row.trigger_word, sha256=c.sha256, model_path=c.key) for c in fetched]
        samples = sample_images(ctx, model, candidates, ctx.settings.checkpoint_samples)
        for checkpoint, images in zip(fetched, samples, strict=True):
            checkpoint.scores = scorer.score(images)
            if checkpoint.likeness is None:
                checkpoint.error = "no sample rendered"
        reason = "best likeness" if any(c.likeness is not None for c in scored) else \
            "no sample rendered: the final checkpoint, unscored"
    chosen_step = best_step([(c.step, c.likeness) for c in scored]) or final_step
    chosen = next(c for c in scored if c.step == chosen_step)
    choice = CheckpointChoice(
        result=_as_result(result, next(cp for cp in files if cp.step == chosen_step), chosen.key),
        checkpoints=scored, chosen_step=chosen_step, scorer=scorer.name if scorer else None,
        reference=scorer.reference if scorer else None, reason=reason)
    choice.validation = {"scorer": choice.scorer, "reference": choice.reference, "reason": reason,
                         "chosen_step": chosen_step, "final_step": final_step,
                         "samples": ctx.settings.checkpoint_samples, "checkpoints": [c.as_dict() for c in scored]}
    repo.update_fields(row.id, validation_score=choice.validation_score, validation=choice.validation)
    return choice


def _as_result(result: TrainingResult, cp: CheckpointFile, key: str) -> TrainingResult:
    return result.model_copy(update={"sha256": cp.sha256, "size_bytes": cp.size_bytes, "object_key": key,
                                     "download_url": cp.download_url, "volume_path": cp.volume_path,
                                     "upload_error": None})


def _recorded_choice(ctx: PipelineContext, row: LoraModel, result: TrainingResult) -> CheckpointChoice | None:
    record = row.validation or {}
    chosen = next((c for c in record.get("checkpoints", []) if c.get("step") == record.get("chosen_step")), None)
    if chosen is None or not ctx.store.exists(chosen["key"]):
        return None
    files = {cp.step: cp for cp in _files(result, record.get("final_step") or ctx.settings.training_steps)}
    cp = files.get(chosen["step"]) or CheckpointFile(step=chosen["step"], sha256=chosen["sha256"], size_bytes=0)
    if cp.sha256 != chosen["sha256"]:
        return None
    scored = [CheckpointScore(c["step"], c["sha256"], c["key"], _scores(c), c.get("error"))
              for c in record["checkpoints"]]
    return CheckpointChoice(result=_as_result(result, cp, chosen["key"]), checkpoints=scored,
                            chosen_step=chosen["step"], scorer=record.get("scorer"), reference=record.get("reference"),
                            reason=record.get("reason", ""), reused=True, validation=record)


def _scores(c: dict) -> SampleScores | None:
    if c.get("likeness") is None and not c.get("per_image"):
        return None
    return SampleScores(c.get("likeness"), c.get("per_image", []), c.get("faces", 0), c.get("near_copies", 0))


def discard_checkpoints(ctx: PipelineContext, row_id: int) -> list[str]:
    """After the chosen checkpoint is published at the LoRA's key: remove the checkpoint copies (store, the GPU
    side's own copies, the pod cache); returns the store keys removed."""
    from lora_pipelines.gpu.base import RemovesTrainedFiles
    from lora_pipelines.gpu.pod_cache import remove_from_pod

    row = LoraModelsRepository(ctx.db).get(row_id)
    main = lora_key(row.base_model, str(row.character_id), str(row.id))
    record = row.validation or {}
    keys = sorted({c["key"] for c in record.get("checkpoints", []) if c.get("key") and c["key"] != main})
    if not keys:
        return []
    for key in keys:
        ctx.store.delete(key)
    training = ctx.gpu.training
    if isinstance(training, RemovesTrainedFiles):
        try:
            training.remove_trained_files(row.gpu_call_id, [k for k in keys if k != main])
        except Exception:  # noqa: BLE001 - a leftover copy on the GPU side goes with the LoRA at retention
            pass
    if ctx.gpu.loras_root is not None:
        for c in record.get("checkpoints", []):
            remove_from_pod(sample_lora_id(row.id, c["step"]), ctx.gpu.loras_root)
    return keys
