"""The files of a trained LoRA: one `.safetensors`, or for a two-expert base model (Wan 2.2 14B) a pair.

A pair is ONE LoRA: one lora_models row whose `model_path`/`sha256`/`size_bytes` are the primary (high_noise) file,
at `loras/{model}-character-{id}/{jobId}.high_noise.safetensors`, and `second_expert_*` the low_noise one beside it
(`keys.lora_expert_key`). Publishing fetches both, checks each one's checksum, header, base model and expert, stores
them, checks the stored copies, and only then marks the row ready: a half-published pair is never ready.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lora_pipelines.domain.base_models import lora_experts
from lora_pipelines.domain.keys import lora_expert_key, lora_key
from lora_pipelines.domain.safetensors_inspect import InvalidLoraFileError, LoraInspection, inspect_lora_file
from lora_pipelines.gpu.errors import GpuPermanentError
from lora_pipelines.gpu.schemas import ExpertRef, TrainingResult
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.training import ArtifactChecks
from lora_pipelines.store.lora_models import LoraModelsRepository
from lora_pipelines.store.objects.files import sha256_of_file

EXPERT_METADATA_KEY = "lora_pipelines.expert"  # written by the trainer's header rewrite (modal_apps/artifacts.py)


class IncompleteLoraPairError(ValueError):
    """A training result that does not name the files its base model's LoRA consists of."""


class StoredLora(Protocol):
    """What a lora_models row and a selection candidate both carry about the files."""

    base_model: str
    model_path: str | None
    sha256: str | None
    second_expert_path: str | None
    second_expert_sha256: str | None


@dataclass(frozen=True)
class StoredFile:
    expert: str | None  # None for a single-file LoRA
    key: str | None
    sha256: str | None


def is_pair(base_model: str) -> bool:
    return bool(lora_experts(base_model))


def stored_files(lora: StoredLora) -> list[StoredFile]:
    """The files a row (or candidate) records, primary first. A pair always lists both experts; `key` is None where
    the row records no file."""
    experts = lora_experts(lora.base_model)
    if not experts:
        return [StoredFile(None, lora.model_path, lora.sha256)]
    return [StoredFile(experts[0], lora.model_path, lora.sha256),
            StoredFile(experts[1], lora.second_expert_path, lora.second_expert_sha256)]


def lora_object_keys(row: Any) -> list[str]:
    """Every object key a file of this lora_models row is or may be stored at, primary first: the recorded paths,
    then its base model's conventional keys (the GPU side uploads there before the row is verified, so a failed
    row can have files too). For deleting a LoRA; deleting a key with no object is harmless."""
    experts = lora_experts(row.base_model)
    character_id, job_id = str(row.character_id), str(row.id)
    conventional = ([lora_expert_key(row.base_model, character_id, job_id, e) for e in experts] if experts
                    else [lora_key(row.base_model, character_id, job_id)])
    recorded = [row.model_path, getattr(row, "second_expert_path", None)]
    return list(dict.fromkeys(key for key in (*recorded, *conventional) if key))


def second_expert_ref(ctx: PipelineContext, lora: StoredLora) -> ExpertRef | None:
    """Where the GPU side fetches the second file of a pair (None for a single-file LoRA)."""
    files = stored_files(lora)
    if len(files) < 2:
        return None
    second = files[1]
    return ExpertRef(expert=second.expert, url=ctx.store.presigned_url(second.key), sha256=second.sha256)


# ---- checking one file

@dataclass
class FileCheck:
    """One file of a LoRA against what was recorded for it."""

    expert: str | None
    header_valid: bool = False
    base_model_matches: bool = False
    checksum_matches: bool = False
    unavailable: str | None = None  # why the file could not be fetched at all
    detail: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.header_valid and self.base_model_matches and self.checksum_matches

    def failures(self) -> str:
        """`low_noise file: checksum`, `high_noise file unavailable (...)`; empty when it passed."""
        name = f"{self.expert} file" if self.expert else "file"
        if self.unavailable:
            return f"{name} unavailable ({self.unavailable})"
        outcomes = (("header", self.header_valid), ("base model", self.base_model_matches),
                    ("checksum", self.checksum_matches))
        failed = [what for what, ok in outcomes if not ok]
        return f"{name}: {', '.join(failed)}" if failed else ""


