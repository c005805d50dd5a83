"""The Stripe accounts of an installation, each resolved against the shared settings.

A single-account setup has one account, `default`: the top-level `[stripe]`, the shared `[company]`,
`[[crm]]`, routes and language. `[[accounts]]` add more; each takes what it leaves out from the
shared settings. A connected account of a Stripe Connect platform (`connect_account`, `platform`)
is reached with its platform's key and the `Stripe-Account` header, and its events arrive at the
platform's webhook, signed with the platform's secrets, carrying `account`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stripeflow.core.config import (
    DEFAULT_ACCOUNT,
    AccountSettings,
    CompanySettings,
    CRMTarget,
    Settings,
    StripeSettings,
)


@dataclass(frozen=True)
class Account:
    """One account as the system uses it: every setting already fallen back to the shared ones."""

    name: str
    stripe: StripeSettings  # its key and webhook secrets (a connected account: its platform's)
    language: str
    crm: list[CRMTarget]
    routes: dict[str, list[str]] = field(default_factory=dict)
    company: CompanySettings | None = None
    stripe_account: str | None = None  # the Stripe-Account header of a connected account
    platform: str | None = None

    @property
    def webhook_secrets(self) -> list[str]:
        return [s.get_secret_value() for s in self.stripe.webhook_secrets]


def any_webhook_secret(settings: Settings) -> bool:
    """Whether any account can take real webhooks (so the launcher runs no demo)."""
    return any(a.webhook_secrets for a in accounts(settings).values())


def has_credentials(stripe: StripeSettings) -> bool:
    return bool(stripe.api_key or stripe.webhook_secrets or stripe.block)


def accounts(settings: Settings) -> dict[str, Account]:
    """Every account by name, `default` first when there is one: with no `[[accounts]]` always,
    else when the top-level `[stripe]` has a key, webhook secrets or a block."""
    found: dict[str, Account] = {}
    if not settings.accounts or has_credentials(settings.stripe):
        found[DEFAULT_ACCOUNT] = Account(
            name=DEFAULT_ACCOUNT,
            stripe=settings.stripe,
            language=settings.language,
            crm=settings.crm,
            routes=settings.notify.routes,
            company=settings.company,
        )
    configured = {a.name: a for a in settings.accounts}
    for a in settings.accounts:
        found[a.name] = _resolve(a, settings, configured)
    return found


def _resolve(a: AccountSettings, settings: Settings, configured: Mapping[str, AccountSettings]) -> Account:
    stripe = a.stripe
    if a.platform is not None and not has_credentials(stripe):
        platform = configured.get(a.platform)
        base = platform.stripe if platform is not None else settings.stripe
        stripe = base.model_copy(
            update={"requests_per_second": stripe.requests_per_second or base.requests_per_second}
        )
    return Account(
        name=a.name,
        stripe=stripe,
        language=a.language or settings.language,
        crm=a.crm if a.crm is not None else settings.crm,
        routes=a.routes if a.routes is not None else settings.notify.routes,
        company=a.company or settings.company,
        stripe_account=a.connect_account,
        platform=a.platform,
    )


class UnknownAccount(LookupError):
    """A webhook route or a command named an account the configuration does not have."""


def webhook_account(found: Mapping[str, Account], name: str | None) -> Account:
    """The account a webhook route serves: `/webhooks/stripe/<name>`, or for `/webhooks/stripe`
    the `default` account, else the only one. Raises UnknownAccount saying what to do."""
    if name is not None:
        if name not in found:
            raise UnknownAccount(f"no account {name!r}; the accounts are {', '.join(found)}")
        return found[name]
    if DEFAULT_ACCOUNT in found:
        return found[DEFAULT_ACCOUNT]
    if len(found) == 1:
        return next(iter(found.values()))
    raise UnknownAccount(
        "several accounts are configured: post to /webhooks/stripe/<account> (" + ", ".join(found) + ")"
    )


def event_account(found: Mapping[str, Account], route: Account, connect_id: str | None) -> Account:
    """Whose event this is: a Connect event (`account: acct_…`) that arrived at a platform's
    webhook belongs to the connected account configured with that id; any other stays the route's."""
    if connect_id:
        for account in found.values():
            if account.stripe_account == connect_id and account.platform in (route.name, None):
                return account
    return route


def settings_for(settings: Settings, account: Account) -> Settings:
    """The settings as one account's run sees them: its Stripe key, language, CRM targets, routes
    and company in place of the shared ones, so every task reads `settings` as it always did."""
    own_company = account.company is not None and account.company is not settings.company
    # messages are signed by the account's own company; else as the shared settings say
    signature = account.company.name if own_company and account.company else settings.notify.company
    return settings.model_copy(
        update={
            "stripe": account.stripe,
            "language": account.language,
            "crm": account.crm,
            "company": account.company,
            "notify": settings.notify.model_copy(update={"routes": account.routes, "company": signature}),
            "accounts": [],
        }
    )


def target_name(account: str, name: str) -> str:
    """A CRM's name in the ledger (its effect keys, its links): an account's own beside the
    default account's, whose names stay as they were before accounts existed."""
    return name if account == DEFAULT_ACCOUNT else f"{account}/{name}"
