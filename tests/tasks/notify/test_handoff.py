"""The accounting hand-off: a signed JSON webhook, retried on 5xx, once per payment change."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import hand_off_changes
from stripeflow.tasks.notify.handoff import HandoffAPI, sign, verify_signature
from stripeflow.testing.handoff import HandoffReceiver
from stripeflow.testing.server import serve_app
from tests.tasks.notify.conftest import SettingsFactory, VirtualClock, change, make_payment

SECRET = "whsec_handoff_test"


@pytest.fixture
def receiver() -> Iterator[tuple[HandoffReceiver, str]]:
    r = HandoffReceiver(SECRET)
    with serve_app(r.app()) as url:
        yield r, f"{url}{r.path}"


def test_signed_retried_and_once_per_change(
    receiver: tuple[HandoffReceiver, str], clock: VirtualClock, make_settings: SettingsFactory, ledger: Ledger
) -> None:
    r, url = receiver
    settings = make_settings()
    client = HandoffAPI(url, SECRET, sleep=clock.sleep)
    r.fail_next = [500, 503]
    paid = make_payment()
    report = hand_off_changes.fn([change(paid)], settings, ledger, client)
    assert len(report.sent) == 1 and r.attempts == 3 and client.stats.retries == 2
    (key, body) = next(iter(r.accepted.items()))
    assert key == report.sent[0] and key.startswith("handoff:pi_3Q0001:") and body["id"] == key
    assert body["type"] == "payment.changed" and body["previous"] is None
    assert body["payment"]["amount"] == "1249.00" and body["payment"]["refunded_amount"] == "0.00"
    assert body["payment"]["currency"] == "PLN" and body["payment"]["status"] == "succeeded"

    again = hand_off_changes.fn([change(paid)], settings, ledger, client)
    assert again.already_done == [key] and r.attempts == 3

    refunded = make_payment(refunded_amount=Decimal("249.00"), status="partially_refunded")
    hand_off_changes.fn([change(refunded, paid)], settings, ledger, client)
    assert len(r.accepted) == 2 and r.bad_signatures == 0
    second = next(b for k, b in r.accepted.items() if k != key)
    assert second["previous"] == {"status": "succeeded", "amount": "1249.00", "refunded_amount": "0.00"}
    assert second["payment"]["refunded_amount"] == "249.00"
    client.close()


def test_a_rejected_hand_off_is_dead_lettered(
    receiver: tuple[HandoffReceiver, str], clock: VirtualClock, make_settings: SettingsFactory, ledger: Ledger
) -> None:
    r, url = receiver
    r.fail_next = [422]
    client = HandoffAPI(url, SECRET, sleep=clock.sleep)
    report = hand_off_changes.fn([change(make_payment())], make_settings(), ledger, client)
    assert len(report.dead) == 1 and r.attempts == 1
    assert ledger.dead_letters()[0].target == "handoff"
    client.close()


def test_settings_without_a_secret_dead_letter(
    make_settings: SettingsFactory, ledger: Ledger, tmp_path: object
) -> None:
    from stripeflow.core.config import Settings

    settings = Settings.model_validate({"handoff": {"url": "http://127.0.0.1:9/x"}})
    report = hand_off_changes.fn([change(make_payment())], settings, ledger)
    assert len(report.dead) == 1 and "STRIPEFLOW_HANDOFF_SECRET" in ledger.dead_letters()[0].reason
    assert hand_off_changes.fn([change(make_payment())], make_settings(), ledger).counts()["sent"] == 0


def test_signature_verification() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature(SECRET, header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify_signature("other", header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body, now=1_700_001_000)  # too old
    assert verify_signature(SECRET, f"{header},v1=deadbeef", body, now=1_700_000_000)  # rotation
