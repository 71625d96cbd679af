"""The report's tables, from the aggregated counts: rates per slice, trainings, the headline and the checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pandas as pd

from lora_pipelines.reporting.metrics import CHECK_TARGETS, HEADLINE, SPLIT_RATES, CheckTarget, Rate, judge
from lora_pipelines.reporting.metrics import RATES as DEFINITIONS

SHOWN_CHARACTERS = 25  # per-character rows in report.md/report.html and bars in the plot; the CSV keeps every one
SHOWN_BELOW_TARGET = 10  # character ids named in the computed face_consistency description

# (numerator, denominator) columns of each headline rate and of the held-out / in-sample / recogniser split, as
# reporting.metrics defines them
RATES: dict[str, tuple[str, str]] = {name: (DEFINITIONS[name].numerator, DEFINITIONS[name].denominator)
                                     for name in HEADLINE}
SPLIT: dict[str, tuple[str, str]] = {name: (DEFINITIONS[name].numerator, DEFINITIONS[name].denominator)
                                     for name in SPLIT_RATES}
# the counts the by-character / base model / backend / day tables show (the CSVs of face_match hold the split)
TABLE_COLUMNS = [
    "jobs", "succeeded", "lora_eligible", "lora_used", "scored_with_lora", "matched_with_lora",
    "scored_without_lora", "matched_without_lora", "fallback_jobs", "fallback_succeeded",
]  # fmt: skip
SPLIT_COLUMNS = list(dict.fromkeys(c for pair in SPLIT.values() for c in pair))
CHECK_COLUMNS = ["check", "source", "passed", "severity", "rate", "target", "numerator", "denominator",
                 "evaluated_at", "description"]  # fmt: skip


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result as the report shows it: recorded by Dagster, or computed from the report's window."""

    source: str
    passed: bool
    severity: str
    rate: float | None
    target: float | None
    numerator: int | None
    denominator: int | None
    evaluated_at: str | None  # ISO timestamp of the evaluation, None when computed
    description: str


def worst_characters(by_character: pd.DataFrame) -> pd.DataFrame:
    """Per-character rows worst first: lowest face match with LoRA, then lowest success, then most jobs, then id;
    characters with nothing measured come last."""
    order = ["face_match_rate_with_lora", "generation_success_rate", "jobs", "character_id"]
    return by_character.sort_values(order, ascending=[True, True, False, True], na_position="last", kind="stable")


def ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


