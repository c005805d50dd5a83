"""HubSpot as it behaves (issue 10): its search lags and matches a string `IN` only lower-case,
`deal_currency_code` takes only the portal's currencies and one bad input fails a whole batch,
and every payment field the product promises is on the deal, in properties `setup()` makes."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from stripeflow.core.batching import call_in_batches
from stripeflow.core.errors import PermanentError, RetriableError
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import Changes, Payment, PaymentChange, PaymentKind, PaymentMethod, PaymentStatus
from stripeflow.tasks.crm import hubspot
from stripeflow.tasks.crm.base import ContactInput
from stripeflow.tasks.crm.hubspot import HubSpotCRM
from stripeflow.tasks.crm.tasks import upsert_contacts
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.vendor import FakeClock
from tests.tasks.crm.samples import deal_of

AUTH = {"Authorization": "Bearer pat-fake"}
CUSTOMER = "cus_NffrFeUfNV2Hib"  # Stripe ids are mixed case


def build(fake: FakeHubSpot, clock: FakeClock, **kw: Any) -> HubSpotCRM:
    return HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock, **kw)


def client(fake: FakeHubSpot) -> httpx.Client:
    return httpx.Client(transport=fake.transport(), base_url="http://h", headers=AUTH)


def no_email(customer: str = CUSTOMER, **kw: Any) -> ContactInput:
    return ContactInput(key=customer, email=None, name="Anna Nowak", customer_id=customer, **kw)


def search_in(c: httpx.Client, values: list[str]) -> list[str]:
    body = {
        "filterGroups": [
            {"filters": [{"propertyName": "stripe_customer_id", "operator": "IN", "values": values}]}
        ]
    }
    return [r["id"] for r in c.post("/crm/v3/objects/contacts/search", json=body).json()["results"]]


def paid(
    n: int = 1,
    *,
    currency: str = "PLN",
    method: PaymentMethod = PaymentMethod.blik,
    status: PaymentStatus = PaymentStatus.succeeded,
    **kw: Any,
) -> Payment:
    return Payment(
        payment_id=f"pi_3Q{n:04d}AbCdEf",
        customer_id=CUSTOMER,
        email=f"anna{n}@example.pl",
        name="Anna Nowak",
        amount=Decimal("249.00"),
        currency=currency,
        occurred_at=datetime(2026, 12, 31, 23, 30, tzinfo=UTC),  # 1 January in Warsaw
        products=("Subskrypcja Pro",),
        status=status,
        method=method,
        kind=PaymentKind.subscription,
        invoice_pdf="https://pay.stripe.com/invoice/acct_1/test_x/pdf",
        receipt_url="https://pay.stripe.com/receipts/payment/x",
        **kw,
    )


# --- search: lower-case IN, lag ---------------------------------------------------------------


def test_the_fakes_string_in_matches_only_lower_case_values_and_search_lags_writes() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, search_lag=5.0).ready(contact_key=False)
    c = client(fake)
    made = c.post("/crm/v3/objects/contacts", json={"properties": {"stripe_customer_id": CUSTOMER}}).json()
    assert search_in(c, [CUSTOMER.lower()]) == []  # not indexed yet
    clock.sleep(5.0)
    assert search_in(c, [CUSTOMER]) == []  # mixed case never matches
    assert search_in(c, [CUSTOMER.lower()]) == [made["id"]]
    c.patch(
        f"/crm/v3/objects/contacts/{made['id']}", json={"properties": {"stripe_customer_id": "cus_other"}}
    )
    assert search_in(c, [CUSTOMER.lower()]) == [made["id"]]  # search still sees the old value
    clock.sleep(5.0)
    assert search_in(c, [CUSTOMER.lower()]) == []


def test_an_email_less_contact_made_earlier_is_found_by_its_mixed_case_customer_id() -> None:
    """A contact an earlier run made (long indexed): the search must find it, not make another."""
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready(contact_key=False)
    [first] = build(fake, clock).upsert_contacts([no_email()])
    clock.sleep(60)
    again = build(fake, clock)  # another process: nothing remembered
    assert again.upsert_contacts([no_email()]) == [first]
    assert len(fake.objects["contacts"]) == 1 and fake.calls("/batch/create") == 1


def test_a_case_twin_of_a_customer_id_is_another_customer() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready(contact_key=False)
    twin = CUSTOMER.swapcase()
    [first] = build(fake, clock).upsert_contacts([no_email()])
    clock.sleep(60)
    [other] = build(fake, clock).upsert_contacts([no_email(twin)])  # the search returns both
    assert other != first and len(fake.objects["contacts"]) == 2


def test_a_resync_under_lag_does_not_make_the_contact_again(ledger: Ledger) -> None:
    """Search does not show what was just made. The ledger's link is what we trust: a second
    payment of the same e-mail-less customer, synced by another process a moment later, goes to
    the contact made by the first, with no search and no create."""
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, search_lag=30.0).ready(contact_key=False)
    one = paid(1).model_copy(update={"email": None})
    two = paid(2).model_copy(update={"email": None})
    first = upsert_contacts.fn(build(fake, clock), ledger, Changes([PaymentChange(one, None)]))
    searches = fake.calls("/search")
    second = upsert_contacts.fn(build(fake, clock), ledger, Changes([PaymentChange(two, None)]))
    assert second == first == {CUSTOMER: next(iter(fake.objects["contacts"]))}
    assert len(fake.objects["contacts"]) == 1
    assert fake.calls("/search") == searches and fake.calls("/batch/create") == 1


def test_the_same_adapter_never_searches_again_for_what_it_made() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, search_lag=30.0).ready(contact_key=False)
    crm = build(fake, clock)
    first = crm.upsert_contacts([no_email(), no_email("cus_Second1")])
    assert crm.upsert_contacts([no_email("cus_Second1"), no_email()]) == first[::-1]
    assert len(fake.objects["contacts"]) == 2 and fake.calls("/search") == 1


@pytest.mark.parametrize("timeout", [True, False], ids=["timeout", "502"])
def test_a_lost_contacts_create_is_looked_for_after_the_lag_and_never_resent(timeout: bool) -> None:
    """`contacts/batch/create` carries no key: after a fault after the write, the seam does not
    resend it; the adapter waits for search to show the record, finds it, and creates nothing."""
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, search_lag=15.0).ready(contact_key=False)
    crm = build(fake, clock)
    fake.inject(502, path=r"/contacts/batch/create$", after_write=True, timeout=timeout)
    start = clock.now
    [found] = crm.upsert_contacts([no_email()])
    assert fake.injected()["timeout_after_write" if timeout else "5xx_after_write"] == 1
    assert list(fake.objects["contacts"]) == [found]
    assert fake.calls("/batch/create") == 1 and clock.now - start >= 15.0


def test_a_lost_create_that_search_shows_too_late_is_left_to_the_tasks_retry() -> None:
    """Longer than the looks wait: nothing is created again in this attempt; the task retries."""
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, search_lag=300.0).ready(contact_key=False)
    crm = build(fake, clock)
    fake.inject(502, path=r"/contacts/batch/create$", after_write=True, timeout=True)
    with pytest.raises(RetriableError):
        crm.upsert_contacts([no_email()])
    assert fake.calls("/batch/create") == 1 and len(fake.objects["contacts"]) == 1
    clock.sleep(300)  # the task's later retry: search shows it now
    assert crm.upsert_contacts([no_email()]) == list(fake.objects["contacts"])
    assert fake.calls("/batch/create") == 1


# --- currencies and whole-batch failures ------------------------------------------------------


def test_the_fake_fails_a_whole_batch_for_a_currency_the_portal_lacks() -> None:
    fake = FakeHubSpot(currencies=("PLN",)).ready()
    inputs = [
        {
            "idProperty": "stripe_payment_id",
            "id": f"pi_{c}",
            "properties": {"deal_currency_code": c, "amount": "1"},
        }
        for c in ("PLN", "EUR")
    ]
    r = client(fake).post("/crm/v3/objects/deals/batch/upsert", json={"inputs": inputs})
    assert r.status_code == 400 and r.json()["category"] == "VALIDATION_ERROR"
    assert "INVALID_OPTION" in r.json()["message"] and r.json()["errors"][0]["code"] == "INVALID_OPTION"
    assert fake.objects["deals"] == {}  # the good one was not written either


def test_a_deal_in_a_currency_the_portal_lacks_lands_with_the_others_in_one_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, currencies=("PLN",)).ready()
    crm = build(fake, clock)
    deals = [deal_of(paid(1)), deal_of(paid(2, currency="EUR")), deal_of(paid(3))]
    with caplog.at_level(logging.WARNING, logger="stripeflow.tasks.crm.hubspot"):
        ids = crm.upsert_deals(deals)
        crm.upsert_deals([deal_of(paid(4, currency="EUR"))])
    assert len(set(ids)) == 3 and len(fake.objects["deals"]) == 4
    eur = fake.deal_by_payment(paid(2).payment_id)["properties"]
    assert "deal_currency_code" not in eur and "amount" not in eur  # 249 would read as złoty
    assert (eur["stripeflow_amount"], eur["stripeflow_currency"]) == ("249.00", "EUR")
    pln = fake.deal_by_payment(paid(1).payment_id)["properties"]
    assert (pln["amount"], pln["deal_currency_code"], pln["stripeflow_currency"]) == ("249.00", "PLN", "")
    assert fake.calls("/deals/batch/upsert") == 2 and fake.calls("/properties/deals") == 1  # read once
    [warning] = [r for r in caplog.records if "EUR" in r.getMessage()]  # once, saying what to do
    assert "Settings > Account defaults > Currencies" in warning.getMessage()


def test_a_currency_enabled_or_removed_after_the_read_is_followed() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, currencies=("PLN", "EUR")).ready()
    crm = build(fake, clock)
    crm.upsert_deals([deal_of(paid(1))])
    fake.set_currencies(["PLN"])  # removed after the adapter read them: HubSpot refuses EUR
    crm.upsert_deals([deal_of(paid(2, currency="EUR"))])
    assert fake.deal_by_payment(paid(2).payment_id)["properties"]["stripeflow_currency"] == "EUR"
    fake.set_currencies(["PLN", "EUR"])  # added again: seen at the next read
    clock.sleep(hubspot.SCHEMA_RECHECK + 1)
    crm.upsert_deals([deal_of(paid(2, currency="EUR"))])
    props = fake.deal_by_payment(paid(2).payment_id)["properties"]
    assert (props["deal_currency_code"], props["amount"], props["stripeflow_currency"]) == (
        "EUR",
        "249.00",
        "",
    )


def test_one_bad_deal_fails_its_batch_whole_and_only_it_is_lost() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    crm = build(fake, clock)
    deals = [deal_of(paid(n)) for n in range(1, 5)]
    deals[1] = replace(deals[1], stage="no-such-stage")
    before = fake.calls("/deals/batch/upsert")
    with pytest.raises(PermanentError):
        crm.upsert_deals(deals)
    assert fake.objects["deals"] == {} and fake.calls("/deals/batch/upsert") == before + 1
    failed: list[str] = []
    ids = call_in_batches(deals, crm.batch_size, crm.upsert_deals, lambda d, exc: failed.append(d.payment_id))
    assert failed == [deals[1].payment_id] and [i is None for i in ids] == [False, True, False, False]


# --- every payment field on the deal ----------------------------------------------------------


def test_every_payment_field_is_on_the_deal_in_the_accounts_language() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    p = paid(1, status=PaymentStatus.partially_refunded, refunded_amount=Decimal("49.00"))
    build(fake, clock).upsert_deals([deal_of(p)])
    props = fake.deal_by_payment(p.payment_id)["properties"]
    assert {k: props.get(k) for k in hubspot.DEFAULT_FIELDS.values()} == {
        "amount": "249.00",
        "deal_currency_code": "PLN",
        "closedate": "2027-01-01",  # the business date, in Warsaw
        "stripe_payment_id": p.payment_id,
        "stripeflow_status": "częściowy zwrot",
        "stripeflow_refunded_amount": "49.00",
        "stripeflow_method": "BLIK",
        "stripeflow_product": "Subskrypcja Pro",
        "stripeflow_kind": "subskrypcja",
        "stripeflow_invoice_pdf": p.invoice_pdf,
        "stripeflow_receipt_url": p.receipt_url,
        "stripeflow_dashboard_url": f"https://dashboard.stripe.com/test/payments/{p.payment_id}",
    }
    en = paid(2, method=PaymentMethod.card)
    build(fake, clock).upsert_deals([deal_of(en, "en")])
    props = fake.deal_by_payment(en.payment_id)["properties"]
    assert (props["stripeflow_status"], props["stripeflow_method"], props["stripeflow_kind"]) == (
        "success",
        "card",
        "subscription",
    )


def test_the_mapping_is_overridable_and_an_empty_field_is_left_off() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    fake.properties["deals"]["my_method"] = {"name": "my_method", "type": "string", "hasUniqueValue": False}
    crm = build(fake, clock, fields={"receipt_url": "", "method": "my_method"})
    crm.upsert_deals([deal_of(paid(1))])
    props = fake.deal_by_payment(paid(1).payment_id)["properties"]
    assert props["my_method"] == "BLIK" and "stripeflow_method" not in props
    assert "stripeflow_receipt_url" not in props and props["stripeflow_kind"] == "subskrypcja"


def test_a_deal_property_an_older_setup_did_not_make_is_left_off_not_the_deal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    del fake.properties["deals"]["stripeflow_method"]
    with caplog.at_level(logging.WARNING, logger="stripeflow.tasks.crm.hubspot"):
        build(fake, clock).upsert_deals([deal_of(paid(1))])
    props = fake.deal_by_payment(paid(1).payment_id)["properties"]
    assert props["stripeflow_status"] == "sukces" and "stripeflow_method" not in props
    assert any("stripeflow crm setup hubspot" in r.getMessage() for r in caplog.records)


def test_contacts_carry_the_phone_company_and_tax_id_stripe_knows() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    c = ContactInput(
        key="anna@example.pl",
        email="anna@example.pl",
        name="Anna Nowak",
        customer_id=CUSTOMER,
        phone="+48 600 100 200",
        company="Nowak Sp. z o.o.",
        tax_id="PL5260250274",
    )
    [cid] = build(fake, clock).upsert_contacts([c])
    props = fake.objects["contacts"][cid]["properties"]
    assert (props["firstname"], props["lastname"], props["phone"], props["company"]) == (
        "Anna",
        "Nowak",
        "+48 600 100 200",
        "Nowak Sp. z o.o.",
    )
    assert props["stripeflow_tax_id"] == "PL5260250274"
    build(fake, clock).upsert_contacts([replace(c, phone=None, company=None)])  # Stripe forgot: kept
    assert fake.objects["contacts"][cid]["properties"]["phone"] == "+48 600 100 200"


@pytest.mark.parametrize(
    ("language", "status_label", "group"),
    [("pl", "Status płatności", "Płatności Stripe"), ("en", "Payment status", "Stripe payments")],
)
def test_setup_creates_the_properties_with_catalogue_labels_once(
    language: str, status_label: str, group: str
) -> None:
    fake = FakeHubSpot()
    crm = HubSpotCRM(token="pat-fake", transport=fake.transport(), language=language)
    before = crm.check()
    missing = " ".join(before.problems)
    for prop in ("stripeflow_status", "stripeflow_method", "stripeflow_dashboard_url", "stripeflow_tax_id"):
        assert f"{prop} is missing" in missing
    assert "run `stripeflow crm setup hubspot`" in missing
    first = crm.setup()
    assert fake.groups["deals"]["stripeflow"]["label"] == group
    status = fake.properties["deals"]["stripeflow_status"]
    assert (status["label"], status["groupName"], status["type"]) == (status_label, "stripeflow", "string")
    assert fake.properties["deals"]["stripeflow_refunded_amount"]["type"] == "number"
    assert ("deals property stripeflow_status", "created", status_label) in first.actions
    again = HubSpotCRM(token="pat-fake", transport=fake.transport(), language=language).setup()
    assert not again.changed
    assert crm.check().passed
    assert "portal currencies: PLN, EUR, USD" in " ".join(crm.check().ok)


def test_check_names_a_mapped_property_that_does_not_exist() -> None:
    fake = FakeHubSpot()
    HubSpotCRM(token="pat-fake", transport=fake.transport()).setup()
    report = HubSpotCRM(token="pat-fake", transport=fake.transport(), fields={"method": "my_method"}).check()
    assert report.problems == [
        "fields.method: deal property 'my_method' does not exist in HubSpot; "
        "create it there, or map the field elsewhere"
    ]


def test_from_target_takes_the_mapping_with_a_dropped_field_and_the_language(tmp_path: Any) -> None:
    from stripeflow.core.config import CRMTarget

    target = CRMTarget.model_validate(
        {"type": "hubspot", "fields": {"receipt_url": "", "method": "my_method"}}
    )
    crm = HubSpotCRM.from_target(target, tmp_path, env={"HUBSPOT_TOKEN": "pat-fake"}, language="en")
    assert crm.language == "en" and crm.mapping["method"] == "my_method" and "receipt_url" not in crm.mapping
    assert "stripeflow_receipt_url" not in {s.name for s in crm.wanted_properties()}


def test_a_tax_id_without_its_property_leaves_the_tax_id_out_not_the_batch() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    del fake.properties["contacts"]["stripeflow_tax_id"]  # an older setup
    crm = build(fake, clock)
    c = ContactInput(key="a@example.pl", email="a@example.pl", name="A B", customer_id=CUSTOMER, tax_id="PL1")
    ids = crm.upsert_contacts([c, replace(c, key="b@example.pl", email="b@example.pl")])
    assert len(set(ids)) == 2 and all(
        "stripeflow_tax_id" not in o["properties"] for o in fake.objects["contacts"].values()
    )
    crm.upsert_contacts([c])
    assert fake.calls("/properties/contacts") == 1  # read once
