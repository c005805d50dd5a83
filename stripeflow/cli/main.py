"""`stripeflow`: run everything, or each piece on its own."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from stripeflow.cli import crm

app = typer.Typer(help="Stripe payments to CRM deals, exactly once, on Prefect.", no_args_is_help=True)
app.add_typer(crm.app, name="crm")
console = Console()


@app.command()
def run(
    demo: bool = typer.Option(
        None,
        help="Run the demo, in its own home and reaching none of your systems "
        "(default: when no webhook secret is configured in stripeflow.toml, the environment or the block).",
    ),
    prefect_port: int = typer.Option(4200, help="Port of the local Prefect server and UI."),
    bridge_port: int = typer.Option(8000, help="Port of the webhook bridge."),
) -> None:
    """Start the Prefect server, the webhook bridge, the worker and (without a webhook secret) the demo."""
    from stripeflow.core.errors import ConfigError
    from stripeflow.launcher import Launcher

    try:
        launcher = Launcher(prefect_port=prefect_port, bridge_port=bridge_port, demo=demo)
    except ConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    launcher.run()


@app.command()
def bridge(
    host: str = typer.Option(None, help="Interface to listen on (default from settings: 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default from settings: 8000)."),
) -> None:
    """Run the webhook bridge (POST /webhooks/stripe, GET /healthz) under uvicorn."""
    import uvicorn

    from stripeflow.blocks.stripe import with_stripe_block
    from stripeflow.bridge.app import create_app
    from stripeflow.core.config import load_settings
    from stripeflow.core.ledger import Ledger

    settings = with_stripe_block(load_settings())
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(
        create_app(settings, ledger, os.environ.get("PREFECT_API_URL")),
        host=host or settings.bridge.host,
        port=port or settings.bridge.port,
        log_level="warning",
        access_log=False,
    )


@app.command()
def worker(
    dispatch: bool = typer.Option(True, help="Also run the dispatcher that feeds inbox events to flows."),
) -> None:
    """Serve the deployments (UI runs, reruns, schedules) and dispatch inbox events to them."""
    from stripeflow.deployments.serve_all import main

    main(with_dispatcher=dispatch)


@app.command("demo")
def demo_source(
    bridge_url: str = typer.Option("http://127.0.0.1:8000/webhooks/stripe", help="Where to send the events."),
    stripe_port: int = typer.Option(12111, help="Port for the local Stripe API fake."),
    loop_every: float = typer.Option(
        20.0, help="After the scenario, one new payment every N seconds (0: stop)."
    ),
) -> None:
    """Send realistic, signed Stripe events to the bridge, with a local Stripe API fake behind them."""
    from stripeflow.core.config import load_settings
    from stripeflow.demo import run_demo

    secrets = load_settings().stripe.webhook_secrets  # `stripeflow run` puts it in the demo's config
    if not secrets:
        console.print(
            "[red]A webhook secret the bridge checks must be set (STRIPE_WEBHOOK_SECRET or the config).[/]"
        )
        raise typer.Exit(2)
    from stripeflow.core.accounts import accounts
    from stripeflow.core.config import DEFAULT_ACCOUNT

    others = [  # the demo's other accounts (another company's), each at its own route
        (a.name, a.webhook_secrets[0])
        for a in accounts(load_settings()).values()
        if a.name != DEFAULT_ACCOUNT and a.webhook_secrets
    ]
    run_demo(bridge_url, secrets[0].get_secret_value(), stripe_port, loop_every, others)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Show the inbox, open dead letters, the targets and which Stripe enrichment is missing.

    While the last `stripeflow run` ran the demo (and no webhook secret is configured since),
    it shows the demo's data, from the demo's home.
    """
    from rich.table import Table

    from stripeflow.core.config import load_settings
    from stripeflow.core.enrichment import health
    from stripeflow.core.errors import ConfigError
    from stripeflow.core.ledger import Ledger
    from stripeflow.demo import command_settings, last_run
    from stripeflow.launcher import load_user_settings

    try:
        settings, demo_config = command_settings()
    except ConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    stripe: dict[str, Any]
    try:
        if demo_config is None and (settings.stripe.block or any(a.stripe.block for a in settings.accounts)):
            url = os.environ.get("PREFECT_API_URL") or last_run(settings.home).get("prefect_api_url")
            settings = load_user_settings(os.environ, url)
        stripe = health(settings)
    except ConfigError as exc:
        stripe = {"api_key": None, "missing": [], "error": str(exc)}
    # the demo talks to its Stripe fake; what the user's own settings would miss live is said too
    own = health(load_settings()) if demo_config is not None else None
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    counts = dict(sorted(ledger.inbox_counts().items()))
    letters = ledger.dead_letters()
    per_account = account_rows(settings, ledger)
    if as_json:
        report = {
            "demo": demo_config is not None,
            "home": str(settings.home),
            "config": str(demo_config) if demo_config else None,
            "inbox": counts,
            "dead_letters": [
                {
                    "id": d.id,
                    "target": d.target,
                    "action": d.action,
                    "payment_id": d.payment_id,
                    "event_id": d.event_id,
                    "reason": d.reason,
                    "created_at": d.created_at.isoformat(),
                }
                for d in letters
            ],
            "crm": [t.block or t.type for t in settings.crm],
            "stripe": stripe,
            "accounts": per_account,
        }
        if own is not None:
            report["configured_stripe"] = own
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    if demo_config is not None:
        console.print(
            f"[bold]Demo[/]: the data of the demo's home ({escape(str(settings.home))}); the last "
            "`stripeflow run` ran the demo because no webhook secret is configured."
        )
    table = Table(title="Inbox")
    table.add_column("status")
    table.add_column("events", justify="right")
    for key, count in counts.items():
        table.add_row(key, str(count))
    console.print(table)
    if letters:
        dl = Table(title="Open dead letters")
        for col in ("#", "target", "action", "payment / event", "reason"):
            dl.add_column(col)
        for d in letters:
            dl.add_row(str(d.id), d.target, d.action, d.payment_id or d.event_id or "", d.reason[:120])
        console.print(dl)
    if len(per_account) > 1:
        accounts_table = Table(title="Accounts")
        for col in ("account", "company", "webhook", "secret", "API key", "inbox", "dead"):
            accounts_table.add_column(col, no_wrap=col in ("account", "webhook"))
        for row in per_account:
            key = "set" if row["api_key"] else "none"
            accounts_table.add_row(
                row["name"],
                row["company"] or "—",
                row["webhook"],
                "yes" if row["webhook_secret"] else "none",
                f"{key}, as {row['connect_account']}" if row["connect_account"] else key,
                ", ".join(f"{k} {v}" for k, v in row["inbox"].items()) or "—",
                str(row["dead_letters"]),
            )
        console.print(accounts_table)
    console.print("CRMs: " + ", ".join(t.block or t.type for t in settings.crm))
    if own is None:
        console.print(escape(stripe_text(stripe, settings.stripe.api_base)))
        return
    console.print(escape(f"Stripe API: the demo's Stripe fake ({settings.stripe.api_base})."))
    if not own["api_key"]:
        console.print(escape(stripe_text(own, "", "Your settings: no Stripe API key; live")))


