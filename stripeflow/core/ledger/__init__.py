"""The ledger: the durable memory that makes every side effect happen exactly once.

Tables: `inbox` (every Stripe event as received, unique on its id), `payments` (the latest
truth per payment, ordered by the payment's own state, never by arrival), `payment_aliases`
(every Stripe id a payment is known by: PaymentIntent, charge, invoice, session), `links` (a local
id's id in each target system), `effects` (one row per side effect done, keyed so it happens
once), `dead_letters` (what could not be done, with the vendor's reason) and `stripe_objects`
(a cache of objects fetched from the Stripe API). Each of their rows names the Stripe account
it belongs to (`account`; `DEFAULT_ACCOUNT` for a single-account setup and for every row held
before accounts existed, migration 0006).

SQLite in WAL mode by default (synchronous=FULL: a commit is on disk before we answer 2xx);
PostgreSQL through DATABASE_URL. The schema is managed by Alembic (`Ledger.migrate()`).

One module per job, each a part of `Ledger` over the same `LedgerDatabase`: `schema` (the rows),
`database` (engine, sessions), `migrate`, `inbox` and `claims` (events), `leases` (payment leases,
`LeaseKeeper`), `payments` (with `alias_merge`), `effects`, `links`, `dead_letters`, `stripe_cache`.
"""

from __future__ import annotations

from collections.abc import Sequence

from stripeflow.core.ledger.alias_merge import MATCH_WINDOW, PAYMENT_PREFIXES
from stripeflow.core.ledger.claims import InboxClaims
from stripeflow.core.ledger.database import LedgerDatabase, make_engine
from stripeflow.core.ledger.dead_letters import DeadLetters
from stripeflow.core.ledger.effects import EffectItem, EffectOutcome, Effects
from stripeflow.core.ledger.errors import UNAVAILABLE, describe_error
from stripeflow.core.ledger.inbox import FINISHED, OUTAGE, Inbox, IncomingEvent, new_token
from stripeflow.core.ledger.leases import LeaseKeeper, PaymentLeases
from stripeflow.core.ledger.links import Links
from stripeflow.core.ledger.migrate import MIGRATION_LOCK_KEY, MIGRATIONS, Migrations
from stripeflow.core.ledger.payments import Payments
from stripeflow.core.ledger.schema import (
    Base,
    DeadLetterRow,
    EffectRow,
    InboxRow,
    LinkRow,
    PaymentAliasRow,
    PaymentLeaseRow,
    PaymentRow,
    StripeObjectRow,
    UTCDateTime,
    utcnow,
)
from stripeflow.core.ledger.stripe_cache import StripeCache


class Ledger(
    Migrations,
    Inbox,
    InboxClaims,
    PaymentLeases,
    Payments,
    Effects,
    Links,
    DeadLetters,
    StripeCache,
):
    """All reads and writes of the ledger. Thread-safe; one instance per process is enough."""

    def lease_objects(self, event_ids: Sequence[str], token: str, lease_seconds: float) -> set[str]:
        """Right after a claim, lease what its events are about (each event's object and the
        payment it is already known as) for `token`; the ids won. The next claim skips the
        events of these objects rather than taking them only to give them back once its run has
        normalised them (the run itself takes the rest of its leases when it locks)."""
        objects = set(self.event_objects(event_ids).values())
        return self.lock_payments(objects | set(self.canonical_ids(objects).values()), token, lease_seconds)


__all__ = [
    "FINISHED",
    "MATCH_WINDOW",
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "OUTAGE",
    "PAYMENT_PREFIXES",
    "UNAVAILABLE",
    "Base",
    "DeadLetterRow",
    "EffectItem",
    "EffectOutcome",
    "EffectRow",
    "InboxRow",
    "IncomingEvent",
    "LeaseKeeper",
    "Ledger",
    "LedgerDatabase",
    "LinkRow",
    "PaymentAliasRow",
    "PaymentLeaseRow",
    "PaymentRow",
    "StripeObjectRow",
    "UTCDateTime",
    "describe_error",
    "make_engine",
    "new_token",
    "utcnow",
]
