"""Bitrix24 quirks (`tasks/crm/bitrix24.py`), each helper on its own, and the fake's query parser."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from stripeflow.core.config import CRMTarget
from stripeflow.core.errors import AuthError, ConfigError, PermanentError, RateLimitedError, RetriableError
from stripeflow.tasks.crm import bitrix24
from stripeflow.testing.bitrix24 import FakeBitrix24, parse_php_query
from stripeflow.testing.vendor import FakeClock
from tests.tasks.crm.harness import contact
from tests.tasks.crm.samples import rich_deal


def test_php_query_round_trips_through_the_fakes_parser() -> None:
    params = {
        "filter": {"EMAIL": "a+b@c.pl"},
        "select": ["ID", "NAME"],
        "fields": {"EMAIL": [{"VALUE": "x@y.pl", "VALUE_TYPE": "WORK"}], "OPENED": True},
    }
    text = bitrix24.php_query(params)
    assert "filter[EMAIL]=a%2Bb%40c.pl" in text and "select[1]=NAME" in text
    assert parse_php_query(text) == {**params, "fields": {**params["fields"], "OPENED": "Y"}}


def test_bitrix_stage_ids_carry_the_category_prefix() -> None:
    assert bitrix24.stage_in_category("WON", 0) == "WON"
    assert bitrix24.stage_in_category("WON", 3) == "C3:WON"
    assert bitrix24.stage_in_category("C3:WON", 3) == "C3:WON"


def test_bitrix_empty_maps_arrive_as_lists() -> None:
    assert bitrix24.as_dict([]) == {} and bitrix24.as_dict({"a": 1}) == {"a": 1}


def test_bitrix_waits() -> None:
    over = httpx.Response(429, json={"error": "OPERATION_TIME_LIMIT", "time": {"operating_reset_at": 1_030}})
    assert bitrix24.rate_limit_wait(over, now=1_000, per_second=2) == 30
    full = httpx.Response(
        503, json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    )
    assert bitrix24.rate_limit_wait(full, now=0, per_second=2) == 0.5
    api = bitrix24.Bitrix24API("http://b/rest/1/x/")
    assert isinstance(api.classify(full), RateLimitedError)
    assert type(api.classify(httpx.Response(503, json={"error": "OVERLOAD_LIMIT"}))) is RetriableError
    assert isinstance(api.classify(httpx.Response(401, json={"error": "NO_AUTH_FOUND"})), AuthError)


def test_bitrix_operation_time_limit_is_waited_until_reset() -> None:
    clock = FakeClock()
    fake = FakeBitrix24(clock=clock, wall=clock).ready()
    crm = bitrix24.Bitrix24CRM(
        webhook_url="http://b" + fake.url,
        transport=fake.transport(),
        sleep=clock.sleep,
        clock=clock,
        wall=clock,
    )
    fake.inject(429)
    assert crm.upsert_contacts([contact(1)])
    assert clock.slept == [5.0]  # the fake's operating_reset_at is 5 s ahead


def test_bitrix_update_does_not_add_a_second_email() -> None:
    fake = FakeBitrix24().ready()
    crm = bitrix24.Bitrix24CRM(webhook_url="http://b" + fake.url, transport=fake.transport())
    [cid] = crm.upsert_contacts([contact(1)])
    renamed = type(contact(1))(
        key="klient1@example.pl", email="klient1@example.pl", name="Anna Nowak", customer_id="cus_000001"
    )
    assert crm.upsert_contacts([renamed]) == [cid]
    assert len(fake.contacts[int(cid)]["EMAIL"]) == 1 and fake.contacts[int(cid)]["LAST_NAME"] == "Nowak"


def test_bitrix_batch_refuses_more_than_fifty_commands() -> None:
    api = bitrix24.Bitrix24API("http://b/rest/1/x/")
    with pytest.raises(ValueError):
        api.batch({f"c{i}": "profile" for i in range(51)})


# --- field names, payment fields, contacts, lost answers (issue 10) ----------------------------


def b24(fake: FakeBitrix24, **kw: Any) -> bitrix24.Bitrix24CRM:
    return bitrix24.Bitrix24CRM(webhook_url="http://b" + fake.url, transport=fake.transport(), **kw)


def test_fake_refuses_a_user_field_name_over_twenty_characters_as_bitrix24_does() -> None:
    fake = FakeBitrix24()
    api = bitrix24.Bitrix24API("http://b" + fake.url, transport=fake.transport())
    with pytest.raises(PermanentError) as refused:
        api.call(
            "crm.deal.userfield.add",
            {"fields": {"FIELD_NAME": "STRIPE_PAYMENT_ID", "USER_TYPE_ID": "string"}},
        )
    assert refused.value.status == 400 and "too long" in refused.value.message
    assert fake.userfields == {}
    assert api.call(
        "crm.deal.userfield.add", {"fields": {"FIELD_NAME": "STRIPE_PI", "USER_TYPE_ID": "string"}}
    )
    assert list(fake.userfields) == ["UF_CRM_STRIPE_PI"]


def test_every_field_name_the_adapter_uses_fits_bitrix24s_limit() -> None:
    names = [bitrix24.PAYMENT_UF, *bitrix24.DEFAULT_FIELDS.values(), *bitrix24.CONTACT_FIELDS.values()]
    assert all(len(n) <= 20 for n in names), [n for n in names if len(n) > 20]


@pytest.mark.parametrize(
    ("language", "status_label", "tax_label"),
    [("pl", "Status płatności", "NIP"), ("en", "Payment status", "Tax ID")],
)
def test_setup_creates_the_payment_and_contact_fields_labelled_in_the_accounts_language(
    language: str, status_label: str, tax_label: str
) -> None:
    fake = FakeBitrix24()
    report = b24(fake, language=language).setup()
    created = {thing for thing, status, _ in report.actions if status == "created"}
    assert {f"deal field {f}" for f in bitrix24.DEFAULT_FIELDS.values() if f.startswith("UF_")} <= created
    assert "deal field UF_CRM_STRIPE_PI" in created and "contact field UF_CRM_SF_TAX_ID" in created
    status = fake.userfields["UF_CRM_SF_STATUS"]
    assert status["EDIT_FORM_LABEL"] == status["LIST_COLUMN_LABEL"] == status_label
    assert fake.userfields["UF_CRM_SF_REFUNDED"]["USER_TYPE_ID"] == "double"
    assert fake.userfields["UF_CRM_SF_DASHBOARD"]["USER_TYPE_ID"] == "url"
    assert fake.contact_userfields["UF_CRM_SF_TAX_ID"]["EDIT_FORM_LABEL"] == tax_label
    again = b24(fake, language=language).setup()
    assert not again.changed and len(fake.userfields) == len(bitrix24.DEFAULT_FIELDS) - 3 + 1
    assert b24(fake, language=language).check().passed


def test_check_names_each_missing_payment_field_with_its_label() -> None:
    fake = FakeBitrix24()
    fake.userfield_add(fake.userfields, {"fields": {"FIELD_NAME": "STRIPE_PI", "USER_TYPE_ID": "string"}})
    problems = b24(fake).check().problems
    for field, label in [
        ("UF_CRM_SF_METHOD", "Metoda płatności"),
        ("UF_CRM_SF_RECEIPT", "Potwierdzenie płatności"),
    ]:
        assert any(field in p and label in p and "crm setup bitrix24" in p for p in problems), problems
    assert any("contact field UF_CRM_SF_COMPANY" in p for p in problems)
    assert not any("UF_CRM_STRIPE_PI" in p for p in problems)


def test_a_deal_carries_every_payment_field_readably() -> None:
    fake = FakeBitrix24().ready()
    [deal_id] = b24(fake).upsert_deals([rich_deal(1)])
    stored = fake.deals[int(deal_id)]
    assert stored["UF_CRM_STRIPE_PI"] == "pi_000001"
    assert (stored["OPPORTUNITY"], stored["CURRENCY_ID"], stored["CLOSEDATE"]) == (
        "249.00",
        "PLN",
        "2026-03-01",
    )
    assert stored["UF_CRM_SF_STATUS"] == "częściowy zwrot" and stored["UF_CRM_SF_REFUNDED"] == "50.00"
    assert stored["UF_CRM_SF_METHOD"] == "BLIK" and stored["UF_CRM_SF_KIND"] == "subskrypcja"
    assert stored["UF_CRM_SF_PRODUCT"] == "Subskrypcja Pro"
    assert stored["UF_CRM_SF_INVOICE"].endswith("/pdf") and stored["UF_CRM_SF_RECEIPT"].endswith("r_1")
    assert stored["UF_CRM_SF_DASHBOARD"] == "https://dashboard.stripe.com/test/payments/pi_000001"


def test_the_mapping_can_move_or_drop_a_payment_field(tmp_path: Path) -> None:
    fake = FakeBitrix24().ready()
    fake.userfield_add(fake.userfields, {"fields": {"FIELD_NAME": "MY_METHOD", "USER_TYPE_ID": "string"}})
    target = CRMTarget(type="bitrix24", fields={"method": "UF_CRM_MY_METHOD", "receipt_url": ""})
    crm = bitrix24.Bitrix24CRM.from_target(
        target, tmp_path, env={"BITRIX24_WEBHOOK_URL": "http://b" + fake.url}, transport=fake.transport()
    )
    [deal_id] = crm.upsert_deals([rich_deal(1)])
    stored = fake.deals[int(deal_id)]
    assert stored["UF_CRM_MY_METHOD"] == "BLIK" and "UF_CRM_SF_METHOD" not in stored
    assert "UF_CRM_SF_RECEIPT" not in stored and stored["UF_CRM_SF_STATUS"] == "częściowy zwrot"


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({"status": "UF_CRM_STRIPE_PAYMENT_STATUS"}, {}),
        ({}, {"payment_id_field": "UF_CRM_STRIPE_PAYMENT_ID"}),
    ],
)
def test_config_refuses_a_user_field_name_bitrix24_could_not_create(
    tmp_path: Path, fields: dict[str, str], options: dict[str, Any]
) -> None:
    target = CRMTarget(type="bitrix24", fields=fields, options=options)
    with pytest.raises(ConfigError, match="20 characters"):
        bitrix24.Bitrix24CRM.from_target(target, tmp_path, env={"BITRIX24_WEBHOOK_URL": "http://b/rest/1/x/"})


def test_contacts_get_the_phone_company_and_tax_id_stripe_knows() -> None:
    fake = FakeBitrix24().ready()
    crm = b24(fake)
    known = replace(contact(1), phone="+48 600 100 200", company="Kowalski sp. z o.o.", tax_id="PL5260250995")
    [cid] = crm.upsert_contacts([known])
    stored = fake.contacts[int(cid)]
    assert stored["PHONE"] == [{"VALUE": "+48 600 100 200", "VALUE_TYPE": "WORK"}]
    assert (
        stored["UF_CRM_SF_COMPANY"] == "Kowalski sp. z o.o." and stored["UF_CRM_SF_TAX_ID"] == "PL5260250995"
    )
    assert crm.upsert_contacts([known]) == [cid]
    assert len(fake.contacts[int(cid)]["PHONE"]) == 1  # PHONE adds what it is sent: sent once
    crm.upsert_contacts([replace(known, phone="+48 600 999 999", tax_id="PL1111111111")])
    assert [v["VALUE"] for v in fake.contacts[int(cid)]["PHONE"]] == ["+48 600 100 200", "+48 600 999 999"]
    assert fake.contacts[int(cid)]["UF_CRM_SF_TAX_ID"] == "PL1111111111"


@pytest.mark.parametrize("timeout", [True, False])
def test_a_lost_answer_to_a_batch_of_adds_and_updates_is_looked_for_not_added_again(timeout: bool) -> None:
    fake = FakeBitrix24().ready()
    bodies: list[bytes] = []
    inner = fake.transport()

    def spy(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return inner.handle_request(request)

    crm = bitrix24.Bitrix24CRM(webhook_url="http://b" + fake.url, transport=httpx.MockTransport(spy))
    [old] = crm.upsert_deals([rich_deal(1)])
    fake.inject_on_command("crm.deal.add", 502, after_write=True, timeout=timeout)
    ids = crm.upsert_deals([rich_deal(1), rich_deal(2)])  # one update, one add, in one batch
    assert ids[0] == old and len(fake.deals) == 2
    assert ids[1] == str(next(k for k, d in fake.deals.items() if d["UF_CRM_STRIPE_PI"] == "pi_000002"))
    writes = [b for b in bodies if b"crm.deal.add" in b or b"crm.deal.update" in b]
    assert [b"crm.deal.add" in b for b in writes] == [True, True, False]  # the look-again only updates


def test_a_lost_answer_to_contact_adds_is_looked_for_not_added_again() -> None:
    fake = FakeBitrix24().ready()
    crm = b24(fake)
    fake.inject_on_command("crm.contact.add", 502, after_write=True, timeout=True)
    first = crm.upsert_contacts([contact(1), contact(2, email=False)])
    assert len(fake.contacts) == 2 and crm.upsert_contacts([contact(1), contact(2, email=False)]) == first
