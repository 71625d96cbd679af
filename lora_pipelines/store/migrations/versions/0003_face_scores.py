"""generation_jobs records how each face match was measured: against held-out or training photos, by dlib and by
SFace, and which ready LoRA the job could have used (the LoRA usage rate's denominator).

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("lora_candidate_id", sa.Integer()),
    ("face_reference", sa.String(16)),
    ("sface_similarity", sa.Float()),
    ("sface_match", sa.Boolean()),
    ("in_sample_face_match", sa.Boolean()),
    ("in_sample_sface_match", sa.Boolean()),
)


def upgrade() -> None:
    with op.batch_alter_table("generation_jobs") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generation_jobs") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
