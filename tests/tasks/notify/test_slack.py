"""Slack through the fake over real HTTP: blocks, 429 waited out, errors dead-lettered, exactly once."""

from __future__ import annotations

import pytest

from stripeflow.core.config import Settings
from stripeflow.core.errors import (
    AuthError,
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    RetriableError,
)
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import notify_changes
from stripeflow.tasks.notify.slack import SlackAPI, slack_error
from stripeflow.tasks.notify.slack_webhook import SlackWebhookAPI
from stripeflow.testing.slack import SlackState
from tests.tasks.notify.conftest import (
    SLACK_TOKEN,
    MakeChannels,
    SettingsFactory,
    VirtualClock,
    change,
    make_payment,
)

Fake = tuple[SlackState, str]


def settings_for(make_settings: SettingsFactory, url: str, channel: str = "slack:#payments") -> Settings:
    return make_settings(
        slack_api_base=f"{url}/api", customer_messages=[], routes={"payment": [channel], "dispute": [channel]}
    )


def test_team_message_is_posted_with_blocks(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    settings = settings_for(make_settings, url)
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert report.sent == ["slack:#payments:team_payment:pi_3Q0001"]
    (msg,) = state.messages
    assert msg["channel"] == "C0PAYMENTS"
    assert msg["text"].startswith("💰 Nowa płatność: 1\u00a0249,00\u00a0zł")
    section = msg["blocks"][0]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "<https://dashboard.stripe.com/test/payments/pi_3Q0001|Otwórz w Stripe>" in section["text"]["text"]
    (effect,) = ledger.effects_for("pi_3Q0001")
    assert effect.status == "done" and effect.target == "slack" and effect.action == "team_payment"


def test_calling_twice_sends_once(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    settings = settings_for(make_settings, url)
    changes = [change(make_payment())]
    notify_changes.fn(changes, settings, ledger, make_channels(settings))
    again = notify_changes.fn(changes, settings, ledger, make_channels(settings))
    assert len(state.messages) == 1 and again.already_done == ["slack:#payments:team_payment:pi_3Q0001"]


def test_429_is_waited_out_as_slack_says(
    slack: Fake,
    clock: VirtualClock,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
) -> None:
    state, url = slack
    state.fail_next(2, status=429, retry_after=7)
    settings = settings_for(make_settings, url)
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert len(report.sent) == 1 and len(state.messages) == 1
    assert clock.sleeps.count(7) == 2 and len(state.requests) == 3


def test_the_per_channel_pace_is_kept_without_429s(
    slack: Fake,
    clock: VirtualClock,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
) -> None:
    state, url = slack
    settings = settings_for(make_settings, url)
    payments = [change(make_payment(payment_id=f"pi_{i}")) for i in range(5)]
    report = notify_changes.fn(payments, settings, ledger, make_channels(settings))
    assert len(report.sent) == 5 and len(state.requests) == 5  # the limiter waited, the fake never said 429
    assert clock.now - 1000.0 >= 4.0


def test_unknown_channel_is_dead_lettered_not_raised(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    settings = settings_for(make_settings, url, channel="slack:#nie-ma")
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert report.dead == ["slack:#nie-ma:team_payment:pi_3Q0001"] and not state.messages
    (letter,) = ledger.dead_letters()
    assert "channel_not_found" in letter.reason and letter.payment_id == "pi_3Q0001"
    again = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert again.already_done and len(state.requests) == 1


def test_bad_token_stops_the_channel_after_one_call(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    settings = settings_for(make_settings, url)
    payments = [change(make_payment(payment_id=f"pi_{i}")) for i in range(3)]
    report = notify_changes.fn(payments, settings, ledger, make_channels(settings, slack_token="xoxb-wrong"))
    assert len(report.dead) == 3 and len(state.requests) == 1
    assert all("invalid_auth" in d.reason for d in ledger.dead_letters())


def test_missing_token_is_a_dead_letter_naming_the_setting(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    _, url = slack
    settings = settings_for(make_settings, url)
    channels = make_channels(settings, slack_token="")
    report = notify_changes.fn([change(make_payment())], settings, ledger, channels)
    assert len(report.dead) == 1 and "SLACK_BOT_TOKEN" in ledger.dead_letters()[0].reason


def test_a_server_error_after_sending_is_unknown(slack: Fake, clock: VirtualClock) -> None:
    state, url = slack
    state.fail_next(1, status=500)
    api = SlackAPI(SLACK_TOKEN, f"{url}/api", sleep=clock.sleep, clock=clock)
    with pytest.raises(OutcomeUnknownError):  # Slack may have posted it: not retried blindly
        api.post_message("#payments", "x", [])
    api.close()


def test_error_table() -> None:
    """Slack's codes (an `ok: false` body, the webhook's plain text) onto our error tree."""
    assert isinstance(slack_error(200, "invalid_auth", {}), AuthError)
    assert isinstance(slack_error(403, "invalid_token", {}), AuthError)  # a webhook's revoked URL
    assert isinstance(slack_error(200, "is_archived", {}), PermanentError)
    assert type(slack_error(200, "internal_error", {})) is RetriableError
    proxy = slack_error(502, "Received a response in a non-JSON format: <html>Bad gateway", {})
    assert type(proxy) is RetriableError and proxy.code == "http_502"  # not a code: the status speaks
    limited = slack_error(429, "ratelimited", {"Retry-After": "7", "x-slack-req-id": "r1"})
    assert isinstance(limited, RateLimitedError) and limited.wait == 7 and limited.request_id == "r1"


def test_webhook(slack: Fake, clock: VirtualClock) -> None:
    state, url = slack
    hook = SlackWebhookAPI(f"{url}/services/T0/B0/secret", sleep=clock.sleep, clock=clock)
    assert hook.send("hej", []) == "ok"
    assert state.messages[-1]["text"] == "hej"
    state.fail_next(1, status=429, retry_after=3)
    hook.send("znowu", [])
    assert 3 in clock.sleeps
    gone = SlackWebhookAPI(f"{url}/services/T0/B0/removed", sleep=clock.sleep, clock=clock)
    with pytest.raises(PermanentError) as err:
        gone.send("x", [])
    assert err.value.code == "no_service" and err.value.status == 404
    hook.close()
    gone.close()


def test_webhook_route(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    settings = make_settings(customer_messages=[], routes={"dispute": ["slack-webhook"]})
    channels = make_channels(settings, slack_webhook_url=f"{url}/services/T0/B0/secret")
    report = notify_changes.fn([change(make_payment(status="disputed"))], settings, ledger, channels)
    assert report.sent == ["slack-webhook:team_dispute:pi_3Q0001"]
    assert state.messages[0]["text"].startswith("🚨 Spór (chargeback)")
