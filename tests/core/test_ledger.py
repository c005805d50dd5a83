"""The ledger on real SQLite (WAL) and real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, update

from stripeflow.core.config import DEFAULT_ACCOUNT
from stripeflow.core.ledger import (
    MIGRATIONS,
    InboxRow,
    IncomingEvent,
    LeaseKeeper,
    Ledger,
    PaymentRow,
    utcnow,
)
from stripeflow.core.payment import Payment, PaymentStatus
from tests.waiting import wait_for


def stored_payment(ledger: Ledger, payment_id: str) -> Payment | None:
    """The payment's state as its row holds it."""
    with ledger.session() as s:
        row = s.get(PaymentRow, payment_id)
        return Payment.model_validate_json(row.data) if row else None


def incoming(event_id: str, created: int = 1) -> IncomingEvent:
    return IncomingEvent(
        event_id=event_id,
        type="payment_intent.succeeded",
        object_id="pi_1",
        created=created,
        livemode=False,
        payload=json.dumps({"id": event_id}),
    )


def test_migrations_create_every_table_and_can_run_again(any_ledger: Ledger) -> None:
    any_ledger.migrate()
    tables = set(inspect(any_ledger.engine).get_table_names())
    assert {
        "inbox",
        "payments",
        "links",
        "effects",
        "dead_letters",
        "stripe_objects",
        "payment_leases",
        "alembic_version",
    } <= tables


def test_sqlite_runs_in_wal_mode(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_an_event_is_stored_once(any_ledger: Ledger) -> None:
    assert any_ledger.store_events([incoming("evt_1"), incoming("evt_1"), incoming("evt_2")]) == [
        True,
        False,
        True,
    ]
    assert any_ledger.store_events([incoming("evt_1")]) == [False]
    assert any_ledger.inbox_counts() == {"pending": 2}


def test_claims_are_exclusive_until_the_lease_expires(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming(f"evt_{i}", created=i) for i in range(5)])
    first = any_ledger.claim_events(3, lease_seconds=300, token="a")
    second = any_ledger.claim_events(10, lease_seconds=0.5, token="b")
    assert first == ["evt_0", "evt_1", "evt_2"] and second == ["evt_3", "evt_4"]
    assert any_ledger.claim_events(10, lease_seconds=300, token="c") == []
    # b's lease ends unrenewed: its events go to the next claimer, a's stay a's
    assert wait_for(lambda: any_ledger.claim_events(10, 300, token="c"), 5, "b's lease to end") == second


def test_concurrent_claimers_never_take_the_same_event(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming(f"evt_{i:03}", created=i) for i in range(300)])
    taken: dict[str, list[str]] = {}
    start = threading.Barrier(4)

    def claimer(token: str) -> None:
        start.wait()
        mine = taken.setdefault(token, [])
        while ids := any_ledger.claim_events(7, 300, token):
            mine.extend(ids)

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [e for ids in taken.values() for e in ids]
    assert len(everything) == 300 and len(set(everything)) == 300
    assert sum(1 for ids in taken.values() if ids) > 1  # they did run side by side
    assert any_ledger.inbox_counts() == {"claimed": 300}


def test_a_kept_lease_outlives_its_length_and_lapses_when_no_longer_renewed(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming("evt_1")])
    assert any_ledger.claim_events(10, 0.6, token="run") == ["evt_1"]
    keeper = LeaseKeeper(any_ledger, "run", 0.6).start()
    assert any_ledger.lock_payments(["pi_1"], "run", 0.6) == {"pi_1"}
    deadline = time.monotonic() + 2.0  # more than three leases: only the renewals keep it
    while time.monotonic() < deadline:
        assert any_ledger.claim_events(10, 30, token="other") == []
        assert any_ledger.lock_payments(["pi_1"], "other", 30) == set()
        time.sleep(0.05)
    assert keeper.renewals >= 3
    keeper.stop()
    assert wait_for(lambda: any_ledger.claim_events(10, 30, token="other"), 3, "the lease to lapse") == [
        "evt_1"
    ]
    assert wait_for(lambda: any_ledger.lock_payments(["pi_1"], "other", 30), 3, "the payment") == {"pi_1"}


