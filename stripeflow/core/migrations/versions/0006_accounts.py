"""accounts: every record names the Stripe account it belongs to (issue 9)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stripeflow.core.config import DEFAULT_ACCOUNT

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# every table that holds a record (payment_leases hold none: they are a run's, for seconds)
TABLES = ("inbox", "payments", "payment_aliases", "links", "effects", "dead_letters", "stripe_objects")


def upgrade() -> None:
    # the rows a ledger held before accounts existed are the single account's: the server default
    # fills them as the column is added, and stays for writers that do not name an account
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("account", sa.String(64), nullable=False, server_default=DEFAULT_ACCOUNT)
            )
    with op.batch_alter_table("inbox") as batch:
        # an account's claims: its pending events, oldest first
        batch.create_index(
            "ix_inbox_account_status_received", ["account", "status", "received_at", "created"]
        )
    with op.batch_alter_table("payments") as batch:
        batch.create_index("ix_payments_account", ["account"])
    with op.batch_alter_table("dead_letters") as batch:
        batch.create_index("ix_dead_letters_account", ["account"])


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_index("ix_dead_letters_account")
    with op.batch_alter_table("payments") as batch:
        batch.drop_index("ix_payments_account")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_index("ix_inbox_account_status_received")
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("account")
