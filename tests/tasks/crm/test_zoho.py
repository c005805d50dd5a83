"""Zoho quirks (`tasks/crm/zoho.py`), each helper on its own."""

from __future__ import annotations

import httpx
import pytest

from stripeflow.core.errors import PermanentError
from stripeflow.tasks.crm import zoho
from stripeflow.testing.zoho import FakeZoho
from tests.tasks.crm.harness import contact, deal


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
