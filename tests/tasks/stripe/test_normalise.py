"""Every handled event type, normalised from Stripe-shaped payloads (fixtures3.json builders)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from stripeflow.core.errors import PayloadError, UnknownCurrencyError
from stripeflow.core.payment import Payment, PaymentKind, PaymentMethod, PaymentStatus
from stripeflow.tasks.stripe.normalise import NoLookup, Skipped, normalise
from stripeflow.testing.stripe_events import StripeWorld


class WorldLookup:
    """Answers from the world's objects, as the Stripe API would; counts what it was asked."""

    def __init__(self, world: StripeWorld) -> None:
        self.world = world
        self.asked: list[str] = []

    def retrieve(self, kind: str, object_id: str, expand: tuple[str, ...] = ()) -> Mapping[str, Any]:
        self.asked.append(object_id)
        if object_id not in self.world.objects:  # as the API answers an id it does not know
            raise PayloadError(f"No such {kind}: '{object_id}'")
        return self.world.objects[object_id]

    def line_item_names(self, kind: str, object_id: str) -> list[str]:
        self.asked.append(f"{object_id}/line_items")
        return [i["description"] for i in self.world.line_items[object_id]]

    def invoice_payment_intent(self, invoice_id: str) -> str | None:
        self.asked.append(f"{invoice_id}/payments")
        payments = self.world.invoice_payments.get(invoice_id) or []
        return payments[0]["payment"]["payment_intent"] if payments else None


@pytest.fixture
def lookup(world: StripeWorld) -> WorldLookup:
    return WorldLookup(world)


def test_payment_intent_succeeded_takes_method_and_email_from_the_charge(
    world: StripeWorld, lookup: WorldLookup
) -> None:
    anna = world.customer("Anna.Nowak@Example.pl", "Anna Nowak")
    pi, ch = world.payment_intent(24900, "pln", anna, product="Subskrypcja Pro", wallet="apple_pay")
    event = world.event("payment_intent.succeeded", pi)
    p = normalise(event, lookup)
    assert p is not None
    assert (p.payment_id, p.amount, p.currency, p.status) == (
        pi["id"],
        Decimal("249.00"),
        "PLN",
        PaymentStatus.succeeded,
    )
    assert p.email == "anna.nowak@example.pl" and p.name == "Anna Nowak" and p.customer_id == anna["id"]
    assert p.method == PaymentMethod.apple_pay and p.products == ("Subskrypcja Pro",)
    assert p.receipt_url == ch["receipt_url"] and p.event_ids == (event["id"],)
    assert p.occurred_at.tzinfo is not None
    assert lookup.asked == [ch["id"]]  # latest_charge is an id: fetched once, nothing else


def test_an_expanded_payload_needs_no_api_call(world: StripeWorld, lookup: WorldLookup) -> None:
    cus = world.customer("a@b.pl", "A")
    pi, ch = world.payment_intent(1000, "pln", cus, method="blik")
    pi = {**pi, "latest_charge": ch, "customer": cus}
    p = normalise(world.event("payment_intent.succeeded", pi), lookup)
    assert p is not None and p.method == PaymentMethod.blik and p.email == "a@b.pl"
    assert lookup.asked == []


@pytest.mark.parametrize(
    ("wallet", "method", "expected"),
    [
        (None, "card", PaymentMethod.card),
        ("apple_pay", "card", PaymentMethod.apple_pay),
        ("google_pay", "card", PaymentMethod.google_pay),
        ("link", "card", PaymentMethod.link),
        (None, "blik", PaymentMethod.blik),
        (None, "p24", PaymentMethod.p24),
        (None, "sepa_debit", PaymentMethod.sepa_debit),
        (None, "paypal", PaymentMethod.paypal),
        (None, "klarna", PaymentMethod.other),
    ],
)
def test_payment_methods_and_wallets(
    world: StripeWorld, lookup: WorldLookup, wallet: str | None, method: str, expected: PaymentMethod
) -> None:
    cus = world.customer("a@b.pl")
    _, ch = world.payment_intent(
        1000, "pln" if method != "sepa_debit" else "eur", cus, method=method, wallet=wallet
    )
    p = normalise(world.event("charge.succeeded", ch), lookup)
    assert p is not None and p.method == expected


def test_failed_and_canceled_intents(world: StripeWorld, lookup: WorldLookup) -> None:
    cus = world.customer("m@z.pl", "Marek")
    pi, _ = world.payment_intent(9900, "pln", cus, status="requires_payment_method")
    failed = normalise(world.event("payment_intent.payment_failed", pi), lookup)
    assert failed is not None and failed.status == PaymentStatus.failed
    assert failed.failure_message == "Your card was declined." and failed.amount == Decimal("99.00")
    canceled = normalise(world.event("payment_intent.canceled", {**pi, "status": "canceled"}), lookup)
    assert canceled is not None and canceled.status == PaymentStatus.canceled


