"""Slack's incoming webhook (the `slack-webhook` route) through slack-sdk's `WebhookClient`:
the URL is the secret, the answer plain text.

A webhook message carries nothing one could look for, and Slack takes a repeat: a message whose
attempt died is left `unknown`, never resent. Its errors read as the bot API's (`classify_slack_error`,
through `SlackClient.call`), it is retried by the same handler, and it is paced like one channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from slack_sdk.models.blocks import Block
from slack_sdk.webhook import WebhookClient

from stripeflow.core.errors import ConfigError
from stripeflow.core.redact import hide_in_logs
from stripeflow.tasks.notify.base import Message, Secret, build
from stripeflow.tasks.notify.delivery import CANNOT_LOOK, Attempt, Looked
from stripeflow.tasks.notify.slack import SlackClient, slack_error, team_blocks

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

SLACK_WEBHOOK_URL = Secret("slack_webhook_url", lambda cfg: cfg.slack_webhook_url, "slack_webhook_url")


class SlackWebhookAPI(SlackClient):
    """An incoming webhook: the URL is the secret, the answer a plain-text `ok` or error code."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(**kw)
        # slack-sdk logs the URL at DEBUG (and on a retry at INFO); the path alone is the secret too
        hide_in_logs(url, urlsplit(url).path)
        # every webhook request is a post Slack may have taken: none is retried blindly
        self.hook = WebhookClient(
            url, timeout=self.timeout, retry_handlers=self.retry_handlers(lambda _: True)
        )

    def send(self, text: str, blocks: Sequence[Mapping[str, Any] | Block]) -> str:
        models = team_blocks(blocks)

        def post() -> str:
            answer = self.hook.send(text=text, blocks=models or None)
            if answer.status_code < 400:
                return "ok"
            raise slack_error(answer.status_code, answer.body, answer.headers)  # plain `invalid_token`

        return self.call(True, post)


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
        blocks = build(lambda: team_blocks(content.blocks))
        client = self.api()
        attempt()
        return client.send(content.text, blocks)

    def look(self, message: Message) -> Looked:
        return CANNOT_LOOK

    def breaker(self, message: Message) -> str:
        return message.planned.channel
