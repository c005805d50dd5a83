"""The normalised `Payment`: what every sink sees, whichever provider the money came through.

A payment is a set of independent dimensions, each merged on its own so that the order in which
Stripe delivers events never matters (every merge is a join: commutative, associative, idempotent):

    lifecycle        by rank: pending < failed < authorized < canceled < expired < succeeded
    amount_requested the largest amount seen (authorised, invoiced, disputed)
    amount_captured  the largest amount actually taken (partial captures take less)
    charge_refunded  the largest `amount_refunded` a charge reported
    refunds          by refund id, each by its own status rank (pending < succeeded < failed)
    disputes         by dispute id, each by its own status rank (open < won | lost)
    everything else  filled when empty; two different values resolve the same way in any order

`status`, `amount` and `refunded_amount` are derived from them (see `derive`), so every consumer
that reads those keeps working. A Payment built with a `status` and no dimensions (older ledger
rows, hand-made test payments) gets dimensions that say the same thing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from enum import StrEnum
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stripeflow.core import money
from stripeflow.core.errors import InputError


class PaymentStatus(StrEnum):
    pending = "pending"
    failed = "failed"
    authorized = "authorized"  # the card is held, nothing taken yet
    canceled = "canceled"
    expired = "expired"  # an authorisation lapsed uncaptured
    succeeded = "succeeded"
    partially_refunded = "partially_refunded"
    refunded = "refunded"
    disputed = "disputed"  # a dispute is open
    dispute_won = "dispute_won"  # every dispute closed in the merchant's favour
    dispute_lost = "dispute_lost"  # the disputed money went back to the cardholder


# Kept for anything that orders statuses; the merge itself works on the dimensions.
STATUS_RANK: dict[PaymentStatus, int] = {s: i for i, s in enumerate(PaymentStatus)}


class Lifecycle(StrEnum):
    pending = "pending"
    failed = "failed"
    authorized = "authorized"
    canceled = "canceled"
    expired = "expired"
    succeeded = "succeeded"


LIFECYCLE_RANK: dict[Lifecycle, int] = {s: i for i, s in enumerate(Lifecycle)}

# Stripe's refund statuses; a failed or canceled refund gives the money back to the payment.
REFUND_RANK = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2}
REFUND_VOID = frozenset({"failed", "canceled"})
# Stripe's dispute statuses: open ones, then closed ones (an inquiry closed is not a loss).
DISPUTE_WON = frozenset({"won", "warning_closed", "prevented"})
DISPUTE_LOST = frozenset({"lost"})


class PaymentMethod(StrEnum):
    card = "card"
    apple_pay = "apple_pay"
    google_pay = "google_pay"
    link = "link"
    blik = "blik"
    p24 = "p24"
    sepa_debit = "sepa_debit"
    paypal = "paypal"
    bank_transfer = "bank_transfer"
    other = "other"


class PaymentKind(StrEnum):
    one_time = "one_time"
    subscription = "subscription"


class Refund(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Decimal
    status: str = "succeeded"

    @property
    def void(self) -> bool:
        return self.status in REFUND_VOID

    def joined(self, other: Refund) -> Refund:
        """The later state of one refund: by status rank, ties by name (any order, same result)."""
        return max(self, other, key=lambda r: (REFUND_RANK.get(r.status, 0), r.status, r.amount))


class Dispute(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Decimal
    status: str = "needs_response"

    @property
    def closed(self) -> bool:
        return self.status in DISPUTE_WON | DISPUTE_LOST

    @property
    def lost(self) -> bool:
        return self.status in DISPUTE_LOST

    def joined(self, other: Dispute) -> Dispute:
        return max(self, other, key=lambda d: (d.closed, d.lost, d.status, d.amount))


def _legacy_lifecycle(status: str) -> Lifecycle:
    try:
        return Lifecycle(status)
    except ValueError:
        return Lifecycle.succeeded  # refunded, disputed, ...: money was taken


def derive(
    *,
    lifecycle: Lifecycle,
    amount_requested: Decimal,
    amount_captured: Decimal | None,
    charge_refunded: Decimal,
    refunds: dict[str, Refund],
    disputes: dict[str, Dispute],
) -> tuple[PaymentStatus, Decimal, Decimal]:
    """(status, amount, refunded_amount) from the dimensions."""
    zero = Decimal(0)
    if lifecycle != Lifecycle.succeeded:
        return PaymentStatus(lifecycle.value), amount_requested, zero
    active = sum((r.amount for r in refunds.values() if not r.void), zero)
    voided = sum((r.amount for r in refunds.values() if r.void), zero)
    # the charge's total counts refunds we may not have seen one by one, less those that failed
    refunded = max(active, charge_refunded - voided, zero)
    amount = amount_captured if amount_captured is not None else amount_requested
    if amount <= 0:
        # only a refund is known so far (no payload had the payment's amount): not yet a payment
        return PaymentStatus.pending, refunded, zero
    refunded = min(refunded, amount)
    if any(d.lost for d in disputes.values()):
        status = PaymentStatus.dispute_lost
    elif any(not d.closed for d in disputes.values()):
        status = PaymentStatus.disputed
    elif disputes:
        status = PaymentStatus.dispute_won
    elif refunded >= amount:
        status = PaymentStatus.refunded
    elif refunded > 0:
        status = PaymentStatus.partially_refunded
    else:
        status = PaymentStatus.succeeded
    return status, amount, refunded


_WIDE = Context(prec=60)


def _quantized(data: dict[str, Any]) -> dict[str, Any]:
    """Amounts with the currency's places, so equal states serialise the same in any order."""
    try:
        places = Decimal(1).scaleb(-money.exponent(str(data.get("currency", ""))))
    except InputError:
        places = None

    def q(value: Any) -> Decimal:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        # wide enough for any amount Stripe could send (the default 28 digits are not)
        return d.quantize(places, context=_WIDE) if places is not None else d

    for name in ("amount", "refunded_amount", "amount_requested", "charge_refunded"):
        if data.get(name) is not None:
            data[name] = q(data[name])
    if data.get("amount_captured") is not None:
        data["amount_captured"] = q(data["amount_captured"])
    data.setdefault("amount_captured", None)
    for bag, kind in (("refunds", Refund), ("disputes", Dispute)):
        items = {k: kind.model_validate(v) for k, v in (data.get(bag) or {}).items()}
        data[bag] = {k: kind(amount=q(v.amount), status=v.status) for k, v in sorted(items.items())}
    return data


