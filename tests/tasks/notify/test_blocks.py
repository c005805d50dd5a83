"""The notify blocks: secrets as SecretStr, every field described, a `.load("NAME")` example."""

from __future__ import annotations

from pydantic import SecretStr

from stripeflow.core.config import load_settings
from stripeflow.tasks.notify.channels import load_secrets


def test_secrets_come_from_the_environment_and_never_show() -> None:
    settings = load_settings(
        env={
            "SMTP_PASSWORD": "app-pass",
            "SLACK_BOT_TOKEN": "xoxb-1",
            "TELEGRAM_BOT_TOKEN": "1:abc",
            "STRIPEFLOW_HANDOFF_SECRET": "s3",
        }
    )
    assert isinstance(settings.notify.slack_token, SecretStr)
    assert "xoxb-1" not in repr(settings) and "app-pass" not in settings.model_dump_json()
    secrets = load_secrets(settings)
    found = (secrets.get("smtp_password"), secrets.get("slack_token"), secrets.get("telegram_token"))
    assert found == ("app-pass", "xoxb-1", "1:abc")
