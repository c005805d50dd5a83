"""Any name Stripe may carry renders and sends on every channel: separators, controls, huge ones.

A product or customer name with U+2028 used to raise while the e-mail's headers were built,
outside the send's error handling, and left its whole chunk of messages unsettled for good.
"""

from __future__ import annotations

import json
import logging

import pytest

from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import hand_off_changes, notify_changes
from stripeflow.tasks.notify.delivery import Outgoing, deliver
from stripeflow.tasks.notify.handoff import HandoffAPI
from stripeflow.testing.handoff import HandoffReceiver
from stripeflow.testing.server import serve_app
from stripeflow.testing.slack import SlackState
from stripeflow.testing.smtp import smtp_server
from stripeflow.testing.telegram import TelegramState, check_html
from tests.tasks.notify.conftest import MakeChannels, SettingsFactory, VirtualClock, change, make_payment

HOSTILE = [
    "Pro\u2028Plan",
    "Pro\u2029Plan",
    "Pro\u0085Plan",
    "Pro\rPlan",
    "Pro\nBcc: victim@example.com",
    "Pro\r\n\r\n<html>",
    "Pro\x00Plan",
    "Pro\x0b\x0c\x1c\x1d\x1ePlan",
    "\u2028",
    "Ż" * 5000,
    "=?utf-8?q?=41?= Plan",
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda s: repr(s[:12]))
def test_every_channel_takes_a_hostile_product_and_customer_name(
    hostile: str,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
    slack: tuple[SlackState, str],
    telegram: tuple[TelegramState, str],
    clock: VirtualClock,
) -> None:
    slack_state, slack_url = slack
    tg_state, tg_url = telegram
    receiver = HandoffReceiver("whsec_h")
    payment = make_payment(name=hostile, products=(hostile,))
    with smtp_server() as server, serve_app(receiver.app()) as handoff_url:
        settings = make_settings(
            smtp={"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 5},
            sender="Sklep <sklep@example.pl>",
            slack_api_base=f"{slack_url}/api",
            telegram_api_base=tg_url,
            routes={"payment": ["slack:#payments", "telegram:-1001", "email:zespol@example.pl"]},
        )
        report = notify_changes.fn([change(payment)], settings, ledger, make_channels(settings))
        client = HandoffAPI(f"{handoff_url}{receiver.path}", "whsec_h", sleep=clock.sleep)
        handed = hand_off_changes.fn([change(payment)], settings, ledger, client)
        client.close()
        assert not report.dead and not report.unknown and len(report.sent) == 4
        assert len(handed.sent) == 1 and len(receiver.accepted) == 1
        assert {e.status for e in ledger.effects_for(payment.payment_id)} == {"done"}

        by_to = {m.rcpt_tos[0]: m for m in server.messages}
        customer = by_to["anna@example.pl"].message
        for name in ("Subject", "To"):
            value = str(customer[name])
            assert not any(c in value for c in "\r\n\x00\x85\u2028\u2029"), (name, value)
        assert len(str(customer["Subject"])) <= 200 and customer["To"].addresses[0].addr_spec == payment.email
        assert customer["Bcc"] is None and set(by_to) == {"anna@example.pl", "zespol@example.pl"}
        text = customer.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert not any(c in text for c in "\x00\x0b\x85\u2028\u2029") and "pi_3Q0001" in text
    (slack_msg,) = slack_state.messages
    assert slack_msg["metadata"]["event_payload"] == {"effect_key": "slack:#payments:team_payment:pi_3Q0001"}
    (tg_msg,) = tg_state.messages
    assert check_html(tg_msg["html"])[0] is None
    body = next(iter(receiver.accepted.values()))
    assert body["payment"]["name"] == hostile  # the hand-off carries the data as it is, JSON-escaped
    assert json.loads(json.dumps(body)) == body


def test_one_message_that_cannot_be_built_does_not_hold_up_its_chunk(
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: SettingsFactory,
    make_channels: MakeChannels,
) -> None:
    """Whatever a template or header still refuses, that message alone is dead-lettered."""
    from stripeflow.tasks.notify import email as email_module

    real = email_module.build_email

    def picky(content, envelope, *, msg_id, now=None):  # type: ignore[no-untyped-def]
        if "pi_poison" in msg_id:
            raise ValueError("Header values may not contain linefeed or carriage return characters")
        return real(content, envelope, msg_id=msg_id, now=now)

    monkeypatch.setattr(email_module, "build_email", picky)
    settings = make_settings(sender="Sklep <sklep@example.pl>", routes={})
    payments = [make_payment(payment_id=f"pi_{i}", email=f"c{i}@example.pl") for i in range(5)]
    payments[2] = make_payment(payment_id="pi_poison", email="p@example.pl")
    report = notify_changes.fn([change(p) for p in payments], settings, ledger, make_channels(settings))
    assert report.dead == ["email:customer:payment_confirmation:pi_poison"] and len(report.sent) == 4
    (letter,) = ledger.dead_letters()
    assert letter.payment_id == "pi_poison" and "cannot build the message" in letter.reason
    assert letter.effect_key == report.dead[0]
    assert not [
        e for p in payments for e in ledger.effects_for(p.payment_id) if e.status not in ("done", "failed")
    ]


def test_deliver_never_leaves_a_claim_for_a_message_that_fails_to_build(ledger: Ledger) -> None:
    from stripeflow.tasks.notify.base import build as _build

    def send(attempt: object) -> str:
        return _build(lambda: "x".encode("ascii") and "\u2028".encode("ascii").decode())

    out = Outgoing(key="k:pi_1", payment_id="pi_1", target="email", action="a", channel="email", send=send)
    report = deliver([out], ledger, final_attempt=False, logger=logging.getLogger("t"))
    assert report.dead == ["k:pi_1"] and ledger.effect_states(["k:pi_1"]) == {"k:pi_1": "failed"}
