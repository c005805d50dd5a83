"""Slack's incoming webhook (the `slack-webhook` route): the URL is the secret, the answer plain text.

A webhook message carries nothing one could look for, and Slack takes a repeat: a message whose
attempt died is left `unknown`, never resent. Its errors read as the bot API's (`classify_slack_error`),
and it is paced like one channel.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx

from stripeflow.core.errors import ConfigError, VendorError
from stripeflow.core.http import VendorAPI
from stripeflow.core.redact import hide_in_logs
from stripeflow.tasks.notify.base import Message, Secret, build
from stripeflow.tasks.notify.delivery import CANNOT_LOOK, Attempt, Looked
from stripeflow.tasks.notify.slack import classify_slack_error, per_channel_limiter

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

SLACK_WEBHOOK_URL = Secret("slack_webhook_url", lambda cfg: cfg.slack_webhook_url, "slack_webhook_url")


class SlackWebhookAPI(VendorAPI):
    """An incoming webhook: the URL is the secret, the answer a plain-text `ok` or error code."""

    vendor = "slack"

    def __init__(self, url: str, **kw: Any) -> None:
        parts = urlsplit(url)
        hide_in_logs(parts.path)
        # the path goes per request: a base URL would gain a trailing slash the webhook rejects
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        clock = kw.pop("clock", time.monotonic)
        kw.setdefault("limiter", per_channel_limiter(kw.get("sleep", time.sleep), clock))
        super().__init__(f"{parts.scheme}://{parts.netloc}", **kw)

    def error_message(self, response: httpx.Response) -> tuple[str, str | None]:
        text = response.text.strip()[:200] or response.reason_phrase
        return text, text if text.replace("_", "").isalnum() else None

    def classify(self, response: httpx.Response) -> VendorError | None:
        if response.status_code < 400:
            return None
        _, code = self.error_message(response)
        return classify_slack_error(
            code or f"http_{response.status_code}",
            vendor=self.vendor,
            status=response.status_code,
            wait=self.retry_after(response),
            request_id=self.request_id(response),
        )

    def send(self, text: str, blocks: list[dict[str, Any]]) -> str:
        self.request("POST", self._path, json={"text": text, "blocks": blocks}, idempotent=False)
        return "ok"


class SlackWebhookChannel:
    """The `slack-webhook` route: one webhook, one channel, nothing kept that one could ask for."""

    type: ClassVar[str] = "slack-webhook"
    target: ClassVar[str] = "slack"  # the ledger's and the crash points' name: it is Slack all the same
    secrets: ClassVar[tuple[Secret, ...]] = (SLACK_WEBHOOK_URL,)
    can_look: ClassVar[bool] = False
    dedupes: ClassVar[bool] = False

    def __init__(self, clients: Channels) -> None:
        self.clients = clients

    def api(self) -> SlackWebhookAPI:
        url = self.clients.secrets.get(SLACK_WEBHOOK_URL.name)
        if not url:
            raise ConfigError("notify: a route names slack-webhook but SLACK_WEBHOOK_URL is not set")
        return self.clients.client("slack-webhook", lambda: SlackWebhookAPI(url, **self.clients.http_kw()))

    def send(self, message: Message, attempt: Attempt) -> str:
        content = build(lambda: message.renderer.team_slack(message.kind, message.context()))
        client = self.api()
        attempt()
        return client.send(content.text, content.blocks)

    def look(self, message: Message) -> Looked:
        return CANNOT_LOOK

    def breaker(self, message: Message) -> str:
        return message.planned.channel
