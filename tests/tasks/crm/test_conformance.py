"""The one conformance suite every CRM adapter and its fake must pass (harness.py lists them;
conftest.py runs each test for each of them)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from stripeflow.core.batching import call_in_batches
from stripeflow.core.deal_fields import DEAL_FIELDS
from stripeflow.core.errors import AuthError, OutcomeUnknownError, PermanentError, RetriableError
from stripeflow.tasks.crm.base import CRM, NoteInput
from stripeflow.testing.server import serve_app
from tests.tasks.crm.harness import Harness, contact, deal, round_trip
from tests.tasks.crm.samples import rich_deal


def test_the_adapter_is_a_crm(crm: CRM) -> None:
    assert isinstance(crm, CRM)
    assert crm.batch_size >= 1


@pytest.mark.http  # the vendor CRMs: the local one has nothing to set up
def test_the_contract_round_trip_passes_against_the_fake(harness: Harness, crm: CRM) -> None:
    """The same case the contract tests run against a real account (`test_contract_real.py`)."""
    round_trip(crm, "fake")
    assert harness.count_contacts() == 1 and harness.count_deals() == 1 and harness.count_notes() == 1


def _same(expected: object, stored: object) -> bool:
    """A value as the vendor stores it: numbers by value, dates by their ISO day, the rest as text."""
    if stored is None:
        return expected is None
    if isinstance(expected, Decimal):
        return Decimal(str(stored)) == expected
    if isinstance(expected, date):
        text = str(stored)
        if text.isdigit():  # HubSpot keeps a date as epoch milliseconds at UTC midnight
            text = datetime.fromtimestamp(int(text) / 1000, UTC).date().isoformat()
        return text[:10] == expected.isoformat()
    return str(stored) == str(expected)


@pytest.mark.parametrize("language", ["pl", "en"])
def test_every_payment_field_is_on_the_deal(harness: Harness, crm: CRM, language: str) -> None:
    """Amount, currency, date, the transaction id, status with the refund, method, product, kind,
    and the invoice, receipt and dashboard links, as people read them in the account's language."""
    rich = rich_deal(1, language)
    crm.upsert_deals([rich])
    stored = harness.stored_deal(crm, rich.payment_id)
    for f in DEAL_FIELDS:
        assert f.name in stored, f"{f.name} has no home on the {harness.name} deal"
        assert _same(rich.values[f.name], stored[f.name]), (f.name, rich.values[f.name], stored[f.name])
    assert stored["status"] == ("częściowy zwrot" if language == "pl" else "partial refund")
    assert stored["method"] == "BLIK" and _same(Decimal("50.00"), stored["refunded_amount"])


def test_contact_upsert_is_idempotent(harness: Harness, crm: CRM) -> None:
    first = crm.upsert_contacts([contact(1), contact(2, email=False)])
    again = crm.upsert_contacts([contact(1), contact(2, email=False)])
    assert first == again
    assert harness.count_contacts() == 2


def test_duplicates_in_one_batch_get_one_record(harness: Harness, crm: CRM) -> None:
    ids = crm.upsert_contacts([contact(1), contact(1)])
    assert ids[0] == ids[1]
    assert harness.count_contacts() == 1


def test_deal_upsert_is_idempotent_and_keyed_by_payment(harness: Harness, crm: CRM) -> None:
    [contact_id] = crm.upsert_contacts([contact(1)])
    first = crm.upsert_deals([deal(1, contact_id=contact_id), deal(2, contact_id=contact_id)])
    again = crm.upsert_deals([deal(1, contact_id=contact_id), deal(2, contact_id=contact_id)])
    assert first == again
    assert len(set(first)) == 2
    assert harness.count_deals() == 2


def test_stage_move_updates_the_deal_in_place(harness: Harness, crm: CRM) -> None:
    [created] = crm.upsert_deals([deal(1, stage="new")])
    assert harness.deal_stage("pi_000001") == harness.crm_stage("new")
    [moved] = crm.upsert_deals([deal(1, stage="refunded")])
    assert moved == created
    assert harness.deal_stage("pi_000001") == harness.crm_stage("refunded")
    assert harness.count_deals() == 1


