"""payment_aliases: every Stripe id a payment is known by (PaymentIntent, Charge, Invoice, Session)

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_aliases",
        sa.Column("alias_id", sa.String(255), primary_key=True),
        sa.Column("payment_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_payment_aliases_payment_id", "payment_aliases", ["payment_id"], unique=False)
    # every payment recorded so far is known by its own id
    op.execute(
        "INSERT INTO payment_aliases (alias_id, payment_id, created_at) "
        "SELECT payment_id, payment_id, updated_at FROM payments"
    )


def downgrade() -> None:
    op.drop_index("ix_payment_aliases_payment_id", table_name="payment_aliases")
    op.drop_table("payment_aliases")
