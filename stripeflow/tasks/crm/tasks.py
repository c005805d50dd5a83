"""Prefect tasks that put payments into a CRM: contacts, then deals, then notes, in batches.

Each task is keyed, so its declared retries are safe: contacts upsert on the e-mail, deals on
the payment id, and notes are guarded by ledger effects (one note per real change, ever).
A permanent vendor error for one payment dead-letters that payment and lets the rest through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from stripeflow.core.batching import call_in_batches
from stripeflow.core.config import CRMTarget, Settings
from stripeflow.core.errors import OutcomeUnknownError, PermanentError
from stripeflow.core.ledger import Changes, Ledger
from stripeflow.core.money import format_money, to_minor
from stripeflow.core.payment import Payment, PaymentStatus
from stripeflow.tasks.crm.base import CRM, ContactInput, DealInput, NoteInput
from stripeflow.tasks.retry import retry_if_retriable

STAGE_BY_STATUS = {
    PaymentStatus.pending: "new",
    PaymentStatus.authorized: "new",  # the card is held: nothing is paid until it is captured
    PaymentStatus.succeeded: "paid",
    PaymentStatus.partially_refunded: "paid",
    PaymentStatus.disputed: "paid",
    PaymentStatus.dispute_won: "paid",
    PaymentStatus.dispute_lost: "refunded",  # the money went back to the cardholder
    PaymentStatus.failed: "failed",
    PaymentStatus.canceled: "failed",
    PaymentStatus.expired: "failed",
    PaymentStatus.refunded: "refunded",
}

NOTE_TEXT = {
    "pl": {
        PaymentStatus.pending: "Płatność oczekuje: {amount}.",
        PaymentStatus.authorized: "Płatność autoryzowana, czeka na pobranie: {amount}.",
        PaymentStatus.succeeded: "Płatność zrealizowana: {amount} ({method}).",
        PaymentStatus.partially_refunded: "Częściowy zwrot: {refunded} z {amount}.",
        PaymentStatus.refunded: "Zwrot całej płatności: {refunded}.",
        PaymentStatus.failed: "Płatność nieudana: {amount}. {reason}",
        PaymentStatus.canceled: "Płatność anulowana: {amount}.",
        PaymentStatus.expired: "Autoryzacja wygasła, środki nie zostały pobrane: {amount}.",
        PaymentStatus.disputed: "Klient zakwestionował płatność (spór, chargeback): {amount}.",
        PaymentStatus.dispute_won: "Spór rozstrzygnięty na naszą korzyść: {amount} zostaje u nas.",
        PaymentStatus.dispute_lost: "Spór przegrany: {amount} wróciło do klienta (utracone).",
    },
    "en": {
        PaymentStatus.pending: "Payment pending: {amount}.",
        PaymentStatus.authorized: "Payment authorised, waiting to be captured: {amount}.",
        PaymentStatus.succeeded: "Payment succeeded: {amount} ({method}).",
        PaymentStatus.partially_refunded: "Partial refund: {refunded} of {amount}.",
        PaymentStatus.refunded: "Payment refunded in full: {refunded}.",
        PaymentStatus.failed: "Payment failed: {amount}. {reason}",
        PaymentStatus.canceled: "Payment canceled: {amount}.",
        PaymentStatus.expired: "Authorisation expired, nothing was captured: {amount}.",
        PaymentStatus.disputed: "The customer disputed the payment (chargeback): {amount}.",
        PaymentStatus.dispute_won: "Dispute won: {amount} stays with us.",
        PaymentStatus.dispute_lost: "Dispute lost: {amount} went back to the customer (lost).",
    },
}
NO_PRODUCT = {"pl": "płatność", "en": "payment"}

# Statuses whose stage follows the money left after refunds (a dispute does not undo a refund).
_BY_REFUNDS = frozenset({PaymentStatus.disputed, PaymentStatus.dispute_won})


def stage_for(payment: Payment) -> str:
    if payment.status in _BY_REFUNDS and payment.refunded_amount >= payment.amount:
        return "refunded"
    if payment.status in (PaymentStatus.succeeded, PaymentStatus.dispute_won) and payment.invoice_id:
        return "invoiced"
    return STAGE_BY_STATUS[payment.status]


def deal_title(payment: Payment, settings: Settings) -> str:
    lang = settings.language
    return settings.deals.title_template.format(
        product=payment.product or NO_PRODUCT[lang],
        amount=format_money(payment.amount, payment.currency, lang),
        payment_id=payment.payment_id,
        email=payment.email or "",
    )


def note_text(payment: Payment, language: str) -> str:
    return (
        NOTE_TEXT[language][payment.status]
        .format(
            amount=format_money(payment.amount, payment.currency, language),
            refunded=format_money(payment.refunded_amount, payment.currency, language),
            method=payment.method.value,
            reason=payment.failure_message or "",
        )
        .strip()
    )


def note_key(target: str, payment: Payment) -> str:
    """One note per real change: the state a note reports is its key."""
    return (
        f"{target}:note:{payment.payment_id}:{payment.status.value}:"
        f"{to_minor(payment.refunded_amount, payment.currency)}"
    )


def deal_state_key(target: str, payment: Payment) -> str:
    """The deal as last written: a rerun or a duplicate delivery with nothing new writes nothing."""
    state = payment.model_dump_json(exclude={"event_ids"})
    return f"{target}:deal:{payment.payment_id}:{hashlib.sha256(state.encode()).hexdigest()[:16]}"


def contact_key(payment: Payment) -> str | None:
    return payment.email.lower() if payment.email else payment.customer_id


def mapped_fields(payment: Payment, mapping: dict[str, str]) -> dict[str, Any]:
    """Payment field -> CRM field, per the target's `fields` mapping."""
    out: dict[str, Any] = {}
    for source, crm_field in mapping.items():
        value = getattr(payment, source)
        if isinstance(value, tuple):
            value = ", ".join(map(str, value))
        elif isinstance(value, Decimal):
            value = str(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[crm_field] = value.value if hasattr(value, "value") else value
    return out


def _dead_letter(ledger: Ledger, crm: CRM, action: str, payment_id: str, exc: PermanentError) -> None:
    get_run_logger().error("%s %s for %s failed for good: %s", crm.name, action, payment_id, exc)
    ledger.dead_letter(target=crm.name, action=action, reason=str(exc), payment_id=payment_id)


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def upsert_contacts(crm: CRM, ledger: Ledger, changes: Changes) -> dict[str, str]:
    """Find or create each payment's contact (by e-mail, else Stripe customer id); key -> CRM id."""
    inputs: dict[str, ContactInput] = {}
    owners: dict[str, str] = {}
    for p in changes.payments:
        key = contact_key(p)
        if key and key not in inputs:
            inputs[key] = ContactInput(key=key, email=p.email, name=p.name, customer_id=p.customer_id)
            owners[key] = p.payment_id
    items = list(inputs.values())
    ids = call_in_batches(
        items,
        crm.batch_size,
        crm.upsert_contacts,
        lambda c, exc: _dead_letter(ledger, crm, "upsert_contact", owners[c.key], exc),
    )
    found = {c.key: i for c, i in zip(items, ids, strict=True) if i is not None}
    ledger.set_links("contact", crm.name, found)
    return found


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def upsert_deals(
    crm: CRM,
    ledger: Ledger,
    changes: Changes,
    contact_ids: dict[str, str],
    target: CRMTarget,
    settings: Settings,
) -> dict[str, str]:
    """Create or update each payment's deal, keyed by the payment id; payment id -> CRM deal id."""
    items = [
        DealInput(
            payment_id=p.payment_id,
            title=deal_title(p, settings),
            amount=p.amount,
            refunded_amount=p.refunded_amount,
            currency=p.currency,
            stage=stage_for(p),
            contact_id=contact_ids.get(contact_key(p) or ""),
            payment=p,
            fields=mapped_fields(p, target.fields),
        )
        for p in changes.payments
    ]
    ids = call_in_batches(
        items,
        crm.batch_size,
        crm.upsert_deals,
        lambda d, exc: _dead_letter(ledger, crm, "upsert_deal", d.payment_id, exc),
    )
    found = {d.payment_id: i for d, i in zip(items, ids, strict=True) if i is not None}
    ledger.set_links("deal", crm.name, found)
    return found


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def add_notes(crm: CRM, ledger: Ledger, changes: Changes, deal_ids: dict[str, str], language: str) -> int:
    """One note per real change of a payment's state; the ledger's effects make it once, ever."""
    wanted = {note_key(crm.name, c.payment): c.payment for c in changes if c.payment.payment_id in deal_ids}
    done = ledger.effects_done(wanted)
    items = [
        _Note(
            key,
            crm.name,
            NoteInput(deal_id=deal_ids[p.payment_id], payment_id=p.payment_id, body=note_text(p, language)),
        )
        for key, p in wanted.items()
        if key not in done
    ]

    def send(batch: Sequence[_Note]) -> list[str]:
        try:
            ids = crm.add_notes([n.note for n in batch])
        except OutcomeUnknownError as exc:  # the vendor may have made them: never send blind again
            ledger.record_effects(batch, [str(exc)] * len(batch), status="unknown")
            return [""] * len(batch)
        ledger.record_effects(batch, ids)
        return ids

    results = call_in_batches(
        items,
        crm.batch_size,
        send,
        lambda item, exc: _dead_letter(ledger, crm, "add_note", item.payment_id, exc),
    )
    return sum(1 for r in results if r)


@dataclass(frozen=True)
class _Note:
    """A note and its effect key (what the ledger records once it is made)."""

    key: str
    target: str
    note: NoteInput
    action: str = "note"

    @property
    def payment_id(self) -> str:
        return self.note.payment_id


@task(cache_policy=NONE)
def select_unsynced(crm: CRM, ledger: Ledger, changes: Changes) -> Changes:
    """Leave out payments whose deal is already in this state in this CRM (duplicates, reruns)."""
    keys = {deal_state_key(crm.name, c.payment): c for c in changes}
    done = ledger.effects_done(keys)
    return Changes(c for key, c in keys.items() if key not in done)


@task(cache_policy=NONE)
def mark_synced(crm: CRM, ledger: Ledger, changes: Changes, deal_ids: dict[str, str]) -> None:
    """Last step: only now is a payment's state counted as in the CRM (notes included)."""
    synced = [c.payment for c in changes if c.payment.payment_id in deal_ids]
    ledger.record_effects(
        [_DealState(deal_state_key(crm.name, p), p.payment_id, crm.name) for p in synced],
        [deal_ids[p.payment_id] for p in synced],
    )


@dataclass(frozen=True)
class _DealState:
    key: str
    payment_id: str
    target: str
    action: str = "deal"


def sync_crm(crm: CRM, target: CRMTarget, changes: Changes, ledger: Ledger, settings: Settings) -> None:
    """The CRM part of the recipe: contacts, deals, notes, each a batched and keyed task.

    A payment whose earlier sync failed half-way is not yet marked synced, so it goes again.
    """
    todo = select_unsynced(crm, ledger, changes)
    if not todo:
        return
    contact_ids = upsert_contacts(crm, ledger, todo)
    deal_ids = upsert_deals(crm, ledger, todo, contact_ids, target, settings)
    add_notes(crm, ledger, todo, deal_ids, settings.language)
    mark_synced(crm, ledger, todo, deal_ids)
