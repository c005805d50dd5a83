"""The CRM tasks' declared Prefect retries go through the same look-first path: a create whose
answer was lost is never created again blindly, whether the adapter looks again at once or
leaves it to the task's retry (a search index that lags). Real task runs on a real Prefect server."""

from __future__ import annotations

import pytest
from prefect import flow

from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import Changes, PaymentChange
from stripeflow.tasks.crm.base import CRM
from stripeflow.tasks.crm.tasks import upsert_contacts, upsert_deals
from tests.tasks.crm.harness import Harness, payment


@pytest.mark.http
@pytest.mark.parametrize("kind", ["contact-without-email", "deal"])
def test_a_lost_create_answer_and_the_tasks_retry_leave_one_record(
    prefect_server: str, harness: Harness, crm: CRM, ledger: Ledger, settings: Settings, kind: str
) -> None:
    p = payment(1)
    if kind == "contact-without-email":
        p = p.model_copy(update={"email": None})
    changes = Changes([PaymentChange(p, None)])
    fast = {"retry_delay_seconds": 0}  # the declared delay, 10 s, stands for the index to catch up

    @flow
    def sync() -> tuple[dict[str, str], dict[str, str]]:
        contacts = upsert_contacts.with_options(**fast)(crm, ledger, changes)
        deals = upsert_deals.with_options(**fast)(crm, ledger, changes, contacts, settings)
        return contacts, deals

    harness.lose_create_answer(kind)
    contacts, deals = sync()
    assert harness.after_write_faults() == 1  # the vendor wrote, and its answer never came
    assert harness.unkeyed_creates_sent(kind) in (1, None)  # looked for, found: never sent again
    assert harness.count_contacts() == 1 and harness.count_deals() == 1 and len(contacts) == 1
    # a rerun finds the same deal, and calls for no contact: the deal was associated when made
    assert sync() == ({}, deals)
    assert harness.count_contacts() == 1 and harness.count_deals() == 1
    assert ledger.get_link("deal", p.payment_id, crm.name) == deals[p.payment_id]
