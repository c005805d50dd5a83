"""The whole path on real components: signed webhooks -> the bridge under uvicorn -> the ledger ->
the dispatcher -> a real Prefect server -> the flow -> the Stripe API fake for enrichment -> the CRM.
Then Prefect goes away (its connection cut) and comes back: nothing acknowledged is lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from stripeflow.bridge.app import create_app
from stripeflow.core.config import Settings
from stripeflow.deployments.dispatcher import Dispatcher
from stripeflow.runtime import Runtime, build_runtime, set_runtime
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_api import FakeStripe
from stripeflow.testing.stripe_events import sign
from stripeflow.testing.tcp_proxy import TcpProxy
from tests.waiting import wait_for

SECRET = "whsec_test_e2e"


@pytest.fixture
def stripe_fake() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    with serve_app(fake.app) as url:
        yield fake, url


@pytest.fixture
def proxy(prefect_server: str) -> Iterator[TcpProxy]:
    target = urlparse(prefect_server)
    p = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)
    yield p
    p.down()


@pytest.fixture
def system(tmp_path, stripe_fake, proxy) -> Iterator[tuple[Runtime, httpx.Client, Dispatcher]]:  # type: ignore[no-untyped-def]
    _, stripe_url = stripe_fake
    settings = Settings(
        home=tmp_path / "home",
        stripe={"webhook_secrets": [SECRET], "api_key": "sk_test_e2e", "api_base": stripe_url},
        dispatcher={"poll_interval": 0.05},
    )
    api = f"{proxy.url}/api"
    with temporary_settings({PREFECT_API_URL: api}):
        rt = build_runtime(settings)
        set_runtime(rt)
        dispatcher = Dispatcher(rt, max_backoff=0.5)
        with (
            serve_app(create_app(settings, rt.ledger, api)) as bridge_url,
            httpx.Client(base_url=bridge_url, timeout=30) as client,
        ):
            dispatcher.start()
            yield rt, client, dispatcher
            dispatcher.stop()
        set_runtime(None)
        rt.close()


def send(client: httpx.Client, event: dict) -> httpx.Response:
    body = json.dumps(event)
    return client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, SECRET)})


def test_signed_webhooks_become_enriched_deals(system, stripe_fake) -> None:  # type: ignore[no-untyped-def]
    rt, client, _ = system
    fake, _ = stripe_fake
    world = fake.world
    crm = rt.crms[0]
    assert isinstance(crm, LocalCRM)
    sophie = world.customer("sophie@example.fr", "Sophie Martin")
    pi, _ = world.payment_intent(8900, "eur", sophie, product="Konsultacja online", wallet="apple_pay")
    yuki = world.customer("yuki@example.jp", "Yuki Tanaka")
    _, ch = world.payment_intent(5000, "jpy", yuki, product="E-book")
    success = world.event("payment_intent.succeeded", {**pi, "receipt_email": None})
    answers = [
        send(client, success),
        send(client, success),
        send(client, world.event("charge.succeeded", ch)),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    wait_for(lambda: len(crm.list_deals()) == 2 and rt.ledger.inbox_counts() == {"done": 2}, what="two deals")
    deals = {d.payment_id: d for d in crm.list_deals()}
    assert deals[pi["id"]].contact_email == "sophie@example.fr"  # enriched from the Stripe fake
    assert deals[pi["id"]].title == "Płatność Stripe – Konsultacja online, 89,00\u00a0€"
    assert deals[ch["payment_intent"]].title == "Płatność Stripe – E-book, 5\u00a0000\u00a0JPY"
    assert ("GET", f"/v1/charges/{pi['latest_charge']}") in fake.requests


def test_prefect_unreachable_then_back_loses_nothing(system, stripe_fake, proxy) -> None:  # type: ignore[no-untyped-def]
    rt, client, dispatcher = system
    world = stripe_fake[0].world
    crm = rt.crms[0]
    proxy.down()
    events = []
    for i in range(3):
        cus = world.customer(f"klient{i}@example.pl", f"Klient {i}")
        pi, ch = world.payment_intent(10000 + i, "pln", cus, method="blik")
        events.append(world.event("payment_intent.succeeded", {**pi, "latest_charge": ch, "customer": cus}))
    assert [send(client, e).status_code for e in events] == [
        200,
        200,
        200,
    ]  # acknowledged while Prefect is down
    wait_for(lambda: dispatcher.failures >= 2, what="the dispatcher to find Prefect unreachable")
    assert rt.ledger.inbox_counts() == {"pending": 3} and crm.list_deals() == []
    assert client.get("/healthz").json()["prefect"]["ok"] is False

    proxy.up()
    wait_for(lambda: len(crm.list_deals()) == 3, what="the three deals after Prefect came back")
    wait_for(lambda: rt.ledger.inbox_counts() == {"done": 3}, what="the events to be done")
    assert all(len(crm.notes_for(d.payment_id)) == 1 for d in crm.list_deals())
