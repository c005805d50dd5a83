"""What a Stripe API key adds to the webhooks' payloads, and what is missing without one.

Each `Gap` is one question `tasks/stripe/normalise.py` asks its `Lookup` when a payload lacks
something (tests/core/test_enrichment.py checks the list against the calls normalise makes).
`stripeflow run`, `stripeflow status` and the bridge's `/healthz` all say it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripeflow.core.config import Settings


@dataclass(frozen=True)
class Gap:
    """One thing only the Stripe API can tell, and what a payment lacks without it."""

    what: str
    cost: str
    # (Lookup method, Stripe object kind) normalise calls for it, and on which event objects ("" = any)
    lookup: tuple[str, str]
    objects: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.what}: {self.cost}"


GAPS: tuple[Gap, ...] = (
    Gap(
        "the customer's e-mail, name, phone, business name and tax id (NIP) when an event names "
        "only a customer id",
        "no contact and no customer e-mail unless the payload itself carries the address "
        "(receipt_email, billing details, customer_email); contacts lack the phone and NIP",
        ("retrieve", "customer"),
    ),
    Gap(
        "the charge behind a PaymentIntent (Stripe sends latest_charge as an id)",
        "payment_intent.* events lack the method (card, Apple Pay, Google Pay, BLIK, ...), "
        "the billing name and e-mail and the receipt link",
        ("retrieve", "charge"),
        ("payment_intent",),
    ),
    Gap(
        "the charge a refund or a dispute names (by its id only)",
        "a refund or dispute seen before its payment lacks the payment's customer, method and "
        "amount until the payment's own event arrives",
        ("retrieve", "charge"),
        ("dispute", "refund"),
    ),
    Gap(
        "the product names of Checkout Sessions (webhooks never carry their line items)",
        "deal titles and e-mails of Checkout payments name no product",
        ("line_item_names", "checkout.session"),
        ("checkout.session",),
    ),
    Gap(
        "the PaymentIntent that paid an invoice, when the invoice does not list its payments",
        "an invoice (or a subscription's Checkout Session) is joined to the charge of the same "
        "money by an invoice_payment.paid event, or by customer, amount and time; until then "
        "they are two payments",
        ("invoice_payment_intent", "invoice"),
        ("invoice", "checkout.session"),
    ),
    Gap(
        "the PaymentIntent and charge that paid an invoice",
        "a subscription's deal lacks the method and the receipt link when the account sends only "
        "invoice events",
        ("retrieve", "payment_intent"),
        ("invoice",),
    ),
)


@dataclass(frozen=True)
class Enrichment:
    """What the configured settings let normalise fetch from Stripe."""

    api_key: bool
    api_base: str
    gaps: tuple[Gap, ...]

    @property
    def missing(self) -> list[str]:
        return [str(g) for g in self.gaps]

    @property
    def summary(self) -> str:
        if self.api_key:
            return f"API key set ({self.api_base}): payloads are completed from the Stripe API"
        return (
            "no API key (STRIPE_API_KEY or a [stripe] block): only what the webhooks carry, "
            f"{len(self.gaps)} kinds of detail are missing"
        )


def enrichment(settings: Settings) -> Enrichment:
    """Without a key every gap stays open; with one, normalise fills them (cached in the ledger)."""
    has_key = settings.stripe.api_key is not None and bool(settings.stripe.api_key.get_secret_value())
    return Enrichment(api_key=has_key, api_base=settings.stripe.api_base, gaps=() if has_key else GAPS)


def health(settings: Settings) -> dict[str, Any]:
    """The `stripe` section of `/healthz`: {"api_key": bool, "missing": [what: cost, ...]}."""
    found = enrichment(settings)
    return {"api_key": found.api_key, "missing": found.missing}
