"""The bridge with several Stripe accounts: a route each, each checked against its own secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from stripeflow.core.config import Settings
from stripeflow.core.ledger import InboxRow, Ledger
from stripeflow.testing.stripe_events import StripeWorld, sign
from tests.bridge.conftest import run_bridge

SECRETS = {"sklep": "whsec_sklep", "saas": "whsec_saas"}


@pytest.fixture
def accounts_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "home": tmp_path / "home",
            "accounts": [
                {"name": "sklep", "stripe": {"webhook_secrets": [SECRETS["sklep"]]}},
                {"name": "saas", "stripe": {"webhook_secrets": [SECRETS["saas"]]}},
                {"name": "klient-a", "connect_account": "acct_1Klient", "platform": "sklep"},
                {"name": "bez-sekretu"},
            ],
        }
    )


@pytest.fixture
def client(accounts_settings: Settings, tmp_path: Path) -> Iterator[tuple[httpx.Client, Ledger]]:
    ledger = Ledger(accounts_settings.ledger_url)
    ledger.migrate()
    with run_bridge(accounts_settings, ledger) as bridge:
        yield bridge.client, ledger
    ledger.dispose()


def event(world: StripeWorld, **extra: object) -> str:
    pi, _ = world.payment_intent(24900, "pln", world.customer("anna@example.pl", "Anna"))
    return json.dumps({**world.event("payment_intent.succeeded", pi), **extra})


def post(client: httpx.Client, path: str, body: str, secret: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)}
    return client.post(path, content=body.encode(), headers=headers)


def stored(ledger: Ledger) -> dict[str, str]:
    with ledger.session() as s:
        return dict(s.execute(select(InboxRow.event_id, InboxRow.account)).tuples().all())


def test_each_account_has_its_route_and_its_own_secrets(
    client: tuple[httpx.Client, Ledger], world: StripeWorld
) -> None:
    http, ledger = client
    body = event(world)
    # signed with account A's secret, posted to account B's route: refused, nothing stored
    crossed = post(http, "/webhooks/stripe/saas", body, SECRETS["sklep"])
    assert crossed.status_code == 400 and crossed.json()["error"]["code"] == "bad_signature"
    assert stored(ledger) == {}
    good = post(http, "/webhooks/stripe/sklep", body, SECRETS["sklep"])
    assert good.status_code == 200
    other = event(world)
    assert post(http, "/webhooks/stripe/saas", other, SECRETS["saas"]).status_code == 200
    assert stored(ledger) == {json.loads(body)["id"]: "sklep", json.loads(other)["id"]: "saas"}


def test_a_route_without_an_account_says_which_to_use(
    client: tuple[httpx.Client, Ledger], world: StripeWorld
) -> None:
    http, ledger = client
    body = event(world)
    unknown = post(http, "/webhooks/stripe/nope", body, SECRETS["sklep"])
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_account"
    bare = post(http, "/webhooks/stripe", body, SECRETS["sklep"])  # several accounts, no default
    assert bare.status_code == 404 and "/webhooks/stripe/<account>" in bare.json()["error"]["message"]
    unset = post(http, "/webhooks/stripe/bez-sekretu", body, SECRETS["sklep"])
    assert unset.status_code == 503
    assert "STRIPE_WEBHOOK_SECRET_BEZ_SEKRETU" in unset.json()["error"]["message"]
    assert stored(ledger) == {}


def test_a_connect_event_is_its_connected_accounts(
    client: tuple[httpx.Client, Ledger], world: StripeWorld
) -> None:
    http, ledger = client
    connected = event(world, account="acct_1Klient")
    unknown = event(world, account="acct_1Someone")
    for body in (connected, unknown):
        assert post(http, "/webhooks/stripe/sklep", body, SECRETS["sklep"]).status_code == 200
    assert stored(ledger) == {json.loads(connected)["id"]: "klient-a", json.loads(unknown)["id"]: "sklep"}
    hostile = post(http, "/webhooks/stripe/sklep", event(world, account=["acct_1"]), SECRETS["sklep"])
    assert hostile.status_code == 400 and hostile.json()["error"]["code"] == "malformed_event"
    assert "account is not a Stripe account id" in hostile.json()["error"]["message"]


def test_a_single_account_setup_keeps_its_route(
    settings: Settings, ledger: Ledger, world: StripeWorld
) -> None:
    with run_bridge(settings, ledger) as bridge:
        body = event(world)
        assert post(bridge.client, "/webhooks/stripe", body, "whsec_test_primary").status_code == 200
        assert (
            post(bridge.client, "/webhooks/stripe/default", event(world), "whsec_test_primary").status_code
            == 200
        )
    assert set(stored(ledger).values()) == {"default"}
