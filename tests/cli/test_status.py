"""`stripeflow status` (text and --json) and `stripeflow crm deals`: which Stripe enrichment is
missing, and the demo's data while the demo is what `stripeflow run` runs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from stripeflow.cli.main import app
from stripeflow.core.config import load_settings
from stripeflow.core.enrichment import GAPS
from stripeflow.core.ledger import IncomingEvent, Ledger
from stripeflow.demo import record_run
from stripeflow.launcher import Launcher, load_user_settings, plan_run
from stripeflow.tasks.crm.base import DealInput
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.tasks.stripe.normalise import normalise
from stripeflow.testing.stripe_events import StripeWorld

runner = CliRunner()


def status_json(env: dict[str, str] | None = None) -> dict[str, Any]:
    result = runner.invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def store(home: Path, world: StripeWorld, n: int) -> None:
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}")
    ledger.migrate()
    for _ in range(n):
        event = world.event("customer.created", world.customer("a@example.pl"))
        ledger.store_events(
            [
                IncomingEvent(
                    event["id"],
                    event["type"],
                    event["data"]["object"]["id"],
                    event["created"],
                    False,
                    json.dumps(event),
                )
            ]
        )
    ledger.dispose()


def test_status_json_without_an_api_key_lists_what_is_missing(cwd: Path, world: StripeWorld) -> None:
    (cwd / ".stripeflow").mkdir()
    store(cwd / ".stripeflow", world, 2)
    report = status_json()
    assert report["demo"] is False and report["home"] == ".stripeflow"
    assert report["inbox"] == {"pending": 2} and report["dead_letters"] == [] and report["crm"] == ["local"]
    assert report["stripe"] == {"api_key": False, "missing": [str(g) for g in GAPS]}


def test_status_json_with_an_api_key_misses_nothing_and_never_shows_the_key(cwd: Path) -> None:
    result = runner.invoke(app, ["status", "--json"], env={"STRIPE_API_KEY": "sk_test_hidden_key"})
    assert result.exit_code == 0 and "sk_test_hidden_key" not in result.stdout
    assert json.loads(result.stdout)["stripe"] == {"api_key": True, "missing": []}


def test_status_text_says_what_an_api_key_would_add(cwd: Path) -> None:
    result = runner.invoke(app, ["status"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "Stripe API: no key (STRIPE_API_KEY or a [stripe] block), only what" in result.stdout
    for gap in GAPS:
        assert gap.what in result.stdout
    keyed = runner.invoke(app, ["status"], env={"STRIPE_API_KEY": "sk_test_x", "COLUMNS": "300"})
    assert "Stripe API: key set (https://api.stripe.com)" in keyed.stdout
    assert not any(gap.what in keyed.stdout for gap in GAPS)


def test_status_names_a_stripe_block_it_cannot_load(cwd: Path, prefect_server: str) -> None:
    (cwd / "stripeflow.toml").write_text('[stripe]\nblock = "missing-stripe-block"\n', encoding="utf-8")
    report = status_json({"PREFECT_API_URL": prefect_server})
    assert report["stripe"]["api_key"] is None
    assert "Stripe block 'missing-stripe-block' could not be loaded" in report["stripe"]["error"]


def demo_is_running(cwd: Path) -> Path:
    """What `stripeflow run` leaves behind when it starts the demo: its config and the run record."""
    launcher = Launcher(environ={})
    plan = plan_run(load_user_settings({}), launcher.env())
    record_run(launcher.home, "demo", plan.config, launcher.prefect_api_url)
    return plan.data_home


def test_status_and_deals_show_the_demos_data_while_the_demo_runs(cwd: Path, world: StripeWorld) -> None:
    (cwd / ".stripeflow").mkdir()
    store(cwd / ".stripeflow", world, 1)  # the user's own ledger, which the demo must not show
    demo_home = demo_is_running(cwd)
    store(demo_home, world, 3)
    settings = load_settings(demo_home / "stripeflow.toml", {})
    payment = normalise(world.event("charge.succeeded", world.charge(24900, "pln", email="anna@example.pl")))
    assert payment is not None
    crm = LocalCRM.from_target(settings.crm[0], settings.home)
    crm.upsert_deals(
        [
            DealInput(
                payment.payment_id,
                "Płatność demo",
                payment.amount,
                payment.refunded_amount,
                payment.currency,
                "paid",
                None,
                payment,
            )
        ]
    )
    crm.close()

    report = status_json()
    assert report["demo"] is True and report["home"] == str(demo_home)
    assert report["inbox"] == {"pending": 3}
    assert report["stripe"]["api_key"] is True  # the demo's Stripe fake answers the lookups
    assert report["configured_stripe"] == {"api_key": False, "missing": [str(g) for g in GAPS]}
    text = runner.invoke(app, ["status"], env={"COLUMNS": "300"}).stdout
    assert "Demo" in text and str(demo_home) in text and "the demo's Stripe fake" in text
    assert "Your settings: no Stripe API key; live (STRIPE_API_KEY" in text
    assert all(gap.what in text for gap in GAPS)

    deals = runner.invoke(app, ["crm", "deals"], env={"COLUMNS": "300"})
    assert deals.exit_code == 0, deals.output
    assert payment.payment_id in deals.stdout and "249,00" in deals.stdout
    assert str(demo_home / "crm.db") in deals.stdout

    live = status_json({"STRIPE_WEBHOOK_SECRET": "whsec_configured_since"})
    assert live["demo"] is False and live["inbox"] == {"pending": 1}


def test_status_shows_each_account_with_its_company_route_and_events(cwd: Path, world: StripeWorld) -> None:
    (cwd / "stripeflow.toml").write_text(
        '[[accounts]]\nname = "sklep"\n[accounts.company]\nname = "Sklep sp. z o.o."\nnip = "5260001246"\n'
        '[[accounts]]\nname = "saas"\n',
        encoding="utf-8",
    )
    (cwd / ".stripeflow").mkdir()
    ledger = Ledger(f"sqlite:///{cwd / '.stripeflow' / 'ledger.db'}")
    ledger.migrate()
    for account, n in (("sklep", 2), ("saas", 1)):
        for _ in range(n):
            event = world.event("customer.created", world.customer("a@example.pl"))
            obj = event["data"]["object"]["id"]
            ledger.store_events(
                [
                    IncomingEvent(
                        event["id"], event["type"], obj, event["created"], False, json.dumps(event), account
                    )
                ]
            )
    ledger.dispose()
    env = {"STRIPE_WEBHOOK_SECRET_SKLEP": "whsec_sklep"}
    rows = {r["name"]: r for r in status_json(env)["accounts"]}
    assert list(rows) == ["sklep", "saas"]  # no top-level [stripe]: no default account
    assert (
        rows["sklep"]["company"] == "Sklep sp. z o.o."
        and rows["sklep"]["webhook"] == "/webhooks/stripe/sklep"
    )
    assert (rows["sklep"]["webhook_secret"], rows["saas"]["webhook_secret"]) == (True, False)
    assert (rows["sklep"]["inbox"], rows["saas"]["inbox"]) == ({"pending": 2}, {"pending": 1})
    text = runner.invoke(app, ["status"], env=env, terminal_width=160).output
    assert "Accounts" in text and "/webhooks/stripe/saas" in text and "Sklep" in text


def test_crm_deals_shows_one_accounts_local_crm(cwd: Path, world: StripeWorld) -> None:
    (cwd / "stripeflow.toml").write_text(
        '[[accounts]]\nname = "sklep"\n[[accounts.crm]]\ntype = "local"\noptions = { path = "sklep.db" }\n'
        '[[accounts]]\nname = "saas"\n[[accounts.crm]]\ntype = "local"\noptions = { path = "saas.db" }\n',
        encoding="utf-8",
    )
    for path in ("sklep.db", "saas.db"):
        pi, _ = world.payment_intent(24900, "pln", world.customer("anna@example.pl"), product=path)
        payment = normalise(world.event("payment_intent.succeeded", pi))
        assert payment is not None
        crm = LocalCRM(cwd / path)
        deal = DealInput(
            payment.payment_id, path, payment.amount, Decimal(0), payment.currency, "paid", None, payment
        )
        crm.upsert_deals([deal])
        crm.close()
    result = runner.invoke(app, ["crm", "deals", "--account", "saas", "--json"])
    assert result.exit_code == 0, result.output
    assert [d["title"] for d in json.loads(result.stdout)] == ["saas.db"]
    unknown = runner.invoke(app, ["crm", "deals", "--account", "nope"])
    assert unknown.exit_code == 2 and "No account 'nope'; the accounts are sklep, saas" in unknown.output
