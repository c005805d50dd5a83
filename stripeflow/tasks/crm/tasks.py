"""Prefect tasks that put payments into a CRM: contacts, then deals, then notes, in batches.

Each task's declared retries are safe: contacts upsert on the e-mail, deals on the payment id,
and an adapter whose create carries no key looks for what a lost answer may have made before it
creates anything again (`common.look_first`). Notes are claimed in the ledger, sent with their
key as a marker and settled; an unsettled one is settled by looking for its marker (one note per
real change, ever). A permanent vendor error for one payment dead-letters that payment and lets
the rest through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from sqlalchemy import update

from stripeflow.core.batching import call_in_batches, in_parallel
from stripeflow.core.config import CRMTarget, Settings
from stripeflow.core.crashpoints import crash_point
from stripeflow.core.deal_fields import deal_values
from stripeflow.core.errors import OutcomeUnknownError, PermanentError, RetriableError
from stripeflow.core.labels import label
from stripeflow.core.ledger import EffectRow, Ledger
from stripeflow.core.money import format_money, to_minor
from stripeflow.core.payment import Changes, Payment, PaymentChange, PaymentStatus, state_digest
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
# look-then-send rounds in one attempt: the look reads the deal's notes (no search lag), so a
# batch whose answer was lost is settled at once rather than by the task's retry 10 s later
NOTE_ROUNDS = 4

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
            method=label("method", payment.method, language),
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
    return f"{target}:deal:{payment.payment_id}:{state_digest(payment)}"


def _dead_letter(ledger: Ledger, crm: CRM, action: str, payment_id: str, exc: PermanentError) -> None:
    get_run_logger().error("%s %s for %s failed for good: %s", crm.name, action, payment_id, exc)
    ledger.dead_letter(target=crm.name, action=action, reason=str(exc), payment_id=payment_id)


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def upsert_contacts(crm: CRM, ledger: Ledger, changes: Changes) -> dict[str, str]:
    """Find or create each payment's contact (by e-mail, else Stripe customer id); key -> CRM id.

    A payment whose deal this CRM already has, with this same contact, is left out: the deal was
    associated with it when it was made, so a later state of the payment costs no contact call,
    unless that state tells more of the payer (a phone, a company, a NIP seen only later).
    """
    inputs: dict[str, ContactInput] = {}
    owners: dict[str, str] = {}
    deals = ledger.get_links("deal", crm.name, (p.payment_id for p in changes.payments))
    known = ledger.get_links("contact", crm.name, filter(None, (p.customer_key for p in changes.payments)))
    for c in changes:
        p = c.payment
        key = p.customer_key
        synced = p.payment_id in deals and key in known and not _payer_grew(c)
        if key and key not in inputs and not synced:
            inputs[key] = ContactInput(
                key=key,
                email=p.email,
                name=p.name,
                customer_id=p.customer_id,
                phone=p.phone,
                company=p.company,
                tax_id=p.tax_id,
                crm_id=known.get(key),
            )
            owners[key] = p.payment_id
    items = list(inputs.values())
    ids = call_in_batches(
        items,
        crm.batch_size,
        crm.upsert_contacts,
        lambda c, exc: _dead_letter(ledger, crm, "upsert_contact", owners[c.key], exc),
        parallel=crm.parallel,
    )
    found = {c.key: i for c, i in zip(items, ids, strict=True) if i is not None}
    ledger.set_links("contact", crm.name, found)
    return found


PAYER = ("name", "phone", "company", "tax_id")


def _payer_grew(change: PaymentChange) -> bool:
    """Whether this state knows something of the payer the last synced one did not."""
    before = change.previous
    return before is not None and any(
        getattr(change.payment, f) and getattr(change.payment, f) != getattr(before, f) for f in PAYER
    )


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def upsert_deals(
    crm: CRM,
    ledger: Ledger,
    changes: Changes,
    contact_ids: dict[str, str],
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
            contact_id=contact_ids.get(p.customer_key or ""),
            payment=p,
            values=values,  # each adapter maps them itself: its defaults under `[crm.fields]`
            language=settings.language,
        )
        for p in changes.payments
        for values in [deal_values(p, settings.language, settings.notify.timezone)]
    ]
    ids = call_in_batches(
        items,
        crm.batch_size,
        crm.upsert_deals,
        lambda d, exc: _dead_letter(ledger, crm, "upsert_deal", d.payment_id, exc),
        parallel=crm.parallel,
    )
    crash_point("crm.deal.after_call")
    found = {d.payment_id: i for d, i in zip(items, ids, strict=True) if i is not None}
    ledger.set_links("deal", crm.name, found)
    return found


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def add_notes(crm: CRM, ledger: Ledger, changes: Changes, deal_ids: dict[str, str], language: str) -> int:
    """One note per real change of a payment's state, once ever: claim, act, settle.

    Each note is claimed in the ledger before the CRM is called and settled right after, and it
    carries its key to the CRM as a marker. A claim an earlier attempt left unsettled (it died,
    or its answer was lost) may or may not have reached the CRM, so it is settled by looking
    (`find_notes`): found, it is done; missing, it is sent. So this task's own retries, a rerun
    and a replay all go through the same look-first path. Returns how many notes were made.
    """
    notes = [
        _Note(
            key,
            crm.name,
            NoteInput(
                deal_id=deal_ids[p.payment_id], payment_id=p.payment_id, body=note_text(p, language), key=key
            ),
        )
        for key, p in {
            note_key(crm.name, c.payment): c.payment for c in changes if c.payment.payment_id in deal_ids
        }.items()
    ]
    claims = _NoteClaims.take(ledger, notes)
    crash_point("crm.note.after_claim")
    made = 0
    for round_ in range(1, NOTE_ROUNDS + 1):
        claims.look(crm)  # what an earlier attempt (or round) may have made
        made += claims.send(crm, last=round_ == NOTE_ROUNDS)  # a lost answer leaves its notes unsure
    claims.check_settled()
    return made


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


@dataclass(frozen=True)
class _Outcome:
    item: _Note
    status: str  # done | failed
    result: str
    claimed: bool = True


class _NoteClaims:
    """The notes this attempt holds in the ledger, each under the token it was won with."""

    def __init__(self, ledger: Ledger, held: dict[str, tuple[_Note, str]], unsure: set[str]) -> None:
        self.ledger = ledger
        self._held = held  # key -> (note, token)
        self.unsure = unsure  # held keys that may be in the CRM already: look before sending
        self._lock = threading.Lock()  # batches settle from parallel threads

    @classmethod
    def take(cls, ledger: Ledger, notes: Sequence[_Note]) -> _NoteClaims:
        """Claim the new notes and take over every unsettled one (claimed, attempting, unknown)."""
        states = ledger.effect_states(n.key for n in notes)
        todo = [n for n in notes if states.get(n.key) not in ("done", "failed")]
        won, token = ledger.claim_effects([n for n in todo if states.get(n.key, "claimed") == "claimed"])
        stale = [n.key for n in todo if states.get(n.key) in ("attempting", "unknown")]
        _reopen_unknown(ledger, [k for k in stale if states[k] == "unknown"])
        taken, taken_token = ledger.take_over_attempting(stale)
        held = {n.key: (n, token) for n in todo if n.key in won}
        held.update({n.key: (n, taken_token) for n in todo if n.key in taken})
        # a row there before this attempt (even `claimed`: notes skip mark_attempting, since every
        # CRM can be looked at) may have reached the CRM
        return cls(ledger, held, {k for k in held if k in states})

    def _settle(self, outcomes: Sequence[_Outcome]) -> None:
        by_token: dict[str, list[_Outcome]] = {}
        with self._lock:
            for o in outcomes:
                by_token.setdefault(self._held.pop(o.item.key)[1], []).append(o)
                self.unsure.discard(o.item.key)
        for token, group in by_token.items():
            self.ledger.settle_effects(group, token)

    def _fail(self, item: _Note, exc: PermanentError) -> None:
        get_run_logger().error("%s note for %s failed for good: %s", item.target, item.payment_id, exc)
        self._settle([_Outcome(item, "failed", str(exc))])  # the dead letter names the effect

    def look(self, crm: CRM) -> None:
        """Settle the unsure notes by looking for their markers: found, done; missing, sendable."""
        unsure = [note for key, (note, _) in self._held.items() if key in self.unsure]

        def find(batch: Sequence[_Note]) -> list[str | None]:
            found = crm.find_notes([n.note for n in batch])
            self._settle([_Outcome(n, "done", i) for n, i in zip(batch, found, strict=True) if i is not None])
            with self._lock:
                self.unsure.difference_update(n.key for n in batch)
            return found

        call_in_batches(unsure, crm.batch_size, find, self._fail, parallel=crm.parallel)

    def send(self, crm: CRM, *, last: bool = False) -> int:
        """Send the held notes known not to be in the CRM, settling each batch right after its call."""
        todo = [note for key, (note, _) in self._held.items() if key not in self.unsure]

        def send_batch(batch: Sequence[_Note]) -> list[str | None]:
            try:
                ids = crm.add_notes([n.note for n in batch])
            except OutcomeUnknownError as exc:  # perhaps written: look before any second send
                if last:
                    raise RetriableError(
                        f"notes' outcome unknown twice ({exc.message}); the retry looks for them first",
                        vendor=exc.vendor,
                        status=exc.status,
                        wait=10.0,
                    ) from exc
                with self._lock:
                    self.unsure.update(n.key for n in batch)
                return [None] * len(batch)
            crash_point("crm.note.after_call")
            self._settle([_Outcome(n, "done", str(i)) for n, i in zip(batch, ids, strict=True)])
            return list(ids)

        made = call_in_batches(todo, crm.batch_size, send_batch, self._fail, parallel=crm.parallel)
        return sum(1 for r in made if r)

    def check_settled(self) -> None:
        """Never leave a claim held: the payment would count as synced with its note unsettled."""
        if self._held:
            raise RetriableError(
                f"{len(self._held)} note(s) neither found nor sent; the retry looks for them first",
                vendor="stripeflow",
            )


def _reopen_unknown(ledger: Ledger, keys: Sequence[str]) -> None:
    """Notes an older version settled `unknown` (a lost answer, never looked at) become `attempting`,
    so they are taken over and settled by looking like any other unsettled note.

    Local on purpose: the effects API's `take_over_attempting` takes only `attempting` rows.
    """
    if not keys:
        return
    with ledger.session() as s:
        s.execute(
            update(EffectRow)
            .where(EffectRow.key.in_(keys), EffectRow.status == "unknown", EffectRow.action == "note")
            .values(status="attempting")
        )


@task(cache_policy=NONE)
def select_unsynced(crm: CRM, ledger: Ledger, changes: Changes) -> Changes:
    """Leave out payments whose deal is already in this state in this CRM (duplicates, reruns)."""
    keys = {deal_state_key(crm.name, c.payment): c for c in changes}
    done = ledger.effects_done(keys)
    return Changes(c for key, c in keys.items() if key not in done)


@task(cache_policy=NONE)
def mark_synced(crm: CRM, ledger: Ledger, changes: Changes, deal_ids: dict[str, str]) -> None:
    """Last step: only now is a payment's state counted as in the CRM (notes included). The deal
    is its own proof: the state is claimed and settled done at once; one recorded before is kept."""
    synced = [c.payment for c in changes if c.payment.payment_id in deal_ids]
    states = [
        _DealState(deal_state_key(crm.name, p), p.payment_id, crm.name, deal_ids[p.payment_id])
        for p in synced
    ]
    won, token = ledger.claim_effects(states)
    ledger.settle_effects([s for s in states if s.key in won], token)


@dataclass(frozen=True)
class _DealState:
    """A deal's synced state: the effect, and its outcome once claimed (done, the deal's id)."""

    key: str
    payment_id: str
    target: str
    deal_id: str
    action: str = "deal"
    status: str = "done"
    claimed: bool = True

    @property
    def item(self) -> _DealState:
        return self

    @property
    def result(self) -> str:
        return self.deal_id


def contact_races(crms: Callable[[], Sequence[CRM]]) -> Callable[[Payment], bool]:
    """Whether two runs at once could make a payment's contact twice in one of these CRMs (one
    whose vendor does not key that contact's upsert): then its customer is leased for the run."""

    def races(payment: Payment) -> bool:
        try:
            targets = crms()
        except Exception:  # a CRM that cannot be built fails the run at its sync: lease meanwhile
            return True
        return any(not crm.keys_contact(payment.email) for crm in targets)

    return races


