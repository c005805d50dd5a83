"""`process-payment-events` end to end over the ledger and the local CRM, on a real Prefect server."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import httpx
import pytest
from prefect import get_client

from stripeflow.core.errors import PermanentError
from stripeflow.deployments.dispatcher import Dispatcher
from stripeflow.flows.process_payment_events import process_payment_events
from stripeflow.flows.replay import replay
from stripeflow.runtime import Runtime
from stripeflow.tasks.crm.base import ContactInput, DealInput, NoteInput
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.testing.stripe_events import StripeWorld
from tests.flows.conftest import deliver, drain, wait_for


def expanded_success(
    world: StripeWorld,
    amount: int = 24900,
    currency: str = "pln",
    email: str = "anna@example.pl",
    **kw: object,
) -> tuple[dict, dict, dict]:
    """A succeeded PaymentIntent whose charge and customer are expanded (no Stripe API needed)."""
    cus = world.customer(email, "Anna Nowak")
    pi, ch = world.payment_intent(amount, currency, cus, **kw)  # type: ignore[arg-type]
    event = world.event("payment_intent.succeeded", {**pi, "latest_charge": ch, "customer": cus})
    return event, pi, ch


def test_the_same_event_three_times_gives_one_contact_deal_and_note(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    event, pi, _ = expanded_success(world, product="Subskrypcja Pro")
    (event_id,) = deliver(runtime, event)
    drain(dispatcher)
    process_payment_events(event_ids=[event_id])  # a rerun from the UI
    process_payment_events(event_ids=[event_id])
    deals = crm.list_deals()
    assert len(deals) == 1 and len(crm.list_contacts()) == 1
    (deal,) = deals
    assert deal.payment_id == pi["id"] and deal.stage == "paid"
    assert deal.title == "Płatność Stripe – Subskrypcja Pro, 249,00\u00a0zł"
    assert crm.notes_for(pi["id"]) == ["Płatność zrealizowana: 249,00\u00a0zł (karta)."]
    assert runtime.ledger.inbox_counts() == {"done": 1}


def test_a_refund_delivered_before_its_success(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    event, pi, ch = expanded_success(world)
    refund = world.event("charge.refunded", world.refund(ch))
    deliver(runtime, refund)
    drain(dispatcher)
    deliver(runtime, event)
    drain(dispatcher)
    (deal,) = crm.list_deals()
    assert (deal.stage, Decimal(deal.refunded_amount), Decimal(deal.amount)) == (
        "refunded",
        Decimal("249.00"),
        Decimal("249.00"),
    )
    assert deal.contact_email == "anna@example.pl"
    assert crm.notes_for(pi["id"]) == [
        "Zwrot całej płatności: 249,00\u00a0zł."
    ]  # the late success changed nothing
    assert len(crm.list_contacts()) == 1


def test_success_then_partial_then_full_refund_is_one_deal_with_a_note_per_change(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    event, pi, ch = expanded_success(world)
    for e in (
        event,
        world.event("charge.refunded", world.refund(ch, 4900)),
        world.event("charge.refunded", world.refund(ch)),
    ):
        deliver(runtime, e)
        drain(dispatcher)
    (deal,) = crm.list_deals()
    assert deal.stage == "refunded" and Decimal(deal.refunded_amount) == Decimal("249.00")
    assert crm.notes_for(pi["id"]) == [
        "Płatność zrealizowana: 249,00\u00a0zł (karta).",
        "Częściowy zwrot: 49,00\u00a0zł z 249,00\u00a0zł.",
        "Zwrot całej płatności: 249,00\u00a0zł.",
    ]


def test_a_failure_moves_the_deal_to_failed(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    cus = world.customer("marek@example.pl", "Marek")
    pi, ch = world.payment_intent(9900, "pln", cus, status="requires_payment_method")
    deliver(runtime, world.event("payment_intent.payment_failed", {**pi, "latest_charge": ch}))
    drain(dispatcher)
    (deal,) = crm.list_deals()
    assert deal.stage == "failed"
    assert crm.notes_for(pi["id"]) == ["Płatność nieudana: 99,00\u00a0zł. Your card was declined."]


def test_a_burst_is_drained_by_few_runs(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    events = [expanded_success(world, amount=1000 + i, email=f"c{i % 50}@example.pl")[0] for i in range(300)]
    deliver(runtime, *events)
    runs = drain(dispatcher)
    assert runs == 1  # one run drains the whole burst (batch size 10,000)
    assert len(crm.list_deals()) == 300 and len(crm.list_contacts()) == 50


def test_unknown_types_are_skipped_and_bad_events_set_aside(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    good, _, _ = expanded_success(world)
    unknown = world.event("customer.created", world.customer("x@y.pl"))
    bad, _, _ = expanded_success(world, email="b@c.pl")
    bad["data"]["object"]["currency"] = "xyz"
    deliver(runtime, good, unknown, bad)
    drain(dispatcher)
    assert runtime.ledger.inbox_counts() == {"done": 1, "skipped": 1, "dead": 1}
    (letter,) = runtime.ledger.dead_letters()
    assert letter.event_id == bad["id"] and "unknown currency 'xyz'" in letter.reason
    assert len(crm.list_deals()) == 1


class RejectingCRM:
    """The local CRM, except that it rejects deals for one e-mail the way a vendor's validation would."""

    def __init__(self, inner: LocalCRM, reject: str) -> None:
        self.inner, self.reject = inner, reject
        self.name, self.batch_size, self.parallel = inner.name, inner.batch_size, inner.parallel

    def keys_contact(self, email: str | None) -> bool:
        return self.inner.keys_contact(email)

    def upsert_contacts(self, items: Sequence[ContactInput]) -> list[str]:
        return self.inner.upsert_contacts(items)

    def upsert_deals(self, items: Sequence[DealInput]) -> list[str]:
        if any(d.payment.email == self.reject for d in items):
            raise PermanentError("Property values were not valid: amount", vendor="demo-crm", status=400)
        return self.inner.upsert_deals(items)

    def add_notes(self, items: Sequence[NoteInput]) -> list[str]:
        return self.inner.add_notes(items)

    def find_notes(self, items: Sequence[NoteInput]) -> list[str | None]:
        return self.inner.find_notes(items)

    def close(self) -> None:
        self.inner.close()