def file_expert(inspection: LoraInspection) -> str | None:
    """The expert a file says it is (our header rewrite writes it); None when it does not say."""
    return inspection.metadata.get(EXPERT_METADATA_KEY)


def check_local_file(local: Path, *, expert: str | None, base_model: str, expected_sha256: str | None,
                     key: str | None) -> FileCheck:
    """Checksum, header and base model of a file on disk; a file saying it is another expert fails the base-model
    check (loaded into the other transformer it would apply to the wrong denoising steps)."""
    digest = sha256_of_file(local)
    check = FileCheck(expert, checksum_matches=digest == expected_sha256,
                      detail={"object_key": key, "expected_sha256": expected_sha256, "downloaded_sha256": digest})
    try:
        inspection = inspect_lora_file(local)
    except InvalidLoraFileError as exc:
        check.detail["header_error"] = str(exc)
        return check
    check.header_valid = True
    check.detail.update(detected_base_model=inspection.base_model, rank=inspection.rank)
    said = file_expert(inspection)
    if expert is not None:
        check.detail["expert"] = expert
        if said is not None:
            check.detail["detected_expert"] = said
    check.base_model_matches = inspection.base_model == base_model and (said is None or said == expert)
    return check


def _unavailable(expert: str | None, key: str | None, reason: str) -> FileCheck:
    reason = reason.splitlines()[0][:300] if reason else "unknown"
    return FileCheck(expert, unavailable=reason, detail={"object_key": key})


def combine(files: list[FileCheck]) -> ArtifactChecks:
    """One ArtifactChecks for the whole LoRA: each check passes only if it passes for every file. `detail` is the
    primary file's, with the second file's under `second_expert`; `detected_base_model` names both when they differ."""
    primary, *rest = files
    detail = dict(primary.detail)
    if primary.unavailable:
        detail["unavailable"] = primary.unavailable
    for other in rest:
        detail["second_expert"] = {**other.detail, **({"unavailable": other.unavailable} if other.unavailable else {})}
        detected = {f.expert: f.detail.get("detected_base_model") for f in files}
        if len(set(detected.values())) > 1:
            detail["detected_base_model"] = ", ".join(f"{expert}: {found}" for expert, found in detected.items())
    return ArtifactChecks(all(f.header_valid for f in files), all(f.base_model_matches for f in files),
                          all(f.checksum_matches for f in files), detail)


# ---- publishing a pair

@dataclass(frozen=True)
class ResultFile:
    """One file of a training result: where it goes, and a single-file view of the result to fetch it with."""

    expert: str
    key: str
    result: TrainingResult


def pair_files(row: Any, result: TrainingResult) -> list[ResultFile]:
    """The result's files for the row's base model, primary first; refuses a result that does not name exactly the
    experts the base model's LoRA consists of."""
    experts = lora_experts(row.base_model)
    where = f"lora_models {row.id}: a {row.base_model} LoRA is"
    if not experts:
        raise IncompleteLoraPairError(f"{where} one file; the training result names a second {result.expert} file")
    named = (result.expert, result.second_expert.expert if result.second_expert else None)
    if result.second_expert is None:
        raise IncompleteLoraPairError(f"{where} two files ({' + '.join(experts)}); the training result has no "
                                      f"second_expert, so the {experts[1]} expert was not published")
    if named != experts:
        raise IncompleteLoraPairError(f"{where} {' + '.join(experts)}; the training result names "
                                      f"{' + '.join(str(e) for e in named)}")
    single = {"expert": None, "second_expert": None}
    second = result.second_expert
    second_view = result.model_copy(update={
        **single, "sha256": second.sha256, "size_bytes": second.size_bytes, "object_key": second.object_key,
        "download_url": second.download_url, "volume_path": second.volume_path, "upload_error": second.upload_error})
    character_id, job_id = str(row.character_id), str(row.id)
    return [ResultFile(experts[0], lora_expert_key(row.base_model, character_id, job_id, experts[0]),
                       result.model_copy(update=single)),
            ResultFile(experts[1], lora_expert_key(row.base_model, character_id, job_id, experts[1]), second_view)]


