"""Every payment field on the Pipedrive deal, in custom fields `setup` makes by name; and the
person's phone, company and tax id."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from stripeflow.core.deal_fields import DEAL_FIELDS
from stripeflow.core.errors import PermanentError
from stripeflow.core.payment import Payment
from stripeflow.tasks.crm.base import ContactInput, DealInput
from stripeflow.tasks.crm.pipedrive import DEAL_FIELD, PERSON_FIELD, PipedriveCRM
from stripeflow.testing.pipedrive import FakePipedrive
from stripeflow.testing.vendor import FakeClock
from tests.tasks.crm.samples import deal_of as sample_deal

INVOICE = "https://pay.stripe.com/invoice/acct_1Pxyz/test_" + "Q" * 260 + "/pdf?s=ap"  # over 255
PL_LABELS = {f.name: f.label_pl for f in DEAL_FIELDS}


def refunded_payment() -> Payment:
    return Payment(
        payment_id="pi_refund1",
        customer_id="cus_1",
        email="Anna@Firma.pl",
        name="Anna Nowak",
        amount=Decimal("249.00"),
        refunded_amount=Decimal("100.50"),
        currency="PLN",
        occurred_at=datetime(2026, 12, 31, 23, 30, tzinfo=UTC),  # 1 January in Warsaw
        status="partially_refunded",
        method="blik",
        kind="subscription",
        products=("Kurs Pro",),
        invoice_pdf=INVOICE,
        receipt_url="https://pay.stripe.com/receipts/payment/CAcaFwoV",
    )


def deal_of(p: Payment, language: str = "pl", stage: str = "refunded") -> DealInput:
    return sample_deal(p, language, stage, title="Kurs Pro")


def make(fake: FakePipedrive, clock: FakeClock, **kw: Any) -> PipedriveCRM:
    return PipedriveCRM(api_token="pd-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock, **kw)


def by_name(fake: FakePipedrive, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """A record's custom fields by their names in Pipedrive, as a user reads them."""
    names = {f["key"]: f["name"] for f in fake.fields[kind]}
    return {names[k]: v for k, v in record["custom_fields"].items()}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_setup_creates_every_field_once_with_polish_labels(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock)
    first = make(fake, clock).setup()
    custom = {f["name"]: f["field_type"] for f in fake.fields["dealFields"] if f["is_custom"]}
    expected = {
        label for name, label in PL_LABELS.items() if name not in ("amount", "currency", "payment_id")
    }
    assert set(custom) == expected | {DEAL_FIELD}
    assert custom["Kwota zwrotu"] == "double" and custom["Data płatności"] == "date"
    assert custom["Faktura (PDF)"] == "text"  # a Stripe link outgrows a 255-character text field
    people = {f["name"] for f in fake.fields["personFields"] if f["is_custom"]}
    assert people == {PERSON_FIELD, "Firma", "NIP"}
    again = make(fake, clock).setup()
    assert first.changed and not again.changed
    assert sum(f["is_custom"] for f in fake.fields["dealFields"]) == len(custom)  # nothing twice
    assert make(fake, clock).check().passed


def test_setup_in_english_and_a_later_language_switch_makes_no_second_set(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock)
    make(fake, clock, language="en").setup()
    names = {f["name"] for f in fake.fields["dealFields"] if f["is_custom"]}
    assert {"Payment method", "Refunded amount", "Payment in Stripe"} <= names
    assert "Metoda płatności" not in names
    switched = make(fake, clock, language="pl")
    report = switched.setup()
    assert not [a for a in report.actions if a[1] == "created" and "Fields" in a[0]]
    assert switched.check().passed


