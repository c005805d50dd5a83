"""Resolving payment facts to their canonical payments: aliases, joins and the strict match."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from stripeflow.core import money
from stripeflow.core.config import DEFAULT_ACCOUNT
from stripeflow.core.ledger.schema import PaymentAliasRow, PaymentRow, utcnow
from stripeflow.core.payment import Lifecycle, Payment, preferred_id

# An invoice and a charge no id links (no Stripe API, no invoice_payment.paid) are one payment
# only if they agree on customer, currency and amount and were paid this close together.
MATCH_WINDOW = timedelta(minutes=10)
PAYMENT_PREFIXES = ("pi_", "ch_", "py_")

log = logging.getLogger("stripeflow.ledger")


class AliasMerge:
    """One transaction's resolution of facts to payments: aliases, joins, the strict match.

    Payments and aliases it creates are `account`'s; rows already there keep their account."""

    def __init__(self, s: Session, facts: Sequence[Payment], account: str = DEFAULT_ACCOUNT) -> None:
        self.s = s
        self.account = account
        ids = sorted({i for f in facts for i in (*f.ids, f.payment_id)})
        self.alias: dict[str, str] = dict(
            s.execute(  # type: ignore[arg-type]
                select(PaymentAliasRow.alias_id, PaymentAliasRow.payment_id).where(
                    PaymentAliasRow.alias_id.in_(ids)
                )
            ).all()
        )
        wanted = sorted(set(self.alias.values()) | {f.payment_id for f in facts})
        self.rows: dict[str, PaymentRow | None] = {pid: None for pid in wanted}
        for row in s.scalars(select(PaymentRow).where(PaymentRow.payment_id.in_(wanted)).with_for_update()):
            self.rows[row.payment_id] = row
        self.current: dict[str, Payment | None] = {}
        self.processed: dict[str, Payment | None] = {}
        self.joined: dict[str, str] = {}  # absorbed payment id -> the one it joined
        self.new_aliases: set[str] = set()
        # payments this batch touched, by (customer, currency, amount): the strict match finds
        # them here, so the session need not flush before every query
        self.by_money: dict[tuple[str, str | None, str, int], set[str]] = {}
        self.money_key: dict[str, tuple[str, str | None, str, int]] = {}
        # invoices on their own that a charge of this batch could be: one query for the batch
        customers = {f.customer_id for f in facts if self._side(f, [*f.ids, f.payment_id]) == "charge"}
        if customers:
            alone = or_(
                PaymentRow.payment_id.like("in\\_%", escape="\\"),
                PaymentRow.payment_id.like("cs\\_%", escape="\\"),
            )
            for row in s.scalars(
                select(PaymentRow).where(PaymentRow.customer_id.in_(sorted(c for c in customers if c)), alone)
            ):
                self.rows.setdefault(row.payment_id, row)
                self._load(row.payment_id)
                self._index(row.payment_id)

    @staticmethod
    def _side(fact: Payment, ids: Sequence[str]) -> str | None:
        """ "charge" / "invoice" for a paid fact that only one side's ids name, else None."""
        invoice = any(i.startswith("in_") for i in ids)
        paid = any(i.startswith(PAYMENT_PREFIXES) for i in ids)
        if invoice == paid or not fact.customer_id or fact.paid_at is None:
            return None
        if fact.lifecycle != Lifecycle.succeeded:
            return None
        return "charge" if paid else "invoice"

    def _index(self, pid: str) -> None:
        current = self.current.get(pid)
        old = self.money_key.pop(pid, None)
        if old is not None:
            self.by_money[old].discard(pid)
        side = self._side(current, current.ids) if current is not None else None
        if current is not None and side is not None and pid not in self.joined:
            minor = money.to_minor(current.amount, current.currency)
            key = (side, current.customer_id, current.currency, minor)
            self.money_key[pid] = key
            self.by_money.setdefault(key, set()).add(pid)

    def row(self, pid: str) -> PaymentRow | None:
        if pid not in self.rows:
            self.rows[pid] = self.s.get(PaymentRow, pid)
        return self.rows[pid]

    def canonical(self, pid: str) -> str:
        while pid in self.joined:
            pid = self.joined[pid]
        return pid

    def _load(self, pid: str) -> None:
        if pid not in self.current:
            row = self.row(pid)
            self.current[pid] = Payment.model_validate_json(row.data) if row else None
            self.processed[pid] = (
                Payment.model_validate_json(row.processed_data) if row and row.processed_data else None
            )

    def state(self, pid: str) -> tuple[Payment, Payment | None]:
        self._load(pid)
        current = self.current[pid]
        assert current is not None  # every canonical id has had a fact merged into it
        return current, self.processed[pid]

    def _set_alias(self, alias: str, pid: str) -> None:
        if self.alias.get(alias) == pid:
            return
        if alias in self.alias and alias not in self.new_aliases:
            self.s.execute(
                update(PaymentAliasRow).where(PaymentAliasRow.alias_id == alias).values(payment_id=pid)
            )
        elif alias not in self.alias:
            self.new_aliases.add(alias)  # inserted together by `write_aliases`
        self.alias[alias] = pid

    def write_aliases(self) -> None:
        if self.new_aliases:
            now = utcnow()
            self.s.execute(
                insert(PaymentAliasRow),
                [
                    dict(alias_id=a, payment_id=self.alias[a], created_at=now, account=self.account)
                    for a in sorted(self.new_aliases)
                ],
            )

    def record(self, fact: Payment) -> str:
        ids = sorted({*fact.ids, fact.payment_id})
        known = {self.canonical(self.alias[i]) for i in ids if i in self.alias}
        if not known:
            target = self.match(fact, ids) or preferred_id(ids)
        elif len(known) == 1:
            target = known.pop()
        else:
            target = self.survivor(known)
            for other in sorted(known - {target}):
                self.join(other, target)
        for i in ids:
            self._set_alias(i, target)
        self._load(target)
        fact = fact.model_copy(update={"payment_id": target})
        current = self.current[target]
        self.current[target] = (
            current.merged_with(fact) if current else Payment.model_validate(fact.model_dump())
        )
        self._index(target)
        return target

    def survivor(self, known: set[str]) -> str:
        """Of two payments found to be one: the one the sinks already know, else the PaymentIntent."""
        seen = [pid for pid in known if (row := self.row(pid)) is not None and row.processed_data]
        return preferred_id(seen or known)

    def join(self, other: str, target: str) -> None:
        """Fold payment `other` into `target`: its state, what its sinks saw, and its aliases."""
        self._load(other)
        self._load(target)
        moved, seen = self.current[other], self.processed[other]
        if moved is not None:
            moved = moved.model_copy(update={"payment_id": target})
            current = self.current[target]
            self.current[target] = current.merged_with(moved) if current else moved
        if seen is not None:
            seen = seen.model_copy(update={"payment_id": target})
            before = self.processed[target]
            # what was already said about either half is not said again (no second thank-you)
            self.processed[target] = before.merged_with(seen) if before else seen
        self.s.execute(
            update(PaymentAliasRow).where(PaymentAliasRow.payment_id == other).values(payment_id=target)
        )
        for alias, pid in list(self.alias.items()):
            if pid == other:
                self.alias[alias] = target
        row = self.row(other)
        if row is not None:
            self.s.flush()  # a row added earlier in this batch must exist before it can go
            self.s.delete(row)
            self.rows[other] = None
        self.joined[other] = target
        self._index(other)
        self._index(target)
        log.warning("payment %s is %s: joined (its ids link them)", other, target)

    def match(self, fact: Payment, ids: list[str]) -> str | None:
        """The one payment an unlinked invoice (or charge) must be: same customer, currency and
        amount, paid within `MATCH_WINDOW`, and not linked to another invoice (or charge)."""
        side = self._side(fact, ids)
        if side is None or fact.paid_at is None:
            return None
        paid, invoice = side == "charge", side == "invoice"
        minor = money.to_minor(fact.amount, fact.currency)
        stored: list[PaymentRow] = []
        if invoice:  # a charge on its own, created before it was paid (the charge side is preloaded)
            query = select(PaymentRow).where(
                PaymentRow.customer_id == fact.customer_id,
                PaymentRow.currency == fact.currency,
                PaymentRow.amount_minor == minor,
                PaymentRow.occurred_at >= fact.paid_at - timedelta(days=1),
                PaymentRow.occurred_at <= fact.paid_at + MATCH_WINDOW,
            )
            with self.s.no_autoflush:  # rows of this batch are in `by_money`
                stored = [row for row in self.s.scalars(query) if row.payment_id not in self.joined]
        for row in stored:
            self.rows.setdefault(row.payment_id, row)
        other_side = "invoice" if paid else "charge"
        candidates = {row.payment_id for row in stored} | self.by_money.get(
            (other_side, fact.customer_id, fact.currency, minor), set()
        )
        found: list[str] = []
        for pid in sorted(candidates):
            self._load(pid)
            other = self.current[pid]
            if other is None or other.paid_at is None or other.lifecycle != Lifecycle.succeeded:
                continue
            if (other.customer_id, other.currency) != (fact.customer_id, fact.currency):
                continue
            if money.to_minor(other.amount, other.currency) != minor:
                continue
            has_invoice = any(a.startswith("in_") for a in other.ids)
            has_payment = any(a.startswith(PAYMENT_PREFIXES) for a in other.ids)
            if (has_invoice, has_payment) != (paid, invoice):  # the other side, and only it
                continue
            if abs(other.paid_at - fact.paid_at) <= MATCH_WINDOW:
                found.append(pid)
        return found[0] if len(found) == 1 else None

    def write(self, pid: str) -> None:
        """The payment's row as the merge left it."""
        merged, processed = self.state(pid)
        values = dict(
            provider=merged.provider,
            status=merged.status.value,
            currency=merged.currency,
            amount_minor=money.to_minor(merged.amount, merged.currency),
            refunded_minor=money.to_minor(merged.refunded_amount, merged.currency),
            customer_id=merged.customer_id,
            email=merged.email,
            occurred_at=merged.occurred_at,
            livemode=merged.livemode,
            data=merged.model_dump_json(),
            processed_data=processed.model_dump_json() if processed else None,
            updated_at=utcnow(),
        )
        row = self.row(pid)
        if row is None:
            self.rows[pid] = PaymentRow(payment_id=pid, account=self.account, **values)
            self.s.add(self.rows[pid])
        else:
            for key, value in values.items():
                setattr(row, key, value)
