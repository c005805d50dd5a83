"""A Slack bot message whose outcome is unknown is settled by looking at the channel.

The effect key rides in the message's metadata (`chat.postMessage`), so `conversations.history`
with `include_all_metadata` tells whether Slack has it: found -> done with its ts; not there ->
posted once; the lookup refused (missing_scope, not_in_channel, ...) -> `unknown`, never posted
blindly. Against the fake over real HTTP; the last test kills a child process for real.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from stripeflow.core.config import Settings
from stripeflow.core.errors import AuthError, PermanentError
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import PaymentChange
from stripeflow.tasks.notify import build_messages, notify_changes
from stripeflow.tasks.notify.channels import Channels
from stripeflow.tasks.notify.delivery import Outgoing, deliver
from stripeflow.tasks.notify.render import Renderer
from stripeflow.tasks.notify.slack import METADATA_EVENT, SlackAPI
from stripeflow.testing.server import serve_app
from stripeflow.testing.slack import SlackState, make_slack_app
from tests.tasks.notify.conftest import (
    SLACK_TOKEN,
    MakeChannels,
    SettingsFactory,
    VirtualClock,
    change,
    make_payment,
)
from tests.tasks.notify.test_crash import finish, run_child
from tests.tasks.notify.test_slack import Fake, settings_for

KEY = "slack:#payments:team_payment:pi_3Q0001"
log = logging.getLogger("test")


def history_calls(state: SlackState) -> int:
    return sum(1 for r in state.requests if r["path"] == "/api/conversations.history")


def posts(state: SlackState) -> int:
    return sum(1 for r in state.requests if r["path"] == "/api/chat.postMessage")


def items_for(settings: Any, ledger: Ledger, channels: Channels) -> list[Outgoing]:
    renderer = Renderer(settings.language, settings.notify.templates_dir)
    return build_messages([change(make_payment())], settings, ledger, channels, renderer)


def leave_attempting(ledger: Ledger, items: list[Outgoing]) -> None:
    """What a run killed between `attempting` and its settle leaves behind."""
    won, token = ledger.claim_effects(items)
    ledger.mark_attempting(won, token)
    assert ledger.effect_states([KEY]) == {KEY: "attempting"}


@pytest.mark.parametrize("fault", ["after_write", "timeout"])
def test_an_answer_lost_after_slack_stored_it_is_found_not_posted_twice(
    fault: str, slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    settings = settings_for(make_settings, url)
    state.inject(
        500, path=r"chat\.postMessage", after_write=fault == "after_write", timeout=fault == "timeout"
    )
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    (msg,) = state.messages  # Slack kept it; its answer never arrived
    assert report.recovered == [KEY] and not report.sent and not report.unknown
    assert posts(state) == 1 and history_calls(state) == 1
    (effect,) = ledger.effects_for("pi_3Q0001")
    assert effect.status == "done" and effect.result == msg["ts"]


def test_a_lost_answer_is_looked_for_on_the_tasks_retry(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    """Not on the last try: the effect stays `attempting` and the retry (a later run) finds it."""
    state, url = slack
    settings = settings_for(make_settings, url)
    state.inject(500, path=r"chat\.postMessage", timeout=True)
    first = deliver(
        items_for(settings, ledger, make_channels(settings)), ledger, final_attempt=False, logger=log
    )
    assert first.pending == [KEY] and history_calls(state) == 0
    assert ledger.effect_states([KEY]) == {KEY: "attempting"}
    retry = deliver(
        items_for(settings, ledger, make_channels(settings)), ledger, final_attempt=True, logger=log
    )
    assert retry.recovered == [KEY] and not retry.sent
    assert len(state.messages) == 1 and posts(state) == 1
    assert ledger.effect_states([KEY]) == {KEY: "done"}


def test_a_post_that_died_before_reaching_slack_is_posted_once_on_the_rerun(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    settings = settings_for(make_settings, url)
    leave_attempting(ledger, items_for(settings, ledger, make_channels(settings)))
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert report.sent == [KEY] and not report.recovered and history_calls(state) == 1
    (msg,) = state.messages
    assert msg["metadata"] == {"event_type": METADATA_EVENT, "event_payload": {"effect_key": KEY}}
    assert ledger.effect_states([KEY]) == {KEY: "done"}
    again = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert again.already_done == [KEY] and len(state.messages) == 1


def test_a_lookup_refused_for_a_missing_scope_leaves_it_unknown_and_posts_nothing(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    state, url = slack
    state.scopes.discard("channels:history")
    settings = settings_for(make_settings, url)
    leave_attempting(ledger, items_for(settings, ledger, make_channels(settings)))
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert report.unknown == [KEY] and not report.sent and not state.messages and posts(state) == 0
    (effect,) = ledger.effects_for("pi_3Q0001")
    assert effect.status == "unknown" and "missing_scope" in (effect.result or "")


def test_the_lookup_pages_through_history_past_the_first_page(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    """Ours is under 450 later messages (200 a page): found on the third page, one channel list."""
    state, url = slack
    settings = settings_for(make_settings, url)
    items = items_for(settings, ledger, make_channels(settings))
    leave_attempting(ledger, items)
    metadata = {"event_type": METADATA_EVENT, "event_payload": {"effect_key": KEY}}
    ours = state.add_message("#payments", "ours, whose answer the dead run never recorded", metadata)
    for i in range(450):
        other = {"event_type": METADATA_EVENT, "event_payload": {"effect_key": f"slack:#payments:x:{i}"}}
        state.add_message("#payments", f"later {i}", other if i % 2 else None)
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert report.recovered == [KEY] and posts(state) == 0
    assert history_calls(state) == 3
    assert [r["params"].get("cursor") is None for r in state.requests if "history" in r["path"]] == [
        True,
        False,
        False,
    ]
    (effect,) = ledger.effects_for("pi_3Q0001")
    assert effect.status == "done" and effect.result == ours


def test_find_message_reads_slack_as_slack_answers(slack: Fake, clock: VirtualClock) -> None:
    state, url = slack
    state.channels.update({f"extra-{i}": f"C0EXTRA{i:03d}" for i in range(1500)})  # 2 pages of the list
    api = SlackAPI(SLACK_TOKEN, f"{url}/api", sleep=clock.sleep, clock=clock)
    ts = api.post_message("#payments", "x", [], key="k1")
    assert api.find_message("#payments", "k1", since=float(ts) - 60) == ts
    assert api.find_message("C0PAYMENTS", "k1", since=float(ts) - 60) == ts  # an id needs no list
    assert api.find_message("#payments", "k1", since=float(ts)) is None  # `oldest` is exclusive
    assert api.find_message("#payments", "other", since=0) is None
    lists = [r for r in state.requests if r["path"] == "/api/conversations.list"]
    assert len(lists) == 2  # two pages, once: the name -> id map is kept on the client
    assert lists[0]["params"]["types"] == "public_channel,private_channel"
    # history is rate-limited by tier: a 429 is waited out as Slack says
    state.inject(429, path=r"conversations\.history", headers={"Retry-After": "7"})
    assert api.find_message("#payments", "k1", since=0) == ts and 7 in clock.sleeps
    with pytest.raises(PermanentError) as gone:
        api.find_message("#nie-ma", "k1", since=0)
    assert gone.value.code == "channel_not_found"
    state.not_member.add("team")
    with pytest.raises(PermanentError) as outside:
        api.find_message("#team", "k1", since=0)
    assert outside.value.code == "not_in_channel"
    state.scopes.discard("channels:history")
    with pytest.raises(AuthError) as scope:
        api.find_message("#payments", "k1", since=0)
    assert scope.value.code == "missing_scope"
    api.close()


def test_a_doubtful_webhook_message_stays_unknown(
    slack: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    """An incoming webhook leaves nothing to look for: never resent."""
    state, url = slack
    settings = make_settings(customer_messages=[], routes={"payment": ["slack-webhook"]})
    channels = make_channels(settings, slack_webhook_url=f"{url}/services/T0/B0/secret")
    items = build_messages([change(make_payment())], settings, ledger, channels, Renderer("pl", None))
    won, token = ledger.claim_effects(items)
    ledger.mark_attempting(won, token)
    report = notify_changes.fn([change(make_payment())], settings, ledger, channels)
    assert report.unknown == ["slack-webhook:team_payment:pi_3Q0001"] and not state.messages


def test_killed_after_slack_took_the_message_the_rerun_finds_it(tmp_path: Path) -> None:
    """SIGKILL between Slack's answer and the ledger's settle; the rerun looks and posts nothing."""
    state = SlackState(tokens={SLACK_TOKEN})
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.migrate()
    try:
        with serve_app(make_slack_app(state)) as url:
            settings: dict[str, Any] = {
                "home": str(tmp_path / "home"),
                "notify": {
                    "slack_token": SLACK_TOKEN,
                    "slack_api_base": f"{url}/api",
                    "customer_messages": [],
                    "routes": {"payment": ["slack:#payments"]},
                },
            }
            payment = make_payment()
            finish(run_child(tmp_path, settings, [payment], "team", "notify.slack.after_call"), killed=True)
            (msg,) = state.messages
            assert ledger.effect_states([KEY]) == {KEY: "attempting"}
            cfg = Settings.model_validate(settings)
            report = notify_changes.fn(
                [PaymentChange(payment=payment, previous=None)], cfg, ledger, audience="team"
            )
            assert report.recovered == [KEY] and not report.sent
            assert len(state.messages) == 1 and posts(state) == 1
            (effect,) = ledger.effects_for("pi_3Q0001")
            assert effect.status == "done" and effect.result == msg["ts"]
    finally:
        ledger.dispose()
