"""Contract tests against real CRM accounts: run when their credentials are in the environment.

Each runs `harness.round_trip`, the case the conformance suite also runs against every fake:
one contact, one deal keyed by a fresh test payment id, a stage move and a note found again by
its marker, after `crm setup` (idempotent) and `crm check`. The README says which free account
of each vendor to use and which variables to set.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from stripeflow.core.config import CRMTarget
from stripeflow.tasks.crm import build_crm
from tests.tasks.crm.harness import round_trip

REAL = {
    "hubspot": ["HUBSPOT_TOKEN"],
    "pipedrive": ["PIPEDRIVE_API_TOKEN"],
    "bitrix24": ["BITRIX24_WEBHOOK_URL"],
    "zoho": ["ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"],
}


def _missing(vendor: str) -> bool:
    return not all(os.environ.get(name) for name in REAL[vendor])


@pytest.mark.parametrize(
    "vendor",
    [
        pytest.param(v, marks=pytest.mark.skipif(_missing(v), reason=f"{' / '.join(REAL[v])} not set"))
        for v in REAL
    ],
)
def test_real_account_round_trip(vendor: str, tmp_path: Path) -> None:
    crm = build_crm(CRMTarget(type=vendor), tmp_path)
    try:
        round_trip(crm, uuid.uuid4().hex[:10])
    finally:
        crm.close()