def sync_crm(crm: CRM, target: CRMTarget, changes: Changes, ledger: Ledger, settings: Settings) -> None:
    """The CRM part of the recipe: contacts, deals, notes, each a batched and keyed task.

    The payments go in slices of one batch, each slice through all four steps on its own, up to
    `crm.parallel` slices at once: a 429 or a backoff then holds up its own slice only, not
    every payment's next step. All payments of one customer share a slice, so no two slices
    find-or-create the same contact at once. A payment whose earlier sync failed half-way is not
    yet marked synced, so it goes again.
    """
    todo = select_unsynced(crm, ledger, changes)
    in_parallel(
        lambda part: _sync_slice(crm, target, part, ledger, settings),
        slices_by_customer(todo, crm.batch_size),
        crm.parallel,
    )


def slices_by_customer(changes: Changes, size: int) -> list[Changes]:
    """The changes in slices of about `size` (more only for one customer's many payments), each
    customer's payments in one slice, in the order the customers first come."""
    groups: dict[str, list[PaymentChange]] = {}
    for c in changes:
        groups.setdefault(c.payment.customer_key or c.payment.payment_id, []).append(c)
    slices: list[list[PaymentChange]] = []
    for group in groups.values():
        if not slices or (len(slices[-1]) + len(group) > size and slices[-1]):
            slices.append([])
        slices[-1].extend(group)
    return [Changes(part) for part in slices if part]


def _sync_slice(crm: CRM, target: CRMTarget, todo: Changes, ledger: Ledger, settings: Settings) -> None:
    contact_ids = upsert_contacts(crm, ledger, todo)
    deal_ids = upsert_deals(crm, ledger, todo, contact_ids, settings)
    add_notes(crm, ledger, todo, deal_ids, settings.language)
    mark_synced(crm, ledger, todo, deal_ids)
