"""The local CRM: every catalogue field on the deal by default (overridable), the payer's phone,
company and NIP on the contact, and crm.db files of older versions still opening."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from stripeflow.core.config import CRMTarget, Settings
from stripeflow.core.deal_fields import DEAL_FIELDS
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import (
    Changes,
    Lifecycle,
    Payment,
    PaymentChange,
    PaymentKind,
    PaymentMethod,
    Refund,
)
from stripeflow.tasks.crm import build_crm
from stripeflow.tasks.crm.base import ContactInput, DealInput
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.tasks.crm.tasks import upsert_contacts, upsert_deals

PAID = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # 1 January in Warsaw


def paid(**kw: object) -> Payment:
    base: dict[str, object] = dict(
        payment_id="pi_local",
        ids=("ch_local", "pi_local"),
        customer_id="cus_1",
        email="biuro@xyz.pl",
        name="Jan Kowalski",
        phone="+48 600 100 200",
        company="XYZ sp. z o.o.",
        tax_id="PL5260001246",
        currency="PLN",
        occurred_at=PAID,
        paid_at=PAID,
        lifecycle=Lifecycle.succeeded,
        amount_requested=Decimal("249.00"),
        amount_captured=Decimal("249.00"),
        refunds={"re_1": Refund(amount=Decimal("49.00"))},
        method=PaymentMethod.blik,
        kind=PaymentKind.subscription,
        products=("Kurs Pro",),
        invoice_pdf="https://pay.stripe.com/invoice/acct_1/in_1/pdf",
        receipt_url="https://pay.stripe.com/receipts/payment/abc",
    )
    base.update(kw)
    return Payment.model_validate(base)


def sync(crm: LocalCRM, ledger: Ledger, payment: Payment, target: CRMTarget, language: str = "pl") -> None:
    """The CRM tasks' own contact and deal steps (their bodies: no Prefect run needed)."""
    settings = Settings.model_validate({"language": language})
    changes = Changes([PaymentChange(payment, None)])
    contacts = upsert_contacts.fn(crm, ledger, changes)
    upsert_deals.fn(crm, ledger, changes, contacts, settings)


def test_every_catalogue_field_is_on_the_deal_by_default(tmp_path: Path, ledger: Ledger) -> None:
    target = CRMTarget(type="local", options={"path": str(tmp_path / "crm.db")})
    crm = build_crm(target, tmp_path)
    assert isinstance(crm, LocalCRM)
    sync(crm, ledger, paid(), target)
    (deal,) = crm.list_deals()
    assert set(deal.fields) == {f.name for f in DEAL_FIELDS}
    assert deal.values == {
        "amount": "249.00",
        "currency": "PLN",
        "paid_on": "2027-01-01",  # the business date, Europe/Warsaw
        "payment_id": "pi_local",
        "status": "częściowy zwrot",
        "refunded_amount": "49.00",
        "method": "BLIK",
        "product": "Kurs Pro",
        "kind": "subskrypcja",
        "invoice_pdf": "https://pay.stripe.com/invoice/acct_1/in_1/pdf",
        "receipt_url": "https://pay.stripe.com/receipts/payment/abc",
        "dashboard_url": "https://dashboard.stripe.com/test/payments/pi_local",
    }
    contact = crm.list_contacts()[0]
    assert (contact["phone"], contact["company"], contact["tax_id"]) == (
        "+48 600 100 200",
        "XYZ sp. z o.o.",
        "PL5260001246",
    )
    assert (deal.contact_phone, deal.contact_company, deal.contact_tax_id) == (
        "+48 600 100 200",
        "XYZ sp. z o.o.",
        "PL5260001246",
    )


def test_english_labels_with_language_en(tmp_path: Path, ledger: Ledger) -> None:
    target = CRMTarget(type="local")
    crm = LocalCRM.from_target(target, tmp_path)
    sync(crm, ledger, paid(refunds={}, method=PaymentMethod.p24, kind=PaymentKind.one_time), target, "en")
    values = crm.list_deals()[0].values
    assert (values["status"], values["method"], values["kind"]) == ("success", "Przelewy24", "one-time")


def test_the_mapping_renames_drops_and_adds_fields(tmp_path: Path, ledger: Ledger) -> None:
    target = CRMTarget(type="local", fields={"receipt_url": "", "method": "metoda", "email": "stripe_email"})
    crm = LocalCRM.from_target(target, tmp_path)
    sync(crm, ledger, paid(), target)
    (deal,) = crm.list_deals()
    assert "receipt_url" not in deal.fields and "" not in deal.fields  # empty drops, never a "" key
    assert deal.fields["metoda"] == "BLIK" and "method" not in deal.fields
    assert deal.fields["stripe_email"] == "biuro@xyz.pl"
    assert deal.values["method"] == "BLIK"  # read back by its logical name through the mapping


