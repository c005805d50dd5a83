"""Zoho quirks (`tasks/crm/zoho.py`), each helper on its own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from stripeflow.core.config import CRMTarget
from stripeflow.core.errors import PermanentError
from stripeflow.tasks.crm import zoho
from stripeflow.testing.zoho import FakeZoho
from tests.tasks.crm.harness import contact, deal
from tests.tasks.crm.samples import rich_deal


def test_zoho_record_errors() -> None:
    body = {
        "data": [
            {"status": "success", "details": {"id": "1"}},
            {
                "status": "error",
                "code": "MANDATORY_NOT_FOUND",
                "message": "required field not found",
                "details": {"api_name": "Last_Name"},
            },
        ]
    }
    assert len(zoho.record_errors(body)) == 1
    with pytest.raises(PermanentError, match="Last_Name"):
        zoho.raise_record_errors(body, "contacts")


def test_zoho_unique_flag() -> None:
    assert zoho.is_unique({"unique": {"casesensitive": False}}) and not zoho.is_unique({"unique": {}})


def zoho_crm(fake: FakeZoho, **kw: object) -> zoho.ZohoCRM:
    return zoho.ZohoCRM(
        client_id="1000.FAKECLIENT",
        client_secret="fake-secret",
        refresh_token="1000.fake-refresh",
        accounts_url="http://accounts.zoho.eu.test",
        transport=fake.transport(),
        **kw,
    )  # type: ignore[arg-type]


def test_zoho_refreshes_once_on_invalid_token_and_repeats_the_call() -> None:
    fake = FakeZoho().ready()
    crm = zoho_crm(fake)
    crm.upsert_contacts([contact(1)])
    fake.expire_tokens()
    crm.upsert_contacts([contact(1)])
    assert [r.path for r in fake.log] == [
        "/oauth/v2/token",
        "/crm/v7/Contacts/upsert",
        "/crm/v7/Contacts/upsert",
        "/oauth/v2/token",
        "/crm/v7/Contacts/upsert",
    ]
    assert fake.statuses()[2] == 401


def test_zoho_uses_the_api_domain_from_the_token_answer() -> None:
    fake = FakeZoho().ready()
    crm = zoho_crm(fake)
    crm.upsert_contacts([contact(1)])
    assert crm.api.base_url == "http://accounts.zoho.eu.test"  # the fake names itself as api_domain


def test_zoho_refresh_token_travels_in_the_body_not_the_url() -> None:
    seen: list[httpx.Request] = []
    fake = FakeZoho().ready()

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake.handle(request)

    crm = zoho.ZohoCRM(
        client_id="1000.FAKECLIENT",
        client_secret="fake-secret",
        refresh_token="1000.fake-refresh",
        accounts_url="http://a",
        transport=httpx.MockTransport(spy),
    )
    crm.upsert_contacts([contact(1)])
    assert "fake-refresh" not in str(seen[0].url) and b"fake-refresh" in seen[0].content


def test_zoho_contacts_match_by_email_then_customer_id() -> None:
    fake = FakeZoho().ready()
    crm = zoho_crm(fake)
    [by_customer] = crm.upsert_contacts([contact(1, email=False)])
    [by_email] = crm.upsert_contacts([contact(1)])  # same customer id, now with an e-mail: the same contact
    assert by_customer == by_email and len(fake.records["Contacts"]) == 1


def test_mapped_fields_keep_the_vendor_type_when_the_caller_also_mapped_them() -> None:
    fake = FakeZoho().ready()
    fake.fields["Deals"]["Stripe_Amount"] = {"api_name": "Stripe_Amount", "data_type": "double"}
    crm = zoho_crm(fake, fields={"amount": "Stripe_Amount"})
    d = deal(1)
    d = type(d)(**{**d.__dict__, "fields": {"Stripe_Amount": "249.00", "Description": "extra"}})
    crm.upsert_deals([d])
    stored = fake.deal_by_payment("pi_000001")
    assert stored is not None and stored["Stripe_Amount"] == 249.0 and stored["Description"] == "extra"


# --- payment fields, contacts, setup and check (issue 10) ----------------------------------------


def keys_only(fake: FakeZoho) -> FakeZoho:
    """As an older setup left an org: only the two unique keys exist."""
    for module, name in (("Deals", zoho.PAYMENT_FIELD), ("Contacts", zoho.CUSTOMER_FIELD)):
        fake.fields[module][name] = {
            "api_name": name,
            "field_label": name.replace("_", " "),
            "data_type": "text",
            "custom_field": True,
            "id": fake.new_id(),
            "unique": {"casesensitive": False},
        }
    return fake


def test_the_fake_names_a_field_from_its_label_and_keeps_the_name_when_relabelled() -> None:
    fake = FakeZoho()
    crm = zoho_crm(fake)
    crm.api.request_json(
        "POST",
        "/crm/v7/settings/fields",
        params={"module": "Deals"},
        json={"fields": [{"field_label": "Status płatności", "data_type": "text"}]},
    )
    assert "Status_p_atno_ci" in fake.fields["Deals"]  # why setup creates under the API name first
    fid = fake.fields["Deals"]["Status_p_atno_ci"]["id"]
    crm.api.request_json(
        "PATCH",
        "/crm/v7/settings/fields",
        params={"module": "Deals"},
        json={"fields": [{"id": fid, "field_label": "Status"}]},
    )
    assert fake.fields["Deals"]["Status_p_atno_ci"]["field_label"] == "Status"


@pytest.mark.parametrize(
    ("language", "status_label", "currency_label", "tax_label"),
    [("pl", "Status płatności", "Waluta", "NIP"), ("en", "Payment status", "Currency (Stripe)", "Tax ID")],
)
def test_setup_creates_every_payment_field_under_its_api_name_labelled_in_the_accounts_language(
    language: str, status_label: str, currency_label: str, tax_label: str
) -> None:
    fake = FakeZoho()
    report = zoho_crm(fake, language=language).setup()
    assert not [a for a in report.actions if a[1] == "manual"], report.actions
    deals = fake.fields["Deals"]
    for logical, api_name in zoho.DEFAULT_FIELDS.items():
        assert api_name in deals, logical
    assert deals["Payment_Status"]["field_label"] == status_label
    assert (
        deals["Payment_Currency"]["field_label"] == currency_label
    )  # en: the native Currency has "Currency"
    assert (
        deals["Refunded_Amount"]["data_type"] == "currency" and deals["Invoice_PDF"]["data_type"] == "website"
    )
    assert zoho.is_unique(deals["Stripe_Payment_Id"])
    assert fake.fields["Contacts"]["Tax_ID"]["field_label"] == tax_label
    again = zoho_crm(fake, language=language).setup()
    assert not again.changed and zoho_crm(fake, language=language).check().passed


def test_before_setup_a_deal_is_refused_and_check_names_each_missing_field() -> None:
    fake = keys_only(FakeZoho())
    crm = zoho_crm(fake)
    with pytest.raises(PermanentError, match="not available") as refused:
        crm.upsert_deals([rich_deal(1)])
    assert refused.value.code == "INVALID_DATA"
    problems = crm.check().problems
    for api_name, label in [
        ("Payment_Status", "Status płatności"),
        ("Stripe_Dashboard_URL", "Płatność w Stripe"),
    ]:
        assert any(api_name in p and label in p and "crm setup zoho" in p for p in problems), problems
    assert any("Contacts.Company_Name" in p for p in problems)
    assert not any("Stripe_Payment_Id" in p or "Closing_Date" in p for p in problems)


def test_a_deal_carries_every_payment_field_typed_as_zoho_wants() -> None:
    fake = FakeZoho().ready()
    [deal_id] = zoho_crm(fake).upsert_deals([rich_deal(1)])
    stored = fake.records["Deals"][deal_id]
    assert (stored["Amount"], stored["Closing_Date"], stored["Payment_Currency"]) == (
        249.0,
        "2026-03-01",
        "PLN",
    )
    assert stored["Payment_Status"] == "częściowy zwrot" and stored["Refunded_Amount"] == 50.0
    assert stored["Payment_Method"] == "BLIK" and stored["Payment_Type"] == "subskrypcja"
    assert stored["Product_Or_Service"] == "Subskrypcja Pro" and stored["Invoice_PDF"].endswith("/pdf")
    assert stored["Receipt_URL"].endswith("r_1")
    assert stored["Stripe_Dashboard_URL"] == "https://dashboard.stripe.com/test/payments/pi_000001"


def test_with_multi_currency_the_native_currency_field_is_used() -> None:
    fake = FakeZoho().ready()
    crm = zoho_crm(fake, send_currency=True)
    [deal_id] = crm.upsert_deals([rich_deal(1)])
    assert fake.records["Deals"][deal_id]["Currency"] == "PLN"
    assert "Payment_Currency" not in fake.records["Deals"][deal_id]


def test_the_mapping_can_move_or_drop_a_payment_field() -> None:
    fake = FakeZoho().ready()
    crm = zoho_crm(fake, fields={"method": "My_Method", "receipt_url": ""})
    report = crm.setup()
    assert ("Deals.My_Method", "created", "Metoda płatności") in report.actions
    [deal_id] = crm.upsert_deals([rich_deal(1)])
    stored = fake.records["Deals"][deal_id]
    assert stored["My_Method"] == "BLIK" and "Payment_Method" not in stored and "Receipt_URL" not in stored


def test_the_fake_refuses_a_value_of_the_wrong_type() -> None:
    fake = FakeZoho().ready()
    wrong = zoho_crm(fake, fields={"status": "Refunded_Amount", "refunded_amount": ""})
    with pytest.raises(PermanentError, match="Refunded_Amount"):
        wrong.upsert_deals([rich_deal(2)])  # text into a currency field: INVALID_DATA


def test_contacts_get_the_phone_company_and_tax_id_stripe_knows() -> None:
    fake = FakeZoho().ready()
    crm = zoho_crm(fake)
    known = replace(contact(1), phone="+48 600 100 200", company="Kowalski sp. z o.o.", tax_id="PL5260250995")
    [cid] = crm.upsert_contacts([known])
    stored = fake.records["Contacts"][cid]
    assert (stored["Phone"], stored["Company_Name"], stored["Tax_ID"]) == (
        "+48 600 100 200",
        "Kowalski sp. z o.o.",
        "PL5260250995",
    )
    assert crm.upsert_contacts([contact(1)]) == [cid]  # Stripe knows less now: nothing is cleared
    assert fake.records["Contacts"][cid]["Tax_ID"] == "PL5260250995"


def test_setup_says_exactly_what_to_create_by_hand_when_the_api_refuses() -> None:
    fake = FakeZoho()
    fake.route(
        "POST",
        r"/crm/v7/settings/fields",
        lambda call: httpx.Response(
            403,
            json={"code": "NO_PERMISSION", "details": {}, "message": "permission denied", "status": "error"},
        ),
    )
    fake.routes.insert(0, fake.routes.pop())
    report = zoho_crm(fake).setup()
    notes = {thing: note for thing, status, note in report.actions if status == "manual"}
    assert (
        "Single Line field labelled 'Payment Status' (so its API name is Payment_Status)"
        in notes["Deals.Payment_Status"]
    )
    assert "'Status płatności'" in notes["Deals.Payment_Status"]
    assert "Currency field" in notes["Deals.Refunded_Amount"] and "URL field" in notes["Deals.Invoice_PDF"]


def test_the_accounts_language_comes_from_the_option_else_from_the_caller(tmp_path: Path) -> None:
    env = {"ZOHO_CLIENT_ID": "1000.ID", "ZOHO_CLIENT_SECRET": "s", "ZOHO_REFRESH_TOKEN": "r"}
    assert zoho.ZohoCRM.from_target(CRMTarget(type="zoho"), tmp_path, env=env).language == "pl"
    assert zoho.ZohoCRM.from_target(CRMTarget(type="zoho"), tmp_path, env=env, language="en").language == "en"
    target = CRMTarget(type="zoho", options={"language": "en"})
    assert zoho.ZohoCRM.from_target(target, tmp_path, env=env, language="pl").language == "en"
