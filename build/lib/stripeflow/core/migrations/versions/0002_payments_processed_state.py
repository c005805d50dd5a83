"""payments.processed_data: the state every sink has seen

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("processed_data", sa.Text(), nullable=True))
    # payments recorded before this version were fully processed by the version that recorded them
    op.execute("UPDATE payments SET processed_data = data")


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("processed_data")
