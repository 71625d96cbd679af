"""Training use cases: build a character's dataset, train its LoRA once per dataset, publish a verified artifact.

The lora_models row is the source of truth. Its idempotency key (character, base model, dataset hash) means a
dataset is trained at most once, whatever crashes or repeats; the GPU call id on the row lets any later process
resume polling instead of submitting again.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lora_pipelines.domain.base_models import lora_experts
from lora_pipelines.domain.keys import dataset_prefix, lora_key
from lora_pipelines.domain.lora_identity import LoraIdentity, identity_mismatches
from lora_pipelines.domain.safetensors_inspect import InvalidLoraFileError, inspect_lora_file
from lora_pipelines.gpu.schemas import TrainingPoll, TrainingResult, TrainingSpec
from lora_pipelines.services.checkpoints import checkpoints_to_train
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.references import References, save_references
from lora_pipelines.store.characters import CharactersRepository
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.objects.files import sha256_of_file

MAX_TRAINING_ATTEMPTS = 2  # a lost GPU call is resubmitted once, never more
TRAINER_NAME = "ai-toolkit"


class CharacterNotFound(LookupError):
    pass


class TrainingStillRunning(RuntimeError):
    """The GPU call did not finish within this run's wait; the training_completion sensor picks it up."""


@dataclass
class DatasetDescriptor:
    character_id: int
    base_model: str
    trigger_word: str
    dataset_hash: str
    prefix: str
    zip_key: str
    zip_sha256: str
    usable: int
    min_photos: int
    dropped: list[dict] = field(default_factory=list)
    outliers: list[dict] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)  # usable photos kept out of training, for scoring only

    def to_dict(self) -> dict:
        return asdict(self)


def idempotency_key(character_id: int, base_model: str, dataset_hash: str) -> str:
    return f"train:{character_id}:{base_model}:{dataset_hash}"


def load_photos(ctx: PipelineContext, photo_keys: list[str]) -> list[tuple[str, bytes]]:
    return [(key.rsplit("/", 1)[-1], ctx.store.get_bytes(key)) for key in photo_keys]


def _analysis_key(character) -> str:
    """Where the face analysis of this exact photo set (and trigger word) is remembered."""
    basis = hashlib.sha256("\n".join([character.trigger_word, *sorted(character.photo_keys)]).encode()).hexdigest()
    return f"characters/{character.id}/datasets/{basis[:32]}.json"


def _reuse_analysis(ctx: PipelineContext, character, base_model: str) -> DatasetDescriptor | None:
    """The dataset is the same for every base model: analyse the photos once, copy the files per partition."""
    key = _analysis_key(character)
    if not ctx.store.exists(key):
        return None
    cached = DatasetDescriptor(**json.loads(ctx.store.get_bytes(key)))
    if not ctx.store.exists(cached.zip_key):
        return None
    prefix = dataset_prefix(base_model, str(character.id), cached.dataset_hash)
    if prefix != cached.prefix:
        for name in ("dataset.zip", "manifest.json"):
            ctx.store.put_bytes(f"{prefix}/{name}", ctx.store.get_bytes(f"{cached.prefix}/{name}"))
    return replace(cached, base_model=base_model, prefix=prefix, zip_key=f"{prefix}/dataset.zip",
                   min_photos=ctx.settings.min_photos)


def prepare_dataset(ctx: PipelineContext, character_id: int, base_model: str) -> DatasetDescriptor:
    """Faces found, cropped, captioned and de-duplicated; stored under datasets/… with a manifest and a zip.

    The runs of a character's base models start together: one analyses the photos, the others (on this host)
    wait for it and reuse its analysis."""
    from lora_pipelines.services.host_lock import host_lock

    character = CharactersRepository(ctx.db).get(character_id)
    if character is None:
        raise CharacterNotFound(f"character {character_id} does not exist")
    with host_lock(ctx.settings.resolved_home, _analysis_key(character)):
        return _prepare_dataset(ctx, character, base_model)


