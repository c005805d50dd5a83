"""The protocol every notification channel implements, and the message that crosses it
(as `tasks/crm/base.py` is for the CRMs).

A channel is one kind of route (`<type>:<target>`, e.g. `slack:#payments`): it sends a planned
message, says whether its target can be looked at afterwards (`Looked`) and whether the target
drops a repeat of our key, and names the secrets it needs (`Secret`: which setting, which field
of the `NotifyCredentials` block). `messages.build_messages` knows only this protocol; the
registry (`registry.CHANNELS`) says which class serves which route type.

Channels are built once per task run from that run's `Channels` (the clients and secrets), and
are called from several sending threads at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import SecretStr

from stripeflow.core.config import NotifySettings, Settings
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import Payment
from stripeflow.tasks.notify.delivery import Attempt, BuildError, Looked, describe
from stripeflow.tasks.notify.plan import Planned
from stripeflow.tasks.notify.render import Renderer, RenderError, message_context

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

T = TypeVar("T")
BUILD_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, AttributeError, RenderError)


def build(make: Callable[[], T]) -> T:
    """Make a message's content or MIME; a payment it cannot be made from fails only this message."""
    try:
        return make()
    except BUILD_ERRORS as exc:  # a name no header takes, a broken template override, ...
        raise BuildError(f"cannot build the message: {describe(exc)}", vendor="notify", code="build") from exc


@dataclass(frozen=True)
class Secret:
    """One secret a channel needs: read from the settings (the environment), else from the block."""

    name: str  # its name in `NotifySecrets`
    setting: Callable[[NotifySettings], SecretStr | None]
    block_field: str  # the `NotifyCredentials` field that fills it when the settings leave it empty


def deal_url(settings: Settings, ledger: Ledger, payment_id: str) -> str | None:
    """The deal's page in the first CRM that has both a link template and this deal."""
    for crm_name, template in settings.notify.deal_urls.items():
        deal_id = ledger.get_link("deal", payment_id, crm_name)
        if deal_id:
            return template.format(deal_id=deal_id)
    return None


@dataclass(frozen=True)
class Message:
    """A planned message on its way: what it is, and what rendering it takes when it goes."""

    planned: Planned
    settings: Settings
    ledger: Ledger
    renderer: Renderer

    @property
    def key(self) -> str:
        return self.planned.key

    @property
    def kind(self) -> str:
        return self.planned.kind

    @property
    def to(self) -> str:
        """The route's target: an address, a Slack channel, a chat id ("" for slack-webhook)."""
        return self.planned.channel_target

    @property
    def payment(self) -> Payment:
        return self.planned.change.payment

    @property
    def for_customer(self) -> bool:
        return self.planned.audience == "customer"

    def context(self) -> dict[str, Any]:
        """The templates' context; made when the message goes (the deal link may be new by then)."""
        cfg = self.settings.notify
        return message_context(
            self.payment,
            self.planned.change.previous,
            kind=self.kind,
            language=self.settings.language,
            timezone=cfg.timezone,
            # the name signing messages: as [notify] says, else the seller's ([company])
            company=cfg.company or (self.settings.company.name if self.settings.company else None),
            deal_url=deal_url(self.settings, self.ledger, self.payment.payment_id),
        )


@runtime_checkable
class Channel(Protocol):
    """What every channel offers. `type` is the route prefix; `target` the ledger's target (and the
    crash points' `<target>`), which two route types may share (slack and slack-webhook)."""

    type: ClassVar[str]
    target: ClassVar[str]
    secrets: ClassVar[tuple[Secret, ...]]

    def __init__(self, clients: Channels) -> None:
        """Built once per task run; its clients come from `clients`, built on first use."""
        ...

    def send(self, message: Message, attempt: Attempt) -> str:
        """Build the message, call `attempt()` right before the call that may reach the target, send
        it; returns the receipt. Raises `BuildError` (via `build`), `ConfigError` or a `VendorError`."""
        ...

    @property
    def can_look(self) -> bool:
        """Whether the target keeps what it got, so `look` can tell if a message arrived."""
        ...

    def look(self, message: Message) -> Looked:
        """Whether the target has this message (only called when `can_look`)."""
        ...

    @property
    def dedupes(self) -> bool:
        """Whether the target drops a repeat of the message's key, so a doubtful one is redone."""
        ...

    def breaker(self, message: Message) -> str:
        """What a refused credential or an outage takes down with this message (no call after it)."""
        ...
