"""`stripeflow crm deals`: readable in 80 columns (payment, customer, amount, status, method,
product and kind, date), full ids and links from 160 columns or with --wide, and --json with every
field of the deal and its contact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from stripeflow.cli.crm import deals_table
from stripeflow.cli.main import app
from stripeflow.core.deal_fields import DEAL_FIELDS
from stripeflow.core.payment import Payment
from stripeflow.tasks.crm.base import ContactInput, DealInput
from stripeflow.tasks.crm.local import DealView, LocalCRM
from stripeflow.tasks.stripe.normalise import normalise
from stripeflow.testing.stripe_events import StripeWorld

runner = CliRunner()


def _store(crm: LocalCRM, p: Payment) -> None:
    assert p.customer_key is not None
    contact = ContactInput(p.customer_key, p.email, p.name, p.customer_id, phone=p.phone, tax_id=p.tax_id)
    (cid,) = crm.upsert_contacts([contact])
    crm.upsert_deals(
        [DealInput(p.payment_id, "deal", p.amount, p.refunded_amount, p.currency, "paid", cid, p)]
    )


@pytest.fixture
def crm(cwd: Path, world: StripeWorld) -> LocalCRM:
    """The default local CRM (.stripeflow/crm.db) with a BLIK course partly refunded and a company's
    subscription invoice, as the pipeline would have stored them."""
    local = LocalCRM(cwd / ".stripeflow" / "crm.db")
    anna = world.customer("anna.nowak@example.pl", "Anna Nowak")
    firm = world.customer(
        "biuro@xyz-agencja.pl", "XYZ Agencja sp. z o.o.", tax_ids=[("eu_vat", "PL5260001246")]
    )
    pi, ch = world.payment_intent(24900, "pln", anna, product="Kurs programowania w Pythonie", method="blik")
    ch["billing_details"]["phone"] = "+48 600 100 200"  # typed in at the payment
    inv = world.invoice(123000, "pln", firm, product="Subskrypcja Pro")
    succeeded = normalise(world.event("payment_intent.succeeded", pi))
    refunded = normalise(world.event("charge.refunded", world.refund(ch, 4900)))
    invoiced = normalise(world.event("invoice.paid", inv))
    assert isinstance(succeeded, Payment) and isinstance(refunded, Payment) and isinstance(invoiced, Payment)
    _store(local, succeeded.merged_with(refunded))
    _store(local, invoiced)
    return local


def render(rows: list[DealView], width: int, *, wide: bool) -> str:
    console = Console(width=width, record=True)
    console.print(deals_table(rows, "pl", wide=wide, title="crm.db"), soft_wrap=True)
    return console.export_text()


def test_80_columns_show_what_matters_without_links(crm: LocalCRM) -> None:
    rows = crm.list_deals()
    text = render(rows, 80, wide=False)
    assert max(len(line) for line in text.splitlines()) <= 80
    for expected in (
        "anna.nowak@example.pl",  # an e-mail on one line
        "biuro@xyz-agencja.pl",
        "249,00\u00a0zł",
        "−49,00\u00a0zł",
        "1\u00a0230,00\u00a0zł",
        "częściowy",
        "BLIK",
        "jednorazowa",
        "subskrypcja",
        rows[0].values["paid_on"],
        rows[0].payment_id[:7] + "…" + rows[0].payment_id[-4:],
    ):
        assert expected in text, expected
    assert "https://" not in text and rows[0].payment_id not in text  # too long for 80 columns


def test_160_columns_show_full_ids_the_contact_and_every_link_whole(crm: LocalCRM) -> None:
    rows = crm.list_deals()
    text = render(rows, 160, wide=True)
    assert max(len(line) for line in text.splitlines()) <= 160
    lines = text.splitlines()
    for d in rows:
        assert d.payment_id in text
        for key in ("receipt_url", "invoice_pdf", "dashboard_url"):
            if d.values.get(key):
                assert any(d.values[key] in line for line in lines), key  # never folded
    assert "PL5260001246" in text and "+48 600 100 200" in text and "częściowy zwrot" in text


def test_the_command_picks_the_layout_by_width_or_wide(crm: LocalCRM) -> None:
    narrow = runner.invoke(app, ["crm", "deals"], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert "https://" not in narrow.stdout and "anna.nowak@example.pl" in narrow.stdout
    wide = runner.invoke(app, ["crm", "deals", "--wide"], env={"COLUMNS": "80"})
    assert "https://dashboard.stripe.com/test/" in wide.stdout
    roomy = runner.invoke(app, ["crm", "deals"], env={"COLUMNS": "160"})
    assert "https://dashboard.stripe.com/test/" in roomy.stdout


def test_json_prints_every_catalogue_and_contact_field(crm: LocalCRM) -> None:
    result = runner.invoke(app, ["crm", "deals", "--json"])
    assert result.exit_code == 0, result.output
    course, invoice = json.loads(result.stdout)
    assert {f.name for f in DEAL_FIELDS} <= set(course)
    assert (course["status"], course["refunded_amount"], course["method"]) == (
        "częściowy zwrot",
        "49.00",
        "BLIK",
    )
    assert course["contact"] == {
        "email": "anna.nowak@example.pl",
        "name": "Anna Nowak",
        "phone": "+48 600 100 200",
        "company": None,
        "tax_id": None,
    }
    assert invoice["contact"]["tax_id"] == "PL5260001246" and invoice["kind"] == "subskrypcja"
    assert invoice["invoice_pdf"].startswith("https://pay.stripe.com/invoice/")


def test_json_of_a_deal_an_older_version_wrote(cwd: Path) -> None:
    crm = LocalCRM(cwd / ".stripeflow" / "crm.db")
    with crm.engine.begin() as conn:  # a deal stored before the catalogue: no fields
        conn.exec_driver_sql(
            "INSERT INTO deals (payment_id, title, amount, refunded_amount, currency, stage, fields) "
            "VALUES ('pi_old', 'Stara', '10.00', '0', 'PLN', 'paid', '{}')"
        )
    (old,) = json.loads(runner.invoke(app, ["crm", "deals", "--json"]).stdout)
    assert (old["payment_id"], old["amount"], old["currency"], old["status"]) == (
        "pi_old",
        "10.00",
        "PLN",
        None,
    )
    text = runner.invoke(app, ["crm", "deals"], env={"COLUMNS": "80"}).stdout
    assert "Zrealizowane" in text  # no status stored: the stage says it
