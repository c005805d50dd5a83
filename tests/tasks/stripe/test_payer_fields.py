"""The payer's phone, business name and tax id (NIP), from what Stripe really sends: Checkout's
`customer_details`, a charge's `billing_details`, an invoice's `customer_*` copies, and the
Customer fetched through the API with its tax ids (over real HTTP, against the Stripe fake)."""

from __future__ import annotations

from stripeflow.core.config import StripeSettings
from stripeflow.core.payment import Payment
from stripeflow.tasks.stripe.client import StripeLookup, make_client
from stripeflow.tasks.stripe.normalise import normalise, tax_id_of
from stripeflow.testing.stripe_api import FakeStripe
from stripeflow.testing.stripe_events import StripeWorld

NIP = ("eu_vat", "PL5260001246")


def one(event: dict[str, object], lookup: StripeLookup | None = None) -> Payment:
    p = normalise(event, lookup)
    assert isinstance(p, Payment)
    return p


def test_a_checkout_session_gives_phone_business_name_and_nip(world: StripeWorld) -> None:
    session = world.checkout_session(
        123000,
        "pln",
        "biuro@xyz.pl",
        "Jan Kowalski",
        products=["Audyt"],
        phone="+48 600 100 200",
        business_name="XYZ Agencja sp. z o.o.",
        tax_ids=[NIP],
    )
    p = one(world.event("checkout.session.completed", session))
    assert (p.name, p.phone, p.company, p.tax_id) == (
        "Jan Kowalski",
        "+48 600 100 200",
        "XYZ Agencja sp. z o.o.",
        "PL5260001246",
    )


def test_a_session_without_them_leaves_them_empty(world: StripeWorld) -> None:
    session = world.checkout_session(4900, "pln", "a@b.pl", None, products=["Kurs"])
    assert session["customer_details"]["tax_ids"] is None  # as Stripe sends it without collection
    p = one(world.event("checkout.session.completed", session))
    assert (p.phone, p.company, p.tax_id) == (None, None, None)


def test_an_invoice_copies_the_customers_phone_and_tax_ids(world: StripeWorld) -> None:
    cus = world.customer("biuro@xyz.pl", "XYZ sp. z o.o.", phone="+48221234567", tax_ids=[NIP])
    inv = world.invoice(24900, "pln", cus, product="Pro")
    assert inv["customer_tax_ids"] == [{"type": "eu_vat", "value": "PL5260001246"}]
    p = one(world.event("invoice.paid", inv))
    assert (p.name, p.phone, p.tax_id) == ("XYZ sp. z o.o.", "+48221234567", "PL5260001246")


def test_a_charge_gives_the_billing_phone(world: StripeWorld) -> None:
    ch = world.charge(24900, "pln", email="a@b.pl")
    ch["billing_details"].update(name="Anna Nowak", phone="+48 500 000 000")
    p = one(world.event("charge.succeeded", ch))
    assert (p.name, p.phone, p.tax_id) == ("Anna Nowak", "+48 500 000 000", None)


def test_the_polish_vat_id_is_preferred_among_several() -> None:
    ids = [
        {"type": "gb_vat", "value": "GB123"},
        {"type": "eu_vat", "value": "DE1"},
        {"type": "eu_vat", "value": "PL9"},
    ]
    assert tax_id_of(ids) == "PL9"
    assert tax_id_of({"object": "list", "data": ids[:1]}) == "GB123"  # a Customer's expanded list
    assert tax_id_of(None) is None and tax_id_of([]) is None


def test_the_customer_fetched_through_the_api_brings_its_tax_id(fake: FakeStripe, stripe_url: str) -> None:
    world = fake.world
    cus = world.customer(
        "biuro@xyz.pl", phone="+48221234567", business_name="XYZ Agencja sp. z o.o.", tax_ids=[NIP]
    )
    pi, _ = world.payment_intent(24900, "pln", cus)
    ch = world.objects[pi["latest_charge"]]
    ch["billing_details"]["email"] = None  # only the customer knows who paid
    event = world.event("payment_intent.succeeded", {**pi, "receipt_email": None})
    lookup = StripeLookup(make_client(StripeSettings(api_key="sk_test_123", api_base=stripe_url)))
    p = one(event, lookup)
    assert p.email == "biuro@xyz.pl" and p.name == "XYZ Agencja sp. z o.o."
    assert (p.phone, p.company, p.tax_id) == ("+48221234567", "XYZ Agencja sp. z o.o.", "PL5260001246")
    assert ("GET", f"/v1/customers/{cus['id']}") in fake.requests


def test_the_fake_sends_a_customers_tax_ids_only_when_expanded(fake: FakeStripe, stripe_url: str) -> None:
    cus = fake.world.customer("a@b.pl", tax_ids=[NIP])
    lookup = StripeLookup(make_client(StripeSettings(api_key="sk_test_123", api_base=stripe_url)))
    assert "tax_ids" not in lookup.retrieve("customer", cus["id"])
    expanded = lookup.retrieve("customer", cus["id"], ("tax_ids",))
    assert [t["value"] for t in expanded["tax_ids"]["data"]] == ["PL5260001246"]
