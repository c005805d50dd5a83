"""`stripeflow crm ...`: look into and set up the configured CRMs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from stripeflow.core.config import load_settings

if TYPE_CHECKING:
    from stripeflow.tasks.crm.common import Manageable
    from stripeflow.tasks.crm.local import DealView

app = typer.Typer(help="Look into and set up the CRMs.", no_args_is_help=True)
console = Console()


# from this terminal width on, `crm deals` shows every column and the full links (as --wide)
WIDE_AT = 160


@app.command("deals")
def deals(
    limit: int = typer.Option(50, help="Show at most this many deals, newest last."),
    account: str | None = typer.Option(None, help="The Stripe account whose local CRM to show."),
    as_json: bool = typer.Option(
        False, "--json", help="Print every field of each deal (and its contact) as JSON, for scripts."
    ),
    wide: bool = typer.Option(
        False,
        "--wide",
        help=f"Every column, full payment ids and links (the default from {WIDE_AT} columns).",
    ),
) -> None:
    """Print the deals in the built-in local CRM (of one account, with --account) as a table."""
    import json

    from stripeflow.core.accounts import accounts, settings_for
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
    crm.close()
    if as_json:
        typer.echo(json.dumps([deal_json(d) for d in rows], indent=2, ensure_ascii=False))
        return
    # the path on a line of its own, whole (a table's title would fold it)
    console.print(f"[bold]Deals in the local CRM[/] ({crm.path})", soft_wrap=True)
    console.print(deals_table(rows, settings.language, wide=wide or console.width >= WIDE_AT), soft_wrap=True)
    if not rows:
        console.print("No deals yet: start `make run` and wait for the demo's payments.")


def deal_json(deal: DealView) -> dict[str, Any]:
    """Every field of a deal for scripts: each catalogue field by its logical name (None when the
    deal does not carry it, as one an older version wrote), the contact, and what is stored."""
    from stripeflow.core.deal_fields import DEAL_FIELDS

    # a deal written before the catalogue still knows these from its own columns
    own = {"payment_id": deal.payment_id, "amount": deal.amount, "currency": deal.currency}
    own["refunded_amount"] = deal.refunded_amount
    return {
        "id": deal.id,
        "payment_id": deal.payment_id,
        "title": deal.title,
        "stage": deal.stage,
        **{f.name: deal.values.get(f.name, own.get(f.name)) for f in DEAL_FIELDS},
        "contact": {
            "email": deal.contact_email,
            "name": deal.contact_name,
            "phone": deal.contact_phone,
            "company": deal.contact_company,
            "tax_id": deal.contact_tax_id,
        },
        "notes": deal.notes,
        "updated_at": deal.updated_at.isoformat() if deal.updated_at else None,
        "fields": deal.fields,
    }


def short_id(value: str) -> str:
    """`pi_3PgafyB7WZ01zgkWSjxsAJo3` -> `pi_3Pga…AJo3`: enough to tell deals apart in 80 columns."""
    return value if len(value) <= 14 else f"{value[:7]}…{value[-4:]}"


def deals_table(rows: Sequence[DealView], language: str, *, wide: bool, title: str = "") -> Group:
    """The deals as a table. Narrow (80 columns): five columns of a few lines each (payment and
    date, customer, amount and refund, status and method, product and kind). Wide: full ids, the
    contact's company, NIP and phone, the notes, and each deal's links below the table, whole, one
    a line (they are longer than any column could be)."""
    from decimal import Decimal

    from rich import box

    from stripeflow.core.config import STAGE_NAMES
    from stripeflow.core.labels import label
    from stripeflow.core.money import format_money

    stages = STAGE_NAMES.get(language, STAGE_NAMES["en"])
    no_method = label("method", "other", language)
    table = Table(
        title=f"Deals in the local CRM ({title})" if title else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    if wide:
        table.add_column("#", justify="right", no_wrap=True)
    table.add_column("payment", no_wrap=True)
    table.add_column("customer", overflow="fold")
    table.add_column("amount", justify="right", no_wrap=True)
    table.add_column("status", max_width=None if wide else 12, overflow="fold")
    # the product wraps at words; what width it leaves keeps an e-mail on one line in 80 columns
    table.add_column("product", max_width=None if wide else 13)
    if wide:
        table.add_column("notes", justify="right", no_wrap=True)
    links = Table(title="Links", box=None, pad_edge=False, show_header=False, title_justify="left")
    for col in ("#", "what", "link"):
        links.add_column(col, no_wrap=True, overflow="ignore", style="dim" if col == "what" else "")
    for d in rows:
        v = d.values
        refunded = Decimal(d.refunded_amount or 0)
        who = [d.contact_email, d.contact_name] if d.contact_email else [d.contact_name]
        if wide:
            who += [d.contact_company, d.contact_tax_id, d.contact_phone]
        method = v.get("method") if v.get("method") != no_method else None
        cells = [
            _lines(d.payment_id if wide else short_id(d.payment_id), v.get("paid_on")),
            _lines(*dict.fromkeys(who)),  # a company's name is often its contact's name too
            _lines(
                format_money(Decimal(d.amount), d.currency, language),
                f"−{format_money(refunded, d.currency, language)}" if refunded else None,
            ),
            _lines(v.get("status") or stages.get(d.stage, d.stage), method),
            _lines(v.get("product") or d.title, v.get("kind")),
        ]
        if wide:
            table.add_row(str(d.id), *cells, str(d.notes))
            mine = [(what, v[key]) for what, key in LINKS.items() if v.get(key)]
            for i, (what, url) in enumerate(mine):
                links.add_row(str(d.id) if i == 0 else "", what, url)
        else:
            table.add_row(*cells)
    return Group(table, links) if wide and links.rows else Group(table)


LINKS = {"invoice": "invoice_pdf", "receipt": "receipt_url", "stripe": "dashboard_url"}


def _lines(*parts: Any) -> Text:
    """A cell of one value a line, the first as it is and the rest dim; empty parts left out."""
    text = Text()
    for i, part in enumerate(p for p in parts if p):
        if i:
            text.append("\n")
        text.append(str(part), style="dim" if i else "")
    return text


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
        adapter = build_crm(target, settings.home, settings.language)
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