CLAIM_AND_HANG = """
import sys, threading
from stripeflow.core.ledger import LeaseKeeper, Ledger
ledger = Ledger(sys.argv[1])
lease = float(sys.argv[2])
ids = ledger.claim_events(100, lease, token="victim")
LeaseKeeper(ledger, "victim", lease).start()
print(",".join(ids), flush=True)
threading.Event().wait()  # holds the claim, renewing it, until killed
"""


def test_events_of_a_process_killed_with_sigkill_are_claimed_again_within_the_lease(
    any_ledger: Ledger,
) -> None:
    lease = 2.0
    any_ledger.store_events([incoming(f"evt_{i}", created=i) for i in range(5)])
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_HANG, any_ledger.url, str(lease)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert proc.stdout is not None
        claimed = proc.stdout.readline().strip().split(",")
        assert sorted(claimed) == [f"evt_{i}" for i in range(5)]
        deadline = time.monotonic() + 2 * lease  # alive: renewed past its lease, nobody else gets it
        while time.monotonic() < deadline:
            assert any_ledger.claim_events(10, 30, token="rescuer") == []
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        rescued = wait_for(lambda: any_ledger.claim_events(10, 30, token="rescuer"), lease + 2, "a reclaim")
        assert sorted(rescued) == sorted(claimed)  # type: ignore[arg-type]
        assert time.monotonic() - killed_at <= lease + 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_given_ids_are_claimed_unless_another_live_run_holds_them(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming(e, created=i) for i, e in enumerate(["held", "mine", "done", "new"])])
    assert any_ledger.claim_given(["held"], "other", 300) == ["held"]
    assert any_ledger.claim_given(["mine", "done"], "me", 300) == ["mine", "done"]
    any_ledger.finish_events(["done"], "done", token="me")
    # a Retry or replay of all four: the other run's live one is left out, the rest are taken
    assert any_ledger.claim_given(["held", "mine", "done", "new", "unknown"], "me", 300) == [
        "mine",
        "done",
        "new",
    ]
    with any_ledger.session() as s:
        attempts = dict(s.execute(select(InboxRow.event_id, InboxRow.attempts)).all())  # type: ignore[arg-type]
    # already mine: counted once; finished and run again: a fresh count
    assert attempts == {"held": 1, "mine": 1, "done": 1, "new": 1}
    # finishing is for the holder only: the other run's event is not closed by "me"
    assert any_ledger.finish_events(["held", "mine"], "done", token="me") == 1
    assert any_ledger.inbox_counts() == {"claimed": 3, "done": 1}


def test_released_events_wait_in_the_inbox_uncounted(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming("evt_1")])
    ids = any_ledger.claim_events(10, 300, token="a")
    any_ledger.release_events(ids, token="b")  # not b's to release
    assert any_ledger.inbox_counts() == {"claimed": 1}
    any_ledger.release_events(ids, token="a")
    assert any_ledger.inbox_counts() == {"pending": 1}
    with any_ledger.session() as s:
        assert s.scalar(select(InboxRow.attempts)) == 0


