"""The LoRA quality report: pandas tables, plots and check results, written to reports/{date}/ in the object store.

Job counts are aggregated in SQL with two GROUP BYs over generation_jobs: one per character (names joined to the
sums, so only the characters that appear are read) and one per model × backend × day, whose rows do not grow with
the number of characters; the base-model, backend and day tables are summed from the latter. Every rate then comes
from those sums with the definitions of `services.metrics` (same filters, same denominators), so the report and
`status` agree. The Markdown and HTML show the worst SHOWN_CHARACTERS characters; by_character.csv holds all.

Window: jobs and LoRA trainings that finished at or after `since` (all history when None), up to now.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import pandas as pd
import sqlalchemy as sa
from matplotlib.figure import Figure

from lora_pipelines.domain.keys import report_prefix
from lora_pipelines.domain.model_registry import UnknownModelError, get_model
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.services.metrics import CHECK_TARGETS, FINISHED, CheckTarget, had_usable_lora
from lora_pipelines.store.tables import CharacterRow as C
from lora_pipelines.store.tables import GenerationJobRow as J
from lora_pipelines.store.tables import LoraModelRow as L

CHECKED_ASSET = "generation_outputs"
UNKNOWN = "unknown"
PLOT_SIZE = (8.0, 4.5)  # inches at 100 dpi: 800x450 px
PLOT_DPI = 100
THUMBNAIL_SIZE = (320, 180)
TOP_FAILURE_REASONS = 3
SHOWN_CHARACTERS = 25  # per-character rows in report.md/report.html and bars in the plot; the CSV keeps every one
SHOWN_BELOW_TARGET = 10  # character ids named in the computed face_consistency description

# (numerator, denominator) columns of each headline rate; the keys are those of metrics.headline
RATES: dict[str, tuple[str, str]] = {
    "lora_usage_rate": ("lora_used", "lora_eligible"),
    "face_match_rate_with_lora": ("matched_with_lora", "scored_with_lora"),
    "face_match_rate_without_lora": ("matched_without_lora", "scored_without_lora"),
    "generation_success_rate": ("succeeded", "jobs"),
    "fallback_success_rate": ("fallback_succeeded", "fallback_jobs"),
}
COUNT_COLUMNS = [
    "jobs", "succeeded", "lora_eligible", "lora_used", "scored_with_lora", "matched_with_lora",
    "scored_without_lora", "matched_without_lora", "fallback_jobs", "fallback_succeeded",
]  # fmt: skip


@dataclass
class ReportData:
    """Everything build_report reads from the database, already aggregated."""

    by_character: pd.DataFrame  # character_id, character (name), COUNT_COLUMNS: one row per character in the window
    by_slice: pd.DataFrame  # model, backend, day, base_model, COUNT_COLUMNS: one row per model × backend × day
    training_status: pd.DataFrame
    training_durations: pd.DataFrame
    training_failures: pd.DataFrame


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
    checks_source: str  # "dagster" or "computed"

    @property
    def summary(self) -> pd.DataFrame:
        return self.tables["summary"]

    def dagster_metadata(self) -> dict[str, Any]:
        """Metadata for dg.MaterializeResult: summary (markdown + table), plot thumbnails, report URI, headline."""
        import dagster as dg  # imported here so services stay Dagster-free; the lead may move this to assets/

        summary = self.summary
        types = {"int64": "int", "float64": "float", "bool": "bool"}
        schema = dg.TableSchema(
            columns=[dg.TableColumn(str(c), types.get(str(summary[c].dtype), "string")) for c in summary.columns]
        )
        records = [dg.TableRecord({k: _plain(v) for k, v in row.items()}) for row in summary.to_dict("records")]
        metadata: dict[str, Any] = {
            "summary": dg.MetadataValue.md(markdown_table(summary)),
            "summary_table": dg.MetadataValue.table(records=records, schema=schema),
            "checks": dg.MetadataValue.md(f"source: {self.checks_source}\n\n" + markdown_table(self.tables["checks"])),
            "report_uri": dg.MetadataValue.url(self.report_uri) if "://" in self.report_uri
            else dg.MetadataValue.path(self.report_uri),
            "prefix": self.prefix,
            "jobs": int(summary.attrs.get("jobs", 0)),
        }
        for name, png in self.plots.items():
            metadata[f"plot_{name}"] = dg.MetadataValue.md(f"![{name}]({png_data_uri(thumbnail(png))})")
        for name, value in self.headline.items():
            if value is not None:  # a float metadata value cannot be empty; nothing measured means no point
                metadata[name] = float(value)
        return metadata


# --- entry point -----------------------------------------------------------------------------------------


def utc_today() -> date:
    """Reports are named by the UTC date, like every timestamp they count."""
    return datetime.now(UTC).date()


def build_report(
    ctx: PipelineContext, *, day: date, since: date | datetime | None = None, instance: Any = None
) -> QualityReport:
    """Build the report for `day` over jobs finished since `since` and write it under reports/{day}/.

    `instance`: a DagsterInstance whose latest generation_outputs check results go into the report; without it
    (or for a check it never ran) pass/fail is computed from the report's rates and the checks' targets.
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
        "by_character": _rates(_group(data.by_character, ["character_id", "character"])),
        "by_base_model": _rates(_group(data.by_slice, ["base_model"])),
        "by_backend": _rates(_group(data.by_slice, ["backend"])),
        "by_day": _rates(_group(data.by_slice, ["day"])),
        "training": _training_table(data.training_status, durations),
        "training_failures": data.training_failures,
    }
    totals = {c: int(data.by_slice[c].sum()) for c in COUNT_COLUMNS}
    headline = {name: _ratio(totals[num], totals[den]) for name, (num, den) in RATES.items()}
    checks, source = _check_results(tables["by_character"], headline, totals, instance)
    tables["checks"] = checks
    tables = {"summary": _summary(headline, totals, checks), **tables}

    plots = {
        "trend": plot_trend(tables["by_day"]),
        "face_match_by_character": plot_face_match_by_character(tables["by_character"]),
        "training_durations": plot_training_durations(durations),
    }
    prefix = report_prefix(day)
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
        headline=headline, tables=tables, plots=plots, checks_source=source,
    )


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


