"""What is missing without a Stripe API key: the list matches what normalise really fetches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from stripeflow.core.config import Settings
from stripeflow.core.enrichment import GAPS, enrichment, health
from stripeflow.tasks.stripe.normalise import HANDLERS, normalise
from stripeflow.testing.stripe_events import StripeWorld


class RecordingLookup:
    """A Lookup over the world's objects that notes every question normalise asks it."""

    def __init__(self, world: StripeWorld) -> None:
        self.world = world
        self.calls: list[tuple[str, str]] = []

    def retrieve(self, kind: str, object_id: str, expand: tuple[str, ...] = ()) -> Mapping[str, Any]:
        self.calls.append(("retrieve", kind))
        return self.world.objects[object_id]

    def line_item_names(self, kind: str, object_id: str) -> list[str]:
        self.calls.append(("line_item_names", kind))
        return [i["description"] for i in self.world.line_items.get(object_id, [])]

    def invoice_payment_intent(self, invoice_id: str) -> str | None:
        self.calls.append(("invoice_payment_intent", "invoice"))
        payments = self.world.invoice_payments.get(invoice_id, [])
        return payments[0]["payment"]["payment_intent"] if payments else None


def events_as_stripe_sends_them(world: StripeWorld) -> list[dict[str, Any]]:
    """One event of every handled type, ids where Stripe sends ids, and no e-mail in the payload."""
    cus = world.customer("anna@example.pl", "Anna Nowak")
    pi, ch = world.payment_intent(24900, "pln", cus, product="Pro", method="blik")
    failed, _ = world.payment_intent(9900, "pln", cus, status="requires_payment_method")
    bare_charge = {**ch, "billing_details": {**ch["billing_details"], "email": None}}
    session = world.checkout_session(12900, "pln", "jan@example.pl", "Jan", products=["Pakiet"], pi=pi["id"])
    invoice = world.invoice(49900, "pln", cus, product="Plan Business", pi=pi["id"])
    unlisted = {**invoice, "customer_email": None}
    sub_session, sub_invoice, _, _ = world.subscription_checkout(4900, "pln", cus, product="Start")
    dispute = world.dispute(ch)
    by_object: dict[str, list[dict[str, Any]]] = {
        "payment_intent": [pi],
        "charge": [bare_charge],
        "refund": [world.refund_object(ch, 1000)],
        "dispute": [dispute],
        "checkout.session": [session, sub_session],
        "invoice": [unlisted],
        "invoice_payment": [world.invoice_payment(sub_invoice)],
    }
    events = []
    for t, (obj, _) in HANDLERS.items():
        for payload in by_object[obj]:
            events.append(world.event(t, failed if t == "payment_intent.payment_failed" else payload))
    assert {e["type"] for e in events} == set(HANDLERS)
    return events


def test_every_question_normalise_asks_stripe_is_a_named_gap_and_every_gap_is_asked(
    world: StripeWorld,
) -> None:
    asked: set[tuple[str, str, str]] = set()
    for event in events_as_stripe_sends_them(world):
        lookup = RecordingLookup(world)
        assert normalise(event, lookup) is not None, event["type"]
        obj = event["data"]["object"]["object"]
        asked |= {(obj, method, kind) for method, kind in lookup.calls}

    def gap_for(obj: str, method: str, kind: str) -> Any:
        return next((g for g in GAPS if g.lookup == (method, kind) and obj in (g.objects or (obj,))), None)

    unnamed = {a for a in asked if gap_for(*a) is None}
    assert not unnamed, f"normalise fetches {unnamed} but core/enrichment.py GAPS does not say so"
    unused = [g.what for g in GAPS if all(gap_for(*a) is not g for a in asked)]
    assert not unused, f"GAPS names what normalise never fetches: {unused}"


def test_without_a_key_every_gap_is_missing_and_health_says_so() -> None:
    found = enrichment(Settings())
    assert not found.api_key and found.gaps == GAPS
    section = health(Settings())
    assert section["api_key"] is False
    assert section["missing"] == [f"{g.what}: {g.cost}" for g in GAPS]
    assert any("customer's e-mail, name, phone" in m and "NIP" in m for m in section["missing"])
    assert any("Checkout Sessions" in m and "no product" in m for m in section["missing"])


@pytest.mark.parametrize("key", ["sk_test_123", "rk_live_abc"])
def test_with_a_key_nothing_is_missing_and_the_key_is_never_shown(key: str) -> None:
    settings = Settings(stripe={"api_key": key})
    assert health(settings) == {"api_key": True, "missing": []}
    assert key not in enrichment(settings).summary and key not in repr(enrichment(settings))