def _fetch(ctx: PipelineContext, file: ResultFile, local: Path) -> str | None:
    """Bring one file here, from the store when the GPU side uploaded it, else from the GPU side. Returns why it is
    unavailable when the GPU side refuses for good (missing file, no location); transient failures raise, so a
    later run can publish the pair."""
    if file.result.object_key and ctx.store.exists(file.result.object_key):
        ctx.store.download_file(file.result.object_key, local)
        return None
    try:
        ctx.gpu.training.fetch_artifact(file.result, local)
    except GpuPermanentError as exc:
        return str(exc)
    return None


def _store(ctx: PipelineContext, file: ResultFile, local: Path, check: FileCheck) -> None:
    if file.result.object_key != file.key or not ctx.store.exists(file.key):
        ctx.store.put_file(file.key, local)
    stored = ctx.store.sha256(file.key)
    check.detail["stored_sha256"] = stored
    check.checksum_matches = stored == file.result.sha256


def publish_pair(ctx: PipelineContext, row_id: int, result: TrainingResult) -> ArtifactChecks:
    """Put both files of a two-expert LoRA at their keys, verify both, and only then mark the row ready (otherwise
    failed, naming the file and the check). A result that is not the base model's pair fails the row and raises."""
    repo = LoraModelsRepository(ctx.db)
    row = repo.get(row_id)
    try:
        files = pair_files(row, result)
    except IncompleteLoraPairError as exc:
        repo.transition(row.id, "failed", error=str(exc))
        raise
    with tempfile.TemporaryDirectory(prefix="lora-artifact-") as tmp:
        locals_ = [Path(tmp) / f"{row.id}.{file.expert}.safetensors" for file in files]
        checks = []
        for file, local in zip(files, locals_, strict=True):
            unavailable = _fetch(ctx, file, local)
            checks.append(_unavailable(file.expert, file.key, unavailable) if unavailable is not None else
                          check_local_file(local, expert=file.expert, base_model=row.base_model,
                                           expected_sha256=file.result.sha256, key=file.key))
        if all(check.passed for check in checks):  # nothing is stored unless every file is right
            for file, local, check in zip(files, locals_, checks, strict=True):
                _store(ctx, file, local, check)
    artifact = combine(checks)
    if artifact.passed:
        (primary, second), (primary_info, second_info) = files, [ctx.store.stat(f.key) for f in files]
        repo.transition(
            row.id, "ready", model_path=primary.key, model_url=ctx.store.uri(primary.key), sha256=primary.result.sha256,
            size_bytes=primary_info.size_bytes, second_expert_path=second.key,
            second_expert_sha256=second.result.sha256, second_expert_size_bytes=second_info.size_bytes, error=None,
        )
    else:
        failed = "; ".join(check.failures() for check in checks if not check.passed)
        repo.transition(row.id, "failed", error=f"artifact verification failed: {failed}")
    return artifact


# ---- re-checking a ready LoRA

def check_stored_file(ctx: PipelineContext, base_model: str, file: StoredFile, local: Path) -> FileCheck:
    """One recorded file, downloaded from the store and checked against the row."""
    if not file.key:
        return _unavailable(file.expert, None, f"the row records no {file.expert or 'LoRA'} file")
    if not ctx.store.exists(file.key):
        return _unavailable(file.expert, file.key, f"no object at {file.key}")
    ctx.store.download_file(file.key, local)
    check = check_local_file(local, expert=file.expert, base_model=base_model, expected_sha256=file.sha256,
                             key=file.key)
    check.detail["stored_sha256"] = check.detail.pop("downloaded_sha256")
    return check


def verify_ready_pair(ctx: PipelineContext, row: Any) -> ArtifactChecks:
    """Re-check both stored files of a ready two-expert LoRA against the row."""
    with tempfile.TemporaryDirectory(prefix="lora-verify-") as tmp:
        return combine([check_stored_file(ctx, row.base_model, file, Path(tmp) / f"{file.expert}.safetensors")
                        for file in stored_files(row)])
