"""The channel registry: every route type the settings accept has a channel, and each channel keeps
to the protocol, names its secrets and finds them in the block."""

from __future__ import annotations

import pytest

from stripeflow.blocks.notify import NotifyCredentials
from stripeflow.core.config import CHANNEL_TYPES
from stripeflow.core.errors import ConfigError
from stripeflow.tasks.notify import CHANNELS, Channel, Channels, NotifySecrets, build_channel
from stripeflow.tasks.notify.registry import all_secrets, channel_class
from tests.tasks.notify.conftest import SettingsFactory


def test_the_registry_serves_exactly_the_route_types_the_settings_accept() -> None:
    assert sorted(CHANNELS) == sorted(CHANNEL_TYPES)  # core cannot ask the registry: kept equal here


@pytest.mark.parametrize("channel_type", sorted(CHANNELS))
def test_each_channel_keeps_to_the_protocol(channel_type: str, make_settings: SettingsFactory) -> None:
    channels = Channels(make_settings(), NotifySecrets())
    channel = build_channel(channel_type, channels)
    assert isinstance(channel, Channel) and channel.type == channel_type
    assert channel_class(channel_type) is type(channel)
    assert channel.target in ("email", "slack", "telegram")  # the crash points' names (core.crashpoints)
    channels.close()


def test_every_secret_has_a_setting_and_a_block_field(make_settings: SettingsFactory) -> None:
    names = [s.name for s in all_secrets()]
    assert sorted(names) == ["slack_token", "slack_webhook_url", "smtp_password", "telegram_token"]
    settings = make_settings()
    for secret in all_secrets():
        assert secret.block_field in NotifyCredentials.model_fields
        assert secret.setting(settings.notify) is None  # read from the settings: unset here


def test_an_unknown_secret_or_channel_type_is_refused(make_settings: SettingsFactory) -> None:
    with pytest.raises(TypeError, match="slack_tokn"):
        NotifySecrets(slack_tokn="x")
    with pytest.raises(ConfigError, match="'discord' is not known"):
        build_channel("discord", Channels(make_settings(), NotifySecrets()))
    assert "xoxb-1" not in repr(NotifySecrets(slack_token="xoxb-1"))
