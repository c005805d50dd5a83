"""The CRM notes task, claim -> act -> settle, for every CRM: whatever an earlier attempt left
(a dead run's claim, a lost answer, an `unknown` from an older version), the next attempt looks
for the note's marker first, and exactly one note exists in the end."""

from __future__ import annotations

import pytest

from stripeflow.core.errors import RetriableError
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import Changes, Payment, PaymentChange
from stripeflow.tasks.crm.base import CRM, NoteInput
from stripeflow.tasks.crm.tasks import NOTE_ROUNDS, _Note, _Outcome, add_notes, note_key, note_text
from tests.tasks.crm.harness import Harness, deal, payment


def one_payment(crm: CRM) -> tuple[Payment, Changes, dict[str, str]]:
    p = payment(1)
    [deal_id] = crm.upsert_deals([deal(1)])
    return p, Changes([PaymentChange(p, None)]), {p.payment_id: deal_id}


def run(crm: CRM, ledger: Ledger, changes: Changes, deal_ids: dict[str, str]) -> int:
    return int(add_notes.fn(crm, ledger, changes, deal_ids, "pl"))


def the_note(crm: CRM, p: Payment, deal_id: str) -> _Note:
    key = note_key(crm.name, p)
    return _Note(key, crm.name, NoteInput(deal_id, p.payment_id, note_text(p, "pl"), key=key))


def note_state(ledger: Ledger, p: Payment) -> list[tuple[str, str]]:
    return [(e.status, e.action) for e in ledger.effects_for(p.payment_id)]


def test_a_note_is_claimed_sent_and_settled_once(harness: Harness, crm: CRM, ledger: Ledger) -> None:
    p, changes, deal_ids = one_payment(crm)
    deal_id = deal_ids[p.payment_id]
    assert run(crm, ledger, changes, deal_ids) == 1
    [effect] = ledger.effects_for(p.payment_id)
    assert effect.status == "done"
    assert crm.find_notes([the_note(crm, p, deal_id).note]) == [effect.result]  # the receipt is its id
    assert run(crm, ledger, changes, deal_ids) == 0  # a rerun, a retry, a duplicate delivery
    [body] = harness.notes_on(deal_id)
    assert body.startswith("Płatność zrealizowana: 249,00\u00a0zł")


@pytest.mark.parametrize("called", [False, True], ids=["died-before-the-call", "died-after-the-call"])
@pytest.mark.parametrize("left", ["claimed", "attempting", "unknown"])
def test_whatever_an_earlier_attempt_left_ends_as_one_note(
    harness: Harness, crm: CRM, ledger: Ledger, left: str, called: bool
) -> None:
    p, changes, deal_ids = one_payment(crm)
    note = the_note(crm, p, deal_ids[p.payment_id])
    _, token = ledger.claim_effects([note])
    if left == "unknown":  # what the version before claims recorded for a lost answer
        ledger.settle_effects([_Outcome(note, "unknown", "timed out")], token)
    elif left == "attempting":
        ledger.mark_attempting([note.key], token)
    if called:
        crm.add_notes([note.note])  # the attempt reached the CRM, then died before its settle
    run(crm, ledger, changes, deal_ids)
    assert note_state(ledger, p) == [("done", "note")]
    assert harness.count_notes() == 1
    assert run(crm, ledger, changes, deal_ids) == 0 and harness.count_notes() == 1


@pytest.mark.http
@pytest.mark.parametrize("timeout", [True, False], ids=["timeout", "502"])
def test_a_note_whose_answer_was_lost_is_settled_by_looking(
    harness: Harness, crm: CRM, ledger: Ledger, timeout: bool
) -> None:
    p, changes, deal_ids = one_payment(crm)
    harness.lose_create_answer("note", timeout=timeout)
    run(crm, ledger, changes, deal_ids)  # sent, answer lost, looked for: found
    assert harness.after_write_faults() == 1
    assert note_state(ledger, p) == [("done", "note")] and harness.count_notes() == 1
    run(crm, ledger, changes, deal_ids)
    assert harness.count_notes() == 1


@pytest.mark.http
def test_a_note_lost_twice_is_settled_in_the_same_attempt(harness: Harness, crm: CRM, ledger: Ledger) -> None:
    p, changes, deal_ids = one_payment(crm)
    harness.refuse_create("note", count=2)  # two 502s: unknown to the client, nothing written
    assert run(crm, ledger, changes, deal_ids) == 1  # looked, found nothing, sent again, twice
    assert note_state(ledger, p) == [("done", "note")] and harness.count_notes() == 1


@pytest.mark.http
def test_a_note_lost_every_round_goes_to_the_retry_which_looks_first(
    harness: Harness, crm: CRM, ledger: Ledger
) -> None:
    p, changes, deal_ids = one_payment(crm)
    harness.refuse_create("note", count=NOTE_ROUNDS)  # every round's send unknown, nothing written
    with pytest.raises(RetriableError):  # looked, found nothing, sent once more: unknown again
        run(crm, ledger, changes, deal_ids)
    assert note_state(ledger, p) == [("claimed", "note")] and harness.count_notes() == 0
    assert run(crm, ledger, changes, deal_ids) == 1  # the task's declared retry: looks, then sends
    assert note_state(ledger, p) == [("done", "note")] and harness.count_notes() == 1
