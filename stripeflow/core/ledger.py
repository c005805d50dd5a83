"""The ledger: the durable memory that makes every side effect happen exactly once.

Tables: `inbox` (every Stripe event as received, unique on its id), `payments` (the latest
truth per payment, ordered by the payment's own state, never by arrival), `payment_aliases`
(every Stripe id a payment is known by: PaymentIntent, charge, invoice, session), `links` (a local
id's id in each target system), `effects` (one row per side effect done, keyed so it happens
once), `dead_letters` (what could not be done, with the vendor's reason) and `stripe_objects`
(a cache of objects fetched from the Stripe API).

SQLite in WAL mode by default (synchronous=FULL: a commit is on disk before we answer 2xx);
PostgreSQL through DATABASE_URL. The schema is managed by Alembic (`Ledger.migrate()`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Text,
    and_,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from stripeflow.core import money
from stripeflow.core.payment import Lifecycle, Payment, PaymentChange, preferred_id

# An invoice and a charge no id links (no Stripe API, no invoice_payment.paid) are one payment
# only if they agree on customer, currency and amount and were paid this close together.
MATCH_WINDOW = timedelta(minutes=10)
PAYMENT_PREFIXES = ("pi_", "ch_", "py_")

log = logging.getLogger("stripeflow.ledger")

# a run's failure note that blames an outage (a vendor, Prefect), not its events
OUTAGE = "outage: "
# statuses an event ends in; a replay (claim_given) may run them again
FINISHED = ("done", "dead", "skipped")
# the database itself is away or busy, not this payment: the run fails and is retried whole
UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError)


# any fixed number shared by every Stripeflow process: the PostgreSQL advisory lock of migrations
MIGRATION_LOCK_KEY = 0x5747_F10E


def new_token() -> str:
    """A claim token for a claimer that has no flow run id to use."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; SQLite drops the zone, so it is put back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class InboxRow(Base):
    __tablename__ = "inbox"
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    object_id: Mapped[str | None] = mapped_column(String(255), index=True)
    created: Mapped[int] = mapped_column(BigInteger)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # pending -> claimed -> done | skipped | dead
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # the run that holds the claim, and until when; its heartbeat moves lease_until on
    claim_token: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)  # the last error, or why it ended so

    __table_args__ = (
        Index("ix_inbox_status_received", "status", "received_at", "created"),
        Index("ix_inbox_status_lease", "status", "lease_until"),
    )


class PaymentLeaseRow(Base):
    """Which run works on a payment: while its lease lives, no other run records or syncs it."""

    __tablename__ = "payment_leases"
    payment_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[str] = mapped_column(String(64), index=True)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentRow(Base):
    __tablename__ = "payments"
    payment_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[str] = mapped_column(Text)
    # the state every sink has seen: a run compares against it, so a rerun after a crash
    # still sees the change that the crashed run did not finish passing on
    processed_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentAliasRow(Base):
    """Every Stripe id a payment is known by (pi_, ch_, in_, cs_) -> its canonical payment id."""

    __tablename__ = "payment_aliases"
    alias_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LinkRow(Base):
    __tablename__ = "links"
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # contact | deal | invoice ...
    local_id: Mapped[str] = mapped_column(String(320), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    remote_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EffectRow(Base):
    __tablename__ = "effects"
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(255), index=True)
    target: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    # claimed -> attempting -> done | unknown | failed (see Ledger.claim_effects)
    status: Mapped[str] = mapped_column(String(16), default="done", index=True)
    token: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the attempt holding it
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeadLetterRow(Base):
    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    payment_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    effect_key: Mapped[str | None] = mapped_column(String(512), nullable=True, index=True)
    target: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StripeObjectRow(Base):
    __tablename__ = "stripe_objects"
    object_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class IncomingEvent:
    """What the bridge stores: the verified raw event and the few fields we index."""

    event_id: str
    type: str
    object_id: str | None
    created: int
    livemode: bool
    payload: str


