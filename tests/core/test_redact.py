"""Secrets in URLs are masked in the logs of httpx, httpcore and slack-sdk, child loggers included."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stripeflow.core.redact import MASK, hide_in_logs
from stripeflow.tasks.crm.bitrix24 import Bitrix24API
from stripeflow.testing.server import serve_app

BOT_TOKEN = "7654321:AAHredactme-in-every-log"


def test_a_bitrix24_webhook_code_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"result": [], "time": {}})

    url = "https://firma.bitrix24.pl/rest/1/s3cr3tc0de9x/"
    api = Bitrix24API(url, transport=httpx.MockTransport(handler))
    with caplog.at_level(logging.INFO, logger="httpx"):
        api.request("POST", "crm.contact.list", json={})
    assert "s3cr3tc0de9x" not in caplog.text
    assert "<redacted>" in caplog.text


def moved_app() -> Starlette:
    """An API host that moved: 301 to its new home, keeping the path (the token with it)."""

    async def moved(request: Request) -> Response:
        return Response(status_code=301, headers={"location": f"https://new.example{request.url.path}"})

    return Starlette(routes=[Route("/{rest:path}", moved, methods=["POST"])])


def test_httpcore_at_debug_never_logs_a_token_from_the_url(caplog: pytest.LogCaptureFixture) -> None:
    """httpcore logs the answer's headers through `httpcore.http11`, a child logger: a filter on
    `httpcore` never saw those records, and the redirect's Location printed the bot token."""
    hide_in_logs(BOT_TOKEN)
    with serve_app(moved_app()) as url, caplog.at_level(logging.DEBUG):
        answer = httpx.post(f"{url}/bot{BOT_TOKEN}/sendMessage", json={"chat_id": 1, "text": "x"})
    assert answer.status_code == 301 and BOT_TOKEN in answer.headers["location"]  # it was there to leak
    headers = [r for r in caplog.records if r.name == "httpcore.http11" and "location" in r.getMessage()]
    assert headers and all(MASK in r.getMessage() for r in headers)
    assert BOT_TOKEN not in caplog.text


@pytest.mark.parametrize(
    "name",
    [
        "httpx",
        "httpcore.connection",
        "httpcore.http11",
        "slack_sdk.webhook.client",
        "slack_sdk.web.base_client",
    ],
)
def test_every_child_of_a_protected_logger_is_masked_with_arguments_formatted(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    hide_in_logs(BOT_TOKEN)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger(name).debug("sending to %s (%d)", f"https://api.example/bot{BOT_TOKEN}/x", 1)
    (record,) = [r for r in caplog.records if r.name == name]
    assert record.getMessage() == f"sending to https://api.example/bot{MASK}/x (1)"


def test_other_loggers_are_left_as_they_are(caplog: pytest.LogCaptureFixture) -> None:
    hide_in_logs(BOT_TOKEN)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("httpx_like.mine").debug("%s", BOT_TOKEN)  # only the libraries' loggers
    assert caplog.records[-1].getMessage() == BOT_TOKEN