def _prepare_dataset(ctx: PipelineContext, character, base_model: str) -> DatasetDescriptor:
    from lora_pipelines.faces.dataset import build_training_dataset

    character_id = character.id
    reused = _reuse_analysis(ctx, character, base_model)
    if reused is not None:
        return reused
    photos = load_photos(ctx, character.photo_keys)
    dataset = build_training_dataset(
        photos, trigger_word=character.trigger_word, analyzer=ctx.analyzer, min_photos=ctx.settings.min_photos
    )
    prefix = dataset_prefix(base_model, str(character_id), dataset.dataset_hash)
    zip_bytes = dataset.to_zip_bytes()
    zip_key = f"{prefix}/dataset.zip"
    ctx.store.put_bytes(zip_key, zip_bytes, content_type="application/zip")
    ctx.store.put_bytes(f"{prefix}/manifest.json", json.dumps(dataset.manifest, indent=2, sort_keys=True).encode())
    save_references(ctx, character_id, _references(photos, dataset))
    descriptor = DatasetDescriptor(
        character_id=character_id,
        base_model=base_model,
        trigger_word=character.trigger_word,
        dataset_hash=dataset.dataset_hash,
        prefix=prefix,
        zip_key=zip_key,
        zip_sha256=hashlib.sha256(zip_bytes).hexdigest(),
        usable=len(dataset.items) + len(dataset.held_out),  # held out only beyond the minimum: training still has it
        min_photos=ctx.settings.min_photos,
        dropped=[{"name": d.name, "reason": d.reason, "detail": d.detail} for d in dataset.dropped],
        outliers=[{"name": name, "distance": round(float(d), 4)} for name, d in dataset.identity.outliers],
        duplicates=[d.name for d in dataset.dropped if d.reason.startswith("near_duplicate")],
        held_out=[h.name for h in dataset.held_out],
    )
    ctx.store.put_bytes(_analysis_key(character), json.dumps(descriptor.to_dict()).encode())
    return descriptor


def _references(photos: list[tuple[str, bytes]], dataset) -> References:
    """The faces scoring compares with: training photos (in-sample) and held-out ones, by dlib and SFace."""
    from lora_pipelines.faces.recognisers import SFaceRecogniser, reference_embeddings

    by_name = dict(photos)
    sface = SFaceRecogniser()
    training = [(item.name, by_name[item.name]) for item in dataset.items]
    held = [(h.name, by_name[h.name]) for h in dataset.held_out]
    return References(
        in_sample={"dlib": [item.embedding for item in dataset.items],
                   "sface": reference_embeddings(sface, training)[0]},
        held_out={"dlib": [h.embedding for h in dataset.held_out], "sface": reference_embeddings(sface, held)[0]}
        if held else {},
        held_out_photos=[h.name for h in dataset.held_out],
    )


def dataset_is_trainable(descriptor: DatasetDescriptor) -> list[str]:
    """Reasons not to spend GPU time on this dataset (empty when it is fine)."""
    problems = []
    if descriptor.usable < descriptor.min_photos:
        problems.append(f"only {descriptor.usable} usable photos, {descriptor.min_photos} needed")
    if descriptor.outliers:
        problems.append("faces of more than one person: " + ", ".join(o["name"] for o in descriptor.outliers))
    return problems


def _spec(ctx: PipelineContext, row, descriptor: DatasetDescriptor) -> TrainingSpec:
    return TrainingSpec(
        character_id=str(descriptor.character_id),
        lora_model_id=str(row.id),
        base_model=descriptor.base_model,
        dataset_url=ctx.store.presigned_url(descriptor.zip_key, expires_seconds=24 * 3600),
        dataset_sha256=descriptor.zip_sha256,
        trigger_word=descriptor.trigger_word,
        dataset_hash=descriptor.dataset_hash,
        output_key=lora_key(descriptor.base_model, str(descriptor.character_id), str(row.id)),
        steps=ctx.settings.training_steps,
        rank=ctx.settings.training_rank,
        idempotency_key=f"{row.idempotency_key}:attempt{row.attempt}",
        checkpoints=checkpoints_to_train(ctx, descriptor.base_model),
    )


