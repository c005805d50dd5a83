"""The built-in local CRM: contacts, deals and notes in a SQLite file, for zero-account use.

It is a real CRM as far as the flow is concerned (the same protocol, idempotent upserts on
the e-mail and on the payment id), so the demo and the tests exercise the same code paths a
vendor CRM does. `stripeflow crm deals` prints what is in it.

Every catalogue field (`core.deal_fields`) is on each deal by default, under its logical name, in
the deal's `fields` JSON; `[crm.fields]` renames one or drops it (an empty value). Contacts keep
the phone, business name and tax id Stripe knows. A crm.db made by an older version gains the
new columns when it is opened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.exc import OperationalError

from stripeflow.core.config import CRMTarget
from stripeflow.core.deal_fields import DEAL_FIELDS, resolve_mapping
from stripeflow.core.ledger import make_engine
from stripeflow.tasks.crm.base import ContactInput, DealInput, NoteInput
from stripeflow.tasks.crm.common import mapped_fields

# every catalogue field on the deal, under its own name
DEFAULT_FIELDS: dict[str, str] = {f.name: f.name for f in DEAL_FIELDS}
CONTACT_FIELDS = ("phone", "company", "tax_id")

metadata = MetaData()
contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), unique=True, nullable=True),
    Column("customer_id", String(255), unique=True, nullable=True),
    Column("name", String(255), nullable=True),
    Column("phone", String(64), nullable=True),
    Column("company", String(255), nullable=True),
    Column("tax_id", String(64), nullable=True),
    Column("updated_at", DateTime(timezone=True)),
)
deals = Table(
    "deals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payment_id", String(255), unique=True, nullable=False),
    Column("title", String(500)),
    Column("amount", String(40)),
    Column("refunded_amount", String(40)),
    Column("currency", String(3)),
    Column("stage", String(64)),
    Column("contact_id", Integer, ForeignKey("contacts.id"), nullable=True),
    Column("fields", Text),
    Column("updated_at", DateTime(timezone=True)),
)
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deal_id", Integer, ForeignKey("deals.id")),
    Column("payment_id", String(255)),
    Column("body", Text),
    Column("marker", String(32), nullable=True, index=True),  # the note's effect key, as an external id
    Column("created_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class DealView:
    id: int
    payment_id: str
    title: str
    amount: str
    refunded_amount: str
    currency: str
    stage: str
    contact_email: str | None
    contact_name: str | None
    notes: int
    fields: dict[str, Any] = field(default_factory=dict)  # CRM field -> value, as stored
    values: dict[str, Any] = field(default_factory=dict)  # catalogue field -> value, by the mapping
    contact_phone: str | None = None
    contact_company: str | None = None
    contact_tax_id: str | None = None
    updated_at: datetime | None = None


class LocalCRM:
    """A CRM in a SQLite file. Thread-safe through SQLite's own locking."""

    batch_size = 500
    parallel = 1  # one writer: SQLite serialises writes anyway

    def __init__(
        self,
        path: str | Path,
        *,
        stages: dict[str, str] | None = None,
        name: str = "local",
        fields: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stages = stages or {}
        self.mapping = resolve_mapping(DEFAULT_FIELDS, fields or {})  # logical field -> stored key
        self.engine = make_engine(f"sqlite:///{self.path}")  # WAL and busy timeout, as the ledger
        metadata.create_all(self.engine)
        self._add_marker_column()
        self._add_contact_columns()

    @classmethod
    def from_target(cls, target: CRMTarget, home: Path) -> LocalCRM:
        return cls(target.options.get("path") or home / "crm.db", stages=target.stages, fields=target.fields)

    # -- the protocol --------------------------------------------------------------------------

    def keys_contact(self, email: str | None) -> bool:
        return False  # a look, then an insert: two writers at once could both insert

    def upsert_contacts(self, items: Sequence[ContactInput]) -> list[str]:
        now = datetime.now(UTC)
        ids = []
        with self.engine.begin() as conn:
            for c in items:
                row = None
                if c.email:
                    row = conn.execute(
                        select(contacts.c.id).where(contacts.c.email == c.email.lower())
                    ).first()
                if row is None and c.customer_id:
                    row = conn.execute(
                        select(contacts.c.id).where(contacts.c.customer_id == c.customer_id)
                    ).first()
                values: dict[str, Any] = {"updated_at": now}
                if c.name:
                    values["name"] = c.name
                for key in CONTACT_FIELDS:  # a value Stripe knows fills in; an unknown one erases nothing
                    if getattr(c, key):
                        values[key] = getattr(c, key)
                if c.email:
                    values["email"] = c.email.lower()
                if row is None:
                    if c.customer_id:
                        values["customer_id"] = c.customer_id
                    ids.append(_new_id(conn.execute(contacts.insert().values(**values))))
                else:
                    if c.customer_id:
                        taken = conn.execute(
                            select(contacts.c.id).where(contacts.c.customer_id == c.customer_id)
                        ).first()
                        if taken is None:
                            values["customer_id"] = c.customer_id
                    conn.execute(contacts.update().where(contacts.c.id == row[0]).values(**values))
                    ids.append(str(row[0]))
        return ids

    def upsert_deals(self, items: Sequence[DealInput]) -> list[str]:
        now = datetime.now(UTC)
        ids = []
        with self.engine.begin() as conn:
            for d in items:
                values = dict(
                    payment_id=d.payment_id,
                    title=d.title,
                    amount=str(d.amount),
                    refunded_amount=str(d.refunded_amount),
                    currency=d.currency,
                    stage=self.stages.get(d.stage, d.stage),
                    contact_id=int(d.contact_id) if d.contact_id else None,
                    fields=json.dumps(self.deal_fields(d), ensure_ascii=False, default=str),
                    updated_at=now,
                )
                stmt = insert(deals).values(**values)
                update = {k: stmt.excluded[k] for k in values if k != "payment_id"}
                if d.contact_id is None:
                    update.pop("contact_id")
                conn.execute(stmt.on_conflict_do_update(index_elements=["payment_id"], set_=update))
                ids.append(
                    str(
                        conn.execute(
                            select(deals.c.id).where(deals.c.payment_id == d.payment_id)
                        ).scalar_one()
                    )
                )
        return ids

    def deal_fields(self, deal: DealInput) -> dict[str, Any]:
        """What the deal's `fields` hold: the mapping over its values (computed here for a deal
        built without them), as JSON values (amounts as strings, dates ISO)."""
        return mapped_fields(deal, self.mapping, _jsonable, deal.catalogue)

    def add_notes(self, items: Sequence[NoteInput]) -> list[str]:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            return [
                _new_id(
                    conn.execute(
                        notes.insert().values(
                            deal_id=int(n.deal_id),
                            payment_id=n.payment_id,
                            body=n.body,
                            marker=n.marker,
                            created_at=now,
                        )
                    )
                )
                for n in items
            ]

    def find_notes(self, items: Sequence[NoteInput]) -> list[str | None]:
        with self.engine.connect() as conn:
            found: list[str | None] = []
            for n in items:
                row = None
                if n.marker:
                    row = conn.execute(
                        select(notes.c.id)
                        .where(notes.c.deal_id == int(n.deal_id), notes.c.marker == n.marker)
                        .order_by(notes.c.id)
                    ).first()
                found.append(str(row[0]) if row else None)
            return found

    def close(self) -> None:
        self.engine.dispose()

    def _add_contact_columns(self) -> None:
        """A crm.db made before contacts kept the payer's phone, company and tax id gains them."""
        have = {c["name"] for c in inspect(self.engine).get_columns("contacts")}
        for column in (c for c in CONTACT_FIELDS if c not in have):
            size = contacts.c[column].type.length  # type: ignore[attr-defined]
            try:
                with self.engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE contacts ADD COLUMN {column} VARCHAR({size})"))
            except OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise

    def _add_marker_column(self) -> None:
        """A crm.db made before notes carried markers gains the column (create_all adds no columns)."""
        if "marker" in {c["name"] for c in inspect(self.engine).get_columns("notes")}:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(text("ALTER TABLE notes ADD COLUMN marker VARCHAR(32)"))
                conn.execute(text("CREATE INDEX IF NOT EXISTS ix_notes_marker ON notes (marker)"))
        except OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise

    # -- reading, for the CLI and the tests ----------------------------------------------------

    def list_deals(self) -> list[DealView]:
        from sqlalchemy import func

        note_count = select(notes.c.deal_id, func.count().label("n")).group_by(notes.c.deal_id).subquery()
        q = (
            select(
                deals,
                contacts.c.email,
                contacts.c.name,
                contacts.c.phone,
                contacts.c.company,
                contacts.c.tax_id,
                note_count.c.n,
            )
            .outerjoin(contacts, deals.c.contact_id == contacts.c.id)
            .outerjoin(note_count, note_count.c.deal_id == deals.c.id)
            .order_by(deals.c.id)
        )
        with self.engine.connect() as conn:
            views = []
            for r in conn.execute(q):
                stored = json.loads(r.fields or "{}")  # a deal from an older version may have none
                views.append(
                    DealView(
                        id=r.id,
                        payment_id=r.payment_id,
                        title=r.title,
                        amount=r.amount,
                        refunded_amount=r.refunded_amount,
                        currency=r.currency,
                        stage=r.stage,
                        contact_email=r.email,
                        contact_name=r.name,
                        notes=r.n or 0,
                        fields=stored,
                        values={k: stored[f] for k, f in self.mapping.items() if f in stored},
                        contact_phone=r.phone,
                        contact_company=r.company,
                        contact_tax_id=r.tax_id,
                        updated_at=r.updated_at,
                    )
                )
            return views

    def list_contacts(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(contacts).order_by(contacts.c.id))]

    def notes_for(self, payment_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(notes.c.body).where(notes.c.payment_id == payment_id).order_by(notes.c.id)
                ).scalars()
            )


def _jsonable(value: Any) -> Any:
    """A field value as JSON keeps it: amounts as exact strings, dates ISO, enums by value."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return str(getattr(value, "value", value))


def _new_id(result: Any) -> str:
    """The id SQLite gave the row just inserted."""
    return str(result.inserted_primary_key[0])
