"""How a payment's codes read to people, in Polish and English: one table for every sink.

E-mails, team messages and the CRM deals all say `karta`, `zwrot` or `subskrypcja` from here,
so a label changes in one place. `label` falls back to the code itself for a code it does not know.
"""

from __future__ import annotations

from stripeflow.core.payment import Payment

METHOD_LABELS: dict[str, dict[str, str]] = {
    "pl": {
        "card": "karta",
        "apple_pay": "Apple Pay",
        "google_pay": "Google Pay",
        "link": "Link",
        "blik": "BLIK",
        "p24": "Przelewy24",
        "sepa_debit": "polecenie zapłaty SEPA",
        "paypal": "PayPal",
        "bank_transfer": "przelew bankowy",
        "other": "inna",
    },
    "en": {
        "card": "card",
        "apple_pay": "Apple Pay",
        "google_pay": "Google Pay",
        "link": "Link",
        "blik": "BLIK",
        "p24": "Przelewy24",
        "sepa_debit": "SEPA Direct Debit",
        "paypal": "PayPal",
        "bank_transfer": "bank transfer",
        "other": "other",
    },
}

STATUS_LABELS: dict[str, dict[str, str]] = {
    "pl": {
        "pending": "oczekuje",
        "failed": "nieudana",
        "authorized": "autoryzowana",
        "canceled": "anulowana",
        "expired": "wygasła",
        "succeeded": "sukces",
        "partially_refunded": "częściowy zwrot",
        "refunded": "zwrot",
        "disputed": "spór",
        "dispute_won": "spór wygrany",
        "dispute_lost": "spór przegrany",
    },
    "en": {
        "pending": "pending",
        "failed": "failed",
        "authorized": "authorised",
        "canceled": "canceled",
        "expired": "expired",
        "succeeded": "success",
        "partially_refunded": "partial refund",
        "refunded": "refund",
        "disputed": "dispute",
        "dispute_won": "dispute won",
        "dispute_lost": "dispute lost",
    },
}
KIND_LABELS: dict[str, dict[str, str]] = {
    "pl": {"one_time": "jednorazowa", "subscription": "subskrypcja"},
    "en": {"one_time": "one-time", "subscription": "subscription"},
}
TABLES = {"method": METHOD_LABELS, "status": STATUS_LABELS, "kind": KIND_LABELS}


def label(table: str, code: str, language: str) -> str:
    """`label("status", "refunded", "pl")` -> `zwrot`; an unknown code reads as itself."""
    return TABLES[table].get(language, TABLES[table]["en"]).get(code, code)


def stripe_dashboard_url(payment: Payment) -> str | None:
    """`https://dashboard.stripe.com/[test/]payments/<pi>` (invoices for an `in_` id)."""
    if payment.provider != "stripe":
        return None
    mode = "" if payment.livemode else "test/"
    section = "invoices" if payment.payment_id.startswith("in_") else "payments"
    return f"https://dashboard.stripe.com/{mode}{section}/{payment.payment_id}"
