"""The demo source: a local Stripe API fake and realistic, signed Stripe events sent to the bridge.

The scenario: several customers; PLN, EUR and JPY; a card, an Apple Pay and a BLIK payment;
a Checkout Session; a subscription invoice; a refund delivered *before* the payment it refunds;
a declined card; a duplicate delivery; an event type Stripeflow does not handle. Then, one new
payment every `loop_every` seconds. The fakes are part of the package (`stripeflow.testing`), so an
installed Stripeflow runs its own demo.

The demo's home and configuration live here too. `stripeflow run` gives the demo a home of its
own (`<home>/demo`) and a generated `stripeflow.toml` there that reaches nothing real: the local
CRM, e-mail to the demo's outbox, no team routes, no hand-off, Stripe = the demo's fake; and the
demo's processes inherit none of the variables that name a real system. `stripeflow status` and
`stripeflow crm deals` read the demo's home while the last run was the demo and nothing since
configures a webhook secret (`command_settings`).
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console

from stripeflow.core.accounts import any_webhook_secret
from stripeflow.core.config import ENV_MAP, Settings, load_settings

console = Console()

DEMO_DIR = "demo"
RUN_STATE = "last-run.json"
# variables the demo's processes must not inherit: each can point them at a real system
REAL_PREFIXES: tuple[str, ...] = ("STRIPE_", "STRIPEFLOW_", "SMTP_", "SLACK_", "TELEGRAM_")
REAL_PREFIXES += ("HUBSPOT_", "PIPEDRIVE_", "BITRIX24_", "ZOHO_")
REAL_NAMES = frozenset(ENV_MAP) | {"DATABASE_URL", "STRIPEFLOW_CONFIG"}


def demo_home(home: Path) -> Path:
    return home.resolve() / DEMO_DIR


def scrubbed_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment without any variable that names a Stripe account, CRM, mailbox or route."""
    return {k: v for k, v in env.items() if k not in REAL_NAMES and not k.startswith(REAL_PREFIXES)}


@dataclass(frozen=True)
class DemoStripe:
    """The demo's own Stripe: the fake's address and a key and secret made up for this run."""

    api_base: str
    api_key: str
    webhook_secret: str
    second_key: str = ""  # the second company's account (SECOND_ACCOUNT)
    second_secret: str = ""

    @classmethod
    def new(cls, port: int) -> DemoStripe:
        return cls(
            api_base=f"http://127.0.0.1:{port}",
            api_key="sk_test_demo_" + secrets.token_hex(8),
            webhook_secret="whsec_demo_" + secrets.token_hex(16),
            second_key="sk_test_demo_" + secrets.token_hex(8),
            second_secret="whsec_demo_" + secrets.token_hex(16),
        )


# The demo's two companies: the default account's (unless the user names their own) and a second
# Stripe account of another company, whose events go to /webhooks/stripe/<SECOND_ACCOUNT>.
DEMO_COMPANY = {"name": "Sklep Żółw sp. z o.o.", "nip": "5260001246", "city": "Warszawa"}
SECOND_ACCOUNT = "agencja"
SECOND_COMPANY = {"name": "Agencja Kreatywna Wrona sp.k.", "nip": "7251801126", "city": "Kraków"}


def demo_config(user: Settings, stripe: DemoStripe) -> dict[str, Any]:
    """The demo's configuration: the user's language and wording, none of their systems."""
    notify: dict[str, Any] = {
        "customer_messages": list(user.notify.customer_messages),
        "sender": user.notify.sender,
        "timezone": user.notify.timezone,
    }
    for key in ("reply_to", "company"):
        if getattr(user.notify, key):
            notify[key] = getattr(user.notify, key)
    if user.notify.templates_dir:
        notify["templates_dir"] = str(user.notify.templates_dir.resolve())
    return {
        "home": str(demo_home(user.home)),
        "language": user.language,
        "stripe": {
            "api_base": stripe.api_base,
            "api_key": stripe.api_key,  # made up for this run; the fake accepts any sk_test_ key
            "webhook_secrets": [stripe.webhook_secret],
        },
        "deals": {"title_template": user.deals.title_template},
        "crm": [{"type": "local"}],
        "notify": notify,  # no smtp (mail goes to the demo's outbox), no routes, no tokens, no block
        "company": user.company.model_dump(exclude_none=True) if user.company else DEMO_COMPANY,
        "accounts": [  # a second company's Stripe account, into the same local CRM
            {
                "name": SECOND_ACCOUNT,
                "stripe": {
                    "api_base": stripe.api_base,
                    "api_key": stripe.second_key,
                    "webhook_secrets": [stripe.second_secret],
                },
                "company": SECOND_COMPANY,
            }
        ],
    }