def test_a_deal_built_without_values_still_carries_them(tmp_path: Path) -> None:
    crm = LocalCRM(tmp_path / "crm.db")
    p = paid()
    crm.upsert_deals([DealInput(p.payment_id, "t", p.amount, p.refunded_amount, "PLN", "paid", None, p)])
    assert crm.list_deals()[0].values["status"] == "częściowy zwrot"


def test_a_contact_keeps_what_stripe_knew_when_a_later_payment_knows_less(tmp_path: Path) -> None:
    crm = LocalCRM(tmp_path / "crm.db")
    full = ContactInput(
        "a@b.pl", "a@b.pl", "Anna", "cus_1", phone="+48 1", company="A sp. z o.o.", tax_id="PL1"
    )
    bare = ContactInput("a@b.pl", "a@b.pl", None, "cus_1")
    assert crm.upsert_contacts([full]) == crm.upsert_contacts([bare])
    (row,) = crm.list_contacts()
    assert (row["name"], row["phone"], row["company"], row["tax_id"]) == (
        "Anna",
        "+48 1",
        "A sp. z o.o.",
        "PL1",
    )
    crm.upsert_contacts([ContactInput("a@b.pl", "a@b.pl", None, None, phone="+48 2")])
    assert crm.list_contacts()[0]["phone"] == "+48 2"  # a newer number replaces the old one


def test_a_crm_db_of_an_older_version_opens_and_takes_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as db:  # the schema before contacts had phone, company, tax id
        db.executescript(
            """
            CREATE TABLE contacts (id INTEGER PRIMARY KEY, email VARCHAR(320) UNIQUE,
                customer_id VARCHAR(255) UNIQUE, name VARCHAR(255), updated_at DATETIME);
            CREATE TABLE deals (id INTEGER PRIMARY KEY, payment_id VARCHAR(255) NOT NULL UNIQUE,
                title VARCHAR(500), amount VARCHAR(40), refunded_amount VARCHAR(40), currency VARCHAR(3),
                stage VARCHAR(64), contact_id INTEGER REFERENCES contacts (id), fields TEXT,
                updated_at DATETIME);
            CREATE TABLE notes (id INTEGER PRIMARY KEY, deal_id INTEGER REFERENCES deals (id),
                payment_id VARCHAR(255), body TEXT, created_at DATETIME);
            INSERT INTO contacts (email, name) VALUES ('old@b.pl', 'Old');
            INSERT INTO deals
                (payment_id, title, amount, refunded_amount, currency, stage, contact_id, fields)
                VALUES ('pi_old', 'Stara', '10.00', '0', 'PLN', 'paid', 1, '{}');
            """
        )
    crm = LocalCRM(path)
    (old,) = crm.list_deals()
    assert (old.payment_id, old.contact_email, old.values, old.contact_phone) == (
        "pi_old",
        "old@b.pl",
        {},
        None,
    )
    crm.upsert_contacts([ContactInput("old@b.pl", "old@b.pl", None, None, tax_id="PL5260001246")])
    assert crm.list_contacts()[0]["tax_id"] == "PL5260001246"
    crm.close()
    assert LocalCRM(path).list_contacts()[0]["name"] == "Old"  # opened again: nothing to add twice


class Counting(LocalCRM):
    contact_calls = 0

    def upsert_contacts(self, items: Sequence[ContactInput]) -> list[str]:
        self.contact_calls += 1
        return super().upsert_contacts(items)


def test_a_later_state_that_tells_more_of_the_payer_updates_the_contact(
    tmp_path: Path, ledger: Ledger
) -> None:
    crm = Counting(tmp_path / "crm.db")
    target = CRMTarget(type="local")
    first = paid(phone=None, company=None, tax_id=None)
    sync(crm, ledger, first, target)
    refund = first.model_copy(update={"event_ids": ("evt_2",)})
    changes = Changes([PaymentChange(refund, first)])
    upsert_contacts.fn(crm, ledger, changes)  # nothing new of the payer: no contact call
    assert crm.contact_calls == 1
    later = paid(event_ids=("evt_3",))  # the invoice brought the phone, the company and the NIP
    upsert_contacts.fn(crm, ledger, Changes([PaymentChange(later, first)]))
    assert crm.contact_calls == 2
    (row,) = crm.list_contacts()
    assert (row["phone"], row["company"], row["tax_id"]) == (
        "+48 600 100 200",
        "XYZ sp. z o.o.",
        "PL5260001246",
    )
