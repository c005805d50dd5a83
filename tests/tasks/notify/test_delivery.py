"""The exactly-once machinery itself: claims, outcomes, retries only for outages."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from stripeflow.core.errors import OutcomeUnknownError, PermanentError, RetriableError
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import tasks as notify
from stripeflow.tasks.notify.delivery import BuildError, Looked, Outgoing, cannot_look, deliver
from tests.tasks.notify.conftest import MakeChannels, SettingsFactory, change, make_payment

LOG = logging.getLogger("test")


def item(
    key: str,
    send: object,
    *,
    calls: list[str] | None = None,
    look: Looked | None = None,
    dedupes: bool = False,
) -> Outgoing:
    def run(attempt: Callable[[], None]) -> str:
        attempt()
        if calls is not None:
            calls.append(key)
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
        look=(lambda: look) if look is not None else cannot_look,
        dedupes=dedupes,
    )


def status(ledger: Ledger, *payment_ids: str) -> dict[str, str]:
    return {e.key: e.status for pid in payment_ids for e in ledger.effects_for(pid)}


def test_only_one_run_wins_a_claim(ledger: Ledger) -> None:
    items = [item(f"c:pi_{i}", "ok") for i in range(3)]
    won, _ = ledger.claim_effects(items)
    again, _ = ledger.claim_effects(items, take_over=False)
    assert won == {i.key for i in items} and again == set()


def test_claims_of_a_dead_attempt_are_taken_over_and_sent(ledger: Ledger) -> None:
    """The lost e-mails: claimed, then the worker died before sending. The next run sends them."""
    calls: list[str] = []
    items = [item(f"c:pi_{i}", f"ts-{i}", calls=calls) for i in range(3)]
    ledger.claim_effects(items)  # and the process dies
    report = deliver(items, ledger, final_attempt=True, logger=LOG)
    assert sorted(report.sent) == sorted(i.key for i in items) and sorted(calls) == sorted(report.sent)
    assert set(status(ledger, "pi_0", "pi_1", "pi_2").values()) == {"done"}
    assert deliver(items, ledger, final_attempt=True, logger=LOG).already_done == [i.key for i in items]
    assert len(calls) == 3


def test_a_doubtful_attempt_is_settled_by_each_channels_answer(ledger: Ledger) -> None:
    """Left `attempting`: looked at where the target can say, redone where it dedupes, else unknown."""
    calls: list[str] = []
    there = item("outbox:pi_there", "-", calls=calls, look=Looked(True, "<m1@x>"))
    missing = item("outbox:pi_missing", "<m2@x>", calls=calls, look=Looked(False))
    keyed = item("handoff:pi_keyed", "HTTP 200", calls=calls, dedupes=True)
    blind = item("smtp:pi_blind", "-", calls=calls)
    items = [there, missing, keyed, blind]
    _, token = ledger.claim_effects(items)
    ledger.mark_attempting([i.key for i in items], token)  # and the process dies
    report = deliver(items, ledger, final_attempt=True, logger=LOG)
    assert report.recovered == [there.key] and sorted(report.sent) == [keyed.key, missing.key]
    assert report.unknown == [blind.key] and sorted(calls) == [keyed.key, missing.key]
    assert status(ledger, "pi_there", "pi_missing", "pi_keyed", "pi_blind") == {
        there.key: "done",
        missing.key: "done",
        keyed.key: "done",
        blind.key: "unknown",
    }
    again = deliver(items, ledger, final_attempt=True, logger=LOG)
    assert len(again.already_done) == 4 and len(calls) == 2


def test_attempting_is_committed_before_the_call(ledger: Ledger) -> None:
    seen: list[dict[str, str]] = []

    def send(attempt: Callable[[], None]) -> str:
        assert status(ledger, "pi_1") == {"c:pi_1": "claimed"}
        attempt()
        seen.append(status(ledger, "pi_1"))
        return "ts"

    out = Outgoing(key="c:pi_1", payment_id="pi_1", target="slack", action="a", channel="c", send=send)
    deliver([out], ledger, final_attempt=True, logger=LOG)
    assert seen == [{"c:pi_1": "attempting"}] and status(ledger, "pi_1") == {"c:pi_1": "done"}


def test_a_message_that_cannot_be_built_fails_alone(ledger: Ledger) -> None:
    calls: list[str] = []
    bad = Outgoing(
        key="c:pi_bad",
        payment_id="pi_bad",
        target="slack",
        action="team_payment",
        channel="c",
        send=lambda attempt: (_ for _ in ()).throw(BuildError("no header", vendor="notify")),
    )
    items = [item("c:pi_0", "ts", calls=calls), bad, item("c:pi_2", "ts", calls=calls)]
    report = deliver(items, ledger, final_attempt=False, logger=LOG)
    assert report.dead == ["c:pi_bad"] and sorted(report.sent) == ["c:pi_0", "c:pi_2"]
    (letter,) = ledger.dead_letters()
    assert letter.effect_key == "c:pi_bad" and "no header" in letter.reason


def test_what_was_sent_is_settled_even_when_something_unforeseen_escapes(ledger: Ledger) -> None:
    boom = Outgoing(
        key="c:pi_boom",
        payment_id="pi_boom",
        target="slack",
        action="a",
        channel="c",
        send=lambda attempt: (_ for _ in ()).throw(KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):
        deliver([item("c:pi_0", "ts"), boom], ledger, final_attempt=True, logger=LOG)
    assert status(ledger, "pi_0", "pi_boom") == {"c:pi_0": "done", "c:pi_boom": "claimed"}


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

    def down(attempt: Callable[[], None]) -> str:
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