def test_a_payment_is_held_by_one_live_run_at_a_time(any_ledger: Ledger) -> None:
    assert any_ledger.lock_payments(["pi_1", "pi_2"], "a", 300) == {"pi_1", "pi_2"}
    assert any_ledger.lock_payments(["pi_2", "pi_3"], "b", 300) == {"pi_3"}
    assert any_ledger.lock_payments(["pi_1"], "a", 300) == {"pi_1"}  # its own again
    assert any_ledger.payment_holder("pi_2") == "a"
    any_ledger.release_payments("a")
    assert any_ledger.lock_payments(["pi_2"], "b", 300) == {"pi_2"}

    wins: list[set[str]] = []
    start = threading.Barrier(4)

    def contender(token: str) -> None:
        start.wait()
        wins.append(any_ledger.lock_payments([f"pi_x{i}" for i in range(50)], token, 300))

    threads = [threading.Thread(target=contender, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(w) for w in wins) == 50 and len(set().union(*wins)) == 50


def test_an_event_whose_payment_another_run_holds_waits_for_that_run(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming("evt_1"), incoming("evt_2", created=2)])
    assert any_ledger.lock_payments(["pi_1"], "a", 300) == {"pi_1"}
    assert any_ledger.lock_payments(["pi_2"], "dying", 0.5) == {"pi_2"}
    assert any_ledger.claim_events(10, 300, token="b") == ["evt_1", "evt_2"]
    assert any_ledger.lock_payments(["pi_1", "pi_2"], "b", 300) == set()
    any_ledger.defer_events({"evt_1": "pi_1", "evt_2": "pi_2"}, "b")
    assert any_ledger.inbox_counts() == {"pending": 2}
    assert any_ledger.claim_events(10, 300, token="c") == []  # no claiming again and again meanwhile
    # the dying holder's lease ends: its payment's event is claimable; the live holder's still waits
    assert wait_for(lambda: any_ledger.claim_events(10, 300, token="c"), 3, "a lease to end") == ["evt_2"]
    any_ledger.release_payments("a")  # run a ends: what waited for it goes at once
    assert any_ledger.claim_events(10, 300, token="c") == ["evt_1"]
    with any_ledger.session() as s:
        assert set(s.scalars(select(InboxRow.attempts))) == {1}  # waiting cost no attempt


def test_a_claim_leases_its_events_objects_so_the_next_claim_leaves_them(any_ledger: Ledger) -> None:
    """Two runs claimed one after the other: the second takes none of the first one's payments
    (by the event's object, or the payment a charge is already known as), though the first has
    not yet normalised its events."""
    charge_known = Payment(
        payment_id="pi_2",
        ids=("pi_2", "ch_2"),
        status=PaymentStatus.succeeded,
        amount=Decimal("10.00"),
        currency="PLN",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    any_ledger.record_payments([charge_known])
    first = incoming("evt_1")  # pi_1
    second = IncomingEvent(
        **{**incoming("evt_2", 2).__dict__, "object_id": "ch_2", "type": "charge.succeeded"}
    )
    later = [incoming("evt_3", 3), IncomingEvent(**{**incoming("evt_4", 4).__dict__, "object_id": "pi_2"})]
    other = IncomingEvent(**{**incoming("evt_5", 5).__dict__, "object_id": "pi_5"})
    any_ledger.store_events([first, second])
    assert any_ledger.claim_next(2, 300, token="a") == ["evt_1", "evt_2"]
    assert any_ledger.lease_objects(["evt_1", "evt_2"], "a", 300) == {"pi_1", "ch_2", "pi_2"}
    any_ledger.store_events([*later, other])
    assert any_ledger.claim_next(10, 300, token="b") == ["evt_5"]
    any_ledger.unlock_payments(["pi_2", "ch_2"], "a")  # run a needed only pi_1 after all
    assert any_ledger.claim_next(10, 300, token="c") == ["evt_4"]
    any_ledger.release_payments("a")
    assert any_ledger.claim_next(10, 300, token="d") == ["evt_3"]


def test_events_whose_run_failed_are_claimed_again_in_ever_smaller_batches(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming(f"evt_{i:03}", created=i) for i in range(100)])
    sizes = []
    for attempt in range(3):
        sizes.append(len(any_ledger.claim_next(100, 0.2, token=f"run{attempt}")))
        any_ledger.note_failure(f"run{attempt}", "ValueError: a bug one payment trips")
        wait_for(lambda: _expired(any_ledger), 5, "the failed run's lease to end")
    assert sizes == [100, 10, 1]  # a batch that failed is split tenfold each time
    any_ledger.store_events([incoming("evt_new", created=1000)])
    # retries first; the new event waits its turn rather than join a batch that may fail again
    assert "evt_new" not in any_ledger.claim_next(100, 300, token="next")


