"""Pipedrive quirks (`tasks/crm/pipedrive.py`), each helper on its own."""

from __future__ import annotations

import httpx

from stripeflow.tasks.crm import pipedrive


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
