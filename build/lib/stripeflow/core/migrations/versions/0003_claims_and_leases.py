"""Claims with live leases: inbox.claim_token and inbox.lease_until, and payment leases

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import stripeflow.core.ledger

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("lease_until", stripeflow.core.ledger.UTCDateTime(timezone=True), nullable=True)
        )
        # the claim reads pending events oldest first, and claimed ones by their lease
        batch.create_index("ix_inbox_status_received", ["status", "received_at", "created"])
        batch.create_index("ix_inbox_status_lease", ["status", "lease_until"])
        batch.create_index("ix_inbox_claim_token", ["claim_token"])
    # events an older version left claimed are claimable again at once (their lease is over)
    op.execute("UPDATE inbox SET lease_until = claimed_at WHERE status = 'claimed'")
    op.create_table(
        "payment_leases",
        sa.Column("payment_id", sa.String(255), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False, index=True),
        sa.Column("lease_until", stripeflow.core.ledger.UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("payment_leases")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_index("ix_inbox_claim_token")
        batch.drop_index("ix_inbox_status_lease")
        batch.drop_index("ix_inbox_status_received")
        batch.drop_column("lease_until")
        batch.drop_column("claim_token")
