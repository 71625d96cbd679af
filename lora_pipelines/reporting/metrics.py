"""The product's quality numbers, counted from generation_jobs over a time window: the one definition of each.

Every rate is numerator / denominator over finished jobs (succeeded or failed) in the window, where both are named
counts (COUNTS). The checks (lora_pipelines/checks), `status` and the report (reporting/queries, tables) all count
through COUNTS and RATES, and judge a check through `judge`, so the three can never disagree.

lora_usage_rate          of the generations of LoRA-enabled characters that had a ready LoRA for the model's base
                         model when they ran (`lora_eligible`: selection found one; refused files, identity
                         mismatches, ignored LoRAs and failed LoRA routes included), the share where the backend
                         confirmed it applied the LoRA (`lora_model_id` is set only then)
face_match_rate_*        scored successful jobs whose face matched the character, with and without a LoRA (dlib,
                         against the job's scoring references: held-out photos when the character has some)
  *_held_out / *_in_sample  the same split by what the face was compared with: photos the LoRA never saw, or its
                         training photos; never mixed
sface_match_rate_*       the same by the second recogniser (SFace cosine, "FaceSim")
recogniser_disagreement_rate  scored jobs where dlib and SFace disagree on the match
generation_success_rate  succeeded / finished jobs
fallback_success_rate    succeeded / finished jobs that did not use a LoRA

A check over a window with jobs in its population but none measured fails ("not measured"); a window without
such jobs passes ("no jobs").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lora_pipelines.domain.lora_selection import REFUSALS
from lora_pipelines.store.database import Database
from lora_pipelines.store.tables import GenerationJobRow as J

FINISHED = ("succeeded", "failed")
OFFENDERS = 10
WORST_CHARACTERS = 20  # characters below target named in the face_consistency check


def lora_eligible() -> Any:
    """A ready LoRA for the model's base model existed when the job ran (used or not)."""
    return sa.or_(J.lora_candidate_id.is_not(None), J.lora_model_id.is_not(None),
                  J.lora_skipped_reason.in_(REFUSALS))


had_usable_lora = lora_eligible  # the name before the definition covered every refusal


def _counts() -> dict[str, Any]:
    """Count name -> condition on a finished job in the window."""
    succeeded = J.status == "succeeded"
    used = J.lora_model_id.is_not(None)
    scored = sa.and_(succeeded, J.face_count.is_not(None))
    held_out = J.face_reference == "held_out"
    counts: dict[str, Any] = {
        "jobs": sa.true(),
        "succeeded": succeeded,
        "lora_eligible": lora_eligible(),
        "lora_used": used,
        "scored_with_lora": sa.and_(scored, used),
        "matched_with_lora": sa.and_(scored, used, J.face_match.is_(True)),
        "scored_without_lora": sa.and_(scored, sa.not_(used)),
        "matched_without_lora": sa.and_(scored, sa.not_(used), J.face_match.is_(True)),
        "fallback_jobs": sa.not_(used),
        "fallback_succeeded": sa.and_(sa.not_(used), succeeded),
        "succeeded_with_lora": sa.and_(succeeded, used),
        "succeeded_without_lora": sa.and_(succeeded, sa.not_(used)),
        "both_scored": sa.and_(scored, J.face_match.is_not(None), J.sface_match.is_not(None)),
        "recognisers_disagree": sa.and_(scored, J.face_match.is_not(None), J.sface_match.is_not(None),
                                        J.face_match != J.sface_match),
        "both_scored_dlib_matched": sa.and_(scored, J.face_match.is_(True), J.sface_match.is_not(None)),
        "both_scored_sface_matched": sa.and_(scored, J.sface_match.is_(True), J.face_match.is_not(None)),
    }
    for lora, on in (("with_lora", used), ("without_lora", sa.not_(used))):
        counts[f"held_out_{lora}"] = sa.and_(scored, on, held_out, J.face_match.is_not(None))
        counts[f"held_out_matched_{lora}"] = sa.and_(scored, on, held_out, J.face_match.is_(True))
        counts[f"held_out_sface_{lora}"] = sa.and_(scored, on, held_out, J.sface_match.is_not(None))
        counts[f"held_out_sface_matched_{lora}"] = sa.and_(scored, on, held_out, J.sface_match.is_(True))
        counts[f"in_sample_{lora}"] = sa.and_(scored, on, J.in_sample_face_match.is_not(None))
        counts[f"in_sample_matched_{lora}"] = sa.and_(scored, on, J.in_sample_face_match.is_(True))
        counts[f"in_sample_sface_{lora}"] = sa.and_(scored, on, J.in_sample_sface_match.is_not(None))
        counts[f"in_sample_sface_matched_{lora}"] = sa.and_(scored, on, J.in_sample_sface_match.is_(True))
    return counts


COUNTS = _counts()