@pytest.mark.parametrize("note", [None, "outage: RateLimitedError: stripe: Request rate limit exceeded"])
def test_a_run_killed_or_failed_on_an_outage_is_retried_whole_twice(
    any_ledger: Ledger, note: str | None
) -> None:
    """A worker killed mid-burst (no note) or a run that failed on an outage says nothing about
    its events: they go again in one batch, twice (a burst may see two kills), and shrink only
    if that fails too."""
    any_ledger.store_events([incoming(f"evt_{i:03}", created=i) for i in range(100)])
    sizes = []
    for attempt in range(4):
        sizes.append(len(any_ledger.claim_next(100, 0.2, token=f"run{attempt}")))
        if note:
            any_ledger.note_failure(f"run{attempt}", note)
        wait_for(lambda: _expired(any_ledger), 5, "the dead run's lease to end")
    assert sizes == [100, 100, 100, 10]


def _expired(ledger: Ledger) -> bool:
    with ledger.session() as s:
        return not s.scalar(
            select(InboxRow.event_id).where(InboxRow.status == "claimed", InboxRow.lease_until > utcnow())
        )


def test_an_event_claimed_too_often_goes_to_the_dead_letters(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming("evt_1"), incoming("evt_2")])
    for attempt in range(3):
        token = f"run{attempt}"
        assert sorted(any_ledger.claim_given(["evt_1", "evt_2"], token, 300)) == ["evt_1", "evt_2"]
        assert any_ledger.bury_exhausted(["evt_1", "evt_2"], token, max_attempts=3) == {}
        any_ledger.note_failure(token, f"RuntimeError: CRM down ({attempt})")
        with any_ledger.session() as s:  # the run died: its lease ends
            s.execute(update(InboxRow).values(lease_until=datetime(2000, 1, 1, tzinfo=UTC)))
    assert any_ledger.claim_given(["evt_1"], "run3", 300) == ["evt_1"]
    assert any_ledger.bury_exhausted(["evt_1"], "run3", max_attempts=3) == {
        "evt_1": "failed 3 times: RuntimeError: CRM down (2)"
    }
    (letter,) = any_ledger.dead_letters()
    assert letter.event_id == "evt_1" and letter.reason == "failed 3 times: RuntimeError: CRM down (2)"
    assert any_ledger.inbox_counts() == {"dead": 1, "claimed": 1}
    # a replay (after a fix) runs it again, with a fresh count
    assert any_ledger.claim_given(["evt_1"], "replay", 300) == ["evt_1"]
    assert any_ledger.bury_exhausted(["evt_1"], "replay", max_attempts=3) == {}


def test_a_payment_the_database_refuses_fails_alone(any_ledger: Ledger) -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)

    def payment(pid: str, amount: Decimal) -> Payment:
        return Payment(
            payment_id=pid,
            amount=amount,
            currency="PLN",
            occurred_at=t,
            status=PaymentStatus.succeeded,
            email=f"{pid}@example.pl",
        )

    good = [payment(f"pi_{i}", Decimal("10.00")) for i in range(5)]
    huge = payment("pi_huge", Decimal(10) ** 27)  # past any 64-bit integer of minor units
    changes, failed = any_ledger.record_payments_isolated([*good[:3], huge, *good[3:]])
    assert [c.payment.payment_id for c in changes] == [p.payment_id for p in good]
    assert list(failed) == ["pi_huge"]
    reason = {  # the database's reason, never the statement's payload
        "sqlite": "OverflowError: Python int too large to convert to SQLite INTEGER",
        "postgresql": "NumericValueOutOfRange: bigint out of range",
    }[any_ledger.engine.dialect.name]
    assert failed["pi_huge"] == reason
    assert stored_payment(any_ledger, "pi_huge") is None and stored_payment(any_ledger, "pi_4") is not None


