"""Enrichment through stripe-python against the local Stripe fake, over real HTTP."""

from __future__ import annotations

import pytest

from stripeflow.core.config import StripeSettings
from stripeflow.core.errors import AuthError, PayloadError, RateLimitedError
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import Payment
from stripeflow.tasks.stripe.client import READS_PER_SECOND, StripeLookup, make_client, read_limiter
from stripeflow.tasks.stripe.normalise import NoLookup, normalise
from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_api import FakeStripe
from stripeflow.testing.stripe_events import StripeWorld


def lookup_for(url: str, ledger: Ledger | None, key: str = "sk_test_123") -> StripeLookup:
    return StripeLookup(make_client(StripeSettings(api_key=key, api_base=url)), ledger)


def test_enrichment_is_fetched_once_then_cached(fake: FakeStripe, stripe_url: str, ledger: Ledger) -> None:
    world = fake.world
    cus = world.customer("anna@example.pl", "Anna")
    pi, ch = world.payment_intent(24900, "pln", cus, method="blik")
    event = world.event("payment_intent.succeeded", {**pi, "receipt_email": None})
    lookup = lookup_for(stripe_url, ledger)
    first = normalise(event, lookup)
    again = normalise(world.event("payment_intent.succeeded", pi), lookup_for(stripe_url, ledger))
    assert first is not None and first.method.value == "blik" and first.email == "anna@example.pl"
    assert again is not None and again.method == first.method
    assert fake.requests == [("GET", f"/v1/charges/{ch['id']}")]  # the second process read the cache


def test_invoice_payment_is_found_through_invoice_payments(fake: FakeStripe, stripe_url: str) -> None:
    world = fake.world
    inv = world.invoice(4900, "eur", world.customer("b@c.eu"), product="Plan", pi="pi_abc")
    p = normalise(world.event("invoice.paid", inv), lookup_for(stripe_url, None))
    assert p is not None and p.payment_id == "pi_abc"


def test_an_invoice_event_alone_gets_the_method_with_a_key_and_only_its_own_fields_without(
    fake: FakeStripe, stripe_url: str
) -> None:
    """An account that sends only invoice events: the method is read off the PaymentIntent that
    paid it (its charge expanded, one read); without a key the invoice's own fields are all."""
    world = fake.world
    cus = world.customer("biuro@firma.pl", "Firma sp. z o.o.")
    pi, _ = world.payment_intent(49900, "pln", cus, product="Plan Business", method="blik")
    event = world.event(
        "invoice.paid", world.invoice(49900, "pln", cus, product="Plan Business", pi=pi["id"])
    )
    keyed = normalise(event, lookup_for(stripe_url, None))
    assert keyed is not None and keyed.method.value == "blik" and keyed.receipt_url
    assert ("GET", f"/v1/payment_intents/{pi['id']}") in fake.requests
    offline = normalise(event, NoLookup())
    assert offline is not None and offline.method.value == "other"  # known by its invoice id alone
    gone = world.invoice(4900, "eur", world.customer("b@c.eu"), product="Plan", pi="pi_gone")
    assert normalise(world.event("invoice.paid", gone), lookup_for(stripe_url, None)) is not None  # no 404


def test_a_missing_object_is_a_payload_error(stripe_url: str) -> None:
    with pytest.raises(PayloadError, match="No such charge"):
        lookup_for(stripe_url, None).retrieve("charge", "ch_missing")


def test_a_bad_key_is_an_auth_error_not_retried(fake: FakeStripe, stripe_url: str) -> None:
    with pytest.raises(AuthError, match="Invalid API Key"):
        lookup_for(stripe_url, None, key="pk_test_wrong").retrieve("charge", "ch_x")
    assert len(fake.requests) == 1


def test_a_rate_limit_that_persists_is_retriable(fake: FakeStripe, stripe_url: str) -> None:
    ch = fake.world.charge(100, "pln")
    fake.fail_next.extend([429, 429, 429])
    with pytest.raises(RateLimitedError):
        lookup_for(stripe_url, None).retrieve("charge", ch["id"])
    fake.fail_next.clear()
    assert lookup_for(stripe_url, None).retrieve("charge", ch["id"])["id"] == ch["id"]


