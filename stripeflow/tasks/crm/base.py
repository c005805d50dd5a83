"""The protocol every CRM adapter implements, and the records that cross it.

Flows and the CRM tasks know only this protocol. An adapter maps the logical stages and the
Payment fields onto its own pipeline and fields (from its `CRMTarget` configuration), and
reaches its vendor through `stripeflow.core.http.VendorAPI`. Every method takes a batch
(at most `batch_size` items) and returns the CRM's ids in the same order; a single item is a
batch of one. Upserts must be idempotent: the same input twice leaves one record.
Moving a deal's stage is an upsert of the deal with the new `stage`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from stripeflow.core.payment import Payment


@dataclass(frozen=True)
class ContactInput:
    """A person to find or create: matched by e-mail, else by the Stripe customer id."""

    key: str  # the e-mail (lower case) or, without one, the Stripe customer id
    email: str | None
    name: str | None
    customer_id: str | None


@dataclass(frozen=True)
class DealInput:
    """A deal keyed by the payment id: created once, then updated in place."""

    payment_id: str
    title: str
    amount: Decimal
    refunded_amount: Decimal
    currency: str
    stage: str  # logical: new, paid, invoiced, failed, refunded, overdue
    contact_id: str | None  # the CRM's own contact id
    payment: Payment
    fields: Mapping[str, Any] = field(default_factory=dict)  # CRM field -> value, from the mapping


@dataclass(frozen=True)
class NoteInput:
    """A note on a deal about one change of its payment."""

    deal_id: str  # the CRM's own deal id
    payment_id: str
    body: str


@runtime_checkable
class CRM(Protocol):
    """What every CRM adapter offers. `name` is the target's name in the ledger."""

    name: str
    batch_size: int

    def upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]: ...

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]: ...

    def add_notes(self, notes: Sequence[NoteInput]) -> list[str]: ...

    def close(self) -> None: ...
