"""The real bridge under uvicorn over a real ledger (SQLite, or PostgreSQL where storage matters)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from stripeflow.bridge.app import create_app
from stripeflow.bridge.inbox_writer import InboxWriter
from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from tests.fakes.server import serve_app
from tests.fakes.stripe_events import StripeWorld, sign

SECRET = "whsec_test_primary"  # the secret of the `settings` fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    ledger = Ledger(url)
    ledger.migrate()
    yield ledger
    ledger.dispose()


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")
