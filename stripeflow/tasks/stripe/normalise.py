"""Stripe events -> `Payment` facts. Pure functions over the event's JSON, plus a `Lookup` for
the few things a payload may lack (a customer's e-mail, the charge behind a PaymentIntent,
a Checkout Session's line items, the PaymentIntent behind an invoice).

Each fact names every Stripe id it reveals (`Payment.ids`: PaymentIntent, Charge, Invoice,
Checkout Session), and the ids of one fact belong to one payment; the ledger joins facts that
share an id into one payment (`Ledger.record_payments`). Each fact sets only the dimensions
its event knows (see `core/payment.py`), so facts merge the same way in any order.

Without a Stripe API (`NoLookup`) nothing is fetched: a fact carries what its payload has and
says what it lacked in `Payment.missing`; it is never set aside only for that.

Dispatch goes through one table (`HANDLERS`); event types sharing an object share a handler.
An event type not in the table is not an error: `normalise` returns None and it is skipped.
A document that moved no money ($0 invoice, `no_payment_required` session) is `Skipped`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from stripeflow.core import money
from stripeflow.core.errors import AuthError, PayloadError
from stripeflow.core.payment import (
    Dispute,
    Lifecycle,
    Payment,
    PaymentKind,
    PaymentMethod,
    Refund,
    preferred_id,
)

Obj = Mapping[str, Any]


class Lookup(Protocol):
    """Fetches Stripe objects when a payload lacks something (cached by the implementation)."""

    def retrieve(self, kind: str, object_id: str, expand: tuple[str, ...] = ()) -> Obj: ...

    def line_item_names(self, kind: str, object_id: str) -> list[str]: ...

    def invoice_payment_intent(self, invoice_id: str) -> str | None: ...


class NoLookup:
    """No Stripe API: every fetch answers a bare stub (`{"id", "object"}`), so normalisation
    fills what the payload has and records what it could not fetch."""

    offline = True

    def retrieve(self, kind: str, object_id: str, expand: tuple[str, ...] = ()) -> Obj:
        return {"id": object_id, "object": kind}

    def line_item_names(self, kind: str, object_id: str) -> list[str]:
        return []

    def invoice_payment_intent(self, invoice_id: str) -> str | None:
        return None


@dataclass(frozen=True)
class Skipped:
    """A handled event that is not a payment (a $0 invoice, a session that charged nothing)."""

    reason: str


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
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _ts(value: Any) -> datetime:
    if not isinstance(value, int) or isinstance(value, bool):
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


# Descriptions Stripe writes itself on a subscription's PaymentIntent and charge: not a product.
STRIPE_DESCRIPTIONS = frozenset({"Subscription creation", "Subscription update", "Subscription cycle"})


def _description(obj: Obj) -> tuple[str, ...]:
    text = obj.get("description")
    return (text,) if isinstance(text, str) and text and text not in STRIPE_DESCRIPTIONS else ()


def _products_from_metadata(obj: Obj) -> list[str]:
    meta = obj.get("metadata") or {}
    for key in ("product", "product_name", "service", "plan"):
        if meta.get(key):
            return [str(meta[key])]
    return []


# Tax id types read first when a payer has several: the Polish NIP (as an EU VAT id), then any EU VAT id.
TAX_ID_PREFERENCE = ("eu_vat",)


def tax_id_of(tax_ids: Any) -> str | None:
    """The payer's tax id from Stripe's `[{type, value}]` (Checkout's `customer_details.tax_ids`,
    an invoice's `customer_tax_ids`) or a Customer's expanded `tax_ids` list object."""
    if isinstance(tax_ids, Mapping):
        tax_ids = tax_ids.get("data")
    found = [
        t for t in tax_ids or [] if isinstance(t, Mapping) and isinstance(t.get("value"), str) and t["value"]
    ]
    if not found:
        return None

    def rank(t: Obj) -> tuple[int, bool]:
        kind = str(t.get("type") or "")
        order = TAX_ID_PREFERENCE.index(kind) if kind in TAX_ID_PREFERENCE else len(TAX_ID_PREFERENCE)
        return order, not str(t["value"]).upper().startswith("PL")

    return str(min(found, key=rank)["value"]).strip()


def _is_stub(obj: Obj) -> bool:
    return set(obj) <= {"id", "object"}


class _Builder:
    """Collects Payment fields for one event, then validates them into a `Payment`."""

    def __init__(self, event: Obj, lookup: Lookup) -> None:
        self.event = event
        self.lookup = lookup
        self.ids: list[str] = []
        self.missing: list[str] = []
        self.data: dict[str, Any] = {
            "event_ids": (event["id"],),
            "livemode": bool(event.get("livemode")),
            "lifecycle": Lifecycle.pending,
        }

    @property
    def offline(self) -> bool:
        return bool(getattr(self.lookup, "offline", False))

    def link(self, *ids: Any) -> None:
        """Ids of this one payment (PaymentIntent, Charge, Invoice, Checkout Session)."""
        for value in ids:
            found = _id(value)
            if found and found not in self.ids:
                self.ids.append(found)

    def fetch(self, kind: str, object_id: str, what: str, expand: tuple[str, ...] = ()) -> Obj | None:
        """A Stripe object the payload names but does not carry; None (noted) without an API."""
        obj = self.lookup.retrieve(kind, object_id, expand)
        if _is_stub(obj):
            self.missing.append(f"{kind} {object_id}: {what}")
            return None
        return obj

    def money(self, field: str, amount: Any, currency: Any) -> Decimal:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise PayloadError(
                f"event {self.event.get('id')}: {field} must be an integer in minor units, got {amount!r}"
            )
        code = money.currency_code(currency)  # UnknownCurrencyError names the currency
        self.data["currency"] = code
        return money.from_minor(amount, code)

    def amounts(self, currency: Any, *, requested: Any = None, captured: Any = None) -> None:
        if requested is not None:
            self.data["amount_requested"] = max(
                self.data.get("amount_requested", Decimal(0)), self.money("amount", requested, currency)
            )
        if captured is not None:
            self.data["amount_captured"] = self.money("amount_captured", captured, currency)
        if "currency" not in self.data:
            self.data["currency"] = money.currency_code(currency)

    def lifecycle(self, value: Lifecycle) -> None:
        self.data["lifecycle"] = value

    def charge_details(self, charge: Obj) -> None:
        billing = charge.get("billing_details") or {}
        self.fill(
            email=billing.get("email") or charge.get("receipt_email"),
            name=billing.get("name"),
            phone=billing.get("phone"),
            tax_id=billing.get("tax_id"),
            receipt_url=charge.get("receipt_url"),
        )
        if charge.get("payment_method_details"):
            self.data.setdefault("method", method_of(charge["payment_method_details"]))
        if charge.get("failure_message"):
            self.fill(failure_message=charge["failure_message"])

    def customer_details(self, customer: Any) -> None:
        """Fill e-mail, name, phone, company and tax id from the customer: expanded in the
        payload, else fetched (with its tax ids) when the payload has no e-mail."""
        self.fill(customer_id=_id(customer))
        if isinstance(customer, Mapping):
            cust: Obj | None = customer
        elif isinstance(customer, str) and customer and not self.data.get("email"):
            cust = self.fetch("customer", customer, "e-mail, name, phone and tax id", expand=("tax_ids",))
        else:
            return
        if cust:
            self.fill(
                email=cust.get("email"),
                name=cust.get("name"),
                phone=cust.get("phone"),
                company=cust.get("business_name"),
                tax_id=tax_id_of(cust.get("tax_ids")),
            )

    def fill(self, **values: Any) -> None:
        for key, value in values.items():
            if value not in (None, "", [], ()) and not self.data.get(key):
                self.data[key] = value

    def build(self) -> Payment:
        if self.data.get("email"):
            self.data["email"] = str(self.data["email"]).strip().lower()
        if not self.ids:
            raise PayloadError(f"event {self.event.get('id')}: names no payment")
        self.data["ids"] = tuple(sorted(self.ids))
        self.data["payment_id"] = preferred_id(self.ids)
        self.data["missing"] = tuple(sorted(set(self.missing)))
        self.data.setdefault("occurred_at", _ts(self.event.get("created")))
        try:
            return Payment.model_validate(self.data)
        except ValueError as exc:
            raise PayloadError(f"event {self.event.get('id')}: {exc}") from exc


# --- handlers, one per object -------------------------------------------------------------------

PI_LIFECYCLE = {
    "payment_intent.succeeded": Lifecycle.succeeded,
    "payment_intent.payment_failed": Lifecycle.failed,
    "payment_intent.canceled": Lifecycle.canceled,
    "payment_intent.processing": Lifecycle.pending,
    "payment_intent.amount_capturable_updated": Lifecycle.authorized,
}


def _payment_intent(b: _Builder, pi: Obj) -> Skipped | None:
    _require(pi, "id", "currency", "created")
    life = PI_LIFECYCLE[b.event["type"]]
    b.link(pi["id"], pi.get("latest_charge"))
    b.lifecycle(life)
    b.data["occurred_at"] = _ts(pi["created"])
    if life == Lifecycle.succeeded:
        received = pi.get("amount_received")
        b.amounts(pi["currency"], requested=pi.get("amount"), captured=received or pi.get("amount"))
        b.data["paid_at"] = _ts(b.event.get("created", pi["created"]))
    elif life == Lifecycle.authorized:
        b.amounts(pi["currency"], requested=pi.get("amount_capturable") or pi.get("amount"))
    else:
        b.amounts(pi["currency"], requested=pi.get("amount"))
    b.fill(email=pi.get("receipt_email"), products=tuple(_pi_products(pi)))
    error = pi.get("last_payment_error") or {}
    if life == Lifecycle.failed:
        b.fill(failure_message=error.get("message") or error.get("code") or error.get("decline_code"))
    charge = pi.get("latest_charge")
    if isinstance(charge, str) and (not b.data.get("email") or "method" not in b.data):
        charge = b.fetch("charge", charge, "payment method, receipt and e-mail")
    if isinstance(charge, Mapping):
        b.charge_details(charge)
    if "method" not in b.data and isinstance(error.get("payment_method"), Mapping):
        pm = error["payment_method"]
        b.data["method"] = method_of({"type": pm.get("type"), "card": pm.get("card")})
    types = pi.get("payment_method_types") or []
    if "method" not in b.data and len(types) == 1 and types[0] != "card":
        # only one way it could have been paid (a card might still have been a wallet)
        b.data["method"] = METHODS.get(types[0], PaymentMethod.other)
    b.customer_details(pi.get("customer"))
    if pi.get("invoice") or (pi.get("metadata") or {}).get("subscription"):
        b.data["kind"] = PaymentKind.subscription
        b.link(pi.get("invoice"))
        b.fill(invoice_id=_id(pi.get("invoice")))
    b.fill(products=_description(pi))
    return None


def _pi_products(pi: Obj) -> list[str]:
    items = ((pi.get("amount_details") or {}).get("line_items") or {}).get("data") or []
    names = [i.get("product_name") or i.get("description") for i in items if isinstance(i, Mapping)]
    return [n for n in names if n] or _products_from_metadata(pi)


def _charge_state(b: _Builder, charge: Obj, event_type: str | None) -> None:
    """A charge's amounts and lifecycle: authorised, captured (perhaps partly), failed, expired."""
    currency = charge["currency"]
    captured = charge.get("captured")
    b.amounts(currency, requested=charge["amount"])
    if event_type == "charge.failed" or charge.get("status") == "failed":
        b.lifecycle(Lifecycle.failed)
    elif event_type == "charge.expired" or (captured is False and charge.get("refunded")):
        b.lifecycle(Lifecycle.expired)  # an uncaptured authorisation lapsed or was released
    elif charge.get("status") == "pending":
        b.lifecycle(Lifecycle.pending)
    elif captured is False:
        b.lifecycle(Lifecycle.authorized)
    else:
        b.lifecycle(Lifecycle.succeeded)
        taken = charge.get("amount_captured")
        b.amounts(currency, captured=taken if isinstance(taken, int) and taken > 0 else charge["amount"])
        b.data["charge_refunded"] = b.money("amount_refunded", charge.get("amount_refunded") or 0, currency)
        b.data.setdefault("paid_at", _ts(charge["created"]))
    refunds = charge.get("refunds")
    for r in (refunds.get("data") or []) if isinstance(refunds, Mapping) else []:
        if isinstance(r, Mapping) and r.get("id") and isinstance(r.get("amount"), int):
            _add_refund(b, r)


def _charge(b: _Builder, charge: Obj) -> Skipped | None:
    _require(charge, "id", "amount", "currency", "created")
    b.link(charge["id"], charge.get("payment_intent"))
    b.data["occurred_at"] = _ts(charge["created"])
    _charge_state(b, charge, b.event["type"])
    b.charge_details(charge)
    b.fill(products=tuple(_products_from_metadata(charge)) or _description(charge))
    b.customer_details(charge.get("customer"))
    return None


def _related_charge(b: _Builder, obj: Obj, what: str) -> None:
    """Link a refund's or dispute's charge and PaymentIntent; with an API, take the charge's details."""
    charge = obj.get("charge")
    b.link(charge, obj.get("payment_intent"))
    if isinstance(charge, str):
        charge = b.fetch("charge", charge, what)
    if isinstance(charge, Mapping) and not _is_stub(charge) and charge.get("amount") is not None:
        b.link(charge.get("id"), charge.get("payment_intent"))
        b.fill(occurred_at=_ts(charge["created"]) if isinstance(charge.get("created"), int) else None)
        b.amounts(charge["currency"], requested=charge["amount"])
        if charge.get("captured") is not False and isinstance(charge.get("amount_captured"), int):
            if charge["amount_captured"] > 0:
                b.amounts(charge["currency"], captured=charge["amount_captured"])
        b.charge_details(charge)
        b.fill(products=_description(charge))
        b.customer_details(charge.get("customer"))


def _add_refund(b: _Builder, refund: Obj) -> None:
    status = "failed" if b.event["type"] == "refund.failed" else str(refund.get("status") or "pending")
    amount = b.money("refund amount", refund.get("amount"), refund.get("currency") or b.data["currency"])
    b.data.setdefault("refunds", {})[refund["id"]] = Refund(amount=amount, status=status)


def _refund(b: _Builder, refund: Obj) -> Skipped | None:
    _require(refund, "id", "amount", "currency", "created")
    if not (refund.get("charge") or refund.get("payment_intent")):
        raise PayloadError(f"refund {refund['id']} names neither a charge nor a PaymentIntent")
    b.data["currency"] = money.currency_code(refund["currency"])
    _add_refund(b, refund)
    b.lifecycle(Lifecycle.succeeded)  # only money that was taken can be refunded
    b.data["occurred_at"] = _ts(refund["created"])
    _related_charge(b, refund, "the refunded payment's amount, e-mail and method")
    return None


def _dispute(b: _Builder, dispute: Obj) -> Skipped | None:
    _require(dispute, "id", "charge", "amount", "currency", "created")
    amount = b.money("dispute amount", dispute["amount"], dispute["currency"])
    b.data["disputes"] = {dispute["id"]: Dispute(amount=amount, status=str(dispute.get("status") or ""))}
    b.lifecycle(Lifecycle.succeeded)  # only money that was taken can be disputed
    b.data["occurred_at"] = _ts(dispute["created"])
    b.amounts(dispute["currency"], requested=dispute["amount"])  # at least what is disputed
    _related_charge(b, dispute, "the disputed payment's e-mail and method")
    return None


def _checkout_session(b: _Builder, session: Obj) -> Skipped | None:
    _require(session, "id", "currency", "created")
    status = session.get("payment_status")
    if status == "no_payment_required" or (status == "paid" and session.get("amount_total") == 0):
        return Skipped(
            f"checkout session {session['id']} charged nothing ({status}: a trial or a free order)"
        )
    b.link(session["id"], session.get("payment_intent"), session.get("invoice"))
    invoice = _id(session.get("invoice"))
    if invoice and not session.get("payment_intent"):  # subscription mode: the invoice's payment
        found = b.lookup.invoice_payment_intent(invoice)
        b.link(found)
        if found is None and b.offline:
            b.missing.append(f"invoice {invoice}: the PaymentIntent that paid it")
    b.data["occurred_at"] = _ts(session["created"])
    if b.event["type"] == "checkout.session.async_payment_failed":
        b.lifecycle(Lifecycle.failed)
        b.amounts(session["currency"], requested=session.get("amount_total"))
    elif status == "paid":
        b.lifecycle(Lifecycle.succeeded)
        b.amounts(
            session["currency"], requested=session.get("amount_total"), captured=session.get("amount_total")
        )
        b.data["paid_at"] = _ts(b.event.get("created", session["created"]))
    else:  # unpaid: an asynchronous method (a bank transfer) has not arrived yet
        b.amounts(session["currency"], requested=session.get("amount_total"))
    details = session.get("customer_details") or {}
    collected = session.get("collected_information") or {}
    b.fill(
        email=details.get("email") or session.get("customer_email"),
        name=details.get("name") or details.get("individual_name"),
        phone=details.get("phone"),
        company=details.get("business_name") or collected.get("business_name"),
        tax_id=tax_id_of(details.get("tax_ids")),
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
    if not names and b.offline:
        b.missing.append(f"checkout.session {session['id']}: line items")
    b.customer_details(session.get("customer"))
    return None


INVOICE_LIFECYCLE = {
    "invoice.paid": Lifecycle.succeeded,
    "invoice.payment_succeeded": Lifecycle.succeeded,
    "invoice.payment_failed": Lifecycle.failed,
}


def _invoice(b: _Builder, invoice: Obj) -> Skipped | None:
    _require(invoice, "id", "currency", "created")
    life = INVOICE_LIFECYCLE[b.event["type"]]
    paid, due = invoice.get("amount_paid"), invoice.get("amount_due")
    if (paid if life == Lifecycle.succeeded else due) == 0:
        return Skipped(
            f"invoice {invoice['id']} charged nothing (a trial, a 100% discount or the credit balance)"
        )
    paid_by = _invoice_payment_intent(b, invoice)
    b.link(invoice["id"], paid_by)
    b.lifecycle(life)
    if life == Lifecycle.succeeded:
        b.amounts(invoice["currency"], requested=invoice.get("total") or paid, captured=paid)
        paid_at = (invoice.get("status_transitions") or {}).get("paid_at")
        b.data["paid_at"] = _ts(paid_at if isinstance(paid_at, int) else b.event.get("created"))
    else:
        b.amounts(invoice["currency"], requested=due or invoice.get("total"))
    b.data.update(occurred_at=_ts(invoice["created"]), invoice_id=invoice["id"])
    lines = (invoice.get("lines") or {}).get("data") or []
    names = tuple(line["description"] for line in lines if line.get("description"))
    b.fill(
        email=invoice.get("customer_email"),
        name=invoice.get("customer_name"),
        phone=invoice.get("customer_phone"),
        tax_id=tax_id_of(invoice.get("customer_tax_ids")),
        products=names,
        invoice_pdf=invoice.get("invoice_pdf"),
        invoice_url=invoice.get("hosted_invoice_url"),
    )
    if life == Lifecycle.failed:
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
    if life == Lifecycle.succeeded and paid_by and paid_by.startswith("pi_") and not b.offline:
        # an account that sends only invoice events still gets the method on the deal (one cached read)
        try:
            pi = b.fetch("payment_intent", paid_by, "payment method", expand=("latest_charge",))
        except (PayloadError, AuthError):  # gone, or a key without that right: the deal goes without it
            pi = None
        charge = (pi or {}).get("latest_charge")
        if isinstance(charge, Mapping) and "method" not in b.data:
            b.charge_details(charge)
    return None


def _invoice_payment_intent(b: _Builder, invoice: Obj) -> str | None:
    """The PaymentIntent that paid an invoice, so the invoice and its charge are one deal."""
    payments = (
        (invoice.get("payments") or {}).get("data") if isinstance(invoice.get("payments"), Mapping) else None
    )
    for p in payments or []:
        payment = p.get("payment") or {}
        found = _id(payment.get("payment_intent")) or _id(payment.get("charge"))
        if found:
            return found
    if invoice.get("payment_intent"):  # older API versions
        return _id(invoice["payment_intent"])
    found = b.lookup.invoice_payment_intent(invoice["id"])
    if found is None and b.offline:
        b.missing.append(f"invoice {invoice['id']}: the PaymentIntent that paid it")
    return found


def _invoice_payment(b: _Builder, ip: Obj) -> Skipped | None:
    """`invoice_payment.paid`: the one event that names both an invoice and its PaymentIntent."""
    _require(ip, "id", "invoice", "currency", "created")
    if ip.get("amount_paid") == 0:
        return Skipped(f"invoice payment {ip['id']} moved no money")
    payment = ip.get("payment") or {}
    pays = _id(payment.get("payment_intent")) or _id(payment.get("charge"))
    if pays is None:  # paid out of band: no Stripe payment to join
        return Skipped(f"invoice payment {ip['id']} was paid outside Stripe ({payment.get('type')})")
    b.link(ip["invoice"], pays)
    b.lifecycle(Lifecycle.succeeded)
    amount = ip.get("amount_paid")
    b.amounts(ip["currency"], requested=amount, captured=amount)
    paid_at = (ip.get("status_transitions") or {}).get("paid_at")
    b.data["paid_at"] = _ts(paid_at if isinstance(paid_at, int) else ip["created"])
    b.data.update(occurred_at=_ts(ip["created"]), invoice_id=_id(ip["invoice"]))
    return None


Handler = Callable[[_Builder, Obj], Skipped | None]
HANDLERS: dict[str, tuple[str, Handler]] = {
    **{t: ("payment_intent", _payment_intent) for t in PI_LIFECYCLE},
    "charge.succeeded": ("charge", _charge),
    "charge.captured": ("charge", _charge),
    "charge.expired": ("charge", _charge),
    "charge.failed": ("charge", _charge),
    "charge.refunded": ("charge", _charge),
    "charge.pending": ("charge", _charge),
    "refund.created": ("refund", _refund),
    "refund.updated": ("refund", _refund),
    "refund.failed": ("refund", _refund),
    "charge.refund.updated": ("refund", _refund),
    "charge.dispute.created": ("dispute", _dispute),
    "charge.dispute.updated": ("dispute", _dispute),
    "charge.dispute.closed": ("dispute", _dispute),
    "checkout.session.completed": ("checkout.session", _checkout_session),
    "checkout.session.async_payment_succeeded": ("checkout.session", _checkout_session),
    "checkout.session.async_payment_failed": ("checkout.session", _checkout_session),
    **{t: ("invoice", _invoice) for t in INVOICE_LIFECYCLE},
    "invoice_payment.paid": ("invoice_payment", _invoice_payment),
}


def handles(event_type: str) -> bool:
    return event_type in HANDLERS


def normalise(event: Obj, lookup: Lookup | None = None) -> Payment | Skipped | None:
    """One verified Stripe event -> a `Payment` fact, `Skipped` (a document that moved no
    money), or None for a type we do not handle."""
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
    skipped = fn(builder, obj)
    return skipped if skipped is not None else builder.build()
