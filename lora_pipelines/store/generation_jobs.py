"""The `generation_jobs` repository: the queue of image requests and what each one produced.

Status: pending → running (only through `claim`) → succeeded | failed (through `finish`), and pending → failed.
running → pending happens only in `requeue_stale`, when a worker vanished. Any other move raises
`IllegalStatusTransition` and changes nothing. `claim` is a conditional UPDATE whose row count decides the
winner, so two workers never both run one job. Every method runs in its own transaction and returns detached,
frozen records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa

from lora_pipelines.domain.keys import validate_key
from lora_pipelines.store.database import Database
from lora_pipelines.store.rows import RecordNotFoundError, Table, apply, lock_row, to_record, update_locked
from lora_pipelines.store.status import check_generation_transition, validate_generation_status
from lora_pipelines.store.tables import CharacterRow, GenerationJobRow, utcnow
from lora_pipelines.store.validation import check_fields, check_page, check_short_text, check_text, only

MAX_ENQUEUE = 1_000


@dataclass(frozen=True)
class GenerationJob:
    id: int
    character_id: int
    model: str
    prompt: str
    status: str
    sent_prompt: str | None
    lora_model_id: int | None
    trigger_word: str | None
    lora_skipped_reason: str | None
    mode: str | None
    backend: str | None
    input_metadata: dict[str, Any]
    output_keys: list[str]
    face_distance: float | None
    face_match: bool | None
    face_count: int | None
    face_reference: str | None
    sface_similarity: float | None
    sface_match: bool | None
    in_sample_face_match: bool | None
    in_sample_sface_match: bool | None
    lora_candidate_id: int | None
    error: str | None
    attempts: int
    claimed_by: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    requested_lora_model_id: int | None = None  # a LoRA the request pinned
    requested_strength: float | None = None  # the LoRA strength the request asked for
    lora_strength: float | None = None  # the strength applied (None when no LoRA was used)


GENERATION_JOBS = Table(
    "generation_jobs",
    GenerationJobRow,
    GenerationJob,
    check_transition=check_generation_transition,
    stamps={"succeeded": "finished_at", "failed": "finished_at"},
)
_UPDATABLE = frozenset(
    {
        "sent_prompt", "lora_model_id", "trigger_word", "lora_skipped_reason", "mode", "backend", "input_metadata",
        "output_keys", "face_distance", "face_match", "face_count", "error", "face_reference", "sface_similarity",
        "sface_match", "in_sample_face_match", "in_sample_sface_match", "lora_candidate_id", "lora_strength",
    }
)  # fmt: skip
MAX_STRENGTH = 2.0  # ComfyUI takes -100..100; past about 2 a LoRA no longer keeps a face, it burns it


class PinRefused(ValueError):
    """A pinned LoRA this request cannot use (another character's, not ready, another base model)."""


def check_strength(strength: object) -> float | None:
    if strength is None:
        return None
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"strength must be a number from 0 to {MAX_STRENGTH:g}, got {strength!r}")
    return float(strength)


class GenerationJobsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(
        self,
        character_id: int,
        model: str,
        prompt: str,
        count: int = 1,
        input_metadata: dict[str, Any] | None = None,
        *,
        strength: float | None = None,
        lora_model_id: int | None = None,
        base_model: str | None = None,
    ) -> list[int]:
        """Insert `count` pending jobs; returns their ids in order.

        `strength` (0..2) and a pinned `lora_model_id` are recorded as asked. A pin must name a ready LoRA of this
        character for `base_model` (the model's family), checked under the LoRA's row lock so retention cannot
        archive it in between (PinRefused otherwise)."""
        if not isinstance(model, str) or not model or len(model) > 64:
            raise ValueError("model must be a non-empty string of at most 64 characters")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        check_text(model, "model")
        check_text(prompt, "prompt")
        if not 1 <= count <= MAX_ENQUEUE:
            raise ValueError(f"count must be between 1 and {MAX_ENQUEUE}, got {count}")
        metadata = dict(input_metadata or {})
        check_fields({"input_metadata": metadata, "requested_lora_model_id": lora_model_id}, "generation_jobs")
        strength = check_strength(strength)
        with self.db.session() as session:
            if session.get(CharacterRow, character_id) is None:
                raise RecordNotFoundError(f"characters {character_id} does not exist")
            if lora_model_id is not None:
                self._check_pin(session, character_id, lora_model_id, base_model)
            now = utcnow()
            rows = [
                GenerationJobRow(
                    character_id=character_id, model=model, prompt=prompt, input_metadata=dict(metadata),
                    requested_strength=strength, requested_lora_model_id=lora_model_id, created_at=now,
                    updated_at=now,
                )  # fmt: skip
                for _ in range(count)
            ]
            session.add_all(rows)
            session.flush()
            return [r.id for r in rows]

    @staticmethod
    def _check_pin(session: Any, character_id: int, lora_model_id: int, base_model: str | None) -> None:
        from lora_pipelines.store.lora_models import LORA_MODELS

        try:
            lora = lock_row(session, LORA_MODELS, lora_model_id)
        except RecordNotFoundError:
            raise PinRefused(f"LoRA {lora_model_id} does not exist") from None
        if lora.character_id != character_id:
            raise PinRefused(f"LoRA {lora.id} belongs to character {lora.character_id}, not {character_id}")
        if lora.status != "ready":
            raise PinRefused(f"LoRA {lora.id} is {lora.status}, not ready")
        if base_model is not None and lora.base_model != base_model:
            raise PinRefused(f"LoRA {lora.id} is a {lora.base_model} LoRA; this model needs a {base_model} one")

    def pinned_lora_ids(self, statuses: tuple[str, ...] = ("pending", "running")) -> set[int]:
        """LoRAs pinned by jobs in `statuses`: retention never removes one."""
        stmt = (sa.select(GenerationJobRow.requested_lora_model_id).distinct()
                .where(GenerationJobRow.status.in_(statuses), GenerationJobRow.requested_lora_model_id.is_not(None)))
        with self.db.session(readonly=True) as session:
            return set(session.scalars(stmt))

    def get(self, job_id: int) -> GenerationJob | None:
        with self.db.session(readonly=True) as session:
            row = session.get(GenerationJobRow, job_id)
            return None if row is None else to_record(GenerationJob, row)

    def _select(self, stmt: sa.Select[Any]) -> list[GenerationJob]:
        with self.db.session(readonly=True) as session:
            return [to_record(GenerationJob, r) for r in session.scalars(stmt)]

    def pending_after(self, after_id: int = 0, limit: int = 100) -> list[GenerationJob]:
        """Pending jobs with id > `after_id`, by id: a sensor's next page."""
        check_page(limit)
        return self._select(
            sa.select(GenerationJobRow)
            .where(GenerationJobRow.status == "pending", GenerationJobRow.id > after_id)
            .order_by(GenerationJobRow.id)
            .limit(limit)
        )

    def claim(self, job_id: int, worker: str) -> GenerationJob | None:
        """pending → running for `worker`; None when the job is not pending (someone else has it)."""
        check_short_text(worker, "worker", 200)
        if not worker:
            raise ValueError("worker is empty")
        now = utcnow()
        stmt = (
            sa.update(GenerationJobRow)
            .where(GenerationJobRow.id == job_id, GenerationJobRow.status == "pending")
            .values(status="running", claimed_by=worker, started_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        with self.db.session() as session:
            if session.execute(stmt).rowcount != 1:
                return None
            return to_record(GenerationJob, session.get(GenerationJobRow, job_id))

    def finish(self, job_id: int, status: str, **fields_: Any) -> GenerationJob:
        """running → succeeded | failed, writing the job's results; stamps finished_at."""
        validate_generation_status(status)
        if status not in {"succeeded", "failed"}:
            raise ValueError(f"finish() takes 'succeeded' or 'failed', got {status!r}")
        only(fields_, _UPDATABLE | {"finished_at"}, "generation_jobs")
        check_fields(fields_, "generation_jobs")
        return update_locked(self.db, GENERATION_JOBS, job_id, fields_, status=status)

    def update_fields(self, job_id: int, **fields_: Any) -> GenerationJob:
        """Write result fields without touching the status."""
        if "status" in fields_:
            raise ValueError("update_fields does not change status; use claim() or finish()")
        only(fields_, _UPDATABLE, "generation_jobs")
        check_fields(fields_, "generation_jobs")
        return update_locked(self.db, GENERATION_JOBS, job_id, fields_)

    def add_output_key(self, job_id: int, key: str) -> GenerationJob:
        """Append one output object key under a row lock."""
        validate_key(key)
        return update_locked(self.db, GENERATION_JOBS, job_id, lambda row: {"output_keys": [*row.output_keys, key]})

    def merge_input_metadata(self, job_id: int, values: Mapping[str, Any]) -> GenerationJob:
        """Merge `values` into input_metadata under a row lock (keys in `values` win)."""

        def merged(row: GenerationJobRow) -> dict[str, Any]:
            changes = {"input_metadata": {**row.input_metadata, **values}}
            check_fields(changes, "generation_jobs")
            return changes

        return update_locked(self.db, GENERATION_JOBS, job_id, merged)

    def record_face_score(self, job_id: int, distance: float | None, match: bool | None,
                          face_count: int, **by_reference: Any) -> GenerationJob:
        """dlib's distance, match and face count; `by_reference`: face_reference, sface_similarity, sface_match,
        in_sample_face_match, in_sample_sface_match."""
        only(by_reference, {"face_reference", "sface_similarity", "sface_match", "in_sample_face_match",
                            "in_sample_sface_match"}, "generation_jobs")
        return self.update_fields(job_id, face_distance=distance, face_match=match, face_count=face_count,
                                  **by_reference)

    def requeue_stale(self, older_than: timedelta, max_attempts: int = 3, limit: int = 1000) -> list[int]:
        """Running jobs started before now - `older_than`: back to pending with attempts + 1, or failed
        ("stale after N attempts") once attempts reaches `max_attempts`. Returns the ids it touched."""
        if older_than <= timedelta(0):
            raise ValueError("older_than must be positive")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        cutoff = utcnow() - older_than
        stmt = (
            sa.select(GenerationJobRow)
            .where(GenerationJobRow.status == "running", GenerationJobRow.started_at < cutoff)
            .order_by(GenerationJobRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        requeue = partial(check_generation_transition, requeue=True)
        touched: list[int] = []
        with self.db.session() as session:
            for row in session.scalars(stmt):
                attempts = row.attempts + 1
                if attempts >= max_attempts:
                    apply(GENERATION_JOBS, row, {"attempts": attempts, "error": f"stale after {attempts} attempts"},
                          "failed")  # fmt: skip
                else:
                    apply(GENERATION_JOBS, row, {"attempts": attempts, "claimed_by": None, "started_at": None},
                          "pending", check=requeue)  # fmt: skip
                touched.append(row.id)
        return touched

    def list(
        self,
        *,
        status: str | None = None,
        character_id: int | None = None,
        model: str | None = None,
        mode: str | None = None,
        created_after: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[GenerationJob]:
        check_page(limit)
        stmt = sa.select(GenerationJobRow).where(GenerationJobRow.id > after_id)
        if status is not None:
            stmt = stmt.where(GenerationJobRow.status == validate_generation_status(status))
        if character_id is not None:
            stmt = stmt.where(GenerationJobRow.character_id == character_id)
        if model is not None:
            stmt = stmt.where(GenerationJobRow.model == model)
        if mode is not None:
            stmt = stmt.where(GenerationJobRow.mode == mode)
        if created_after is not None:
            stmt = stmt.where(GenerationJobRow.created_at > created_after)
        order = GenerationJobRow.id.desc() if newest_first else GenerationJobRow.id
        return self._select(stmt.order_by(order).limit(limit))

    def count_by_status(self, created_after: datetime | None = None) -> dict[str, int]:
        return self._count_by(GenerationJobRow.status, created_after)

    def count_by_mode(self, created_after: datetime | None = None) -> dict[str | None, int]:
        """Succeeded jobs per mode (lora / face_swap / standard / None): the LoRA usage rate's inputs."""
        return self._count_by(GenerationJobRow.mode, created_after, GenerationJobRow.status == "succeeded")

    def _count_by(self, column: Any, created_after: datetime | None, *where: Any) -> dict[Any, int]:
        stmt = sa.select(column, sa.func.count()).where(*where).group_by(column)
        if created_after is not None:
            stmt = stmt.where(GenerationJobRow.created_at > created_after)
        with self.db.session(readonly=True) as session:
            return {key: count for key, count in session.execute(stmt)}
