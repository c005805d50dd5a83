"""effects: claimed -> attempting -> settled, with the holder's token; dead letters name their effect

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("effects") as batch:
        batch.add_column(sa.Column("token", sa.String(64), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_effects_status", ["status"])
    # before this version a claim was `unknown` with its token in `result`, and a send had
    # perhaps been made: such rows are attempts whose outcome nobody settled
    op.execute(
        "UPDATE effects SET status = 'attempting', token = result "
        "WHERE status = 'unknown' AND result LIKE 'sending:%'"
    )
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("effect_key", sa.String(512), nullable=True))
        batch.create_index("ix_dead_letters_effect_key", ["effect_key"])


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_index("ix_dead_letters_effect_key")
        batch.drop_column("effect_key")
    with op.batch_alter_table("effects") as batch:
        batch.drop_index("ix_effects_status")
        batch.drop_column("updated_at")
        batch.drop_column("token")
