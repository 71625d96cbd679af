"""Character management: unique trigger words, and where each character × base model training stands.

`training_states` holds what the training assets learned about a character's current photo set for one base model
(dataset built, or the check or error that stopped it) and which run said so; `status` combines it with the
lora_models rows. Trigger words become unique: an earlier duplicate keeps its word, later ones get `_{id}`
(their LoRA rows keep the word they were trained with).

Revision ID: 0004
Revises: 0006 (0002 on the issue branch; main had 0006 when it was merged in)
Create Date: 2025-01-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0006"
branch_labels = None
depends_on = None


def _dedupe_trigger_words() -> None:
    characters = sa.table("characters", sa.column("id", sa.Integer), sa.column("trigger_word", sa.String))
    connection = op.get_bind()
    seen: set[str] = set()
    rows = connection.execute(sa.select(characters.c.id, characters.c.trigger_word).order_by(characters.c.id))
    for character_id, word in list(rows):
        if word in seen:
            unique = f"{word[:64 - len(str(character_id)) - 1]}_{character_id}"
            connection.execute(characters.update().where(characters.c.id == character_id).values(trigger_word=unique))
            word = unique
        seen.add(word)


def upgrade() -> None:
    _dedupe_trigger_words()
    op.create_index("ix_characters_trigger_word", "characters", ["trigger_word"], unique=True)
    op.create_table(
        "training_states",
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("base_model", sa.String(32), nullable=False),
        sa.Column("photo_set", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("check_name", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("dataset_hash", sa.String(128), nullable=True),
        sa.Column("usable", sa.Integer(), nullable=True),
        sa.Column("required", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('preparing', 'dataset_ready', 'failed')", name="ck_training_states_state"),
        sa.ForeignKeyConstraint(["character_id"], ["characters.id"],
                                name="fk_training_states_character_id_characters"),
        sa.PrimaryKeyConstraint("character_id", "base_model", name="pk_training_states"),
    )


def downgrade() -> None:
    op.drop_table("training_states")
    op.drop_index("ix_characters_trigger_word", table_name="characters")
