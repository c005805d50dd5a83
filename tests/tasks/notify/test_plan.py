"""Which messages each change calls for, and their keys."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stripeflow.core.config import NotifySettings
from stripeflow.core.payment import Payment
from stripeflow.tasks.notify.plan import plan_messages
from tests.tasks.notify.conftest import change, make_payment

ROUTES = {
    "payment": ["slack:#payments"],
    "refund": ["slack:#payments", "email:team@example.pl"],
    "failure": ["telegram:-1001"],
    "dispute": ["slack:#payments", "telegram:-1001"],
}


def keys(payment: Payment, previous: Payment | None = None, **settings: object) -> list[str]:
    cfg = NotifySettings.model_validate({"routes": ROUTES, **settings})
    return [p.key for p in plan_messages(change(payment, previous), cfg)]


def test_new_payment() -> None:
    assert keys(make_payment()) == [
        "email:customer:payment_confirmation:pi_3Q0001",
        "slack:#payments:team_payment:pi_3Q0001",
    ]


def test_pending_then_succeeded_is_new_but_succeeded_again_is_not() -> None:
    first = keys(make_payment(), make_payment(status="pending"))[0]
    assert first == "email:customer:payment_confirmation:pi_3Q0001"
    assert keys(make_payment(name="Anna N."), make_payment()) == []


@pytest.mark.parametrize("refunded, suffix", [("249.00", "r24900"), ("1249.00", "r124900")])
def test_each_refund_is_its_own_message(refunded: str, suffix: str) -> None:
    after = make_payment(refunded_amount=Decimal(refunded), status="partially_refunded")
    before = make_payment(refunded_amount=Decimal("100.00"), status="partially_refunded")
    assert keys(after, before) == [
        f"email:customer:refund_confirmation:pi_3Q0001:{suffix}",
        f"slack:#payments:team_refund:pi_3Q0001:{suffix}",
        f"email:team@example.pl:team_refund:pi_3Q0001:{suffix}",
    ]


def test_refund_seen_before_the_success_tells_both() -> None:
    found = keys(make_payment(refunded_amount=Decimal("1249.00"), status="refunded"))
    assert [k.split(":")[2] for k in found] == [
        "payment_confirmation",
        "team_payment",
        "refund_confirmation",
        "team_refund",
        "team_refund",
    ]


def test_failure_and_dispute() -> None:
    assert keys(make_payment(status="failed")) == [
        "email:customer:payment_failed:pi_3Q0001",
        "telegram:-1001:team_failure:pi_3Q0001",
    ]
    assert keys(make_payment(status="failed"), make_payment(status="failed")) == []
    assert keys(make_payment(status="disputed"), make_payment()) == [
        "slack:#payments:team_dispute:pi_3Q0001",
        "telegram:-1001:team_dispute:pi_3Q0001",
    ]


def test_no_customer_mail_without_an_address_or_when_switched_off() -> None:
    assert keys(make_payment(email=None)) == ["slack:#payments:team_payment:pi_3Q0001"]
    assert keys(make_payment(), customer_messages=["refund_confirmation"]) == [
        "slack:#payments:team_payment:pi_3Q0001"
    ]


def test_routes_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown message kind 'payments'"):
        NotifySettings.model_validate({"routes": {"payments": ["slack:#x"]}})
    with pytest.raises(ValueError, match="must start with one of"):
        NotifySettings.model_validate({"routes": {"payment": ["discord:#x"]}})


def test_an_authorisation_says_nothing_until_it_is_captured() -> None:
    assert keys(make_payment(status="authorized")) == []
    assert keys(make_payment(), make_payment(status="authorized"))[:2] == [
        "email:customer:payment_confirmation:pi_3Q0001",
        "slack:#payments:team_payment:pi_3Q0001",
    ]


def test_an_expired_authorisation_tells_the_team_only() -> None:
    assert keys(make_payment(status="expired"), make_payment(status="authorized")) == [
        "telegram:-1001:team_failure:pi_3Q0001:expired"
    ]


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_a_closed_dispute_is_a_team_message_of_its_own(outcome: str) -> None:
    assert keys(make_payment(status=f"dispute_{outcome}"), make_payment(status="disputed")) == [
        f"slack:#payments:team_dispute:pi_3Q0001:{outcome}",
        f"telegram:-1001:team_dispute:pi_3Q0001:{outcome}",
    ]
    assert keys(make_payment(status=f"dispute_{outcome}"), make_payment(status=f"dispute_{outcome}")) == []
