"""Retention: archive LoRAs nothing uses any more, removing their files from the object store, the training
backend's own copy (the Modal volume; the simulated service's folder) and the ComfyUI pod's cache.

Which ones: domain/retention.py. Each is archived under its row locks after checking again that it is neither active
nor pinned; its files are deleted only after the row says `archived`, so a crash leaves files to sweep, never a
ready LoRA without its file. A LoRA the pod is generating with right now is left for the next run. A dry run
computes the same list and changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from lora_pipelines.domain.keys import lora_key
from lora_pipelines.domain.retention import ARCHIVE, Activation, RetentionLora, plan_retention
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.generation_jobs import GenerationJobsRepository
from lora_pipelines.store.lora_activations import LoraActivationsRepository
from lora_pipelines.store.lora_models import LoraModel, LoraModelsRepository
from lora_pipelines.store.tables import LoraModelRow, utcnow

MAX_PER_RUN = 500


@dataclass
class RetentionItem:
    lora_model_id: int
    character_id: int
    base_model: str
    idle_since: str | None
    idle_days: float | None
    action: str  # "archive" (done, or would be in a dry run) or why it is kept: active / pinned / recent / ...
    files: list[str] = field(default_factory=list)  # object keys removed (or that would be)
    volume_removed: list[str] = field(default_factory=list)
    pod: str | None = None  # removed / absent / in_use / not_configured
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RetentionReport:
    dry_run: bool
    max_age_days: float
    archived: list[RetentionItem]  # archived, or that a dry run would archive
    kept: dict[str, int]  # reason -> how many ready LoRAs were kept for it
    skipped: list[RetentionItem]  # planned, but found in use or failing when it came to it
    now: datetime

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "max_age_days": self.max_age_days, "now": self.now.isoformat(),
                "archived": [i.as_dict() for i in self.archived], "kept": dict(self.kept),
                "skipped": [i.as_dict() for i in self.skipped]}


def _ready_loras(ctx: PipelineContext) -> list[LoraModel]:
    rows, after = [], 0
    repo = LoraModelsRepository(ctx.db)
    while True:
        page = repo.list_by_status("ready", limit=1000, after_id=after)
        rows.extend(page)
        if len(page) < 1000:
            return rows
        after = page[-1].id


def lora_files(ctx: PipelineContext, lora: LoraModel) -> list[str]:
    """Every object of this LoRA: its file (both of a pair), kept checkpoints (`{jobId}.*` beside the key)."""
    stem = lora_key(lora.base_model, str(lora.character_id), str(lora.id)).removesuffix("safetensors")
    keys = {info.key for info in ctx.store.list(stem)}
    keys |= {k for k in (lora.model_path, lora.second_expert_path) if k}  # a Wan 2.2 pair's two files
    return sorted(keys)


def plan(ctx: PipelineContext, *, max_age_days: float | None = None, now: datetime | None = None):
    """(decisions for every ready LoRA, the LoRA rows by id)."""
    now = now or utcnow()
    max_age = timedelta(days=ctx.settings.lora_retention_days if max_age_days is None else max_age_days)
    ready = _ready_loras(ctx)
    characters = sorted({r.character_id for r in ready})
    versions = LoraActivationsRepository(ctx.db)
    activations = [Activation(a.character_id, a.base_model, a.lora_model_id, a.created_at)
                   for a in versions.all_for(characters)]
    active = set(versions.active_ids(characters).values())
    pinned = GenerationJobsRepository(ctx.db).pinned_lora_ids()
    decisions = plan_retention(
        [RetentionLora(r.id, r.character_id, r.base_model, r.finished_at, r.created_at) for r in ready],
        activations, active, pinned, now=now, max_age=max_age)
    return decisions, {r.id: r for r in ready}


def run_retention(ctx: PipelineContext, *, dry_run: bool = False, max_age_days: float | None = None,
                  now: datetime | None = None, limit: int = MAX_PER_RUN) -> RetentionReport:
    now = now or utcnow()
    age = ctx.settings.lora_retention_days if max_age_days is None else float(max_age_days)
    if not age > 0:
        raise ValueError(f"the retention age must be a positive number of days, got {age!r}")
    decisions, rows = plan(ctx, max_age_days=age, now=now)
    kept: dict[str, int] = {}
    chosen = []
    for decision in sorted(decisions, key=lambda d: (d.idle_since or now, d.lora.id)):
        if decision.archive and len(chosen) < limit:
            chosen.append(decision)
        else:
            reason = decision.action if not decision.archive else "over this run's limit"
            kept[reason] = kept.get(reason, 0) + 1
    report = RetentionReport(dry_run, age, [], kept, [], now)
    for decision in chosen:
        lora = rows[decision.lora.id]
        item = RetentionItem(lora.id, lora.character_id, lora.base_model,
                             decision.idle_since.isoformat(timespec="seconds") if decision.idle_since else None,
                             round((now - decision.idle_since).total_seconds() / 86400, 2)
                             if decision.idle_since else None, ARCHIVE, lora_files(ctx, lora))
        if dry_run:
            report.archived.append(item)
            continue
        (report.archived if _archive(ctx, lora, item) else report.skipped).append(item)
    report.archived.extend(sweep_archived(ctx) if not dry_run else [])
    return report


def _archive(ctx: PipelineContext, lora: LoraModel, item: RetentionItem) -> bool:
    """Archive one LoRA and remove its files; False (with the reason in `item`) when it must stay."""
    from lora_pipelines.gpu.pod_cache import remove_from_pod

    loras_root = ctx.gpu.loras_root
    if loras_root is None:
        item.pod = "not_configured"
    else:
        item.pod = remove_from_pod(str(lora.id), loras_root)
        if item.pod == "in_use":
            item.action = "kept: a generation on the pod is using it; the next run archives it"
            return False
    archived, why = LoraActivationsRepository(ctx.db).archive_unused(lora.id)
    if not archived:
        item.action = f"kept: {why}"
        return False
    _remove_files(ctx, lora, item)
    return True


def _remove_files(ctx: PipelineContext, lora: LoraModel, item: RetentionItem) -> None:
    from lora_pipelines.gpu.base import RemovesTrainedFiles

    errors = []
    training = ctx.gpu.training
    if isinstance(training, RemovesTrainedFiles):
        # the checkpoints scored at training time too: their store copies went at publishing, not the GPU side's
        checkpoints = {c["key"] for c in (lora.validation or {}).get("checkpoints", []) if c.get("key")}
        try:
            item.volume_removed = training.remove_trained_files(lora.gpu_call_id, sorted({*item.files, *checkpoints}))
        except Exception as exc:  # noqa: BLE001 - the row is archived; the leftover copy is reported
            errors.append(f"volume copy: {type(exc).__name__}: {str(exc)[:200]}")
    for key in item.files:
        try:
            ctx.store.delete(key)
        except Exception as exc:  # noqa: BLE001 - reported; sweep_archived tries again next run
            errors.append(f"{key}: {type(exc).__name__}: {str(exc)[:200]}")
    item.error = "; ".join(errors) or None


def sweep_archived(ctx: PipelineContext, limit: int = 100) -> list[RetentionItem]:
    """Archived LoRAs whose files a crash (or a failed delete) left in the store: delete them now."""
    stmt = (sa.select(LoraModelRow).where(LoraModelRow.status == "archived")
            .order_by(LoraModelRow.archived_at.desc().nulls_last()).limit(limit))
    with ctx.db.session(readonly=True) as session:
        archived = [LoraModelsRepository(ctx.db).get(r.id) for r in session.scalars(stmt)]
    swept = []
    for lora in archived:
        files = [k for k in lora_files(ctx, lora) if ctx.store.exists(k)]
        if not files:
            continue
        item = RetentionItem(lora.id, lora.character_id, lora.base_model, None, None, "archive (files swept)", files)
        _remove_files(ctx, lora, item)
        swept.append(item)
    return swept
