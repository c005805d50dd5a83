"""Pipedrive as it answers since 2026-08: v2 pipelines and stages, the token budget header, the
Cloudflare block after repeated 429s, and unkeyed creates whose answer is lost after the write."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from stripeflow.core.config import STAGE_NAMES
from stripeflow.core.errors import AuthError, RetriableError
from stripeflow.tasks.crm.common import LAG_WAIT
from stripeflow.tasks.crm.pipedrive import CLOUDFLARE_WAIT, DAILY_WAIT, PipedriveCRM
from stripeflow.testing.pipedrive import FakePipedrive
from stripeflow.testing.vendor import FakeClock
from tests.tasks.crm.harness import contact, deal

TOKEN = {"x-api-token": "pd-fake"}


def adapter(fake: FakePipedrive, clock: FakeClock, **kw: Any) -> PipedriveCRM:
    return PipedriveCRM(api_token="pd-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock, **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- v1 pipelines and stages are gone --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/pipelines", "/v1/stages", "/v1/stages/3"])
def test_the_fake_answers_the_removed_v1_endpoints_with_410(path: str) -> None:
    fake = FakePipedrive()
    with httpx.Client(transport=fake.transport(), base_url="http://pd", headers=TOKEN) as client:
        answer = client.get(path)
    assert answer.status_code == 410
    assert answer.json()["success"] is False and "/api/v2/" in answer.json()["error_info"]


def test_setup_makes_the_pipeline_and_stages_through_v2_and_deals_land(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock)
    report = adapter(fake, clock).setup()
    assert ("pipeline 'Stripe'", "created") in [(a[0], a[1]) for a in report.actions]
    stripe = next(p["id"] for p in fake.pipelines.values() if p["name"] == "Stripe")
    names = {s["name"] for s in fake.stages.values() if s["pipeline_id"] == stripe}
    assert set(STAGE_NAMES["pl"].values()) <= names
    crm = adapter(fake, clock)
    [deal_id] = crm.upsert_deals([deal(1)])
    assert fake.stage_name(fake.deals[int(deal_id)]["stage_id"]) == STAGE_NAMES["pl"]["paid"]
    assert fake.calls("/v1/pipelines") == fake.calls("/v1/stages") == 0
    assert 410 not in fake.statuses()


def test_the_pipeline_is_found_on_a_later_cursor_page(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    stripe = fake.pipelines.pop(2)
    for i in range(3, 603):  # 600 other pipelines first: the v2 list gives 500 a page
        fake.pipelines[i] = {"id": i, "name": f"Sales {i}", "order_nr": i, "is_deleted": False}
    fake.pipelines[700] = {**stripe, "id": 700}
    for s in fake.stages.values():
        if s["pipeline_id"] == 2:
            s["pipeline_id"] = 700
    crm = adapter(fake, clock)
    [deal_id] = crm.upsert_deals([deal(1)])
    assert fake.deals[int(deal_id)]["pipeline_id"] == 700
    assert fake.calls("/api/v2/pipelines") == 2


# -- the token budget and Cloudflare ----------------------------------------------------------------


def test_every_answer_reports_the_daily_token_budget() -> None:
    fake = FakePipedrive(daily_tokens=1000)
    with httpx.Client(transport=fake.transport(), base_url="http://pd", headers=TOKEN) as client:
        first = client.get("/api/v2/deals")
        second = client.get("/api/v2/deals/1")
    assert first.headers["x-daily-ratelimit-token-remaining"] == "980"  # a list costs 20
    assert second.headers["x-daily-ratelimit-token-remaining"] == "978"  # a get by id 2
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(first.headers)
    assert "x-daily-requests-left" not in first.headers  # the old POST/PUT-only header


def test_a_spent_token_budget_waits_for_the_next_day_without_hammering(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock, daily_tokens=300, cloudflare_after=5).ready()
    crm = adapter(fake, clock)
    with pytest.raises(RetriableError) as caught:
        crm.upsert_deals([deal(n) for n in range(1, 20)])
    assert caught.value.status == 429 and caught.value.wait == DAILY_WAIT
    assert fake.statuses().count(429) == 1  # one answer said "budget spent": nothing sent after it
    assert 403 not in fake.statuses()


def test_the_fake_blocks_a_client_that_keeps_sending_into_429s(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock, burst=1, cloudflare_after=3, cloudflare_window=60, cloudflare_block=300)
    with httpx.Client(transport=fake.transport(), base_url="http://pd", headers=TOKEN) as client:
        statuses = [client.get("/api/v2/deals").status_code for _ in range(5)]
        page = client.get("/api/v2/deals")
        clock.sleep(301)
        after = client.get("/api/v2/deals")
    assert statuses == [200, 429, 429, 429, 403]
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert "Cloudflare" in page.text and after.status_code == 200


def test_a_cloudflare_403_is_a_long_wait_not_a_refused_token(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock, cloudflare_after=3).ready()
    fake.inject(429, count=3)  # someone else's client kept sending into 429s with this token
    crm = adapter(fake, clock)
    with pytest.raises(RetriableError) as caught:
        crm.upsert_deals([deal(1)])
    assert not isinstance(caught.value, AuthError)
    assert caught.value.status == 403 and caught.value.wait == CLOUDFLARE_WAIT
    assert "Cloudflare" in caught.value.message
    assert fake.statuses().count(403) == 1  # and it stopped there
    report = crm.check()
    assert report.problems and "API token refused" not in report.problems[0]
    assert "Cloudflare" in report.problems[0]


def test_a_busy_client_backs_off_on_429s_and_never_trips_the_block(clock: FakeClock) -> None:
    # the block was configured for 20/2 s but the account allows 5: every burst meets 429s
    fake = FakePipedrive(clock=clock, burst=5, search_burst=5, cloudflare_after=8).ready()
    crm = adapter(fake, clock)
    ids = crm.upsert_deals([deal(n) for n in range(1, 41)])
    assert len(set(ids)) == 40 and len(fake.deals) == 40
    assert 429 in fake.statuses() and 403 not in fake.statuses()
    assert fake.cloudflare.blocks == 0


# -- unkeyed creates whose answer is lost after the write ---------------------------------------------


@pytest.mark.parametrize("timeout", [True, False], ids=["no-answer", "502"])
@pytest.mark.parametrize("lag", [0.0, LAG_WAIT / 2], ids=["index-current", "index-lagging"])
def test_a_lost_person_create_mid_batch_leaves_one_person_each(
    clock: FakeClock, timeout: bool, lag: float
) -> None:
    fake = FakePipedrive(clock=clock, search_lag=lag).ready()
    crm = adapter(fake, clock)
    contacts = [contact(n, email=n % 2 == 0) for n in range(1, 6)]  # with and without e-mail
    fake.inject(502, path=r"/api/v2/persons$", method="POST", after_write=True, timeout=timeout)
    fake.inject(502, path=r"/api/v2/persons$", method="POST", after_write=True, timeout=timeout)
    ids = crm.upsert_contacts(contacts)
    assert len(fake.persons) == 5 and sorted(map(int, ids)) == sorted(fake.persons)
    assert fake.calls("/api/v2/persons", "POST") == 5  # no create was sent twice


@pytest.mark.parametrize("timeout", [True, False], ids=["no-answer", "502"])
@pytest.mark.parametrize("lag", [0.0, LAG_WAIT / 2], ids=["index-current", "index-lagging"])
def test_a_lost_deal_create_mid_batch_leaves_one_deal_each(
    clock: FakeClock, timeout: bool, lag: float
) -> None:
    fake = FakePipedrive(clock=clock, search_lag=lag).ready()
    crm = adapter(fake, clock)
    fake.inject(502, path=r"/api/v2/deals$", method="POST", after_write=True, timeout=timeout)
    crm.upsert_deals([deal(1), deal(2)])
    fake.inject(502, path=r"/api/v2/deals$", method="POST", after_write=True, timeout=timeout)
    ids = crm.upsert_deals([deal(n) for n in range(1, 6)])
    assert len(fake.deals) == 5 and sorted(map(int, ids)) == sorted(fake.deals)
    assert fake.calls("/api/v2/deals", "POST") == 5


@pytest.mark.parametrize("kind", ["person", "person-without-email", "deal"])
def test_a_lost_create_is_found_even_when_search_lags_past_every_look(clock: FakeClock, kind: str) -> None:
    fake = FakePipedrive(clock=clock, search_lag=3600).ready()  # search never sees it in time
    crm = adapter(fake, clock)
    path = r"/api/v2/deals$" if kind == "deal" else r"/api/v2/persons$"
    fake.inject(502, path=path, method="POST", after_write=True)
    if kind == "deal":
        [got] = crm.upsert_deals([deal(1)])
        table = fake.deals
    else:
        [got] = crm.upsert_contacts([contact(1, email=kind == "person")])
        table = fake.persons
    assert list(table) == [int(got)]  # found in the newest records, never created twice
    assert fake.calls(path.strip("$"), "POST") == 1


def test_over_a_socket_the_cloudflare_page_is_still_a_wait() -> None:
    from stripeflow.testing.server import serve_app

    fake = FakePipedrive(cloudflare_after=2).ready()
    fake.inject(429, count=2)
    with serve_app(fake.app) as url:
        crm = PipedriveCRM(api_token="pd-fake", base_url=url, sleep=lambda s: None)
        with pytest.raises(RetriableError) as caught:
            crm.upsert_deals([deal(1)])
        crm.close()
    assert caught.value.status == 403 and not isinstance(caught.value, AuthError)
