"""A ledger written before payments carried the payer's phone, company and tax id: its rows load,
and a later fact fills them in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import update

from stripeflow.core.ledger import Ledger
from stripeflow.core.ledger.schema import PaymentRow
from stripeflow.core.payment import Lifecycle, Payment

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_an_older_row_loads_and_a_later_fact_fills_the_payer(ledger: Ledger) -> None:
    first = Payment(
        payment_id="pi_old",
        ids=("pi_old",),
        currency="PLN",
        occurred_at=T,
        lifecycle=Lifecycle.succeeded,
        amount_requested=Decimal("249.00"),
        amount_captured=Decimal("249.00"),
        email="biuro@xyz.pl",
        event_ids=("evt_1",),
    )
    ledger.record_payments([first])
    with ledger.session() as s:  # as an older version stored it: no payer keys in the JSON at all
        data = s.query(PaymentRow.data).scalar()
        old = {k: v for k, v in json.loads(data).items() if k not in ("phone", "company", "tax_id")}
        s.execute(update(PaymentRow).values(data=json.dumps(old), processed_data=json.dumps(old)))
    later = Payment(
        payment_id="pi_old",
        ids=("pi_old",),
        currency="PLN",
        occurred_at=T,
        lifecycle=Lifecycle.pending,
        phone="+48221234567",
        tax_id="PL5260001246",
        event_ids=("evt_2",),
    )
    (change,) = ledger.record_payments([later])
    assert change.previous is not None and change.previous.phone is None  # the old row loaded
    assert (change.payment.phone, change.payment.tax_id, change.payment.email) == (
        "+48221234567",
        "PL5260001246",
        "biuro@xyz.pl",
    )
    assert change.changed  # the deal and contact are written again with what is new