class EffectItem(Protocol):
    """Anything that names one side effect: its key and what it is about."""

    @property
    def key(self) -> str: ...
    @property
    def payment_id(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def action(self) -> str: ...


class EffectOutcome(Protocol):
    """How a claimed effect ended: done | unknown | failed | release."""

    @property
    def item(self) -> EffectItem: ...
    @property
    def status(self) -> str: ...
    @property
    def result(self) -> str: ...
    @property
    def claimed(self) -> bool: ...


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # the commit is on disk before 2xx
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


class _AliasMerge:
    """One transaction's resolution of facts to payments: aliases, joins, the strict match."""

    def __init__(self, s: Session, facts: Sequence[Payment]) -> None:
        self.s = s
        ids = sorted({i for f in facts for i in (*f.ids, f.payment_id)})
        self.alias: dict[str, str] = dict(
            s.execute(  # type: ignore[arg-type]
                select(PaymentAliasRow.alias_id, PaymentAliasRow.payment_id).where(
                    PaymentAliasRow.alias_id.in_(ids)
                )
            ).all()
        )
        wanted = sorted(set(self.alias.values()) | {f.payment_id for f in facts})
        self.rows: dict[str, PaymentRow | None] = {pid: None for pid in wanted}
        for row in s.scalars(select(PaymentRow).where(PaymentRow.payment_id.in_(wanted)).with_for_update()):
            self.rows[row.payment_id] = row
        self.current: dict[str, Payment | None] = {}
        self.processed: dict[str, Payment | None] = {}
        self.joined: dict[str, str] = {}  # absorbed payment id -> the one it joined
        self.new_aliases: set[str] = set()
        # payments this batch touched, by (customer, currency, amount): the strict match finds
        # them here, so the session need not flush before every query
        self.by_money: dict[tuple[str, str | None, str, int], set[str]] = {}
        self.money_key: dict[str, tuple[str, str | None, str, int]] = {}
        # invoices on their own that a charge of this batch could be: one query for the batch
        customers = {f.customer_id for f in facts if self._side(f, [*f.ids, f.payment_id]) == "charge"}
        if customers:
            alone = or_(
                PaymentRow.payment_id.like("in\\_%", escape="\\"),
                PaymentRow.payment_id.like("cs\\_%", escape="\\"),
            )
            for row in s.scalars(
                select(PaymentRow).where(PaymentRow.customer_id.in_(sorted(c for c in customers if c)), alone)
            ):
                self.rows.setdefault(row.payment_id, row)
                self._load(row.payment_id)
                self._index(row.payment_id)

    @staticmethod
    def _side(fact: Payment, ids: Sequence[str]) -> str | None:
        """ "charge" / "invoice" for a paid fact that only one side's ids name, else None."""
        invoice = any(i.startswith("in_") for i in ids)
        paid = any(i.startswith(PAYMENT_PREFIXES) for i in ids)
        if invoice == paid or not fact.customer_id or fact.paid_at is None:
            return None
        if fact.lifecycle != Lifecycle.succeeded:
            return None
        return "charge" if paid else "invoice"

    def _index(self, pid: str) -> None:
        current = self.current.get(pid)
        old = self.money_key.pop(pid, None)
        if old is not None:
            self.by_money[old].discard(pid)
        side = self._side(current, current.ids) if current is not None else None
        if current is not None and side is not None and pid not in self.joined:
            minor = money.to_minor(current.amount, current.currency)
            key = (side, current.customer_id, current.currency, minor)
            self.money_key[pid] = key
            self.by_money.setdefault(key, set()).add(pid)

    def row(self, pid: str) -> PaymentRow | None:
        if pid not in self.rows:
            self.rows[pid] = self.s.get(PaymentRow, pid)
        return self.rows[pid]

    def canonical(self, pid: str) -> str:
        while pid in self.joined:
            pid = self.joined[pid]
        return pid

    def _load(self, pid: str) -> None:
        if pid not in self.current:
            row = self.row(pid)
            self.current[pid] = Payment.model_validate_json(row.data) if row else None
            self.processed[pid] = (
                Payment.model_validate_json(row.processed_data) if row and row.processed_data else None
            )

    def state(self, pid: str) -> tuple[Payment, Payment | None]:
        self._load(pid)
        current = self.current[pid]
        assert current is not None  # every canonical id has had a fact merged into it
        return current, self.processed[pid]

    def _set_alias(self, alias: str, pid: str) -> None:
        if self.alias.get(alias) == pid:
            return
        if alias in self.alias and alias not in self.new_aliases:
            self.s.execute(
                update(PaymentAliasRow).where(PaymentAliasRow.alias_id == alias).values(payment_id=pid)
            )
        elif alias not in self.alias:
            self.new_aliases.add(alias)  # inserted together by `write_aliases`
        self.alias[alias] = pid

    def write_aliases(self) -> None:
        if self.new_aliases:
            now = utcnow()
            self.s.execute(
                insert(PaymentAliasRow),
                [
                    dict(alias_id=a, payment_id=self.alias[a], created_at=now)
                    for a in sorted(self.new_aliases)
                ],
            )

    def record(self, fact: Payment) -> str:
        ids = sorted({*fact.ids, fact.payment_id})
        known = {self.canonical(self.alias[i]) for i in ids if i in self.alias}
        if not known:
            target = self.match(fact, ids) or preferred_id(ids)
        elif len(known) == 1:
            target = known.pop()
        else:
            target = self.survivor(known)
            for other in sorted(known - {target}):
                self.join(other, target)
        for i in ids:
            self._set_alias(i, target)
        self._load(target)
        fact = fact.model_copy(update={"payment_id": target})
        current = self.current[target]
        self.current[target] = (
            current.merged_with(fact) if current else Payment.model_validate(fact.model_dump())
        )
        self._index(target)
        return target

    def survivor(self, known: set[str]) -> str:
        """Of two payments found to be one: the one the sinks already know, else the PaymentIntent."""
        seen = [pid for pid in known if (row := self.row(pid)) is not None and row.processed_data]
        return preferred_id(seen or known)

    def join(self, other: str, target: str) -> None:
        """Fold payment `other` into `target`: its state, what its sinks saw, and its aliases."""
        self._load(other)
        self._load(target)
        moved, seen = self.current[other], self.processed[other]
        if moved is not None:
            moved = moved.model_copy(update={"payment_id": target})
            current = self.current[target]
            self.current[target] = current.merged_with(moved) if current else moved
        if seen is not None:
            seen = seen.model_copy(update={"payment_id": target})
            before = self.processed[target]
            # what was already said about either half is not said again (no second thank-you)
            self.processed[target] = before.merged_with(seen) if before else seen
        self.s.execute(
            update(PaymentAliasRow).where(PaymentAliasRow.payment_id == other).values(payment_id=target)
        )
        for alias, pid in list(self.alias.items()):
            if pid == other:
                self.alias[alias] = target
        row = self.row(other)
        if row is not None:
            self.s.flush()  # a row added earlier in this batch must exist before it can go
            self.s.delete(row)
            self.rows[other] = None
        self.joined[other] = target
        self._index(other)
        self._index(target)
        log.warning("payment %s is %s: joined (its ids link them)", other, target)

    def match(self, fact: Payment, ids: list[str]) -> str | None:
        """The one payment an unlinked invoice (or charge) must be: same customer, currency and
        amount, paid within `MATCH_WINDOW`, and not linked to another invoice (or charge)."""
        side = self._side(fact, ids)
        if side is None or fact.paid_at is None:
            return None
        paid, invoice = side == "charge", side == "invoice"
        minor = money.to_minor(fact.amount, fact.currency)
        stored: list[PaymentRow] = []
        if invoice:  # a charge on its own, created before it was paid (the charge side is preloaded)
            query = select(PaymentRow).where(
                PaymentRow.customer_id == fact.customer_id,
                PaymentRow.currency == fact.currency,
                PaymentRow.amount_minor == minor,
                PaymentRow.occurred_at >= fact.paid_at - timedelta(days=1),
                PaymentRow.occurred_at <= fact.paid_at + MATCH_WINDOW,
            )
            with self.s.no_autoflush:  # rows of this batch are in `by_money`
                stored = [row for row in self.s.scalars(query) if row.payment_id not in self.joined]
        for row in stored:
            self.rows.setdefault(row.payment_id, row)
        other_side = "invoice" if paid else "charge"
        candidates = {row.payment_id for row in stored} | self.by_money.get(
            (other_side, fact.customer_id, fact.currency, minor), set()
        )
        found: list[str] = []
        for pid in sorted(candidates):
            self._load(pid)
            other = self.current[pid]
            if other is None or other.paid_at is None or other.lifecycle != Lifecycle.succeeded:
                continue
            if (other.customer_id, other.currency) != (fact.customer_id, fact.currency):
                continue
            if money.to_minor(other.amount, other.currency) != minor:
                continue
            has_invoice = any(a.startswith("in_") for a in other.ids)
            has_payment = any(a.startswith(PAYMENT_PREFIXES) for a in other.ids)
            if (has_invoice, has_payment) != (paid, invoice):  # the other side, and only it
                continue
            if abs(other.paid_at - fact.paid_at) <= MATCH_WINDOW:
                found.append(pid)
        return found[0] if len(found) == 1 else None

    def write(self, pid: str) -> None:
        """The payment's row as the merge left it."""
        merged, processed = self.state(pid)
        values = dict(
            provider=merged.provider,
            status=merged.status.value,
            currency=merged.currency,
            amount_minor=money.to_minor(merged.amount, merged.currency),
            refunded_minor=money.to_minor(merged.refunded_amount, merged.currency),
            customer_id=merged.customer_id,
            email=merged.email,
            occurred_at=merged.occurred_at,
            livemode=merged.livemode,
            data=merged.model_dump_json(),
            processed_data=processed.model_dump_json() if processed else None,
            updated_at=utcnow(),
        )
        row = self.row(pid)
        if row is None:
            self.rows[pid] = PaymentRow(payment_id=pid, **values)
            self.s.add(self.rows[pid])
        else:
            for key, value in values.items():
                setattr(row, key, value)


def describe_error(exc: BaseException) -> str:
    """`ExceptionClass: message`, one line, for a dead letter or a note. A database error is
    described by the driver's own error: SQLAlchemy's text would carry the statement's
    parameters, which hold payloads and e-mail addresses."""
    if isinstance(exc, SQLAlchemyError) and getattr(exc, "orig", None) is not None:
        exc = exc.orig  # type: ignore[attr-defined]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]


class Ledger:
    """All reads and writes of the ledger. Thread-safe; one instance per process is enough."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    # -- schema --------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest version (Alembic); safe to call on every start, from any
        number of processes at once: one migrates while the others wait, then find it done."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._migration_lock(), self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """PostgreSQL: an advisory lock held by one session; SQLite: a file lock beside the database."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
                conn.commit()
                try:
                    yield
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                    conn.commit()
            return
        path = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not path or path == ":memory:":
            yield  # a private in-memory database has no other process to race
            return
        with open(f"{path}.migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as s:
            yield s

    def _insert(self, table: Any) -> Any:
        return (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(table)

    # -- inbox ---------------------------------------------------------------------------------

    def store_events(self, events: Sequence[IncomingEvent]) -> list[bool]:
        """Store a batch in one transaction; True for each event that was new."""
        now = utcnow()
        ids = [e.event_id for e in events]
        with self.session() as s:
            existing = set(s.scalars(select(InboxRow.event_id).where(InboxRow.event_id.in_(ids))))
            fresh: dict[str, IncomingEvent] = {}
            for e in events:
                if e.event_id not in existing and e.event_id not in fresh:
                    fresh[e.event_id] = e
            if fresh:
                stmt = self._insert(InboxRow.__table__).on_conflict_do_nothing(index_elements=["event_id"])
                s.execute(
                    stmt,
                    [
                        dict(
                            event_id=e.event_id,
                            type=e.type,
                            object_id=e.object_id,
                            created=e.created,
                            livemode=e.livemode,
                            payload=e.payload,
                            received_at=now,
                            status="pending",
                            attempts=0,
                        )
                        for e in fresh.values()
                    ],
                )
        seen: set[str] = set()
        result = []
        for e in events:
            result.append(e.event_id in fresh and e.event_id not in seen)
            seen.add(e.event_id)
        return result

    # A claim is one conditional UPDATE ... RETURNING: two claimers never both win an event, and
    # the winner's token is on the row. A live run's LeaseKeeper moves lease_until on; an event
    # whose lease ran out (its run died) is claimable again.

    def _claimable(self, now: datetime) -> Any:
        # pending with a lease: it waits for the run that holds its payment (see `defer_events`)
        return and_(
            InboxRow.status.in_(("pending", "claimed")),
            or_(InboxRow.lease_until.is_(None), InboxRow.lease_until < now),
        )

    def claim_events(self, limit: int, lease_seconds: float, token: str | None = None) -> list[str]:
        """Claim up to `limit` pending (or lease-expired) events for `token`; their ids, oldest first."""
        # pending ones by age and expired ones by lease, each read from its own index (one query
        # over both statuses would sort the whole backlog on every claim), then the oldest of both
        return self._claim(
            [
                (InboxRow.status == "pending", (InboxRow.received_at, InboxRow.created)),
                (InboxRow.status == "claimed", (InboxRow.lease_until,)),
            ],
            limit,
            lease_seconds,
            token or new_token(),
        )

    def claim_next(self, limit: int, lease_seconds: float, token: str) -> list[str]:
        """What a dispatcher claims next: first the events whose run died or failed, else up to
        `limit` pending ones, oldest first.

        Events whose run raised are retried in a batch ten times smaller for each attempt
        (10,000, 1,000, 100, 10, 1), so one event that fails its whole batch ends up alone before
        it runs out of attempts, and the others get through. A run that died without a word
        (kill -9, a lost machine) or failed on an outage (`OUTAGE` notes) says nothing about its
        events: they go again whole, and shrink only from their second such attempt on, so a
        worker killed mid-burst costs one lease, not ten small runs."""
        now = utcnow()
        expired = (InboxRow.status == "claimed") & (InboxRow.lease_until < now)
        with self.session() as s:
            tried = s.scalar(select(func.max(InboxRow.attempts)).where(expired))
            failed = s.scalar(
                select(func.max(InboxRow.attempts)).where(
                    expired, InboxRow.note.is_not(None), InboxRow.note.not_like(f"{OUTAGE}%")
                )
            )
        if tried:
            shrink = max(int(failed or 0), int(tried) - 1)
            retry = self._claim(
                [(InboxRow.status == "claimed", (InboxRow.attempts.desc(), InboxRow.lease_until))],
                max(1, limit // 10 ** min(shrink, 9)),
                lease_seconds,
                token,
            )
            if retry:
                return retry
        # an event of a payment a live run holds would only wait for it: leave it for the next
        # claim and take one that can go now (its object is the payment, or one of its ids)
        held = exists().where(
            PaymentLeaseRow.payment_id == InboxRow.object_id, PaymentLeaseRow.lease_until >= now
        )
        return self._claim(
            [(and_(InboxRow.status == "pending", ~held), (InboxRow.received_at, InboxRow.created))],
            limit,
            lease_seconds,
            token,
        )

    def _claim(
        self, parts: Sequence[tuple[Any, tuple[Any, ...]]], limit: int, lease_seconds: float, token: str
    ) -> list[str]:
        """One conditional UPDATE ... RETURNING over the first `limit` free rows of each part
        (a condition and its index's order), oldest first."""
        now = utcnow()
        pg = self.engine.dialect.name == "postgresql"
        free = or_(InboxRow.lease_until.is_(None), InboxRow.lease_until < now)
        selects = []
        for condition, order in parts:
            part = (
                select(InboxRow.event_id, InboxRow.received_at, InboxRow.created)
                .where(condition, free)
                .order_by(*order)
                .limit(limit)
            )
            if pg:  # concurrent claimers take different rows
                part = part.with_for_update(skip_locked=True)
            selects.append(part.subquery().select())
        both = (union_all(*selects) if len(selects) > 1 else selects[0]).subquery()
        pick = (
            select(both.c.event_id).order_by(both.c.received_at, both.c.created, both.c.event_id).limit(limit)
        )
        picked: Any = pick.scalar_subquery()
        if pg:
            # MATERIALIZED, so the LIMIT is applied once (a subquery in IN may be run again by the
            # planner, locking more rows each time)
            cte = pick.cte("picked").prefix_with("MATERIALIZED")
            picked = select(cte.c.event_id)
        stmt = (
            update(InboxRow)
            # no second look at the status here: the pick runs inside this statement's write
            # transaction (SQLite: one writer at a time; PostgreSQL: the rows are locked), and a
            # second condition would make SQLite scan the backlog instead of the primary key
            .where(InboxRow.event_id.in_(picked))
            .values(
                status="claimed",
                claim_token=token,
                claimed_at=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=InboxRow.attempts + 1,
            )
            .returning(InboxRow.event_id, InboxRow.received_at, InboxRow.created)
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            rows = s.execute(stmt).all()
        return [r.event_id for r in sorted(rows, key=lambda r: (r.received_at, r.created, r.event_id))]

    def claim_given(self, ids: Sequence[str], token: str, lease_seconds: float) -> list[str]:
        """Claim these events for `token` (a Retry, a replay, a run started with event ids).

        Taken: pending ones, expired ones, ones this token holds already, and finished ones (a
        replay runs them again, with a fresh count of attempts). Left out: ids held by another
        live lease (that run is working on them) and ids not in the inbox. Returns the ids taken,
        in the order given.
        """
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        now = utcnow()
        mine = and_(InboxRow.status == "claimed", InboxRow.claim_token == token)
        stmt = (
            update(InboxRow)
            .where(
                InboxRow.event_id.in_(ids),
                or_(self._claimable(now), mine, InboxRow.status.in_(("pending", *FINISHED))),
            )
            .values(
                status="claimed",
                claim_token=token,
                claimed_at=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=case(
                    (InboxRow.status.in_(FINISHED), 1),
                    (mine, InboxRow.attempts),  # the dispatcher claimed it for this run: counted once
                    else_=InboxRow.attempts + 1,
                ),
            )
            .returning(InboxRow.event_id)
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            taken = set(s.scalars(stmt))
        return [i for i in ids if i in taken]

    def release_events(self, ids: Sequence[str], token: str | None = None) -> None:
        """Give claimed events back to the inbox, uncounted (Prefect could not take them, or their
        payment is another run's just now): the next round claims them again."""
        ids = list(ids)
        if not ids:
            return
        conditions: list[Any] = [InboxRow.event_id.in_(ids), InboxRow.status == "claimed"]
        if token is not None:
            conditions.append(InboxRow.claim_token == token)
        with self.session() as s:
            s.execute(
                update(InboxRow)
                .where(*conditions)
                .values(
                    status="pending",
                    claim_token=None,
                    claimed_at=None,
                    lease_until=None,
                    attempts=case((InboxRow.attempts > 0, InboxRow.attempts - 1), else_=0),
                )
            )

    def renew_leases(self, token: str, lease_seconds: float) -> int:
        """Move on every lease `token` holds (its claimed events and its payments, and the events
        that wait for its payments: they wait while it lives, not claimed and given back again
        each lease); how many."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        with self.session() as s:
            events = s.execute(
                update(InboxRow)
                .where(InboxRow.claim_token == token, InboxRow.status.in_(("claimed", "pending")))
                .values(lease_until=until)
            )
            payments = s.execute(
                update(PaymentLeaseRow).where(PaymentLeaseRow.token == token).values(lease_until=until)
            )
        return int(events.rowcount or 0) + int(payments.rowcount or 0)  # type: ignore[attr-defined]

    def lock_payments(self, payment_ids: Iterable[str], token: str, lease_seconds: float) -> set[str]:
        """Take the lease on each payment for `token`; the ids won. A payment another live run
        holds is not won: that run is recording or syncing it now."""
        ids = sorted(set(payment_ids))  # one order for every run: PostgreSQL never deadlocks on it
        won: set[str] = set()
        now = utcnow()
        until = now + timedelta(seconds=lease_seconds)
        table = PaymentLeaseRow.__table__
        for start in range(0, len(ids), 2000):  # 6,000 parameters a statement: within every limit
            stmt = self._insert(table).values(
                [dict(payment_id=pid, token=token, lease_until=until) for pid in ids[start : start + 2000]]
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["payment_id"],
                set_={"token": stmt.excluded.token, "lease_until": stmt.excluded.lease_until},
                where=or_(table.c.lease_until < now, table.c.token == token),
            ).returning(table.c.payment_id)
            with self.session() as s:
                won.update(s.scalars(stmt))
        return won

    def canonical_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """id -> the payment it is known as (`payment_aliases`), for the ids already known."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(PaymentAliasRow.alias_id, PaymentAliasRow.payment_id).where(
                    PaymentAliasRow.alias_id.in_(ids)
                )
            )
            return {alias: pid for alias, pid in rows}

    def release_payments(self, token: str) -> None:
        """The run is over: its payments are free, and the events that waited for them with it."""
        with self.session() as s:
            s.execute(delete(PaymentLeaseRow).where(PaymentLeaseRow.token == token))
            s.execute(
                update(InboxRow)
                .where(InboxRow.status == "pending", InboxRow.claim_token == token)
                .values(claim_token=None, lease_until=None)
            )

    def defer_events(self, event_payments: Mapping[str, str], token: str) -> None:
        """Give back, uncounted, events `token` claimed whose payment (event id -> payment id)
        another run holds: each waits, pending, until that run frees the payment or its lease
        ends, so the dispatcher does not claim it again and again meanwhile."""
        if not event_payments:
            return
        with self.session() as s:
            holders = {
                r.payment_id: r
                for r in s.scalars(
                    select(PaymentLeaseRow).where(
                        PaymentLeaseRow.payment_id.in_(set(event_payments.values()))
                    )
                )
            }
            for event_id, payment_id in event_payments.items():
                holder = holders.get(payment_id)
                s.execute(
                    update(InboxRow)
                    .where(
                        InboxRow.event_id == event_id,
                        InboxRow.status == "claimed",
                        InboxRow.claim_token == token,
                    )
                    .values(
                        status="pending",
                        claim_token=holder.token if holder else None,
                        claimed_at=None,
                        lease_until=holder.lease_until if holder else None,
                        attempts=case((InboxRow.attempts > 0, InboxRow.attempts - 1), else_=0),
                    )
                )

    def payment_holder(self, payment_id: str) -> str | None:
        """The token whose live lease holds this payment, if any."""
        with self.session() as s:
            row = s.get(PaymentLeaseRow, payment_id)
            return row.token if row is not None and row.lease_until >= utcnow() else None

    def note_failure(self, token: str, note: str) -> None:
        """The run failed: its claimed events keep the reason, for the next attempt's count."""
        with self.session() as s:
            s.execute(
                update(InboxRow)
                .where(InboxRow.claim_token == token, InboxRow.status == "claimed")
                .values(note=note[:1000])
            )

    def bury_exhausted(self, ids: Sequence[str], token: str, max_attempts: int) -> dict[str, str]:
        """Claimed more than `max_attempts` times: dead, with a dead letter saying why, instead of
        being claimed forever. Returns event id -> reason for those buried."""
        ids = list(ids)
        if not ids:
            return {}
        buried: dict[str, str] = {}
        now = utcnow()
        with self.session() as s:
            rows = s.execute(
                select(InboxRow.event_id, InboxRow.attempts, InboxRow.note).where(
                    InboxRow.event_id.in_(ids),
                    InboxRow.claim_token == token,
                    InboxRow.status == "claimed",
                    InboxRow.attempts > max_attempts,
                )
            ).all()
            for event_id, attempts, note in rows:
                reason = f"failed {attempts - 1} times: {note or 'no error recorded'}"[:1000]
                s.execute(
                    update(InboxRow)
                    .where(InboxRow.event_id == event_id)
                    .values(status="dead", note=reason, lease_until=None)
                )
                s.add(
                    DeadLetterRow(
                        event_id=event_id, target="inbox", action="process", reason=reason, created_at=now
                    )
                )
                buried[event_id] = reason
        return buried

    def set_flow_run(self, ids: Sequence[str], flow_run_id: str) -> None:
        with self.session() as s:
            s.execute(
                update(InboxRow).where(InboxRow.event_id.in_(list(ids))).values(flow_run_id=flow_run_id)
            )

    def load_events(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The raw events, in Stripe's `created` order (ties: the order given)."""
        with self.session() as s:
            rows = {
                r.event_id: r for r in s.scalars(select(InboxRow).where(InboxRow.event_id.in_(list(ids))))
            }
        order = {eid: i for i, eid in enumerate(ids)}
        found = sorted(rows.values(), key=lambda r: (r.created, order[r.event_id]))
        return [json.loads(r.payload) for r in found]

    def finish_events(
        self, ids: Iterable[str], status: str, note: str | None = None, token: str | None = None
    ) -> int:
        """Close events (done | skipped | dead). With a token, only the ones it still holds: an
        event whose lease another run took over is that run's to close. How many were closed."""
        ids = list(ids)
        if not ids:
            return 0
        conditions: list[Any] = [InboxRow.event_id.in_(ids)]
        if token is not None:
            conditions += [InboxRow.claim_token == token, InboxRow.status == "claimed"]
        with self.session() as s:
            result = s.execute(
                update(InboxRow).where(*conditions).values(status=status, note=note, lease_until=None)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def inbox_counts(self) -> dict[str, int]:
        with self.session() as s:
            return dict(s.execute(select(InboxRow.status, func.count()).group_by(InboxRow.status)).all())  # type: ignore[arg-type]

    def events_with_status(self, status: str, limit: int = 10_000) -> list[str]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(InboxRow.event_id)
                    .where(InboxRow.status == status)
                    .order_by(InboxRow.received_at)
                    .limit(limit)
                )
            )

    # -- payments ------------------------------------------------------------------------------

    def get_payment(self, payment_id: str) -> Payment | None:
        with self.session() as s:
            row = s.get(PaymentRow, payment_id)
            return Payment.model_validate_json(row.data) if row else None

    def record_payment(self, incoming: Payment) -> PaymentChange:
        """Merge one newly seen fact into the payment's state (see `record_payments`)."""
        return self.record_payments([incoming])[0]

    def record_payments(self, incoming: Sequence[Payment]) -> list[PaymentChange]:
        """Merge newly seen facts into their payments' states, in one transaction.

        Each fact is resolved to its canonical payment through `payment_aliases` (an id already
        known wins; a PaymentIntent id is preferred when nothing is known yet; two payments a
        fact links are joined into one), and its ids are recorded as aliases in the same
        transaction. Returns one change per fact, in order, each with its payment's state after
        the whole batch. The ordering guard (`Payment.merged_with`) lives here.
        """
        with self.session() as s:
            merge = _AliasMerge(s, incoming)
            targets = [merge.record(fact) for fact in incoming]
            final = {pid: merge.state(pid) for pid in dict.fromkeys(merge.canonical(t) for t in targets)}
            for pid in final:
                merge.write(pid)
            merge.write_aliases()
            return [
                PaymentChange(payment=final[pid][0], previous=final[pid][1])
                for pid in (merge.canonical(t) for t in targets)
            ]

    def record_payments_isolated(
        self, incoming: Sequence[Payment]
    ) -> tuple[list[PaymentChange], dict[str, str]]:
        """`record_payments`, except that a payment the database refuses (an amount past its
        integers, a value it cannot store) fails alone: the batch is halved down to it, and the
        others are recorded. Returns the changes and payment id -> reason for the refused ones.

        The database being away or busy is not one payment's fault: that still raises.
        """
        groups: dict[str, list[Payment]] = {}
        for fact in incoming:
            groups.setdefault(fact.payment_id, []).append(fact)
        changes: list[PaymentChange] = []
        failed: dict[str, str] = {}
        self._record_halving(list(groups.values()), changes, failed)
        return changes, failed

    def _record_halving(
        self, groups: list[list[Payment]], changes: list[PaymentChange], failed: dict[str, str]
    ) -> None:
        if not groups:
            return
        try:
            changes.extend(self.record_payments([fact for group in groups for fact in group]))
            return
        except UNAVAILABLE:
            raise
        except Exception as exc:  # poison isolation: whatever one payment raises stays with it
            if len(groups) == 1:
                failed[groups[0][0].payment_id] = describe_error(exc)
                log.warning("payment %s cannot be recorded: %s", groups[0][0].payment_id, describe_error(exc))
                return
        mid = len(groups) // 2
        self._record_halving(groups[:mid], changes, failed)
        self._record_halving(groups[mid:], changes, failed)

    def mark_processed(self, payments: Sequence[Payment]) -> None:
        """Every sink has passed these states on; the next run's changes are counted from here."""
        with self.session() as s:
            for p in payments:
                s.execute(
                    update(PaymentRow)
                    .where(PaymentRow.payment_id == p.payment_id)
                    .values(processed_data=p.model_dump_json())
                )

    # -- links ---------------------------------------------------------------------------

    def get_link(self, kind: str, local_id: str, target: str) -> str | None:
        with self.session() as s:
            row = s.get(LinkRow, (kind, local_id, target))
            return row.remote_id if row else None

    def get_links(self, kind: str, target: str, local_ids: Iterable[str]) -> dict[str, str]:
        """local id -> its id in the target, for the ones linked."""
        ids = sorted(set(local_ids))
        found: dict[str, str] = {}
        with self.session() as s:
            for start in range(0, len(ids), 500):
                rows = s.execute(
                    select(LinkRow.local_id, LinkRow.remote_id).where(
                        LinkRow.kind == kind,
                        LinkRow.target == target,
                        LinkRow.local_id.in_(ids[start : start + 500]),
                    )
                )
                found.update({local: remote for local, remote in rows})
        return found

    def set_links(self, kind: str, target: str, remote_ids: dict[str, str]) -> None:
        """Record many local ids' ids in one target, in one transaction."""
        if not remote_ids:
            return
        now = utcnow()
        stmt = self._insert(LinkRow.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "local_id", "target"],
            set_={"remote_id": stmt.excluded.remote_id, "updated_at": stmt.excluded.updated_at},
        )
        with self.session() as s:
            s.execute(
                stmt,
                [
                    dict(kind=kind, local_id=local, target=target, remote_id=remote, updated_at=now)
                    for local, remote in remote_ids.items()
                ],
            )

    def set_link(self, kind: str, local_id: str, target: str, remote_id: str) -> None:
        self.set_links(kind, target, {local_id: remote_id})

    # -- effects: claim -> (attempt) -> act -> settle ------------------------------------------
    #
    #   claimed     the key is taken; the target has not been called. Left so by a dead attempt,
    #               it is safe to redo: `claim_effects` takes it over.
    #   attempting  the call is about to be made (`mark_attempting`). Left so, the outcome is
    #               unknown: `take_over_attempting` hands it to a caller that looks at the target
    #               (or redoes it where the target dedupes by our key).
    #   done | unknown | failed   settled. `failed` carries a dead letter naming the effect.
    #
    # A payment's sinks run only while its run holds the payment's lease, so a claim held by
    # another token belongs to an attempt that is no longer running.

    SETTLED = ("done", "unknown", "failed")

    def effect_states(self, keys: Iterable[str]) -> dict[str, str]:
        """key -> status, for the keys that have a row."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        with self.session() as s:
            return dict(
                s.execute(select(EffectRow.key, EffectRow.status).where(EffectRow.key.in_(keys))).all()
            )  # type: ignore[arg-type]

    def effect_claimed_at(self, key: str) -> datetime | None:
        """When this effect was first claimed: nothing an attempt of it made at a target is older."""
        with self.session() as s:
            return s.scalar(select(EffectRow.created_at).where(EffectRow.key == key))

    def effects_done(self, keys: Iterable[str]) -> set[str]:
        """The keys already settled (done, unknown or failed): nothing to do for them in a normal run."""
        return {k for k, status in self.effect_states(keys).items() if status in self.SETTLED}

    def record_effects(
        self, items: Sequence[EffectItem], results: Sequence[str], status: str = "done"
    ) -> None:
        """Record side effects that are their own proof (a keyed upsert), in one transaction;
        already recorded ones are kept."""
        if not items:
            return
        now = utcnow()
        with self.session() as s:
            s.execute(
                self._insert(EffectRow.__table__).on_conflict_do_nothing(index_elements=["key"]),
                [
                    dict(
                        key=i.key,
                        payment_id=i.payment_id,
                        target=i.target,
                        action=i.action,
                        status=status,
                        result=r,
                        created_at=now,
                        updated_at=now,
                    )
                    for i, r in zip(items, results, strict=True)
                ],
            )

    @staticmethod
    def new_token() -> str:
        return f"claim:{uuid.uuid4().hex[:16]}"

    def claim_effects(self, items: Sequence[EffectItem], *, take_over: bool = True) -> tuple[set[str], str]:
        """Claim effects before doing them: each new key is inserted `claimed` under a fresh token.

        With `take_over`, rows of these keys left `claimed` by another token (an attempt that
        died before calling its target) are taken too. Returns the keys won and the token to
        settle them with; keys in any other state are not won.
        """
        token = self.new_token()
        now = utcnow()
        rows = {
            i.key: dict(
                key=i.key,
                payment_id=i.payment_id,
                target=i.target,
                action=i.action,
                status="claimed",
                token=token,
                result=None,
                created_at=now,
                updated_at=now,
            )
            for i in items
        }
        if not rows:
            return set(), token
        keys = list(rows)
        with self.session() as s:
            s.execute(
                self._insert(EffectRow.__table__).on_conflict_do_nothing(index_elements=["key"]),
                list(rows.values()),
            )
            if take_over:
                s.execute(
                    update(EffectRow)
                    .where(EffectRow.key.in_(keys), EffectRow.status == "claimed", EffectRow.token != token)
                    .values(token=token, updated_at=now)
                )
            won = _held(s, keys, token, "claimed")
        return won, token

    def mark_attempting(self, keys: Iterable[str], token: str) -> None:
        """claimed -> attempting: the call to the target is about to be made (commit, then call)."""
        keys = list(keys)
        if not keys:
            return
        with self.session() as s:
            s.execute(
                update(EffectRow)
                .where(EffectRow.key.in_(keys), EffectRow.token == token, EffectRow.status == "claimed")
                .values(status="attempting", updated_at=utcnow())
            )

    def take_over_attempting(self, keys: Iterable[str]) -> tuple[set[str], str]:
        """Take the rows of these keys that an attempt left `attempting` (its outcome unknown).

        The caller settles each by looking at the target (found: done; missing: redo), or redoes
        it where the target dedupes by our key. Returns the keys won and their new token.
        """
        keys = list(dict.fromkeys(keys))
        token = self.new_token()
        if not keys:
            return set(), token
        with self.session() as s:
            s.execute(
                update(EffectRow)
                .where(EffectRow.key.in_(keys), EffectRow.status == "attempting")
                .values(token=token, updated_at=utcnow())
            )
            won = _held(s, keys, token, "attempting")
        return won, token

    def settle_effects(self, outcomes: Sequence[EffectOutcome], token: str) -> None:
        """One transaction: each claimed effect becomes done / unknown / failed (with a dead
        letter), or is released (deleted) so a later attempt may claim it again. Only rows
        still held by `token` change; `claimed=False` outcomes are inserted settled."""
        if not outcomes:
            return
        now = utcnow()
        with self.session() as s:
            for o in outcomes:
                item = o.item
                held = (EffectRow.key == item.key) & (EffectRow.token == token)
                if o.status == "release":
                    s.execute(delete(EffectRow).where(held, EffectRow.status.in_(("claimed", "attempting"))))
                    continue
                if o.claimed:
                    s.execute(
                        update(EffectRow)
                        .where(held)
                        .values(status=o.status, result=o.result[:1000], updated_at=now)
                    )
                else:
                    s.add(
                        EffectRow(
                            key=item.key,
                            payment_id=item.payment_id,
                            target=item.target,
                            action=item.action,
                            status=o.status,
                            token=token,
                            result=o.result[:1000],
                            created_at=now,
                            updated_at=now,
                        )
                    )
                if o.status == "failed":
                    s.add(
                        DeadLetterRow(
                            payment_id=item.payment_id,
                            effect_key=item.key,
                            target=item.target,
                            action=item.action,
                            reason=f"{item.key}: {o.result}",
                            created_at=now,
                        )
                    )

    def unfinished_payments(self, payment_ids: Iterable[str]) -> set[str]:
        """The payments with an effect failed, or claimed/attempting and never settled."""
        ids = sorted(set(payment_ids))
        found: set[str] = set()
        with self.session() as s:
            for start in range(0, len(ids), 500):
                found.update(
                    s.scalars(
                        select(EffectRow.payment_id)
                        .where(
                            EffectRow.payment_id.in_(ids[start : start + 500]),
                            EffectRow.status.in_(("failed", "claimed", "attempting")),
                        )
                        .distinct()
                    )
                )
        return found

    def release_superseded(self, payment_ids: Iterable[str], before: datetime) -> int:
        """Settle what dead runs left of these payments' effects, claimed or attempting before
        `before` (when the caller took the payments' leases) and not taken over since: effects
        of a state the payment has moved past, which no run will plan again. A `claimed` one never
        reached its target and is released; an `attempting` one may have, and becomes `unknown`.
        Otherwise the payment would count as unfinished for good. How many rows changed."""
        ids = sorted(set(payment_ids))
        changed = 0
        with self.session() as s:
            for start in range(0, len(ids), 500):
                old = EffectRow.payment_id.in_(ids[start : start + 500]) & (EffectRow.updated_at < before)
                gone = s.execute(delete(EffectRow).where(old, EffectRow.status == "claimed"))
                doubtful = s.execute(
                    update(EffectRow)
                    .where(old, EffectRow.status == "attempting")
                    .values(
                        status="unknown",
                        result="an attempt died in its call; the payment moved on before it was looked at",
                        updated_at=utcnow(),
                    )
                )
                changed += int(gone.rowcount or 0) + int(doubtful.rowcount or 0)  # type: ignore[attr-defined]
        return changed

    def reopen_failed_effects(self, payment_ids: Iterable[str]) -> int:
        """Forget effects that failed for good, so a replay (after a fix) may try them again."""
        ids = list(payment_ids)
        if not ids:
            return 0
        with self.session() as s:
            result = s.execute(
                delete(EffectRow).where(EffectRow.payment_id.in_(ids), EffectRow.status == "failed")
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def resolve_done_dead_letters(self) -> int:
        """Resolve the open dead letters whose effect is now done (a replay finished it)."""
        with self.session() as s:
            done = select(EffectRow.key).where(EffectRow.status == "done")
            result = s.execute(
                update(DeadLetterRow)
                .where(DeadLetterRow.resolved_at.is_(None), DeadLetterRow.effect_key.in_(done))
                .values(resolved_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def effects_for(self, payment_id: str) -> list[EffectRow]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(EffectRow).where(EffectRow.payment_id == payment_id).order_by(EffectRow.created_at)
                )
            )

    # -- dead letters --------------------------------------------------------------------------

    def dead_letter(
        self,
        *,
        target: str,
        action: str,
        reason: str,
        event_id: str | None = None,
        payment_id: str | None = None,
    ) -> None:
        with self.session() as s:
            s.add(
                DeadLetterRow(
                    event_id=event_id,
                    payment_id=payment_id,
                    target=target,
                    action=action,
                    reason=reason,
                    created_at=utcnow(),
                )
            )

    def dead_letters(self, unresolved_only: bool = True) -> list[DeadLetterRow]:
        with self.session() as s:
            q = select(DeadLetterRow).order_by(DeadLetterRow.id)
            if unresolved_only:
                q = q.where(DeadLetterRow.resolved_at.is_(None))
            return list(s.scalars(q))

    def events_for_dead_letters(self, letters: Sequence[DeadLetterRow]) -> list[str]:
        """Every inbox event behind these dead letters: named directly, or about the same payment."""
        event_ids = {d.event_id for d in letters if d.event_id}
        payment_ids = {d.payment_id for d in letters if d.payment_id}
        with self.session() as s:
            if payment_ids:
                rows = s.execute(select(InboxRow.event_id, InboxRow.payload).where(InboxRow.status == "done"))
                for event_id, payload in rows:
                    if any(pid in payload for pid in payment_ids):
                        event_ids.add(event_id)
        return sorted(event_ids)

    def resolve_dead_letters(self, ids: Sequence[int]) -> None:
        with self.session() as s:
            s.execute(
                update(DeadLetterRow).where(DeadLetterRow.id.in_(list(ids))).values(resolved_at=utcnow())
            )

    # -- Stripe object cache -------------------------------------------------------------------

    def cached_object(self, object_id: str, max_age: timedelta) -> dict[str, Any] | None:
        with self.session() as s:
            row = s.get(StripeObjectRow, object_id)
            if row is None or row.fetched_at < utcnow() - max_age:
                return None
            return json.loads(row.body)  # type: ignore[no-any-return]

    def cache_object(self, object_id: str, body: dict[str, Any]) -> None:
        with self.session() as s:
            stmt = self._insert(StripeObjectRow.__table__).values(
                object_id=object_id, body=json.dumps(body), fetched_at=utcnow()
            )
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["object_id"], set_={"body": json.dumps(body), "fetched_at": utcnow()}
                )
            )

    def dispose(self) -> None:
        self.engine.dispose()


def _held(s: Session, keys: Sequence[str], token: str, status: str) -> set[str]:
    """The keys among `keys` that `token` holds in `status` (what a claim or take-over won)."""
    query = select(EffectRow.key).where(
        EffectRow.key.in_(keys), EffectRow.token == token, EffectRow.status == status
    )
    return set(s.scalars(query))


class LeaseKeeper:
    """Keeps a run's leases alive: a daemon thread renews every lease its token holds (events
    and payments) each `lease_seconds / 3`. When the process dies the renewals stop, and within
    one lease the events are claimable again.

        with LeaseKeeper(ledger, token, lease_seconds):
            ...work on what `token` claimed...
    """

    def __init__(self, ledger: Ledger, token: str, lease_seconds: float) -> None:
        self.ledger = ledger
        self.token = token
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3, 0.05)
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.token[:8]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.ledger.renew_leases(self.token, self.lease_seconds)
                self.renewals += 1
            except SQLAlchemyError as exc:  # the ledger blinked: the next beat tries again
                log.warning("renewing the leases of %s failed: %s", self.token, describe_error(exc))

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
