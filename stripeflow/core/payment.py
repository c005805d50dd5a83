"""The normalised `Payment`: what every sink sees, whichever provider the money came through."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PaymentStatus(StrEnum):
    pending = "pending"
    failed = "failed"
    canceled = "canceled"
    succeeded = "succeeded"
    partially_refunded = "partially_refunded"
    refunded = "refunded"
    disputed = "disputed"


# The ordering guard: a payment's state only moves forward along this rank, whatever order
# Stripe delivers the events in (a refund delivered before its success stays refunded).
STATUS_RANK: dict[PaymentStatus, int] = {
    PaymentStatus.pending: 0,
    PaymentStatus.failed: 1,
    PaymentStatus.canceled: 2,
    PaymentStatus.succeeded: 3,
    PaymentStatus.partially_refunded: 4,
    PaymentStatus.refunded: 5,
    PaymentStatus.disputed: 6,
}


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


class Payment(BaseModel):
    """One payment, normalised. Amounts are `Decimal` in major units; times are aware UTC."""

    model_config = ConfigDict(frozen=True)

    provider: str = "stripe"
    payment_id: str = Field(description="pi_..., or the charge/invoice id when there is no PaymentIntent")
    customer_id: str | None = None
    email: str | None = None
    name: str | None = None
    amount: Decimal
    refunded_amount: Decimal = Decimal(0)
    currency: str = Field(description="ISO code, upper case")
    occurred_at: datetime
    products: tuple[str, ...] = ()
    status: PaymentStatus
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

    @field_validator("occurred_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        return value

    @property
    def product(self) -> str:
        return ", ".join(self.products)

    @property
    def net_amount(self) -> Decimal:
        return self.amount - self.refunded_amount

    @property
    def rank(self) -> int:
        return STATUS_RANK[self.status]

    def merged_with(self, newer: Payment) -> Payment:
        """The state both facts together describe: status by rank, amounts only grow, gaps filled.

        Commutative in effect: merging A then B gives the same state as B then A, which is
        what makes reordered deliveries end in the same place.
        """
        a, b = (
            (self, newer)
            if (self.rank, self.refunded_amount) <= (newer.rank, newer.refunded_amount)
            else (newer, self)
        )
        data = a.model_dump()
        for key, value in b.model_dump().items():
            if key in ("event_ids",):
                continue
            if value not in (None, "", (), Decimal(0)) or key in ("status",):
                data[key] = value
        data["refunded_amount"] = max(a.refunded_amount, b.refunded_amount)
        data["amount"] = max(a.amount, b.amount)
        data["occurred_at"] = min(a.occurred_at, b.occurred_at)
        data["event_ids"] = tuple(dict.fromkeys(self.event_ids + newer.event_ids))
        data["livemode"] = a.livemode or b.livemode
        if a.kind == PaymentKind.subscription or b.kind == PaymentKind.subscription:
            data["kind"] = PaymentKind.subscription
        if b.method == PaymentMethod.other and a.method != PaymentMethod.other:
            data["method"] = a.method
        return Payment.model_validate(data)
