"""Hand-off to accounting or an ERP: one signed JSON webhook per payment change.

The body is the normalised Payment (amounts as strings, times ISO 8601) with an envelope;
the `Stripeflow-Signature: t=<unix>,v1=<hex>` header is HMAC-SHA256 over `f"{t}.{body}"`, as
Stripe signs its own webhooks, so a receiver verifies it the same way (`verify_signature`).
Every delivery carries `Idempotency-Key` (the ledger effect key): a receiver can dedupe, which
makes retrying a 5xx or a lost connection safe, so the HTTP seam retries it like any keyed write.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from stripeflow.core.http import VendorAPI
from stripeflow.core.money import from_minor, to_minor
from stripeflow.core.payment import Payment, PaymentChange, as_stored, state_digest

SIGNATURE_HEADER = "Stripeflow-Signature"
EVENT_TYPE = "payment.changed"


def handoff_key(payment: Payment) -> str:
    return f"handoff:{payment.payment_id}:{state_digest(as_stored(payment))}"


def amount_text(amount: Decimal, currency: str) -> str:
    """`"249.00"`, `"0.00"`, `"500"` (JPY): a string in the currency's own precision."""
    return str(from_minor(to_minor(amount, currency), currency))


def payment_json(payment: Payment) -> dict[str, Any]:
    data = payment.model_dump(mode="json")
    for name in ("amount", "refunded_amount"):
        data[name] = amount_text(getattr(payment, name), payment.currency)
    return data


def handoff_body(change: PaymentChange, key: str, created: int) -> bytes:
    previous = change.previous
    envelope: dict[str, Any] = {
        "id": key,
        "type": EVENT_TYPE,
        "created": created,
        "payment": payment_json(change.payment),
        "previous": None
        if previous is None
        else {
            "status": previous.status.value,
            "amount": amount_text(previous.amount, previous.currency),
            "refunded_amount": amount_text(previous.refunded_amount, previous.currency),
        },
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance: int = 300, now: float | None = None
) -> bool:
    """What a receiver runs: any `v1` matches (constant time) and `t` is recent."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    if not stamps or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v.strip()) for k, v in parts if k.strip() == "v1")


class HandoffAPI(VendorAPI):
    vendor = "handoff"

    def __init__(self, url: str, secret: str, *, clock: Callable[[], float] = time.time, **kw: Any) -> None:
        parts = urlsplit(url)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._secret = secret
        self._clock = clock
        super().__init__(f"{parts.scheme}://{parts.netloc}", **kw)

    def deliver(self, change: PaymentChange, key: str) -> str:
        """POST the change; retried on 429/5xx/connection errors by the seam. Returns the status."""
        created = int(self._clock())
        body = handoff_body(change, key, created)
        response = self.request(
            "POST",
            self._path,
            content=body,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                SIGNATURE_HEADER: sign(self._secret, body, created),
                "Idempotency-Key": key,
            },
        )
        return f"HTTP {response.status_code}"