@dataclass(frozen=True)
class RateDefinition:
    numerator: str
    denominator: str  # the measured jobs
    population: str  # the jobs the rate is about, measured or not ("not measured" when none of them were)


# The five headline rates (the keys of `status --json` "metrics"), then the split ones.
RATES: dict[str, RateDefinition] = {
    "lora_usage_rate": RateDefinition("lora_used", "lora_eligible", "lora_eligible"),
    "face_match_rate_with_lora": RateDefinition("matched_with_lora", "scored_with_lora", "succeeded_with_lora"),
    "face_match_rate_without_lora": RateDefinition("matched_without_lora", "scored_without_lora",
                                                   "succeeded_without_lora"),
    "generation_success_rate": RateDefinition("succeeded", "jobs", "jobs"),
    "fallback_success_rate": RateDefinition("fallback_succeeded", "fallback_jobs", "fallback_jobs"),
}
HEADLINE = tuple(RATES)
for _lora in ("with_lora", "without_lora"):
    _population = f"succeeded_{_lora}"
    for _kind in ("held_out", "in_sample"):
        RATES[f"face_match_rate_{_lora}_{_kind}"] = RateDefinition(f"{_kind}_matched_{_lora}", f"{_kind}_{_lora}",
                                                                   _population)
        RATES[f"sface_match_rate_{_lora}_{_kind}"] = RateDefinition(
            f"{_kind}_sface_matched_{_lora}", f"{_kind}_sface_{_lora}", _population)
RATES["recogniser_disagreement_rate"] = RateDefinition("recognisers_disagree", "both_scored", "both_scored")
# on the jobs both recognisers scored (each against the job's scoring references): how far their match rates differ
RATES["dlib_match_rate"] = RateDefinition("both_scored_dlib_matched", "both_scored", "both_scored")
RATES["sface_match_rate"] = RateDefinition("both_scored_sface_matched", "both_scored", "both_scored")
SPLIT_RATES = tuple(name for name in RATES if name not in HEADLINE)


@dataclass(frozen=True)
class CheckTarget:
    check: str  # the @asset_check name on generation_outputs
    rate: str  # the RATES key it measures
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
    population: int | None = None  # None: the same as the denominator

    @property
    def value(self) -> float | None:
        return None if self.denominator == 0 else self.numerator / self.denominator

    @property
    def unmeasured(self) -> int:
        return max(0, (self.denominator if self.population is None else self.population) - self.denominator)

    def as_metadata(self) -> dict:
        return {"numerator": self.numerator, "denominator": self.denominator, "rate": self.value,
                "worst_offenders": self.offenders}


def judge(rate: Rate, target: float) -> tuple[bool, str]:
    """(passed, description) of a check on `rate`: no jobs passes, jobs none of which were measured fail."""
    population = rate.denominator if rate.population is None else rate.population
    if rate.denominator == 0:
        if population == 0:
            return True, "no jobs in the window"
        return False, f"not measured: {population} job(s) in the window, none measured"
    value = rate.numerator / rate.denominator
    description = f"{value:.1%} (target ≥ {target:.0%})"
    if rate.unmeasured:
        description += f"; {rate.unmeasured} job(s) not measured"
    return value >= target, description


def _window(since: datetime | None, hours: float | None):
    if since is None and hours is not None:
        since = datetime.now(UTC) - timedelta(hours=hours)
    return [J.finished_at >= since] if since is not None else []