def group_counts(frame: pd.DataFrame, by: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    columns = columns or TABLE_COLUMNS
    if frame.empty:
        return pd.DataFrame(columns=[*by, *columns]).astype({c: "int64" for c in columns})
    return frame.groupby(by, as_index=False, dropna=False)[columns].sum().sort_values(by).reset_index(drop=True)


def with_rates(frame: pd.DataFrame, rates: dict[str, tuple[str, str]] | None = None) -> pd.DataFrame:
    frame = frame.copy()
    for name, (num, den) in (rates or RATES).items():
        frame[name] = (frame[num] / frame[den].where(frame[den] > 0)).astype("float64")
    return frame


FACE_MATCH_COLUMNS = ["character_id", "character", "lora", "reference", "recogniser", "matched", "scored", "rate"]


def face_match_table(by_character: pd.DataFrame, totals: dict[str, int]) -> pd.DataFrame:
    """One row per character (and "(all)") × with/without LoRA × held-out/in-sample × recogniser, where something
    was scored: face match measured on photos the LoRA never saw is never summed with one on its training photos.
    The "dlib≠sface" rows count the scored jobs on which the two recognisers disagree."""
    grouped = group_counts(by_character, ["character_id", "character"], SPLIT_COLUMNS)
    rows = []
    for counts in [*grouped.to_dict("records"), {"character_id": None, "character": "(all)", **totals}]:
        for lora in ("with_lora", "without_lora"):
            for kind in ("held_out", "in_sample"):
                for recogniser, prefix in (("dlib", "face"), ("sface", "sface")):
                    num, den = SPLIT[f"{prefix}_match_rate_{lora}_{kind}"]
                    if counts[den]:
                        rows.append({"character_id": counts["character_id"], "character": counts["character"],
                                     "lora": lora.replace("_lora", ""), "reference": kind, "recogniser": recogniser,
                                     "matched": int(counts[num]), "scored": int(counts[den]),
                                     "rate": counts[num] / counts[den]})
        num, den = SPLIT["recogniser_disagreement_rate"]
        if counts[den]:
            rows.append({"character_id": counts["character_id"], "character": counts["character"], "lora": "any",
                         "reference": "scoring", "recogniser": "dlib≠sface", "matched": int(counts[num]),
                         "scored": int(counts[den]), "rate": counts[num] / counts[den]})
    return pd.DataFrame(rows, columns=FACE_MATCH_COLUMNS).astype({"rate": "float64"})


def training_table(status: pd.DataFrame, durations: pd.DataFrame) -> pd.DataFrame:
    counts = status.pivot_table(index="base_model", columns="status", values="n", aggfunc="sum", fill_value=0)
    counts = counts.reindex(columns=["ready", "failed", "training", "pending"], fill_value=0).astype("int64")
    stats = durations.groupby("base_model")["minutes"].agg(
        finished_trainings="count", median_minutes="median", p90_minutes=lambda m: m.quantile(0.9)
    )
    table = counts.join(stats, how="outer")
    for column in ("ready", "failed", "training", "pending", "finished_trainings"):
        table[column] = table[column].fillna(0).astype("int64")
    return table.rename_axis("base_model").reset_index().sort_values("base_model").reset_index(drop=True)


def summary_table(headline: dict[str, float | None], totals: dict[str, int], checks: pd.DataFrame) -> pd.DataFrame:
    by_rate = {target.rate: target for target in CHECK_TARGETS}
    passed = dict(zip(checks["check"], checks["passed"], strict=True))
    rows = []
    for name, (num, den) in RATES.items():
        target = by_rate.get(name)
        rows.append({
            "metric": name, "numerator": totals[num], "denominator": totals[den], "rate": headline[name],
            "target": target.target if target else None, "check": target.check if target else "",
            "passed": passed.get(target.check) if target else None,
        })  # fmt: skip
    summary = pd.DataFrame(rows).astype({"rate": "float64", "target": "float64"})
    summary.attrs["jobs"] = totals["jobs"]
    return summary


def checks_table(
    by_character: pd.DataFrame, headline: dict[str, float | None], totals: dict[str, int],
    recorded: Mapping[str, CheckOutcome],
) -> tuple[pd.DataFrame, str]:
    """Every check: its `recorded` outcome when there is one, else computed from the report's rates. Returns the
    table and where the results came from: "dagster" (all recorded), "computed" (none) or "mixed"."""
    rows = []
    for target in CHECK_TARGETS:
        outcome = recorded.get(target.check) or computed_check(target, by_character, headline, totals)
        rows.append({"check": target.check, **asdict(outcome)})
    source = "dagster" if recorded and len(recorded) == len(CHECK_TARGETS) else "computed"
    if recorded and source == "computed":
        source = "mixed"
    return pd.DataFrame(rows, columns=CHECK_COLUMNS).astype({"rate": "float64", "target": "float64"}), source


def computed_check(
    target: CheckTarget, by_character: pd.DataFrame, headline: dict[str, float | None], totals: dict[str, int]
) -> CheckOutcome:
    definition = DEFINITIONS[target.rate]
    num, den = definition.numerator, definition.denominator
    value = headline[target.rate]
    passed, description = judge(Rate(totals[num], totals[den], population=totals[definition.population]),
                                target.target)
    if target.check == "face_consistency":  # like the check: any character under target fails it too
        scored = by_character[by_character["scored_with_lora"] > 0]
        below = worst_characters(scored[scored["face_match_rate_with_lora"] < target.target])
        if len(below):
            passed = False
            named = ", ".join(str(c) for c in below["character_id"].head(SHOWN_BELOW_TARGET))
            more = len(below) - SHOWN_BELOW_TARGET
            description += f"; characters below target: {named}" + (f" and {more} more" if more > 0 else "")
    return CheckOutcome(source="computed from the report window", passed=passed, severity=target.severity,
                        rate=value, target=target.target, numerator=totals[num], denominator=totals[den],
                        evaluated_at=None, description=description)
