"""Shared fixtures: a ledger per test, a real Prefect server per session, real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from stripeflow.testing.stripe_events import StripeWorld

PG_ADMIN = os.environ.get("STRIPEFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def world() -> StripeWorld:
    return StripeWorld()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", stripe={"webhook_secrets": ["whsec_test_primary"]})


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    yield ledger
    ledger.dispose()


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder with nothing of this machine's environment that names a real system."""
    from stripeflow.demo import REAL_NAMES, REAL_PREFIXES

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name in REAL_NAMES or name.startswith(REAL_PREFIXES):
            monkeypatch.delenv(name)
    yield tmp_path


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """The ledger on each of its databases: SQLite (WAL) and a fresh PostgreSQL database."""
    url = (
        f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    ledger = Ledger(url)
    ledger.migrate()
    yield ledger
    ledger.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"stripeflow_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect server (SQLite) for the session; its API URL is in force for the tests."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())