def test_every_payment_field_lands_on_the_deal_typed_as_pipedrive_wants(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    p = refunded_payment()
    [deal_id] = make(fake, clock).upsert_deals([deal_of(p)])
    record = fake.deals[int(deal_id)]
    assert record["value"] == 249.0 and record["currency"] == "PLN"  # Pipedrive's own fields
    assert by_name(fake, "dealFields", record) == {
        DEAL_FIELD: "pi_refund1",
        "Data płatności": "2027-01-01",
        "Status płatności": "częściowy zwrot",
        "Kwota zwrotu": 100.5,
        "Metoda płatności": "BLIK",
        "Produkt lub usługa": "Kurs Pro",
        "Rodzaj płatności": "subskrypcja",
        "Faktura (PDF)": INVOICE,
        "Potwierdzenie płatności": "https://pay.stripe.com/receipts/payment/CAcaFwoV",
        "Płatność w Stripe": "https://dashboard.stripe.com/test/payments/pi_refund1",
    }


def test_a_deal_without_catalogue_values_gets_them_from_its_payment(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    p = refunded_payment()
    bare = DealInput(p.payment_id, "t", p.amount, p.refunded_amount, p.currency, "paid", None, p)
    [deal_id] = make(fake, clock).upsert_deals([bare])
    assert by_name(fake, "dealFields", fake.deals[int(deal_id)])["Metoda płatności"] == "BLIK"


def test_the_mapping_moves_or_drops_a_field_and_setup_follows_it(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock)
    own = fake._add_field("dealFields", "Moja metoda", "varchar")["key"]
    fields = {"receipt_url": "", "method": own, "paid_on": "expected_close_date"}
    make(fake, clock, fields=fields).setup()
    names = {f["name"] for f in fake.fields["dealFields"] if f["is_custom"]}
    assert "Potwierdzenie płatności" not in names and "Metoda płatności" not in names
    assert "Data płatności" not in names
    [deal_id] = make(fake, clock, fields=fields).upsert_deals([deal_of(refunded_payment())])
    record = fake.deals[int(deal_id)]
    assert record["custom_fields"][own] == "BLIK"
    assert record["expected_close_date"] == "2027-01-01"  # a standard field, at the top level
    assert "Potwierdzenie płatności" not in by_name(fake, "dealFields", record)


def test_check_names_each_missing_field_and_how_to_fix_it(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    fake.fields["dealFields"] = [f for f in fake.fields["dealFields"] if f["name"] != "Metoda płatności"]
    report = make(fake, clock).check()
    [problem] = report.problems
    assert problem.startswith("fields.method") and "Metoda płatności" in problem
    assert "stripeflow crm setup pipedrive" in problem and 'method = ""' in problem
    assert make(fake, clock, fields={"method": ""}).check().passed
    bad = make(fake, clock, fields={"method": "f" * 40}).check()
    assert any(p.startswith("fields.method") and "f" * 40 in p for p in bad.problems)


def test_a_missing_field_stops_the_write_with_what_to_run(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    fake.fields["dealFields"] = [f for f in fake.fields["dealFields"] if f["name"] != "Kwota zwrotu"]
    with pytest.raises(PermanentError, match=r"Kwota zwrotu.*crm setup pipedrive"):
        make(fake, clock).upsert_deals([deal_of(refunded_payment())])
    assert not fake.deals


def test_the_fake_refuses_values_pipedrive_would_refuse(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    keys = {f["name"]: f["key"] for f in fake.fields["dealFields"]}
    crm = make(fake, clock)
    crm.schema()
    for name, bad in (("Kwota zwrotu", "100.50"), ("Data płatności", "01.01.2027"), (DEAL_FIELD, "x" * 256)):
        with pytest.raises(PermanentError):
            crm.api.data("POST", "/api/v2/deals", json={"title": "t", "custom_fields": {keys[name]: bad}})
    assert not fake.deals


def test_a_lost_field_create_during_setup_makes_one_field(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock)
    fake.inject(502, path="dealFields", method="POST", after_write=True)
    fake.inject(502, path="stages", method="POST", timeout=True)
    make(fake, clock).setup()
    names = [f["name"] for f in fake.fields["dealFields"]]
    assert len(names) == len(set(names))
    stages = [(s["pipeline_id"], s["name"]) for s in fake.stages.values()]
    assert len(stages) == len(set(stages))


def test_persons_carry_phone_company_and_tax_id(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    c = ContactInput(
        key="anna@firma.pl",
        email="anna@firma.pl",
        name="Anna Nowak",
        customer_id="cus_1",
        phone="+48 600 100 200",
        company="Firma Sp. z o.o.",
        tax_id="PL5260250274",
    )
    [pid] = make(fake, clock).upsert_contacts([c])
    person = fake.persons[int(pid)]
    assert person["phones"] == [{"value": "+48 600 100 200", "primary": True, "label": "work"}]
    assert by_name(fake, "personFields", person) == {
        PERSON_FIELD: "cus_1",
        "Firma": "Firma Sp. z o.o.",
        "NIP": "PL5260250274",
    }


def test_a_known_person_gains_the_phone_and_tax_id_and_keeps_its_other_phone(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    bare = ContactInput(key="anna@firma.pl", email="anna@firma.pl", name="Anna Nowak", customer_id="cus_1")
    [pid] = make(fake, clock).upsert_contacts([bare])
    fake.persons[int(pid)]["phones"] = [{"value": "+48 22 000 00 00", "primary": True, "label": "work"}]
    full = ContactInput(
        key="anna@firma.pl",
        email="anna@firma.pl",
        name="Anna Nowak",
        customer_id="cus_1",
        phone="+48 600 100 200",
        tax_id="PL5260250274",
    )
    assert make(fake, clock).upsert_contacts([full]) == [pid]
    person = fake.persons[int(pid)]
    assert [p["value"] for p in person["phones"]] == ["+48 600 100 200", "+48 22 000 00 00"]
    assert by_name(fake, "personFields", person)["NIP"] == "PL5260250274"
    assert len(fake.persons) == 1
    calls = fake.calls("/api/v2/persons", "PATCH")
    make(fake, clock).upsert_contacts([full])  # nothing new: no write
    assert fake.calls("/api/v2/persons", "PATCH") == calls


def test_a_key_field_given_by_key_is_checked_by_key(clock: FakeClock) -> None:
    fake = FakePipedrive(clock=clock).ready()
    key = fake.field_key("dealFields", DEAL_FIELD)
    next(f for f in fake.fields["dealFields"] if f["key"] == key)["name"] = "Renamed by a user"
    assert make(fake, clock, deal_field_key=key).check().passed
    [deal_id] = make(fake, clock, deal_field_key=key).upsert_deals([deal_of(refunded_payment())])
    assert fake.deals[int(deal_id)]["custom_fields"][key] == "pi_refund1"
    bad = make(fake, clock, deal_field_key="0" * 40).check()
    assert [p for p in bad.problems if p.startswith("options.deal_field_key")]
