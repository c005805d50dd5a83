"""Contract tests against real CRM accounts: run when their credentials are in the environment.

Each writes one contact, one deal keyed by a fresh test payment id, a stage move and a note,
and checks the same promises the conformance suite checks against the fakes. Run `stripeflow
crm setup <crm>` against the account first (the test does it too; setup is idempotent).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from stripeflow.core.config import CRMTarget
from stripeflow.tasks.crm import build_crm
from stripeflow.tasks.crm.base import ContactInput, NoteInput
from stripeflow.tasks.crm.common import Manageable
from tests.tasks.crm.harness import deal

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
    assert isinstance(crm, Manageable)
    try:
        crm.setup()
        report = crm.check()
        assert report.passed, report.problems
        run = uuid.uuid4().hex[:10]
        person = ContactInput(
            key=f"stripeflow-{run}@example.com",
            email=f"stripeflow-{run}@example.com",
            name="Stripeflow Contract",
            customer_id=f"cus_contract_{run}",
        )
        [contact_id] = crm.upsert_contacts([person])
        assert crm.upsert_contacts([person]) == [contact_id]
        test_deal = deal(1, stage="new", contact_id=contact_id)
        test_deal = type(test_deal)(**{**test_deal.__dict__, "payment_id": f"pi_contract_{run}"})
        [deal_id] = crm.upsert_deals([test_deal])
        moved = type(test_deal)(**{**test_deal.__dict__, "stage": "paid"})
        assert crm.upsert_deals([moved]) == [deal_id]
        note = NoteInput(
            deal_id=deal_id,
            payment_id=test_deal.payment_id,
            body="Stripeflow contract test",
            key=f"contract:note:{run}",
        )
        [note_id] = crm.add_notes([note])
        assert note_id
        assert crm.find_notes([note]) == [note_id]  # the marker reads back from the real CRM
    finally:
        crm.close()
