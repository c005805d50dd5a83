"""The demo source: a local Stripe API fake and realistic, signed Stripe events sent to the bridge.

The scenario: several customers; PLN, EUR and JPY; a card, an Apple Pay and a BLIK payment;
a Checkout Session; a subscription invoice; a refund delivered *before* the payment it refunds;
a declined card; a duplicate delivery; an event type Stripeflow does not handle. Then, one new
payment every `loop_every` seconds. The fakes live in the source tree (`tests/fakes/`), which
the demo therefore needs: it is run from a checkout.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

console = Console()


def _fakes() -> Any:
    root = Path(__file__).resolve().parent.parent
    if not (root / "tests" / "fakes" / "stripe_api.py").exists():
        raise SystemExit("the demo needs the source checkout (tests/fakes); run it from the repository")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from tests.fakes import stripe_api, stripe_events

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

    firma = world.customer("biuro@xyz-agencja.pl", "XYZ Agencja sp. z o.o.")
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


def run_demo(bridge_url: str, secret: str, stripe_port: int, loop_every: float = 20.0) -> None:
    stripe_api, stripe_events = _fakes()
    from tests.fakes.server import ServerThread

    fake = stripe_api.FakeStripe()
    ServerThread(fake.app, port=stripe_port).start()
    console.print(
        f"[green]Stripe API fake[/] on http://127.0.0.1:{stripe_port}; sending demo events to {bridge_url}"
    )
    last: dict[str, Any] | None = None
    with httpx.Client(timeout=10) as client:

        def send(label: str, event: dict[str, Any] | None, why: str) -> None:
            nonlocal last
            event = event or last
            assert event is not None
            body = json.dumps(event)
            for attempt in range(30):  # the bridge may still be starting: wait for it, like Stripe retries
                try:
                    response = client.post(
                        bridge_url,
                        content=body,
                        headers={
                            "Stripe-Signature": stripe_events.sign(body, secret),
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
        while loop_every > 0:
            time.sleep(loop_every)
            send(*random_payment(fake.world))
