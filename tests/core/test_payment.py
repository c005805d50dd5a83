import functools
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from stripeflow.core.payment import Dispute, Payment, PaymentMethod, PaymentStatus, Refund

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def payment(**kw: object) -> Payment:
    base: dict[str, object] = dict(
        payment_id="pi_1",
        amount=Decimal("249.00"),
        currency="PLN",
        occurred_at=T0,
        status=PaymentStatus.succeeded,
    )
    base.update(kw)
    return Payment.model_validate(base)


def test_refund_before_success_ends_refunded_either_way() -> None:
    success = payment(email="a@b.pl", method=PaymentMethod.blik, event_ids=("evt_1",))
    refund = payment(status=PaymentStatus.refunded, refunded_amount=Decimal("249.00"), event_ids=("evt_2",))
    one = refund.merged_with(success)
    other = success.merged_with(refund)
    assert one.status == other.status == PaymentStatus.refunded
    assert one.refunded_amount == other.refunded_amount == Decimal("249.00")
    assert one.email == other.email == "a@b.pl"  # the late success still fills what the refund lacked
    assert one.method == other.method == PaymentMethod.blik
    assert set(one.event_ids) == set(other.event_ids) == {"evt_1", "evt_2"}


def test_refunded_amount_only_grows() -> None:
    partial = payment(status=PaymentStatus.partially_refunded, refunded_amount=Decimal("50.00"))
    more = payment(status=PaymentStatus.partially_refunded, refunded_amount=Decimal("100.00"))
    assert more.merged_with(partial).refunded_amount == Decimal("100.00")
    assert partial.merged_with(more).refunded_amount == Decimal("100.00")


def test_a_success_after_a_failure_of_the_same_intent_wins() -> None:
    failed = payment(status=PaymentStatus.failed, failure_message="declined")
    assert failed.merged_with(payment()).status == PaymentStatus.succeeded


def test_times_must_be_aware() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        payment(occurred_at=datetime(2026, 11, 1, 12, 0))


def fact(**kw: object) -> Payment:
    base: dict[str, object] = dict(payment_id="pi_1", currency="PLN", occurred_at=T0, lifecycle="pending")
    base.update(kw)
    return Payment.model_validate(base)


FACTS = [
    fact(lifecycle="authorized", amount_requested=Decimal("100.00"), method="card"),
    fact(lifecycle="succeeded", amount_requested=Decimal("100.00"), amount_captured=Decimal("60.00")),
    fact(lifecycle="succeeded", refunds={"re_1": Refund(amount=Decimal("10.00"), status="pending")}),
    fact(lifecycle="succeeded", refunds={"re_1": Refund(amount=Decimal("10.00"), status="succeeded")}),
    fact(lifecycle="succeeded", refunds={"re_2": Refund(amount=Decimal("20.00"), status="failed")}),
    fact(lifecycle="succeeded", charge_refunded=Decimal("30.00"), email="a@b.pl"),
    fact(lifecycle="succeeded", disputes={"dp_1": Dispute(amount=Decimal("60.00"), status="needs_response")}),
    fact(lifecycle="succeeded", disputes={"dp_1": Dispute(amount=Decimal("60.00"), status="won")}),
    fact(lifecycle="canceled", email="other@b.pl", products=("X",)),
    # the payer as two sources saw it: Checkout (business name, NIP) and the charge (another phone)
    fact(lifecycle="succeeded", phone="+48 600 100 200", company="XYZ sp. z o.o.", tax_id="PL5260001246"),
    fact(lifecycle="pending", phone="+48 500 000 000", name="Jan Kowalski"),
]


def test_the_merge_is_a_join_whatever_the_order() -> None:
    rng = random.Random(7)
    results = set()
    for _ in range(200):
        order = rng.sample(FACTS, len(FACTS))
        merged = functools.reduce(Payment.merged_with, order)
        results.add(merged.model_copy(update={"event_ids": ()}).model_dump_json())
    assert len(results) == 1
    final = Payment.model_validate_json(results.pop())
    assert final.status == PaymentStatus.dispute_won and final.amount == Decimal("60.00")
    assert final.refunded_amount == Decimal("10.00")  # re_1 counted once; re_2 failed; 30 - 20 = 10
    assert final.email == "other@b.pl"  # two different values: the same one in any order
    assert final.phone == "+48 600 100 200" and final.name == "Jan Kowalski"
    assert (final.company, final.tax_id) == ("XYZ sp. z o.o.", "PL5260001246")  # filled by the one that knew


def test_a_later_fact_fills_the_payer_fields_an_earlier_one_lacked() -> None:
    bare = fact(lifecycle="succeeded", amount_captured=Decimal("10.00"), email="a@b.pl")
    known = fact(lifecycle="pending", phone="+48221234567", tax_id="PL5260001246")
    for merged in (bare.merged_with(known), known.merged_with(bare)):
        assert (merged.phone, merged.tax_id, merged.company) == ("+48221234567", "PL5260001246", None)
    assert known.merged_with(fact(phone="")).phone == "+48221234567"  # an empty value never erases


def test_a_payment_stored_before_the_payer_fields_still_loads() -> None:
    old = payment(email="a@b.pl").model_dump_json(exclude={"phone", "company", "tax_id"})
    assert '"phone"' not in old
    loaded = Payment.model_validate_json(old)
    assert (loaded.phone, loaded.company, loaded.tax_id) == (None, None, None)
    assert loaded == payment(email="a@b.pl")


@pytest.mark.parametrize(
    ("dimensions", "status", "amount", "refunded"),
    [
        ({"lifecycle": "authorized", "amount_requested": "50.00"}, PaymentStatus.authorized, "50.00", "0"),
        ({"lifecycle": "expired", "amount_requested": "50.00"}, PaymentStatus.expired, "50.00", "0"),
        (
            {"lifecycle": "succeeded", "amount_requested": "50", "amount_captured": "20"},
            PaymentStatus.succeeded,
            "20",
            "0",
        ),
        (
            {"lifecycle": "succeeded", "amount_captured": "50", "charge_refunded": "50"},
            PaymentStatus.refunded,
            "50",
            "50",
        ),
        (
            {
                "lifecycle": "succeeded",
                "amount_captured": "50",
                "charge_refunded": "50",
                "disputes": {"dp": {"amount": "50", "status": "under_review"}},
            },
            PaymentStatus.disputed,
            "50",
            "50",
        ),
        (
            {
                "lifecycle": "succeeded",
                "amount_captured": "50",
                "disputes": {
                    "dp": {"amount": "50", "status": "lost"},
                    "dp2": {"amount": "5", "status": "won"},
                },
            },
            PaymentStatus.dispute_lost,
            "50",
            "0",
        ),
        # only a refund is known: not shown as a payment (and never as "0,00 received")
        (
            {"lifecycle": "succeeded", "refunds": {"re": {"amount": "5", "status": "succeeded"}}},
            PaymentStatus.pending,
            "5",
            "0",
        ),
    ],
)
def test_status_is_derived_from_the_dimensions(
    dimensions: dict[str, object], status: PaymentStatus, amount: str, refunded: str
) -> None:
    p = fact(**dimensions)
    assert (p.status, p.amount, p.refunded_amount) == (status, Decimal(amount), Decimal(refunded))


def test_an_older_row_without_dimensions_keeps_its_status() -> None:
    old = payment(status=PaymentStatus.disputed)
    assert old.status == PaymentStatus.disputed and old.lifecycle == "succeeded"
    again = Payment.model_validate_json(old.model_dump_json())
    assert again == old
