"""The LoRA quality report: pandas tables, plots and check results, written to reports/{date}/ in the object store.

The base-model, backend and day tables are summed from the per model × backend × day counts; every rate comes
from those sums, so the report and `status` agree. The Markdown and HTML show the worst SHOWN_CHARACTERS
characters; by_character.csv holds all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

import pandas as pd

from lora_pipelines.domain.keys import report_prefix
from lora_pipelines.reporting import feedback
from lora_pipelines.reporting.feedback import satisfaction_tables
from lora_pipelines.reporting.metrics import Rate
from lora_pipelines.reporting.plots import plot_face_match_by_character, plot_training_durations, plot_trend
from lora_pipelines.reporting.queries import COUNT_COLUMNS, read_report_data
from lora_pipelines.reporting.rendering import render_html, render_markdown
from lora_pipelines.reporting.tables import (
    RATES,
    CheckOutcome,
    checks_table,
    face_match_table,
    group_counts,
    ratio,
    summary_table,
    training_table,
    with_rates,
)
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.objects import ObjectStore


@dataclass
class QualityReport:
    day: date
    since: datetime | None
    prefix: str
    report_uri: str
    keys: list[str]
    headline: dict[str, float | None]
    tables: dict[str, pd.DataFrame]
    plots: dict[str, bytes] = field(repr=False)
    checks_source: str  # "dagster", "computed" or "mixed"
    satisfaction: Rate | None = None  # users reporting better consistency with LoRA (reporting/feedback.py)

    @property
    def summary(self) -> pd.DataFrame:
        return self.tables["summary"]


def utc_today() -> date:
    """Reports are named by the UTC date, like every timestamp they count."""
    return datetime.now(UTC).date()


def build_report(
    ctx: PipelineContext, *, day: date, since: date | datetime | None = None,
    recorded_checks: Mapping[str, CheckOutcome] | None = None, prefix: str | None = None,
) -> QualityReport:
    """Build the report for `day` over jobs finished since `since` and write it under `prefix` (reports/{day}/).

    `recorded_checks`: the latest result of each generation_outputs check by name, as the orchestrator recorded
    it; a check without one (or every check, when None) is computed from the report's rates and the targets.
    """
    if isinstance(day, datetime):
        day = day.date()
    if not isinstance(day, date):
        raise TypeError(f"day must be a date, got {type(day).__name__}")
    since_at = normalize_since(since)

    with ctx.db.engine.connect() as conn:
        data = read_report_data(conn, since_at)

    durations = data.training_durations
    tables = {
        "by_character": with_rates(group_counts(data.by_character, ["character_id", "character"])),
        "by_base_model": with_rates(group_counts(data.by_slice, ["base_model"])),
        "by_backend": with_rates(group_counts(data.by_slice, ["backend"])),
        "by_day": with_rates(group_counts(data.by_slice, ["day"])),
        "training": training_table(data.training_status, durations),
        "training_failures": data.training_failures,
    }
    totals = {c: int(data.by_slice[c].sum()) for c in COUNT_COLUMNS}
    tables["face_match"] = face_match_table(data.by_character, totals)
    headline = {name: ratio(totals[num], totals[den]) for name, (num, den) in RATES.items()}
    checks, source = checks_table(tables["by_character"], headline, totals, recorded_checks or {})
    satisfaction = feedback.satisfaction(ctx.db, since=since_at)
    checks = _with_satisfaction(satisfaction, checks)
    tables["checks"] = checks
    tables = {"summary": summary_table(headline, totals, checks), **tables}
    tables["satisfaction_by_character"], tables["satisfaction_by_base_model"] = satisfaction_tables(ctx.db, since_at)

    plots = {
        "trend": plot_trend(tables["by_day"]),
        "face_match_by_character": plot_face_match_by_character(tables["by_character"]),
        "training_durations": plot_training_durations(durations),
    }
    prefix = prefix or report_prefix(day)
    title = f"LoRA quality report {day.isoformat()}"
    window = f"jobs finished since {since_at.isoformat()}" if since_at else "all finished jobs"
    files: dict[str, tuple[bytes, str]] = {}
    for name, png in plots.items():
        files[f"{name}.png"] = (png, "image/png")
    for name, table in tables.items():
        files[f"{name}.csv"] = (table.to_csv(index=False).encode(), "text/csv")
    files["report.md"] = (render_markdown(title, window, source, tables, list(plots)).encode(), "text/markdown")
    files["report.html"] = (render_html(title, window, source, tables, plots).encode(), "text/html")
    keys = []
    for filename, (data, content_type) in files.items():
        key = f"{prefix}/{filename}"
        ctx.store.put_bytes(key, data, content_type=content_type)
        keys.append(key)
    return QualityReport(
        day=day, since=since_at, prefix=prefix, report_uri=ctx.store.uri(f"{prefix}/report.html"), keys=keys,
        headline=headline, tables=tables, plots=plots, checks_source=source, satisfaction=satisfaction,
    )


def free_report_prefix(store: ObjectStore, day: date) -> str:
    """reports/{day} for the day's first report, then reports/{day}-2, -3...: a report never overwrites another."""
    base = report_prefix(day)
    number = 1
    while store.exists(f"{base if number == 1 else f'{base}-{number}'}/report.md"):
        number += 1
    return base if number == 1 else f"{base}-{number}"


def _with_satisfaction(rate: Rate, checks: pd.DataFrame) -> pd.DataFrame:
    """The users' verdict over the report window as a row of the checks table. Computed here, always: its Dagster
    check (checks/feedback.py) runs on this report asset, after it."""
    from dataclasses import asdict

    row = pd.DataFrame([{"check": feedback.SATISFACTION.check, **asdict(feedback.computed_check(rate))}],
                       columns=checks.columns)
    return pd.concat([checks, row.astype({"rate": "float64", "target": "float64"})], ignore_index=True)


def normalize_since(since: date | datetime | None) -> datetime | None:
    """A date means its midnight UTC; a datetime must carry a timezone."""
    if since is None:
        return None
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise ValueError(f"since {since.isoformat()} has no timezone; pass an aware datetime (UTC) or a date")
        return since.astimezone(UTC)
    if isinstance(since, date):
        return datetime.combine(since, time.min, tzinfo=UTC)
    raise TypeError(f"since must be a date or datetime, got {type(since).__name__}")
