"""Replay finishes what failed: SMTP, Slack and the hand-off receiver down for longer than the
task retries, then back; one replay sends each message and hand-off exactly once and resolves
the dead letters; a second replay does nothing. On a real Prefect server, through the dispatcher."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stripeflow.flows.process_payment_events as flow_module
from stripeflow.bridge.app import parse_event
from stripeflow.core.config import Settings
from stripeflow.core.http import VendorAPI
from stripeflow.deployments.dispatcher import Dispatcher
from stripeflow.flows.process_payment_events import process_payment_events
from stripeflow.flows.replay import replay
from stripeflow.launcher import free_port
from stripeflow.runtime import Runtime, build_runtime, set_runtime
from stripeflow.tasks.notify import hand_off_changes, notify_changes
from stripeflow.testing.handoff import HandoffReceiver
from stripeflow.testing.server import serve_app
from stripeflow.testing.slack import SlackState, make_slack_app
from stripeflow.testing.smtp import smtp_server
from stripeflow.testing.stripe_events import StripeWorld

SECRET = "whsec_handoff"
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def ports() -> dict[str, int]:
    return {"smtp": free_port(), "slack": free_port(), "handoff": free_port()}


@pytest.fixture
def runtime(prefect_server: str, tmp_path: Path, ports: dict[str, int]) -> Iterator[Runtime]:
    settings = Settings.model_validate(
        {
            "home": tmp_path / "home",
            "stripe": {"webhook_secrets": ["whsec_test_primary"]},
            "notify": {
                "smtp": {"host": "127.0.0.1", "port": ports["smtp"], "security": "none", "timeout": 5},
                "sender": "Sklep <sklep@example.pl>",
                "slack_token": "xoxb-test",
                "slack_api_base": f"http://127.0.0.1:{ports['slack']}/api",
                "routes": {"payment": ["slack:#payments"]},
            },
            "handoff": {"url": f"http://127.0.0.1:{ports['handoff']}/erp/stripeflow", "secret": SECRET},
        }
    )
    rt = build_runtime(settings)
    set_runtime(rt)
    yield rt
    set_runtime(None)
    rt.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tasks' declared retries and the seam's backoff, as they are, only without the waiting."""
    monkeypatch.setattr(flow_module, "notify_changes", notify_changes.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(flow_module, "hand_off_changes", hand_off_changes.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(VendorAPI, "backoff_base", 0.001)


def store(runtime: Runtime, *events: dict[str, Any]) -> list[str]:
    incoming = [parse_event(e, json.dumps(e)) for e in events]
    runtime.ledger.store_events(incoming)
    return [e.event_id for e in incoming]


def paid(world: StripeWorld, email: str) -> tuple[dict[str, Any], str]:
    cus = world.customer(email, "Anna Nowak")
    pi, ch = world.payment_intent(24900, "pln", cus, product="Subskrypcja Pro")
    return world.event("payment_intent.succeeded", {**pi, "latest_charge": ch, "customer": cus}), pi["id"]


def test_replay_after_an_outage_sends_each_message_and_hand_off_once(
    runtime: Runtime, world: StripeWorld, ports: dict[str, int]
) -> None:
    ledger = runtime.ledger
    (e1, pi1), (e2, pi2) = paid(world, "a@example.pl"), paid(world, "b@example.pl")
    e3, pi3 = paid(world, "nikt@example.pl")  # an address the server will refuse for good
    event_ids = store(runtime, e1, e2, e3)
    dispatcher = Dispatcher(runtime)
    while dispatcher.run_once():  # SMTP, Slack and the receiver are all down
        pass
    letters = ledger.dead_letters()
    assert sorted((d.payment_id, d.target) for d in letters) == sorted(
        (pi, target) for pi in (pi1, pi2, pi3) for target in ("email", "slack", "handoff")
    )
    assert all(d.effect_key and "RetriableError" in d.reason for d in letters)
    assert ledger.inbox_counts() == {"done": 3}

    slack = SlackState(per_channel_interval=0)
    receiver = HandoffReceiver(SECRET)
    with (
        smtp_server(port=ports["smtp"], reject={"nikt@example.pl"}) as smtp,
        serve_app(make_slack_app(slack), port=ports["slack"]),
        serve_app(receiver.app(), port=ports["handoff"]),
    ):
        replay()
        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["a@example.pl", "b@example.pl"]
        assert len(slack.messages) == 3 and len(receiver.accepted) == 3 and receiver.repeats == 0
        assert {b["payment"]["payment_id"] for b in receiver.accepted.values()} == {pi1, pi2, pi3}
        (refused,) = ledger.dead_letters()  # resolved only when done: the refused one stays, once
        assert refused.payment_id == pi3 and refused.target == "email" and "550" in refused.reason
        statuses = {e.key: e.status for pi in (pi1, pi2, pi3) for e in ledger.effects_for(pi)}
        sinks = {k: s for k, s in statuses.items() if k.startswith(("email:", "slack:", "handoff:"))}
        assert sinks == {k: "failed" if k == refused.effect_key else "done" for k in sinks}

        replay()  # again: the refused address is tried again, and nothing else is sent
        process_payment_events(event_ids=event_ids)  # nor by a rerun by hand
        assert len(smtp.messages) == 2 and len(slack.messages) == 3
        assert receiver.attempts == 3 and len(receiver.accepted) == 3
        assert [d.effect_key for d in ledger.dead_letters()] == [refused.effect_key]
    assert ledger.inbox_counts() == {"done": 3}