def test_notes_are_attached_to_the_deal(harness: Harness, crm: CRM) -> None:
    [deal_id] = crm.upsert_deals([deal(1)])
    note_ids = crm.add_notes(
        [
            NoteInput(deal_id=deal_id, payment_id="pi_000001", body="Zapłacono 249,00 zł"),
            NoteInput(deal_id=deal_id, payment_id="pi_000001", body="Zwrot 49,00 zł"),
        ]
    )
    assert len(set(note_ids)) == 2
    assert sorted(harness.notes_on(deal_id)) == ["Zapłacono 249,00 zł", "Zwrot 49,00 zł"]


@pytest.mark.http
def test_rate_limit_storm_is_waited_out_and_nothing_is_lost(harness: Harness, crm: CRM) -> None:
    [contact_id] = crm.upsert_contacts([contact(1)])  # warm up: tokens, field lookups
    harness.fake.inject(harness.storm_status, count=5)
    ids = crm.upsert_deals([deal(n, contact_id=contact_id) for n in range(1, 4)])
    notes = crm.add_notes([NoteInput(deal_id=i, payment_id="x", body=f"note {i}") for i in ids])
    assert harness.count_deals() == 3 and harness.count_notes() == 3 and len(set(notes)) == 3
    assert harness.fake.statuses().count(harness.storm_status) == 5
    assert len(harness.clock.slept) >= 5  # each refusal was waited out, on the fake clock


@pytest.mark.http
def test_unauthorised_is_not_retried(harness: Harness) -> None:
    bad = harness.build(bad_credentials=True)
    with pytest.raises(AuthError) as caught:
        bad.upsert_contacts([contact(1)])
    assert len(harness.fake.log) == 1
    assert "wrong" not in str(caught.value)  # the credential we sent is not echoed into the error


@pytest.mark.http
def test_calls_per_batch_are_capped(harness: Harness, crm: CRM) -> None:
    items = [deal(n) for n in range(250)]
    before = len(harness.fake.log)
    ids = call_in_batches(items, crm.batch_size, crm.upsert_deals, lambda item, exc: pytest.fail(str(exc)))
    assert len(set(ids)) == 250
    assert len(harness.fake.log) - before <= harness.deal_calls_cap(250)


