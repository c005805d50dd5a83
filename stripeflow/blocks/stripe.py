"""The Stripe block: API key and webhook signing secrets, instead of environment variables.

Name it in the configuration (`[stripe] block = "stripe-live"`); without one, STRIPE_API_KEY,
STRIPE_WEBHOOK_SECRET and STRIPE_API_BASE are read. Register the type with
`prefect block register -m stripeflow.blocks.stripe`.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from stripeflow.core.config import Settings, StripeSettings


class StripeCredentials(Block):
    """Stripe API key and webhook signing secrets for Stripeflow.

    Example:
        ```python
        from stripeflow.blocks.stripe import StripeCredentials

        stripe_credentials = StripeCredentials.load("stripe-live")
        ```
    """

    _block_type_name = "Stripe Credentials"
    _block_type_slug = "stripeflow-stripe-credentials"
    _description = "Stripe secret or restricted key and webhook signing secrets for Stripeflow."

    api_key: SecretStr = Field(
        ..., description="Secret (sk_...) or restricted (rk_...) key; read access suffices."
    )
    webhook_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Signing secrets (whsec_...) of the webhook endpoint; several while rotating.",
    )
    api_base: str = Field("https://api.stripe.com", description="API base URL; a fake's URL in tests.")

    def to_settings(self, current: StripeSettings) -> StripeSettings:
        return current.model_copy(
            update={
                "api_key": self.api_key,
                "api_base": self.api_base,
                "webhook_secrets": self.webhook_secrets or current.webhook_secrets,
                "block": None,
            }
        )


def with_stripe_block(settings: Settings) -> Settings:
    """The settings with the named Stripe blocks' values in place, the top-level `[stripe]`'s and
    each account's (loaded once, at start)."""
    if settings.stripe.block:
        settings = settings.model_copy(update={"stripe": _loaded(settings.stripe)})
    if any(a.stripe.block for a in settings.accounts):
        accounts = [
            a.model_copy(update={"stripe": _loaded(a.stripe)}) if a.stripe.block else a
            for a in settings.accounts
        ]
        settings = settings.model_copy(update={"accounts": accounts})
    return settings


def _loaded(stripe: StripeSettings) -> StripeSettings:
    block = StripeCredentials.load(str(stripe.block), _sync=True)  # type: ignore[call-arg]
    assert isinstance(block, StripeCredentials)
    return block.to_settings(stripe)