# --- queries ---------------------------------------------------------------------------------------------


def _count(condition: Any) -> Any:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _day(conn: sa.Connection, column: Any) -> tuple[Any, Any]:
    """The UTC calendar day of a timestamp: (expression to group by, the same day as 'YYYY-MM-DD' text)."""
    # constants as literal SQL, not bound parameters: GROUP BY repeats the expression, and PostgreSQL only
    # matches it to the SELECT list when both are textually the same
    if conn.dialect.name == "sqlite":  # stored as naive-UTC text
        day = sa.func.substr(sa.cast(column, sa.String), sa.literal_column("1"), sa.literal_column("10"))
        return day, day
    if conn.dialect.name == "postgresql":  # group by the date, format once per group: a third faster than per row
        day = sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), column), sa.Date)
        return day, sa.func.to_char(day, sa.literal_column("'YYYY-MM-DD'"))
    day = sa.cast(column, sa.Date)
    return day, sa.cast(day, sa.String)


def read_report_data(conn: sa.Connection, since: datetime | None) -> ReportData:
    """All the report's database work: job counts per character and per model × backend × day, LoRA trainings."""
    return ReportData(
        by_character=_counts_by_character(conn, since),
        by_slice=_counts_by_slice(conn, since),
        training_status=_training_status(conn, since),
        training_durations=_training_durations(conn, since),
        training_failures=_failure_reasons(conn, since),
    )


