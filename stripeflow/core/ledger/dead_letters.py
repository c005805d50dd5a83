"""Dead letters: what could not be done, with the vendor's reason, until resolved."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update

from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.schema import DeadLetterRow, InboxRow, utcnow


class DeadLetters(LedgerDatabase):
    """Writing, listing and resolving dead letters."""

    def dead_letter(
        self,
        *,
        target: str,
        action: str,
        reason: str,
        event_id: str | None = None,
        payment_id: str | None = None,
        account: str | None = None,
    ) -> None:
        with self.session() as s:
            s.add(
                DeadLetterRow(
                    event_id=event_id,
                    payment_id=payment_id,
                    target=target,
                    action=action,
                    reason=reason,
                    created_at=utcnow(),
                    account=account or self.account,
                )
            )

    def dead_letters(
        self, unresolved_only: bool = True, *, account: str | None = None
    ) -> list[DeadLetterRow]:
        """The dead letters (the open ones by default), of one account's or of all, oldest first."""
        with self.session() as s:
            q = select(DeadLetterRow).order_by(DeadLetterRow.id)
            if unresolved_only:
                q = q.where(DeadLetterRow.resolved_at.is_(None))
            if account is not None:
                q = q.where(DeadLetterRow.account == account)
            return list(s.scalars(q))

    def events_for_dead_letters(self, letters: Sequence[DeadLetterRow]) -> list[str]:
        """Every inbox event behind these dead letters: named directly, or about the same payment."""
        event_ids = {d.event_id for d in letters if d.event_id}
        payment_ids = {d.payment_id for d in letters if d.payment_id}
        with self.session() as s:
            if payment_ids:
                rows = s.execute(select(InboxRow.event_id, InboxRow.payload).where(InboxRow.status == "done"))
                for event_id, payload in rows:
                    if any(pid in payload for pid in payment_ids):
                        event_ids.add(event_id)
        return sorted(event_ids)

    def resolve_dead_letters(self, ids: Sequence[int]) -> None:
        with self.session() as s:
            s.execute(
                update(DeadLetterRow).where(DeadLetterRow.id.in_(list(ids))).values(resolved_at=utcnow())
            )
