"""The exactly-once machinery itself: claims, outcomes, retries only for outages."""

from __future__ import annotations

import logging

import pytest

from stripeflow.core.errors import OutcomeUnknownError, PermanentError, RetriableError
from stripeflow.core.ledger import Ledger
from stripeflow.tasks import notify
from stripeflow.tasks.notify.delivery import Outgoing, deliver
from tests.notify.conftest import MakeChannels, SettingsFactory, change, make_payment

LOG = logging.getLogger("test")


def item(key: str, send: object) -> Outgoing:
    def run() -> str:
        if isinstance(send, Exception):
            raise send
        return str(send)

    return Outgoing(
        key=key,
        payment_id=key.split(":")[-1],
        target="slack",
        action="team_payment",
        channel=key.rsplit(":", 1)[0],
        send=run,
    )


def test_only_one_run_wins_a_claim(ledger: Ledger) -> None:
    items = [item(f"c:pi_{i}", "ok") for i in range(3)]
    won, token = ledger.claim_effects(items)
    again, _ = ledger.claim_effects(items, take_over=False)
    assert won == {i.key for i in items} and again == set()
    # a crash while sending leaves them attempting: never sent again blindly
    ledger.mark_attempting(won, token)
    assert {e.status for e in ledger.effects_for("pi_0")} == {"attempting"}
    assert deliver(items, ledger, final_attempt=True, logger=LOG).already_done == [i.key for i in items]


def test_outcomes(ledger: Ledger) -> None:
    items = [
        item("a:pi_ok", "ts-1"),
        item("b:pi_unknown", OutcomeUnknownError("lost", vendor="slack")),
        item("c:pi_bad", PermanentError("channel_not_found", vendor="slack", code="channel_not_found")),
        item("d:pi_later", RetriableError("down", vendor="slack", wait=3)),
    ]
    report = deliver(items, ledger, final_attempt=False, logger=LOG)
    assert (report.sent, report.unknown, report.dead, report.pending) == (
        ["a:pi_ok"],
        ["b:pi_unknown"],
        ["c:pi_bad"],
        ["d:pi_later"],
    )
    status = {
        e.key: e.status
        for pid in ("pi_ok", "pi_unknown", "pi_bad", "pi_later")
        for e in ledger.effects_for(pid)
    }
    assert status == {"a:pi_ok": "done", "b:pi_unknown": "unknown", "c:pi_bad": "failed"}
    (letter,) = ledger.dead_letters()
    assert letter.reason.startswith("c:pi_bad: PermanentError") and letter.payment_id == "pi_bad"
    final = deliver(items, ledger, final_attempt=True, logger=LOG)
    assert final.dead == ["d:pi_later"] and len(final.already_done) == 3


def test_a_down_channel_is_called_once_per_run(ledger: Ledger) -> None:
    calls: list[str] = []

    def down() -> str:
        calls.append("x")
        raise RetriableError("connection refused", vendor="slack")

    items = [
        Outgoing(
            key=f"slack:#p:team_payment:pi_{i}",
            payment_id=f"pi_{i}",
            target="slack",
            action="team_payment",
            channel="slack:#p",
            send=down,
        )
        for i in range(4)
    ]
    report = deliver(items, ledger, final_attempt=False, logger=LOG)
    assert len(report.pending) == 4 and calls == ["x"] and not ledger.effects_done(i.key for i in items)


def test_the_task_raises_for_its_retries_only_while_attempts_remain(
    monkeypatch: pytest.MonkeyPatch,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
) -> None:
    settings = make_settings(
        customer_messages=[], routes={"payment": ["slack:#payments"]}, slack_api_base="http://127.0.0.1:9/api"
    )  # nothing listens: refused
    monkeypatch.setattr(notify, "_final_attempt", lambda: False)
    with pytest.raises(RetriableError, match="1 notifications still to send"):
        notify.notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert not ledger.dead_letters()
    monkeypatch.setattr(notify, "_final_attempt", lambda: True)
    report = notify.notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    assert len(report.dead) == 1 and "cannot connect" in ledger.dead_letters()[0].reason