def _job_sums() -> list[Any]:
    succeeded = J.status == "succeeded"
    scored = sa.and_(succeeded, J.face_count.is_not(None))
    with_lora, without_lora = J.lora_model_id.is_not(None), J.lora_model_id.is_(None)
    return [
        sa.func.count().label("jobs"),
        _count(succeeded).label("succeeded"),
        _count(had_usable_lora()).label("lora_eligible"),
        _count(with_lora).label("lora_used"),
        _count(sa.and_(scored, with_lora)).label("scored_with_lora"),
        _count(sa.and_(scored, with_lora, J.face_match.is_(True))).label("matched_with_lora"),
        _count(sa.and_(scored, without_lora)).label("scored_without_lora"),
        _count(sa.and_(scored, without_lora, J.face_match.is_(True))).label("matched_without_lora"),
        _count(without_lora).label("fallback_jobs"),
        _count(sa.and_(without_lora, succeeded)).label("fallback_succeeded"),
    ]  # fmt: skip


def _finished_in(since: datetime | None) -> list[Any]:
    return [J.status.in_(FINISHED), *([J.finished_at >= since] if since else [])]


def _read_counts(conn: sa.Connection, stmt: Any) -> pd.DataFrame:
    frame = pd.read_sql(stmt, conn)
    frame[COUNT_COLUMNS] = frame[COUNT_COLUMNS].fillna(0).astype("int64")
    return frame


def _counts_by_character(conn: sa.Connection, since: datetime | None) -> pd.DataFrame:
    """Finished jobs in the window counted per character, with the names of those characters only."""
    sums = sa.select(J.character_id, *_job_sums()).where(*_finished_in(since)).group_by(J.character_id).subquery()
    stmt = sa.select(sums, C.name.label("character")).select_from(sums.outerjoin(C, C.id == sums.c.character_id))
    frame = _read_counts(conn, stmt)
    frame["character"] = frame["character"].fillna(UNKNOWN)
    return frame[["character_id", "character", *COUNT_COLUMNS]]


def _counts_by_slice(conn: sa.Connection, since: datetime | None) -> pd.DataFrame:
    """Finished jobs in the window counted per (model, backend, day): as many rows as those three take values."""
    # one query, not one per dimension: each pass over a 30-day window reads the whole table
    day, day_text = _day(conn, J.finished_at)
    stmt = (
        sa.select(J.model, J.backend, day_text.label("day"), *_job_sums())
        .where(*_finished_in(since))
        .group_by(J.model, J.backend, day)
    )
    frame = _read_counts(conn, stmt)
    frame["day"] = frame["day"].fillna(UNKNOWN)
    frame["backend"] = frame["backend"].fillna(UNKNOWN)
    frame["base_model"] = frame["model"].map(_base_model)
    return frame


def _base_model(model: str) -> str:
    try:
        return get_model(model).base_model
    except UnknownModelError:
        return UNKNOWN


def _lora_window(since: datetime | None) -> list[Any]:
    # LoRAs still in flight count as of now; finished ones only when they finished in the window
    return [sa.or_(L.finished_at.is_(None), L.finished_at >= since)] if since else []


def _training_status(conn: sa.Connection, since: datetime | None) -> pd.DataFrame:
    stmt = sa.select(L.base_model, L.status, sa.func.count().label("n")).where(*_lora_window(since))
    return pd.read_sql(stmt.group_by(L.base_model, L.status), conn)


def _training_durations(conn: sa.Connection, since: datetime | None) -> pd.DataFrame:
    """One row per finished training (ready or failed) with both timestamps; lora_models is one row per
    character × base model × attempt, small enough to read these three columns."""
    stmt = sa.select(L.base_model, L.training_started_at, L.finished_at).where(
        L.status.in_(("ready", "failed")), L.training_started_at.is_not(None), L.finished_at.is_not(None),
        *([L.finished_at >= since] if since else []),
    )  # fmt: skip
    rows = conn.execute(stmt).all()  # through the ORM types: aware UTC datetimes on every dialect
    minutes = [(b, (f - s).total_seconds() / 60) for b, s, f in rows]
    return pd.DataFrame(minutes, columns=["base_model", "minutes"]).astype({"minutes": "float64"})