@pytest.mark.parametrize(
    ("refund", "status", "refunded"),
    [
        (24900, PaymentStatus.refunded, Decimal("249.00")),
        (5000, PaymentStatus.partially_refunded, Decimal("50.00")),
    ],
)
def test_charge_refunded_full_and_partial(
    world: StripeWorld, lookup: WorldLookup, refund: int, status: PaymentStatus, refunded: Decimal
) -> None:
    cus = world.customer("a@b.pl")
    pi, ch = world.payment_intent(24900, "pln", cus)
    p = normalise(world.event("charge.refunded", world.refund(ch, refund)), lookup)
    assert p is not None
    assert p.payment_id == pi["id"]  # the charge's PaymentIntent: one deal for both events
    assert (p.status, p.refunded_amount, p.amount) == (status, refunded, Decimal("249.00"))


def test_a_charge_without_intent_is_its_own_payment(world: StripeWorld, lookup: WorldLookup) -> None:
    ch = world.charge(500, "usd", None, email="x@y.com", description="Legacy charge")
    p = normalise(world.event("charge.succeeded", ch), lookup)
    assert (
        p is not None
        and p.payment_id == ch["id"]
        and p.email == "x@y.com"
        and p.products == ("Legacy charge",)
    )


def test_dispute_marks_the_charges_payment_disputed(world: StripeWorld, lookup: WorldLookup) -> None:
    cus = world.customer("d@e.pl", "D")
    pi, ch = world.payment_intent(24900, "pln", cus)
    p = normalise(world.event("charge.dispute.created", world.dispute(ch)), lookup)
    assert p is not None and p.status == PaymentStatus.disputed and p.payment_id == pi["id"]
    assert p.email == "d@e.pl"


def test_checkout_session_fetches_line_items_it_lacks(world: StripeWorld, lookup: WorldLookup) -> None:
    session = world.checkout_session(
        124900,
        "pln",
        "jan@example.pl",
        "Jan Kowalski",
        products=["Pakiet Automatyzacji CRM", "Wdrożenie"],
        pi="pi_123",
    )
    p = normalise(world.event("checkout.session.completed", session), lookup)
    assert p is not None
    assert p.payment_id == "pi_123" and p.email == "jan@example.pl" and p.name == "Jan Kowalski"
    assert p.products == ("Pakiet Automatyzacji CRM", "Wdrożenie")
    assert lookup.asked == [f"{session['id']}/line_items"]


@pytest.mark.parametrize(
    ("type_", "paid", "status"),
    [
        ("invoice.paid", True, PaymentStatus.succeeded),
        ("invoice.payment_failed", False, PaymentStatus.failed),
    ],
)
def test_subscription_invoices(
    world: StripeWorld, lookup: WorldLookup, type_: str, paid: bool, status: PaymentStatus
) -> None:
    firma = world.customer("biuro@xyz.pl", "XYZ sp. z o.o.")
    inv = world.invoice(49900, "pln", firma, product="Plan Business", paid=paid, pi="pi_sub")
    p = normalise(world.event(type_, inv), lookup)
    assert p is not None
    assert p.payment_id == "pi_sub"  # the PaymentIntent that paid it, so invoice and charge are one deal
    assert p.kind == PaymentKind.subscription and p.status == status and p.amount == Decimal("499.00")
    assert p.invoice_id == inv["id"] and p.invoice_pdf == inv["invoice_pdf"]
    assert p.email == "biuro@xyz.pl" and p.products == ("Plan Business",)
    if not paid:
        assert p.retry_url == inv["hosted_invoice_url"]


@pytest.mark.parametrize(
    ("currency", "minor", "major"),
    [("jpy", 5000, Decimal("5000")), ("kwd", 5120, Decimal("5.120")), ("eur", 8900, Decimal("89.00"))],
)
def test_currency_exponents(
    world: StripeWorld, lookup: WorldLookup, currency: str, minor: int, major: Decimal
) -> None:
    _, ch = world.payment_intent(minor, currency, world.customer("a@b.pl"))
    p = normalise(world.event("charge.succeeded", ch), lookup)
    assert p is not None and p.amount == major and p.currency == currency.upper()


def test_unhandled_type_is_none(world: StripeWorld, lookup: WorldLookup) -> None:
    assert normalise(world.event("customer.created", world.customer("a@b.pl")), lookup) is None


def test_unknown_currency_is_named(world: StripeWorld, lookup: WorldLookup) -> None:
    _, ch = world.payment_intent(100, "pln", world.customer("a@b.pl"))
    with pytest.raises(UnknownCurrencyError, match="'xxx'"):
        normalise(world.event("charge.succeeded", {**ch, "currency": "xxx"}), lookup)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda e: e["data"].pop("object"),
        lambda e: e["data"]["object"].update(object="refund"),
        lambda e: e["data"]["object"].update(amount="12.50"),
        lambda e: e["data"]["object"].pop("created"),
    ],
)
def test_malformed_payloads_are_payload_errors(
    world: StripeWorld, lookup: WorldLookup, breakage: Any
) -> None:
    _, ch = world.payment_intent(100, "pln", world.customer("a@b.pl"))
    event = world.event("charge.succeeded", ch)
    breakage(event)
    with pytest.raises(PayloadError):
        normalise(event, lookup)


