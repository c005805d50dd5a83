"""Stripe events -> `Payment`. Pure functions over the event's JSON, plus a `Lookup` for
the few things a payload may lack (a customer's e-mail, the charge behind a PaymentIntent,
a Checkout Session's line items, the PaymentIntent behind an invoice).

Dispatch goes through one table (`HANDLERS`); event types sharing an object share a handler.
An event type not in the table is not an error: `normalise` returns None and it is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from stripeflow.core import money
from stripeflow.core.errors import PayloadError
from stripeflow.core.payment import Payment, PaymentKind, PaymentMethod, PaymentStatus

Obj = Mapping[str, Any]


class Lookup(Protocol):
    """Fetches Stripe objects when a payload lacks something (cached by the implementation)."""

    def retrieve(self, kind: str, object_id: str, expand: tuple[str, ...] = ()) -> Obj: ...

    def line_item_names(self, kind: str, object_id: str) -> list[str]: ...

    def invoice_payment_intent(self, invoice_id: str) -> str | None: ...


class NoLookup:
    """For payloads that must normalise on their own (tests, the demo without an API)."""

    def retrieve(self, kind: str, object_id: str, expand: tuple[str, ...] = ()) -> Obj:
        raise PayloadError(
            f"{kind} {object_id} is not expanded in the payload and no Stripe API is configured"
        )

    def line_item_names(self, kind: str, object_id: str) -> list[str]:
        return []

    def invoice_payment_intent(self, invoice_id: str) -> str | None:
        return None


WALLETS = {
    "apple_pay": PaymentMethod.apple_pay,
    "google_pay": PaymentMethod.google_pay,
    "link": PaymentMethod.link,
}
METHODS = {m.value: m for m in PaymentMethod}
METHODS.update(
    {"customer_balance": PaymentMethod.bank_transfer, "us_bank_account": PaymentMethod.bank_transfer}
)


def _id(value: Any) -> str | None:
    """An expandable field: the id whether it came as a string or as an expanded object."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value or None


def _ts(value: Any) -> datetime:
    if not isinstance(value, int):
        raise PayloadError(f"expected a Unix timestamp, got {value!r}")
    return datetime.fromtimestamp(value, tz=UTC)


def _require(obj: Obj, *keys: str) -> None:
    missing = [k for k in keys if obj.get(k) is None]
    if missing:
        raise PayloadError(f"{obj.get('object', 'object')} {obj.get('id', '?')} lacks {', '.join(missing)}")


def method_of(details: Obj | None) -> PaymentMethod:
    """`payment_method_details` -> method; wallets come from `card.wallet.type`."""
    if not details:
        return PaymentMethod.other
    kind = details.get("type") or ""
    if kind == "card":
        wallet = ((details.get("card") or {}).get("wallet") or {}).get("type")
        return WALLETS.get(wallet or "", PaymentMethod.card)
    return METHODS.get(kind, PaymentMethod.other)


def _products_from_metadata(obj: Obj) -> list[str]:
    meta = obj.get("metadata") or {}
    for key in ("product", "product_name", "service", "plan"):
        if meta.get(key):
            return [str(meta[key])]
    return []


class _Builder:
    """Collects Payment fields for one event, then validates them into a `Payment`."""

    def __init__(self, event: Obj, lookup: Lookup) -> None:
        self.event = event
        self.lookup = lookup
        self.data: dict[str, Any] = {"event_ids": (event["id"],), "livemode": bool(event.get("livemode"))}

    def charge_details(self, charge: Obj) -> None:
        billing = charge.get("billing_details") or {}
        self.fill(
            email=billing.get("email") or charge.get("receipt_email"),
            name=billing.get("name"),
            receipt_url=charge.get("receipt_url"),
        )
        if charge.get("payment_method_details"):
            self.data.setdefault("method", method_of(charge["payment_method_details"]))
        if charge.get("failure_message"):
            self.fill(failure_message=charge["failure_message"])

    def customer_details(self, customer: Any) -> None:
        """Fill e-mail and name from the customer: expanded in the payload, else fetched."""
        self.fill(customer_id=_id(customer))
        if self.data.get("email") and self.data.get("name"):
            return
        if isinstance(customer, Mapping):
            cust = customer
        elif customer and not self.data.get("email"):
            cust = self.lookup.retrieve("customer", customer)
        else:
            return
        self.fill(email=cust.get("email"), name=cust.get("name"))

    def fill(self, **values: Any) -> None:
        for key, value in values.items():
            if value not in (None, "", [], ()) and not self.data.get(key):
                self.data[key] = value

    def build(self) -> Payment:
        if self.data.get("email"):
            self.data["email"] = str(self.data["email"]).strip().lower()
        try:
            return Payment.model_validate(self.data)
        except ValueError as exc:
            raise PayloadError(f"event {self.event.get('id')}: {exc}") from exc


