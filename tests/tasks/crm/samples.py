"""Deals as the CRM task builds them, with every catalogue field filled, for the adapters' tests."""

from __future__ import annotations

from decimal import Decimal

from stripeflow.core.deal_fields import deal_values
from stripeflow.core.payment import Payment
from stripeflow.tasks.crm.base import DealInput
from tests.tasks.crm.harness import payment


def rich_payment(n: int = 1) -> Payment:
    """A partly refunded BLIK subscription payment with an invoice and a receipt."""
    data = payment(n).model_dump(exclude={"lifecycle", "refunds", "disputes", "charge_refunded"})
    data.update(
        status="partially_refunded",
        refunded_amount=Decimal("50.00"),
        method="blik",
        kind="subscription",
        invoice_pdf="https://pay.stripe.com/invoice/acct_1/in_1/pdf",
        receipt_url="https://pay.stripe.com/receipts/r_1",
    )
    return Payment(**data)


def deal_of(
    p: Payment,
    language: str = "pl",
    stage: str = "paid",
    title: str | None = None,
    contact_id: str | None = None,
) -> DealInput:
    """A deal of this payment as the CRM task builds it: the catalogue's values in `language`."""
    return DealInput(
        payment_id=p.payment_id,
        title=title or f"{p.product} {p.amount} {p.currency}",
        amount=p.amount,
        refunded_amount=p.refunded_amount,
        currency=p.currency,
        stage=stage,
        contact_id=contact_id,
        payment=p,
        values=deal_values(p, language),
        language=language,
    )


def rich_deal(n: int = 1, language: str = "pl", contact_id: str | None = None) -> DealInput:
    """A deal as the CRM task builds it: the catalogue's values in the account's language."""
    return deal_of(rich_payment(n), language, title=f"Płatność Stripe {n}", contact_id=contact_id)
