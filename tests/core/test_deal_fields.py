"""The deal-field catalogue: each field's value for a payment, in Polish and English, the business
date in Warsaw, and the mapping a user's `[crm.fields]` overrides."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from stripeflow.core.deal_fields import BY_NAME, DEAL_FIELDS, deal_values, resolve_mapping
from stripeflow.core.labels import STATUS_LABELS, label, stripe_dashboard_url
from stripeflow.core.payment import Lifecycle, Payment, PaymentKind, PaymentMethod, PaymentStatus, Refund

T = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def pay(**kw: object) -> Payment:
    base: dict[str, object] = dict(
        payment_id="pi_1",
        currency="PLN",
        occurred_at=T,
        lifecycle=Lifecycle.succeeded,
        amount_requested=Decimal("100.00"),
        amount_captured=Decimal("100.00"),
    )
    base.update(kw)
    return Payment.model_validate(base)


@pytest.mark.parametrize(
    ("status", "pl", "en"),
    [
        ("succeeded", "sukces", "success"),
        ("refunded", "zwrot", "refund"),
        ("partially_refunded", "częściowy zwrot", "partial refund"),
        ("failed", "nieudana", "failed"),
        ("disputed", "spór", "dispute"),
    ],
)
def test_status_labels(status: str, pl: str, en: str) -> None:
    assert (label("status", status, "pl"), label("status", status, "en")) == (pl, en)


@pytest.mark.parametrize(
    ("method", "pl", "en"),
    [
        (PaymentMethod.card, "karta", "card"),
        (PaymentMethod.apple_pay, "Apple Pay", "Apple Pay"),
        (PaymentMethod.google_pay, "Google Pay", "Google Pay"),
        (PaymentMethod.link, "Link", "Link"),
        (PaymentMethod.blik, "BLIK", "BLIK"),
        (PaymentMethod.p24, "Przelewy24", "Przelewy24"),
    ],
)
def test_method_labels_on_the_deal(method: PaymentMethod, pl: str, en: str) -> None:
    assert deal_values(pay(method=method), "pl")["method"] == pl
    assert deal_values(pay(method=method), "en")["method"] == en


def test_kind_labels_and_every_status_the_payment_can_take() -> None:
    one, sub = pay(), pay(kind=PaymentKind.subscription)
    assert (deal_values(one)["kind"], deal_values(sub)["kind"]) == ("jednorazowa", "subskrypcja")
    assert (deal_values(one, "en")["kind"], deal_values(sub, "en")["kind"]) == ("one-time", "subscription")
    # every status the payment can take has a Polish word and an English one (not its code)
    assert all(label("status", s.value, "pl") != s.value for s in PaymentStatus)
    assert all(s.value in STATUS_LABELS["en"] for s in PaymentStatus)


def test_a_payment_at_2330_utc_on_new_years_eve_is_paid_on_the_first_of_january() -> None:
    late = pay(occurred_at=datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    assert deal_values(late)["paid_on"] == date(2027, 1, 1)
    assert deal_values(late, timezone="UTC")["paid_on"] == date(2026, 12, 31)
    # the money's own time wins over when the payment was first seen
    paid = late.model_copy(update={"paid_at": datetime(2027, 1, 2, 8, 0, tzinfo=UTC)})
    assert deal_values(paid)["paid_on"] == date(2027, 1, 2)


def test_every_promised_field_has_a_value_and_both_labels() -> None:
    p = pay(
        refunds={"re_1": Refund(amount=Decimal("30.00"))},
        products=("Kurs",),
        invoice_pdf="https://pay.stripe.com/invoice/x/pdf",
        receipt_url="https://pay.stripe.com/receipts/x",
    )
    values = deal_values(p)
    assert list(values) == [f.name for f in DEAL_FIELDS]
    assert (values["amount"], values["refunded_amount"], values["status"]) == (
        Decimal("100.00"),
        Decimal("30.00"),
        "częściowy zwrot",
    )
    assert values["dashboard_url"] == "https://dashboard.stripe.com/test/payments/pi_1"
    assert all(f.label("pl") and f.label("en") and f.label("pl") != f.name for f in DEAL_FIELDS)
    assert BY_NAME["payment_id"].label("pl") == "ID transakcji Stripe"


def test_the_dashboard_link_by_mode_and_object() -> None:
    assert stripe_dashboard_url(pay(livemode=True)) == "https://dashboard.stripe.com/payments/pi_1"
    assert stripe_dashboard_url(pay(payment_id="in_1")) == "https://dashboard.stripe.com/test/invoices/in_1"
    assert stripe_dashboard_url(pay(provider="paypal")) is None


def test_an_override_replaces_adds_or_drops_a_field() -> None:
    defaults = {"amount": "amount", "method": "stripe_method", "receipt_url": "stripe_receipt"}
    mapping = resolve_mapping(defaults, {"method": "my_method", "receipt_url": "", "email": "stripe_email"})
    assert mapping == {"amount": "amount", "method": "my_method", "email": "stripe_email"}
