"""The real bridge under uvicorn over a real ledger (SQLite, or PostgreSQL where storage matters)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from stripeflow.bridge.app import create_app
from stripeflow.bridge.inbox_writer import InboxWriter
from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_events import StripeWorld, sign
from tests.conftest import PG_ADMIN
from tests.waiting import wait_for

SECRET = "whsec_test_primary"  # the secret of the `settings` fixture


@dataclass
class Bridge:
    client: httpx.Client
    app: Starlette
    ledger: Ledger

    @property
    def writer(self) -> InboxWriter:
        return self.app.state.writer  # type: ignore[no-any-return]

    def post(self, body: str, signature: str | None = "sign") -> httpx.Response:
        headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
        if signature is not None:  # bytes: a hostile header may hold any octets, as on the wire
            headers["Stripe-Signature"] = (sign(body, SECRET) if signature == "sign" else signature).encode()
        return self.client.post("/webhooks/stripe", content=body.encode("utf-8"), headers=headers)

    def post_event(self, event: dict[str, Any], ensure_ascii: bool = True) -> httpx.Response:
        return self.post(json.dumps(event, ensure_ascii=ensure_ascii))


@contextmanager
def run_bridge(settings: Settings, ledger: Ledger, timeout: float = 10, **bridge: Any) -> Iterator[Bridge]:
    """The bridge with `bridge` overriding BridgeSettings; its client gives up after `timeout` s."""
    settings = settings.model_copy(update={"bridge": settings.bridge.model_copy(update=bridge)})
    app = create_app(settings, ledger, prefect_api_url=None)
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=timeout) as client:
        yield Bridge(client, app, ledger)


@pytest.fixture
def bridge_on(settings: Settings) -> Callable[..., Any]:
    """`with bridge_on(ledger, request_deadline=1) as b:` a bridge over that ledger."""

    def start(ledger: Ledger, timeout: float = 10, **overrides: Any) -> Any:
        return run_bridge(settings, ledger, timeout, **overrides)

    return start


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (tests.conftest's `pg_url`, for any scope)."""
    name = f"stripeflow_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_bridge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bridge]:
    """One bridge for a module's many parametrised cases (a server per case would cost ~0.4 s each);
    each case compares the inbox before and after itself."""
    home = tmp_path_factory.mktemp("bridge")
    settings = Settings(home=home / "home", stripe={"webhook_secrets": [SECRET]})
    with ExitStack() as stack:
        url = stack.enter_context(pg_database()) if request.param == "postgresql" else settings.ledger_url
        ledger = Ledger(url)
        ledger.migrate()
        stack.callback(ledger.dispose)
        yield stack.enter_context(run_bridge(settings, ledger, timeout=5))


@pytest.fixture(scope="module")
def sqlite_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    home = tmp_path_factory.mktemp("bridge")
    settings = Settings(home=home / "home", stripe={"webhook_secrets": [SECRET]})
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    try:
        with run_bridge(settings, ledger, timeout=5) as bridge:
            yield bridge
    finally:
        ledger.dispose()


def stored(ledger: Ledger) -> int:
    return sum(ledger.inbox_counts().values())


def good_event(world: StripeWorld) -> dict[str, Any]:
    _, ch = world.payment_intent(24900, "pln", world.customer("anna@example.pl", "Anna Nowak"))
    return world.event("charge.succeeded", ch)


@contextmanager
def inbox_locked(ledger: Ledger) -> Iterator[None]:
    """Another connection holds the inbox's write lock, so the bridge's writer blocks on it
    (as behind a long migration, a vacuum or a stuck transaction) until the block ends."""
    url = ledger.engine.url
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the one RESERVED lock: every other writer waits
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as pg:
            pg.execute("LOCK TABLE inbox IN EXCLUSIVE MODE")  # reads go on, inserts wait
            try:
                yield
            finally:
                pg.rollback()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    wait_for(check, timeout, what, step=0.02)
