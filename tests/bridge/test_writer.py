"""The inbox writer under the real bridge: a refused row fails alone, a stuck or dead writer
answers 503 by the deadline and shows in /healthz, an outage is 503 with Retry-After for everyone
and the bridge recovers; no request ever waits past its client's timeout."""

from __future__ import annotations

import concurrent.futures
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sa_event

import stripeflow.bridge.app as bridge_app
from stripeflow.core.config import Settings
from stripeflow.core.ledger import IncomingEvent, Ledger
from stripeflow.testing.stripe_events import StripeWorld
from stripeflow.testing.tcp_proxy import TcpProxy
from tests.bridge.conftest import Bridge, good_event, inbox_locked, stored, wait_until


def unchecked_parse(data: Any, payload: str) -> IncomingEvent:
    """The bridge's parser as it was before the checks: any value reaches the database. Stands
    for a value no check foresaw, so the writer's own defence is what is tested."""
    return IncomingEvent(
        event_id=data["id"],
        type=data["type"],
        object_id=data["data"]["object"].get("id"),
        created=data["created"],
        livemode=bool(data.get("livemode")),
        payload=payload,
    )


# Values both databases refuse, each raised differently: OverflowError (sqlite3) or DataError
# (bigint out of range), ProgrammingError (cannot bind a dict), UnicodeEncodeError (not UTF-8).
REFUSED = {
    "created 2^63": ("created", 2**63),
    "object id a dict": ("object", {"id": {"nested": 1}}),
    "event id with a lone surrogate": ("id", "evt_\ud800"),
}


def refused_event(world: StripeWorld, case: str) -> dict[str, Any]:
    field, value = REFUSED[case]
    event = good_event(world)
    if field == "object":
        event["data"]["object"]["id"] = value["id"]
    else:
        event[field] = value
    return event


def post_all(
    bridge: Bridge, events: Sequence[dict[str, Any]]
) -> list[concurrent.futures.Future[httpx.Response]]:
    pool = concurrent.futures.ThreadPoolExecutor(len(events))
    futures = [pool.submit(bridge.post_event, e) for e in events]
    pool.shutdown(wait=False)
    return futures


