"""The ledger keys every record by Stripe account (issue 9): migration 0006, writers, readers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, insert, inspect, select

from stripeflow.core.config import DEFAULT_ACCOUNT
from stripeflow.core.ledger import (
    MIGRATIONS,
    Base,
    DeadLetterRow,
    EffectRow,
    IncomingEvent,
    Ledger,
    LinkRow,
    PaymentAliasRow,
    PaymentRow,
    StripeObjectRow,
)
from stripeflow.core.payment import Payment, PaymentStatus
from tests.core.test_effects import Item, Outcome

# the tables that hold a record, each with the columns that order its rows
RECORDS = {
    "inbox": "event_id",
    "payments": "payment_id",
    "payment_aliases": "alias_id",
    "links": "kind, local_id, target",
    "effects": '"key"',
    "dead_letters": "id",
    "stripe_objects": "object_id",
}
T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def incoming(event_id: str, account: str = DEFAULT_ACCOUNT, created: int = 1) -> IncomingEvent:
    return IncomingEvent(
        event_id=event_id,
        type="payment_intent.succeeded",
        object_id=f"pi_{event_id}",
        created=created,
        livemode=False,
        payload=json.dumps({"id": event_id}),
        account=account,
    )


def payment(pid: str, *ids: str) -> Payment:
    return Payment(
        payment_id=pid,
        ids=(pid, *ids),
        status=PaymentStatus.succeeded,
        amount=Decimal("10.00"),
        currency="PLN",
        occurred_at=T0,
    )


def alembic(ledger: Ledger, revision: str, *, down: bool = False) -> None:
    """Bring the ledger to `revision`, the way `Migrations.migrate()` brings it to the head."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with ledger.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger on each database with no schema yet: the test migrates it where it wants."""
    url = f"sqlite:///{tmp_path}/old.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    ledger = Ledger(url)
    yield ledger
    ledger.dispose()


def fill_at_0005(conn: Connection) -> None:
    """A row in every table of a 0005 ledger, written through that schema (reflected, so the
    rows know nothing of accounts), with values that would show a lossy copy."""
    tables = MetaData()
    tables.reflect(conn)
    payload = json.dumps({"id": "evt_old", "description": "Zażółć gęślą jaźń – 🧾", "amount": 2**53 + 1})
    rows: dict[str, list[dict[str, Any]]] = {
        "inbox": [
            dict(
                event_id="evt_old",
                type="payment_intent.succeeded",
                object_id="pi_old",
                created=1_767_225_600,
                livemode=True,
                payload=payload,
                received_at=T0,
                status="claimed",
                claimed_at=T0,
                claim_token="run-1",
                lease_until=T0 + timedelta(seconds=30),
                flow_run_id="0b5e7f1c-run",
                attempts=2,
                note="outage: RateLimitedError: stripe",
            ),
            dict(
                event_id="evt_done",
                type="charge.refunded",
                object_id=None,
                created=1_767_225_601,
                livemode=False,
                payload="{}",
                received_at=T0,
                status="done",
                claimed_at=None,
                claim_token=None,
                lease_until=None,
                flow_run_id=None,
                attempts=1,
                note=None,
            ),
        ],
        "payments": [
            dict(
                payment_id="pi_old",
                provider="stripe",
                status="succeeded",
                currency="HUF",
                amount_minor=9_223_372_036_854_775_807,
                refunded_minor=0,
                customer_id="cus_old",
                email="zofia.wójcik@example.pl",
                occurred_at=T0,
                livemode=True,
                data=json.dumps({"payment_id": "pi_old", "note": "ąę"}),
                processed_data=None,
                updated_at=T0,
            )
        ],
        "payment_aliases": [
            dict(alias_id=alias, payment_id="pi_old", created_at=T0)
            for alias in ("ch_old", "in_old", "pi_old")
        ],
        "links": [
            dict(
                kind="contact",
                local_id="zofia.wójcik@example.pl",
                target="hubspot",
                remote_id="101",
                updated_at=T0,
            )
        ],
        "effects": [
            dict(
                key="email:pi_old:paid:abc",
                payment_id="pi_old",
                target="email",
                action="customer_payment_confirmation",
                status="attempting",
                token="claim:0123456789abcdef",
                result=None,
                created_at=T0,
                updated_at=T0,
            )
        ],
        "dead_letters": [
            dict(
                event_id="evt_old",
                payment_id="pi_old",
                effect_key="email:pi_old:paid:abc",
                target="hubspot",
                action="upsert_deal",
                reason="VALIDATION_ERROR: amount «zbyt duża»",
                created_at=T0,
                resolved_at=None,
            )
        ],
        "stripe_objects": [
            dict(
                object_id="pi_old|latest_charge", body=json.dumps({"value": {"id": "pi_old"}}), fetched_at=T0
            )
        ],
    }
    for name, values in rows.items():
        conn.execute(insert(tables.tables[name]), values)


