"""Payments: each one's latest state, merged from every fact seen, and what the sinks have seen."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from sqlalchemy import select, update

from stripeflow.core.ledger.alias_merge import AliasMerge
from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.errors import UNAVAILABLE, describe_error
from stripeflow.core.ledger.schema import PaymentAliasRow, PaymentRow
from stripeflow.core.payment import Payment, PaymentChange

log = logging.getLogger("stripeflow.ledger")


class Payments(LedgerDatabase):
    """Recording payment facts and their processed state."""

    def canonical_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """id -> the payment it is known as (`payment_aliases`), for the ids already known."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(PaymentAliasRow.alias_id, PaymentAliasRow.payment_id).where(
                    PaymentAliasRow.alias_id.in_(ids)
                )
            )
            return {alias: pid for alias, pid in rows}

    def record_payments(
        self, incoming: Sequence[Payment], *, account: str | None = None
    ) -> list[PaymentChange]:
        """Merge newly seen facts into their payments' states, in one transaction.

        Each fact is resolved to its canonical payment through `payment_aliases` (an id already
        known wins; a PaymentIntent id is preferred when nothing is known yet; two payments a
        fact links are joined into one), and its ids are recorded as aliases in the same
        transaction. Returns one change per fact, in order, each with its payment's state after
        the whole batch. The ordering guard (`Payment.merged_with`) lives here.

        Payments and aliases first recorded here are `account`'s (the Stripe account the facts
        came from); ones already recorded keep the account they were first recorded for.
        """
        with self.session() as s:
            merge = AliasMerge(s, incoming, account or self.account)
            targets = [merge.record(fact) for fact in incoming]
            final = {pid: merge.state(pid) for pid in dict.fromkeys(merge.canonical(t) for t in targets)}
            for pid in final:
                merge.write(pid)
            merge.write_aliases()
            return [
                PaymentChange(payment=final[pid][0], previous=final[pid][1])
                for pid in (merge.canonical(t) for t in targets)
            ]

    def record_payments_isolated(
        self, incoming: Sequence[Payment], *, account: str | None = None
    ) -> tuple[list[PaymentChange], dict[str, str]]:
        """`record_payments`, except that a payment the database refuses (an amount past its
        integers, a value it cannot store) fails alone: the batch is halved down to it, and the
        others are recorded. Returns the changes and payment id -> reason for the refused ones.

        The database being away or busy is not one payment's fault: that still raises.
        """
        groups: dict[str, list[Payment]] = {}
        for fact in incoming:
            groups.setdefault(fact.payment_id, []).append(fact)
        changes: list[PaymentChange] = []
        failed: dict[str, str] = {}
        self._record_halving(list(groups.values()), changes, failed, account or self.account)
        return changes, failed

    def _record_halving(
        self,
        groups: list[list[Payment]],
        changes: list[PaymentChange],
        failed: dict[str, str],
        account: str,
    ) -> None:
        if not groups:
            return
        try:
            changes.extend(
                self.record_payments([fact for group in groups for fact in group], account=account)
            )
            return
        except UNAVAILABLE:
            raise
        except Exception as exc:  # poison isolation: whatever one payment raises stays with it
            if len(groups) == 1:
                failed[groups[0][0].payment_id] = describe_error(exc)
                log.warning("payment %s cannot be recorded: %s", groups[0][0].payment_id, describe_error(exc))
                return
        mid = len(groups) // 2
        self._record_halving(groups[:mid], changes, failed, account)
        self._record_halving(groups[mid:], changes, failed, account)

    def mark_processed(self, payments: Sequence[Payment]) -> None:
        """Every sink has passed these states on; the next run's changes are counted from here."""
        with self.session() as s:
            for p in payments:
                s.execute(
                    update(PaymentRow)
                    .where(PaymentRow.payment_id == p.payment_id)
                    .values(processed_data=p.model_dump_json())
                )
