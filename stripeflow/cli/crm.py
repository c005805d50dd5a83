"""`stripeflow crm ...`: look into and set up the configured CRMs."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from stripeflow.core.config import load_settings

app = typer.Typer(help="Look into and set up the CRMs.", no_args_is_help=True)
console = Console()


@app.command("deals")
def deals(limit: int = typer.Option(50, help="Show at most this many deals, newest last.")) -> None:
    """Print the deals in the built-in local CRM as a table."""
    from stripeflow.tasks.crm.local import STAGE_LABELS, LocalCRM
    from stripeflow.core.money import format_money
    from decimal import Decimal

    settings = load_settings()
    target = next((t for t in settings.crm if t.type == "local"), None)
    if target is None:
        console.print("[yellow]No local CRM is configured.[/]")
        raise typer.Exit(1)
    crm = LocalCRM.from_target(target, settings.home)
    rows = crm.list_deals()[-limit:]
    labels = STAGE_LABELS[settings.language]
    table = Table(title=f"Deals in the local CRM ({crm.path})")
    for col in ("#", "payment", "title", "amount", "refunded", "stage", "contact", "notes"):
        table.add_column(col)
    for d in rows:
        table.add_row(
            str(d.id), d.payment_id, d.title,
            format_money(Decimal(d.amount), d.currency, settings.language),
            format_money(Decimal(d.refunded_amount), d.currency, settings.language)
            if Decimal(d.refunded_amount) else "",
            labels.get(d.stage, d.stage), d.contact_email or d.contact_name or "", str(d.notes),
        )
    console.print(table)
    if not rows:
        console.print("No deals yet: start `make run` and wait for the demo's payments.")
