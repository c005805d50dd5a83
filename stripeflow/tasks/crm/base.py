"""The protocol every CRM adapter implements, and the records that cross it.

Flows and the CRM tasks know only this protocol. An adapter maps the logical stages and the
Payment fields onto its own pipeline and fields (from its `CRMTarget` configuration), and
reaches its vendor through `stripeflow.core.http.VendorAPI`. Every method takes a batch
(at most `batch_size` items) and returns the CRM's ids in the same order; a single item is a
batch of one. Upserts must be idempotent: the same input twice leaves one record.
Moving a deal's stage is an upsert of the deal with the new `stage`.

Notes are the one write no CRM keys for us, so each note carries its effect key to the CRM as a
marker (`note_marker`, one short last line of the body), and `find_notes` looks for it on the
deal: that is how a note whose answer was lost, or whose run died after the call, is settled by
looking rather than sent twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from stripeflow.core.deal_fields import deal_values
from stripeflow.core.payment import Payment


@dataclass(frozen=True)
class ContactInput:
    """A person to find or create: matched by e-mail, else by the Stripe customer id."""

    key: str  # the e-mail (lower case) or, without one, the Stripe customer id
    email: str | None
    name: str | None
    customer_id: str | None
    phone: str | None = None  # what Stripe knows of the payer, for the contact's own fields
    company: str | None = None
    tax_id: str | None = None  # the NIP (or another VAT id) as Stripe holds it
    crm_id: str | None = None  # the CRM's id of this contact from the ledger's link, if one was made


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
    # logical field -> value (`stripeflow.core.deal_fields`), labels in the account's language
    values: Mapping[str, Any] = field(default_factory=dict)
    language: str = "pl"

    @property
    def catalogue(self) -> Mapping[str, Any]:
        """The catalogue's values: as the task computed them, else from the Payment, in `language`
        (a caller that built the deal from its Payment alone)."""
        return self.values or deal_values(self.payment, self.language)


@dataclass(frozen=True)
class NoteInput:
    """A note on a deal about one change of its payment.

    `key` is the note's effect key; with one, the CRM receives `text` (the body and its marker
    line) and `find_notes` can find the note again. Without one the note is plain `body`.
    """

    deal_id: str  # the CRM's own deal id
    payment_id: str
    body: str
    key: str | None = None

    @property
    def marker(self) -> str | None:
        return note_marker(self.key) if self.key else None

    def text(self, newline: str = "\n") -> str:
        """What the CRM stores: the body, then the marker as its own last line (`newline` joins them:
        `<br>` for CRMs whose notes are HTML)."""
        return f"{self.body}{newline}{self.marker}" if self.marker else self.body


MARKER = re.compile(r"stripeflow:[0-9a-f]{12}")


def note_marker(key: str) -> str:
    """The one marker format: `stripeflow:` and 12 hex digits of the key's SHA-256.

    Short and stable (the same key always gives the same marker), free of characters HTML or
    BB-code would escape, so it reads back verbatim from every CRM; 48 bits never collide among
    the few notes of one deal.
    """
    return f"stripeflow:{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def has_marker(text: str | None, marker: str | None) -> bool:
    """Whether a note body read back from a CRM carries this marker (as a whole token)."""
    return bool(text and marker) and marker in MARKER.findall(str(text))


@runtime_checkable
class CRM(Protocol):
    """What every CRM adapter offers. `name` is the target's name in the ledger."""

    name: str
    batch_size: int
    # batches the CRM tasks keep in flight at once; the adapter's limiter keeps the vendor's
    # limits across them, and its methods must be safe to call from that many threads
    parallel: int

    def upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]: ...

    def keys_contact(self, email: str | None) -> bool:
        """Whether the vendor itself keys the upsert of a contact with this e-mail (or none), so
        two runs at once make one contact. When it does not (a search, then a create), runs hold
        the customer's lease while they sync its payments."""
        ...

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]: ...

    def add_notes(self, notes: Sequence[NoteInput]) -> list[str]: ...

    def find_notes(self, notes: Sequence[NoteInput]) -> list[str | None]:
        """For each note (with a key), the CRM's id of a note on its deal carrying its marker,
        or None when there is none: a read, safe to repeat, that settles an unknown note."""
        ...

    def close(self) -> None: ...
