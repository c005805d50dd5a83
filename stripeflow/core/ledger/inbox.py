"""The inbox: every Stripe event as received, stored once, loaded, and closed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from stripeflow.core.batching import chunks
from stripeflow.core.config import DEFAULT_ACCOUNT
from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.schema import DeadLetterRow, InboxRow, utcnow

# a run's failure note that blames an outage (a vendor, Prefect), not its events
OUTAGE = "outage: "
# statuses an event ends in; a replay (claim_given) may run them again
FINISHED = ("done", "dead", "skipped")


def new_token() -> str:
    """A claim token for a claimer that has no flow run id to use."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class IncomingEvent:
    """What the bridge stores: the verified raw event, the few fields we index, and the Stripe
    account whose endpoint received it."""

    event_id: str
    type: str
    object_id: str | None
    created: int
    livemode: bool
    payload: str
    account: str = DEFAULT_ACCOUNT


class Inbox(LedgerDatabase):
    """Storing, loading and closing the events of the inbox."""

    def store_events(self, events: Sequence[IncomingEvent]) -> list[bool]:
        """Store a batch in one transaction; True for each event that was new."""
        now = utcnow()
        ids = [e.event_id for e in events]
        with self.session() as s:
            existing = set(s.scalars(select(InboxRow.event_id).where(InboxRow.event_id.in_(ids))))
            fresh: dict[str, IncomingEvent] = {}
            for e in events:
                if e.event_id not in existing and e.event_id not in fresh:
                    fresh[e.event_id] = e
            if fresh:
                stmt = self._insert(InboxRow.__table__).on_conflict_do_nothing(index_elements=["event_id"])
                s.execute(
                    stmt,
                    [
                        dict(
                            event_id=e.event_id,
                            type=e.type,
                            object_id=e.object_id,
                            created=e.created,
                            livemode=e.livemode,
                            payload=e.payload,
                            received_at=now,
                            status="pending",
                            attempts=0,
                            account=e.account,
                        )
                        for e in fresh.values()
                    ],
                )
        seen: set[str] = set()
        result = []
        for e in events:
            result.append(e.event_id in fresh and e.event_id not in seen)
            seen.add(e.event_id)
        return result

    def note_failure(self, token: str, note: str) -> None:
        """The run failed: its claimed events keep the reason, for the next attempt's count."""
        with self.session() as s:
            s.execute(
                update(InboxRow)
                .where(InboxRow.claim_token == token, InboxRow.status == "claimed")
                .values(note=note[:1000])
            )

    def bury_exhausted(self, ids: Sequence[str], token: str, max_attempts: int) -> dict[str, str]:
        """Claimed more than `max_attempts` times: dead, with a dead letter saying why, instead of
        being claimed forever. Returns event id -> reason for those buried."""
        ids = list(ids)
        if not ids:
            return {}
        buried: dict[str, str] = {}
        now = utcnow()
        with self.session() as s:
            rows = s.execute(
                select(InboxRow.event_id, InboxRow.attempts, InboxRow.note, InboxRow.account).where(
                    InboxRow.event_id.in_(ids),
                    InboxRow.claim_token == token,
                    InboxRow.status == "claimed",
                    InboxRow.attempts > max_attempts,
                )
            ).all()
            for event_id, attempts, note, account in rows:
                reason = f"failed {attempts - 1} times: {note or 'no error recorded'}"[:1000]
                s.execute(
                    update(InboxRow)
                    .where(InboxRow.event_id == event_id)
                    .values(status="dead", note=reason, lease_until=None)
                )
                s.add(
                    DeadLetterRow(
                        event_id=event_id,
                        target="inbox",
                        action="process",
                        reason=reason,
                        created_at=now,
                        account=account,
                    )
                )
                buried[event_id] = reason
        return buried

    def set_flow_run(self, ids: Sequence[str], flow_run_id: str) -> None:
        with self.session() as s:
            s.execute(
                update(InboxRow).where(InboxRow.event_id.in_(list(ids))).values(flow_run_id=flow_run_id)
            )

    def load_events(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The raw events, in Stripe's `created` order (ties: the order given)."""
        with self.session() as s:
            rows = {
                r.event_id: r for r in s.scalars(select(InboxRow).where(InboxRow.event_id.in_(list(ids))))
            }
        order = {eid: i for i, eid in enumerate(ids)}
        found = sorted(rows.values(), key=lambda r: (r.created, order[r.event_id]))
        return [json.loads(r.payload) for r in found]

    def event_accounts(self, ids: Iterable[str]) -> dict[str, str]:
        """event id -> the account it was received for, for the ids in the inbox."""
        return self._event_column(ids, InboxRow.account)

    def event_objects(self, ids: Iterable[str]) -> dict[str, str]:
        """event id -> the id of the object it is about, for the ids in the inbox that name one."""
        return {e: o for e, o in self._event_column(ids, InboxRow.object_id).items() if o}

    def _event_column(self, ids: Iterable[str], column: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self.session() as s:
            for part in chunks(sorted(set(ids)), 2000):
                rows = s.execute(select(InboxRow.event_id, column).where(InboxRow.event_id.in_(part)))
                found.update((event_id, value) for event_id, value in rows)
        return found

    def finish_events(
        self, ids: Iterable[str], status: str, note: str | None = None, token: str | None = None
    ) -> int:
        """Close events (done | skipped | dead). With a token, only the ones it still holds: an
        event whose lease another run took over is that run's to close. How many were closed."""
        ids = list(ids)
        if not ids:
            return 0
        conditions: list[Any] = [InboxRow.event_id.in_(ids)]
        if token is not None:
            conditions += [InboxRow.claim_token == token, InboxRow.status == "claimed"]
        with self.session() as s:
            result = s.execute(
                update(InboxRow).where(*conditions).values(status=status, note=note, lease_until=None)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def inbox_counts(self, account: str | None = None) -> dict[str, int]:
        """status -> how many events, of one account's or of all."""
        query = select(InboxRow.status, func.count()).group_by(InboxRow.status)
        if account is not None:
            query = query.where(InboxRow.account == account)
        with self.session() as s:
            return dict(s.execute(query).all())  # type: ignore[arg-type]
