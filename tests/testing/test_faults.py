"""The fakes fail before the write, after it (the answer lost), and at random from a seed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from stripeflow.core.errors import OutcomeUnknownError
from stripeflow.tasks.crm.base import NoteInput
from stripeflow.tasks.crm.hubspot import HubSpotCRM
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.pipedrive import FakePipedrive
from stripeflow.testing.server import serve_app

AUTH = {"authorization": "Bearer pat-fake"}


def deal(payment_id: str) -> dict[str, Any]:
    return {"properties": {"dealname": f"deal {payment_id}", "stripe_payment_id": payment_id}}


def test_a_timeout_after_the_write_leaves_the_created_deal_in_the_fake() -> None:
    fake = FakeHubSpot().ready()
    fake.inject(path=r"/objects/deals$", method="POST", timeout=True)
    with httpx.Client(transport=fake.transport(), base_url="http://hubspot", headers=AUTH) as client:
        client.get("/crm/v3/objects/deals")  # another path: not the injected one
        with pytest.raises(httpx.ReadTimeout):
            client.post("/crm/v3/objects/deals", json=deal("pi_lost"))
        assert fake.deal_by_payment("pi_lost") is not None
        again = client.post("/crm/v3/objects/deals", json=deal("pi_lost"))  # the naive retry
    assert again.status_code == 409  # the unique property caught it; an unkeyed create would not
    assert fake.injected()["timeout_after_write"] == 1
    assert [r.status for r in fake.log] == [200, 0, 409]


def test_a_5xx_after_the_write_answers_the_vendor_error_but_keeps_the_write() -> None:
    fake = FakePipedrive()
    fake.inject(502, after_write=True, path="/persons")
    token = {"api_token": fake.token}
    with httpx.Client(transport=fake.transport(), base_url="http://pipedrive") as client:
        answer = client.post("/api/v2/persons", params=token, json={"name": "Ann"})
        assert answer.status_code == 502
        listed = client.get("/api/v2/persons", params=token).json()
    assert [p["name"] for p in listed["data"]] == ["Ann"]
    assert fake.injected()["5xx_after_write"] == 1


def test_a_fault_before_the_write_writes_nothing() -> None:
    fake = FakeHubSpot().ready()
    fake.inject(503)
    with httpx.Client(transport=fake.transport(), base_url="http://hubspot", headers=AUTH) as client:
        assert client.post("/crm/v3/objects/deals", json=deal("pi_1")).status_code == 503
    assert fake.deal_by_payment("pi_1") is None


def test_notes_lost_after_the_write_are_an_unknown_outcome_and_exist_in_the_crm() -> None:
    fake = FakeHubSpot().ready()
    with httpx.Client(transport=fake.transport(), base_url="http://hubspot", headers=AUTH) as client:
        deal_id = client.post("/crm/v3/objects/deals", json=deal("pi_9")).json()["id"]
    crm = HubSpotCRM(token="pat-fake", base_url="http://hubspot", transport=fake.transport())
    fake.inject(path="/notes/batch/create", timeout=True)
    with pytest.raises(OutcomeUnknownError):
        crm.add_notes([NoteInput(deal_id, "pi_9", "paid")])
    assert fake.notes_of_deal(deal_id) == ["paid"]  # the client must look before it creates again


def test_over_a_socket_the_connection_drops_without_an_answer_after_the_write() -> None:
    fake = FakeHubSpot().ready()
    fake.inject(path="/objects/deals", timeout=True)
    with serve_app(fake.app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=5) as client:
        with pytest.raises(httpx.TransportError) as caught:
            client.post("/crm/v3/objects/deals", json=deal("pi_sock"))
        assert not isinstance(caught.value, httpx.ConnectError)  # it reached the vendor
        assert client.get("/crm/v3/objects/deals/pi_sock?idProperty=stripe_payment_id").status_code == 200


def test_over_a_socket_a_held_answer_outlasts_the_clients_timeout() -> None:
    fake = FakeHubSpot().ready()
    fake.inject(path="/objects/deals", timeout=True, hold=2.0)
    with serve_app(fake.app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/crm/v3/objects/deals", json=deal("pi_slow"))
    assert fake.deal_by_payment("pi_slow") is not None


def run_chaos(seed: int) -> tuple[list[int], FakeHubSpot]:
    fake = FakeHubSpot(limit=10_000).ready()
    fake.chaos(
        rate_429=0.15, rate_5xx=0.1, rate_timeout_after_write=0.05, rate_5xx_after_write=0.05, seed=seed
    )
    statuses = []
    with httpx.Client(transport=fake.transport(), base_url="http://hubspot", headers=AUTH) as client:
        for n in range(400):
            try:
                statuses.append(client.post("/crm/v3/objects/notes", json=_note(n)).status_code)
            except httpx.ReadTimeout:
                statuses.append(0)
    return statuses, fake


def _note(n: int) -> dict[str, Any]:
    return {"properties": {"hs_timestamp": "2026-12-01T00:00:00Z", "hs_note_body": f"n{n}"}}


def test_chaos_is_random_but_repeatable_from_its_seed_with_the_vendors_own_bodies() -> None:
    first, fake = run_chaos(7)
    again, _ = run_chaos(7)
    other, _ = run_chaos(8)
    assert first == again and first != other
    got = fake.injected()
    assert 35 <= got["429"] <= 90 and 20 <= got["5xx"] <= 65
    assert 5 <= got["timeout_after_write"] <= 40 and 5 <= got["5xx_after_write"] <= 40
    # written: every request the handler ran, i.e. all but the faults answered before it
    assert len(fake.objects["notes"]) == 400 - got["429"] - got["5xx"]
    fake.chaos()  # off
    fake.inject(429)
    with httpx.Client(transport=fake.transport(), base_url="http://hubspot", headers=AUTH) as client:
        limited = client.get("/crm/v3/objects/deals")
        assert client.get("/crm/v3/objects/deals").status_code == 200
    assert limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert "x-hubspot-ratelimit-remaining" in limited.headers