def start_training(ctx: PipelineContext, descriptor: DatasetDescriptor):
    """Get-or-create the row for this dataset and submit it once. Returns the row."""
    repo = LoraModelsRepository(ctx.db)
    row = repo.create(
        character_id=descriptor.character_id,
        base_model=descriptor.base_model,
        trigger_word=descriptor.trigger_word,
        idempotency_key=idempotency_key(descriptor.character_id, descriptor.base_model, descriptor.dataset_hash),
        dataset_hash=descriptor.dataset_hash,
        training_model=TRAINER_NAME,
    )
    if row.status != "pending" or row.gpu_call_id:
        return row
    call_id = ctx.gpu.training.submit_training(_spec(ctx, row, descriptor))
    return repo.transition(row.id, "training", gpu_call_id=call_id, job_id=str(row.id), backend=ctx.gpu.training.name)


def wait_for_training(
    ctx: PipelineContext,
    row_id: int,
    descriptor: DatasetDescriptor,
    *,
    timeout_s: float,
    poll_interval_s: float = 1.0,
    on_progress: Callable[[TrainingPoll], None] | None = None,
) -> TrainingResult | None:
    """Poll the row's GPU call until it ends. Returns the result, or None when the row ended failed."""
    repo = LoraModelsRepository(ctx.db)
    deadline = time.monotonic() + timeout_s
    while True:
        row = repo.get(row_id)
        if row.status in ("ready", "failed"):
            return None
        poll = ctx.gpu.training.poll(row.gpu_call_id)
        if on_progress:
            on_progress(poll)
        if poll.state == "succeeded" and poll.result is not None:
            return poll.result
        if poll.state == "failed":
            repo.transition(row.id, "failed", error=f"GPU training failed: {poll.error}")
            return None
        if poll.state == "lost":
            if row.attempt >= MAX_TRAINING_ATTEMPTS:
                repo.transition(row.id, "failed", error=f"GPU call {row.gpu_call_id} lost {row.attempt} times")
                return None
            resubmit_lost(ctx, row, descriptor)
            continue
        if time.monotonic() >= deadline:
            raise TrainingStillRunning(
                f"lora_models {row.id}: GPU call {row.gpu_call_id} still {poll.state} after {timeout_s:.0f}s"
            )
        time.sleep(poll_interval_s)


def resubmit_lost(ctx: PipelineContext, row, descriptor: DatasetDescriptor):
    """A lost call is submitted again under the next attempt's idempotency key, exactly once per attempt.

    Submitted before the row counts the attempt: a crash in between submits again under the same key (the
    backend returns the same call) instead of counting an attempt that never reached the GPU.
    """
    retry = replace(row, attempt=row.attempt + 1)
    call_id = ctx.gpu.training.submit_training(_spec(ctx, retry, descriptor))
    return LoraModelsRepository(ctx.db).update_fields(
        row.id, attempt=retry.attempt, gpu_call_id=call_id, error=f"GPU call {row.gpu_call_id} was lost; resubmitted"
    )


@dataclass
class ArtifactChecks:
    header_valid: bool
    base_model_matches: bool
    checksum_matches: bool
    detail: dict
    identity_matches: bool = True  # the file names no other character, trigger word or dataset than the row

    @property
    def passed(self) -> bool:
        return self.header_valid and self.base_model_matches and self.checksum_matches and self.identity_matches


def _check_identity(row, metadata: dict | None, detail: dict) -> bool:
    """Whose LoRA the file says it is, against the row; recorded in `detail` (identity, identity_problems)."""
    if metadata is None:
        return False
    identity = LoraIdentity.from_metadata(metadata)
    problems = identity_mismatches(identity, character_id=row.character_id, trigger_word=row.trigger_word,
                                   dataset_hash=row.dataset_hash)
    detail["identity"] = identity.status
    detail["file_character_id"] = identity.character_id
    detail["file_trigger_word"] = identity.trigger_word
    detail["file_dataset_hash"] = identity.dataset_hash
    if problems:
        detail["identity_problems"] = problems
    return not problems


