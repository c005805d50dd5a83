"""One task run's clients and secrets for every channel, built on first use (never at import).

One `Channels` per task run: the SMTP session is shared by its e-mails (one per sending thread),
and Slack and Telegram get one client per channel or chat, whose limiter keeps to that chat's
pace. Which client a channel needs, and which secrets, is the channel's own business
(`base.Channel`); this only builds each once, hands it to every thread, and closes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx

from stripeflow.core.config import Settings
from stripeflow.core.http import Clock, Sleep
from stripeflow.tasks.notify.email import SMTP_PASSWORD, Mailer, SMTPFactory, connect_smtp, make_mailer
from stripeflow.tasks.notify.registry import all_secrets


class Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closeable)


class NotifySecrets:
    """The channels' secrets by name (`Secret.name`: smtp_password, slack_token, ...); unset: None."""

    def __init__(self, **values: str | None) -> None:
        known = {s.name for s in all_secrets()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"no channel has a secret named {', '.join(unknown)}")
        self._values = dict(values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def __repr__(self) -> str:  # names only: a secret never shows
        return f"NotifySecrets({', '.join(n for n, v in self._values.items() if v)})"


def _plain(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def load_secrets(settings: Settings) -> NotifySecrets:
    """From the settings (the environment); a named block fills what they leave empty."""
    cfg = settings.notify
    secrets = all_secrets()
    found = {s.name: _plain(s.setting(cfg)) for s in secrets}
    if cfg.block is None:
        return NotifySecrets(**found)
    from stripeflow.blocks.notify import NotifyCredentials, load_block

    block: Any = load_block(NotifyCredentials, cfg.block, "notify")
    return NotifySecrets(**{s.name: found[s.name] or _plain(getattr(block, s.block_field)) for s in secrets})


class Channels:
    """Builds and caches the channels' clients; `close()` ends them all."""

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
        self._local = threading.local()  # clients of one sending thread each (an SMTP session)
        self._per_thread: list[Closeable] = []
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    @property
    def secrets(self) -> NotifySecrets:
        if self._secrets is None:
            self._secrets = load_secrets(self.settings)
        return self._secrets

    def http_kw(self) -> dict[str, Any]:
        """What every `VendorAPI` client of the run is built with (the tests' clock and transport)."""
        return {"sleep": self.sleep, "clock": self.clock, "transport": self.transport}

    def client(self, name: str, build: Callable[[], C]) -> C:
        """The run's one client called `name`, shared by the sending threads (httpx clients are)."""
        with self._lock:
            if name not in self._clients:
                self._clients[name] = build()
            return self._clients[name]

    def thread_client(self, name: str, build: Callable[[], C]) -> C:
        """This sending thread's own client called `name` (an SMTP session is one conversation)."""
        found: C | None = getattr(self._local, name, None)
        if found is None:
            found = build()
            setattr(self._local, name, found)
            with self._lock:
                self._per_thread.append(found)
        return found

    def mailer(self) -> Mailer:
        """This thread's mailer: SMTP when a host is set, else the local outbox."""
        return self.thread_client(
            "mailer",
            lambda: make_mailer(self.settings, self.secrets.get(SMTP_PASSWORD.name), self.smtp_connect),
        )

    def close(self) -> None:
        with self._lock:
            per_thread, self._per_thread = self._per_thread, []
        for client in per_thread:
            client.close()
        self._local = threading.local()
        for shared in self._clients.values():
            shared.close()
        self._clients.clear()
