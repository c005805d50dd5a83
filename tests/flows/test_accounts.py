"""Two Stripe accounts of two companies in one installation: look-alike payments (the same
customer e-mail, the same amount) each land with their own company and targets, none crossing."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from sqlalchemy import select

from stripeflow.bridge.app import parse_event
from stripeflow.core.config import Settings
from stripeflow.core.ledger import EffectRow, LinkRow, PaymentRow
from stripeflow.deployments.dispatcher import Dispatcher
from stripeflow.flows.replay import replay
from stripeflow.runtime import Runtime, build_runtime, set_runtime
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_api import FakeStripe
from stripeflow.testing.stripe_events import StripeWorld
from tests.flows.conftest import drain


@pytest.fixture
def two_companies(prefect_server: str, tmp_path: Path) -> Iterator[Runtime]:
    home = tmp_path / "home"
    settings = Settings.model_validate(
        {
            "home": home,
            "accounts": [
                {
                    "name": "sklep",
                    "company": {"name": "Sklep Żółw sp. z o.o.", "nip": "5260001246"},
                    "crm": [{"type": "local", "options": {"path": str(home / "sklep-crm.db")}}],
                },
                {
                    "name": "saas",
                    "language": "en",
                    "company": {"name": "Jan Kowalski Software", "nip": "7251801126"},
                    "crm": [{"type": "local", "options": {"path": str(home / "saas-crm.db")}}],
                },
            ],
        }
    )
    rt = build_runtime(settings)
    set_runtime(rt)
    yield rt
    set_runtime(None)
    rt.close()


def deliver(rt: Runtime, account: str, *events: dict[str, Any]) -> list[str]:
    """Store events as the bridge does for `/webhooks/stripe/<account>`."""
    incoming = [replace(parse_event(e, json.dumps(e)), account=account) for e in events]
    rt.ledger.store_events(incoming)
    return [e.event_id for e in incoming]


def look_alike(world: StripeWorld) -> tuple[dict[str, Any], dict[str, Any]]:
    pi, _ = world.payment_intent(
        24900, "pln", world.customer("anna@example.pl", "Anna Nowak"), product="Pakiet"
    )
    return world.event("payment_intent.succeeded", {**pi, "receipt_email": "anna@example.pl"}), pi


def crm_of(rt: Runtime, account: str) -> LocalCRM:
    (crm,) = rt.for_account(account).crms
    assert isinstance(crm, LocalCRM)
    return crm


def test_look_alike_payments_of_two_accounts_land_each_with_its_own_company_and_crm(
    two_companies: Runtime, world: StripeWorld
) -> None:
    rt = two_companies
    sklep_event, sklep_pi = look_alike(world)
    saas_event, saas_pi = look_alike(world)
    deliver(rt, "sklep", sklep_event)
    deliver(rt, "saas", saas_event)
    assert drain(Dispatcher(rt)) == 2  # a run for each account
    assert [d.payment_id for d in crm_of(rt, "sklep").list_deals()] == [sklep_pi["id"]]
    assert [d.payment_id for d in crm_of(rt, "saas").list_deals()] == [saas_pi["id"]]
    (sklep_note,) = crm_of(rt, "sklep").notes_for(sklep_pi["id"])
    (saas_note,) = crm_of(rt, "saas").notes_for(saas_pi["id"])
    assert sklep_note.startswith("Płatność zrealizowana: 249,00") and saas_note.startswith(
        "Payment succeeded: "
    )
    with rt.ledger.session() as s:
        owners = dict(s.execute(select(PaymentRow.payment_id, PaymentRow.account)).tuples().all())
        keys = set(s.scalars(select(EffectRow.key)))
    assert owners == {sklep_pi["id"]: "sklep", saas_pi["id"]: "saas"}
    assert {k.split(":")[0] for k in keys} >= {"sklep/local", "saas/local"}  # each CRM its own name
    with rt.ledger.session() as s:
        effect_accounts = dict(s.execute(select(EffectRow.key, EffectRow.account)).tuples().all())
        link_targets = set(s.execute(select(LinkRow.target, LinkRow.account)).tuples().all())
    assert {a for k, a in effect_accounts.items() if k.startswith("saas/")} == {"saas"}
    assert {a for k, a in effect_accounts.items() if sklep_pi["id"] in k} == {"sklep"}  # e-mails too
    assert link_targets == {("sklep/local", "sklep"), ("saas/local", "saas")}  # one contact link each
    # each customer e-mail in its account's language, signed by its own company
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in (rt.settings.home / "outbox").glob("*.eml")
    ]
    by_payment = {}
    for m in mails:
        text = m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        by_payment[sklep_pi["id"] if sklep_pi["id"] in text else saas_pi["id"]] = (str(m["Subject"]), text)
    assert by_payment[sklep_pi["id"]][0].startswith("Potwierdzenie płatności")
    assert (
        "Sklep Żółw sp. z o.o." in by_payment[sklep_pi["id"]][1]
        and "Kowalski" not in by_payment[sklep_pi["id"]][1]
    )
    assert by_payment[saas_pi["id"]][0].startswith("Payment confirmation")
    assert (
        "Jan Kowalski Software" in by_payment[saas_pi["id"]][1] and "Żółw" not in by_payment[saas_pi["id"]][1]
    )
    # the account is in each run's name and tags in the Prefect UI
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    tagged = {r.name: set(r.tags) for r in runs}
    assert any(n.startswith(f"saas · {saas_pi['id']}") and "account:saas" in t for n, t in tagged.items())
    assert any(n.startswith(f"sklep · {sklep_pi['id']}") and "account:sklep" in t for n, t in tagged.items())


def test_a_replay_runs_each_accounts_events_with_that_account(
    two_companies: Runtime, world: StripeWorld
) -> None:
    rt = two_companies
    sklep_event, sklep_pi = look_alike(world)
    saas_event, saas_pi = look_alike(world)
    ids = deliver(rt, "sklep", sklep_event) + deliver(rt, "saas", saas_event)
    replay(event_ids=ids)
    assert [d.payment_id for d in crm_of(rt, "sklep").list_deals()] == [sklep_pi["id"]]
    assert [d.payment_id for d in crm_of(rt, "saas").list_deals()] == [saas_pi["id"]]
    assert rt.ledger.inbox_counts("sklep") == {"done": 1} and rt.ledger.inbox_counts("saas") == {"done": 1}


def test_each_account_is_enriched_with_its_own_key(prefect_server: str, tmp_path: Path) -> None:
    """A PaymentIntent event names its charge by id: the lookup goes with the key of the account
    the event came to, and a connected account's with its platform's key and Stripe-Account."""
    platform, connected = StripeWorld(), StripeWorld()
    fake = FakeStripe(platform, rate_per_second=1000, connected={"acct_1Klient": connected})
    with serve_app(fake.app) as url:
        settings = Settings.model_validate(
            {
                "home": tmp_path / "home",
                "accounts": [
                    {"name": "sklep", "stripe": {"api_key": "sk_test_aaaa", "api_base": url}},
                    {"name": "saas", "stripe": {"api_key": "sk_test_bbbb", "api_base": url}},
                    {"name": "klient", "connect_account": "acct_1Klient", "platform": "sklep"},
                ],
            }
        )
        rt = build_runtime(settings)
        set_runtime(rt)
        try:
            pis = {}
            for account, world in (("sklep", platform), ("saas", platform), ("klient", connected)):
                pi, ch = world.payment_intent(24900, "pln", world.customer("anna@example.pl"), method="blik")
                deliver(rt, account, world.event("payment_intent.succeeded", {**pi, "receipt_email": None}))
                pis[account] = (pi["id"], ch["id"])
            assert drain(Dispatcher(rt)) == 3
        finally:
            set_runtime(None)
            rt.close()
    charge_calls = {
        path.rsplit("/", 1)[-1]: (key, acct) for path, key, acct in fake.callers if "/charges/" in path
    }
    assert charge_calls[pis["sklep"][1]] == ("aaaa", None)
    assert charge_calls[pis["saas"][1]] == ("bbbb", None)
    assert charge_calls[pis["klient"][1]] == ("aaaa", "acct_1Klient")
    crm = LocalCRM(tmp_path / "home" / "crm.db")  # every account into the shared local CRM
    try:
        for pid, _ in pis.values():  # the method came from the charge each account's key read
            assert [n.endswith("(BLIK).") for n in crm.notes_for(pid)] == [True]
    finally:
        crm.close()