def _sum(condition: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def count_columns(names: list[str] | tuple[str, ...] | None = None) -> list[Any]:
    """SUM(CASE ...) columns, labelled, of the named counts (all when None): for the report's GROUP BYs."""
    return [_sum(COUNTS[name]).label(name) for name in (names or COUNTS)]


def counts(db: Database, names, *, since=None, hours=None, where: tuple = ()) -> dict[str, int]:
    """The named counts over finished jobs in the window, in one pass."""
    names = list(dict.fromkeys(names))
    query = sa.select(*count_columns(names)).where(J.status.in_(FINISHED), *_window(since, hours), *where)
    with db.session(readonly=True) as session:
        return dict(zip(names, (int(v) for v in session.execute(query).one()), strict=True))


def rate(db: Database, name: str, *, since=None, hours=None, character_id=None,
         offender_order: list | None = None) -> Rate:
    """One rate of RATES, with the latest jobs of its denominator that missed (its worst offenders)."""
    definition = RATES[name]
    where = (J.character_id == character_id,) if character_id is not None else ()
    got = counts(db, [definition.numerator, definition.denominator, definition.population], since=since, hours=hours,
                 where=where)
    query = (sa.select(J.id)
             .where(J.status.in_(FINISHED), *_window(since, hours), *where, COUNTS[definition.denominator],
                    sa.not_(COUNTS[definition.numerator]))
             .order_by(*(offender_order or [J.id.desc()])).limit(OFFENDERS))
    with db.session(readonly=True) as session:
        offenders = list(session.scalars(query))
    return Rate(got[definition.numerator], got[definition.denominator], offenders, got[definition.population])


def lora_usage_rate(db: Database, *, since=None, hours=None, character_id=None) -> Rate:
    return rate(db, "lora_usage_rate", since=since, hours=hours, character_id=character_id)


def lora_usage_misses_by_reason(db: Database, *, since=None, hours=None) -> dict[str, int]:
    """The usage rate's denominator jobs that did not apply the LoRA, counted by why (skip reason, or "failed")."""
    reason = sa.func.coalesce(J.lora_skipped_reason, sa.literal("job_failed"))
    query = (sa.select(reason, sa.func.count())
             .where(J.status.in_(FINISHED), *_window(since, hours), lora_eligible(), J.lora_model_id.is_(None))
             .group_by(reason))
    with db.session(readonly=True) as session:
        return {str(r): int(n) for r, n in session.execute(query)}


def face_match_rate(db: Database, *, with_lora: bool, since=None, hours=None, character_id=None) -> Rate:
    name = "face_match_rate_with_lora" if with_lora else "face_match_rate_without_lora"
    return rate(db, name, since=since, hours=hours, character_id=character_id,
                offender_order=[J.face_distance.desc().nulls_first(), J.id.desc()])


def generation_success_rate(db: Database, *, since=None, hours=None, lora_only: bool = False) -> Rate:
    if not lora_only:
        return rate(db, "generation_success_rate", since=since, hours=hours)
    got = counts(db, ["jobs", "succeeded"], since=since, hours=hours, where=(lora_eligible(),))
    return Rate(got["succeeded"], got["jobs"])


def fallback_success_rate(db: Database, *, since=None, hours=None) -> Rate:
    return rate(db, "fallback_success_rate", since=since, hours=hours)


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
    definition = RATES["face_match_rate_with_lora"]
    base = [J.status.in_(FINISHED), COUNTS[definition.denominator], *_window(since, hours)]
    scored = sa.func.count()
    matched = sa.func.sum(sa.case((COUNTS[definition.numerator], 1), else_=0))
    share = sa.cast(matched, sa.Float) / sa.cast(scored, sa.Float)
    query = sa.select(J.character_id, scored, matched, sa.func.count().over()).where(*base).group_by(J.character_id)
    if threshold is not None:
        query = query.having(share < threshold)
    query = query.order_by(share, scored.desc(), J.character_id).limit(limit)
    with db.session(readonly=True) as session:
        rows = session.execute(query).all()
    return CharacterFaceMatch(
        threshold=threshold,
        count=int(rows[0][3]) if rows else 0,
        worst={cid: Rate(int(matched or 0), int(total)) for cid, total, matched, _ in rows},
    )


def rates_from_counts(totals: dict[str, int], names=None) -> dict[str, float | None]:
    """Each named rate (all when None) from already summed counts."""
    return {name: Rate(totals[RATES[name].numerator], totals[RATES[name].denominator]).value
            for name in (names or RATES)}


def all_rates(db: Database, *, since=None, hours=None, where: tuple = ()) -> dict[str, float | None]:
    return rates_from_counts(counts(db, COUNTS, since=since, hours=hours, where=where))


def headline(db: Database, *, since=None, hours=None) -> dict[str, float | None]:
    """The five numbers `status` and the demo print (fractions in [0, 1], None when nothing was measured)."""
    return rates_from_counts(counts(db, COUNTS, since=since, hours=hours), HEADLINE)


def face_match_summary(db: Database, *, since=None, hours=None, where: tuple = ()) -> dict:
    """Face match with and without LoRA, held-out vs in-sample, by each recogniser, with the jobs behind each rate;
    and how often the two recognisers disagree. The shape `status --json` shows as "face_match"."""
    totals = counts(db, COUNTS, since=since, hours=hours, where=where)

    def entry(name: str) -> dict:
        d = RATES[name]
        return {"rate": Rate(totals[d.numerator], totals[d.denominator]).value, "matched": totals[d.numerator],
                "scored": totals[d.denominator]}

    summary: dict[str, Any] = {}
    for lora in ("with_lora", "without_lora"):
        summary[lora] = {kind: {"dlib": entry(f"face_match_rate_{lora}_{kind}"),
                                "sface": entry(f"sface_match_rate_{lora}_{kind}")}
                         for kind in ("held_out", "in_sample")}
    summary["recogniser_disagreement"] = {"rate": entry("recogniser_disagreement_rate")["rate"],
                                          "disagree": totals["recognisers_disagree"],
                                          "scored_by_both": totals["both_scored"],
                                          "dlib_match_rate": entry("dlib_match_rate")["rate"],
                                          "sface_match_rate": entry("sface_match_rate")["rate"]}
    return summary

