"""How `sync_crm` cuts a run's payments into slices that go through the CRM side by side."""

from __future__ import annotations

from stripeflow.core.payment import Changes, PaymentChange
from stripeflow.tasks.crm.tasks import slices_by_customer
from tests.tasks.crm.harness import payment


def test_a_customers_payments_share_one_slice_and_slices_keep_their_size() -> None:
    # 250 payments; every tenth belongs to one returning customer, the others to their own
    payments = [payment(n, email="stala@example.pl" if n % 10 == 0 else None) for n in range(1, 251)]
    slices = slices_by_customer(Changes(PaymentChange(p, None) for p in payments), 100)
    owner = {p.payment_id: i for i, part in enumerate(slices) for p in part.payments}
    assert sorted(owner) == sorted(p.payment_id for p in payments)  # each payment once
    assert len({owner[p.payment_id] for p in payments if p.email == "stala@example.pl"}) == 1
    assert [len(part) for part in slices] == [100, 100, 50]


def test_one_customer_with_more_payments_than_a_batch_is_one_slice() -> None:
    payments = [payment(n, email="Hurt@Example.pl" if n <= 150 else None) for n in range(1, 181)]
    slices = slices_by_customer(Changes(PaymentChange(p, None) for p in payments), 100)
    assert [len(part) for part in slices] == [150, 30]
