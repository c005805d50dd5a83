"""HubSpot quirks (`tasks/crm/hubspot.py`), each helper on its own, and the fake's own."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from stripeflow.core.errors import PermanentError, RateLimitedError
from stripeflow.tasks.crm import hubspot
from stripeflow.tasks.crm.base import NoteInput
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.vendor import FakeClock
from tests.tasks.crm.harness import contact


def hs429(policy: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        429, json={"status": "error", "policyName": policy, "errorType": "RATE_LIMIT"}, headers=headers
    )


def test_hubspot_rate_limit_wait_reads_the_policy() -> None:
    assert hubspot.rate_limit_wait(hs429("TEN_SECONDLY_ROLLING")) == 10.0
    assert (
        hubspot.rate_limit_wait(
            hs429("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "2000"})
        )
        == 2.0
    )
    assert hubspot.rate_limit_wait(hs429("SECONDLY")) == 1.0
    assert hubspot.rate_limit_wait(hs429("DAILY")) == 3600.0


def test_hubspot_207_raises_with_the_vendor_message() -> None:
    with pytest.raises(PermanentError, match="is not a valid dealstage"):
        hubspot.batch_results(
            {
                "results": [],
                "errors": [{"message": "x is not a valid dealstage", "category": "VALIDATION_ERROR"}],
            },
            "deals",
        )
    assert hubspot.batch_results({"results": [{"id": "1"}]}, "deals") == [{"id": "1"}]


def test_hubspot_timestamps_round_trip_and_notes_are_clipped() -> None:
    assert hubspot.epoch_ms(hubspot.iso_ms(1_700_000_000_123)) == 1_700_000_000_123
    assert hubspot.epoch_ms("1700000000123") == 1_700_000_000_123
    plain_note = NoteInput(deal_id="1", payment_id="pi_1", body="x" * 70_000)
    assert len(hubspot.clip_note(plain_note)) == hubspot.NOTE_MAX
    keyed = replace(plain_note, key="hubspot:note:pi_1:succeeded:0")
    clipped = hubspot.clip_note(keyed)
    assert len(clipped) == hubspot.NOTE_MAX and clipped.endswith(f"…<br>{keyed.marker}")  # marker kept
    assert hubspot.clip_note(replace(keyed, body="Zapłacono")) == f"Zapłacono<br>{keyed.marker}"


def test_hubspot_daily_limit_escapes_to_the_task_after_one_call() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, daily=0).ready()
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    with pytest.raises(RateLimitedError) as caught:
        crm.upsert_contacts([contact(1)])
    assert caught.value.wait == 3600.0 and len(fake.log) == 1


def test_hubspot_contacts_without_email_are_searched_then_created_before_setup_keys_them() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready(contact_key=False)
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    first = crm.upsert_contacts([contact(1, email=False), contact(2, email=False)])
    assert [r.path.rsplit("/", 2)[-2:] for r in fake.log] == [
        ["contacts", "stripeflow_contact_key"],  # is there a key yet? (looked up once)
        ["contacts", "search"],
        ["batch", "create"],
    ]
    assert crm.upsert_contacts([contact(2, email=False), contact(1, email=False)]) == first[::-1]
    # what it made is remembered, never searched for again (the search lags fresh records)
    assert fake.calls("/search") == 1 and fake.calls("/batch/create") == 1


def test_hubspot_a_second_deal_with_the_same_payment_id_is_refused_by_the_fake() -> None:
    fake = FakeHubSpot().ready()
    client = httpx.Client(
        transport=fake.transport(), base_url="http://h", headers={"Authorization": "Bearer pat-fake"}
    )
    body = {"properties": {"dealname": "a", "stripe_payment_id": "pi_1"}}
    assert client.post("/crm/v3/objects/deals", json=body).status_code == 201
    second = client.post("/crm/v3/objects/deals", json=body)
    assert second.status_code == 409 and second.json()["category"] == "CONFLICT"


def test_hubspot_fake_sends_rate_limit_headers_and_the_429_body() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, limit=2)
    client = httpx.Client(
        transport=fake.transport(), base_url="http://h", headers={"Authorization": "Bearer pat-fake"}
    )
    first = client.get("/crm/v3/objects/deals")
    assert (
        first.headers["X-HubSpot-RateLimit-Max"] == "2"
        and first.headers["X-HubSpot-RateLimit-Remaining"] == "1"
    )
    client.get("/crm/v3/objects/deals")
    third = client.get("/crm/v3/objects/deals")
    assert third.status_code == 429 and third.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    clock.sleep(10)
    assert client.get("/crm/v3/objects/deals").status_code == 200


def test_hubspot_contacts_without_email_are_upserted_on_the_contact_key() -> None:
    """With the unique key setup() makes: one keyed batch/upsert, no search (which lags) and no
    unkeyed create; the same customers again are the same contacts, and each contact key is
    the one that customer goes by."""
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    assert crm.keys_contact(None) and crm.keys_contact("a@example.pl")
    first = crm.upsert_contacts([contact(1, email=False), contact(2, email=False), contact(3)])
    again = crm.upsert_contacts([contact(2, email=False), contact(1, email=False)])
    assert again == [first[1], first[0]]
    assert fake.calls("/search") == 0 and fake.calls("/batch/create") == 0
    assert len(fake.objects["contacts"]) == 3
    keys = {o["properties"].get(hubspot.CONTACT_KEY) for o in fake.objects["contacts"].values()}
    assert keys == {contact(1, email=False).customer_id, contact(2, email=False).customer_id, None}


def test_hubspot_setup_keys_the_email_less_contacts_made_before_it() -> None:
    """An account synced by an older version: its e-mail-less contacts were searched for and
    created. setup() makes the key and gives it to the oldest contact of each customer, so the
    keyed upsert afterwards finds them rather than making a second contact."""
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready(contact_key=False)
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    assert not crm.keys_contact(None)
    before = crm.upsert_contacts([contact(1, email=False), contact(2, email=False)])
    clock.sleep(fake.search_lag)  # setup finds them by search, which shows them only now
    report = crm.setup()
    assert "stripeflow_contact_key" in " ".join(a[0] for a in report.actions)
    assert ("2 e-mail-less contact(s) made before the key", "created", "keyed") in report.actions
    assert crm.keys_contact(None)
    assert crm.upsert_contacts([contact(2, email=False), contact(1, email=False)]) == before[::-1]
    assert len(fake.objects["contacts"]) == 2 and fake.calls("/batch/create") == 1
    clock.sleep(fake.search_lag)  # and shows them keyed only now
    assert (
        crm.setup().actions.count(("2 e-mail-less contact(s) made before the key", "created", "keyed")) == 0
    )


def test_hubspot_a_failed_look_for_the_contact_key_counts_as_missing() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    fake.inject(500, count=6, path="properties")  # every attempt of the look
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    assert not crm.keys_contact(None)  # the customer is leased meanwhile: the safe side
    assert crm.keys_contact(None)  # looked for again, now found