def _money(b: _Builder, amount: Any, currency: Any, field: str = "amount") -> None:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise PayloadError(
            f"event {b.event.get('id')}: {field} must be an integer in minor units, got {amount!r}"
        )
    code = money.currency_code(currency)  # UnknownCurrencyError names the currency
    b.data[field] = money.from_minor(amount, code)
    b.data["currency"] = code


# --- handlers, one per object -------------------------------------------------------------------

PI_STATUS = {
    "payment_intent.succeeded": PaymentStatus.succeeded,
    "payment_intent.payment_failed": PaymentStatus.failed,
    "payment_intent.canceled": PaymentStatus.canceled,
    "payment_intent.processing": PaymentStatus.pending,
}


def _payment_intent(b: _Builder, pi: Obj) -> None:
    _require(pi, "id", "currency", "created")
    amount = pi.get("amount_received") if b.event["type"] == "payment_intent.succeeded" else None
    _money(b, amount or pi.get("amount"), pi["currency"])
    b.data.update(payment_id=pi["id"], occurred_at=_ts(pi["created"]), status=PI_STATUS[b.event["type"]])
    b.fill(email=pi.get("receipt_email"), products=tuple(_pi_products(pi)))
    error = pi.get("last_payment_error") or {}
    if b.data["status"] == PaymentStatus.failed:
        b.fill(failure_message=error.get("message") or error.get("code") or error.get("decline_code"))
    charge = pi.get("latest_charge")
    if isinstance(charge, str) and (not b.data.get("email") or "method" not in b.data):
        charge = b.lookup.retrieve("charge", charge)
    if isinstance(charge, Mapping):
        b.charge_details(charge)
    if "method" not in b.data and isinstance(error.get("payment_method"), Mapping):
        pm = error["payment_method"]
        b.data["method"] = method_of({"type": pm.get("type"), "card": pm.get("card")})
    b.customer_details(pi.get("customer"))
    if pi.get("invoice") or (pi.get("metadata") or {}).get("subscription"):
        b.data["kind"] = PaymentKind.subscription
        b.fill(invoice_id=_id(pi.get("invoice")))
    if not b.data.get("products") and pi.get("description"):
        b.data["products"] = (pi["description"],)


def _pi_products(pi: Obj) -> list[str]:
    items = ((pi.get("amount_details") or {}).get("line_items") or {}).get("data") or []
    names = [i.get("product_name") or i.get("description") for i in items if isinstance(i, Mapping)]
    return [n for n in names if n] or _products_from_metadata(pi)


def _charge(b: _Builder, charge: Obj) -> None:
    _require(charge, "id", "amount", "currency", "created")
    _money(b, charge["amount"], charge["currency"])
    refunded = charge.get("amount_refunded") or 0
    _money(b, refunded, charge["currency"], "refunded_amount")
    if b.event["type"] == "charge.failed" or charge.get("status") == "failed":
        status = PaymentStatus.failed
    elif refunded and (charge.get("refunded") or refunded >= charge["amount"]):
        status = PaymentStatus.refunded
    elif refunded:
        status = PaymentStatus.partially_refunded
    elif charge.get("status") == "pending":
        status = PaymentStatus.pending
    else:
        status = PaymentStatus.succeeded
    b.data.update(
        payment_id=_id(charge.get("payment_intent")) or charge["id"],
        occurred_at=_ts(charge["created"]),
        status=status,
    )
    b.charge_details(charge)
    b.fill(
        products=tuple(_products_from_metadata(charge))
        or ((charge["description"],) if charge.get("description") else ())
    )
    b.customer_details(charge.get("customer"))


def _dispute(b: _Builder, dispute: Obj) -> None:
    _require(dispute, "id", "charge", "currency", "created")
    charge = dispute["charge"]
    if not isinstance(charge, Mapping):
        charge = b.lookup.retrieve("charge", charge)
    _charge(b, charge)  # the disputed payment is the charge's payment
    b.data["status"] = PaymentStatus.disputed
    b.data["event_ids"] = (b.event["id"],)


