"""Initial schema: characters, lora_models, generation_jobs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "characters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("lora_enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger_word", sa.String(64), nullable=False),
        sa.Column("photo_keys", sa.JSON(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_characters"),
    )
    op.create_index("ix_characters_updated_at_id", "characters", ["updated_at", "id"])

    op.create_table(
        "lora_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("base_model", sa.String(32), nullable=False),
        sa.Column("trigger_word", sa.String(64), nullable=False),
        sa.Column("training_model", sa.String(200), nullable=True),
        sa.Column("job_id", sa.String(200), nullable=True),
        sa.Column("model_path", sa.String(1024), nullable=True),
        sa.Column("model_url", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("gpu_call_id", sa.String(200), nullable=True),
        sa.Column("backend", sa.String(32), nullable=True),
        sa.Column("dataset_hash", sa.String(128), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("training_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_lora_models"),
        sa.ForeignKeyConstraint(["character_id"], ["characters.id"], name="fk_lora_models_character_id_characters"),
        sa.UniqueConstraint("idempotency_key", name="uq_lora_models_idempotency_key"),
        sa.CheckConstraint("status IN ('pending', 'training', 'ready', 'failed')", name="ck_lora_models_status"),
    )
    op.create_index(
        "ix_lora_models_character_id_base_model_status_id",
        "lora_models",
        ["character_id", "base_model", "status", "id"],
    )
    op.create_index("ix_lora_models_status_id", "lora_models", ["status", "id"])

    op.create_table(
        "generation_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sent_prompt", sa.Text(), nullable=True),
        sa.Column("lora_model_id", sa.Integer(), nullable=True),
        sa.Column("trigger_word", sa.String(64), nullable=True),
        sa.Column("lora_skipped_reason", sa.String(500), nullable=True),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("backend", sa.String(32), nullable=True),
        sa.Column("input_metadata", sa.JSON(), nullable=False),
        sa.Column("output_keys", sa.JSON(), nullable=False),
        sa.Column("face_distance", sa.Float(), nullable=True),
        sa.Column("face_match", sa.Boolean(), nullable=True),
        sa.Column("face_count", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_generation_jobs"),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name="fk_generation_jobs_character_id_characters"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed')", name="ck_generation_jobs_status"
        ),
        sa.CheckConstraint(
            "mode IS NULL OR mode IN ('lora', 'face_swap', 'standard')", name="ck_generation_jobs_mode"
        ),
    )
    op.create_index("ix_generation_jobs_status_id", "generation_jobs", ["status", "id"])
    op.create_index("ix_generation_jobs_character_id", "generation_jobs", ["character_id"])
    op.create_index("ix_generation_jobs_created_at", "generation_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_table("generation_jobs")
    op.drop_table("lora_models")
    op.drop_table("characters")
