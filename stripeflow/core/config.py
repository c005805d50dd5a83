"""Configuration: one typed model, from `stripeflow.toml` (optional) and the environment.

Every section forbids unknown keys, so a typo is an error that names the key rather than a
setting silently ignored. Nothing is read at import time: call `load_settings()`.
Secrets never live in the file: they come from the environment or Prefect blocks.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from stripeflow.core.errors import ConfigError

LOGICAL_STAGES = ("new", "paid", "invoiced", "failed", "refunded", "overdue")
# What people read for each logical stage (DESIGN.md, "Deals and stages"): the local CRM shows
# these, and `stripeflow crm setup` names the stages it creates in a vendor's pipeline with them.
STAGE_NAMES = {
    "pl": {
        "new": "Nowe płatności",
        "paid": "Zrealizowane",
        "invoiced": "Zafakturowane",
        "failed": "Nieudane",
        "refunded": "Zwrócone",
        "overdue": "Zaległe",
    },
    "en": {
        "new": "New payments",
        "paid": "Paid",
        "invoiced": "Invoiced",
        "failed": "Failed",
        "refunded": "Refunded",
        "overdue": "Overdue",
    },
}
DEFAULT_TITLE = "Płatność Stripe – {product}, {amount}"
# The account of a single-account setup (the top-level [stripe]), and of every record a ledger
# held before accounts existed.
DEFAULT_ACCOUNT = "default"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StripeSettings(Section):
    api_key: SecretStr | None = Field(None, description="sk_... (env STRIPE_API_KEY)")
    api_base: str = Field("https://api.stripe.com", description="env STRIPE_API_BASE; a fake's URL in tests")
    webhook_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="whsec_... (env STRIPE_WEBHOOK_SECRET, comma-separated for rotation)",
    )
    tolerance: int = Field(300, description="seconds a signature's timestamp may be old")
    requests_per_second: int | None = Field(
        None,
        gt=0,
        description="most Stripe API reads a second; default Stripe's limit for the key's mode "
        "(25 in a sandbox, 100 live)",
    )
    block: str | None = Field(
        None, description="name of a StripeCredentials block to load instead of the env"
    )


class CRMTarget(Section):
    type: str = Field("local", description="local, hubspot, pipedrive, bitrix24, zoho")
    block: str | None = Field(None, description="Prefect block with the credentials and settings")
    stages: dict[str, str] = Field(default_factory=dict, description="logical stage -> CRM stage id")
    fields: dict[str, str] = Field(
        default_factory=dict, description="deal field (logical or Payment) -> CRM field; empty drops it"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="vendor-specific settings")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(LOGICAL_STAGES))
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(LOGICAL_STAGES)}")
        return value

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        from stripeflow.core.deal_fields import refuse_unknown_fields

        refuse_unknown_fields(value)
        return value


class DealSettings(Section):
    title_template: str = Field(DEFAULT_TITLE, description="{product}, {amount}, {payment_id}, {email}")


class BridgeSettings(Section):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1024 * 1024
    request_deadline: float = Field(
        10.0, gt=0, description="seconds a webhook may wait for its durable write; then 503 with Retry-After"
    )
    writer_stuck_after: float = Field(
        10.0, gt=0, description="/healthz answers 503 once an event has waited this long for the inbox writer"
    )


class DispatcherSettings(Section):
    poll_interval: float = Field(0.2, description="seconds between looks at the inbox")
    batch_size: int = Field(
        1_000,
        ge=1,
        description="most events one flow run drains: a burst becomes a few runs that overlap, "
        "so the next events need not wait for one long run's CRM calls",
    )
    runs: int = Field(
        8,
        ge=1,
        description="flow runs the dispatcher keeps going at once; two never work on the same "
        "payment or customer (leases), and each CRM's limits hold across them",
    )
    lease_seconds: float = Field(
        30,
        gt=0,
        description="a claim's lease; a live run renews it every third of it, so a dead run's events "
        "are claimed again within this",
    )
    max_attempts: int = Field(
        5, ge=1, description="an event claimed more times than this goes to the dead letters"
    )


TEAM_KINDS = ("payment", "refund", "failure", "dispute")
CustomerKind = Literal["payment_confirmation", "refund_confirmation", "payment_failed"]
CUSTOMER_KINDS: tuple[CustomerKind, ...] = ("payment_confirmation", "refund_confirmation", "payment_failed")
CHANNEL_TYPES = ("email", "slack", "slack-webhook", "telegram")


class SMTPSettings(Section):
    host: str | None = Field(None, description="env SMTP_HOST; none: e-mail goes to the local outbox")
    port: int = Field(587, description="env SMTP_PORT: 587 STARTTLS, 465 SSL")
    security: Literal["starttls", "ssl", "none"] = Field("starttls", description="env SMTP_SECURITY")
    username: str | None = Field(None, description="env SMTP_USERNAME (Gmail: the address + an app password)")
    password: SecretStr | None = Field(None, description="env SMTP_PASSWORD")
    timeout: float = Field(30.0, description="seconds to wait for the SMTP server")
    max_sessions: int = Field(
        8,
        ge=1,
        description="SMTP sessions open at once in one process, across its runs: mail providers "
        "limit concurrent connections per account",
    )


class NotifySettings(Section):
    customer_messages: list[CustomerKind] = Field(
        default_factory=lambda: list(CUSTOMER_KINDS), description="e-mails sent to customers; [] for none"
    )
    routes: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            'team message kind (payment, refund, failure, dispute) -> channels: "slack:#payments", '
            '"slack-webhook", "telegram:<chat_id>", "email:team@example.com"'
        ),
    )
    sender: str = Field("Stripeflow <no-reply@localhost>", description="From: of every e-mail")
    reply_to: str | None = Field(None, description="Reply-To: of customer e-mails")
    unsubscribe_mailto: str | None = Field(None, description="List-Unsubscribe mailto (customer mail)")
    unsubscribe_url: str | None = Field(None, description="List-Unsubscribe URL (customer mail)")
    company: str | None = Field(None, description="the name signing customer e-mails")
    timezone: str = Field("Europe/Warsaw", description="time zone of dates in messages")
    templates_dir: Path | None = Field(None, description="templates here override the built-in ones by name")
    outbox: Path | None = Field(None, description="where e-mail goes without SMTP; default <home>/outbox")
    deal_urls: dict[str, str] = Field(default_factory=dict, description="CRM name -> deal URL, {deal_id}")
    smtp: SMTPSettings = Field(default_factory=SMTPSettings)
    slack_token: SecretStr | None = Field(None, description="xoxb-... (env SLACK_BOT_TOKEN)")
    slack_webhook_url: SecretStr | None = Field(None, description="incoming webhook (env SLACK_WEBHOOK_URL)")
    slack_api_base: str = Field("https://slack.com/api", description="a fake's URL in tests")
    telegram_token: SecretStr | None = Field(None, description="bot token (env TELEGRAM_BOT_TOKEN)")
    telegram_api_base: str = Field("https://api.telegram.org", description="a fake's URL in tests")
    block: str | None = Field(None, description="name of a NotifyCredentials block to take secrets from")
    parallel: int = Field(
        4, ge=1, description="messages in flight at once (one SMTP connection each); limits still hold"
    )

    @field_validator("routes")
    @classmethod
    def _known_routes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_routes(value)


def check_routes(value: dict[str, list[str]]) -> dict[str, list[str]]:
    for kind, channels in value.items():
        if kind not in TEAM_KINDS:
            raise ValueError(f"unknown message kind {kind!r}; kinds are {', '.join(TEAM_KINDS)}")
        for channel in channels:
            if channel.split(":", 1)[0] not in CHANNEL_TYPES:
                raise ValueError(f"channel {channel!r} must start with one of {', '.join(CHANNEL_TYPES)}")
    return value


class HandoffSettings(Section):
    url: str | None = Field(None, description="env STRIPEFLOW_HANDOFF_URL; none: no hand-off")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key (env STRIPEFLOW_HANDOFF_SECRET)")
    timeout: float = Field(30.0, description="seconds to wait for the receiver")
    block: str | None = Field(None, description="name of a HandoffCredentials block to take the secret from")
    parallel: int = Field(4, ge=1, description="hand-offs in flight at once")


ACCOUNT_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"  # it is in URLs, env names and the ledger
SERIES_FIELDS = ("number", "month", "year")


class CompanySettings(Section):
    """The seller an account's money belongs to: what its invoices and messages name."""

    name: str = Field(min_length=1, description="the seller's legal name, as on its invoices")
    nip: str | None = Field(None, description="Polish tax id (NIP), checked; kept as its 10 digits")
    address: str | None = Field(None, description="street and number")
    postal_code: str | None = Field(None, description="NN-NNN in Poland")
    city: str | None = None
    country: str = Field("PL", pattern=r"^[A-Z]{2}$", description="ISO 3166 code")
    bank_account: str | None = Field(
        None, description="IBAN, checked (a Polish 26-digit account number gets PL in front)"
    )
    invoice_series: str = Field(
        "FV/{number}/{month}/{year}", description="invoice numbers: {number}, {month}, {year}"
    )

    @field_validator("nip")
    @classmethod
    def _valid_nip(cls, value: str | None) -> str | None:
        from stdnum.exceptions import ValidationError as NumberError
        from stdnum.pl import nip

        if value is None:
            return None
        try:
            return str(nip.validate(value.removeprefix("PL").removeprefix("pl")))
        except NumberError as exc:
            raise ValueError(f"{value!r} is not a valid NIP ({exc})") from None

    @field_validator("bank_account")
    @classmethod
    def _valid_iban(cls, value: str | None) -> str | None:
        from stdnum import iban
        from stdnum.exceptions import ValidationError as NumberError

        if value is None:
            return None
        compact = "".join(value.split()).upper()
        if compact.isdigit() and len(compact) == 26:
            compact = "PL" + compact  # a Polish NRB is the IBAN without its country code
        try:
            return str(iban.validate(compact))
        except NumberError as exc:
            raise ValueError(f"{value!r} is not a valid IBAN ({exc})") from None

    @field_validator("invoice_series")
    @classmethod
    def _valid_series(cls, value: str) -> str:
        import string

        names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        if "number" not in names or names - set(SERIES_FIELDS):
            raise ValueError(
                f"{value!r}: an invoice series needs {{number}} and may use only "
                + ", ".join("{" + f + "}" for f in SERIES_FIELDS)
            )
        return value


