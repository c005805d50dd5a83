"""Telegram through the fake over real HTTP: HTML that parses, retry_after honoured, errors sorted."""

from __future__ import annotations

import logging

import pytest

from stripeflow.core.config import Settings
from stripeflow.core.errors import AuthError, PermanentError
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import notify_changes
from stripeflow.tasks.notify.telegram import TelegramAPI
from stripeflow.testing.telegram import TelegramState, check_html
from tests.tasks.notify.conftest import (
    TELEGRAM_TOKEN,
    MakeChannels,
    SettingsFactory,
    VirtualClock,
    change,
    make_payment,
)

Fake = tuple[TelegramState, str]


KINDS = ("payment", "refund", "failure", "dispute")


def settings_for(
    make_settings: SettingsFactory, url: str, chat: str = "-1001", language: str = "pl"
) -> Settings:
    return make_settings(
        language=language,
        telegram_api_base=url,
        customer_messages=[],
        routes={kind: [f"telegram:{chat}"] for kind in KINDS},
    )


@pytest.mark.parametrize("language", ["pl", "en"])
@pytest.mark.parametrize("status", ["succeeded", "failed", "disputed"])
def test_team_messages_are_html_telegram_accepts(
    telegram: Fake,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
    language: str,
    status: str,
) -> None:
    state, url = telegram
    settings = settings_for(make_settings, url, language=language)
    payment = make_payment(status=status, name="Jan <script> & Syn", failure_message="Karta odrzucona")
    report = notify_changes.fn([change(payment)], settings, ledger, make_channels(settings))
    assert len(report.sent) == 1, ledger.dead_letters()
    (msg,) = state.messages
    assert "Jan <script> & Syn" in msg["text"]  # escaped on the way, shown as typed
    assert state.requests[0]["json"]["parse_mode"] == "HTML"


def test_retry_after_from_the_body_is_honoured(
    telegram: Fake,
    clock: VirtualClock,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
) -> None:
    state, url = telegram
    state.fail_next(1, status=429, retry_after=5)
    settings = settings_for(make_settings, url)
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert len(report.sent) == 1 and 5 in clock.sleeps and len(state.requests) == 2


def test_unknown_chat_is_dead_lettered(
    telegram: Fake, make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    _, url = telegram
    settings = settings_for(make_settings, url, chat="-999")
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert report.dead == ["telegram:-999:team_payment:pi_3Q0001"]
    assert "chat not found" in ledger.dead_letters()[0].reason


def test_errors_by_cause(telegram: Fake, clock: VirtualClock) -> None:
    state, url = telegram
    state.blocked.add("42")
    api = TelegramAPI(TELEGRAM_TOKEN, url, sleep=clock.sleep, clock=clock)
    with pytest.raises(PermanentError) as blocked:
        api.send_message("42", "x")
    assert not isinstance(blocked.value, AuthError) and blocked.value.status == 403
    with pytest.raises(PermanentError, match="can't parse entities"):
        api.send_message("-1001", "<div>no</div>")
    wrong = TelegramAPI("999:wrong", url, sleep=clock.sleep, clock=clock)
    with pytest.raises(AuthError):
        wrong.send_message("-1001", "x")
    api.close()
    wrong.close()


def test_the_token_never_reaches_a_log(
    telegram: Fake,
    clock: VirtualClock,
    caplog: pytest.LogCaptureFixture,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
) -> None:
    _, url = telegram
    settings = settings_for(make_settings, url)
    with caplog.at_level(logging.DEBUG):
        notify_changes.fn(
            [change(make_payment()), change(make_payment(payment_id="pi_2", status="failed"))],
            settings,
            ledger,
            make_channels(settings),
        )
    assert any("sendMessage" in r.getMessage() for r in caplog.records)  # httpx did log the request
    assert TELEGRAM_TOKEN not in caplog.text and "TEST-token" not in caplog.text
    assert "bot<redacted>" in caplog.text
    api = TelegramAPI(TELEGRAM_TOKEN, url, sleep=clock.sleep, clock=clock)
    api.send_message("-1001", "x")
    assert set(api.stats.by_path) == {"/sendMessage"}
    api.close()


def test_fake_checks_html_like_telegram() -> None:
    assert check_html('<b>a</b> <a href="https://x">l</a> &lt;&amp;')[0] is None
    assert "Unsupported start tag" in (check_html("<p>a</p>")[0] or "")
    assert "end tag" in (check_html("<b>a")[0] or "")
    assert check_html("a < b")[0] is not None
