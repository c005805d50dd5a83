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


def test_hubspot_contacts_without_email_are_searched_then_created() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    first = crm.upsert_contacts([contact(1, email=False), contact(2, email=False)])
    assert [r.path.rsplit("/", 2)[-2:] for r in fake.log] == [["contacts", "search"], ["batch", "create"]]
    assert crm.upsert_contacts([contact(2, email=False), contact(1, email=False)]) == first[::-1]
    assert fake.calls("/search") == 2 and fake.calls("/batch/create") == 1


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
