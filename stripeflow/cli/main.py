"""`stripeflow`: run everything, or each piece on its own."""

from __future__ import annotations

import logging
import os

import typer
from rich.console import Console

from stripeflow.cli import crm

app = typer.Typer(help="Stripe payments to CRM deals, exactly once, on Prefect.", no_args_is_help=True)
app.add_typer(crm.app, name="crm")
console = Console()


@app.command()
def run(
    demo: bool = typer.Option(
        None, help="Send demo payments (default: when no STRIPE_WEBHOOK_SECRET is set)."
    ),
    prefect_port: int = typer.Option(4200, help="Port of the local Prefect server and UI."),
    bridge_port: int = typer.Option(8000, help="Port of the webhook bridge."),
) -> None:
    """Start the Prefect server, the webhook bridge, the worker and (without Stripe keys) the demo."""
    from stripeflow.launcher import Launcher

    Launcher(prefect_port=prefect_port, bridge_port=bridge_port, demo=demo).run()


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
    from stripeflow.demo import run_demo

    secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0]
    if not secret:
        console.print("[red]STRIPE_WEBHOOK_SECRET must be set to the secret the bridge checks.[/]")
        raise typer.Exit(2)
    run_demo(bridge_url, secret, stripe_port, loop_every)


@app.command()
def status() -> None:
    """Show the inbox, open dead letters and the configured targets."""
    from rich.table import Table

    from stripeflow.core.config import load_settings
    from stripeflow.core.ledger import Ledger

    settings = load_settings()
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    table = Table(title="Inbox")
    table.add_column("status")
    table.add_column("events", justify="right")
    for key, count in sorted(ledger.inbox_counts().items()):
        table.add_row(key, str(count))
    console.print(table)
    letters = ledger.dead_letters()
    if letters:
        dl = Table(title="Open dead letters")
        for col in ("#", "target", "action", "payment / event", "reason"):
            dl.add_column(col)
        for d in letters:
            dl.add_row(str(d.id), d.target, d.action, d.payment_id or d.event_id or "", d.reason[:120])
        console.print(dl)
    console.print("CRMs: " + ", ".join(t.type for t in settings.crm))


@app.command()
def migrate() -> None:
    """Create or upgrade the ledger's schema (runs on every start anyway)."""
    from stripeflow.core.config import load_settings
    from stripeflow.core.ledger import Ledger

    settings = load_settings()
    Ledger(settings.ledger_url).migrate()
    console.print(f"ledger at {settings.ledger_url.split('@')[-1]} is up to date")
