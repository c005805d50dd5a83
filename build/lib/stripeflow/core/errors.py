"""The one error tree of Stripeflow. Callers catch by category, never by vendor.

StripeflowError
├── ConfigError              a setting is missing or wrong: fix the configuration, do not retry
├── InputError               bad input from outside (webhook, payload); nothing is stored
│   ├── UnknownCurrencyError
│   └── PayloadError         an event we cannot normalise (missing fields, wrong shape)
└── VendorError              an external system answered badly (vendor, status, request id)
    ├── RetriableError       429, 5xx, connection errors: try again after `wait` seconds
    │   └── RateLimitedError
    ├── OutcomeUnknownError  a write without an idempotency key may or may not have happened
    └── PermanentError       400/401/403/404/409/422...: retrying will not help; dead-letter it
        └── AuthError        401/403: credentials are wrong or lack a scope
"""

from __future__ import annotations


class StripeflowError(Exception):
    """Base of every error Stripeflow raises on purpose."""


class ConfigError(StripeflowError):
    """A setting is missing, misspelt or invalid."""


class InputError(StripeflowError):
    """Input from outside is malformed; the caller gets a clear message and nothing is stored."""


class UnknownCurrencyError(InputError):
    def __init__(self, currency: object) -> None:
        super().__init__(f"unknown currency {currency!r}: not a currency Stripe accepts")
        self.currency = currency


class PayloadError(InputError):
    """A Stripe object lacks what we need, or has the wrong shape."""


class VendorError(StripeflowError):
    """An external system refused or failed a call."""

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status: int | None = None,
        request_id: str | None = None,
        wait: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.vendor = vendor
        self.status = status
        self.request_id = request_id
        self.wait = wait
        self.code = code

    def __str__(self) -> str:
        parts = [f"{self.vendor}: {self.message}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        return " | ".join(parts)


class RetriableError(VendorError):
    """Worth another try, after `wait` seconds when the vendor said how long."""


class RateLimitedError(RetriableError):
    """The vendor's rate limit was hit (429, or Bitrix24's 503 QUERY_LIMIT_EXCEEDED)."""


class PermanentError(VendorError):
    """The vendor rejected the request itself; the same request will fail again."""


class AuthError(PermanentError):
    """Credentials are missing, wrong or lack a scope."""


class OutcomeUnknownError(VendorError):
    """A write carrying no idempotency key failed ambiguously; reconciliation settles it."""