class AccountSettings(Section):
    """One Stripe account of the installation; what it leaves out, it takes from the shared settings."""

    name: str = Field(pattern=ACCOUNT_NAME, description="in its webhook URL /webhooks/stripe/<name>")
    stripe: StripeSettings = Field(
        default_factory=StripeSettings,
        description="its key and webhook secrets (env STRIPE_API_KEY_<NAME>, STRIPE_WEBHOOK_SECRET_<NAME>)",
    )
    connect_account: str | None = Field(
        None,
        pattern=r"^acct_[A-Za-z0-9]+$",
        description="a Connect platform's connected account: events that carry this `account` are "
        "this account's, and API calls for it send the Stripe-Account header",
    )
    platform: str | None = Field(
        None, description="for a connected account: the account whose key and webhook secrets serve it"
    )
    company: CompanySettings | None = Field(None, description="default: the shared [company]")
    language: Literal["pl", "en"] | None = Field(None, description="default: the shared language")
    crm: list[CRMTarget] | None = Field(None, description="default: the shared [[crm]]")
    routes: dict[str, list[str]] | None = Field(None, description="team messages; default: [notify] routes")

    @field_validator("routes")
    @classmethod
    def _known_routes(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        return None if value is None else check_routes(value)


class Settings(Section):
    home: Path = Field(Path(".stripeflow"), description="where local state lives (ledger, local CRM, outbox)")
    database_url: str | None = Field(None, description="env DATABASE_URL; default SQLite in `home`")
    language: Literal["pl", "en"] = "pl"
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    crm: list[CRMTarget] = Field(default_factory=lambda: [CRMTarget()])
    deals: DealSettings = Field(default_factory=DealSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    dispatcher: DispatcherSettings = Field(default_factory=DispatcherSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    handoff: HandoffSettings = Field(default_factory=HandoffSettings)
    company: CompanySettings | None = Field(None, description="the seller, for every account without its own")
    accounts: list[AccountSettings] = Field(
        default_factory=list,
        description="several Stripe accounts; the top-level [stripe] is the account named default",
    )

    @model_validator(mode="after")
    def _accounts_agree(self) -> Settings:
        names = [a.name for a in self.accounts]
        for name in sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"accounts: the name {name!r} is used twice")
        if DEFAULT_ACCOUNT in names:
            raise ValueError(
                f"accounts: {DEFAULT_ACCOUNT!r} is the top-level [stripe]; name this one otherwise"
            )
        known = {*names, DEFAULT_ACCOUNT}
        connected = [a.connect_account for a in self.accounts if a.connect_account]
        for acct in sorted({c for c in connected if connected.count(c) > 1}):
            raise ValueError(f"accounts: connect_account {acct!r} belongs to two accounts")
        for a in self.accounts:
            if a.platform is not None and a.platform not in known:
                raise ValueError(f"accounts: {a.name}.platform {a.platform!r} is not an account")
            if a.platform is not None and not a.connect_account:
                raise ValueError(f"accounts: {a.name} has a platform but no connect_account")
            if a.platform == a.name:
                raise ValueError(f"accounts: {a.name} cannot be its own platform")
        return self

    @property
    def ledger_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'ledger.db'}"


ENV_MAP: dict[str, tuple[str, ...]] = {
    "STRIPEFLOW_HOME": ("home",),
    "DATABASE_URL": ("database_url",),
    "STRIPEFLOW_LANGUAGE": ("language",),
    "STRIPE_API_KEY": ("stripe", "api_key"),
    "STRIPE_API_BASE": ("stripe", "api_base"),
    "STRIPE_WEBHOOK_SECRET": ("stripe", "webhook_secrets"),
    "SMTP_HOST": ("notify", "smtp", "host"),
    "SMTP_PORT": ("notify", "smtp", "port"),
    "SMTP_SECURITY": ("notify", "smtp", "security"),
    "SMTP_USERNAME": ("notify", "smtp", "username"),
    "SMTP_PASSWORD": ("notify", "smtp", "password"),
    "SLACK_BOT_TOKEN": ("notify", "slack_token"),
    "SLACK_WEBHOOK_URL": ("notify", "slack_webhook_url"),
    "TELEGRAM_BOT_TOKEN": ("notify", "telegram_token"),
    "STRIPEFLOW_HANDOFF_URL": ("handoff", "url"),
    "STRIPEFLOW_HANDOFF_SECRET": ("handoff", "secret"),
}


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read the TOML file (STRIPEFLOW_CONFIG, else ./stripeflow.toml if present), then the env."""
    env = dict(os.environ if env is None else env)
    file = Path(path or env.get("STRIPEFLOW_CONFIG") or "stripeflow.toml")
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    elif path is not None:
        raise ConfigError(f"{file}: no such configuration file")
    for name, keys in ENV_MAP.items():
        if env.get(name):
            value: Any = env[name]
            if keys == ("stripe", "webhook_secrets"):
                value = [v.strip() for v in value.split(",") if v.strip()]
            target = data
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = value
    for account in data.get("accounts") or []:
        if isinstance(account, dict) and isinstance(account.get("name"), str):
            _account_env(account, env)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(file, exc)) from None


def account_env_suffix(name: str) -> str:
    """`shop-pl` -> `SHOP_PL`: an account's secrets are STRIPE_API_KEY_SHOP_PL and so on."""
    return name.upper().replace("-", "_")


def _account_env(account: dict[str, Any], env: Mapping[str, str]) -> None:
    suffix = account_env_suffix(account["name"])
    stripe = account.setdefault("stripe", {})
    if not isinstance(stripe, dict):
        return  # the model says what is wrong with it
    if env.get(f"STRIPE_API_KEY_{suffix}"):
        stripe["api_key"] = env[f"STRIPE_API_KEY_{suffix}"]
    if env.get(f"STRIPE_WEBHOOK_SECRET_{suffix}"):
        stripe["webhook_secrets"] = [
            v.strip() for v in env[f"STRIPE_WEBHOOK_SECRET_{suffix}"].split(",") if v.strip()
        ]


def describe_validation_error(source: Path | str, exc: ValidationError) -> str:
    """`stripeflow.toml: crm.0.tpye: unknown key` — one line per problem, naming the key."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key (check its spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{source}: {where}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)