def test_a_burst_of_lookups_keeps_to_stripes_read_limit_instead_of_meeting_429s(
    fake: FakeStripe, stripe_url: str
) -> None:
    """The fake refuses past 25 requests a second, as a sandbox does; 60 distinct lookups in a
    burst all succeed because the lookup waits its turn."""
    settings = StripeSettings(api_key="sk_test_123", api_base=stripe_url)
    assert fake.rate_per_second == READS_PER_SECOND["test"]
    lookup = StripeLookup(make_client(settings), None, limiter=read_limiter(settings))
    charges = [fake.world.charge(100 + i, "pln") for i in range(60)]
    assert [lookup.retrieve("charge", ch["id"])["id"] for ch in charges] == [ch["id"] for ch in charges]
    unlimited = StripeLookup(make_client(settings), None)  # what happened before: 429s
    with pytest.raises(RateLimitedError):
        for ch in charges:
            unlimited.retrieve("charge", ch["id"])


def test_the_read_limit_follows_the_keys_mode_unless_set() -> None:
    live = read_limiter(StripeSettings(api_key="rk_live_abc"))
    set_ = read_limiter(StripeSettings(api_key="sk_test_abc", requests_per_second=7))
    assert (live.max_calls, set_.max_calls) == (100, 7)  # type: ignore[attr-defined]


def test_a_subscription_session_is_linked_to_its_payment_through_the_api(
    fake: FakeStripe, stripe_url: str
) -> None:
    world = fake.world
    cus = world.customer("s@example.pl", "S")
    session, inv, pi, ch = world.subscription_checkout(4900, "pln", cus, product="Plan Pro")
    lookup = lookup_for(stripe_url, None)
    p = normalise(world.event("checkout.session.completed", session), lookup)
    assert isinstance(p, Payment) and set(p.ids) == {session["id"], inv["id"], pi["id"]}
    assert p.payment_id == pi["id"] and p.missing == ()
    dispute = normalise(
        world.event("charge.dispute.created", {**world.dispute(ch), "payment_intent": None}), lookup
    )
    assert isinstance(dispute, Payment) and dispute.payment_id == pi["id"]  # the charge names it
    assert dispute.email == "s@example.pl"


def test_a_connected_account_is_read_with_the_stripe_account_header() -> None:
    """A Connect platform's key reads its connected account's objects with Stripe-Account; an
    account it is not connected to, or a key that is no platform, is refused (403, not retried)."""
    platform, connected = StripeWorld(), StripeWorld()
    cus = connected.customer("klient@example.pl", "Klient")
    _, ch = connected.payment_intent(24900, "pln", cus, method="blik")
    fake = FakeStripe(platform, connected={"acct_1Klient": connected})
    with serve_app(fake.app) as url:
        settings = StripeSettings(api_key="sk_test_platform", api_base=url)
        theirs = StripeLookup(make_client(settings, stripe_account="acct_1Klient"), None)
        assert theirs.retrieve("charge", ch["id"])["id"] == ch["id"]
        with pytest.raises(PayloadError, match="No such charge"):  # not in the platform's own account
            StripeLookup(make_client(settings), None).retrieve("charge", ch["id"])
        with pytest.raises(AuthError, match="does not have access to account 'acct_1Other'"):
            StripeLookup(make_client(settings, stripe_account="acct_1Other"), None).retrieve(
                "charge", ch["id"]
            )
    with serve_app(FakeStripe(platform).app) as url:
        plain = StripeSettings(api_key="sk_test_plain", api_base=url)
        with pytest.raises(AuthError, match="Only Stripe Connect platforms can work with other accounts"):
            StripeLookup(make_client(plain, stripe_account="acct_1Klient"), None).retrieve("charge", ch["id"])