def account_rows(settings: Any, ledger: Any) -> list[dict[str, Any]]:
    """Each account as `status` shows it: its company, route, credentials and its part of the ledger."""
    from stripeflow.core.accounts import accounts
    from stripeflow.core.config import DEFAULT_ACCOUNT

    rows = []
    for account in accounts(settings).values():
        rows.append(
            {
                "name": account.name,
                "company": account.company.name if account.company else None,
                "webhook": "/webhooks/stripe"
                + ("" if account.name == DEFAULT_ACCOUNT else f"/{account.name}"),
                "webhook_secret": bool(account.webhook_secrets),
                "api_key": account.stripe.api_key is not None,
                "connect_account": account.stripe_account,
                "crm": [t.block or t.type for t in account.crm],
                "inbox": dict(sorted(ledger.inbox_counts(account=account.name).items())),
                "dead_letters": len(ledger.dead_letters(account=account.name)),
            }
        )
    return rows


def stripe_text(stripe: dict[str, Any], api_base: str, lead: str = "Stripe API: no key") -> str:
    """The Stripe API line of `stripeflow status`, and what is missing without a key."""
    if stripe.get("error"):
        return f"Stripe API: cannot tell: {stripe['error']}"
    if stripe["api_key"]:
        return f"Stripe API: key set ({api_base}); payloads are completed from the API."
    lines = [f"{lead} (STRIPE_API_KEY or a [stripe] block), only what the webhooks carry. Missing:"]
    lines += [f"  - {item}" for item in stripe["missing"]]
    return "\n".join(lines)


@app.command()
def migrate() -> None:
    """Create or upgrade the ledger's schema (runs on every start anyway)."""
    from stripeflow.core.config import load_settings
    from stripeflow.core.ledger import Ledger

    settings = load_settings()
    Ledger(settings.ledger_url).migrate()
    console.print(f"ledger at {settings.ledger_url.split('@')[-1]} is up to date")
