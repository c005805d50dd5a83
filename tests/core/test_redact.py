"""Secrets in URLs are masked in httpx's request log, for every vendor that has one."""

from __future__ import annotations

import logging

import httpx
import pytest

from stripeflow.tasks.crm.bitrix24 import Bitrix24API


def test_a_bitrix24_webhook_code_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"result": [], "time": {}})

    url = "https://firma.bitrix24.pl/rest/1/s3cr3tc0de9x/"
    api = Bitrix24API(url, transport=httpx.MockTransport(handler))
    with caplog.at_level(logging.INFO, logger="httpx"):
        api.request("POST", "crm.contact.list", json={})
    assert "s3cr3tc0de9x" not in caplog.text
    assert "<redacted>" in caplog.text
