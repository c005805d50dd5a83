"""The payment fields every deal carries by default, in every CRM and in the local one.

One catalogue (`DEAL_FIELDS`) names each field the product promises on a deal, its type and its
labels; `deal_values` computes their values for one payment in the account's language (status,
method and kind as people read them: `sukces`, `karta`, `subskrypcja`). Each adapter declares
where each logical field lives in its CRM (`defaults`: a native field or a custom one its
`setup` creates with these labels), and `[crm.fields]` overrides that per field:

    [crm.fields]
    receipt_url = ""                 # not on the deal
    method = "my_payment_method"     # in a field of the user's own
    email = "stripe_email"           # any Payment field, as it is (codes, not labels)

A key of `[crm.fields]` is a logical field of this catalogue or a `Payment` field; an empty value
drops it. Values are plain Python (Decimal, date, str or None); each adapter types them as its
vendor wants (`mapped_fields` with the adapter's `convert`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from stripeflow.core.labels import label, stripe_dashboard_url
from stripeflow.core.payment import Payment

FieldType = Literal["number", "text", "date", "url"]
Value = Decimal | date | str | None


@dataclass(frozen=True)
class DealField:
    name: str  # the logical name: the key of `[crm.fields]`
    type: FieldType
    label_pl: str
    label_en: str
    value: Callable[[Payment, str, ZoneInfo], Value]  # (payment, language, business time zone)

    def label(self, language: str) -> str:
        return self.label_pl if language == "pl" else self.label_en


def _paid_on(p: Payment, _: str, tz: ZoneInfo) -> date:
    return (p.paid_at or p.occurred_at).astimezone(tz).date()  # the business date, Europe/Warsaw


DEAL_FIELDS: tuple[DealField, ...] = (
    DealField("amount", "number", "Kwota", "Amount", lambda p, _, __: p.amount),
    DealField("currency", "text", "Waluta", "Currency", lambda p, _, __: p.currency),
    DealField("paid_on", "date", "Data płatności", "Payment date", _paid_on),
    DealField(
        "payment_id", "text", "ID transakcji Stripe", "Stripe transaction ID", lambda p, _, __: p.payment_id
    ),
    DealField(
        "status",
        "text",
        "Status płatności",
        "Payment status",
        lambda p, lang, _: label("status", p.status, lang),
    ),
    DealField(
        "refunded_amount", "number", "Kwota zwrotu", "Refunded amount", lambda p, _, __: p.refunded_amount
    ),
    DealField(
        "method",
        "text",
        "Metoda płatności",
        "Payment method",
        lambda p, lang, _: label("method", p.method, lang),
    ),
    DealField(
        "product", "text", "Produkt lub usługa", "Product or service", lambda p, _, __: p.product or None
    ),
    DealField(
        "kind", "text", "Rodzaj płatności", "Payment type", lambda p, lang, _: label("kind", p.kind, lang)
    ),
    DealField("invoice_pdf", "url", "Faktura (PDF)", "Invoice (PDF)", lambda p, _, __: p.invoice_pdf),
    DealField("receipt_url", "url", "Potwierdzenie płatności", "Receipt", lambda p, _, __: p.receipt_url),
    DealField(
        "dashboard_url",
        "url",
        "Płatność w Stripe",
        "Payment in Stripe",
        lambda p, _, __: stripe_dashboard_url(p),
    ),
)
BY_NAME: dict[str, DealField] = {f.name: f for f in DEAL_FIELDS}


def known_field_names() -> set[str]:
    """What a `[crm.fields]` key may name: a catalogue field or any Payment field."""
    return set(BY_NAME) | set(Payment.model_fields) | {"product", "net_amount"}


# the Payment fields a `[crm.fields]` key is likely to mean, named in the error for an unknown key
PAYMENT_FIELDS_NAMED = ("email", "name", "phone", "company", "tax_id", "customer_id", "invoice_url")


def refuse_unknown_fields(fields: Mapping[str, str]) -> None:
    """Refuse a `[crm.fields]` key that is neither a catalogue field nor a Payment field, naming
    it, the closest known name and the catalogue (a typo would otherwise map nothing, silently)."""
    known = known_field_names()
    for name in sorted(set(fields) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown deal field {name!r}{hint}; the deal fields are {', '.join(BY_NAME)}, "
            f"or a Payment field such as {', '.join(PAYMENT_FIELDS_NAMED)}; an empty value drops a field"
        )


def deal_values(payment: Payment, language: str = "pl", timezone: str = "Europe/Warsaw") -> dict[str, Value]:
    """Logical field -> value for one payment: every catalogue field, in `language`."""
    tz = ZoneInfo(timezone)
    return {f.name: f.value(payment, language, tz) for f in DEAL_FIELDS}


def resolve_mapping(defaults: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """Logical field -> CRM field: the adapter's defaults, then the user's `[crm.fields]` (an empty
    value drops a field)."""
    merged = {**defaults, **overrides}
    return {name: crm for name, crm in merged.items() if crm}


def field_value(payment: Payment, values: Mapping[str, Any], name: str) -> Any:
    """A mapped field's value: the catalogue's (labels in the deal's language), else the Payment's own."""
    if name in values:
        return values[name]
    return getattr(payment, name)
