"""Builders of Stripe objects and events over Stripe's own example objects (fixtures3.json).

`fixtures3.json` is Stripe's public OpenAPI fixture file (MIT, stripe/openapi, commit f6c2a48).
Each builder deep-copies the fixture of its resource and sets only what a scenario needs, so
payloads keep Stripe's real shapes. `sign()` uses the stripe library's own signing helper.

    world = StripeWorld()
    cus = world.customer("anna@example.pl", "Anna Nowak")
    pi, ch = world.card_payment(24900, "pln", cus, product="Subskrypcja Pro", wallet="apple_pay")
    body = json.dumps(world.event("payment_intent.succeeded", pi))
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import stripe

API_VERSION = "2026-10-28.endive"
Obj = dict[str, Any]


@cache
def fixtures() -> dict[str, Obj]:
    path = Path(__file__).with_name("stripe_fixtures3.json")
    return json.loads(path.read_text())["resources"]  # type: ignore[no-any-return]


def fixture(resource: str, /, **overrides: Any) -> Obj:
    obj = copy.deepcopy(fixtures()[resource])
    obj.update(overrides)
    return obj


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A valid `Stripe-Signature` header, made by stripe-python itself."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


class StripeWorld:
    """A consistent set of Stripe objects: ids link up, amounts and currencies agree."""

    def __init__(self, livemode: bool = False, start: int | None = None) -> None:
        self.livemode = livemode
        self.objects: dict[str, Obj] = {}
        self.line_items: dict[str, list[Obj]] = {}
        self.invoice_payments: dict[str, list[Obj]] = {}
        self.tax_ids: dict[str, list[Obj]] = {}  # customer id -> its TaxId objects
        self._clock = itertools.count(start or int(time.time()) - 3600)

    def now(self) -> int:
        return next(self._clock)

    def _keep(self, obj: Obj) -> Obj:
        self.objects[obj["id"]] = obj
        return obj

    def customer(
        self,
        email: str | None,
        name: str | None = None,
        *,
        id: str | None = None,
        phone: str | None = None,
        business_name: str | None = None,
        tax_ids: Sequence[tuple[str, str]] = (),
    ) -> Obj:
        """A Customer; `tax_ids` as (type, value), e.g. ("eu_vat", "PL5260001246"). The fake API
        sends them only when asked (`expand[]=tax_ids`), as Stripe does."""
        cus = fixture(
            "customer",
            id=id or new_id("cus"),
            email=email,
            name=name or business_name,  # Stripe sets the name from the business name when not given
            phone=phone,
            created=self.now(),
            livemode=self.livemode,
            currency=None,
            discount=None,
        )
        if business_name:
            cus["business_name"] = business_name
        self.tax_ids[cus["id"]] = [
            fixture(
                "tax_id",
                id=new_id("txi"),
                type=kind,
                value=value,
                country=value[:2] if kind == "eu_vat" else None,
                customer=cus["id"],
                owner={"customer": cus["id"], "type": "customer", "customer_account": None},
                created=cus["created"],
                livemode=self.livemode,
            )
            for kind, value in tax_ids
        ]
        return self._keep(cus)

    def customer_tax_ids(self, customer: Obj | None) -> list[Obj]:
        """A customer's tax ids as invoices and Checkout copy them: `[{type, value}]`."""
        found = self.tax_ids.get((customer or {}).get("id", ""), [])
        return [{"type": t["type"], "value": t["value"]} for t in found]

    def charge(
        self,
        amount: int,
        currency: str,
        customer: Obj | None = None,
        *,
        pi: str | None = None,
        method: str = "card",
        wallet: str | None = None,
        description: str | None = None,
        email: str | None = None,
        status: str = "succeeded",
        failure_message: str | None = None,
    ) -> Obj:
        ch = fixture(
            "charge",
            id=new_id("ch"),
            amount=amount,
            currency=currency,
            amount_captured=amount if status == "succeeded" else 0,
            captured=status == "succeeded",
            paid=status == "succeeded",
            status=status,
            created=self.now(),
            livemode=self.livemode,
            customer=customer["id"] if customer else None,
            payment_intent=pi,
            description=description,
            receipt_email=email,
            failure_message=failure_message,
            failure_code="card_declined" if failure_message else None,
            receipt_url=f"https://pay.stripe.com/receipts/payment/{secrets.token_urlsafe(16)}",
        )
        ch["billing_details"]["email"] = email or (customer or {}).get("email")
        ch["billing_details"]["name"] = (customer or {}).get("name")
        details = ch["payment_method_details"]
        if method == "card":
            details["card"]["wallet"] = {"type": wallet, "dynamic_last4": None} if wallet else None
        else:
            ch["payment_method_details"] = {"type": method, method: {}}
        return self._keep(ch)

    def payment_intent(
        self,
        amount: int,
        currency: str,
        customer: Obj | None = None,
        *,
        status: str = "succeeded",
        method: str = "card",
        wallet: str | None = None,
        product: str | None = None,
        email: str | None = None,
        failure_message: str = "Your card was declined.",
    ) -> tuple[Obj, Obj]:
        """A PaymentIntent and its latest charge (failed when the PI failed)."""
        pi_id = new_id("pi")
        failed = status == "requires_payment_method"
        ch = self.charge(
            amount,
            currency,
            customer,
            pi=pi_id,
            method=method,
            wallet=wallet,
            description=product,
            email=email,
            status="failed" if failed else "succeeded",
            failure_message=failure_message if failed else None,
        )
        pi = fixture(
            "payment_intent",
            id=pi_id,
            amount=amount,
            currency=currency,
            status=status,
            amount_received=0 if failed else amount,
            created=ch["created"],
            livemode=self.livemode,
            customer=customer["id"] if customer else None,
            description=product,
            latest_charge=ch["id"],
            receipt_email=email,
            payment_method_types=[method],
            canceled_at=None,
            client_secret=f"{pi_id}_secret_{secrets.token_hex(8)}",
            last_payment_error={"type": "card_error", "code": "card_declined", "message": failure_message}
            if failed
            else None,
            metadata={"product": product} if product else {},
        )
        return self._keep(pi), ch

    def refund(self, charge: Obj, amount: int | None = None) -> Obj:
        """Refund (part of) a charge; returns the charge as `charge.refunded` carries it."""
        amount = charge["amount"] - charge["amount_refunded"] if amount is None else amount
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        self._keep(
            fixture(
                "refund",
                id=new_id("re"),
                amount=amount,
                charge=charge["id"],
                currency=charge["currency"],
                payment_intent=charge["payment_intent"],
                created=self.now(),
                status="succeeded",
            )
        )
        return copy.deepcopy(charge)

    def dispute(self, charge: Obj, *, status: str = "needs_response") -> Obj:
        """A dispute of a charge, naming the charge and its PaymentIntent as Stripe does (ids)."""
        return self._keep(
            fixture(
                "dispute",
                id=new_id("dp"),
                amount=charge.get("amount_captured") or charge["amount"],
                charge=charge["id"],
                currency=charge["currency"],
                payment_intent=charge["payment_intent"],
                created=self.now(),
                livemode=self.livemode,
                status=status,
            )
        )

    def dispute_status(self, dispute: Obj, status: str) -> Obj:
        """The dispute moved on: `under_review`, then `won` or `lost` (charge.dispute.closed)."""
        dispute.update(status=status)
        return copy.deepcopy(self._keep(dispute))

    def refund_object(self, charge: Obj, amount: int | None = None, *, status: str = "succeeded") -> Obj:
        """A Refund (what refund.created / .updated / .failed carry); the charge's total follows."""
        amount = charge["amount_captured"] - charge["amount_refunded"] if amount is None else amount
        if status not in ("failed", "canceled"):
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        refund = fixture(
            "refund",
            id=new_id("re"),
            amount=amount,
            charge=charge["id"],
            currency=charge["currency"],
            payment_intent=charge["payment_intent"],
            created=self.now(),
            status=status,
        )
        return copy.deepcopy(self._keep(refund))

    def refund_failed(self, charge: Obj, refund: Obj) -> Obj:
        """The bank returned a refund: Stripe marks it failed and the money is the merchant's again."""
        stored = self.objects[refund["id"]]
        if stored["status"] not in ("failed", "canceled"):
            charge["amount_refunded"] -= stored["amount"]
            charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        stored.update(status="failed", failure_reason="lost_or_stolen_card")
        return copy.deepcopy(stored)

    def authorization(
        self, amount: int, currency: str, customer: Obj | None = None, *, product: str | None = None
    ) -> tuple[Obj, Obj]:
        """A PaymentIntent with manual capture and its uncaptured charge (`captured: false`)."""
        pi, ch = self.payment_intent(amount, currency, customer, product=product)
        ch.update(captured=False, amount_captured=0, paid=True)
        pi.update(
            status="requires_capture", amount_received=0, amount_capturable=amount, capture_method="manual"
        )
        return copy.deepcopy(pi), copy.deepcopy(ch)

    def capture(self, pi: Obj, ch: Obj, amount: int | None = None) -> tuple[Obj, Obj]:
        """Capture (part of) an authorisation: the rest is released."""
        pi, ch = self.objects[pi["id"]], self.objects[ch["id"]]
        taken = ch["amount"] if amount is None else amount
        ch.update(captured=True, amount_captured=taken)
        pi.update(status="succeeded", amount_received=taken, amount_capturable=0)
        return copy.deepcopy(pi), copy.deepcopy(ch)

    def expire(self, pi: Obj, ch: Obj) -> tuple[Obj, Obj]:
        """An authorisation not captured in time: the charge is released, the PI canceled."""
        pi, ch = self.objects[pi["id"]], self.objects[ch["id"]]
        ch.update(refunded=True, amount_refunded=ch["amount"])
        pi.update(
            status="canceled", amount_capturable=0, canceled_at=self.now(), cancellation_reason="automatic"
        )
        return copy.deepcopy(pi), copy.deepcopy(ch)

    def invoice_payment(self, invoice: Obj) -> Obj:
        """The InvoicePayment that `invoice_payment.paid` carries (invoice id + payment's PI id)."""
        return copy.deepcopy(self.invoice_payments[invoice["id"]][0])

    def subscription_checkout(
        self, amount: int, currency: str, customer: Obj, *, product: str
    ) -> tuple[Obj, Obj, Obj, Obj]:
        """A subscription bought through Checkout: the session names the invoice (no PI, as
        Stripe sends it in subscription mode), the invoice is paid by a PaymentIntent."""
        pi, ch = self.payment_intent(amount, currency, customer)
        for obj in (pi, ch):
            obj.update(description="Subscription creation", metadata={})
        inv = self.invoice(amount, currency, customer, product=product, pi=pi["id"])
        inv["billing_reason"] = "subscription_create"
        session = self.checkout_session(
            amount, currency, customer["email"], customer.get("name"), products=[product]
        )
        session.update(
            mode="subscription",
            invoice=inv["id"],
            customer=customer["id"],
            subscription=inv["parent"]["subscription_details"]["subscription"],
        )
        return session, inv, pi, ch

    def trial_checkout(self, customer: Obj, currency: str, *, product: str) -> tuple[Obj, Obj]:
        """A subscription with a free trial: a `no_payment_required` session and a $0 invoice."""
        inv = self.invoice(0, currency, customer, product=product, paid=True)
        inv["billing_reason"] = "subscription_create"
        session = self.checkout_session(
            0, currency, customer["email"], customer.get("name"), products=[product]
        )
        session.update(mode="subscription", payment_status="no_payment_required", invoice=inv["id"])
        return session, inv

    def checkout_session(
        self,
        amount: int,
        currency: str,
        email: str,
        name: str | None,
        *,
        products: list[str],
        pi: str | None = None,
        phone: str | None = None,
        business_name: str | None = None,
        tax_ids: Sequence[tuple[str, str]] = (),
    ) -> Obj:
        """A paid Checkout Session; `phone`, `business_name` and `tax_ids` are what the payer typed
        in (phone number and tax id collection), kept in `customer_details`."""
        session = fixture(
            "checkout.session",
            id=new_id("cs_test"),
            amount_total=amount,
            amount_subtotal=amount,
            currency=currency,
            created=self.now(),
            livemode=self.livemode,
            mode="payment",
            payment_status="paid",
            status="complete",
            payment_intent=pi,
            customer=None,
            customer_email=None,
        )
        session["customer_details"].update(
            email=email,
            name=name,
            phone=phone,
            business_name=business_name,
            tax_ids=[{"type": kind, "value": value} for kind, value in tax_ids] or None,
        )
        session["collected_information"]["business_name"] = business_name
        self.line_items[session["id"]] = [
            fixture(
                "item",
                id=new_id("li"),
                description=p,
                amount_total=amount // len(products),
                amount_subtotal=amount // len(products),
                currency=currency,
                quantity=1,
            )
            for p in products
        ]
        return self._keep(session)

    def invoice(
        self,
        amount: int,
        currency: str,
        customer: Obj,
        *,
        product: str,
        paid: bool = True,
        subscription: bool = True,
        pi: str | None = None,
    ) -> Obj:
        inv_id = new_id("in")
        inv = fixture(
            "invoice",
            id=inv_id,
            amount_due=amount,
            amount_paid=amount if paid else 0,
            amount_remaining=0 if paid else amount,
            total=amount,
            subtotal=amount,
            currency=currency,
            created=self.now(),
            livemode=self.livemode,
            customer=customer["id"],
            customer_email=customer.get("email"),
            customer_name=customer.get("name"),
            customer_phone=customer.get("phone"),
            customer_tax_ids=self.customer_tax_ids(customer),
            status="paid" if paid else "open",
            billing_reason="subscription_cycle" if subscription else "manual",
            hosted_invoice_url=f"https://invoice.stripe.com/i/acct_test/{inv_id}",
            invoice_pdf=f"https://pay.stripe.com/invoice/acct_test/{inv_id}/pdf",
            attempted=True,
            attempt_count=1,
            last_finalization_error=None,
            from_invoice=None,
        )
        inv["status_transitions"]["finalized_at"] = inv["created"]
        inv["status_transitions"]["paid_at"] = inv["created"] if paid else None
        inv["parent"] = (
            {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": new_id("sub")},
            }
            if subscription
            else None
        )
        line = inv["lines"]["data"][0]
        line.update(id=new_id("il"), amount=amount, currency=currency, description=product, invoice=inv_id)
        if pi:
            self.invoice_payments[inv_id] = [
                fixture(
                    "invoice_payment",
                    id=new_id("inpay"),
                    invoice=inv_id,
                    amount_paid=amount,
                    currency=currency,
                    amount_requested=amount,
                    created=inv["created"],
                    livemode=self.livemode,
                    status="paid",
                    payment={"type": "payment_intent", "payment_intent": pi},
                    status_transitions={"canceled_at": None, "paid_at": inv["created"]},
                )
            ]
        return self._keep(inv)

    def event(self, type: str, obj: Obj, *, id: str | None = None, created: int | None = None) -> Obj:
        """Wrap an object the way Stripe's webhook does (the `event` fixture's shape)."""
        return fixture(
            "event",
            id=id or new_id("evt"),
            type=type,
            created=created or self.now(),
            livemode=self.livemode,
            api_version=API_VERSION,
            pending_webhooks=1,
            request={"id": new_id("req"), "idempotency_key": None},
            data={"object": copy.deepcopy(obj)},
        )
