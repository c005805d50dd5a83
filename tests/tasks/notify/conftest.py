"""Fixtures for notifications: a virtual clock, payments, settings with routes, the fakes served."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import Payment, PaymentChange
from stripeflow.tasks.notify.channels import Channels, NotifySecrets
from stripeflow.testing.server import serve_app
from stripeflow.testing.slack import SlackState, make_slack_app
from stripeflow.testing.telegram import TelegramState, make_telegram_app

SLACK_TOKEN = "xoxb-test"
TELEGRAM_TOKEN = "123456:TEST-token"


class VirtualClock:
    """Time that only moves when someone sleeps: the limiters, the seam and the fakes share it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


def make_payment(**overrides: Any) -> Payment:
    data: dict[str, Any] = dict(
        payment_id="pi_3Q0001",
        customer_id="cus_1",
        email="anna@example.pl",
        name="Anna Nowak",
        amount=Decimal("1249.00"),
        currency="PLN",
        occurred_at=datetime(2026, 3, 2, 13, 5, tzinfo=UTC),
        products=("Pakiet Automatyzacji CRM",),
        status="succeeded",
        method="blik",
        invoice_url="https://invoice.stripe.com/i/acct_1/test_1",
        receipt_url="https://pay.stripe.com/receipts/1",
    )
    data.update(overrides)
    return Payment.model_validate(data)


def change(payment: Payment, previous: Payment | None = None) -> PaymentChange:
    return PaymentChange(payment=payment, previous=previous)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    ledger.migrate()
    yield ledger
    ledger.dispose()


@pytest.fixture
def slack(clock: VirtualClock) -> Iterator[tuple[SlackState, str]]:
    state = SlackState(tokens={SLACK_TOKEN}, clock=clock)
    with serve_app(make_slack_app(state)) as url:
        yield state, url


@pytest.fixture
def telegram(clock: VirtualClock) -> Iterator[tuple[TelegramState, str]]:
    state = TelegramState(tokens={TELEGRAM_TOKEN}, clock=clock)
    with serve_app(make_telegram_app(state)) as url:
        yield state, url


SettingsFactory = Callable[..., Settings]
MakeChannels = Callable[..., Channels]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    def build(language: str = "pl", **notify: Any) -> Settings:
        return Settings.model_validate({"home": tmp_path / "home", "language": language, "notify": notify})

    return build


@pytest.fixture
def make_channels(clock: VirtualClock) -> Iterator[Callable[..., Channels]]:
    made: list[Channels] = []

    def build(settings: Settings, **secrets: str) -> Channels:
        values = {"slack_token": SLACK_TOKEN, "telegram_token": TELEGRAM_TOKEN, **secrets}
        channels = Channels(settings, NotifySecrets(**values), sleep=clock.sleep, clock=clock)
        made.append(channels)
        return channels

    yield build
    for channels in made:
        channels.close()
