"""The state digest behind the CRM deal key and the hand-off key: existing ledgers hold those keys,
so for a fixed payment they must stay exactly what they were before the digest had one home."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from stripeflow.core.payment import (
    Lifecycle,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    as_stored,
    state_digest,
)
from stripeflow.tasks.crm.tasks import deal_state_key
from stripeflow.tasks.notify.handoff import handoff_key

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# a hand-made payment (a status, no dimensions): its stored form serialises a default differently
LEGACY = Payment(
    payment_id="pi_fixed",
    email="Jan@Example.com",
    amount=Decimal("249"),
    currency="PLN",
    occurred_at=WHEN,
    status=PaymentStatus.succeeded,
    products=("Kurs",),
    event_ids=("evt_1",),
)
# a payment as the pipeline builds it, from its dimensions
MERGED = Payment(
    payment_id="pi_full",
    customer_id="cus_1",
    currency="EUR",
    occurred_at=WHEN,
    lifecycle=Lifecycle.succeeded,
    amount_requested=Decimal("100"),
    amount_captured=Decimal("100"),
    refunds={"re_1": Refund(amount=Decimal("25"))},
    event_ids=("evt_2", "evt_3"),
    method=PaymentMethod.card,
)


def test_the_deal_key_is_unchanged_for_a_fixed_payment() -> None:
    assert deal_state_key("hubspot", LEGACY) == "hubspot:deal:pi_fixed:55a4ac6a6f878985"
    assert deal_state_key("hubspot", MERGED) == "hubspot:deal:pi_full:2b75deb8b54dbf4e"


def test_the_handoff_key_is_unchanged_for_a_fixed_payment() -> None:
    assert handoff_key(LEGACY) == "handoff:pi_fixed:b626fdc5e07bea38"
    assert handoff_key(MERGED) == "handoff:pi_full:2b75deb8b54dbf4e"


def test_both_keys_end_in_the_one_digest() -> None:
    for payment in (LEGACY, MERGED):
        assert deal_state_key("zoho", payment) == f"zoho:deal:{payment.payment_id}:{state_digest(payment)}"
        assert handoff_key(payment) == f"handoff:{payment.payment_id}:{state_digest(as_stored(payment))}"


def test_the_digest_ignores_the_event_ids_only() -> None:
    assert state_digest(MERGED) == state_digest(MERGED.model_copy(update={"event_ids": ("evt_9",)}))
    assert state_digest(MERGED) != state_digest(MERGED.model_copy(update={"email": "a@b.c"}))


def test_the_stored_form_of_a_stored_payment_is_itself() -> None:
    assert state_digest(as_stored(MERGED)) == state_digest(MERGED)
    assert state_digest(as_stored(as_stored(LEGACY))) == state_digest(as_stored(LEGACY))


def test_a_payer_field_counts_only_once_known() -> None:
    # the phone, business name and NIP came later: a payment without them keeps its old digest
    assert state_digest(MERGED.model_copy(update={"phone": None})) == state_digest(MERGED)
    for field in ("phone", "company", "tax_id"):
        assert state_digest(MERGED.model_copy(update={field: "x"})) != state_digest(MERGED)
