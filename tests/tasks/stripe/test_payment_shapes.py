"""Every shape of a real Stripe payment is one payment, in the same final state, whatever order
(and batching) its events arrive in, with a Stripe API (the fake, over HTTP) and without one.

Each scenario's events go through `normalise` and `Ledger.record_payments`, as a run does them,
in every permutation (up to 4 events) or in many seeded shuffles, split into random batches.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select

from stripeflow.core.config import StripeSettings
from stripeflow.core.ledger import Ledger, PaymentAliasRow, PaymentRow
from stripeflow.core.payment import Payment, PaymentKind, PaymentStatus
from stripeflow.tasks.crm.tasks import note_text, stage_for
from stripeflow.tasks.notify.plan import occurrences
from stripeflow.tasks.stripe.client import StripeLookup, make_client
from stripeflow.tasks.stripe.normalise import Lookup, NoLookup, Skipped, normalise
from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_api import FakeStripe
from stripeflow.testing.stripe_events import Obj, StripeWorld

SHUFFLES = 30  # seeded shuffles for scenarios of more than 4 events (4! = 24 orders are all tried)


@dataclass
class Scenario:
    events: list[Obj]
    ids: set[str]  # every id the one payment must be known by
    status: PaymentStatus
    amount: str
    refunded: str = "0"
    stage: str = "paid"
    skipped: int = 0  # events that are not payments ($0 documents)
    extra: dict[str, Any] = field(default_factory=dict)  # other Payment fields to check


def card_payment(w: StripeWorld) -> Scenario:
    cus = w.customer("anna@example.pl", "Anna Nowak")
    pi, ch = w.payment_intent(24900, "pln", cus, product="Subskrypcja Pro", wallet="apple_pay")
    return Scenario(
        [w.event("payment_intent.succeeded", pi), w.event("charge.succeeded", ch)],
        {pi["id"], ch["id"]},
        PaymentStatus.succeeded,
        "249.00",
        extra={"email": "anna@example.pl", "method": "apple_pay", "products": ("Subskrypcja Pro",)},
    )


def refund_before_success(w: StripeWorld) -> Scenario:
    cus = w.customer("jan@example.pl", "Jan")
    pi, ch = w.payment_intent(24900, "pln", cus, method="blik")
    succeeded = w.event("charge.succeeded", ch)
    refund = w.refund_object(ch)
    return Scenario(
        [
            w.event("payment_intent.succeeded", pi),
            succeeded,
            w.event("refund.created", refund),
            w.event("charge.refunded", dict(ch)),
        ],
        {pi["id"], ch["id"]},
        PaymentStatus.refunded,
        "249.00",
        "249.00",
        stage="refunded",
        extra={"method": "blik", "email": "jan@example.pl"},
    )


def partial_refunds_one_failed(w: StripeWorld) -> Scenario:
    cus = w.customer("ola@example.pl", "Ola")
    pi, ch = w.payment_intent(10000, "eur", cus)
    events = [w.event("payment_intent.succeeded", pi), w.event("charge.succeeded", ch)]
    r1 = w.refund_object(ch, 2000)
    events += [w.event("refund.created", r1), w.event("charge.refunded", dict(ch))]
    r2 = w.refund_object(ch, 3000, status="pending")
    r3 = w.refund_object(ch, 1000)
    events += [w.event("refund.created", r2), w.event("refund.created", r3)]
    events.append(w.event("charge.refunded", dict(ch)))  # says 60.00 refunded: r2 had not failed yet
    failed = w.refund_failed(ch, r2)
    events += [w.event("refund.failed", failed), w.event("refund.updated", failed)]
    return Scenario(events, {pi["id"], ch["id"]}, PaymentStatus.partially_refunded, "100.00", "30.00")


def partial_capture(w: StripeWorld) -> Scenario:
    cus = w.customer("hotel@example.pl", "Hotel")
    pi, ch = w.authorization(50000, "pln", cus, product="Kaucja")
    authorised = [
        w.event("charge.succeeded", ch),
        w.event("payment_intent.amount_capturable_updated", pi),
    ]
    pi2, ch2 = w.capture(pi, ch, 32000)
    return Scenario(
        [*authorised, w.event("charge.captured", ch2), w.event("payment_intent.succeeded", pi2)],
        {pi["id"], ch["id"]},
        PaymentStatus.succeeded,
        "320.00",  # what was taken, not what was held
        extra={"amount_requested": Decimal("500.00"), "products": ("Kaucja",)},
    )


def authorisation_expires(w: StripeWorld) -> Scenario:
    cus = w.customer("late@example.pl")
    pi, ch = w.authorization(12000, "pln", cus)
    authorised = w.event("charge.succeeded", ch)
    pi2, ch2 = w.expire(pi, ch)
    return Scenario(
        [authorised, w.event("charge.expired", ch2), w.event("payment_intent.canceled", pi2)],
        {pi["id"], ch["id"]},
        PaymentStatus.expired,
        "120.00",
        stage="failed",
    )


def dispute_won(w: StripeWorld) -> Scenario:
    cus = w.customer("d@example.pl", "D")
    pi, ch = w.payment_intent(24900, "pln", cus)
    dp = w.dispute(ch)
    events = [w.event("payment_intent.succeeded", pi), w.event("charge.succeeded", ch)]
    events.append(w.event("charge.dispute.created", dp))
    events.append(w.event("charge.dispute.updated", w.dispute_status(dp, "under_review")))
    events.append(w.event("charge.dispute.closed", w.dispute_status(dp, "won")))
    return Scenario(events, {pi["id"], ch["id"]}, PaymentStatus.dispute_won, "249.00")


def dispute_lost_after_refund(w: StripeWorld) -> Scenario:
    cus = w.customer("e@example.pl", "E")
    pi, ch = w.payment_intent(24900, "pln", cus)
    events = [w.event("payment_intent.succeeded", pi), w.event("charge.succeeded", ch)]
    events.append(w.event("charge.refunded", w.refund(ch)))
    dp = w.dispute(ch)
    events.append(w.event("charge.dispute.created", dp))
    events.append(w.event("charge.dispute.closed", w.dispute_status(dp, "lost")))
    return Scenario(
        events,
        {pi["id"], ch["id"]},
        PaymentStatus.dispute_lost,
        "249.00",
        "249.00",
        stage="refunded",
        extra={"amount_lost": Decimal("249.00")},
    )


def checkout_subscription(w: StripeWorld, *, invoice_payment_event: bool = True) -> Scenario:
    cus = w.customer("biuro@xyz.pl", "XYZ sp. z o.o.")
    session, inv, pi, ch = w.subscription_checkout(4900, "pln", cus, product="Plan Pro")
    events = [
        w.event("checkout.session.completed", session),
        w.event("invoice.paid", inv),
        w.event("charge.succeeded", ch),
        w.event("payment_intent.succeeded", pi),
    ]
    if invoice_payment_event:
        events.append(w.event("invoice_payment.paid", w.invoice_payment(inv)))
    return Scenario(
        events,
        {session["id"], inv["id"], pi["id"], ch["id"]},
        PaymentStatus.succeeded,
        "49.00",
        stage="invoiced",
        extra={"kind": PaymentKind.subscription, "invoice_id": inv["id"], "products": ("Plan Pro",)},
    )


def checkout_subscription_matched(w: StripeWorld) -> Scenario:
    """No invoice_payment.paid: without an API only the strict match joins invoice and charge."""
    return checkout_subscription(w, invoice_payment_event=False)


def trial_then_charge(w: StripeWorld) -> Scenario:
    cus = w.customer("trial@example.pl", "Trial")
    session, trial = w.trial_checkout(cus, "pln", product="Plan Pro")
    pi, ch = w.payment_intent(4900, "pln", cus)
    inv = w.invoice(4900, "pln", cus, product="Plan Pro", pi=pi["id"])
    return Scenario(
        [
            w.event("checkout.session.completed", session),
            w.event("invoice.paid", trial),
            w.event("invoice.paid", inv),
            w.event("invoice_payment.paid", w.invoice_payment(inv)),
            w.event("charge.succeeded", ch),
            w.event("payment_intent.succeeded", pi),
        ],
        {inv["id"], pi["id"], ch["id"]},
        PaymentStatus.succeeded,
        "49.00",
        stage="invoiced",
        skipped=2,
    )


SCENARIOS: dict[str, Callable[[StripeWorld], Scenario]] = {
    f.__name__: f
    for f in (
        card_payment,
        refund_before_success,
        partial_refunds_one_failed,
        partial_capture,
        authorisation_expires,
        dispute_won,
        dispute_lost_after_refund,
        checkout_subscription,
        checkout_subscription_matched,
        trial_then_charge,
    )
}


def orders(events: list[Obj], rng: random.Random) -> Iterator[list[Obj]]:
    if len(events) <= 4:
        yield from (list(p) for p in itertools.permutations(events))
        return
    yield list(events)
    yield list(reversed(events))
    for _ in range(SHUFFLES):
        yield rng.sample(events, len(events))


def feed(ledger: Ledger, events: list[Obj], lookup: Lookup, rng: random.Random) -> int:
    """As runs do it: batches of events, each normalised then recorded in one transaction."""
    skipped = 0
    i = 0
    while i < len(events):
        size = rng.randint(1, 3)
        facts: list[Payment] = []
        for event in events[i : i + size]:
            result = normalise(event, lookup)
            if isinstance(result, Skipped):
                assert "charged nothing" in result.reason
                skipped += 1
            else:
                assert result is not None
                facts.append(result)
        ledger.record_payments(facts)
        i += size
    return skipped


def fingerprint(p: Payment) -> str:
    """The state, less what depends on arrival order by design (which known id names it)."""
    data = p.model_copy(update={"payment_id": "-", "event_ids": tuple(sorted(p.event_ids))})
    return data.model_dump_json()


@pytest.fixture(params=["without_api", "with_api"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_one_payment_in_one_final_state_whatever_the_order(ledger: Ledger, name: str, mode: str) -> None:
    world = StripeWorld()
    scenario = SCENARIOS[name](world)
    rng = random.Random(f"{name}:{mode}")
    fake = FakeStripe(world, rate_per_second=10_000)
    with serve_app(fake.app) as url:
        lookup: Lookup = (
            StripeLookup(make_client(StripeSettings(api_key="sk_test_shapes", api_base=url)), ledger)
            if mode == "with_api"
            else NoLookup()
        )
        seen: dict[str, list[str]] = {}
        final: Payment | None = None
        for order in orders(scenario.events, rng):
            with ledger.session() as s:
                s.execute(delete(PaymentRow))
                s.execute(delete(PaymentAliasRow))
            assert feed(ledger, order, lookup, rng) == scenario.skipped
            with ledger.session() as s:
                rows = list(s.scalars(select(PaymentRow)))
                aliases = dict(s.execute(select(PaymentAliasRow.alias_id, PaymentAliasRow.payment_id)).all())
            assert len(rows) == 1, f"{[e['type'] for e in order]} made {[r.payment_id for r in rows]}"
            final = Payment.model_validate_json(rows[0].data)
            assert {aliases[i] for i in scenario.ids} == {final.payment_id}
            seen.setdefault(fingerprint(final), []).append(" ".join(e["type"] for e in order))
    assert len(seen) == 1, f"{len(seen)} different final states, e.g. after {[v[0] for v in seen.values()]}"
    assert final is not None
    assert final.status == scenario.status
    assert final.amount == Decimal(scenario.amount)
    assert final.refunded_amount == Decimal(scenario.refunded)
    assert stage_for(final) == scenario.stage
    assert not re.search(r"(?<![\d\s\u00a0])0,00", note_text(final, "pl"))  # never "0,00 zł"
    for key, value in scenario.extra.items():
        assert getattr(final, key) == value, key
    if mode == "with_api":
        assert final.missing == ()


def facts(*events: Obj) -> list[Payment]:
    out = [normalise(e, NoLookup()) for e in events]
    assert all(isinstance(p, Payment) for p in out)
    return out  # type: ignore[return-value]


def test_two_payments_a_late_link_joins_keep_the_deal_the_sinks_know(
    any_ledger: Ledger, world: StripeWorld
) -> None:
    """Session + invoice were passed on as `in_…`, the charge as `pi_…`; then invoice_payment.paid
    says they are one: one payment remains, under the id the sinks saw first-hand, and nothing
    that was already said about either half (the thank-you) is planned again."""
    cus = world.customer("x@example.pl", "X")
    session, inv, pi, ch = world.subscription_checkout(4900, "pln", cus, product="Plan Pro")
    first = any_ledger.record_payments(facts(world.event("checkout.session.completed", session)))
    any_ledger.mark_processed([first[-1].payment])
    # no customer on the charge, so the strict match cannot join them before the link does
    other = facts(world.event("charge.succeeded", {**ch, "customer": None}))
    second = any_ledger.record_payments(other)
    any_ledger.mark_processed([second[-1].payment])
    assert {first[-1].payment.payment_id, second[-1].payment.payment_id} == {inv["id"], pi["id"]}
    joined = any_ledger.record_payments(
        facts(world.event("invoice_payment.paid", world.invoice_payment(inv)))
    )
    assert joined[-1].payment.payment_id == pi["id"]  # both were processed: the PaymentIntent stays
    with any_ledger.session() as s:
        assert [r.payment_id for r in s.scalars(select(PaymentRow))] == [pi["id"]]
        aliases = dict(s.execute(select(PaymentAliasRow.alias_id, PaymentAliasRow.payment_id)).all())
    assert {aliases[i] for i in (session["id"], inv["id"], pi["id"], ch["id"])} == {pi["id"]}
    assert [o.team_kind for o in occurrences(joined[-1])] == []  # no second "new payment"


def test_an_unprocessed_half_joins_the_processed_one(any_ledger: Ledger, world: StripeWorld) -> None:
    cus = world.customer("y@example.pl", "Y")
    session, inv, _, ch = world.subscription_checkout(4900, "pln", cus, product="Plan Pro")
    seen = any_ledger.record_payments(facts(world.event("checkout.session.completed", session)))
    any_ledger.mark_processed([seen[-1].payment])
    any_ledger.record_payments(facts(world.event("charge.succeeded", {**ch, "customer": None})))
    joined = any_ledger.record_payments(
        facts(world.event("invoice_payment.paid", world.invoice_payment(inv)))
    )
    assert joined[-1].payment.payment_id == inv["id"]  # its deal exists already: it keeps its id


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 4800, "amount_captured": 4800},  # not the same money
        {"customer": "cus_someone_else"},
        {"created": "later"},  # paid outside the window
    ],
)
def test_the_strict_match_is_strict(any_ledger: Ledger, world: StripeWorld, change: dict[str, Any]) -> None:
    cus = world.customer("z@example.pl", "Z")
    _, inv, _, ch = world.subscription_checkout(4900, "pln", cus, product="Plan Pro")
    if change.get("created") == "later":
        change = {"created": ch["created"] + 3600}
    any_ledger.record_payments(
        facts(world.event("invoice.paid", inv), world.event("charge.succeeded", {**ch, **change}))
    )
    with any_ledger.session() as s:
        assert len(list(s.scalars(select(PaymentRow)))) == 2


def test_the_strict_match_refuses_when_two_could_be_it(any_ledger: Ledger, world: StripeWorld) -> None:
    cus = world.customer("w@example.pl", "W")
    _, inv, _, ch = world.subscription_checkout(4900, "pln", cus, product="Plan Pro")
    _, twin = world.payment_intent(4900, "pln", cus)
    any_ledger.record_payments(
        facts(world.event("charge.succeeded", ch), world.event("charge.succeeded", twin))
    )
    any_ledger.record_payments(facts(world.event("invoice.paid", inv)))
    with any_ledger.session() as s:
        assert len(list(s.scalars(select(PaymentRow)))) == 3  # the invoice stays on its own


def test_a_dispute_after_a_full_refund_keeps_the_deal_refunded(ledger: Ledger, world: StripeWorld) -> None:
    _, ch = world.payment_intent(24900, "pln", world.customer("q@example.pl"))
    refunded = ledger.record_payments(facts(world.event("charge.refunded", world.refund(ch))))[-1]
    disputed = ledger.record_payments(facts(world.event("charge.dispute.created", world.dispute(ch))))[-1]
    assert stage_for(refunded.payment) == stage_for(disputed.payment) == "refunded"
    assert disputed.payment.status == PaymentStatus.disputed
