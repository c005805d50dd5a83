"""The messages payment changes call for, each bound to the channel its route names.

What to send is `plan`'s; how it goes is its channel's (`base.Channel`, found in `registry`);
this turns one into the other: an `Outgoing` per planned message, which `delivery` sends once.
"""

from __future__ import annotations

from collections.abc import Sequence

from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import PaymentChange
from stripeflow.tasks.notify.base import Channel, Message
from stripeflow.tasks.notify.channels import Channels
from stripeflow.tasks.notify.delivery import Attempt, Looked, Outgoing, cannot_look
from stripeflow.tasks.notify.plan import Audience, plan_messages
from stripeflow.tasks.notify.registry import build_channel
from stripeflow.tasks.notify.render import Renderer


def build_messages(
    changes: Sequence[PaymentChange],
    settings: Settings,
    ledger: Ledger,
    channels: Channels,
    renderer: Renderer,
    audience: Audience | None = None,
) -> list[Outgoing]:
    """Every message the changes call for (for one audience, if given), each with a `send` that
    renders it when it goes."""
    built: dict[str, Channel] = {}  # one channel object per route type for the run
    items: list[Outgoing] = []
    for change in changes:
        for planned in plan_messages(change, settings.notify):
            if audience is not None and planned.audience != audience:
                continue
            kind = planned.channel_type
            if kind not in built:
                built[kind] = build_channel(kind, channels)
            items.append(outgoing(built[kind], Message(planned, settings, ledger, renderer)))
    return items


def outgoing(channel: Channel, message: Message) -> Outgoing:
    """The message as `delivery` takes it, with what its channel says about its target."""

    def send(attempt: Attempt) -> str:
        return channel.send(message, attempt)

    def look() -> Looked:
        return channel.look(message)

    return Outgoing(
        key=message.key,
        payment_id=message.payment.payment_id,
        target=channel.target,
        action=message.planned.action,
        channel=channel.breaker(message),
        send=send,
        look=look if channel.can_look else cannot_look,
        dedupes=channel.dedupes,
        # a target that drops a repeat settles a chunk at a time; any other, each as soon as it is sent
        settle_at_once=not channel.dedupes,
    )
