"""Slack through slack-sdk against the fake over real HTTP: its retry handler keeps our policy
(Retry-After through our sleep, no blind retry of a post), its errors land on our tree, Block Kit
models check the blocks, and its DEBUG logs carry neither the bot token nor the webhook URL."""

from __future__ import annotations

import logging

import pytest
from slack_sdk.models.blocks import SectionBlock

from stripeflow.core.errors import ConfigError, OutcomeUnknownError, RateLimitedError, RetriableError
from stripeflow.core.ledger import Ledger
from stripeflow.launcher import free_port
from stripeflow.tasks.notify import notify_changes
from stripeflow.tasks.notify.slack import MAX_ATTEMPTS, MAX_WAIT, SlackAPI, team_blocks
from stripeflow.tasks.notify.slack_webhook import SlackWebhookAPI
from tests.tasks.notify.conftest import (
    SLACK_TOKEN,
    MakeChannels,
    SettingsFactory,
    VirtualClock,
    change,
    make_payment,
)
from tests.tasks.notify.test_slack import Fake

HOOK = "/services/T0/B0/secret"


def test_a_revoked_webhook_url_stops_the_route_after_one_call(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    """Slack answers a revoked webhook 403 `invalid_token` in plain text: every message would
    fail the same way, so it is an auth error and the route stops at the first."""
    state, url = slack
    state.webhooks[HOOK] = "invalid_token"
    settings = make_settings(customer_messages=[], routes={"payment": ["slack-webhook"]})
    channels = make_channels(settings, slack_webhook_url=f"{url}{HOOK}")
    payments = [change(make_payment(payment_id=f"pi_{i}")) for i in range(3)]
    report = notify_changes.fn(payments, settings, ledger, channels)
    assert len(report.dead) == 3 and len(state.requests) == 1 and not state.messages
    assert all("invalid_token" in d.reason for d in ledger.dead_letters())


def test_a_webhook_5xx_is_unknown_not_resent(slack: Fake, clock: VirtualClock) -> None:
    state, url = slack
    state.webhooks[HOOK] = "rollup_error"  # Slack's own 500 for a webhook
    hook = SlackWebhookAPI(f"{url}{HOOK}", sleep=clock.sleep, clock=clock)
    with pytest.raises(OutcomeUnknownError) as err:
        hook.send("x", [])
    assert err.value.code == "rollup_error" and err.value.status == 500 and len(state.requests) == 1


def test_a_retry_after_longer_than_the_seam_waits_escapes_to_the_tasks_retries(
    slack: Fake, clock: VirtualClock
) -> None:
    state, url = slack
    state.fail_next(1, status=429, retry_after=MAX_WAIT * 4)
    api = SlackAPI(SLACK_TOKEN, f"{url}/api", sleep=clock.sleep, clock=clock)
    with pytest.raises(RateLimitedError) as err:
        api.post_message("#payments", "x", [])
    assert err.value.wait == MAX_WAIT * 4 and MAX_WAIT * 4 not in clock.sleeps
    assert len(state.requests) == 1 and not state.messages


def test_a_read_is_retried_through_a_5xx_a_post_is_not(slack: Fake, clock: VirtualClock) -> None:
    state, url = slack
    api = SlackAPI(SLACK_TOKEN, f"{url}/api", sleep=clock.sleep, clock=clock)
    ts = api.post_message("C0PAYMENTS", "x", [], key="k1")
    state.inject(500, path=r"/api/conversations\.history")
    assert api.find_message("C0PAYMENTS", "k1", since=0) == ts  # backed off and read again
    history = [r for r in state.requests if r["path"] == "/api/conversations.history"]
    assert len(history) == 2 and clock.sleeps
    state.inject(503, path=r"/api/chat\.postMessage")
    with pytest.raises(OutcomeUnknownError):
        api.post_message("C0PAYMENTS", "y", [], key="k2")
    assert sum(1 for r in state.requests if r["path"] == "/api/chat.postMessage") == 2


def test_a_refused_connection_is_tried_again_and_stays_retriable(clock: VirtualClock) -> None:
    """Nothing listens: the post never reached Slack, so it is safe to send again (not unknown)."""
    api = SlackAPI(SLACK_TOKEN, f"http://127.0.0.1:{free_port()}/api", sleep=clock.sleep, clock=clock)
    with pytest.raises(RetriableError) as err:
        api.post_message("#payments", "x", [], key="k1")
    assert type(err.value) is RetriableError and "cannot connect" in err.value.message
    assert len(clock.sleeps) == MAX_ATTEMPTS - 1  # backed off between tries, through our sleep


def test_blocks_are_checked_as_block_kit_models() -> None:
    (block,) = team_blocks([{"type": "section", "text": {"type": "mrkdwn", "text": "*Płatność*"}}])
    assert isinstance(block, SectionBlock) and block.to_dict()["text"] == {
        "type": "mrkdwn",
        "text": "*Płatność*",
    }
    with pytest.raises(ValueError, match="not a Block Kit block"):
        team_blocks([{"type": "sectoin", "text": {"type": "mrkdwn", "text": "x"}}])
    with pytest.raises(ValueError, match="section"):
        team_blocks([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}])


def test_slack_sdk_logs_at_debug_carry_neither_the_token_nor_the_webhook_url(
    slack: Fake, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    state, url = slack
    with caplog.at_level(logging.DEBUG):
        api = SlackAPI(SLACK_TOKEN, f"{url}/api", sleep=clock.sleep, clock=clock)
        api.find_message("#payments", "k1", since=0)
        api.post_message("#payments", "x", [], key="k1")
        hook = SlackWebhookAPI(f"{url}{HOOK}", sleep=clock.sleep, clock=clock)
        state.fail_next(1, status=429, retry_after=2)  # a retry logs the full URL at INFO
        hook.send("hej", [])
    ours = [r for r in caplog.records if r.name.startswith("slack_sdk")]
    assert {r.name for r in ours} >= {"slack_sdk.web.base_client", "slack_sdk.webhook.client"}
    assert any("retry" in r.getMessage() for r in ours)  # the retry's line was logged (masked)
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("uvicorn"))
    assert SLACK_TOKEN not in text and HOOK not in text and "<redacted>" in text
    assert len(state.messages) == 2


def test_a_webhook_url_slack_sdk_refuses_is_a_config_error_that_does_not_quote_it(
    clock: VirtualClock,
) -> None:
    hook = SlackWebhookAPI("ftp://hooks.example/services/T0/B0/s3cr3tpath", sleep=clock.sleep, clock=clock)
    with pytest.raises(ConfigError) as err:
        hook.send("x", [])
    assert "s3cr3tpath" not in str(err.value) and not clock.sleeps