def write_demo_config(user: Settings, stripe: DemoStripe) -> Path:
    home = demo_home(user.home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "stripeflow.toml"
    header = (
        "# Written by `stripeflow run` for the demo, on every start; edits are lost.\n"
        "# It reaches nothing real: the local CRM, e-mail to the outbox here, no team messages,\n"
        "# no hand-off, and the demo's Stripe API fake.\n"
    )
    path.write_text(header + to_toml(demo_config(user, stripe)), encoding="utf-8")
    return path


def demo_env(env: Mapping[str, str], config: Path) -> dict[str, str]:
    """What the demo's processes get: the scrubbed environment, pointed at the demo's config."""
    out = scrubbed_env(env)
    settings = load_settings(config, out)
    out["STRIPEFLOW_CONFIG"] = str(config)
    out["STRIPEFLOW_HOME"] = str(settings.home)
    return out


def departures(user: Settings) -> list[str]:
    """What of the user's configuration the demo leaves out, in words for the banner."""
    out = []
    real = [t.block or t.type for t in user.crm if t.type != "local"]
    if real:
        out.append(f"CRM: {', '.join(real)} configured; the demo writes to the local CRM only")
    if user.notify.smtp.host:
        out.append(f"e-mail: SMTP {user.notify.smtp.host} configured; the demo's mail goes to its outbox")
    routes = sorted({c for channels in user.notify.routes.values() for c in channels})
    if routes:
        out.append(f"team messages to {', '.join(routes)}: off in the demo")
    if user.handoff.url:
        host = urlsplit(user.handoff.url).hostname or "the configured URL"  # the URL may hold a token
        out.append(f"hand-off to {host}: off in the demo")
    if user.database_url:
        out.append("ledger: your database is configured; the demo uses SQLite in its own home")
    return out


def record_run(home: Path, mode: str, config: Path | None, prefect_api_url: str) -> None:
    """What the last `stripeflow run` from this home ran, for the commands of other terminals."""
    home.mkdir(parents=True, exist_ok=True)
    state = {
        "mode": mode,
        "config": str(config) if config else None,
        "prefect_api_url": prefect_api_url,
        "started_at": datetime.now(UTC).isoformat(),
    }
    (home / RUN_STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def last_run(home: Path) -> dict[str, Any]:
    try:
        state = json.loads((home / RUN_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def active_demo_config(settings: Settings) -> Path | None:
    """The demo's config when the last run from this home was the demo and no secret is set since."""
    state = last_run(settings.home)
    config = Path(state["config"]) if state.get("mode") == "demo" and state.get("config") else None
    if config is None or not config.exists() or any_webhook_secret(settings):
        return None
    return config


def command_settings(env: Mapping[str, str] | None = None) -> tuple[Settings, Path | None]:
    """Settings for `status` and `crm deals`: the demo's while it is what runs, else the user's."""
    env = dict(os.environ if env is None else env)
    settings = load_settings(env=env)
    config = active_demo_config(settings)
    if config is None:
        return settings, None
    return load_settings(config, scrubbed_env(env)), config


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for the demo's config (strings, numbers, booleans, lists, tables)."""
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's string escapes are valid in TOML
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _table(lines: list[str], path: list[str], data: Mapping[str, Any]) -> None:
    nested = []
    for key, value in data.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        name = ".".join(_key(p) for p in [*path, key])
        for item in [value] if isinstance(value, Mapping) else value:
            lines += ["", f"[{name}]" if isinstance(value, Mapping) else f"[[{name}]]"]
            _table(lines, [*path, key], item)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _fakes() -> Any:
    from stripeflow.testing import stripe_api, stripe_events

    return stripe_api, stripe_events


def scenario(world: Any) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(label, event, why) in delivery order."""
    anna = world.customer("anna.nowak@example.pl", "Anna Nowak")
    pi, _ = world.payment_intent(24900, "pln", anna, product="Subskrypcja Pro")
    yield "karta, 249,00 zł", world.event("payment_intent.succeeded", pi), "card payment"
    yield "to samo zdarzenie ponownie", None, "duplicate delivery of the event above"  # type: ignore[misc]

    jan = world.customer("jan.kowalski@example.pl", "Jan Kowalski")
    pi_blik, _ = world.payment_intent(124900, "pln", jan, product="Pakiet Automatyzacji CRM", method="blik")
    session = world.checkout_session(
        124900,
        "pln",
        "jan.kowalski@example.pl",
        "Jan Kowalski",
        products=["Pakiet Automatyzacji CRM"],
        pi=pi_blik["id"],
        phone="+48 601 234 567",
    )
    yield "BLIK przez Checkout, 1 249,00 zł", world.event("checkout.session.completed", session), "Checkout"
    yield (
        "BLIK: payment_intent",
        world.event("payment_intent.succeeded", pi_blik),
        "same payment, second event",
    )

    sophie = world.customer("sophie.martin@example.fr", "Sophie Martin")
    pi_ap, _ = world.payment_intent(8900, "eur", sophie, product="Konsultacja online", wallet="apple_pay")
    yield "Apple Pay, 89,00 €", world.event("payment_intent.succeeded", pi_ap), "wallet from card.wallet.type"

    yuki = world.customer("yuki.tanaka@example.jp", "Yuki Tanaka")
    _, ch_jpy = world.payment_intent(5000, "jpy", yuki, product="E-book: Automatyzacja")
    yield "JPY, 5 000 JPY", world.event("charge.succeeded", ch_jpy), "zero-decimal currency"

    firma = world.customer(
        "biuro@xyz-agencja.pl",
        "XYZ Agencja sp. z o.o.",
        phone="+48 22 123 45 67",
        business_name="XYZ Agencja sp. z o.o.",
        tax_ids=[("eu_vat", "PL5260001246")],
    )
    pi_sub, _ = world.payment_intent(49900, "pln", firma, product="Plan Business (miesięczny)")
    invoice = world.invoice(49900, "pln", firma, product="Plan Business (miesięczny)", pi=pi_sub["id"])
    yield "faktura subskrypcji, 499,00 zł", world.event("invoice.paid", invoice), "subscription invoice"

    piotr = world.customer("piotr.wisniewski@example.pl", "Piotr Wiśniewski")
    pi_ref, ch_ref = world.payment_intent(14900, "pln", piotr, product="Warsztaty Prefect")
    succeeded = world.event("payment_intent.succeeded", pi_ref)
    yield "zwrot (przed płatnością!)", world.event("charge.refunded", world.refund(ch_ref)), "refund first"
    yield "płatność, której dotyczy zwrot", succeeded, "arrives late; the deal stays refunded"

    marek = world.customer("marek.zielinski@example.pl", "Marek Zieliński")
    pi_fail, _ = world.payment_intent(
        9900, "pln", marek, product="Subskrypcja Start", status="requires_payment_method"
    )
    yield "karta odrzucona, 99,00 zł", world.event("payment_intent.payment_failed", pi_fail), "failure"
    yield "customer.created", world.event("customer.created", marek), "a type we do not handle: skipped"


PRODUCTS = [
    ("Subskrypcja Pro", 24900, "pln"),
    ("Konsultacja 1h", 35000, "pln"),
    ("Audyt CRM", 199900, "pln"),
    ("Starter plan", 2900, "eur"),
    ("Webinar", 3000, "jpy"),
]
PEOPLE = [
    ("Katarzyna Wójcik", "k.wojcik"),
    ("Tomasz Kamiński", "t.kaminski"),
    ("Agnieszka Lewandowska", "a.lewandowska"),
    ("Michał Dąbrowski", "m.dabrowski"),
    ("Ewa Szymańska", "e.szymanska"),
]


def random_payment(world: Any) -> tuple[str, dict[str, Any], str]:
    name, user = random.choice(PEOPLE)
    product, amount, currency = random.choice(PRODUCTS)
    customer = world.customer(f"{user}@example.pl", name)
    method = random.choice(["card", "card", "blik", "p24"]) if currency == "pln" else "card"
    wallet = random.choice([None, None, "apple_pay", "google_pay"]) if method == "card" else None
    pi, _ = world.payment_intent(amount, currency, customer, product=product, method=method, wallet=wallet)
    return f"{name}, {product}", world.event("payment_intent.succeeded", pi), "new payment"


def second_company(world: Any) -> Iterator[tuple[str, dict[str, Any], str]]:
    """The second company's account: the same customer e-mail and amount as the first payment,
    which lands as its own deal, signed by its own company."""
    anna = world.customer("anna.nowak@example.pl", "Anna Nowak")
    pi, _ = world.payment_intent(24900, "pln", anna, product="Kampania w mediach")
    yield (
        "drugie konto: karta, 249,00 zł",
        world.event("payment_intent.succeeded", pi),
        "another company's account",
    )
    blik, _ = world.payment_intent(
        150000,
        "pln",
        world.customer("biuro@xyz-agencja.pl", "XYZ Agencja sp. z o.o."),
        product="Identyfikacja wizualna",
        method="blik",
    )
    yield (
        "drugie konto: BLIK, 1 500,00 zł",
        world.event("payment_intent.succeeded", blik),
        "another company's account",
    )


def run_demo(
    bridge_url: str,
    secret: str,
    stripe_port: int,
    loop_every: float = 20.0,
    others: Sequence[tuple[str, str]] = (),
) -> None:
    """Send the scenario to `bridge_url` signed with `secret`; then, for each (account, secret) of
    `others`, the second company's payments to that account's route."""
    stripe_api, stripe_events = _fakes()
    from stripeflow.testing.server import ServerThread

    fake = stripe_api.FakeStripe()
    ServerThread(fake.app, port=stripe_port).start()
    console.print(
        f"[green]Stripe API fake[/] on http://127.0.0.1:{stripe_port}; sending demo events to {bridge_url}"
    )
    last: dict[str, Any] | None = None
    with httpx.Client(timeout=10) as client:

        def send(
            label: str, event: dict[str, Any] | None, why: str, route: str = "", key: str = secret
        ) -> None:
            nonlocal last
            event = event or last
            assert event is not None
            body = json.dumps(event)
            for attempt in range(30):  # the bridge may still be starting: wait for it, like Stripe retries
                try:
                    response = client.post(
                        bridge_url + route,
                        content=body,
                        headers={
                            "Stripe-Signature": stripe_events.sign(body, key),
                            "Content-Type": "application/json",
                        },
                    )
                    break
                except httpx.HTTPError:
                    time.sleep(min(5, 0.5 * (attempt + 1)))
            else:
                raise SystemExit("the bridge does not answer")
            console.print(
                f"→ {event['type']:<32} {label:<34} {response.status_code} "
                f"{'(duplicate)' if response.json().get('duplicate') else ''}  [dim]{why}[/]"
            )
            last = event

        for label, event, why in scenario(fake.world):
            send(label, event, why)
            time.sleep(1.5)
        for account, account_secret in others:
            for label, event, why in second_company(fake.world):
                send(label, event, why, f"/{account}", account_secret)
                time.sleep(1.5)
        while loop_every > 0:
            time.sleep(loop_every)
            send(*random_payment(fake.world))
