"""The Stripe fake, served over HTTP, for the tests that reach it with the real client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_api import FakeStripe


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def stripe_url(fake: FakeStripe) -> Iterator[str]:
    with serve_app(fake.app) as url:
        yield url
