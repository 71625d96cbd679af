"""lora_retention: archive LoRAs nothing uses any more (files out of the store, the GPU side's copy and the pod cache).

Launch it with `dry_run: true` in the launchpad to see what it would archive; the scheduled run archives.
"""

import dagster as dg
from pydantic import Field

from lora_pipelines.assets.metadata import string_table
from lora_pipelines.resources import PipelineResource

COLUMNS = ["lora_model_id", "character_id", "base_model", "idle_since", "idle_days", "files", "pod", "error"]


class RetentionConfig(dg.Config):
    dry_run: bool = Field(default=False, description="List what would be archived; change nothing.")
    older_than_days: float | None = Field(
        default=None, gt=0, description="Idle age in days (default: LORA_PIPELINES_LORA_RETENTION_DAYS).")


def _table(items) -> dg.TableMetadataValue:
    return string_table([{**i.as_dict(), "files": len(i.files)} for i in items], COLUMNS)


@dg.asset(group_name="maintenance", kinds={"python", "s3"})
def lora_retention(context: dg.AssetExecutionContext, config: RetentionConfig,
                   pipeline: PipelineResource) -> dg.MaterializeResult:
    """Archives LoRAs that are not active, not pinned by pending jobs and idle longer than the retention age."""
    from lora_pipelines.services.retention import run_retention

    report = run_retention(pipeline.context, dry_run=config.dry_run, max_age_days=config.older_than_days)
    verb = "would archive" if report.dry_run else "archived"
    context.log.info(f"{verb} {len(report.archived)} LoRA(s); kept {report.kept}")
    return dg.MaterializeResult(metadata={
        "dry_run": report.dry_run,
        "max_age_days": report.max_age_days,
        "archived": 0 if report.dry_run else len(report.archived),
        "would_archive": len(report.archived) if report.dry_run else 0,
        "loras": _table(report.archived),
        "kept": dg.MetadataValue.json(report.kept),
        "skipped": _table(report.skipped),
        "errors": sum(1 for i in report.archived if i.error),
    })
