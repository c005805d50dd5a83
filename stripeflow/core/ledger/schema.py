"""The ledger's tables, as SQLAlchemy rows, and the aware UTC datetime they store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from stripeflow.core.config import DEFAULT_ACCOUNT


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


def account_column(index: bool = False) -> Mapped[str]:
    """The Stripe account a record belongs to (issue 9): every record a ledger held before
    accounts existed, and every record of a single-account setup, is on `DEFAULT_ACCOUNT`."""
    return mapped_column(String(64), default=DEFAULT_ACCOUNT, server_default=DEFAULT_ACCOUNT, index=index)


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
    account: Mapped[str] = account_column()

    __table_args__ = (
        Index("ix_inbox_status_received", "status", "received_at", "created"),
        Index("ix_inbox_status_lease", "status", "lease_until"),
        # an account's claims: its pending events, oldest first
        Index("ix_inbox_account_status_received", "account", "status", "received_at", "created"),
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
    account: Mapped[str] = account_column(index=True)


class PaymentAliasRow(Base):
    """Every Stripe id a payment is known by (pi_, ch_, in_, cs_) -> its canonical payment id."""

    __tablename__ = "payment_aliases"
    alias_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    account: Mapped[str] = account_column()


class LinkRow(Base):
    __tablename__ = "links"
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # contact | deal | invoice ...
    local_id: Mapped[str] = mapped_column(String(320), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    remote_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    account: Mapped[str] = account_column()


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
    account: Mapped[str] = account_column()


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
    account: Mapped[str] = account_column(index=True)


class StripeObjectRow(Base):
    __tablename__ = "stripe_objects"
    object_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    account: Mapped[str] = account_column()
