"""Payment leases, the renewal of a run's leases, and the thread that keeps them alive."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import SQLAlchemyError

from stripeflow.core.batching import chunks
from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.errors import describe_error
from stripeflow.core.ledger.schema import InboxRow, PaymentLeaseRow, utcnow

log = logging.getLogger("stripeflow.ledger")


class PaymentLeases(LedgerDatabase):
    """Which run holds a payment, and the renewal of everything a run's token holds."""

    def renew_leases(self, token: str, lease_seconds: float) -> int:
        """Move on every lease `token` holds (its claimed events and its payments, and the events
        that wait for its payments: they wait while it lives, not claimed and given back again
        each lease); how many."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        with self.session() as s:
            events = s.execute(
                update(InboxRow)
                .where(InboxRow.claim_token == token, InboxRow.status.in_(("claimed", "pending")))
                .values(lease_until=until)
            )
            payments = s.execute(
                update(PaymentLeaseRow).where(PaymentLeaseRow.token == token).values(lease_until=until)
            )
        return int(events.rowcount or 0) + int(payments.rowcount or 0)  # type: ignore[attr-defined]

    def lock_payments(self, payment_ids: Iterable[str], token: str, lease_seconds: float) -> set[str]:
        """Take the lease on each payment for `token`; the ids won. A payment another live run
        holds is not won: that run is recording or syncing it now."""
        ids = sorted(set(payment_ids))  # one order for every run: PostgreSQL never deadlocks on it
        won: set[str] = set()
        now = utcnow()
        until = now + timedelta(seconds=lease_seconds)
        table = PaymentLeaseRow.__table__
        for start in range(0, len(ids), 2000):  # 6,000 parameters a statement: within every limit
            stmt = self._insert(table).values(
                [dict(payment_id=pid, token=token, lease_until=until) for pid in ids[start : start + 2000]]
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["payment_id"],
                set_={"token": stmt.excluded.token, "lease_until": stmt.excluded.lease_until},
                where=or_(table.c.lease_until < now, table.c.token == token),
            ).returning(table.c.payment_id)
            with self.session() as s:
                won.update(s.scalars(stmt))
        return won

    def unlock_payments(self, payment_ids: Iterable[str], token: str) -> None:
        """Give back these leases `token` holds (ones it took and turned out not to need)."""
        with self.session() as s:
            for part in chunks(sorted(set(payment_ids)), 2000):
                s.execute(
                    delete(PaymentLeaseRow).where(
                        PaymentLeaseRow.token == token, PaymentLeaseRow.payment_id.in_(part)
                    )
                )

    def release_payments(self, token: str) -> None:
        """The run is over: its payments are free, and the events that waited for them with it."""
        with self.session() as s:
            s.execute(delete(PaymentLeaseRow).where(PaymentLeaseRow.token == token))
            s.execute(
                update(InboxRow)
                .where(InboxRow.status == "pending", InboxRow.claim_token == token)
                .values(claim_token=None, lease_until=None)
            )

    def payment_holder(self, payment_id: str) -> str | None:
        """The token whose live lease holds this payment, if any."""
        with self.session() as s:
            row = s.get(PaymentLeaseRow, payment_id)
            return row.token if row is not None and row.lease_until >= utcnow() else None


class LeaseKeeper:
    """Keeps a run's leases alive: a daemon thread renews every lease its token holds (events
    and payments) each `lease_seconds / 3`. When the process dies the renewals stop, and within
    one lease the events are claimable again.

        with LeaseKeeper(ledger, token, lease_seconds):
            ...work on what `token` claimed...
    """

    def __init__(self, ledger: PaymentLeases, token: str, lease_seconds: float) -> None:
        self.ledger = ledger
        self.token = token
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3, 0.05)
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.token[:8]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.ledger.renew_leases(self.token, self.lease_seconds)
                self.renewals += 1
            except SQLAlchemyError as exc:  # the ledger blinked: the next beat tries again
                log.warning("renewing the leases of %s failed: %s", self.token, describe_error(exc))

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
