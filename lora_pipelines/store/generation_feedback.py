"""The `generation_feedback` repository: users' verdicts on generated images (one per job and rater).

`record` writes a batch in one transaction: every rating is stored, or none is (a CSV import is all-or-nothing).
A second rating of the same job by the same person replaces the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from lora_pipelines.store.database import Database
from lora_pipelines.store.rows import RecordNotFoundError, to_record
from lora_pipelines.store.tables import VERDICTS, GenerationFeedbackRow, GenerationJobRow, utcnow
from lora_pipelines.store.validation import check_fields, check_short_text

MAX_BATCH = 100_000


@dataclass(frozen=True)
class NewFeedback:
    job_id: int
    rating: str
    verdict: str
    rated_by: str
    rated_at: datetime
    source: str
    note: str | None = None


@dataclass(frozen=True)
class Feedback:
    id: int
    job_id: int
    rating: str
    verdict: str
    note: str | None
    rated_by: str
    rated_at: datetime
    source: str
    created_at: datetime
    updated_at: datetime


def _check(item: NewFeedback) -> None:
    if isinstance(item.job_id, bool) or not isinstance(item.job_id, int) or item.job_id < 1:
        raise ValueError(f"job id must be a positive integer, got {item.job_id!r}")
    if item.verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {item.verdict!r}")
    check_short_text(item.rating, "rating", 8)
    check_short_text(item.rated_by, "rated_by", 200)
    check_short_text(item.source, "source", 200)
    if not item.rated_by or not item.source:
        raise ValueError("a rating needs who gave it (rated_by) and where it came from (source)")
    check_fields({"note": item.note, "rated_at": item.rated_at}, "generation_feedback")


class GenerationFeedbackRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, items: Sequence[NewFeedback]) -> list[Feedback]:
        """Store every rating or none; RecordNotFoundError names the job ids that do not exist."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} ratings, got {len(items)}")
        for item in items:
            _check(item)
        job_ids = sorted({item.job_id for item in items})
        with self.db.session() as session:
            known = set()
            for start in range(0, len(job_ids), 1000):
                chunk = job_ids[start:start + 1000]
                known |= set(session.scalars(sa.select(GenerationJobRow.id).where(GenerationJobRow.id.in_(chunk))))
            missing = [j for j in job_ids if j not in known]
            if missing:
                more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                raise RecordNotFoundError(f"unknown generation job(s): {', '.join(map(str, missing[:10]))}{more}")
            existing = {}
            for start in range(0, len(job_ids), 1000):
                stmt = sa.select(GenerationFeedbackRow).where(
                    GenerationFeedbackRow.job_id.in_(job_ids[start:start + 1000]))
                existing.update({(r.job_id, r.rated_by): r for r in session.scalars(stmt)})
            now = utcnow()
            rows = []
            for item in items:
                row = existing.get((item.job_id, item.rated_by))
                if row is None:
                    row = GenerationFeedbackRow(job_id=item.job_id, rated_by=item.rated_by, created_at=now)
                    session.add(row)
                    existing[(item.job_id, item.rated_by)] = row
                row.rating, row.verdict, row.note = item.rating, item.verdict, item.note
                row.rated_at, row.source, row.updated_at = item.rated_at, item.source, now
                rows.append(row)
            session.flush()
            return [to_record(Feedback, r) for r in rows]

    def for_job(self, job_id: int) -> list[Feedback]:
        stmt = sa.select(GenerationFeedbackRow).where(GenerationFeedbackRow.job_id == job_id)
        with self.db.session(readonly=True) as session:
            return [to_record(Feedback, r) for r in session.scalars(stmt.order_by(GenerationFeedbackRow.id))]

    def count(self) -> int:
        with self.db.session(readonly=True) as session:
            return session.scalar(sa.select(sa.func.count()).select_from(GenerationFeedbackRow)) or 0
