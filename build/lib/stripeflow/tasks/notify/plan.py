"""Which messages a payment change calls for, and the ledger key that makes each one happen once.

    became paid (succeeded / refunded, not paid before)  customer payment_confirmation + team payment
    refunded amount grew (full or partial)               customer refund_confirmation  + team refund
    became failed                                        customer payment_failed       + team failure
    became expired (an authorisation lapsed)             team failure only
    became disputed                                      team dispute only
    became dispute_won / dispute_lost                    team dispute only (key ends :won / :lost)

An authorisation (`authorized`) says nothing yet: the customer hears when the money is captured.

Keys: `email:customer:<kind>:<payment_id>` and `<channel>:team_<kind>:<payment_id>`
(e.g. `slack:#payments:team_payment:pi_1`); a refund's keys end in `:r<refunded in minor units>`,
so each further partial refund is a message of its own and a rerun of the same one is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from stripeflow.core.config import NotifySettings
from stripeflow.core.money import to_minor
from stripeflow.core.payment import PaymentChange, PaymentStatus

PAID = frozenset(
    {
        PaymentStatus.succeeded,
        PaymentStatus.partially_refunded,
        PaymentStatus.refunded,
        PaymentStatus.dispute_won,
    }
)
WAS_PAID = PAID | {PaymentStatus.disputed, PaymentStatus.dispute_lost}
DISPUTE_CLOSED = {PaymentStatus.dispute_won: ":won", PaymentStatus.dispute_lost: ":lost"}


@dataclass(frozen=True)
class Occurrence:
    """One thing that happened to a payment, as the team and the customer hear of it."""

    team_kind: str  # payment, refund, failure, dispute
    customer_kind: str | None  # payment_confirmation, refund_confirmation, payment_failed
    suffix: str = ""  # tells repeated occurrences apart (each partial refund)


Audience = Literal["customer", "team"]


@dataclass(frozen=True)
class Planned:
    key: str
    audience: Audience
    kind: str  # the team or customer kind
    channel: str  # "email:<address>", "slack:#payments", "slack-webhook", "telegram:<chat_id>"
    change: PaymentChange

    @property
    def channel_type(self) -> str:
        return self.channel.split(":", 1)[0]

    @property
    def channel_target(self) -> str:
        return self.channel.split(":", 1)[1] if ":" in self.channel else ""

    @property
    def action(self) -> str:
        return f"{self.audience}_{self.kind}"


def occurrences(change: PaymentChange) -> list[Occurrence]:
    payment, previous = change.payment, change.previous
    before = previous.status if previous is not None else None
    found: list[Occurrence] = []
    if payment.status in PAID and before not in WAS_PAID:
        found.append(Occurrence("payment", "payment_confirmation"))
    refunded_before = previous.refunded_amount if previous is not None else Decimal(0)
    if payment.refunded_amount > refunded_before:
        minor = to_minor(payment.refunded_amount, payment.currency)
        found.append(Occurrence("refund", "refund_confirmation", f":r{minor}"))
    if payment.status == PaymentStatus.failed and before != PaymentStatus.failed:
        found.append(Occurrence("failure", "payment_failed"))
    if payment.status == PaymentStatus.expired and before != PaymentStatus.expired:
        found.append(Occurrence("failure", None, ":expired"))
    if payment.status == PaymentStatus.disputed and before != PaymentStatus.disputed:
        found.append(Occurrence("dispute", None))
    if payment.status in DISPUTE_CLOSED and before != payment.status:
        found.append(Occurrence("dispute", None, DISPUTE_CLOSED[payment.status]))
    return found


def plan_messages(change: PaymentChange, settings: NotifySettings) -> list[Planned]:
    """Every message this change calls for, customer first; nothing for a customer without e-mail."""
    pid = change.payment.payment_id
    planned: list[Planned] = []
    for occ in occurrences(change):
        if occ.customer_kind in settings.customer_messages and change.payment.email:
            planned.append(
                Planned(
                    f"email:customer:{occ.customer_kind}:{pid}{occ.suffix}",
                    "customer",
                    occ.customer_kind,
                    f"email:{change.payment.email}",
                    change,
                )
            )
        for channel in dict.fromkeys(settings.routes.get(occ.team_kind, [])):
            planned.append(
                Planned(
                    f"{channel}:team_{occ.team_kind}:{pid}{occ.suffix}",
                    "team",
                    occ.team_kind,
                    channel,
                    change,
                )
            )
    return planned
