"""Notification channels, one module each, behind `stripeflow.tasks.notify.base.Channel`.

`build_channel` picks the class a route's type names. Adding a channel adds one line to `CHANNELS`
(a lazy import path, so an unused channel's code is never loaded) and its type to
`core.config.CHANNEL_TYPES`, which checks the routes when the settings load (core imports nothing
above it, so it cannot ask this registry; a test keeps the two lists equal).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from stripeflow.core.errors import ConfigError
from stripeflow.tasks.notify.base import Channel, Secret

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

CHANNELS: dict[str, str] = {
    "email": "stripeflow.tasks.notify.email:EmailChannel",
    "slack": "stripeflow.tasks.notify.slack:SlackChannel",
    "slack-webhook": "stripeflow.tasks.notify.slack_webhook:SlackWebhookChannel",
    "telegram": "stripeflow.tasks.notify.telegram:TelegramChannel",
}


def channel_class(channel_type: str) -> type[Channel]:
    path = CHANNELS.get(channel_type)
    if path is None:
        raise ConfigError(
            f"notify: channel type {channel_type!r} is not known; choose one of {', '.join(CHANNELS)}"
        )
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)


def build_channel(channel_type: str, clients: Channels) -> Channel:
    """The channel for one route type, for one task run (its clients come from `clients`)."""
    return channel_class(channel_type)(clients)


def all_secrets() -> list[Secret]:
    """Every secret any channel needs, each once (two channels may share one)."""
    found = {s.name: s for t in CHANNELS for s in channel_class(t).secrets}
    return list(found.values())
