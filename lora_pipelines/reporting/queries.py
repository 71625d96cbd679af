"""The report's database work: finished jobs counted in SQL, and the LoRA trainings.

Job counts are aggregated with two GROUP BYs over generation_jobs: one per character (names joined to the sums,
so only the characters that appear are read) and one per model × backend × day, whose rows do not grow with the
number of characters. Every count uses the definitions of `reporting.metrics` (same filters, same denominators),
so the report and `status` agree.

Window: jobs and LoRA trainings that finished at or after `since` (all history when None), up to now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from lora_pipelines.domain.model_registry import UnknownModelError, get_model
from lora_pipelines.reporting.metrics import COUNTS, FINISHED, count_columns
from lora_pipelines.store.tables import CharacterRow as C
from lora_pipelines.store.tables import GenerationJobRow as J
from lora_pipelines.store.tables import LoraModelRow as L

UNKNOWN = "unknown"
TOP_FAILURE_REASONS = 3
COUNT_COLUMNS = list(COUNTS)  # every count metrics defines, summed per group


@dataclass
class ReportData:
    """Everything build_report reads from the database, already aggregated."""

    by_character: pd.DataFrame  # character_id, character (name), COUNT_COLUMNS: one row per character in the window
    by_slice: pd.DataFrame  # model, backend, day, base_model, COUNT_COLUMNS: one row per model × backend × day
    training_status: pd.DataFrame
    training_durations: pd.DataFrame
    training_failures: pd.DataFrame


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
    return count_columns(COUNT_COLUMNS)


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