MIGRATE_AT_ONCE = """
import sys, time
from pathlib import Path
from stripeflow.core.ledger import Ledger
ledger = Ledger(sys.argv[1])
ledger.ping()  # connected, as a bridge or worker is by the time it migrates
Path(sys.argv[2] + ".ready").touch()
while not Path(sys.argv[3]).exists():  # every process starts migrating at the same moment
    time.sleep(0.005)
ledger.migrate()
"""


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_four_processes_migrate_a_fresh_ledger_at_once(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db" if dialect == "sqlite" else request.getfixturevalue("pg_url")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_AT_ONCE, url, str(tmp_path / f"p{i}"), str(go)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(4)
    ]
    wait_for(lambda: all((tmp_path / f"p{i}.ready").exists() for i in range(4)), 60, "4 processes")
    go.touch()
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0, 0], [err for _, err in results if err]
    ledger = Ledger(url)
    try:
        with ledger.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
        assert "payment_leases" in inspect(ledger.engine).get_table_names()
    finally:
        ledger.dispose()


def test_payments_merge_by_their_own_state(any_ledger: Ledger) -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    refund = Payment(
        payment_id="pi_1",
        amount=Decimal("249.00"),
        refunded_amount=Decimal("249.00"),
        currency="PLN",
        occurred_at=t,
        status=PaymentStatus.refunded,
        event_ids=("evt_2",),
    )
    success = Payment(
        payment_id="pi_1",
        amount=Decimal("249.00"),
        currency="PLN",
        occurred_at=t,
        status=PaymentStatus.succeeded,
        email="a@b.pl",
        event_ids=("evt_1",),
    )
    any_ledger.record_payments([refund])
    [change] = any_ledger.record_payments([success])
    assert change.payment.status == PaymentStatus.refunded and change.payment.email == "a@b.pl"
    stored = stored_payment(any_ledger, "pi_1")
    assert stored is not None and stored.refunded_amount == Decimal("249.00")
    assert stored.occurred_at.tzinfo is not None


def test_links_are_upserted(any_ledger: Ledger) -> None:
    any_ledger.set_links("deal", "hubspot", {"pi_1": "111"})
    any_ledger.set_links("deal", "hubspot", {"pi_1": "222"})
    assert any_ledger.get_link("deal", "pi_1", "hubspot") == "222"


def test_dead_letters_keep_the_reason(any_ledger: Ledger) -> None:
    any_ledger.dead_letter(
        target="hubspot", action="upsert_deal", reason="VALIDATION_ERROR: amount", payment_id="pi_1"
    )
    (letter,) = any_ledger.dead_letters()
    assert letter.reason == "VALIDATION_ERROR: amount"
    any_ledger.resolve_dead_letters([letter.id])
    assert any_ledger.dead_letters() == []


def test_a_change_is_counted_from_what_the_sinks_last_finished(any_ledger: Ledger) -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    success = Payment(
        payment_id="pi_1",
        amount=Decimal("10.00"),
        currency="PLN",
        occurred_at=t,
        status=PaymentStatus.succeeded,
    )
    [first] = any_ledger.record_payments([success])
    assert first.previous is None
    [again] = any_ledger.record_payments([success])  # a rerun after a crash before the sinks finished
    assert again.previous is None and again.changed
    any_ledger.mark_processed([again.payment])
    assert not any_ledger.record_payments([success])[0].changed


def test_an_old_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    """A ledger made by the first version gains the new columns; its payments count as processed."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    ledger = Ledger(f"sqlite:///{tmp_path}/old.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with ledger.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO payments (payment_id, provider, status, currency, amount_minor, refunded_minor, "
            "occurred_at, livemode, data, updated_at) "
            "VALUES ('pi_old', 'stripe', 'succeeded', 'PLN', 100, 0, "
            "'2026-01-01 00:00:00', 0, '{}', '2026-01-01 00:00:00')"
        )
    ledger.migrate()
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT processed_data FROM payments").scalar() == "{}"
        head = ScriptDirectory.from_config(cfg).get_current_head()
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
        # every payment recorded before aliases existed is known by its own id
        assert conn.exec_driver_sql("SELECT alias_id, payment_id FROM payment_aliases").all() == [
            ("pi_old", "pi_old")
        ]
        # and, like every record held before accounts existed, on the default account
        assert conn.exec_driver_sql("SELECT account FROM payments").scalar() == DEFAULT_ACCOUNT
        assert conn.exec_driver_sql("SELECT account FROM payment_aliases").scalar() == DEFAULT_ACCOUNT


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
