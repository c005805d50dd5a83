from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from stripeflow.core.payment import Payment, PaymentMethod, PaymentStatus

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
