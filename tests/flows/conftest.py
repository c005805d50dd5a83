"""Flow tests run against a real Prefect server, with the dispatcher executing runs in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from stripeflow.bridge.app import parse_event
from stripeflow.core.config import Settings
from stripeflow.deployments.dispatcher import Dispatcher
from stripeflow.runtime import Runtime, build_runtime, set_runtime
from stripeflow.tasks.crm.local import LocalCRM
from tests.waiting import wait_for  # noqa: F401  (the flow tests import it from here)


@pytest.fixture
def runtime(prefect_server: str, settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings)
    set_runtime(rt)
    yield rt
    set_runtime(None)
    rt.close()


@pytest.fixture
def crm(runtime: Runtime) -> LocalCRM:
    local = runtime.crms[0]
    assert isinstance(local, LocalCRM)
    return local


@pytest.fixture
def dispatcher(runtime: Runtime) -> Dispatcher:
    return Dispatcher(runtime)


def deliver(runtime: Runtime, *events: dict[str, Any]) -> list[str]:
    """Store events in the inbox exactly as the bridge does (after verification)."""
    incoming = [parse_event(e, json.dumps(e)) for e in events]
    runtime.ledger.store_events(incoming)
    return [e.event_id for e in incoming]


def drain(dispatcher: Dispatcher) -> int:
    """Run the dispatcher until the inbox has nothing pending; returns how many runs it took."""
    runs = 0
    while dispatcher.run_once():
        runs += 1
    return runs
