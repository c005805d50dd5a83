"""Pipedrive quirks (`tasks/crm/pipedrive.py`), each helper on its own."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import httpx

from stripeflow.core.errors import AuthError, RetriableError
from stripeflow.tasks.crm import pipedrive


def test_pipedrive_wait_from_headers() -> None:
    wait = pipedrive.rate_limit_wait
    assert wait(httpx.Response(429, headers={"x-ratelimit-reset": "2"})) == 2.0
    assert wait(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert wait(httpx.Response(429, headers={"x-ratelimit-reset": "0"})) == pipedrive.MIN_429_WAIT
    spent = {"x-daily-ratelimit-token-remaining": "0", "x-ratelimit-reset": "1"}
    assert wait(httpx.Response(429, headers=spent)) == pipedrive.DAILY_WAIT
    left = {"x-daily-ratelimit-token-remaining": "5000", "x-ratelimit-reset": "2"}
    assert wait(httpx.Response(429, headers=left)) == 2.0
    assert wait(httpx.Response(429, headers={"x-daily-requests-left": "0"})) is None  # the old header
    assert wait(httpx.Response(429)) is None


def test_only_an_html_403_is_cloudflare() -> None:
    api = pipedrive.PipedriveAPI("http://p", "t")
    page = httpx.Response(403, text="<html>blocked</html>", headers={"content-type": "text/html"})
    refused = httpx.Response(403, json={"success": False, "error": "Forbidden"})
    blocked, denied = api.classify(page), api.classify(refused)
    assert isinstance(blocked, RetriableError) and blocked.wait == pipedrive.CLOUDFLARE_WAIT
    assert isinstance(denied, AuthError)


def test_values_are_typed_for_pipedrive() -> None:
    assert pipedrive.value(Decimal("100.50")) == 100.5
    assert pipedrive.value(date(2027, 1, 1)) == "2027-01-01"
    assert pipedrive.value(None) is None and pipedrive.value("BLIK") == "BLIK"


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
