"""Templates to messages: Jinja2, Polish by default, English by setting.

Templates live in `stripeflow/templates/<language>/`; a file of the same name in the user's
`notify.templates_dir` wins (a ChoiceLoader: the user's folder first, then ours). Names:

    customer_<kind>.subject.j2 / .txt.j2 / .html.j2    kind: payment_confirmation, refund_confirmation,
                                                       payment_failed
    team.subject.j2 / .txt.j2 / .html.j2 / .slack.j2 / .telegram.j2
                                                       one per format; `team_<kind>.<format>.j2` overrides
                                                       it for one kind (payment, refund, failure, dispute)

Each format is escaped for where it lands: HTML and Telegram's HTML by autoescaping, Slack's
mrkdwn by its own escaping (so a customer named `<!channel>` cannot ping a workspace), plain
text and subjects not at all (a subject is folded to one line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)

from stripeflow.core.errors import ConfigError
from stripeflow.core.labels import METHOD_LABELS, label, stripe_dashboard_url
from stripeflow.core.money import LOCALES, format_money
from stripeflow.core.payment import Payment

DATE_FORMAT = {"pl": "d MMMM y, HH:mm", "en": "d MMMM y, HH:mm"}


class RenderError(ConfigError):
    """A template is missing or broken (usually a user's override): this message cannot be made."""


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class SlackContent:
    text: str  # the notification's fallback text, already mrkdwn-escaped
    blocks: list[dict[str, Any]]


class SlackMarkup(str):
    """mrkdwn that is already safe (a link we built): passed through without escaping."""

    __slots__ = ()


def slack_escape(value: object) -> str:
    """Slack's three control characters; everything else in mrkdwn is literal enough."""
    if isinstance(value, SlackMarkup):
        return value
    text = "" if value is None else str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_link(url: str | None, text: object) -> SlackMarkup:
    if not url:
        return SlackMarkup(slack_escape(text))
    safe_url = url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")
    return SlackMarkup(f"<{safe_url}|{slack_escape(text)}>")


def message_context(
    payment: Payment,
    previous: Payment | None,
    *,
    kind: str,
    language: str,
    timezone: str = "Europe/Warsaw",
    company: str | None = None,
    deal_url: str | None = None,
) -> dict[str, Any]:
    """Everything a template may use; each name is always defined (None when unknown)."""

    def money(amount: Decimal) -> str:
        return format_money(amount, payment.currency, language)

    before = previous.refunded_amount if previous is not None else Decimal(0)
    return {
        "kind": kind,
        "language": language,
        "payment": payment,
        "name": _clean(payment.name),
        "email": payment.email,
        "customer": _clean(payment.name or payment.email or payment.customer_id) or "—",
        "product": _clean(payment.product) or None,
        "amount": money(payment.amount),
        "refunded": money(payment.refunded_amount),
        "refund": money(max(payment.refunded_amount - before, Decimal(0))),
        "net": money(payment.net_amount),
        "fully_refunded": payment.refunded_amount >= payment.amount,
        "method": label("method", payment.method, language),
        "reason": _clean(payment.failure_message),
        "occurred_at": format_datetime(
            payment.occurred_at, DATE_FORMAT[language], tzinfo=ZoneInfo(timezone), locale=LOCALES[language]
        ),
        "invoice_url": payment.invoice_url or payment.invoice_pdf,
        "receipt_url": payment.receipt_url,
        "pay_url": payment.retry_url or payment.invoice_url,
        "stripe_url": stripe_dashboard_url(payment),
        "deal_url": deal_url,
        "company": company,
        "livemode": payment.livemode,
    }


# every character str.splitlines() breaks at (U+2028, U+2029, U+0085, \v, \f, \x1c-\x1e ...),
# NUL and the other C0/C1 controls; not U+00A0, which keeps `1 249,00 zł` together
_BREAKS = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]+")
TEXT_MAX = 300  # characters of one name or product in a message: enough to recognise it


def one_line(text: str) -> str:
    """Fold to one line of printable text (for headers, subjects and headlines)."""
    return _BREAKS.sub(" ", text).strip()


def _clean(value: str | None) -> str | None:
    """A name or product from Stripe as a message shows it: one line, printable, not huge (None
    when nothing printable is left, so the template's fallback applies)."""
    text = one_line(value or "")
    if not text:
        return None
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1].rstrip() + "…"


class Renderer:
    """Renders every message kind in one language; cheap to build, safe to share."""

    def __init__(self, language: str = "pl", templates_dir: Path | None = None) -> None:
        if language not in METHOD_LABELS:
            raise ConfigError(f"no templates for language {language!r}; choose pl or en")
        self.language = language
        loaders: list[Any] = [FileSystemLoader(str(templates_dir))] if templates_dir else []
        loader = ChoiceLoader([*loaders, PackageLoader("stripeflow", "templates")])
        common: dict[str, Any] = dict(
            loader=loader, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
        )
        self.env = Environment(
            autoescape=select_autoescape(enabled_extensions=("html.j2", "telegram.j2"), default=False),
            **common,
        )
        # mrkdwn has its own escaping: `finalize` applies it to every {{ value }} of Slack templates
        self.slack_env = Environment(autoescape=False, finalize=slack_escape, **common)
        self.slack_env.globals["link"] = slack_link

    def _render(self, env: Environment, names: list[str], context: dict[str, Any]) -> str:
        try:
            template = env.select_template([f"{self.language}/{name}" for name in names])
            return template.render(context).strip()
        except TemplateError as exc:
            raise RenderError(f"template {names[0]} ({self.language}): {exc}") from exc

    def _team_names(self, kind: str, fmt: str) -> list[str]:
        return [f"team_{kind}.{fmt}.j2", f"team.{fmt}.j2"]

    def customer_email(self, kind: str, context: dict[str, Any]) -> EmailContent:
        base, context = f"customer_{kind}", {**context, "kind": kind}
        return EmailContent(
            subject=one_line(self._render(self.env, [f"{base}.subject.j2"], context)),
            text=self._render(self.env, [f"{base}.txt.j2"], context) + "\n",
            html=self._render(self.env, [f"{base}.html.j2"], context) + "\n",
        )

    def headline(self, kind: str, context: dict[str, Any]) -> str:
        return one_line(self._render(self.env, self._team_names(kind, "subject"), {**context, "kind": kind}))

    def team_email(self, kind: str, context: dict[str, Any]) -> EmailContent:
        context = {**context, "kind": kind, "headline": self.headline(kind, context)}
        return EmailContent(
            subject=context["headline"],
            text=self._render(self.env, self._team_names(kind, "txt"), context) + "\n",
            html=self._render(self.env, self._team_names(kind, "html"), context) + "\n",
        )

    def team_slack(self, kind: str, context: dict[str, Any]) -> SlackContent:
        headline = self.headline(kind, context)
        body = self._render(
            self.slack_env, self._team_names(kind, "slack"), {**context, "kind": kind, "headline": headline}
        )
        return SlackContent(
            text=slack_escape(headline),
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}}],
        )

    def team_telegram(self, kind: str, context: dict[str, Any]) -> str:
        headline = self.headline(kind, context)
        return self._render(
            self.env, self._team_names(kind, "telegram"), {**context, "kind": kind, "headline": headline}
        )
