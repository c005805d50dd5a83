"""Customer e-mails, team messages and the accounting hand-off.

    notify_changes(changes, settings, ledger)    customer e-mail + team messages (Slack, Telegram,
                                                 e-mail), each exactly once per payment and kind
    hand_off_changes(changes, settings, ledger)  one signed JSON webhook per payment change

The Prefect tasks are in `tasks`; the channels behind `base.Channel`, one module each
(`email`, `slack`, `slack_webhook`, `telegram`), found by route type in `registry`.
"""

from stripeflow.tasks.notify.base import Channel, Message
from stripeflow.tasks.notify.channels import Channels, NotifySecrets, load_secrets
from stripeflow.tasks.notify.delivery import NotifyReport
from stripeflow.tasks.notify.messages import build_messages
from stripeflow.tasks.notify.registry import CHANNELS, build_channel
from stripeflow.tasks.notify.tasks import hand_off_changes, notify_changes

__all__ = [
    "CHANNELS",
    "Channel",
    "Channels",
    "Message",
    "NotifyReport",
    "NotifySecrets",
    "build_channel",
    "build_messages",
    "hand_off_changes",
    "load_secrets",
    "notify_changes",
]
