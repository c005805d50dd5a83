"""Each vendor quirk helper, on its own."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import httpx
import pytest

from stripeflow.core.errors import AuthError, PermanentError, RateLimitedError, RetriableError
from stripeflow.tasks.crm import bitrix24, hubspot, pipedrive, zoho
from stripeflow.tasks.crm.base import NoteInput
from stripeflow.tasks.crm.common import Remembered, mapped_fields, plain, split_name, unique_by
from stripeflow.testing.bitrix24 import FakeBitrix24, parse_php_query
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.vendor import FakeClock
from stripeflow.testing.zoho import FakeZoho
from tests.tasks.crm.harness import contact, deal

# --- shared ---------------------------------------------------------------------------------


def test_split_name() -> None:
    assert split_name("Jan Maria Kowalski", None) == ("Jan Maria", "Kowalski")
    assert split_name("Cher", None) == ("", "Cher")
    assert split_name(None, "anna@firma.pl") == ("", "anna")
    assert split_name(None, None) == ("", "Stripe customer")


def test_unique_by_keeps_the_last_and_maps_positions() -> None:
    chosen, positions = unique_by(["a1", "b1", "a2"], key=lambda s: s[0])
    assert chosen == ["a2", "b1"] and positions == [0, 1, 0]


def test_mapped_fields_from_the_payment_then_the_deal_fields() -> None:
    d = deal(1)
    d = type(d)(**{**d.__dict__, "fields": {"custom": "x"}})
    assert mapped_fields(d, {"amount": "stripe_amount", "products": "product_list", "status": "s"}) == {
        "stripe_amount": "249.00",
        "product_list": "Subskrypcja Pro",
        "s": "succeeded",
        "custom": "x",
    }
    assert plain(Decimal("1.50")) == "1.50"


def test_remembered_is_bounded() -> None:
    memory: Remembered[str] = Remembered(size=2)
    for key in "abc":
        memory.put(key, key.upper())
    assert memory.pop("a") is None and memory.pop("c") == "C" and memory.pop("c") is None


# --- HubSpot --------------------------------------------------------------------------------


def hs429(policy: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        429, json={"status": "error", "policyName": policy, "errorType": "RATE_LIMIT"}, headers=headers
    )


def test_hubspot_rate_limit_wait_reads_the_policy() -> None:
    assert hubspot.rate_limit_wait(hs429("TEN_SECONDLY_ROLLING")) == 10.0
    assert (
        hubspot.rate_limit_wait(
            hs429("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "2000"})
        )
        == 2.0
    )
    assert hubspot.rate_limit_wait(hs429("SECONDLY")) == 1.0
    assert hubspot.rate_limit_wait(hs429("DAILY")) == 3600.0


def test_hubspot_207_raises_with_the_vendor_message() -> None:
    with pytest.raises(PermanentError, match="is not a valid dealstage"):
        hubspot.batch_results(
            {
                "results": [],
                "errors": [{"message": "x is not a valid dealstage", "category": "VALIDATION_ERROR"}],
            },
            "deals",
        )
    assert hubspot.batch_results({"results": [{"id": "1"}]}, "deals") == [{"id": "1"}]


def test_hubspot_timestamps_round_trip_and_notes_are_clipped() -> None:
    assert hubspot.epoch_ms(hubspot.iso_ms(1_700_000_000_123)) == 1_700_000_000_123
    assert hubspot.epoch_ms("1700000000123") == 1_700_000_000_123
    plain_note = NoteInput(deal_id="1", payment_id="pi_1", body="x" * 70_000)
    assert len(hubspot.clip_note(plain_note)) == hubspot.NOTE_MAX
    keyed = replace(plain_note, key="hubspot:note:pi_1:succeeded:0")
    clipped = hubspot.clip_note(keyed)
    assert len(clipped) == hubspot.NOTE_MAX and clipped.endswith(f"…<br>{keyed.marker}")  # marker kept
    assert hubspot.clip_note(replace(keyed, body="Zapłacono")) == f"Zapłacono<br>{keyed.marker}"


def test_hubspot_daily_limit_escapes_to_the_task_after_one_call() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, daily=0).ready()
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    with pytest.raises(RateLimitedError) as caught:
        crm.upsert_contacts([contact(1)])
    assert caught.value.wait == 3600.0 and len(fake.log) == 1


def test_hubspot_contacts_without_email_are_searched_then_created() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock).ready()
    crm = hubspot.HubSpotCRM(token="pat-fake", transport=fake.transport(), sleep=clock.sleep, clock=clock)
    first = crm.upsert_contacts([contact(1, email=False), contact(2, email=False)])
    assert [r.path.rsplit("/", 2)[-2:] for r in fake.log] == [["contacts", "search"], ["batch", "create"]]
    assert crm.upsert_contacts([contact(2, email=False), contact(1, email=False)]) == first[::-1]
    assert fake.calls("/search") == 2 and fake.calls("/batch/create") == 1


def test_hubspot_a_second_deal_with_the_same_payment_id_is_refused_by_the_fake() -> None:
    fake = FakeHubSpot().ready()
    client = httpx.Client(
        transport=fake.transport(), base_url="http://h", headers={"Authorization": "Bearer pat-fake"}
    )
    body = {"properties": {"dealname": "a", "stripe_payment_id": "pi_1"}}
    assert client.post("/crm/v3/objects/deals", json=body).status_code == 201
    second = client.post("/crm/v3/objects/deals", json=body)
    assert second.status_code == 409 and second.json()["category"] == "CONFLICT"


def test_hubspot_fake_sends_rate_limit_headers_and_the_429_body() -> None:
    clock = FakeClock()
    fake = FakeHubSpot(clock=clock, limit=2)
    client = httpx.Client(
        transport=fake.transport(), base_url="http://h", headers={"Authorization": "Bearer pat-fake"}
    )
    first = client.get("/crm/v3/objects/deals")
    assert (
        first.headers["X-HubSpot-RateLimit-Max"] == "2"
        and first.headers["X-HubSpot-RateLimit-Remaining"] == "1"
    )
    client.get("/crm/v3/objects/deals")
    third = client.get("/crm/v3/objects/deals")
    assert third.status_code == 429 and third.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    clock.sleep(10)
    assert client.get("/crm/v3/objects/deals").status_code == 200


# --- Pipedrive ------------------------------------------------------------------------------


def test_pipedrive_wait_from_headers() -> None:
    assert pipedrive.rate_limit_wait(httpx.Response(429, headers={"x-ratelimit-reset": "2"})) == 2.0
    assert pipedrive.rate_limit_wait(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert pipedrive.rate_limit_wait(httpx.Response(429, headers={"x-daily-requests-left": "0"})) == 3600.0
    assert pipedrive.rate_limit_wait(httpx.Response(429)) is None


def test_pipedrive_custom_keys_go_into_custom_fields() -> None:
    assert pipedrive.is_custom_key("a" * 40) and not pipedrive.is_custom_key("expected_close_date")


def test_pipedrive_error_envelope_is_read() -> None:
    api = pipedrive.PipedriveAPI("http://p", "t")
    message, code = api.error_message(
        httpx.Response(
            400,
            json={
                "success": False,
                "error": "Stage does not exist",
                "error_info": "see docs",
                "errorCode": 400,
            },
        )
    )
    assert message == "Stage does not exist (see docs)" and code == "400"


# --- Bitrix24 -------------------------------------------------------------------------------


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


# --- Zoho -----------------------------------------------------------------------------------


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