def raw_rows(conn: Connection, table: str) -> list[dict[str, Any]]:
    """Every row as the driver returns it (no SQLAlchemy type on the way), in key order."""
    result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {RECORDS[table]}")
    return [dict(zip(result.keys(), row, strict=True)) for row in result]


def schema_differences(ledger: Ledger) -> list[Any]:
    """What Alembic finds between the ledger's database and the ORM rows (types, server defaults,
    indexes, columns): nothing, when a migrated ledger is what `schema.py` says."""
    with ledger.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def test_a_0005_ledger_upgraded_keeps_every_row_byte_for_byte_on_the_default_account(
    empty_ledger: Ledger,
) -> None:
    alembic(empty_ledger, "0005")
    with empty_ledger.engine.begin() as conn:
        fill_at_0005(conn)
    with empty_ledger.engine.connect() as conn:
        before = {table: raw_rows(conn, table) for table in RECORDS}
        leases_before = conn.exec_driver_sql("SELECT * FROM payment_leases").all()
    assert all(before.values()) and not any("account" in row for rows in before.values() for row in rows)

    empty_ledger.migrate()

    with empty_ledger.engine.connect() as conn:
        after = {table: raw_rows(conn, table) for table in RECORDS}
        assert conn.exec_driver_sql("SELECT * FROM payment_leases").all() == leases_before
    for table, rows in after.items():
        assert [row.pop("account") for row in rows] == [DEFAULT_ACCOUNT] * len(rows), table
        assert rows == before[table], table  # every data column as it was, value and type
    assert "account" not in {c["name"] for c in inspect(empty_ledger.engine).get_columns("payment_leases")}
    # the upgraded ledger is the one `migrate()` makes fresh, and it reads its old rows
    assert schema_differences(empty_ledger) == []
    assert empty_ledger.inbox_counts(DEFAULT_ACCOUNT) == {"claimed": 1, "done": 1}
    assert empty_ledger.event_accounts(["evt_old", "evt_done"]) == {
        "evt_old": DEFAULT_ACCOUNT,
        "evt_done": DEFAULT_ACCOUNT,
    }
    assert [d.reason for d in empty_ledger.dead_letters(account=DEFAULT_ACCOUNT)] == [
        "VALIDATION_ERROR: amount «zbyt duża»"
    ]
    assert empty_ledger.canonical_ids(["ch_old", "in_old"]) == {"ch_old": "pi_old", "in_old": "pi_old"}
    assert empty_ledger.get_link("contact", "zofia.wójcik@example.pl", "hubspot") == "101"
    assert empty_ledger.effect_states(["email:pi_old:paid:abc"]) == {"email:pi_old:paid:abc": "attempting"}
    (old_event,) = [row for row in before["inbox"] if row["event_id"] == "evt_old"]
    assert empty_ledger.load_events(["evt_old"]) == [json.loads(old_event["payload"])]


def test_the_downgrade_drops_the_accounts_and_keeps_the_rows(empty_ledger: Ledger) -> None:
    empty_ledger.migrate()
    empty_ledger.store_events([incoming("evt_a", "a"), incoming("evt_b", "b")])
    empty_ledger.dead_letter(target="hubspot", action="upsert_deal", reason="no", account="a")
    alembic(empty_ledger, "0005", down=True)
    found = inspect(empty_ledger.engine)
    for table in RECORDS:
        assert "account" not in {c["name"] for c in found.get_columns(table)}, table
    indexes = {i["name"] for table in ("inbox", "payments", "dead_letters") for i in found.get_indexes(table)}
    assert (
        not {"ix_inbox_account_status_received", "ix_payments_account", "ix_dead_letters_account"} & indexes
    )
    with empty_ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM inbox").scalar() == 2
        assert conn.exec_driver_sql("SELECT count(*) FROM dead_letters").scalar() == 1
    empty_ledger.migrate()  # and up again: the rows are the default account's now
    assert empty_ledger.inbox_counts() == empty_ledger.inbox_counts(DEFAULT_ACCOUNT) == {"pending": 2}
    assert schema_differences(empty_ledger) == []


