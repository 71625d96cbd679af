"""Quality checks on generation_outputs over a rolling window: each carries numerator, denominator, offenders."""

import dagster as dg

from lora_pipelines.reporting import metrics
from lora_pipelines.resources import PipelineResource

WINDOW_HOURS = 24.0


def _number(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(value)


def _result(rate: metrics.Rate, check: str, severity: dg.AssetCheckSeverity, **extra) -> dg.AssetCheckResult:
    target = metrics.TARGETS[check]
    passed, description = metrics.judge(rate, target)
    return dg.AssetCheckResult(
        passed=passed,
        severity=severity,
        description=description,
        metadata={"numerator": rate.numerator, "denominator": rate.denominator, "rate": _number(rate.value),
                  "target": target, "window_hours": WINDOW_HOURS, "not_measured": rate.unmeasured,
                  "worst_offenders": dg.MetadataValue.json(rate.offenders), **extra},
    )


@dg.asset_check(asset="generation_outputs",
                description="Face match rate of LoRA generations (overall and per character); WARN under 95%.")
def face_consistency(pipeline: PipelineResource) -> dg.AssetCheckResult:
    db = pipeline.context.db
    overall = metrics.face_match_rate(db, with_lora=True, hours=WINDOW_HOURS)
    without = metrics.face_match_rate(db, with_lora=False, hours=WINDOW_HOURS)
    below_target = metrics.face_match_by_character(db, hours=WINDOW_HOURS)  # the worst few, not every character
    per_character = {str(cid): r.as_metadata() for cid, r in below_target.worst.items()}
    below = list(per_character)
    split = metrics.face_match_summary(db, hours=WINDOW_HOURS)
    result = _result(overall, "face_consistency", dg.AssetCheckSeverity.WARN,
                     per_character=dg.MetadataValue.json(per_character),
                     characters_below_target=dg.MetadataValue.json(below),
                     characters_below_target_count=below_target.count,
                     face_match_rate_without_lora=_number(without.value),
                     held_out_vs_in_sample=dg.MetadataValue.json(split))
    if below and result.passed:
        more = below_target.count - len(below)
        description = f"characters below target: {', '.join(below)}" + (f" and {more} more" if more else "")
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description=description, metadata=result.metadata)
    return result


@dg.asset_check(asset="generation_outputs",
                description="Of generations that had a ready LoRA for their base model, the share the backend "
                            "confirmed applying it; ERROR under 90%.")
def lora_usage_rate(pipeline: PipelineResource) -> dg.AssetCheckResult:
    db = pipeline.context.db
    return _result(metrics.lora_usage_rate(db, hours=WINDOW_HOURS), "lora_usage_rate", dg.AssetCheckSeverity.ERROR,
                   not_applied_by_reason=dg.MetadataValue.json(
                       metrics.lora_usage_misses_by_reason(db, hours=WINDOW_HOURS)))


@dg.asset_check(asset="generation_outputs", description="Succeeded / finished generation jobs; ERROR under 95%.")
def generation_success_rate(pipeline: PipelineResource) -> dg.AssetCheckResult:
    db = pipeline.context.db
    lora_path = metrics.generation_success_rate(db, hours=WINDOW_HOURS, lora_only=True)
    return _result(metrics.generation_success_rate(db, hours=WINDOW_HOURS), "generation_success_rate",
                   dg.AssetCheckSeverity.ERROR, lora_path_rate=_number(lora_path.value))


@dg.asset_check(asset="generation_outputs",
                description="Jobs that could not use a LoRA still succeed; ERROR under 100%.")
def fallback_success(pipeline: PipelineResource) -> dg.AssetCheckResult:
    return _result(metrics.fallback_success_rate(pipeline.context.db, hours=WINDOW_HOURS), "fallback_success",
                   dg.AssetCheckSeverity.ERROR)


GENERATION_CHECKS = [face_consistency, lora_usage_rate, generation_success_rate, fallback_success]
