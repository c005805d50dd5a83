"""Prefect blocks for the notification and hand-off secrets.

`[notify] block = "notify-prod"` takes the SMTP password, Slack and Telegram tokens from a
`NotifyCredentials` block instead of the environment; `[handoff] block = "erp-handoff"` the same
for the hand-off. A value set in the environment wins over the block. Register the types with
`prefect block register -m stripeflow.blocks.notify`. Nothing here runs at import time.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from stripeflow.core.errors import ConfigError


class NotifyCredentials(Block):
    """Secrets for customer e-mail and team messages (SMTP, Slack, Telegram).

    Example:
        ```python
        from stripeflow.blocks.notify import NotifyCredentials

        credentials = NotifyCredentials.load("notify-prod")
        ```
    """

    _block_type_name = "Stripeflow Notify Credentials"
    _block_type_slug = "stripeflow-notify-credentials"
    _description = "SMTP password, Slack bot token or webhook, Telegram bot token for Stripeflow."

    smtp_password: SecretStr | None = Field(None, description="SMTP login password (Gmail: an app password).")
    slack_bot_token: SecretStr | None = Field(None, description="Slack bot token (xoxb-...) with chat:write.")
    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming webhook URL (a secret).")
    telegram_bot_token: SecretStr | None = Field(None, description="Telegram bot token from @BotFather.")


class HandoffCredentials(Block):
    """The shared secret that signs the hand-off webhook to accounting or an ERP.

    Example:
        ```python
        from stripeflow.blocks.notify import HandoffCredentials

        handoff = HandoffCredentials.load("erp-handoff")
        ```
    """

    _block_type_name = "Stripeflow Handoff Credentials"
    _block_type_slug = "stripeflow-handoff-credentials"
    _description = "HMAC-SHA256 secret (and optionally the URL) of Stripeflow's hand-off webhook."

    secret: SecretStr = Field(
        ..., description="Key for the Stripeflow-Signature HMAC-SHA256; share it with the receiver."
    )
    url: str | None = Field(None, description="Receiver URL; the `handoff.url` setting wins when set.")


def load_block(cls: type[Block], name: str, section: str) -> Block:
    """Load a named block, turning Prefect's "not found" into a configuration error naming the key."""
    try:
        return cls.load(name)  # type: ignore[no-any-return,return-value]  # sync in sync code
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise ConfigError(f"{section}.block: cannot load block {name!r}: {exc}") from None
