"""lora_models: the second file of a two-expert LoRA (Wan 2.2 14B is a high_noise + low_noise pair).

`model_path`/`sha256`/`size_bytes` stay the primary (high_noise) file; these columns hold the low_noise one. Both
are NULL for a single-file LoRA.

Revision ID: 0006
Revises: 0002
Create Date: 2025-01-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lora_models") as batch:
        batch.add_column(sa.Column("second_expert_path", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("second_expert_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("second_expert_size_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lora_models") as batch:
        batch.drop_column("second_expert_size_bytes")
        batch.drop_column("second_expert_sha256")
        batch.drop_column("second_expert_path")
