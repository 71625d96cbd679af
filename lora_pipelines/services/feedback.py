"""Recording users' verdicts on generated images: one from the command line, or a CSV the product's app exported.

Only a succeeded job (an image someone saw) can be rated. An import is all-or-nothing: the first bad line is
reported and nothing is stored.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from lora_pipelines.domain.feedback import FeedbackCsvError, parse_feedback_csv, parse_note, parse_rating
from lora_pipelines.services.context import PipelineContext
from lora_pipelines.store.generation_feedback import Feedback, GenerationFeedbackRepository, NewFeedback
from lora_pipelines.store.tables import GenerationJobRow, utcnow

MAX_FILE_BYTES = 50 * 1024**2


class FeedbackRefused(ValueError):
    """A rating that cannot be recorded; the message names the job or line."""


@dataclass(frozen=True)
class ImportResult:
    ratings: int
    lora_jobs: int  # ratings of jobs that used a LoRA (the ones the satisfaction metric counts)
    source: str


def _rater(by: str | None) -> str:
    rater = default_rater() if by is None else by.strip()
    if not rater or len(rater) > 200 or "\x00" in rater:
        raise FeedbackRefused("who rates (--by) must be 1 to 200 characters of text")
    return rater


def default_rater() -> str:
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):  # no passwd entry (a container) and no USER variable
        return "unknown"


def _jobs(ctx: PipelineContext, job_ids: list[int]) -> dict[int, tuple[str, int | None]]:
    """job id → (status, lora_model_id) for the ids that exist."""
    found: dict[int, tuple[str, int | None]] = {}
    with ctx.db.session(readonly=True) as session:
        for start in range(0, len(job_ids), 1000):
            stmt = (sa.select(GenerationJobRow.id, GenerationJobRow.status, GenerationJobRow.lora_model_id)
                    .where(GenerationJobRow.id.in_(job_ids[start:start + 1000])))
            found.update({job_id: (status, lora) for job_id, status, lora in session.execute(stmt)})
    return found


def _problem(job_id: int, job: tuple[str, int | None] | None) -> str | None:
    if job is None:
        return f"generation job {job_id} does not exist"
    if job[0] != "succeeded":
        return f"generation job {job_id} is {job[0]}: only a generated image can be rated"
    return None


def record_feedback(ctx: PipelineContext, job_id: int, rating: str, *, note: str | None = None,
                    by: str | None = None, at: datetime | None = None, source: str = "cli") -> Feedback:
    """One user's rating of one job (a second rating by the same person replaces the first)."""
    try:
        parsed, note = parse_rating(rating), parse_note(note)
    except ValueError as exc:
        raise FeedbackRefused(str(exc)) from None
    problem = _problem(job_id, _jobs(ctx, [job_id]).get(job_id))
    if problem:
        raise FeedbackRefused(problem)
    item = NewFeedback(job_id=job_id, rating=parsed.rating, verdict=parsed.verdict, rated_by=_rater(by),
                       rated_at=at or utcnow(), source=source, note=note)
    return GenerationFeedbackRepository(ctx.db).record([item])[0]


def import_feedback(ctx: PipelineContext, path: Path, *, by: str | None = None) -> ImportResult:
    """Every rating in the CSV at `path`, or FeedbackRefused / FeedbackCsvError naming the first bad line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FeedbackCsvError(f"{path.name} is {size:,} bytes; at most {MAX_FILE_BYTES:,} are imported at once")
        data = path.read_bytes()
    except OSError as exc:
        raise FeedbackRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        lines = parse_feedback_csv(data)
    except FeedbackCsvError as exc:
        raise FeedbackCsvError(f"{path.name}: {exc}") from None
    jobs = _jobs(ctx, sorted({line.job_id for line in lines}))
    for line in lines:
        problem = _problem(line.job_id, jobs.get(line.job_id))
        if problem:
            raise FeedbackRefused(f"{path.name}: line {line.line}: {problem}")
    now, rater, source = utcnow(), _rater(by), f"import:{path.name}"[:200]
    first: dict[tuple[int, str], int] = {}
    for line in lines:  # a row without rated_by is the importer's: it may repeat a named row of the same person
        key = (line.job_id, line.rated_by or rater)
        if key in first:
            raise FeedbackCsvError(f"{path.name}: line {line.line}: job {line.job_id} is rated by {key[1]} again "
                                   f"(first on line {first[key]})")
        first[key] = line.line
    items = [NewFeedback(job_id=line.job_id, rating=line.rating.rating, verdict=line.rating.verdict,
                         rated_by=line.rated_by or rater, rated_at=line.rated_at or now, source=source,
                         note=line.note) for line in lines]
    GenerationFeedbackRepository(ctx.db).record(items)
    lora_jobs = sum(1 for line in lines if jobs[line.job_id][1] is not None)
    return ImportResult(ratings=len(items), lora_jobs=lora_jobs, source=source)
