"""Claims, leases and poison, over the real flow, the ledger and the local CRM on a real Prefect
server: a run keeps what it claimed while it lives, two runs never share a payment, and one bad
event or payment never holds up the rest."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from stripeflow.core.ledger import InboxRow
from stripeflow.deployments.dispatcher import Dispatcher
from stripeflow.flows.process_payment_events import process_payment_events
from stripeflow.runtime import Runtime
from stripeflow.tasks.crm.base import ContactInput, DealInput, NoteInput
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.testing.stripe_events import StripeWorld
from tests.flows.conftest import deliver, drain, wait_for
from tests.flows.test_process_payment_events import expanded_success


class HoldingCRM:
    """The local CRM, except that the first run to reach it is held inside its first call until
    the test lets it go, and every call notes what it carried (contacts' keys, deals' payments)."""

    def __init__(self, inner: LocalCRM) -> None:
        self.inner = inner
        self.name, self.batch_size, self.parallel = inner.name, inner.batch_size, inner.parallel
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[tuple[str, list[str]]] = []

    def _hold(self, what: str, payment_ids: list[str]) -> None:
        self.calls.append((what, payment_ids))
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60), "the test never let the held run go"

    def keys_contact(self, email: str | None) -> bool:
        return self.inner.keys_contact(email)

    def upsert_contacts(self, items: Sequence[ContactInput]) -> list[str]:
        self._hold("contacts", [i.key for i in items])
        return self.inner.upsert_contacts(items)

    def upsert_deals(self, items: Sequence[DealInput]) -> list[str]:
        self._hold("deals", [i.payment_id for i in items])
        return self.inner.upsert_deals(items)

    def add_notes(self, items: Sequence[NoteInput]) -> list[str]:
        return self.inner.add_notes(items)

    def close(self) -> None:
        self.inner.close()


def in_thread(target: Any) -> threading.Thread:
    """Run `target` in a thread that keeps this context (Prefect's settings live there)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), daemon=True)
    thread.start()
    return thread


def inbox(runtime: Runtime) -> dict[str, tuple[str, int, str | None]]:
    with runtime.ledger.session() as s:
        rows = s.execute(select(InboxRow.event_id, InboxRow.status, InboxRow.attempts, InboxRow.claim_token))
        return {r.event_id: (r.status, r.attempts, r.claim_token) for r in rows}


def test_a_run_longer_than_its_lease_keeps_its_events_and_a_retry_meanwhile_takes_nothing(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    runtime.settings.dispatcher.lease_seconds = 1
    held = HoldingCRM(crm)
    runtime.__dict__["crms"] = [held]
    event, pi, _ = expanded_success(world)
    (event_id,) = deliver(runtime, event)
    first = in_thread(dispatcher.run_once)
    assert held.entered.wait(60)
    token = inbox(runtime)[event_id][2]
    deadline = time.monotonic() + 3.5  # three and a half leases: only the renewals keep it
    while time.monotonic() < deadline:
        assert dispatcher.run_once() == 0  # a second dispatcher finds nothing to claim
        assert runtime.ledger.payment_holder(pi["id"]) == token
        time.sleep(0.1)
    # Retry in the UI (or a replay) of the same events while the run lives: it takes nothing
    assert process_payment_events(event_ids=[event_id]) == {
        "events": 0,
        "payments": 0,
        "changed": 0,
        "skipped": 0,
        "dead": 0,
        "waiting": 0,
    }
    held.release.set()
    first.join(60)
    assert inbox(runtime)[event_id][:2] == ("done", 1)
    assert len(crm.list_deals()) == 1 and len(crm.notes_for(pi["id"])) == 1
    assert runtime.ledger.payment_holder(pi["id"]) is None  # freed when the run ended


def test_two_runs_never_work_on_the_same_payment_at_once(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    held = HoldingCRM(crm)
    runtime.__dict__["crms"] = [held]
    event, pi, ch = expanded_success(world)
    other, other_pi, _ = expanded_success(world, email="ola@example.pl")
    (success_id,) = deliver(runtime, event)
    first = in_thread(dispatcher.run_once)
    assert held.entered.wait(60)  # the first run holds pi and is inside the CRM
    refund_id, other_id = deliver(runtime, world.event("charge.refunded", world.refund(ch)), other)
    # a second run leaves the refund (its charge is held) and works on the payment nobody holds
    assert dispatcher.run_once() == 1
    assert inbox(runtime)[refund_id][:2] == ("pending", 0)  # back in the inbox, uncounted
    assert inbox(runtime)[other_id][0] == "done"
    assert ("deals", [other_pi["id"]]) in held.calls
    assert all(pi["id"] not in ids for _, ids in held.calls)  # the held run has not got to pi's deal
    held.release.set()
    first.join(60)
    drain(dispatcher)  # the refund's turn, now that pi is free
    assert {e: v[0] for e, v in inbox(runtime).items()} == {
        success_id: "done",
        refund_id: "done",
        other_id: "done",
    }
    deals = {d.payment_id: d for d in crm.list_deals()}
    assert deals[pi["id"]].stage == "refunded" and deals[other_pi["id"]].stage == "paid"
    assert crm.notes_for(pi["id"]) == [
        "Płatność zrealizowana: 249,00\u00a0zł (karta).",
        "Zwrot całej płatności: 249,00\u00a0zł.",
    ]


def test_two_runs_never_sync_the_same_customer_at_once(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    """A second payment of the customer a held run is syncing waits for that run: a contact
    found-or-created by search would otherwise be created by both runs."""
    held = HoldingCRM(crm)
    runtime.__dict__["crms"] = [held]
    first_event, first_pi, _ = expanded_success(world, email="anna@example.pl")
    (first_id,) = deliver(runtime, first_event)
    first = in_thread(dispatcher.run_once)
    assert held.entered.wait(60)  # the first run is inside the CRM with Anna's contact
    again, again_pi, _ = expanded_success(world, email="ANNA@example.pl", amount=5000)
    other, other_pi, _ = expanded_success(world, email="ola@example.pl")
    again_id, other_id = deliver(runtime, again, other)
    assert dispatcher.run_once() == 2
    assert inbox(runtime)[again_id][:2] == ("pending", 0)  # waits for Anna's run, uncounted
    assert inbox(runtime)[other_id][0] == "done"
    assert all(again_pi["id"] not in ids for _, ids in held.calls)
    held.release.set()
    first.join(60)
    drain(dispatcher)
    assert {e: v[0] for e, v in inbox(runtime).items()} == {
        first_id: "done",
        again_id: "done",
        other_id: "done",
    }
    assert sorted(d.payment_id for d in crm.list_deals()) == sorted(
        [first_pi["id"], again_pi["id"], other_pi["id"]]
    )
    assert len(crm.list_contacts()) == 2


class KeyedContacts(HoldingCRM):
    """A CRM whose vendor keys every contact's upsert, as HubSpot does on the e-mail."""

    def keys_contact(self, email: str | None) -> bool:
        return True


def test_a_customer_is_not_leased_where_every_crm_keys_its_contact(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    """Where no CRM could make the contact twice, a customer's second payment does not wait for
    the run syncing the first: only the payment itself is held."""
    held = KeyedContacts(crm)
    runtime.__dict__["crms"] = [held]
    first_event, first_pi, _ = expanded_success(world, email="anna@example.pl")
    (first_id,) = deliver(runtime, first_event)
    first = in_thread(dispatcher.run_once)
    assert held.entered.wait(60)
    again, again_pi, _ = expanded_success(world, email="anna@example.pl", amount=5000)
    (again_id,) = deliver(runtime, again)
    assert dispatcher.run_once() == 1
    assert inbox(runtime)[again_id][0] == "done"  # went while Anna's first run is held
    assert ("deals", [again_pi["id"]]) in held.calls
    held.release.set()
    first.join(60)
    assert inbox(runtime)[first_id][0] == "done"
    assert sorted(d.payment_id for d in crm.list_deals()) == sorted([first_pi["id"], again_pi["id"]])
    assert len(crm.list_contacts()) == 1


def test_the_dispatcher_keeps_several_runs_going_at_once(
    runtime: Runtime, crm: LocalCRM, world: StripeWorld
) -> None:
    """While one run waits on the CRM, the next payments go through in runs of their own."""
    held = HoldingCRM(crm)
    runtime.__dict__["crms"] = [held]
    runtime.settings.dispatcher.runs = 2
    runtime.settings.dispatcher.poll_interval = 0.05
    dispatcher = Dispatcher(runtime)
    first_event, first_pi, _ = expanded_success(world, email="anna@example.pl")
    (first_id,) = deliver(runtime, first_event)
    dispatcher.start()
    try:
        assert held.entered.wait(60)
        later = [expanded_success(world, email=f"c{i}@example.pl")[0] for i in range(3)]
        later_ids = deliver(runtime, *later)
        wait_for(
            lambda: all(inbox(runtime)[e][0] == "done" for e in later_ids), 60, "the later payments done"
        )
        assert inbox(runtime)[first_id][0] == "claimed"  # its run still waits in the CRM
        held.release.set()
        wait_for(lambda: inbox(runtime)[first_id][0] == "done", 60, "the held run done")
    finally:
        held.release.set()
        dispatcher.stop()
    assert len(crm.list_deals()) == 4 and dispatcher.runs >= 2
    assert crm.notes_for(first_pi["id"]) == ["Płatność zrealizowana: 249,00\u00a0zł (karta)."]


def test_an_event_waiting_for_a_live_run_waits_until_that_run_ends(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    """The holder renews the waiting events' lease with its own: they are not claimed and given
    back once a lease while it works, however long it takes."""
    runtime.settings.dispatcher.lease_seconds = 1
    held = HoldingCRM(crm)
    runtime.__dict__["crms"] = [held]
    event, pi, _ = expanded_success(world)
    deliver(runtime, event)
    first = in_thread(dispatcher.run_once)
    assert held.entered.wait(60)
    # the same customer's next payment: claimed (nothing of it is held), then it waits for the
    # held run, which holds its customer
    again, again_pi, _ = expanded_success(world, amount=5000)
    (again_id,) = deliver(runtime, again)
    assert dispatcher.run_once() == 1
    deadline = time.monotonic() + 3.5  # three and a half leases
    while time.monotonic() < deadline:
        assert dispatcher.run_once() == 0
        assert inbox(runtime)[again_id][:2] == ("pending", 0)
        time.sleep(0.1)
    held.release.set()
    first.join(60)
    drain(dispatcher)
    assert inbox(runtime)[again_id][:2] == ("done", 1)
    assert sorted(d.payment_id for d in crm.list_deals()) == sorted([pi["id"], again_pi["id"]])


def test_one_bad_event_or_payment_is_set_aside_and_the_rest_go_on(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    good, good_pi, _ = expanded_success(world)
    far_future, _, _ = expanded_success(world, email="time@example.pl")
    far_future["data"]["object"]["created"] = 2**63  # no platform can hold that timestamp
    huge, huge_pi, _ = expanded_success(world, email="huge@example.pl")
    for obj in (huge["data"]["object"], huge["data"]["object"]["latest_charge"]):
        obj["amount"] = obj["amount_received"] = 10**27  # more minor units than the ledger's integers
    unknown_currency, _, _ = expanded_success(world, email="xyz@example.pl")
    unknown_currency["data"]["object"]["currency"] = "xyz"
    ids = deliver(runtime, good, far_future, huge, unknown_currency)
    drain(dispatcher)
    statuses = {e: v[0] for e, v in inbox(runtime).items()}
    assert statuses == {ids[0]: "done", ids[1]: "dead", ids[2]: "dead", ids[3]: "dead"}
    reasons = {d.event_id: d for d in runtime.ledger.dead_letters()}
    assert reasons[ids[1]].reason == "OverflowError: timestamp out of range for platform time_t"
    assert reasons[ids[2]].reason == "OverflowError: Python int too large to convert to SQLite INTEGER"
    assert (reasons[ids[2]].target, reasons[ids[2]].payment_id) == ("ledger", huge_pi["id"])
    assert "unknown currency 'xyz'" in reasons[ids[3]].reason
    assert [d.payment_id for d in crm.list_deals()] == [good_pi["id"]]


class FailingCRM(HoldingCRM):
    """A CRM whose every deal call fails in a way no retry mends."""

    def upsert_contacts(self, items: Sequence[ContactInput]) -> list[str]:
        raise RuntimeError("the CRM adapter is broken")


def test_an_event_that_keeps_failing_goes_to_the_dead_letters_after_max_attempts(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    runtime.settings.dispatcher.lease_seconds = 0.5
    runtime.settings.dispatcher.max_attempts = 2
    runtime.__dict__["crms"] = [FailingCRM(crm)]
    event, _, _ = expanded_success(world)
    (event_id,) = deliver(runtime, event)
    assert dispatcher.run_once() == 1
    with runtime.ledger.session() as s:
        row = s.get(InboxRow, event_id)
        assert row is not None and (row.status, row.attempts) == ("claimed", 1)
        assert row.note == "RuntimeError: the CRM adapter is broken"  # the last error, kept
    wait_for(dispatcher.run_once, 10, "the second attempt")  # claimed again when the lease ends
    assert inbox(runtime)[event_id][:2] == ("claimed", 2)
    wait_for(dispatcher.run_once, 10, "the third claim")  # which finds it claimed too often
    assert inbox(runtime)[event_id][0] == "dead"
    (letter,) = runtime.ledger.dead_letters()
    assert letter.event_id == event_id
    assert letter.reason == "failed 2 times: RuntimeError: the CRM adapter is broken"
    assert dispatcher.run_once() == 0  # never claimed again, until a replay


def test_a_run_started_by_hand_without_parameters_claims_like_the_dispatcher(
    runtime: Runtime, crm: LocalCRM, world: StripeWorld
) -> None:
    first, _, _ = expanded_success(world)
    second, _, _ = expanded_success(world, email="ola@example.pl")
    taken_id, free_id = deliver(runtime, first, second)
    assert runtime.ledger.claim_given([taken_id], "another-live-run", 300) == [taken_id]
    result = process_payment_events()
    assert (result["events"], result["payments"]) == (1, 1)
    assert inbox(runtime)[taken_id] == ("claimed", 1, "another-live-run")
    assert inbox(runtime)[free_id][0] == "done"


def test_two_workers_draining_one_inbox_do_everything_once(
    runtime: Runtime, crm: LocalCRM, world: StripeWorld
) -> None:
    """Two dispatchers (two `stripeflow worker` processes' worth) claim from the same inbox
    while events arrive; every payment's success and partial refund reach the CRM once."""
    workers = [Dispatcher(runtime), Dispatcher(runtime)]
    successes, refunds, payment_ids = [], [], []
    for i in range(40):
        event, pi, ch = expanded_success(world, amount=10_000 + i, email=f"c{i}@example.pl")
        successes.append(event)
        refunds.append(world.event("charge.refunded", world.refund(ch, 1000)))
        payment_ids.append(pi["id"])
    runtime.settings.dispatcher.poll_interval = 0.05
    runtime.settings.dispatcher.batch_size = 10  # 8 rounds at least: both dispatchers get some
    for worker in workers:
        worker.start()
    try:
        for start in range(0, 40, 5):  # a success and its refund arrive close together
            deliver(runtime, *successes[start : start + 5], *refunds[start : start + 5])
        wait_for(lambda: runtime.ledger.inbox_counts() == {"done": 80}, 120, "every event done")
    finally:
        for worker in workers:
            worker.stop()
    assert all(w.runs for w in workers)  # both took part
    deals = {d.payment_id: d for d in crm.list_deals()}
    assert sorted(deals) == sorted(payment_ids)
    assert {Decimal(d.refunded_amount) for d in deals.values()} == {Decimal("10.00")}
    for pid in payment_ids:
        # one note per change a run saw (a success and its refund in one run are one change),
        # none twice, and the last one says what the payment is now
        notes = crm.notes_for(pid)
        assert len(notes) == len(set(notes)) and notes[-1].startswith("Częściowy zwrot"), notes


class OnePoisonedDealCRM(HoldingCRM):
    """A CRM adapter that fails a whole deals batch, not with a vendor error, whenever one
    payment is in it: the kind of failure no task-level isolation sees."""

    def __init__(self, inner: LocalCRM, poisoned: str) -> None:
        super().__init__(inner)
        self.poisoned = poisoned
        self.entered.set()  # never holds

    def upsert_deals(self, items: Sequence[DealInput]) -> list[str]:
        if any(i.payment_id == self.poisoned for i in items):
            raise RuntimeError("adapter bug on one payment")
        return self.inner.upsert_deals(items)


def test_one_payment_that_fails_its_whole_batch_ends_alone_in_the_dead_letters(
    runtime: Runtime, crm: LocalCRM, dispatcher: Dispatcher, world: StripeWorld
) -> None:
    cfg = runtime.settings.dispatcher
    cfg.batch_size, cfg.max_attempts, cfg.lease_seconds = 100, 3, 0.5
    events, payment_ids = [], []
    for i in range(12):
        event, pi, _ = expanded_success(world, amount=5000 + i, email=f"k{i}@example.pl")
        events.append(event)
        payment_ids.append(pi["id"])
    poisoned = payment_ids[5]
    runtime.__dict__["crms"] = [OnePoisonedDealCRM(crm, poisoned)]
    ids = deliver(runtime, *events)

    def settled() -> bool:
        dispatcher.run_once()
        return set(runtime.ledger.inbox_counts()) <= {"done", "dead"}

    wait_for(settled, 120, "every event done or dead")
    assert runtime.ledger.inbox_counts() == {"done": 11, "dead": 1}
    (letter,) = runtime.ledger.dead_letters()
    assert letter.event_id == ids[5]
    assert letter.reason == "failed 3 times: RuntimeError: adapter bug on one payment"
    assert sorted(d.payment_id for d in crm.list_deals()) == sorted(set(payment_ids) - {poisoned})
    assert all(len(crm.notes_for(pid)) == 1 for pid in payment_ids if pid != poisoned)
