"""The app database's tables (SQLAlchemy 2 declarative). Migrations in `migrations/versions` must match this file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lora_pipelines.store.status import GENERATION_STATUSES, LORA_STATUSES

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
GENERATION_MODES = ("lora", "face_swap", "standard")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL (timestamptz) and SQLite (naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use timezone-aware UTC")
        value = value.astimezone(UTC)
        # SQLite stores text; one fixed naive-UTC format keeps ordering by the column correct
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class _Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


class CharacterRow(_Timestamps, Base):
    __tablename__ = "characters"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    lora_enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    trigger_word: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    photo_keys: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False, default=list)

    __table_args__ = (
        sa.Index(None, "updated_at", "id"),
        sa.Index(None, "trigger_word", unique=True),  # migration 0004
    )


class LoraModelRow(_Timestamps, Base):
    __tablename__ = "lora_models"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    character_id: Mapped[int] = mapped_column(sa.ForeignKey("characters.id"), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="pending")
    base_model: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    trigger_word: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    training_model: Mapped[str | None] = mapped_column(sa.String(200))
    job_id: Mapped[str | None] = mapped_column(sa.String(200))
    model_path: Mapped[str | None] = mapped_column(sa.String(1024))
    model_url: Mapped[str | None] = mapped_column(sa.Text)
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    # the second file of a two-expert LoRA (Wan 2.2 14B: low_noise; model_path is the high_noise one), migration 0006
    second_expert_path: Mapped[str | None] = mapped_column(sa.String(1024))
    second_expert_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    second_expert_size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    gpu_call_id: Mapped[str | None] = mapped_column(sa.String(200))
    backend: Mapped[str | None] = mapped_column(sa.String(32))
    dataset_hash: Mapped[str | None] = mapped_column(sa.String(128))
    idempotency_key: Mapped[str] = mapped_column(sa.String(255), nullable=False, unique=True)
    attempt: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=1)
    error: Mapped[str | None] = mapped_column(sa.Text)
    training_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # versions (migration 0005): the best checkpoint's likeness, every checkpoint's scores, the quality gate's
    # decision (gate_reason: why a ready LoRA is not the one in use) and when retention archived it
    validation_score: Mapped[float | None] = mapped_column(sa.Float)
    validation: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    gate_reason: Mapped[str | None] = mapped_column(sa.Text)
    gated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.CheckConstraint(_in("status", LORA_STATUSES), name="status"),
        sa.Index(None, "character_id", "base_model", "status", "id"),
        sa.Index(None, "status", "id"),
    )


TRAINING_STATES = ("preparing", "dataset_ready", "failed")


class TrainingStateRow(_Timestamps, Base):
    """What the training assets last learned about a character × base model (migration 0004)."""

    __tablename__ = "training_states"

    character_id: Mapped[int] = mapped_column(sa.ForeignKey("characters.id"), primary_key=True)
    base_model: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    photo_set: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    check_name: Mapped[str | None] = mapped_column(sa.String(64))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    dataset_hash: Mapped[str | None] = mapped_column(sa.String(128))
    usable: Mapped[int | None] = mapped_column(sa.Integer)
    required: Mapped[int | None] = mapped_column(sa.Integer)

    __table_args__ = (sa.CheckConstraint(_in("state", TRAINING_STATES), name="state"),)


class GenerationJobRow(_Timestamps, Base):
    __tablename__ = "generation_jobs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    character_id: Mapped[int] = mapped_column(sa.ForeignKey("characters.id"), nullable=False)
    model: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    prompt: Mapped[str] = mapped_column(sa.Text, nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="pending")
    sent_prompt: Mapped[str | None] = mapped_column(sa.Text)
    lora_model_id: Mapped[int | None] = mapped_column(sa.Integer)
    trigger_word: Mapped[str | None] = mapped_column(sa.String(64))
    lora_skipped_reason: Mapped[str | None] = mapped_column(sa.String(500))
    mode: Mapped[str | None] = mapped_column(sa.String(16))
    backend: Mapped[str | None] = mapped_column(sa.String(32))
    input_metadata: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False, default=dict)
    output_keys: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False, default=list)
    face_distance: Mapped[float | None] = mapped_column(sa.Float)
    face_match: Mapped[bool | None] = mapped_column(sa.Boolean)
    face_count: Mapped[int | None] = mapped_column(sa.Integer)
    # how the face match was measured (migration 0003): face_* and sface_* against held-out photos when the
    # character has some, else its training photos (face_reference says which); in_sample_* always against
    # the training photos
    face_reference: Mapped[str | None] = mapped_column(sa.String(16))
    sface_similarity: Mapped[float | None] = mapped_column(sa.Float)
    sface_match: Mapped[bool | None] = mapped_column(sa.Boolean)
    in_sample_face_match: Mapped[bool | None] = mapped_column(sa.Boolean)
    in_sample_sface_match: Mapped[bool | None] = mapped_column(sa.Boolean)
    lora_candidate_id: Mapped[int | None] = mapped_column(sa.Integer)  # the ready LoRA it could use, used or not
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(200))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # what the request asked for (a pinned LoRA, a strength) and the strength applied (migration 0005)
    requested_lora_model_id: Mapped[int | None] = mapped_column(sa.Integer)
    requested_strength: Mapped[float | None] = mapped_column(sa.Float)
    lora_strength: Mapped[float | None] = mapped_column(sa.Float)

    __table_args__ = (
        sa.CheckConstraint(_in("status", GENERATION_STATUSES), name="status"),
        sa.CheckConstraint(f"mode IS NULL OR {_in('mode', GENERATION_MODES)}", name="mode"),
        sa.Index(None, "status", "id"),
        sa.Index(None, "character_id"),
        sa.Index(None, "created_at"),
        sa.Index(None, "finished_at"),  # time-window metrics and report (migration 0002)
    )


ACTIVATION_KINDS = ("gate", "manual")
VERDICTS = ("better", "same", "worse")


class LoraActivationRow(Base):
    """Which ready LoRA generation uses for a character and base model: the newest row wins (migration 0005)."""

    __tablename__ = "lora_activations"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    character_id: Mapped[int] = mapped_column(sa.ForeignKey("characters.id"), nullable=False)
    base_model: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    lora_model_id: Mapped[int] = mapped_column(sa.ForeignKey("lora_models.id"), nullable=False)
    previous_lora_model_id: Mapped[int | None] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    activated_by: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    __table_args__ = (
        sa.CheckConstraint(_in("kind", ACTIVATION_KINDS), name="kind"),
        sa.Index(None, "character_id", "base_model", "id"),
    )


class GenerationFeedbackRow(_Timestamps, Base):
    """A user's verdict on a generated image: better / same / worse than without the LoRA (migration 0005)."""

    __tablename__ = "generation_feedback"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("generation_jobs.id"), nullable=False)
    rating: Mapped[str] = mapped_column(sa.String(8), nullable=False)  # as given: better/same/worse or 1..5
    verdict: Mapped[str] = mapped_column(sa.String(8), nullable=False)
    note: Mapped[str | None] = mapped_column(sa.Text)
    rated_by: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    rated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(200), nullable=False)

    __table_args__ = (
        sa.CheckConstraint(_in("verdict", VERDICTS), name="verdict"),
        sa.UniqueConstraint("job_id", "rated_by"),
        sa.Index(None, "rated_at"),
    )
