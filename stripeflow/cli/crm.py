"""`stripeflow crm ...`: look into and set up the configured CRMs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from stripeflow.core.config import load_settings

if TYPE_CHECKING:
    from stripeflow.tasks.crm.common import Manageable

app = typer.Typer(help="Look into and set up the CRMs.", no_args_is_help=True)
console = Console()


@app.command("deals")
def deals(
    limit: int = typer.Option(50, help="Show at most this many deals, newest last."),
    account: str | None = typer.Option(None, help="The Stripe account whose local CRM to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the deals as JSON instead of a table."),
) -> None:
    """Print the deals in the built-in local CRM (of one account, with --account) as a table."""
    import dataclasses
    import json
    from decimal import Decimal

    from stripeflow.core.accounts import accounts, settings_for
    from stripeflow.core.config import STAGE_NAMES
    from stripeflow.core.money import format_money
    from stripeflow.demo import command_settings
    from stripeflow.tasks.crm.local import LocalCRM

    settings, demo_config = command_settings()  # the demo's deals while the demo is what runs
    if account is not None:
        known = accounts(settings)
        if account not in known:
            console.print(f"[red]No account {account!r}; the accounts are {', '.join(known)}.[/]")
            raise typer.Exit(2)
        settings = settings_for(settings, known[account])
    if demo_config is not None and not as_json:
        console.print(f"[bold]Demo[/]: the deals of the demo's home ({settings.home}).")
    target = next((t for t in settings.crm if t.type == "local"), None)
    if target is None:
        console.print(
            "[yellow]No local CRM is configured" + (f" for account {account}" if account else "") + ".[/]"
        )
        raise typer.Exit(1)
    crm = LocalCRM.from_target(target, settings.home)
    rows = crm.list_deals()[-limit:]
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(d) for d in rows], indent=2, ensure_ascii=False))
        return
    labels = STAGE_NAMES[settings.language]
    table = Table(title=f"Deals in the local CRM ({crm.path})")
    # ids and amounts never wrap; the title takes what width is left
    for col in ("#", "payment", "title", "amount", "refunded", "stage", "contact", "notes"):
        table.add_column(col, no_wrap=col != "title", ratio=1 if col == "title" else None)
    for d in rows:
        table.add_row(
            str(d.id),
            d.payment_id,
            d.title,
            format_money(Decimal(d.amount), d.currency, settings.language),
            format_money(Decimal(d.refunded_amount), d.currency, settings.language)
            if Decimal(d.refunded_amount)
            else "",
            labels.get(d.stage, d.stage),
            d.contact_email or d.contact_name or "",
            str(d.notes),
        )
    console.print(table)
    if not rows:
        console.print("No deals yet: start `make run` and wait for the demo's payments.")


def _configured_crm(name: str) -> Manageable:
    """The adapter for the configured target of this type (or, unconfigured, from env credentials)."""
    from stripeflow.core.config import CRMTarget
    from stripeflow.core.errors import ConfigError
    from stripeflow.tasks.crm import ADAPTERS, build_crm
    from stripeflow.tasks.crm.common import Manageable

    settings = load_settings()
    configured = (t for t in settings.crm if name in (t.type, t.block))
    target = next(configured, None) or CRMTarget.model_validate({"type": name})
    if target.type not in ADAPTERS or target.type == "local":
        console.print(f"[red]Unknown CRM {name!r}[/]: choose one of hubspot, pipedrive, bitrix24, zoho.")
        raise typer.Exit(2)
    try:
        adapter = build_crm(target, settings.home)
    except ConfigError as exc:
        console.print(f"[red]Configuration:[/] {exc}")
        raise typer.Exit(2) from None
    if not isinstance(adapter, Manageable):
        console.print(f"[red]{name} has nothing to set up or check.[/]")
        raise typer.Exit(2)
    return adapter


@contextmanager
def _adapter(crm: str, step: str) -> Iterator[Manageable]:
    """The configured adapter, closed afterwards; a vendor error exits 1 saying which step failed."""
    from stripeflow.core.errors import VendorError

    adapter = _configured_crm(crm)
    try:
        yield adapter
    except VendorError as exc:
        console.print(f"[red]{crm}: {step} failed:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        adapter.close()


CRM_ARG = typer.Argument(..., help="hubspot, pipedrive, bitrix24 or zoho (or a configured block name).")


@app.command("setup")
def setup(crm: str = CRM_ARG) -> None:
    """Create the custom fields and stages the CRM needs (idempotent) and print the mapping."""
    with _adapter(crm, "setup") as adapter:
        report = adapter.setup()
    table = Table(title=f"{crm}: what setup needs")
    for col in ("item", "status", "note"):
        table.add_column(col)
    colour = {"created": "green", "exists": "dim", "manual": "yellow"}
    for thing, status, note in report.actions:
        table.add_row(thing, f"[{colour.get(status, 'white')}]{status}[/]", note)
    console.print(table)
    mapping = Table(title=f"{crm}: mapping in force")
    mapping.add_column("Stripeflow")
    mapping.add_column(crm)
    for key, value in report.mapping.items():
        mapping.add_row(key, value)
    console.print(mapping)
    console.print("Changed: " + ("yes" if report.changed else "nothing, everything was already in place"))
    if any(status == "manual" for _, status, _ in report.actions):
        console.print("[yellow]Some steps must be done by hand (see the notes above).[/]")
        raise typer.Exit(1)


@app.command("check")
def check(crm: str = CRM_ARG) -> None:
    """Try the credentials and the mapping; say exactly what is wrong."""
    with _adapter(crm, "check") as adapter:
        report = adapter.check()
    for line in report.ok:
        console.print(f"[green]ok[/]  {line}")
    for line in report.problems:
        console.print(f"[red]bad[/] {line}")
    if not report.passed:
        raise typer.Exit(1)
    console.print(f"{crm}: all checks passed.")
