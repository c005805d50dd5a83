"""Bitrix24 quirks (`tasks/crm/bitrix24.py`), each helper on its own, and the fake's query parser."""

from __future__ import annotations

import httpx
import pytest

from stripeflow.core.errors import AuthError, RateLimitedError, RetriableError
from stripeflow.tasks.crm import bitrix24
from stripeflow.testing.bitrix24 import FakeBitrix24, parse_php_query
from stripeflow.testing.vendor import FakeClock
from tests.tasks.crm.harness import contact


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