def _failure_reasons(conn: sa.Connection, since: datetime | None) -> pd.DataFrame:
    stmt = (
        sa.select(L.base_model, L.error.label("reason"), sa.func.count().label("n"))
        .where(L.status == "failed", *([L.finished_at >= since] if since else []))
        .group_by(L.base_model, L.error)
    )
    raw = pd.read_sql(stmt, conn)
    columns = ["base_model", "reason", "count"]
    if raw.empty:
        return pd.DataFrame(columns=columns).astype({"count": "int64"})
    raw["reason"] = raw["reason"].map(_short_reason)
    grouped = raw.groupby(["base_model", "reason"], as_index=False)["n"].sum().rename(columns={"n": "count"})
    grouped = grouped.sort_values(["base_model", "count", "reason"], ascending=[True, False, True])
    return grouped.groupby("base_model").head(TOP_FAILURE_REASONS).reset_index(drop=True)[columns]


def _short_reason(error: str | None) -> str:
    first = ((error or "").strip().splitlines() or [""])[0]
    return first[:160] or "(no error recorded)"


# --- tables ----------------------------------------------------------------------------------------------


def worst_characters(by_character: pd.DataFrame) -> pd.DataFrame:
    """Per-character rows worst first: lowest face match with LoRA, then lowest success, then most jobs, then id;
    characters with nothing measured come last."""
    order = ["face_match_rate_with_lora", "generation_success_rate", "jobs", "character_id"]
    return by_character.sort_values(order, ascending=[True, True, False, True], na_position="last", kind="stable")


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


def _group(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=[*by, *COUNT_COLUMNS]).astype({c: "int64" for c in COUNT_COLUMNS})
    return frame.groupby(by, as_index=False, dropna=False)[COUNT_COLUMNS].sum().sort_values(by).reset_index(drop=True)


