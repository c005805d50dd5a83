"""Bringing the ledger's schema to the newest Alembic revision, one process at a time."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stripeflow.core.ledger.database import LedgerDatabase

# any fixed number shared by every Stripeflow process: the PostgreSQL advisory lock of migrations
MIGRATION_LOCK_KEY = 0x5747_F10E
# the Alembic scripts, beside the ledger package
MIGRATIONS = Path(__file__).parents[1] / "migrations"


class Migrations(LedgerDatabase):
    """The ledger's schema version."""

    def migrate(self) -> None:
        """Bring the schema to the newest version (Alembic); safe to call on every start, from any
        number of processes at once: one migrates while the others wait, then find it done."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
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
