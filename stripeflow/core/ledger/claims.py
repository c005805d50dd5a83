"""Claims on inbox events: who works on an event, until when, and what a dispatcher takes next."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, true, union_all, update

from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.inbox import FINISHED, OUTAGE, new_token
from stripeflow.core.ledger.schema import InboxRow, PaymentLeaseRow, utcnow


class InboxClaims(LedgerDatabase):
    """Claiming inbox events under a token and a lease, and giving them back."""

    # A claim is one conditional UPDATE ... RETURNING: two claimers never both win an event, and
    # the winner's token is on the row. A live run's LeaseKeeper moves lease_until on; an event
    # whose lease ran out (its run died) is claimable again.

    def _claimable(self, now: datetime) -> Any:
        # pending with a lease: it waits for the run that holds its payment (see `defer_events`)
        return and_(
            InboxRow.status.in_(("pending", "claimed")),
            or_(InboxRow.lease_until.is_(None), InboxRow.lease_until < now),
        )

    def claim_events(self, limit: int, lease_seconds: float, token: str | None = None) -> list[str]:
        """Claim up to `limit` pending (or lease-expired) events for `token`; their ids, oldest first."""
        # pending ones by age and expired ones by lease, each read from its own index (one query
        # over both statuses would sort the whole backlog on every claim), then the oldest of both
        return self._claim(
            [
                (InboxRow.status == "pending", (InboxRow.received_at, InboxRow.created)),
                (InboxRow.status == "claimed", (InboxRow.lease_until,)),
            ],
            limit,
            lease_seconds,
            token or new_token(),
        )

    def claimable_accounts(self) -> list[str]:
        """The accounts with events a claim could take now (pending, or their run's lease over)."""
        with self.session() as s:
            return sorted(s.scalars(select(InboxRow.account).where(self._claimable(utcnow())).distinct()))

    def claim_next(
        self, limit: int, lease_seconds: float, token: str, account: str | None = None
    ) -> list[str]:
        """What a dispatcher claims next: first the events whose run died or failed, else up to
        `limit` pending ones, oldest first; with `account`, only that account's (a run serves
        one account, with its key, company and targets).

        Events whose run raised are retried in a batch ten times smaller for each attempt
        (10,000, 1,000, 100, 10, 1), so one event that fails its whole batch ends up alone before
        it runs out of attempts, and the others get through. A run that died without a word
        (kill -9, a lost machine) or failed on an outage (`OUTAGE` notes) says nothing about its
        events: they go again whole twice, and shrink only from their third such attempt on, so
        a worker killed twice in one burst costs two leases, not ten small runs, and an event
        that kills its process each time still ends alone by its fifth attempt."""
        now = utcnow()
        mine = InboxRow.account == account if account is not None else true()  # one account's run
        expired = (InboxRow.status == "claimed") & (InboxRow.lease_until < now) & mine
        with self.session() as s:
            tried = s.scalar(select(func.max(InboxRow.attempts)).where(expired))
            failed = s.scalar(
                select(func.max(InboxRow.attempts)).where(
                    expired, InboxRow.note.is_not(None), InboxRow.note.not_like(f"{OUTAGE}%")
                )
            )
        if tried:
            shrink = max(int(failed or 0), int(tried) - 2)
            retry = self._claim(
                [
                    (
                        and_(InboxRow.status == "claimed", mine),
                        (InboxRow.attempts.desc(), InboxRow.lease_until),
                    )
                ],
                max(1, limit // 10 ** min(shrink, 9)),
                lease_seconds,
                token,
            )
            if retry:
                return retry
        # an event of a payment a live run holds would only wait for it: leave it for the next
        # claim and take one that can go now (its object is the payment, or one of its ids)
        held = exists().where(
            PaymentLeaseRow.payment_id == InboxRow.object_id, PaymentLeaseRow.lease_until >= now
        )
        return self._claim(
            [(and_(InboxRow.status == "pending", ~held, mine), (InboxRow.received_at, InboxRow.created))],
            limit,
            lease_seconds,
            token,
        )

    def _claim(
        self, parts: Sequence[tuple[Any, tuple[Any, ...]]], limit: int, lease_seconds: float, token: str
    ) -> list[str]:
        """One conditional UPDATE ... RETURNING over the first `limit` free rows of each part
        (a condition and its index's order), oldest first."""
        now = utcnow()
        pg = self.engine.dialect.name == "postgresql"
        free = or_(InboxRow.lease_until.is_(None), InboxRow.lease_until < now)
        selects = []
        for condition, order in parts:
            part = (
                select(InboxRow.event_id, InboxRow.received_at, InboxRow.created)
                .where(condition, free)
                .order_by(*order)
                .limit(limit)
            )
            if pg:  # concurrent claimers take different rows
                part = part.with_for_update(skip_locked=True)
            selects.append(part.subquery().select())
        both = (union_all(*selects) if len(selects) > 1 else selects[0]).subquery()
        pick = (
            select(both.c.event_id).order_by(both.c.received_at, both.c.created, both.c.event_id).limit(limit)
        )
        picked: Any = pick.scalar_subquery()
        if pg:
            # MATERIALIZED, so the LIMIT is applied once (a subquery in IN may be run again by the
            # planner, locking more rows each time)
            cte = pick.cte("picked").prefix_with("MATERIALIZED")
            picked = select(cte.c.event_id)
        stmt = (
            update(InboxRow)
            # no second look at the status here: the pick runs inside this statement's write
            # transaction (SQLite: one writer at a time; PostgreSQL: the rows are locked), and a
            # second condition would make SQLite scan the backlog instead of the primary key
            .where(InboxRow.event_id.in_(picked))
            .values(
                status="claimed",
                claim_token=token,
                claimed_at=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=InboxRow.attempts + 1,
            )
            .returning(InboxRow.event_id, InboxRow.received_at, InboxRow.created)
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            rows = s.execute(stmt).all()
        return [r.event_id for r in sorted(rows, key=lambda r: (r.received_at, r.created, r.event_id))]

    def claim_given(self, ids: Sequence[str], token: str, lease_seconds: float) -> list[str]:
        """Claim these events for `token` (a Retry, a replay, a run started with event ids).

        Taken: pending ones, expired ones, ones this token holds already, and finished ones (a
        replay runs them again, with a fresh count of attempts). Left out: ids held by another
        live lease (that run is working on them) and ids not in the inbox. Returns the ids taken,
        in the order given.
        """
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        now = utcnow()
        mine = and_(InboxRow.status == "claimed", InboxRow.claim_token == token)
        stmt = (
            update(InboxRow)
            .where(
                InboxRow.event_id.in_(ids),
                or_(self._claimable(now), mine, InboxRow.status.in_(("pending", *FINISHED))),
            )
            .values(
                status="claimed",
                claim_token=token,
                claimed_at=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=case(
                    (InboxRow.status.in_(FINISHED), 1),
                    (mine, InboxRow.attempts),  # the dispatcher claimed it for this run: counted once
                    else_=InboxRow.attempts + 1,
                ),
            )
            .returning(InboxRow.event_id)
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            taken = set(s.scalars(stmt))
        return [i for i in ids if i in taken]

    def release_events(self, ids: Sequence[str], token: str | None = None) -> None:
        """Give claimed events back to the inbox, uncounted (Prefect could not take them, or their
        payment is another run's just now): the next round claims them again."""
        ids = list(ids)
        if not ids:
            return
        conditions: list[Any] = [InboxRow.event_id.in_(ids), InboxRow.status == "claimed"]
        if token is not None:
            conditions.append(InboxRow.claim_token == token)
        with self.session() as s:
            s.execute(
                update(InboxRow)
                .where(*conditions)
                .values(
                    status="pending",
                    claim_token=None,
                    claimed_at=None,
                    lease_until=None,
                    attempts=case((InboxRow.attempts > 0, InboxRow.attempts - 1), else_=0),
                )
            )

    def defer_events(self, event_payments: Mapping[str, str], token: str) -> None:
        """Give back, uncounted, events `token` claimed whose payment (event id -> payment id)
        another run holds: each waits, pending, until that run frees the payment or its lease
        ends, so the dispatcher does not claim it again and again meanwhile."""
        if not event_payments:
            return
        with self.session() as s:
            holders = {
                r.payment_id: r
                for r in s.scalars(
                    select(PaymentLeaseRow).where(
                        PaymentLeaseRow.payment_id.in_(set(event_payments.values()))
                    )
                )
            }
            for event_id, payment_id in event_payments.items():
                holder = holders.get(payment_id)
                s.execute(
                    update(InboxRow)
                    .where(
                        InboxRow.event_id == event_id,
                        InboxRow.status == "claimed",
                        InboxRow.claim_token == token,
                    )
                    .values(
                        status="pending",
                        claim_token=holder.token if holder else None,
                        claimed_at=None,
                        lease_until=holder.lease_until if holder else None,
                        attempts=case((InboxRow.attempts > 0, InboxRow.attempts - 1), else_=0),
                    )
                )