def _rates(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for name, (num, den) in RATES.items():
        frame[name] = (frame[num] / frame[den].where(frame[den] > 0)).astype("float64")
    return frame


def _training_table(status: pd.DataFrame, durations: pd.DataFrame) -> pd.DataFrame:
    counts = status.pivot_table(index="base_model", columns="status", values="n", aggfunc="sum", fill_value=0)
    counts = counts.reindex(columns=["ready", "failed", "training", "pending"], fill_value=0).astype("int64")
    stats = durations.groupby("base_model")["minutes"].agg(
        finished_trainings="count", median_minutes="median", p90_minutes=lambda m: m.quantile(0.9)
    )
    table = counts.join(stats, how="outer")
    for column in ("ready", "failed", "training", "pending", "finished_trainings"):
        table[column] = table[column].fillna(0).astype("int64")
    return table.rename_axis("base_model").reset_index().sort_values("base_model").reset_index(drop=True)


def _summary(headline: dict[str, float | None], totals: dict[str, int], checks: pd.DataFrame) -> pd.DataFrame:
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


def _check_results(
    by_character: pd.DataFrame, headline: dict[str, float | None], totals: dict[str, int], instance: Any
) -> tuple[pd.DataFrame, str]:
    from_dagster = latest_check_results(instance) if instance is not None else {}
    rows = []
    for target in CHECK_TARGETS:
        row = from_dagster.get(target.check) or _computed_check(target, by_character, headline, totals)
        rows.append({"check": target.check, **row})
    source = "dagster" if from_dagster and len(from_dagster) == len(CHECK_TARGETS) else "computed"
    if from_dagster and source == "computed":
        source = "mixed"
    columns = ["check", "source", "passed", "severity", "rate", "target", "numerator", "denominator",
               "evaluated_at", "description"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).astype({"rate": "float64", "target": "float64"}), source


def _computed_check(
    target: CheckTarget, by_character: pd.DataFrame, headline: dict[str, float | None], totals: dict[str, int]
) -> dict[str, Any]:
    num, den = RATES[target.rate]
    value = headline[target.rate]
    passed = value is None or value >= target.target
    description = "nothing measured in the window" if value is None else f"{value:.1%} (target ≥ {target.target:.0%})"
    if target.check == "face_consistency":  # like the check: any character under target fails it too
        scored = by_character[by_character["scored_with_lora"] > 0]
        below = worst_characters(scored[scored["face_match_rate_with_lora"] < target.target])
        if len(below):
            passed = False
            named = ", ".join(str(c) for c in below["character_id"].head(SHOWN_BELOW_TARGET))
            more = len(below) - SHOWN_BELOW_TARGET
            description += f"; characters below target: {named}" + (f" and {more} more" if more > 0 else "")
    return {"source": "computed from the report window", "passed": passed, "severity": target.severity,
            "rate": value, "target": target.target, "numerator": totals[num], "denominator": totals[den],
            "evaluated_at": None, "description": description}


def latest_check_results(instance: Any) -> dict[str, dict[str, Any]]:
    """The latest evaluation of each generation_outputs check recorded in a DagsterInstance, by check name."""
    import dagster as dg  # only when an instance is given; this module stays importable without Dagster

    keys = [dg.AssetCheckKey(dg.AssetKey(CHECKED_ASSET), t.check) for t in CHECK_TARGETS]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    results: dict[str, dict[str, Any]] = {}
    for key, record in records.items():
        dagster_event = record.event.dagster_event if record.event else None
        evaluation = getattr(dagster_event, "event_specific_data", None)
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue  # planned or crashed: no result to show
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        rate = meta.get("rate")
        results[key.name] = {
            "source": f"dagster run {record.run_id[:8]}", "passed": bool(evaluation.passed),
            "severity": evaluation.severity.value, "rate": None if rate is None or rate < 0 else float(rate),
            "target": meta.get("target"), "numerator": meta.get("numerator"), "denominator": meta.get("denominator"),
            "evaluated_at": datetime.fromtimestamp(record.create_timestamp, UTC).isoformat(timespec="seconds"),
            "description": evaluation.description or "",
        }  # fmt: skip
    return results


# --- plots -----------------------------------------------------------------------------------------------


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI)  # no pyplot: Agg canvas, no global state
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Software": None})  # no version stamp: same bytes
    return buffer.getvalue()


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_trend(by_day: pd.DataFrame) -> bytes:
    fig, ax = _figure()
    days = by_day[by_day["day"] != UNKNOWN]
    if days.empty:
        _empty(ax, "no finished jobs in the window")
    else:
        x = range(len(days))
        labels = {
            "lora_usage_rate": "LoRA usage", "face_match_rate_with_lora": "face match with LoRA",
            "face_match_rate_without_lora": "face match without LoRA", "generation_success_rate": "success",
            "fallback_success_rate": "fallback success",
        }  # fmt: skip
        for column, label in labels.items():
            ax.plot(x, days[column] * 100, marker="o", label=label)
        ax.set_xticks(list(x), list(days["day"]), rotation=30, ha="right")
        ax.set_ylim(-5, 105)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Daily quality")
    fig.tight_layout()
    return _png(fig)


def plot_face_match_by_character(by_character: pd.DataFrame, limit: int | None = None) -> bytes:
    """Bars per scored character; beyond `limit` (default SHOWN_CHARACTERS) only the worst ones, worst first."""
    limit = SHOWN_CHARACTERS if limit is None else limit
    fig, ax = _figure()
    scored = by_character[(by_character["scored_with_lora"] + by_character["scored_without_lora"]) > 0]
    title = "Face match by character"
    if len(scored) > limit:
        title += f" (worst {limit} of {len(scored):,})"
        scored = worst_characters(scored).head(limit)
    if scored.empty:
        _empty(ax, "no scored generations in the window")
    else:
        x = list(range(len(scored)))
        width = 0.4
        for offset, column, label in ((-width / 2, "face_match_rate_with_lora", "with LoRA"),
                                      (width / 2, "face_match_rate_without_lora", "without LoRA")):
            ax.bar([i + offset for i in x], scored[column].fillna(0) * 100, width, label=label)
        ax.axhline(95, color="red", linewidth=1, linestyle="--", label="target 95%")
        names = [f"{n[:14]} ({c})" for c, n in zip(scored["character_id"], scored["character"], strict=True)]
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("face match %")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def plot_training_durations(durations: pd.DataFrame) -> bytes:
    fig, ax = _figure()
    if durations.empty:
        _empty(ax, "no finished trainings in the window")
    else:
        groups = sorted(durations["base_model"].unique())
        ax.boxplot([durations.loc[durations["base_model"] == g, "minutes"] for g in groups], tick_labels=groups)
        ax.set_ylabel("minutes")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title("LoRA training duration by base model")
    fig.tight_layout()
    return _png(fig)


