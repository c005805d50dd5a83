"""The accounting hand-off: a signed JSON webhook, retried on 5xx, once per payment change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import hand_off_changes
from stripeflow.tasks.notify.handoff import SIGNATURE_HEADER, HandoffAPI, sign, verify_signature
from tests.fakes.server import serve_app
from tests.notify.conftest import SettingsFactory, VirtualClock, change, make_payment

SECRET = "whsec_handoff_test"


@dataclass
class Receiver:
    """An ERP's endpoint: checks the signature, dedupes on Idempotency-Key, can fail on purpose."""

    fail_next: list[int] = field(default_factory=list)
    attempts: int = 0
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_signatures: int = 0

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.attempts += 1
            body = await request.body()
            if self.fail_next:
                return JSONResponse({"error": "busy"}, status_code=self.fail_next.pop(0))
            if not verify_signature(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body):
                self.bad_signatures += 1
                return JSONResponse({"error": "bad signature"}, status_code=400)
            self.accepted.setdefault(request.headers["idempotency-key"], json.loads(body))
            return JSONResponse({"received": True})

        return Starlette(routes=[Route("/erp/stripeflow", receive, methods=["POST"])])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serve_app(r.app()) as url:
        yield r, f"{url}/erp/stripeflow"


def test_signed_retried_and_once_per_change(
    receiver: tuple[Receiver, str], clock: VirtualClock, make_settings: SettingsFactory, ledger: Ledger
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
    receiver: tuple[Receiver, str], clock: VirtualClock, make_settings: SettingsFactory, ledger: Ledger
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