def test_a_fresh_ledger_is_what_the_schema_says(any_ledger: Ledger) -> None:
    assert schema_differences(any_ledger) == []
    indexes = {
        table: {i["name"]: i["column_names"] for i in inspect(any_ledger.engine).get_indexes(table)}
        for table in ("inbox", "payments", "dead_letters")
    }
    assert indexes["inbox"]["ix_inbox_account_status_received"] == [
        "account",
        "status",
        "received_at",
        "created",
    ]
    assert indexes["payments"]["ix_payments_account"] == ["account"]
    assert indexes["dead_letters"]["ix_dead_letters_account"] == ["account"]


def test_events_of_two_accounts_are_stored_and_counted_apart(any_ledger: Ledger) -> None:
    assert any_ledger.store_events(
        [
            incoming("evt_a1", "a", 1),
            incoming("evt_a2", "a", 2),
            incoming("evt_b1", "b", 3),
            incoming("evt_a1", "b", 4),  # the same event again: stored once, for its first account
            incoming("evt_d1", created=5),
        ]
    ) == [True, True, True, False, True]
    assert any_ledger.inbox_counts("a") == {"pending": 2}
    assert any_ledger.inbox_counts("b") == {"pending": 1}
    assert any_ledger.inbox_counts(DEFAULT_ACCOUNT) == {"pending": 1}
    assert any_ledger.inbox_counts("c") == {}
    assert any_ledger.inbox_counts() == {"pending": 4}
    assert any_ledger.event_accounts(["evt_a1", "evt_b1", "evt_d1", "evt_unknown"]) == {
        "evt_a1": "a",
        "evt_b1": "b",
        "evt_d1": DEFAULT_ACCOUNT,
    }
    assert any_ledger.event_accounts([]) == {}
    claimed = any_ledger.claim_given(["evt_a1", "evt_b1"], "run", 300)
    any_ledger.finish_events(claimed[:1], "done", token="run")
    assert any_ledger.inbox_counts("a") == {"pending": 1, "done": 1}
    assert any_ledger.inbox_counts("b") == {"claimed": 1}
    # the raw events a run loads are the payloads as received, whatever their account
    assert any_ledger.load_events(["evt_b1", "evt_a2"]) == [{"id": "evt_a2"}, {"id": "evt_b1"}]


def test_dead_letters_are_listed_by_account(any_ledger: Ledger) -> None:
    any_ledger.dead_letter(
        target="hubspot", action="upsert_deal", reason="a's", payment_id="pi_a", account="a"
    )
    any_ledger.dead_letter(target="email", action="send", reason="b's", payment_id="pi_b", account="b")
    any_ledger.dead_letter(target="slack", action="post", reason="the default's", event_id="evt_d")
    # an event of account b that ran out of attempts is buried on b
    any_ledger.store_events([incoming("evt_b", "b")])
    for attempt in range(3):  # each claim's lease over at once, as if its run died
        assert any_ledger.claim_given(["evt_b"], f"run{attempt}", -1) == ["evt_b"]
    assert any_ledger.bury_exhausted(["evt_b"], "run2", max_attempts=2)
    assert [d.reason for d in any_ledger.dead_letters(account="a")] == ["a's"]
    assert [d.event_id or d.payment_id for d in any_ledger.dead_letters(account="b")] == ["pi_b", "evt_b"]
    assert [d.reason for d in any_ledger.dead_letters(account=DEFAULT_ACCOUNT)] == ["the default's"]
    assert len(any_ledger.dead_letters()) == 4
    (a_letter,) = any_ledger.dead_letters(account="a")
    any_ledger.resolve_dead_letters([a_letter.id])
    assert any_ledger.dead_letters(account="a") == []
    assert [d.reason for d in any_ledger.dead_letters(False, account="a")] == ["a's"]


def accounts_of(ledger: Ledger, row: Any) -> dict[Any, str]:
    """primary key -> account, for every row of one table."""
    key = inspect(row).primary_key
    with ledger.session() as s:
        found = s.execute(select(*key, row.account)).all()
    return {tuple(r[:-1]) if len(key) > 1 else r[0]: r[-1] for r in found}


