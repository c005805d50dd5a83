"""Every test here that takes `harness` or `crm` runs once per CRM (harness.py lists them);
a test marked `http` only for the CRMs reached over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from stripeflow.tasks.crm.base import CRM
from tests.tasks.crm.harness import HARNESSES, Harness


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_class" in metafunc.fixturenames:
        http = metafunc.definition.get_closest_marker("http") is not None
        classes = [h for h in HARNESSES if h.http or not http]
        metafunc.parametrize("harness_class", classes, ids=[h.name for h in classes])


@pytest.fixture
def harness(harness_class: type[Harness], tmp_path: Path) -> Harness:
    return harness_class(tmp_path)


@pytest.fixture
def crm(harness: Harness) -> CRM:
    return harness.build()
