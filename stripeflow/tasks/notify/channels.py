"""Clients for every channel a message may take, built from settings on first use (never at import).

One `Channels` per task run: the SMTP session is shared by its e-mails, and Slack and Telegram
get one client per channel or chat, whose limiter keeps to that chat's pace.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx

from stripeflow.core.config import Settings
from stripeflow.core.errors import ConfigError
from stripeflow.core.http import Clock, Sleep
from stripeflow.tasks.notify.email import Attempt, Mailer, OutboxMailer, SMTPFactory, SMTPMailer, connect_smtp
from stripeflow.tasks.notify.slack import SlackAPI, SlackWebhookAPI
from stripeflow.tasks.notify.telegram import TelegramAPI


@dataclass(frozen=True)
class NotifySecrets:
    smtp_password: str | None = None
    slack_token: str | None = None
    slack_webhook_url: str | None = None
    telegram_token: str | None = None


def _plain(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def load_secrets(settings: Settings) -> NotifySecrets:
    """From the settings (the environment); a named block fills what they leave empty."""
    cfg = settings.notify
    found = NotifySecrets(
        _plain(cfg.smtp.password),
        _plain(cfg.slack_token),
        _plain(cfg.slack_webhook_url),
        _plain(cfg.telegram_token),
    )
    if cfg.block is None:
        return found
    from stripeflow.blocks.notify import NotifyCredentials, load_block

    block: Any = load_block(NotifyCredentials, cfg.block, "notify")
    return NotifySecrets(
        smtp_password=found.smtp_password or _plain(block.smtp_password),
        slack_token=found.slack_token or _plain(block.slack_bot_token),
        slack_webhook_url=found.slack_webhook_url or _plain(block.slack_webhook_url),
        telegram_token=found.telegram_token or _plain(block.telegram_bot_token),
    )


class Channels:
    """Builds and caches each channel's client; `close()` ends them all."""

    def __init__(
        self,
        settings: Settings,
        secrets: NotifySecrets | None = None,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        smtp_connect: SMTPFactory = connect_smtp,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._secrets = secrets
        self.sleep = sleep
        self.clock = clock  # tests pass a virtual clock that their `sleep` advances
        self.smtp_connect = smtp_connect
        self.transport = transport
        self._local = threading.local()  # one mailer (an SMTP session) per sending thread
        self._mailers: list[Mailer] = []
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    @property
    def secrets(self) -> NotifySecrets:
        if self._secrets is None:
            self._secrets = load_secrets(self.settings)
        return self._secrets

    def mailer(self) -> Mailer:
        mailer: Mailer | None = getattr(self._local, "mailer", None)
        if mailer is None:
            cfg = self.settings.notify
            if cfg.smtp.host:
                mailer = SMTPMailer(cfg.smtp, self.secrets.smtp_password, self.smtp_connect)
            else:
                mailer = OutboxMailer(cfg.outbox or self.settings.home / "outbox")
            self._local.mailer = mailer
            with self._lock:
                self._mailers.append(mailer)
        return mailer

    def mailer_can_look(self) -> bool:
        """Whether the mailer can tell if a message arrived (the outbox can; SMTP cannot)."""
        return not self.settings.notify.smtp.host

    def send_email(self, msg: EmailMessage, attempt: Attempt) -> str:
        return self.mailer().send(msg, attempt)

    def _client(self, name: str, build: Any) -> Any:
        with self._lock:  # httpx clients are shared by the sending threads
            if name not in self._clients:
                self._clients[name] = build()
            return self._clients[name]

    def _http_kw(self) -> dict[str, Any]:
        return {"sleep": self.sleep, "clock": self.clock, "transport": self.transport}

    def slack(self, channel: str) -> SlackAPI:
        token = self.secrets.slack_token
        if not token:
            raise ConfigError("notify: a route names slack:... but SLACK_BOT_TOKEN is not set")
        return self._client(
            f"slack:{channel}",
            lambda: SlackAPI(  # type: ignore[no-any-return]
                token, self.settings.notify.slack_api_base, **self._http_kw()
            ),
        )

    def slack_webhook(self) -> SlackWebhookAPI:
        url = self.secrets.slack_webhook_url
        if not url:
            raise ConfigError("notify: a route names slack-webhook but SLACK_WEBHOOK_URL is not set")
        return self._client(
            "slack-webhook",
            lambda: SlackWebhookAPI(  # type: ignore[no-any-return]
                url, **self._http_kw()
            ),
        )

    def telegram(self, chat_id: str) -> TelegramAPI:
        token = self.secrets.telegram_token
        if not token:
            raise ConfigError("notify: a route names telegram:... but TELEGRAM_BOT_TOKEN is not set")
        return self._client(
            f"telegram:{chat_id}",
            lambda: TelegramAPI(  # type: ignore[no-any-return]
                token, self.settings.notify.telegram_api_base, **self._http_kw()
            ),
        )

    def close(self) -> None:
        with self._lock:
            mailers, self._mailers = self._mailers, []
        for mailer in mailers:
            mailer.close()
        self._local = threading.local()
        for client in self._clients.values():
            client.close()
        self._clients.clear()