def thumbnail(png: bytes, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB")
        small.thumbnail(size)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --- rendering -------------------------------------------------------------------------------------------

_TABLE_TITLES = {
    "summary": "Headline", "checks": "Checks on generation_outputs", "by_character": "By character",
    "by_base_model": "By base model", "by_backend": "By backend", "by_day": "By day",
    "training": "LoRA training (durations in minutes)", "training_failures": "Top training failure reasons",
}  # fmt: skip
_RATE_COLUMNS = {*RATES, "rate", "target"}


def _plain(value: Any) -> Any:
    """A cell as a plain Python value (None for NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _cell(column: str, value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "n/a"
    if column in _RATE_COLUMNS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _display(table: pd.DataFrame) -> list[list[str]]:
    return [[_cell(c, v) for c, v in row.items()] for row in table.to_dict("records")]


def markdown_table(table: pd.DataFrame) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(esc(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(esc(cell) for cell in row) + " |" for row in _display(table)]
    return "\n".join([header, rule, *body]) if body else header + "\n" + rule + "\n\n_(no rows)_"


def shown_rows(name: str, table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows a page shows of a table, and a note when some are left to the CSV (only by_character is capped)."""
    if name != "by_character" or len(table) <= SHOWN_CHARACTERS:
        return table, ""
    note = (f"Worst {SHOWN_CHARACTERS} of {len(table):,} characters (lowest face match with LoRA first); "
            f"every character is in {name}.csv.")  # fmt: skip
    return worst_characters(table).head(SHOWN_CHARACTERS), note


def render_markdown(title: str, window: str, source: str, tables: dict[str, pd.DataFrame], plots: list[str]) -> str:
    parts = [f"# {title}", "", f"Window: {window}. Check results: {source}.", ""]
    parts += [f"![{name}]({name}.png)" for name in plots]
    for name, table in tables.items():
        shown, note = shown_rows(name, table)
        parts += ["", f"## {_TABLE_TITLES.get(name, name)}", "", *([note, ""] if note else [])]
        parts += [markdown_table(shown), "", f"CSV: `{name}.csv`"]
    return "\n".join(parts) + "\n"


def _html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _display(table))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows or '<tr><td>(no rows)</td></tr>'}</tbody></table>"


def render_html(title: str, window: str, source: str, tables: dict[str, pd.DataFrame], plots: dict[str, bytes]) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
             "img{max-width:100%;margin:.5em 0}")  # fmt: skip
    images = "".join(
        f'<figure><img alt="{html.escape(n)}" src="{png_data_uri(png)}">'
        f"<figcaption>{html.escape(n)}.png</figcaption></figure>"
        for n, png in plots.items()
    )
    sections = ""
    for name, table in tables.items():
        shown, note = shown_rows(name, table)
        sections += f"<h2>{html.escape(_TABLE_TITLES.get(name, name))}</h2>"
        sections += (f"<p>{html.escape(note)}</p>" if note else "") + _html_table(shown)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>Window: {html.escape(window)}. Check results: "
        f"{html.escape(source)}.</p>{images}{sections}</body></html>\n"
    )
