"""Fixtures of the core tests: the ledger on both of its databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stripeflow.core.ledger import Ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = (
        f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    ledger = Ledger(url)
    ledger.migrate()
    yield ledger
    ledger.dispose()
