"""The ledger on real SQLite (WAL) and real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import inspect

from stripeflow.core.ledger import IncomingEvent, Ledger
from stripeflow.core.payment import Payment, PaymentStatus


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
    first = any_ledger.claim_events(3, lease_seconds=300)
    second = any_ledger.claim_events(10, lease_seconds=300)
    assert len(first) == 3 and set(first).isdisjoint(second) and len(second) == 2
    assert any_ledger.claim_events(10, lease_seconds=300) == []
    assert sorted(any_ledger.claim_events(10, lease_seconds=0)) == sorted(first + second)  # lease over


def test_released_events_wait_in_the_inbox(any_ledger: Ledger) -> None:
    any_ledger.store_events([incoming("evt_1")])
    ids = any_ledger.claim_events(10, 300)
    any_ledger.release_events(ids)
    assert any_ledger.inbox_counts() == {"pending": 1}


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
    any_ledger.record_payment(refund)
    change = any_ledger.record_payment(success)
    assert change.payment.status == PaymentStatus.refunded and change.payment.email == "a@b.pl"
    stored = any_ledger.get_payment("pi_1")
    assert stored is not None and stored.refunded_amount == Decimal("249.00")
    assert stored.occurred_at.tzinfo is not None


def test_links_are_upserted(any_ledger: Ledger) -> None:
    any_ledger.set_link("deal", "pi_1", "hubspot", "111")
    any_ledger.set_link("deal", "pi_1", "hubspot", "222")
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
    first = any_ledger.record_payment(success)
    assert first.previous is None
    again = any_ledger.record_payment(success)  # a rerun after a crash before the sinks finished
    assert again.previous is None and again.changed
    any_ledger.mark_processed([again.payment])
    assert not any_ledger.record_payment(success).changed


def test_an_old_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    """A ledger made by the first version gains the new column; its payments count as processed."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    ledger = Ledger(f"sqlite:///{tmp_path}/old.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(ledger_module_path()).parent / "migrations"))
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


def ledger_module_path() -> str:
    import stripeflow.core.ledger as module

    return str(module.__file__)
