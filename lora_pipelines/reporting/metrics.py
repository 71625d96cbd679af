"""The product's quality numbers, counted from generation_jobs over a time window.

lora_usage_rate          jobs whose character had a usable LoRA (ready, file checked, base model matching)
                         that really generated with it / all such jobs
face_match_rate_*        scored successful jobs whose face matched the character, with and without a LoRA
generation_success_rate  succeeded / finished jobs (overall and on the LoRA path)
fallback_success_rate    succeeded / finished jobs that could not use a LoRA
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lora_pipelines.store.database import Database
from lora_pipelines.store.tables import GenerationJobRow as J

FINISHED = ("succeeded", "failed")
OFFENDERS = 10
WORST_CHARACTERS = 20  # characters below target named in the face_consistency check


@dataclass(frozen=True)
class CheckTarget:
    check: str  # the @asset_check name on generation_outputs
    rate: str  # the headline() key it measures
    target: float
    severity: str


# The product's promises; the Dagster checks and the report both read them from here.
CHECK_TARGETS = (
    CheckTarget("face_consistency", "face_match_rate_with_lora", 0.95, "WARN"),
    CheckTarget("lora_usage_rate", "lora_usage_rate", 0.90, "ERROR"),
    CheckTarget("generation_success_rate", "generation_success_rate", 0.95, "ERROR"),
    CheckTarget("fallback_success", "fallback_success_rate", 1.0, "ERROR"),
)
TARGETS = {t.check: t.target for t in CHECK_TARGETS}


@dataclass
class Rate:
    numerator: int
    denominator: int
    offenders: list[int] = field(default_factory=list)

    @property
    def value(self) -> float | None:
        return None if self.denominator == 0 else self.numerator / self.denominator

    def as_metadata(self) -> dict:
        return {"numerator": self.numerator, "denominator": self.denominator, "rate": self.value,
                "worst_offenders": self.offenders}


def _window(since: datetime | None, hours: float | None):
    if since is None and hours is not None:
        since = datetime.now(UTC) - timedelta(hours=hours)
    return [J.finished_at >= since] if since is not None else []


def _rate(db: Database, base: list, success, offender_order=None) -> Rate:
    with db.session(readonly=True) as session:
        denominator = session.scalar(sa.select(sa.func.count()).select_from(J).where(*base)) or 0
        numerator = session.scalar(sa.select(sa.func.count()).select_from(J).where(*base, success)) or 0
        query = (sa.select(J.id).where(*base, sa.not_(success))
                 .order_by(*(offender_order or [J.id.desc()])).limit(OFFENDERS))
        offenders = list(session.scalars(query))
    return Rate(numerator, denominator, offenders)


def had_usable_lora():
    return sa.or_(J.lora_model_id.is_not(None), J.lora_skipped_reason == "lora_route_failed")


def lora_usage_rate(db: Database, *, since=None, hours=None, character_id=None) -> Rate:
    base = [J.status.in_(FINISHED), had_usable_lora(), *_window(since, hours)]
    if character_id is not None:
        base.append(J.character_id == character_id)
    return _rate(db, base, J.lora_model_id.is_not(None))


def face_match_rate(db: Database, *, with_lora: bool, since=None, hours=None, character_id=None) -> Rate:
    base = [J.status == "succeeded", J.face_count.is_not(None), *_window(since, hours)]
    base.append(J.lora_model_id.is_not(None) if with_lora else J.lora_model_id.is_(None))
    if character_id is not None:
        base.append(J.character_id == character_id)
    return _rate(db, base, J.face_match.is_(True), [J.face_distance.desc().nulls_first(), J.id.desc()])


def generation_success_rate(db: Database, *, since=None, hours=None, lora_only: bool = False) -> Rate:
    base = [J.status.in_(FINISHED), *_window(since, hours)]
    if lora_only:
        base.append(had_usable_lora())
    return _rate(db, base, J.status == "succeeded")


def fallback_success_rate(db: Database, *, since=None, hours=None) -> Rate:
    base = [J.status.in_(FINISHED), J.lora_model_id.is_(None), *_window(since, hours)]
    return _rate(db, base, J.status == "succeeded")


@dataclass
class CharacterFaceMatch:
    """Characters whose face match with LoRA is under `threshold`: how many there are, and the worst of them."""

    threshold: float | None  # None: every character with scored LoRA generations
    count: int  # all characters under the threshold in the window, not only those in `worst`
    worst: dict[int, Rate]  # at most `limit` of them, lowest rate first (then most scored jobs, then id)


def face_match_by_character(
    db: Database, *, since=None, hours=None, threshold: float | None = TARGETS["face_consistency"],
    limit: int = WORST_CHARACTERS,
) -> CharacterFaceMatch:
    """Face match with LoRA per character, only for characters below `threshold` and only the worst `limit`.

    Filtered, ordered and limited in SQL, so the result stays small however many characters the window holds.
    The rate is compared as matched / scored in double precision, the same division as Rate.value.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a fraction between 0 and 1, got {threshold!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    base = [J.status == "succeeded", J.face_count.is_not(None), J.lora_model_id.is_not(None), *_window(since, hours)]
    scored = sa.func.count()
    matched = sa.func.sum(sa.case((J.face_match.is_(True), 1), else_=0))
    rate = sa.cast(matched, sa.Float) / sa.cast(scored, sa.Float)
    query = sa.select(J.character_id, scored, matched, sa.func.count().over()).where(*base).group_by(J.character_id)
    if threshold is not None:
        query = query.having(rate < threshold)
    query = query.order_by(rate, scored.desc(), J.character_id).limit(limit)
    with db.session(readonly=True) as session:
        rows = session.execute(query).all()
    return CharacterFaceMatch(
        threshold=threshold,
        count=int(rows[0][3]) if rows else 0,
        worst={cid: Rate(int(matched or 0), int(total)) for cid, total, matched, _ in rows},
    )


def headline(db: Database, *, since=None, hours=None) -> dict[str, float | None]:
    """The five numbers `status` and the demo print (fractions in [0, 1], None when nothing was measured).

    One pass over the window: every count is a conditional sum, with the same filters as the functions above.
    """
    finished = J.status.in_(FINISHED)
    succeeded = J.status == "succeeded"
    used = J.lora_model_id.is_not(None)
    scored = sa.and_(succeeded, J.face_count.is_not(None))
    matched = J.face_match.is_(True)

    def count(*conditions):
        return sa.func.coalesce(sa.func.sum(sa.case((sa.and_(*conditions), 1), else_=0)), 0)

    query = sa.select(
        count(finished, had_usable_lora()), count(finished, used),
        count(scored, used), count(scored, used, matched),
        count(scored, sa.not_(used)), count(scored, sa.not_(used), matched),
        count(finished), count(succeeded),
        count(finished, sa.not_(used)), count(succeeded, sa.not_(used)),
    ).where(*_window(since, hours))
    with db.session(readonly=True) as session:
        c = [int(v) for v in session.execute(query).one()]
    rates = [Rate(c[i + 1], c[i]) for i in range(0, 10, 2)]
    return dict(zip(("lora_usage_rate", "face_match_rate_with_lora", "face_match_rate_without_lora",
                     "generation_success_rate", "fallback_success_rate"), (r.value for r in rates), strict=True))
