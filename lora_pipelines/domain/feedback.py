"""Users' ratings of a generated image's likeness, and the CSV the product's app exports them in.

A rating is "better", "same" or "worse" (than the character generated without its LoRA), or a score from 1 to 5:
4-5 count as better, 3 as the same, 1-2 as worse. The satisfaction metric is the share of ratings of LoRA jobs
whose verdict is "better".

CSV: a header row naming at least `job_id` and `rating`; optional `note`, `rated_by` (who) and `rated_at` (ISO
8601; without a timezone it is read as UTC). A bad row is reported as `line N: ...` and nothing is imported.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime

WORDS = ("better", "same", "worse")
SCORE_VERDICTS = {"1": "worse", "2": "worse", "3": "same", "4": "better", "5": "better"}
REQUIRED_COLUMNS = ("job_id", "rating")
OPTIONAL_COLUMNS = ("note", "rated_by", "rated_at")
MAX_NOTE = 2000
MAX_ROWS = 100_000


class InvalidRating(ValueError):
    pass


class FeedbackCsvError(ValueError):
    """A CSV that cannot be imported, with the line that is wrong."""


@dataclass(frozen=True)
class Rating:
    rating: str  # as given, normalised: "better" | "same" | "worse" | "1".."5"
    verdict: str  # "better" | "same" | "worse"


@dataclass(frozen=True)
class FeedbackLine:
    line: int
    job_id: int
    rating: Rating
    note: str | None
    rated_by: str | None
    rated_at: datetime | None


def parse_rating(value: object) -> Rating:
    text = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text in WORDS:
        return Rating(text, text)
    if text in SCORE_VERDICTS:
        return Rating(text, SCORE_VERDICTS[text])
    shown = repr(value)[:40]
    raise InvalidRating(f"rating {shown} is not one of better, same, worse or a score from 1 to 5")


def parse_job_id(value: object) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"job id {text[:40]!r} is not a positive integer")
    return int(text)


def parse_note(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    note = value.strip()
    if len(note) > MAX_NOTE:
        raise ValueError(f"note is {len(note)} characters long; at most {MAX_NOTE} are allowed")
    if "\x00" in note:
        raise ValueError("note contains a NUL byte")
    return note


def parse_rated_at(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"rated_at {value.strip()[:40]!r} is not an ISO 8601 date and time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_feedback_csv(data: bytes) -> list[FeedbackLine]:
    """Every row of the file, or FeedbackCsvError naming the first bad line (line 1 is the header)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedbackCsvError(f"the file is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FeedbackCsvError(f"line 1: {exc}") from None
    if not header or not any(cell.strip() for cell in header):
        raise FeedbackCsvError("the file is empty: a header row with job_id,rating is needed")
    columns = [cell.strip().lower() for cell in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise FeedbackCsvError(f"line 1: the header has no {', '.join(missing)} column (it has {', '.join(columns)})")
    unknown = [c for c in columns if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
    if unknown:
        raise FeedbackCsvError(f"line 1: unknown column {unknown[0]!r}; known: "
                               f"{', '.join((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))}")
    if len(set(columns)) != len(columns):
        raise FeedbackCsvError("line 1: a column is named twice")
    lines: list[FeedbackLine] = []
    first_seen: dict[tuple[int, str | None], int] = {}
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise FeedbackCsvError(f"line {reader.line_num}: {exc}") from None
        if cells is None:
            break
        number = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank lines are allowed
        if len(cells) != len(columns):
            raise FeedbackCsvError(f"line {number}: {len(cells)} fields, the header has {len(columns)}")
        row = dict(zip(columns, cells, strict=True))
        try:
            item = FeedbackLine(
                line=number, job_id=parse_job_id(row["job_id"]), rating=parse_rating(row["rating"]),
                note=parse_note(row.get("note")), rated_by=(row.get("rated_by") or "").strip() or None,
                rated_at=parse_rated_at(row["rated_at"]) if (row.get("rated_at") or "").strip() else None,
            )
            if item.rated_by is not None and (len(item.rated_by) > 200 or "\x00" in item.rated_by):
                raise ValueError("rated_by must be at most 200 characters of text")
        except ValueError as exc:
            raise FeedbackCsvError(f"line {number}: {exc}") from None
        key = (item.job_id, item.rated_by)
        if key in first_seen:
            raise FeedbackCsvError(f"line {number}: job {item.job_id} is rated by "
                                   f"{item.rated_by or 'the importer'} again (first on line {first_seen[key]})")
        first_seen[key] = number
        lines.append(item)
        if len(lines) > MAX_ROWS:
            raise FeedbackCsvError(f"line {number}: more than {MAX_ROWS} ratings in one file; split it")
    if not lines:
        raise FeedbackCsvError("the file has a header but no ratings")
    return lines
