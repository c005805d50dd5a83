"""Telegram: the Bot API's `sendMessage`, HTML parse mode, over our `VendorAPI`.

The token is part of the URL (`/bot<token>/sendMessage`), so it lives in the client's base URL
only: request paths (which `CallStats` counts) never carry it, and `hide_in_logs` keeps httpx's
own request log from printing it.

Errors: `{"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}`;
429 says how long to wait in `parameters.retry_after`; 401 is a bad token; 403 is a chat
that blocked or removed the bot (permanent for that chat, not a credentials problem).

`TelegramChannel` is the `telegram:<chat_id>` route. The Bot API keeps nothing one could ask for
and takes a repeat: a message whose attempt died is left `unknown`, never resent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from stripeflow.core.errors import AuthError, ConfigError, PermanentError, VendorError
from stripeflow.core.http import Clock, Limiter, Sleep, TokenBucketLimiter, VendorAPI
from stripeflow.core.redact import hide_in_logs
from stripeflow.tasks.notify.base import Message, Secret, build
from stripeflow.tasks.notify.delivery import CANNOT_LOOK, Attempt, Looked

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

TELEGRAM_TOKEN = Secret("telegram_token", lambda cfg: cfg.telegram_token, "telegram_bot_token")


def per_chat_limiter(sleep: Sleep, clock: Clock = time.monotonic) -> Limiter:
    """Telegram asks for at most about one message a second per chat."""
    return TokenBucketLimiter(capacity=1, rate=1.0, sleep=sleep, clock=clock)


class TelegramAPI(VendorAPI):
    vendor = "telegram"

    def __init__(self, token: str, base_url: str = "https://api.telegram.org", **kw: Any) -> None:
        hide_in_logs(token)
        clock = kw.pop("clock", time.monotonic)
        kw.setdefault("limiter", per_chat_limiter(kw.get("sleep", time.sleep), clock))
        super().__init__(f"{base_url.rstrip('/')}/bot{token}", **kw)

    def _body(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def error_message(self, response: httpx.Response) -> tuple[str, str | None]:
        body = self._body(response)
        code = body.get("error_code", response.status_code)
        return str(body.get("description") or response.reason_phrase), str(code)

    def retry_after(self, response: httpx.Response) -> float | None:
        wait = (self._body(response).get("parameters") or {}).get("retry_after")
        return float(wait) if isinstance(wait, int | float) else super().retry_after(response)

    def classify(self, response: httpx.Response) -> VendorError | None:
        status = response.status_code
        if status == 403:  # the bot was blocked or removed from this chat: the others still work
            message, code = self.error_message(response)
            return PermanentError(message, vendor=self.vendor, status=status, code=code)
        if status == 404:  # Telegram's answer to a malformed token
            return AuthError("Not Found (is the bot token right?)", vendor=self.vendor, status=status)
        error = super().classify(response)
        if error is None and self._body(response).get("ok") is False:
            message, code = self.error_message(response)
            return PermanentError(message, vendor=self.vendor, status=status, code=code)
        return error

    def send_message(self, chat_id: str, html: str) -> str:
        """Send; returns the message id in that chat."""
        body = self.request_json(
            "POST",
            "/sendMessage",
            idempotent=False,  # the Bot API takes no idempotency key
            json={
                "chat_id": chat_id,
                "text": html,
                "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": True},
            },
        )
        return str((body.get("result") or {}).get("message_id", ""))


class TelegramChannel:
    """`telegram:<chat_id>` routes, one client per chat (its limiter keeps to the chat's pace)."""

    type: ClassVar[str] = "telegram"
    target: ClassVar[str] = "telegram"
    secrets: ClassVar[tuple[Secret, ...]] = (TELEGRAM_TOKEN,)
    can_look: ClassVar[bool] = False
    dedupes: ClassVar[bool] = False

    def __init__(self, clients: Channels) -> None:
        self.clients = clients

    def api(self, chat_id: str) -> TelegramAPI:
        token = self.clients.secrets.get(TELEGRAM_TOKEN.name)
        if not token:
            raise ConfigError("notify: a route names telegram:... but TELEGRAM_BOT_TOKEN is not set")
        base = self.clients.settings.notify.telegram_api_base
        return self.clients.client(
            f"telegram:{chat_id}", lambda: TelegramAPI(token, base, **self.clients.http_kw())
        )

    def send(self, message: Message, attempt: Attempt) -> str:
        html = build(lambda: message.renderer.team_telegram(message.kind, message.context()))
        client = self.api(message.to)
        attempt()
        return client.send_message(message.to, html)

    def look(self, message: Message) -> Looked:
        return CANNOT_LOOK

    def breaker(self, message: Message) -> str:
        return message.planned.channel  # a chat that blocked the bot leaves the other chats going