# --- without a Stripe API: the payload alone, never a dead letter for what is not expanded ------


def test_payment_intent_succeeded_without_an_api_uses_its_own_payload(world: StripeWorld) -> None:
    cus = world.customer("anna@example.pl", "Anna")
    pi, ch = world.payment_intent(24900, "pln", cus, product="Kurs", email="anna@example.pl")
    p = normalise(world.event("payment_intent.succeeded", pi), NoLookup())
    assert isinstance(p, Payment)
    assert (p.payment_id, p.status, p.amount, p.currency) == (
        pi["id"],
        PaymentStatus.succeeded,
        Decimal("249.00"),
        "PLN",
    )
    assert p.email == "anna@example.pl" and p.products == ("Kurs",)
    assert set(p.ids) == {pi["id"], ch["id"]}  # latest_charge links the charge without fetching it
    assert p.missing == (f"charge {ch['id']}: payment method, receipt and e-mail",)


def test_a_dispute_without_an_api_names_its_payment_intent(world: StripeWorld) -> None:
    _, ch = world.payment_intent(24900, "pln", world.customer("d@e.pl"))
    dp = world.dispute(ch)
    p = normalise(world.event("charge.dispute.created", dp), NoLookup())
    assert isinstance(p, Payment)
    assert p.payment_id == ch["payment_intent"] and set(p.ids) == {ch["id"], ch["payment_intent"]}
    assert (p.status, p.amount) == (PaymentStatus.disputed, Decimal("249.00"))
    closed = normalise(world.event("charge.dispute.closed", world.dispute_status(dp, "lost")), NoLookup())
    assert isinstance(closed, Payment) and closed.status == PaymentStatus.dispute_lost
    assert closed.amount_lost == Decimal("249.00")


def test_zero_documents_are_skipped_with_a_reason(world: StripeWorld) -> None:
    cus = world.customer("t@example.pl")
    session, trial = world.trial_checkout(cus, "pln", product="Plan Pro")
    for event in (world.event("checkout.session.completed", session), world.event("invoice.paid", trial)):
        skipped = normalise(event, NoLookup())
        assert isinstance(skipped, Skipped) and "charged nothing" in skipped.reason


def test_an_authorisation_is_not_paid_and_a_partial_capture_is_what_was_taken(world: StripeWorld) -> None:
    pi, ch = world.authorization(50000, "pln", world.customer("h@example.pl"))
    held = normalise(world.event("charge.succeeded", ch), NoLookup())
    assert isinstance(held, Payment) and held.status == PaymentStatus.authorized
    assert held.amount == Decimal("500.00")
    _, ch2 = world.capture(pi, ch, 32000)
    taken = normalise(world.event("charge.captured", ch2), NoLookup())
    assert isinstance(taken, Payment) and taken.status == PaymentStatus.succeeded
    assert taken.amount == Decimal("320.00") and held.merged_with(taken).amount == Decimal("320.00")


def test_refund_events_track_each_refund_by_id(world: StripeWorld) -> None:
    _, ch = world.payment_intent(10000, "eur", world.customer("r@example.pl"))
    refund = world.refund_object(ch, 2500)
    created = normalise(world.event("refund.created", refund), NoLookup())
    failed = normalise(world.event("refund.failed", world.refund_failed(ch, refund)), NoLookup())
    assert isinstance(created, Payment) and isinstance(failed, Payment)
    assert created.refunds[refund["id"]].status == "succeeded"
    assert failed.refunds[refund["id"]].status == "failed"
    assert created.payment_id == failed.payment_id == ch["payment_intent"]
    # a refund alone says nothing of the payment's amount: it is not shown as a payment yet
    assert created.status == PaymentStatus.pending and created.refunded_amount == 0


def test_invoice_payment_paid_links_the_invoice_to_its_payment_intent(world: StripeWorld) -> None:
    inv = world.invoice(4900, "eur", world.customer("b@c.eu"), product="Plan", pi="pi_abc")
    p = normalise(world.event("invoice_payment.paid", world.invoice_payment(inv)), NoLookup())
    assert isinstance(p, Payment) and p.payment_id == "pi_abc" and set(p.ids) == {inv["id"], "pi_abc"}
    assert p.status == PaymentStatus.succeeded and p.amount == Decimal("49.00")


def test_a_subscription_session_names_its_invoice(world: StripeWorld) -> None:
    cus = world.customer("s@example.pl", "S")
    session, inv, _, _ = world.subscription_checkout(4900, "pln", cus, product="Plan Pro")
    p = normalise(world.event("checkout.session.completed", session), NoLookup())
    assert isinstance(p, Payment) and set(p.ids) == {session["id"], inv["id"]}
    assert p.payment_id == inv["id"] and p.kind == PaymentKind.subscription
