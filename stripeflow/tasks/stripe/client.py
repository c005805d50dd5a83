"""The Stripe API, through stripe-python's `StripeClient`, for enrichment and (later) listing.

Built from settings passed in (never `stripe.api_key` globals). Objects fetched are cached in
the ledger, so a burst of events about one customer costs one API call, not one per event.
Stripe's own errors are translated to our error tree here, in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import stripe

from stripeflow.core.config import StripeSettings
from stripeflow.core.errors import (
    AuthError,
    ConfigError,
    PayloadError,
    PermanentError,
    RateLimitedError,
    RetriableError,
    VendorError,
)
from stripeflow.core.http import Limiter, SlidingWindowLimiter, Unlimited
from stripeflow.core.ledger import Ledger

API_VERSION = "2026-10-28.endive"  # the version stripe-python 16.1 speaks; pin webhooks to it too


def make_client(settings: StripeSettings, stripe_account: str | None = None) -> stripe.StripeClient:
    """A client for the key's own account, or with `stripe_account` for a Connect platform's
    connected account (every call then carries the Stripe-Account header)."""
    if settings.api_key is None:
        raise ConfigError("no Stripe API key: set STRIPE_API_KEY (sk_test_... or rk_...) or name a block")
    return stripe.StripeClient(
        settings.api_key.get_secret_value(),
        stripe_account=stripe_account,
        base_addresses={"api": settings.api_base},
        max_network_retries=2,
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )


def translate(exc: stripe.StripeError) -> VendorError:
    """Stripe's exception classes -> our error tree (the caller decides what to retry)."""
    kw: dict[str, Any] = dict(
        vendor="stripe", status=exc.http_status, request_id=exc.request_id, code=exc.code
    )
    message = exc.user_message or str(exc) or type(exc).__name__
    if isinstance(exc, stripe.RateLimitError):
        return RateLimitedError(message, **kw)
    if isinstance(exc, stripe.APIConnectionError) or (exc.http_status or 0) >= 500:
        return RetriableError(message, **kw)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AuthError(message, **kw)
    return PermanentError(message, **kw)


SERVICES = {
    "charge": lambda c: c.v1.charges,
    "customer": lambda c: c.v1.customers,
    "payment_intent": lambda c: c.v1.payment_intents,
    "invoice": lambda c: c.v1.invoices,
    "checkout.session": lambda c: c.v1.checkout.sessions,
}


# docs.stripe.com/rate-limits: 25 read requests a second in a sandbox, 100 in live mode
READS_PER_SECOND = {"test": 25, "live": 100}


def read_limiter(settings: StripeSettings) -> Limiter:
    """Stripe's read limit for the key's mode: a burst of events needing enrichment waits its
    turn here instead of meeting 429s (which stripe-python does not retry)."""
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    mode = "live" if key.startswith(("sk_live_", "rk_live_")) else "test"
    return SlidingWindowLimiter(settings.requests_per_second or READS_PER_SECOND[mode], 1.0)


class StripeLookup:
    """Implements `normalise.Lookup` over the Stripe API with a ledger-backed cache."""

    def __init__(
        self,
        client: stripe.StripeClient,
        ledger: Ledger | None = None,
        max_age: timedelta = timedelta(minutes=10),
        limiter: Limiter | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.max_age = max_age
        self.limiter: Limiter = limiter or Unlimited()
        self.calls = 0

    def _cached(self, key: str, fetch: Any) -> Any:
        if self.ledger is not None:
            hit = self.ledger.cached_object(key, self.max_age)
            if hit is not None:
                return hit["value"]
        try:
            with self.limiter.slot():
                self.calls += 1
                value = fetch()
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise PayloadError(f"Stripe has no {key.split('|')[0]}: {exc.user_message or exc}") from exc
            raise translate(exc) from exc
        except stripe.StripeError as exc:
            raise translate(exc) from exc
        if self.ledger is not None:
            self.ledger.cache_object(key, {"value": value})
        return value

    def retrieve(self, kind: str, object_id: str, expand: tuple[str, ...] = ()) -> Mapping[str, Any]:
        service = SERVICES[kind](self.client)
        params = {"expand": list(expand)} if expand else None
        return self._cached(  # type: ignore[no-any-return]
            f"{object_id}|{','.join(expand)}",
            lambda: service.retrieve(object_id, params).to_dict(),
        )

    def line_item_names(self, kind: str, object_id: str) -> list[str]:
        def fetch() -> list[str]:
            page = self.client.v1.checkout.sessions.line_items.list(object_id, {"limit": 100})
            return [item.description for item in page.auto_paging_iter() if item.description]

        return self._cached(f"{object_id}|line_items", fetch)  # type: ignore[no-any-return]

    def invoice_payment_intent(self, invoice_id: str) -> str | None:
        def fetch() -> str | None:
            page = self.client.v1.invoice_payments.list({"invoice": invoice_id, "limit": 10})
            for p in page.data:
                payment = p.to_dict().get("payment") or {}
                pi = payment.get("payment_intent")
                if pi:
                    return pi if isinstance(pi, str) else pi.get("id")
            return None

        return self._cached(f"{invoice_id}|payment_intent", fetch)  # type: ignore[no-any-return]


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