@pytest.mark.http
def test_client_side_limiter_never_exceeds_the_fakes_limit(harness: Harness) -> None:
    crm = harness.build(limited=True)
    if harness.name == "zoho":  # a concurrency limit: only parallel callers can break it
        threads = [threading.Thread(target=crm.upsert_contacts, args=([contact(n)],)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for n in range(30):
            crm.upsert_contacts([contact(n)])
    assert harness.over_limit() == 0
    assert 429 not in harness.fake.statuses() and 503 not in harness.fake.statuses()


@pytest.mark.http
def test_a_refused_item_is_isolated_and_the_rest_land(harness: Harness, crm: CRM) -> None:
    items = [deal(n) for n in range(1, 6)]
    items[2] = deal(3, stage="no-such-stage")
    failed: list[tuple[str, PermanentError]] = []
    ids = call_in_batches(
        items, crm.batch_size, crm.upsert_deals, lambda d, exc: failed.append((d.payment_id, exc))
    )
    assert [i is None for i in ids] == [False, False, True, False, False]
    assert [pid for pid, _ in failed] == ["pi_000003"]
    assert harness.count_deals() == 4


@pytest.mark.http
def test_a_refused_note_does_not_duplicate_the_others(harness: Harness, crm: CRM) -> None:
    [deal_id] = crm.upsert_deals([deal(1)])
    notes = [NoteInput(deal_id=deal_id, payment_id="pi_000001", body=f"note {n}") for n in range(4)]
    notes[1] = NoteInput(deal_id="999999999", payment_id="pi_000001", body="orphan")
    failed: list[NoteInput] = []
    ids = call_in_batches(notes, crm.batch_size, crm.add_notes, lambda n, exc: failed.append(n))
    assert ids[1] is None and all(ids[i] for i in (0, 2, 3))
    assert failed == [notes[1]]
    assert sorted(harness.notes_on(deal_id)) == ["note 0", "note 2", "note 3"]  # each exactly once


@pytest.mark.http
def test_over_real_sockets(harness: Harness) -> None:
    harness.build()  # makes the fake
    with serve_app(harness.fake.app) as base_url:
        crm = harness.build(base_url=base_url)
        [contact_id] = crm.upsert_contacts([contact(1)])
        [deal_id] = crm.upsert_deals([deal(1, contact_id=contact_id)])
        crm.add_notes([NoteInput(deal_id=deal_id, payment_id="pi_000001", body="over HTTP")])
        crm.close()
    assert harness.notes_on(deal_id) == ["over HTTP"]


# --- notes carry their key; a lost answer is found, never sent twice -------------------------


def keyed(deal_id: str, n: int = 1, body: str = "Zapłacono 249,00 zł") -> NoteInput:
    return NoteInput(deal_id=deal_id, payment_id=f"pi_{n:06d}", body=body, key=f"crm:note:pi_{n:06d}:paid:0")


def test_find_notes_finds_each_note_by_its_marker_on_its_own_deal(harness: Harness, crm: CRM) -> None:
    first, second = crm.upsert_deals([deal(1), deal(2)])
    plain = NoteInput(deal_id=first, payment_id="pi_000001", body="written by hand, no marker")
    note, refund = keyed(first), replace(keyed(first, body="Zwrot"), key="crm:note:pi_000001:refunded:24900")
    assert crm.find_notes([note]) == [None]  # nothing there yet
    crm.add_notes([plain])
    [made] = crm.add_notes([note])
    found = crm.find_notes([note, refund, replace(note, deal_id=second)])
    assert found == [made, None, None]  # the marker, on that deal, and nothing else
    assert len(harness.notes_on(first)) == 2
    assert any(b.startswith("Zapłacono 249,00 zł") for b in harness.notes_on(first))  # reads as before


def test_find_notes_reads_every_page_of_a_deals_notes(harness: Harness, crm: CRM) -> None:
    [deal_id] = crm.upsert_deals([deal(1)])
    many = [keyed(deal_id, body=f"note {k}") for k in range(harness.notes_page + 5)]
    many = [replace(n, key=f"crm:note:{k}") for k, n in enumerate(many)]
    made = call_in_batches(many, crm.batch_size, crm.add_notes, lambda n, exc: pytest.fail(str(exc)))
    assert crm.find_notes([many[-1], many[0]]) == [made[-1], made[0]]  # the last one is past page one


@pytest.mark.http
@pytest.mark.parametrize("timeout", [True, False], ids=["timeout", "502"])
def test_a_note_whose_answer_was_lost_is_found_not_sent_again(
    harness: Harness, crm: CRM, timeout: bool
) -> None:
    [deal_id] = crm.upsert_deals([deal(1)])
    note = keyed(deal_id)
    harness.lose_create_answer("note", timeout=timeout)
    with pytest.raises(OutcomeUnknownError):  # the seam does not resend an unkeyed create
        crm.add_notes([note])
    assert harness.after_write_faults() == 1 and harness.count_notes() == 1  # the CRM has it
    [found] = crm.find_notes([note])
    assert found is not None and len(harness.notes_on(deal_id)) == 1


# --- unkeyed creates: a lost answer is looked for before anything is created again -----------


RECORDS = {
    "contact": (lambda crm: crm.upsert_contacts([contact(1)]), "count_contacts"),
    "contact-without-email": (lambda crm: crm.upsert_contacts([contact(1, email=False)]), "count_contacts"),
    "deal": (lambda crm: crm.upsert_deals([deal(1), deal(2)]), "count_deals"),
}


@pytest.mark.http
@pytest.mark.parametrize("timeout", [True, False], ids=["timeout", "502"])
@pytest.mark.parametrize("kind", list(RECORDS))
def test_a_create_whose_answer_was_lost_leaves_one_record(
    harness: Harness, crm: CRM, kind: str, timeout: bool
) -> None:
    upsert, count = RECORDS[kind]
    crm.upsert_contacts([contact(9)])  # warm up: tokens, field and pipeline lookups
    before, sent = getattr(harness, count)(), harness.unkeyed_creates_sent(kind)
    harness.lose_create_answer(kind, timeout=timeout)
    try:
        ids = upsert(crm)
    except RetriableError:  # a search that lags: the task's declared retry looks again, later
        ids = upsert(crm)
    assert harness.after_write_faults() == 1  # the vendor wrote, and its answer never came
    assert upsert(crm) == ids  # and a rerun finds the same records
    assert getattr(harness, count)() - before == len(set(ids))  # one record each, no duplicate
    if sent is not None:  # each unkeyed create was sent once: looked for, found, not sent again
        assert harness.unkeyed_creates_sent(kind) == sent + len(set(ids))