def _has_expert_files(base_model: str, result: TrainingResult | None = None) -> bool:
    """A two-expert LoRA (services/lora_files.py), or a result naming expert files."""
    return bool(lora_experts(base_model)) or (result is not None and result.second_expert is not None)


def publish_artifact(ctx: PipelineContext, row_id: int, result: TrainingResult) -> ArtifactChecks:
    """Put the file at its key, verify it, and only then mark the row ready (otherwise failed)."""
    repo = LoraModelsRepository(ctx.db)
    row = repo.get(row_id)
    if _has_expert_files(row.base_model, result):  # Wan 2.2 14B: two files, one LoRA
        from lora_pipelines.services.lora_files import publish_pair

        return publish_pair(ctx, row.id, result)
    key = lora_key(row.base_model, str(row.character_id), str(row.id))
    with tempfile.TemporaryDirectory(prefix="lora-artifact-") as tmp:
        local = Path(tmp) / f"{row.id}.safetensors"
        if result.object_key and ctx.store.exists(result.object_key):
            ctx.store.download_file(result.object_key, local)
        else:
            ctx.gpu.training.fetch_artifact(result, local)
        local_sha = sha256_of_file(local)
        detail: dict = {"object_key": key, "expected_sha256": result.sha256, "downloaded_sha256": local_sha}
        try:
            inspection = inspect_lora_file(local)
            header_valid = True
            detail["detected_base_model"] = inspection.base_model
            detail["rank"] = inspection.rank
            identity_ok = _check_identity(row, inspection.metadata, detail)
        except InvalidLoraFileError as exc:
            identity_ok = False
            inspection = None
            header_valid = False
            detail["header_error"] = str(exc)
        base_ok = inspection is not None and inspection.base_model == row.base_model
        checksum_ok = local_sha == result.sha256
        if checksum_ok and header_valid:
            if result.object_key != key or not ctx.store.exists(key):
                ctx.store.put_file(key, local)
            stored_sha = ctx.store.sha256(key)
            detail["stored_sha256"] = stored_sha
            checksum_ok = stored_sha == result.sha256
    checks = ArtifactChecks(header_valid, base_ok, checksum_ok, detail, identity_ok)
    if checks.passed:
        info = ctx.store.stat(key)
        repo.transition(
            row.id, "ready", model_path=key, model_url=ctx.store.uri(key), sha256=result.sha256,
            size_bytes=info.size_bytes, error=None,
        )
    else:
        outcomes = (("header", header_valid), ("base model", base_ok), ("checksum", checksum_ok),
                    ("identity", identity_ok))
        failed = [name for name, ok in outcomes if not ok]
        repo.transition(row.id, "failed", error="artifact verification failed: " + ", ".join(failed))
    return checks


def verify_ready_artifact(ctx: PipelineContext, row) -> ArtifactChecks:
    """Re-check a ready LoRA's stored file (a re-run of an already trained dataset trains nothing)."""
    if _has_expert_files(row.base_model):
        from lora_pipelines.services.lora_files import verify_ready_pair

        return verify_ready_pair(ctx, row)
    detail: dict = {"object_key": row.model_path, "expected_sha256": row.sha256}
    with tempfile.TemporaryDirectory(prefix="lora-verify-") as tmp:
        local = Path(tmp) / "lora.safetensors"
        ctx.store.download_file(row.model_path, local)
        detail["stored_sha256"] = sha256_of_file(local)
        try:
            inspection = inspect_lora_file(local)
            detail["detected_base_model"] = inspection.base_model
            header_valid = True
            identity_ok = _check_identity(row, inspection.metadata, detail)
        except InvalidLoraFileError as exc:
            header_valid = identity_ok = False
            detail["header_error"] = str(exc)
    base_ok = detail.get("detected_base_model") == row.base_model
    return ArtifactChecks(header_valid, base_ok, detail["stored_sha256"] == row.sha256, detail, identity_ok)