def _checkout_session(b: _Builder, session: Obj) -> None:
    _require(session, "id", "currency", "created")
    _money(b, session.get("amount_total"), session["currency"])
    details = session.get("customer_details") or {}
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    pi = _id(session.get("payment_intent"))
    b.data.update(
        payment_id=pi or _id(session.get("invoice")) or session["id"],
        occurred_at=_ts(session["created"]),
        status=PaymentStatus.succeeded if paid else PaymentStatus.pending,
    )
    b.fill(
        email=details.get("email") or session.get("customer_email"),
        name=details.get("name"),
        invoice_id=_id(session.get("invoice")),
    )
    if session.get("mode") == "subscription":
        b.data["kind"] = PaymentKind.subscription
    items = (
        (session.get("line_items") or {}).get("data")
        if isinstance(session.get("line_items"), Mapping)
        else None
    )
    names = [i.get("description") for i in items or [] if i.get("description")]
    b.fill(products=tuple(names or b.lookup.line_item_names("checkout.session", session["id"])))
    b.customer_details(session.get("customer"))


INVOICE_STATUS = {
    "invoice.paid": PaymentStatus.succeeded,
    "invoice.payment_succeeded": PaymentStatus.succeeded,
    "invoice.payment_failed": PaymentStatus.failed,
}


def _invoice(b: _Builder, invoice: Obj) -> None:
    _require(invoice, "id", "currency", "created")
    status = INVOICE_STATUS[b.event["type"]]
    amount = invoice.get("amount_paid") if status == PaymentStatus.succeeded else invoice.get("amount_due")
    _money(b, amount or invoice.get("total") or invoice.get("amount_due"), invoice["currency"])
    b.data.update(
        payment_id=_invoice_payment_intent(b, invoice) or invoice["id"],
        occurred_at=_ts(invoice["created"]),
        status=status,
        invoice_id=invoice["id"],
    )
    lines = (invoice.get("lines") or {}).get("data") or []
    names = tuple(line["description"] for line in lines if line.get("description"))
    b.fill(
        email=invoice.get("customer_email"),
        name=invoice.get("customer_name"),
        products=names,
        invoice_pdf=invoice.get("invoice_pdf"),
        invoice_url=invoice.get("hosted_invoice_url"),
    )
    if status == PaymentStatus.failed:
        b.fill(
            retry_url=invoice.get("hosted_invoice_url"),
            failure_message=(invoice.get("last_finalization_error") or {}).get("message"),
        )
    subscription = ((invoice.get("parent") or {}).get("subscription_details") or {}).get(
        "subscription"
    ) or invoice.get("subscription")
    if subscription or str(invoice.get("billing_reason", "")).startswith("subscription"):
        b.data["kind"] = PaymentKind.subscription
    b.customer_details(invoice.get("customer"))


def _invoice_payment_intent(b: _Builder, invoice: Obj) -> str | None:
    """The PaymentIntent that paid an invoice, so the invoice and its charge are one deal."""
    payments = (
        (invoice.get("payments") or {}).get("data") if isinstance(invoice.get("payments"), Mapping) else None
    )
    for p in payments or []:
        pi = _id((p.get("payment") or {}).get("payment_intent"))
        if pi:
            return pi
    if invoice.get("payment_intent"):  # older API versions
        return _id(invoice["payment_intent"])
    return b.lookup.invoice_payment_intent(invoice["id"])


Handler = Callable[[_Builder, Obj], None]
HANDLERS: dict[str, tuple[str, Handler]] = {
    **{t: ("payment_intent", _payment_intent) for t in PI_STATUS},
    "charge.succeeded": ("charge", _charge),
    "charge.failed": ("charge", _charge),
    "charge.refunded": ("charge", _charge),
    "charge.dispute.created": ("dispute", _dispute),
    "checkout.session.completed": ("checkout.session", _checkout_session),
    "checkout.session.async_payment_succeeded": ("checkout.session", _checkout_session),
    **{t: ("invoice", _invoice) for t in INVOICE_STATUS},
}


def handles(event_type: str) -> bool:
    return event_type in HANDLERS


def normalise(event: Obj, lookup: Lookup | None = None) -> Payment | None:
    """One verified Stripe event -> a `Payment`, or None for a type we do not handle."""
    if not isinstance(event, Mapping) or not isinstance(event.get("type"), str) or not event.get("id"):
        raise PayloadError("not a Stripe event: it needs an id, a type and data.object")
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return None
    expected, fn = handler
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, Mapping):
        raise PayloadError(f"event {event['id']}: data.object is missing")
    if obj.get("object") != expected:
        raise PayloadError(
            f"event {event['id']} ({event['type']}): data.object is a {obj.get('object')!r}, "
            f"expected {expected!r}"
        )
    builder = _Builder(event, lookup or NoLookup())
    fn(builder, obj)
    return builder.build()
