"""Prefect blocks for the CRMs' credentials and settings, one class per vendor.

A configured CRM names a block (`[[crm]] type="hubspot" block="hubspot-prod"`); with no block,
`from_env` builds the same block from environment variables. Register the types with
`prefect block register -m stripeflow.blocks.crm`. Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from stripeflow.core.errors import ConfigError


def _need(env: Mapping[str, str], name: str, vendor: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"crm ({vendor}): no block named and {name} is not set in the environment")
    return value


class HubSpotCredentials(Block):
    """A HubSpot private-app token and how hard Stripeflow may call HubSpot.

    Example:
        ```python
        from stripeflow.blocks.crm import HubSpotCredentials

        hubspot = HubSpotCredentials.load("hubspot-prod")
        ```
    """

    _block_type_name = "HubSpot Credentials"
    _block_type_slug = "stripeflow-hubspot-credentials"
    _description = "HubSpot private-app token and rate limit for Stripeflow's CRM sync."

    token: SecretStr = Field(
        ...,
        description="Private-app access token (pat-...), scopes crm.objects.* and "
        "crm.schemas.deals.write for setup.",
    )
    base_url: str = Field("https://api.hubapi.com", description="API base URL; a fake's URL in tests.")
    requests_per_10s: int = Field(
        100,
        ge=1,
        le=190,
        description="Ten-secondly limit of the portal: 100 on Free/Starter, 190 on Pro/Enterprise.",
    )
    searches_per_second: int = Field(4, ge=1, le=5, description="CRM search endpoints' own limit per second.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HubSpotCredentials:
        return cls.model_validate(
            dict(
                token=SecretStr(_need(env, "HUBSPOT_TOKEN", "hubspot")),
                base_url=env.get("HUBSPOT_BASE_URL") or "https://api.hubapi.com",
            )
        )


class PipedriveCredentials(Block):
    """A Pipedrive API token (sent in the `x-api-token` header) and its burst limits.

    Example:
        ```python
        from stripeflow.blocks.crm import PipedriveCredentials

        pipedrive = PipedriveCredentials.load("pipedrive-prod")
        ```
    """

    _block_type_name = "Pipedrive Credentials"
    _block_type_slug = "stripeflow-pipedrive-credentials"
    _description = "Pipedrive API token and burst limits for Stripeflow's CRM sync."

    api_token: SecretStr = Field(
        ..., description="Personal API token (Settings > Personal preferences > API)."
    )
    base_url: str = Field(
        "https://api.pipedrive.com",
        description="Base URL without /v1 or /api/v2 (https://COMPANY.pipedrive.com works too).",
    )
    requests_per_2s: int = Field(20, ge=1, description="Per-user burst limit over a rolling 2-second window.")
    searches_per_2s: int = Field(10, ge=1, description="Search endpoints' own burst limit per 2 seconds.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PipedriveCredentials:
        return cls.model_validate(
            dict(
                api_token=SecretStr(_need(env, "PIPEDRIVE_API_TOKEN", "pipedrive")),
                base_url=env.get("PIPEDRIVE_BASE_URL") or "https://api.pipedrive.com",
            )
        )


class Bitrix24Credentials(Block):
    """A Bitrix24 inbound webhook URL (it holds the secret) and the portal's leaky-bucket limit.

    Example:
        ```python
        from stripeflow.blocks.crm import Bitrix24Credentials

        bitrix = Bitrix24Credentials.load("bitrix24-prod")
        ```
    """

    _block_type_name = "Bitrix24 Credentials"
    _block_type_slug = "stripeflow-bitrix24-credentials"
    _description = "Bitrix24 inbound webhook and rate limit for Stripeflow's CRM sync."

    webhook_url: SecretStr = Field(
        ...,
        description="https://PORTAL/rest/USER_ID/CODE/ with crm scope; "
        "a fake's URL in tests (it is the base URL).",
    )
    burst: int = Field(50, ge=1, description="Leaky bucket size: 50, or 250 on Enterprise.")
    per_second: float = Field(2.0, gt=0, description="Leaky bucket drain per second: 2, or 5 on Enterprise.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Bitrix24Credentials:
        return cls.model_validate(dict(webhook_url=SecretStr(_need(env, "BITRIX24_WEBHOOK_URL", "bitrix24"))))


class ZohoCredentials(Block):
    """A Zoho CRM self-client: client id and secret, a refresh token, and the data centre's URLs.

    Example:
        ```python
        from stripeflow.blocks.crm import ZohoCredentials

        zoho = ZohoCredentials.load("zoho-prod")
        ```
    """

    _block_type_name = "Zoho CRM Credentials"
    _block_type_slug = "stripeflow-zoho-credentials"
    _description = "Zoho CRM OAuth refresh token and data centre for Stripeflow's CRM sync."

    client_id: SecretStr = Field(..., description="Client id from api-console.zoho.* (self client).")
    client_secret: SecretStr = Field(..., description="Client secret of that client.")
    refresh_token: SecretStr = Field(
        ..., description="Refresh token with scopes ZohoCRM.modules.ALL, ZohoCRM.settings.ALL."
    )
    accounts_url: str = Field(
        "https://accounts.zoho.com",
        description="Accounts server of the data centre: "
        ".com, .eu, .in, .com.au, .jp, .com.cn, .sa or accounts.zohocloud.ca.",
    )
    api_domain: str | None = Field(
        None, description="Override of the api_domain the token answer names (leave empty; for tests)."
    )
    concurrency: int = Field(5, ge=1, le=25, description="Concurrent calls allowed: 5 Free ... 25 Ultimate.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ZohoCredentials:
        return cls.model_validate(
            dict(
                client_id=SecretStr(_need(env, "ZOHO_CLIENT_ID", "zoho")),
                client_secret=SecretStr(_need(env, "ZOHO_CLIENT_SECRET", "zoho")),
                refresh_token=SecretStr(_need(env, "ZOHO_REFRESH_TOKEN", "zoho")),
                accounts_url=env.get("ZOHO_ACCOUNTS_URL") or "https://accounts.zoho.com",
                api_domain=env.get("ZOHO_API_DOMAIN") or None,
            )
        )


CRM_BLOCKS: dict[str, type[Block]] = {
    "hubspot": HubSpotCredentials,
    "pipedrive": PipedriveCredentials,
    "bitrix24": Bitrix24Credentials,
    "zoho": ZohoCredentials,
}


def load_crm_block(vendor: str, name: str | None, env: Mapping[str, str]) -> Block:
    """The named block, or (no name) the same block built from the environment."""
    cls = CRM_BLOCKS[vendor]
    if name is None:
        return cls.from_env(env)  # type: ignore[attr-defined,no-any-return]
    try:
        return cast(Block, cls.load(name))  # sync context: `load` returns the block itself
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise ConfigError(f"crm ({vendor}): cannot load block {name!r}: {exc}") from None