def in_flight(health: dict[str, Any]) -> bool:
    """The writer has taken what was queued and is writing it."""
    return health["queued"] == 0 and health["oldest_wait_s"] > 0


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_row_the_database_refuses_fails_alone_and_its_commit_is_stored(
    bridge_on: Any, any_ledger: Ledger, world: StripeWorld, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(bridge_app, "parse_event", unchecked_parse)
    goods = [good_event(world) for _ in range(12)]
    bad = refused_event(world, case)
    with bridge_on(any_ledger, timeout=15) as bridge:
        with inbox_locked(any_ledger):
            # The first event holds the writer on the lock; the rest queue up behind it and so
            # are written as one batch, the bad row among them, once the lock is gone.
            [first] = post_all(bridge, goods[:1])
            wait_until(lambda: in_flight(bridge.writer.health(60)), "the writer holds the first event")
            rest = post_all(bridge, [*goods[1:6], bad, *goods[6:]])
            wait_until(lambda: bridge.writer.health(60)["queued"] == 12, "12 events queued")
        answers = [f.result() for f in [first, *rest]]
        right_after = bridge.post_event(good_event(world))
        alive = bridge.writer.alive
    bad_answer = answers.pop(6)
    assert [a.status_code for a in answers] == [200] * 12
    assert bad_answer.status_code == 400
    assert bad_answer.json()["error"]["code"] == "unstorable_event"
    assert right_after.status_code == 200 and alive
    assert len(any_ledger.load_events([g["id"] for g in goods])) == 12
    assert stored(any_ledger) == 13


def test_a_stuck_writer_answers_503_by_the_deadline_and_healthz_says_so(
    bridge_on: Any, any_ledger: Ledger, world: StripeWorld
) -> None:
    event = good_event(world)
    with bridge_on(any_ledger, timeout=5, request_deadline=1, writer_stuck_after=1) as bridge:
        with inbox_locked(any_ledger):
            started = time.monotonic()
            stuck = bridge.post_event(event)
            waited = time.monotonic() - started
            health = bridge.client.get("/healthz")
        assert stuck.status_code == 503
        assert stuck.json()["error"]["code"] == "ledger_unavailable"
        assert stuck.headers["retry-after"] == "5"
        assert 1 <= waited < 4  # the deadline, not the client's timeout nor SQLite's 30 s busy wait
        assert health.status_code == 503
        writer = health.json()["writer"]
        assert writer["ok"] is False and writer["alive"] is True and writer["oldest_wait_s"] >= 1
        assert health.json()["ledger"]["ok"] is True  # the database answers; the writer is stuck

        wait_until(lambda: bridge.client.get("/healthz").status_code == 200, "healthy again")
        retried = bridge.post_event(event)  # as Stripe retries after the 503
        assert retried.status_code == 200
        assert bridge.post_event(good_event(world)).status_code == 200
    assert len(any_ledger.load_events([event["id"]])) == 1
    assert stored(any_ledger) == 2


def test_a_dead_writer_is_reported_and_webhooks_fail_fast(
    bridge_on: Any, ledger: Ledger, world: StripeWorld
) -> None:
    with bridge_on(ledger, timeout=5) as bridge:
        bridge.writer.stop()
        health = bridge.client.get("/healthz")
        started = time.monotonic()
        answer = bridge.post_event(good_event(world))
        waited = time.monotonic() - started
    assert health.status_code == 503 and health.json()["writer"]["alive"] is False
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "not running" in answer.json()["error"]["message"]
    assert waited < 1  # no waiting for a deadline when nobody will ever write


class FailsOnce(Ledger):
    """A real ledger whose first batch raises what no one planned for (a bug, say)."""

    failed = False

    def store_events(self, events: Sequence[IncomingEvent]) -> list[bool]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("unexpected")
        return super().store_events(events)


def test_an_unexpected_exception_is_answered_503_and_the_writer_goes_on(
    bridge_on: Any, settings: Settings, world: StripeWorld
) -> None:
    ledger = FailsOnce(settings.ledger_url)
    ledger.migrate()
    with bridge_on(ledger, timeout=5) as bridge:
        first = bridge.post_event(good_event(world))
        second = bridge.post_event(good_event(world))
        health = bridge.client.get("/healthz").json()
    ledger.dispose()
    assert first.status_code == 503 and first.headers["retry-after"] == "5"
    assert second.status_code == 200
    assert health["writer"]["ok"] is True and health["writer"]["crashes"] == 1


def test_a_storage_outage_is_503_for_everyone_and_the_bridge_recovers(
    bridge_on: Any, pg_url: str, world: StripeWorld
) -> None:
    direct = Ledger(pg_url)
    direct.migrate()
    direct.dispose()
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy(host_port.split(":")[0], int(host_port.split(":")[1]))
    ledger = Ledger(pg_url.replace(host_port, f"127.0.0.1:{proxy.port}"))
    try:
        with bridge_on(ledger, timeout=10) as bridge:
            assert bridge.post_event(good_event(world)).status_code == 200
            proxy.down()  # PostgreSQL is gone: connections cut, new ones refused
            started = time.monotonic()
            down = [f.result() for f in post_all(bridge, [good_event(world) for _ in range(8)])]
            waited = time.monotonic() - started
            wait_until(lambda: bridge.client.get("/healthz").status_code == 503, "healthz says so")
            proxy.up()
            back = bridge.post_event(good_event(world))
            wait_until(lambda: bridge.client.get("/healthz").status_code == 200, "healthy again")
        assert [(a.status_code, a.json()["error"]["code"]) for a in down] == [(503, "ledger_unavailable")] * 8
        assert all(a.headers["retry-after"] == "5" for a in down)
        assert waited < 5  # answered as soon as the database refused, not at the deadline
        assert back.status_code == 200
        assert stored(ledger) == 2
    finally:
        proxy.down()
        ledger.dispose()


def test_health_probes_do_not_scan_the_inbox_on_every_call(
    bridge_on: Any, ledger: Ledger, world: StripeWorld
) -> None:
    scans = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "GROUP BY" in statement:
            scans.append(statement)

    sa_event.listen(ledger.engine, "before_cursor_execute", count)
    with bridge_on(ledger, timeout=5) as bridge:
        bridge.post_event(good_event(world))
        started = time.monotonic()
        answers = [bridge.client.get("/healthz") for _ in range(50)]
        elapsed = time.monotonic() - started
    assert {a.status_code for a in answers} == {200}
    assert answers[-1].json()["ledger"] == {"ok": True, "inbox": {"pending": 1}}
    assert set(answers[-1].json()) == {"ok", "ledger", "writer", "prefect", "stripe"}
    assert len(scans) <= math.ceil(elapsed / 2) + 1  # one scan per 2 s at most, not one per probe


def test_writer_health_names_what_it_measures(bridge_on: Any, ledger: Ledger, world: StripeWorld) -> None:
    with bridge_on(ledger, timeout=5) as bridge:
        bridge.post(json.dumps(good_event(world)))
        writer = bridge.client.get("/healthz").json()["writer"]
    assert writer["ok"] is True and writer["alive"] is True and writer["queued"] == 0
    assert writer["oldest_wait_s"] == 0 and writer["batches"] == 1 and writer["refused"] == 0
