"""Every template in both languages: the words, the amounts (with non-breaking spaces), escaping."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from stripeflow.core.labels import stripe_dashboard_url
from stripeflow.tasks.notify.render import Renderer, message_context
from tests.tasks.notify.conftest import make_payment

NBSP = "\u00a0"
PLN_1249 = f"1{NBSP}249,00{NBSP}zł"
EUR_1249 = "€1,249.00"
CUSTOMER_KINDS = ["payment_confirmation", "refund_confirmation", "payment_failed"]
TEAM_KINDS = ["payment", "refund", "failure", "dispute"]


def ctx(language: str, kind: str, **overrides: object) -> dict[str, object]:
    currency = "PLN" if language == "pl" else "EUR"
    payment = make_payment(currency=currency, **overrides)
    return message_context(
        payment, None, kind=kind, language=language, deal_url="https://crm.example/deals/7"
    )


def test_polish_confirmation_reads_as_specified() -> None:
    email = Renderer("pl").customer_email("payment_confirmation", ctx("pl", "payment_confirmation"))
    assert email.subject == "Potwierdzenie płatności – Pakiet Automatyzacji CRM"
    assert (
        f"Dziękujemy za dokonanie płatności! Otrzymaliśmy Twoją wpłatę {PLN_1249} "
        "za „Pakiet Automatyzacji CRM”."
    ) in email.text
    assert "Faktura została wysłana na Twój adres e-mail" in email.text
    assert "https://invoice.stripe.com/i/acct_1/test_1" in email.text
    assert 'href="https://invoice.stripe.com/i/acct_1/test_1"' in email.html
    assert "Dzień dobry Anna Nowak," in email.text


def test_english_confirmation() -> None:
    email = Renderer("en").customer_email("payment_confirmation", ctx("en", "payment_confirmation"))
    assert email.subject == "Payment confirmation – Pakiet Automatyzacji CRM"
    assert (
        f"Thank you for your payment! We have received {EUR_1249} for ‘Pakiet Automatyzacji CRM’."
    ) in email.text
    assert EUR_1249 in email.html


@pytest.mark.parametrize("language, money", [("pl", PLN_1249), ("en", EUR_1249)])
@pytest.mark.parametrize("kind", CUSTOMER_KINDS)
def test_every_customer_template_renders(language: str, money: str, kind: str) -> None:
    email = Renderer(language).customer_email(kind, ctx(language, kind, refunded_amount=Decimal("1249.00")))
    assert email.subject and "\n" not in email.subject
    assert money in email.text and money in email.html
    assert email.html.lstrip().startswith("<!DOCTYPE html>") and f'lang="{language}"' in email.html
    assert "pi_3Q0001" in email.text


@pytest.mark.parametrize("language, money", [("pl", PLN_1249), ("en", EUR_1249)])
@pytest.mark.parametrize("kind", TEAM_KINDS)
def test_every_team_template_renders(language: str, money: str, kind: str) -> None:
    renderer = Renderer(language)
    context = ctx(language, kind, refunded_amount=Decimal("1249.00"))
    email = renderer.team_email(kind, context)
    slack = renderer.team_slack(kind, context)
    telegram = renderer.team_telegram(kind, context)
    stripe = "https://dashboard.stripe.com/test/payments/pi_3Q0001"
    for text in (email.text, email.html, slack.blocks[0]["text"]["text"], telegram):
        assert money in text
        assert stripe in text and "https://crm.example/deals/7" in text
        assert "Anna Nowak" in text
    assert email.subject == slack.text  # one headline everywhere
    assert f'<a href="{stripe}">' in telegram


def test_refund_amounts_are_the_refund_then_the_total() -> None:
    before = make_payment()
    after = make_payment(refunded_amount=Decimal("249.00"), status="partially_refunded")
    context = message_context(after, before, kind="refund_confirmation", language="pl")
    email = Renderer("pl").customer_email("refund_confirmation", context)
    assert f"zwróciliśmy Ci 249,00{NBSP}zł" in email.text
    assert f"Łącznie zwrócono 249,00{NBSP}zł z {PLN_1249}." in email.text
    assert Renderer("pl").headline("refund", context).startswith(f"↩️ Częściowy zwrot: 249,00{NBSP}zł")


def test_failed_notice_links_to_pay_again_where_stripe_gives_one() -> None:
    with_retry = ctx("pl", "payment_failed", status="failed", retry_url="https://checkout.stripe.com/c/pay/1")
    text = Renderer("pl").customer_email("payment_failed", with_retry).text
    assert "https://checkout.stripe.com/c/pay/1" in text
    without = ctx("en", "payment_failed", status="failed", invoice_url=None)
    assert "reply to this message" in Renderer("en").customer_email("payment_failed", without).text


def test_customer_controlled_text_is_escaped_for_each_format() -> None:
    context = ctx("pl", "payment", name="<!channel> & <b>Ewa</b>", products=("A<b>",))
    renderer = Renderer("pl")
    slack = renderer.team_slack("payment", context).blocks[0]["text"]["text"]
    assert "<!channel>" not in slack and "&lt;!channel&gt; &amp; &lt;b&gt;Ewa&lt;/b&gt;" in slack
    assert "<https://dashboard.stripe.com/test/payments/pi_3Q0001|Otwórz w Stripe>" in slack
    telegram = renderer.team_telegram("payment", context)
    assert "&lt;!channel&gt; &amp; &lt;b&gt;Ewa&lt;/b&gt;" in telegram
    html = renderer.customer_email("payment_confirmation", context).html
    assert "<b>Ewa</b>" not in html and "&lt;b&gt;Ewa&lt;/b&gt;" in html
    assert "<b>Ewa</b>" in renderer.customer_email("payment_confirmation", context).text  # plain text as is


def test_a_users_template_overrides_ours_by_name(tmp_path: Path) -> None:
    (tmp_path / "pl").mkdir()
    (tmp_path / "pl" / "customer_payment_confirmation.subject.j2").write_text("Mamy to: {{ amount }}")
    (tmp_path / "pl" / "team_dispute.slack.j2").write_text("SPÓR {{ payment.payment_id }}")
    renderer = Renderer("pl", templates_dir=tmp_path)
    assert renderer.customer_email("payment_confirmation", ctx("pl", "x")).subject == f"Mamy to: {PLN_1249}"
    assert renderer.team_slack("dispute", ctx("pl", "dispute")).blocks[0]["text"]["text"] == "SPÓR pi_3Q0001"
    assert "SPÓR" not in renderer.team_slack("payment", ctx("pl", "payment")).blocks[0]["text"]["text"]


def test_dashboard_links() -> None:
    assert (
        stripe_dashboard_url(make_payment(livemode=True)) == "https://dashboard.stripe.com/payments/pi_3Q0001"
    )
    assert (
        stripe_dashboard_url(make_payment(payment_id="in_1"))
        == "https://dashboard.stripe.com/test/invoices/in_1"
    )
    assert stripe_dashboard_url(make_payment(provider="paypal")) is None
