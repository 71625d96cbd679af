"""LoRA lifecycle: versions with a quality gate, per-job strength and pinning, retention, users' feedback.

lora_models: validation_score / validation (checkpoint likeness), gate_reason / gated_at (the quality gate), the
new status `archived` and archived_at (retention). lora_activations: which ready LoRA generation uses, with who,
when and why. generation_jobs: requested_lora_model_id / requested_strength (what the request asked for) and
lora_strength (what was applied). generation_feedback: users' ratings of generated images.

Revision ID: 0005
Revises: 0006
Create Date: 2025-01-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATUSES = "status IN ('pending', 'training', 'ready', 'failed', 'archived')"
OLD_STATUSES = "status IN ('pending', 'training', 'ready', 'failed')"


def upgrade() -> None:
    # batch: SQLite rebuilds the table to change a CHECK constraint; PostgreSQL alters it in place
    with op.batch_alter_table("lora_models") as batch:
        batch.add_column(sa.Column("validation_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("validation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("gate_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("gated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("ck_lora_models_status", type_="check")
        batch.create_check_constraint("ck_lora_models_status", STATUSES)

    op.add_column("generation_jobs", sa.Column("requested_lora_model_id", sa.Integer(), nullable=True))
    op.add_column("generation_jobs", sa.Column("requested_strength", sa.Float(), nullable=True))
    op.add_column("generation_jobs", sa.Column("lora_strength", sa.Float(), nullable=True))

    op.create_table(
        "lora_activations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("base_model", sa.String(32), nullable=False),
        sa.Column("lora_model_id", sa.Integer(), nullable=False),
        sa.Column("previous_lora_model_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("activated_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lora_activations"),
        sa.ForeignKeyConstraint(["character_id"], ["characters.id"],
                                name="fk_lora_activations_character_id_characters"),
        sa.ForeignKeyConstraint(["lora_model_id"], ["lora_models.id"],
                                name="fk_lora_activations_lora_model_id_lora_models"),
        sa.CheckConstraint("kind IN ('gate', 'manual')", name="ck_lora_activations_kind"),
    )
    op.create_index("ix_lora_activations_character_id_base_model_id", "lora_activations",
                    ["character_id", "base_model", "id"])

    op.create_table(
        "generation_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("rated_by", sa.String(200), nullable=False),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_generation_feedback"),
        sa.ForeignKeyConstraint(["job_id"], ["generation_jobs.id"],
                                name="fk_generation_feedback_job_id_generation_jobs"),
        sa.UniqueConstraint("job_id", "rated_by", name="uq_generation_feedback_job_id_rated_by"),
        sa.CheckConstraint("verdict IN ('better', 'same', 'worse')", name="ck_generation_feedback_verdict"),
    )
    op.create_index("ix_generation_feedback_rated_at", "generation_feedback", ["rated_at"])


def downgrade() -> None:
    op.drop_index("ix_generation_feedback_rated_at", table_name="generation_feedback")
    op.drop_table("generation_feedback")
    op.drop_index("ix_lora_activations_character_id_base_model_id", table_name="lora_activations")
    op.drop_table("lora_activations")
    with op.batch_alter_table("generation_jobs") as batch:
        batch.drop_column("lora_strength")
        batch.drop_column("requested_strength")
        batch.drop_column("requested_lora_model_id")
    # an archived LoRA has no files left: before this revision that is a failed one
    op.execute("UPDATE lora_models SET status = 'failed', error = 'archived (files removed by retention)' "
               "WHERE status = 'archived'")
    with op.batch_alter_table("lora_models") as batch:
        batch.drop_constraint("ck_lora_models_status", type_="check")
        batch.create_check_constraint("ck_lora_models_status", OLD_STATUSES)
        batch.drop_column("archived_at")
        batch.drop_column("gated_at")
        batch.drop_column("gate_reason")
        batch.drop_column("validation")
        batch.drop_column("validation_score")