ID_PREFERENCE = ("pi_", "ch_", "py_", "in_", "cs_")


def preferred_id(ids: Any) -> str:
    """The id a payment is known by when none is known yet: a PaymentIntent's, if any."""

    def rank(value: str) -> tuple[int, str]:
        for i, prefix in enumerate(ID_PREFERENCE):
            if value.startswith(prefix):
                return i, value
        return len(ID_PREFERENCE), value

    return min(ids, key=rank)


def _empty(value: Any) -> bool:
    return value in (None, "", (), PaymentMethod.other)


def _join(a: Any, b: Any) -> Any:
    """Fill a gap; two different values resolve to the same one whatever the order."""
    if _empty(a):
        return b
    if _empty(b) or a == b:
        return a
    if isinstance(a, tuple):
        return max(a, b, key=lambda t: (len(t), t))
    return max(a, b, key=str)


class Payment(BaseModel):
    """One payment, normalised. Amounts are `Decimal` in major units; times are aware UTC."""

    model_config = ConfigDict(frozen=True)

    provider: str = "stripe"
    payment_id: str = Field(description="pi_..., or the charge/invoice id when there is no PaymentIntent")
    customer_id: str | None = None
    email: str | None = None
    name: str | None = None
    # what Stripe knows of the payer beyond the e-mail, for the CRM contact (None: not sent)
    phone: str | None = None
    company: str | None = Field(default=None, description="the business name the payer gave")
    tax_id: str | None = Field(default=None, description="NIP or EU VAT id, as Stripe holds it")
    amount: Decimal = Field(description="derived: what was taken (captured), else what was asked")
    refunded_amount: Decimal = Decimal(0)
    currency: str = Field(description="ISO code, upper case")
    occurred_at: datetime
    products: tuple[str, ...] = ()
    status: PaymentStatus = Field(description="derived from the dimensions below")
    method: PaymentMethod = PaymentMethod.other
    kind: PaymentKind = PaymentKind.one_time
    invoice_id: str | None = None
    invoice_pdf: str | None = None
    invoice_url: str | None = None
    receipt_url: str | None = None
    retry_url: str | None = None
    failure_message: str | None = None
    livemode: bool = False
    event_ids: tuple[str, ...] = ()
    # -- the dimensions ----------------------------------------------------------------------
    lifecycle: Lifecycle = Lifecycle.pending
    amount_requested: Decimal = Decimal(0)
    amount_captured: Decimal | None = None
    charge_refunded: Decimal = Decimal(0)
    refunds: dict[str, Refund] = Field(default_factory=dict)
    disputes: dict[str, Dispute] = Field(default_factory=dict)
    paid_at: datetime | None = Field(default=None, description="when the money moved, if known")
    ids: tuple[str, ...] = Field(default=(), description="every Stripe id this payment is known by")
    missing: tuple[str, ...] = Field(default=(), description="what payloads lacked (no Stripe API)")

    @model_validator(mode="before")
    @classmethod
    def _dimensions(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "lifecycle" not in data:
            # a status without dimensions (an older ledger row, a hand-made payment): say the same
            status = str(data.get("status", "pending"))
            amount = Decimal(str(data.get("amount", 0)))
            life = _legacy_lifecycle(status)
            data.update(
                lifecycle=life,
                amount_requested=amount,
                amount_captured=amount if life == Lifecycle.succeeded else None,
                charge_refunded=Decimal(str(data.get("refunded_amount", 0))),
            )
            if status.startswith("disput"):
                outcome = {"disputed": "needs_response", "dispute_won": "won", "dispute_lost": "lost"}
                data["disputes"] = {"legacy": Dispute(amount=amount, status=outcome.get(status, "lost"))}
            return _quantized(data)
        data.setdefault("amount_requested", Decimal(0))
        data.setdefault("charge_refunded", Decimal(0))
        data = _quantized(data)
        status, amount, refunded = derive(
            lifecycle=Lifecycle(data["lifecycle"]),
            amount_requested=data["amount_requested"],
            amount_captured=data["amount_captured"],
            charge_refunded=data["charge_refunded"],
            refunds=data["refunds"],
            disputes=data["disputes"],
        )
        data.update(status=status, amount=amount, refunded_amount=refunded)
        return _quantized(data)

    @field_validator("occurred_at", "paid_at")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        return value

    @property
    def product(self) -> str:
        return ", ".join(self.products)

    @property
    def customer_key(self) -> str | None:
        """Who paid, as sinks know a person: the e-mail (lower case), else the Stripe customer id."""
        return self.email.lower() if self.email else self.customer_id

    @property
    def net_amount(self) -> Decimal:
        return self.amount - self.refunded_amount

    @property
    def rank(self) -> int:
        return STATUS_RANK[self.status]

    @property
    def amount_lost(self) -> Decimal:
        """Money taken back by lost disputes."""
        return sum((d.amount for d in self.disputes.values() if d.lost), Decimal(0))

    def merged_with(self, newer: Payment) -> Payment:
        """The state both facts together describe, each dimension merged on its own.

        Commutative: merging A then B gives the same state as B then A (event_ids keep arrival
        order, nothing else does), which is what makes reordered deliveries end in the same place.
        """
        a, b = self, newer
        data: dict[str, Any] = {}
        for key in (
            "provider",
            "customer_id",
            "email",
            "name",
            "phone",
            "company",
            "tax_id",
            "currency",
            "products",
            "method",
            "kind",
            "invoice_id",
            "invoice_pdf",
            "invoice_url",
            "receipt_url",
            "retry_url",
            "failure_message",
        ):
            data[key] = _join(getattr(a, key), getattr(b, key))
        refunds = dict(a.refunds)
        for rid, r in b.refunds.items():
            refunds[rid] = refunds[rid].joined(r) if rid in refunds else r
        disputes = dict(a.disputes)
        for did, d in b.disputes.items():
            disputes[did] = disputes[did].joined(d) if did in disputes else d
        captured = [x for x in (a.amount_captured, b.amount_captured) if x is not None]
        paid = [x for x in (a.paid_at, b.paid_at) if x is not None]
        data.update(
            payment_id=a.payment_id,
            occurred_at=min(a.occurred_at, b.occurred_at),
            livemode=a.livemode or b.livemode,
            event_ids=tuple(dict.fromkeys(a.event_ids + b.event_ids)),
            lifecycle=max(a.lifecycle, b.lifecycle, key=LIFECYCLE_RANK.__getitem__),
            amount_requested=max(a.amount_requested, b.amount_requested),
            amount_captured=max(captured) if captured else None,
            charge_refunded=max(a.charge_refunded, b.charge_refunded),
            refunds=refunds,
            disputes=disputes,
            paid_at=min(paid) if paid else None,
            ids=tuple(sorted(set(a.ids) | set(b.ids))),
            missing=tuple(sorted(set(a.missing) | set(b.missing))),
        )
        return Payment.model_validate(data)


# --- what one run passes to its sinks -----------------------------------------------------


@dataclass(frozen=True)
class PaymentChange:
    """A payment's merged state, and the state the sinks last finished with (None: never)."""

    payment: Payment
    previous: Payment | None

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous != self.payment.model_copy(
            update={"event_ids": self.previous.event_ids}
        )


class Changes(Sequence[PaymentChange]):
    """The payment changes one run passes to its sinks.

    Deliberately not a list, tuple or dataclass: Prefect walks every such task argument looking
    for futures, and for thousands of payments that walk costs seconds per task. A plain
    `Sequence` is handed over as it is.
    """

    def __init__(self, items: Iterable[PaymentChange] = ()) -> None:
        self._items = tuple(items)

    @overload
    def __getitem__(self, index: int) -> PaymentChange: ...
    @overload
    def __getitem__(self, index: slice) -> Changes: ...
    def __getitem__(self, index: int | slice) -> PaymentChange | Changes:
        if isinstance(index, slice):
            return Changes(self._items[index])
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Changes({len(self._items)} payments)"

    @property
    def payments(self) -> list[Payment]:
        return [c.payment for c in self._items]


# --- the state digest: what effect keys say "this state" with ---------------------------------

PAYER_FIELDS = ("phone", "company", "tax_id")


def state_digest(payment: Payment) -> str:
    """Short digest of everything but the event ids: a new one means the payment really changed.

    The CRM deal key and the hand-off key both end in it, and ledgers hold those keys: its
    output must never change.
    """
    # payer fields added later count only when known, so a payment without them keeps its digest
    unset = {name for name in PAYER_FIELDS if getattr(payment, name) is None}
    state = payment.model_dump_json(exclude={"event_ids", *unset})
    return hashlib.sha256(state.encode()).hexdigest()[:16]


def as_stored(payment: Payment) -> Payment:
    """The payment as the ledger stores and loads it.

    A hand-made or legacy Payment may serialise a default differently (`"0"` where a stored one
    says `"0.00"`); a key taken over this form is the same in the run that sent an effect and in
    the rerun that checks it.
    """
    return Payment.model_validate_json(payment.model_dump_json())