def test_writers_record_the_account_they_are_given_and_the_default_otherwise(any_ledger: Ledger) -> None:
    any_ledger.record_payments([payment("pi_a", "ch_a")], account="a")
    any_ledger.record_payments([payment("pi_d")])
    changes, failed = any_ledger.record_payments_isolated([payment("pi_b", "in_b")], account="b")
    assert [c.payment.payment_id for c in changes] == ["pi_b"] and failed == {}
    # a payment already recorded keeps its account; its new alias is the writer's
    any_ledger.record_payments([payment("pi_a", "ch_a", "in_a")], account="b")
    assert accounts_of(any_ledger, PaymentRow) == {"pi_a": "a", "pi_b": "b", "pi_d": DEFAULT_ACCOUNT}
    assert accounts_of(any_ledger, PaymentAliasRow) == {
        "pi_a": "a",
        "ch_a": "a",
        "in_a": "b",
        "pi_b": "b",
        "in_b": "b",
        "pi_d": DEFAULT_ACCOUNT,
    }

    any_ledger.set_links("contact", "hubspot", {"x@example.pl": "1"}, account="a")
    any_ledger.set_links("deal", "hubspot", {"pi_d": "2"})
    any_ledger.set_links("contact", "hubspot", {"x@example.pl": "3"}, account="b")
    assert any_ledger.get_link("contact", "x@example.pl", "hubspot") == "3"
    assert accounts_of(any_ledger, LinkRow) == {
        ("contact", "x@example.pl", "hubspot"): "a",
        ("deal", "pi_d", "hubspot"): DEFAULT_ACCOUNT,
    }

    any_ledger.cache_object("pi_a|", {"value": 1}, account="a")
    any_ledger.cache_object("pi_d|", {"value": 2})
    assert accounts_of(any_ledger, StripeObjectRow) == {"pi_a|": "a", "pi_d|": DEFAULT_ACCOUNT}
    any_ledger.cache_object("pi_a|", {"value": 3}, account="b")  # fetched again, with b's key
    assert accounts_of(any_ledger, StripeObjectRow)["pi_a|"] == "b"
    assert any_ledger.cached_object("pi_a|", timedelta(hours=1)) == {"value": 3}

    won, token = any_ledger.claim_effects([Item("e_a", "pi_a"), Item("e_a2", "pi_a")], account="a")
    assert won == {"e_a", "e_a2"}
    any_ledger.settle_effects(
        [Outcome(Item("e_a", "pi_a"), "done", "ok"), Outcome(Item("e_a2", "pi_a"), "failed", "refused")],
        token,
        account="a",
    )
    _, default_token = any_ledger.claim_effects([Item("e_d", "pi_d")])
    any_ledger.settle_effects(
        [Outcome(Item("e_new", "pi_b"), "done", "ok", claimed=False)], token, account="b"
    )
    assert accounts_of(any_ledger, EffectRow) == {
        "e_a": "a",
        "e_a2": "a",
        "e_d": DEFAULT_ACCOUNT,
        "e_new": "b",
    }
    assert [(d.effect_key, d.account) for d in any_ledger.dead_letters()] == [("e_a2", "a")]
    assert accounts_of(any_ledger, DeadLetterRow) == {any_ledger.dead_letters()[0].id: "a"}
    assert default_token != token


def test_a_view_for_an_account_writes_its_rows_as_that_account(any_ledger: Ledger) -> None:
    """`Ledger.for_account` is what an account's run writes through: the same database, every row
    it makes on its account, unless a call names another; the ledger itself stays the default's."""
    sklep = any_ledger.for_account("sklep")
    assert sklep.engine is any_ledger.engine and any_ledger.account == DEFAULT_ACCOUNT
    sklep.record_payments([payment("pi_s")])
    sklep.set_links("contact", "sklep/local", {"anna@example.pl": "7"})
    sklep.cache_object("ch_s|", {"value": 1})
    sklep.dead_letter(target="sklep/local", action="upsert_deal", reason="x", payment_id="pi_s")
    any_ledger.record_payments([payment("pi_d")])
    sklep.record_payments([payment("pi_o")], account="other")
    assert accounts_of(any_ledger, PaymentRow) == {"pi_s": "sklep", "pi_d": DEFAULT_ACCOUNT, "pi_o": "other"}
    assert set(accounts_of(any_ledger, LinkRow).values()) == {"sklep"}
    assert accounts_of(any_ledger, StripeObjectRow) == {"ch_s|": "sklep"}
    assert [d.payment_id for d in any_ledger.dead_letters(account="sklep")] == ["pi_s"]