def test_a_rejected_payment_is_dead_lettered_and_replayed_later(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    runtime.__dict__["crms"] = [RejectingCRM(crm, reject="bad@example.pl")]
    events = [expanded_success(world, email=e)[0] for e in ("a@example.pl", "bad@example.pl", "c@example.pl")]
    deliver(runtime, *events)
    drain(dispatcher)
    assert sorted(d.contact_email for d in crm.list_deals()) == ["a@example.pl", "c@example.pl"]
    (letter,) = runtime.ledger.dead_letters()
    assert letter.action == "upsert_deal" and "Property values were not valid" in letter.reason

    runtime.__dict__["crms"] = [crm]  # the mapping was fixed
    replay()
    assert sorted(d.contact_email for d in crm.list_deals()) == [
        "a@example.pl",
        "bad@example.pl",
        "c@example.pl",
    ]
    assert runtime.ledger.dead_letters() == []
    assert all(len(crm.notes_for(d.payment_id)) == 1 for d in crm.list_deals())


class CrashingCRM(RejectingCRM):
    """Dies after the deals are written and before the notes, like a worker killed mid-run."""

    crashed = False

    def add_notes(self, items: Sequence[NoteInput]) -> list[str]:
        if not CrashingCRM.crashed:
            CrashingCRM.crashed = True
            raise KeyboardInterrupt  # stands for the process dying
        return self.inner.add_notes(items)


def test_a_run_that_dies_half_way_is_finished_by_the_next_without_doubles(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    runtime.__dict__["crms"] = [CrashingCRM(crm, reject="-")]
    runtime.settings.dispatcher.lease_seconds = 1
    event, pi, _ = expanded_success(world)
    deliver(runtime, event)
    with pytest.raises(KeyboardInterrupt):
        dispatcher.run_once()
    assert runtime.ledger.inbox_counts() == {"claimed": 1} and crm.notes_for(pi["id"]) == []
    wait_for(dispatcher.run_once, 10, "the dead run's lease to end")  # nobody renews it now
    drain(dispatcher)
    (deal,) = crm.list_deals()
    assert deal.stage == "paid" and len(crm.notes_for(pi["id"])) == 1
    assert runtime.ledger.inbox_counts() == {"done": 1}
    # the customer's confirmation, which the dead run never reached, went out once
    mails = [m for m in (runtime.settings.home / "outbox").glob("*.eml") if pi["id"] in m.read_text()]
    assert len(mails) == 1


def test_runs_belong_to_the_flow_and_are_named_after_the_payment(
    runtime: Runtime, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    event, pi, _ = expanded_success(world)
    deliver(runtime, event)
    drain(dispatcher)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    names = [r.name for r in runs]
    assert f"{pi['id']} · 249,00\u00a0zł" in names


def test_a_rename_prefect_cannot_take_neither_fails_nor_holds_up_the_run(
    runtime: Runtime,
    crm: LocalCRM,
    dispatcher: Dispatcher,
    world: StripeWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's name is cosmetic: a Prefect server that refuses the rename (overloaded, or
    restarting) leaves the run its first name, and the payment goes everywhere all the same."""
    import stripeflow.tasks.prefect_runs as prefect_runs

    def unreachable(**_: object) -> object:
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(prefect_runs, "get_client", unreachable)
    event, pi, _ = expanded_success(world)
    (event_id,) = deliver(runtime, event)
    drain(dispatcher)
    assert runtime.ledger.inbox_counts() == {"done": 1}
    (deal,) = crm.list_deals()
    assert deal.payment_id == pi["id"] and len(crm.notes_for(pi["id"])) == 1
    with get_client(sync_client=True) as client:
        names = [r.name for r in client.read_flow_runs()]
    assert event_id in names and not any(pi["id"] in n for n in names)


def test_events_of_a_dead_deployment_run_go_again_in_a_new_run(
    runtime: Runtime, crm: LocalCRM, world: StripeWorld
) -> None:
    """With the deployment registered (as `stripeflow worker` does), a re-claim is a new run of it."""
    from stripeflow.deployments.serve_all import deployments

    for deployment in deployments():
        deployment.apply()
    dispatcher = Dispatcher(runtime)
    CrashingCRM.crashed = False
    runtime.__dict__["crms"] = [CrashingCRM(crm, reject="-")]
    runtime.settings.dispatcher.lease_seconds = 3  # renewed each second; 1 s lapsed mid-run on a busy machine
    event, pi, _ = expanded_success(world)
    deliver(runtime, event)
    with pytest.raises(KeyboardInterrupt):
        dispatcher.run_once()
    wait_for(dispatcher.run_once, 10, "the dead run's lease to end")
    drain(dispatcher)
    assert len(crm.notes_for(pi["id"])) == 1 and runtime.ledger.inbox_counts() == {"done": 1}
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.parameters.get("event_ids") == [event["id"]]]
    assert len(runs) == 2 and all(r.deployment_id is not None for r in runs)
