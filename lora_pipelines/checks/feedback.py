"""The users' verdict, checked with the daily report: ratings of LoRA generations saying "better" (WARN under 80%).

On lora_quality_report rather than generation_outputs: ratings arrive after the images, from users, so a
generation batch has nothing new to say about them; the report runs daily and after a demo's ratings.
"""

import dagster as dg

from lora_pipelines.reporting import feedback
from lora_pipelines.resources import PipelineResource


def _rows(rows: list[feedback.SatisfactionRow]) -> dict:
    return {str(r.key): {"ratings": r.ratings, "better": r.better, "rate": r.rate} for r in rows}


@dg.asset_check(asset="lora_quality_report",
                description="Users reporting better consistency: ratings of LoRA generations saying 'better' than "
                            "without the LoRA, last 30 days; WARN under 80% or with no ratings.")
def user_satisfaction(pipeline: PipelineResource) -> dg.AssetCheckResult:
    db = pipeline.context.db
    days = feedback.WINDOW_DAYS
    rate = feedback.satisfaction(db, days=days)
    target = feedback.SATISFACTION.target
    if rate.value is None:
        passed, description = False, f"not measured: no ratings of LoRA generations in the last {days:g} days"
    else:
        passed = rate.value >= target
        description = f"{rate.value:.1%} of {rate.denominator} ratings say better (target ≥ {target:.0%})"
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.WARN, description=description,
        metadata={"numerator": rate.numerator, "denominator": rate.denominator,
                  "rate": dg.MetadataValue.null() if rate.value is None else dg.MetadataValue.float(rate.value),
                  "target": target, "window_days": days, "worst_offenders": dg.MetadataValue.json(rate.offenders),
                  "by_character": dg.MetadataValue.json(_rows(feedback.satisfaction_by(db, "character", days=days))),
                  "by_base_model": dg.MetadataValue.json(_rows(feedback.satisfaction_by(db, "base_model", days=days)))},
    )


FEEDBACK_CHECKS = [user_satisfaction]
