"""The users' verdict: the share of ratings of LoRA generations that say "better" than without the LoRA.

The spec's success criterion is "user satisfaction: >80% of users report better consistency". Counted over
ratings given in a window (by `rated_at`) of jobs that used a LoRA, per rating (one per job and person), split by
character and by the LoRA's base model, always with the number of ratings it rests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lora_pipelines.reporting.metrics import OFFENDERS, CheckTarget, Rate
from lora_pipelines.store.database import Database
from lora_pipelines.store.tables import CharacterRow, GenerationFeedbackRow, GenerationJobRow, LoraModelRow

SATISFACTION = CheckTarget("user_satisfaction", "user_satisfaction_rate", 0.80, "WARN")
WINDOW_DAYS = 30.0
COLUMNS = ("ratings", "better", "same", "worse")


@dataclass(frozen=True)
class SatisfactionRow:
    key: str | int  # character id or base model
    label: str  # character name or base model
    ratings: int
    better: int
    same: int
    worse: int

    @property
    def rate(self) -> float | None:
        return None if self.ratings == 0 else self.better / self.ratings


def _since(since: datetime | None, days: float | None) -> datetime | None:
    if since is None and days is not None:
        return datetime.now(UTC) - timedelta(days=days)
    return since


def _rated_lora_jobs(since: datetime | None) -> list:
    conditions = [GenerationJobRow.lora_model_id.is_not(None)]
    if since is not None:
        conditions.append(GenerationFeedbackRow.rated_at >= since)
    return conditions


def satisfaction(db: Database, *, since: datetime | None = None, days: float | None = None) -> Rate:
    """Ratings of LoRA jobs saying "better" / all ratings of LoRA jobs; offenders: jobs rated otherwise."""
    where = _rated_lora_jobs(_since(since, days))
    joined = sa.select(GenerationFeedbackRow).join(GenerationJobRow,
                                                   GenerationJobRow.id == GenerationFeedbackRow.job_id)
    better = GenerationFeedbackRow.verdict == "better"
    with db.session(readonly=True) as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(joined.where(*where).subquery())) or 0
        numerator = session.scalar(
            sa.select(sa.func.count()).select_from(joined.where(*where, better).subquery())) or 0
        offenders = list(session.scalars(
            sa.select(GenerationFeedbackRow.job_id)
            .join(GenerationJobRow, GenerationJobRow.id == GenerationFeedbackRow.job_id)
            .where(*where, sa.not_(better)).order_by(GenerationFeedbackRow.rated_at.desc()).limit(OFFENDERS)))
    return Rate(int(numerator), int(total), offenders)


def satisfaction_by(db: Database, by: str, *, since: datetime | None = None,
                    days: float | None = None) -> list[SatisfactionRow]:
    """One row per character (`by="character"`) or per the LoRA's base model (`by="base_model"`)."""
    if by not in ("character", "base_model"):
        raise ValueError(f"by must be 'character' or 'base_model', got {by!r}")

    def count(verdict: str | None = None):
        condition = sa.true() if verdict is None else GenerationFeedbackRow.verdict == verdict
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    key, label = ((CharacterRow.id, CharacterRow.name) if by == "character"
                  else (LoraModelRow.base_model, LoraModelRow.base_model))
    stmt = (sa.select(key, label, count(), count("better"), count("same"), count("worse"))
            .select_from(GenerationFeedbackRow)
            .join(GenerationJobRow, GenerationJobRow.id == GenerationFeedbackRow.job_id)
            .join(LoraModelRow, LoraModelRow.id == GenerationJobRow.lora_model_id)
            .join(CharacterRow, CharacterRow.id == GenerationJobRow.character_id)
            .where(*_rated_lora_jobs(_since(since, days)))
            .group_by(key, label).order_by(key))
    with db.session(readonly=True) as session:
        return [SatisfactionRow(k, str(name), int(n), int(b), int(s), int(w))
                for k, name, n, b, s, w in session.execute(stmt)]


def summary(db: Database, *, days: float = WINDOW_DAYS) -> dict:
    """What `status` shows: the rate, what it rests on, the target and the window."""
    rate = satisfaction(db, days=days)
    return {"rate": rate.value, "better": rate.numerator, "ratings": rate.denominator,
            "target": SATISFACTION.target, "window_days": days}


def satisfaction_tables(db: Database, since: datetime | None):
    """The report's section: (by character, by base model) DataFrames with ratings, verdicts and the rate."""
    import pandas as pd

    def frame(rows: list[SatisfactionRow], key: str, label: str | None) -> pd.DataFrame:
        columns = [key, *([label] if label else []), *COLUMNS, "rate"]
        records = [{key: r.key, **({label: r.label} if label else {}), "ratings": r.ratings, "better": r.better,
                    "same": r.same, "worse": r.worse, "rate": r.rate} for r in rows]
        table = pd.DataFrame(records, columns=columns)
        return table.astype({c: "int64" for c in COLUMNS} | {"rate": "float64"})

    return (frame(satisfaction_by(db, "character", since=since), "character_id", "character"),
            frame(satisfaction_by(db, "base_model", since=since), "base_model", None))


def computed_check(rate: Rate):
    """The user_satisfaction check as the report computes it when Dagster has no recorded result."""
    from lora_pipelines.reporting.tables import CheckOutcome

    target = SATISFACTION.target
    if rate.value is None:
        passed, description = False, "not measured: no ratings of LoRA generations in the window"
    else:
        passed = rate.value >= target
        description = f"{rate.value:.1%} of {rate.denominator} ratings say better (target ≥ {target:.0%})"
    return CheckOutcome(source="computed from the report window", passed=passed, severity=SATISFACTION.severity,
                        rate=rate.value, target=target, numerator=rate.numerator, denominator=rate.denominator,
                        evaluated_at=None, description=description)
