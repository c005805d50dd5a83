"""Chaos benchmark: exactly once under crashes, duplicates, reordering and a failing CRM.

    PYTHONPATH=. .venv/bin/python bench/chaos.py                        # 5,000 payments, ~10 min
    PYTHONPATH=. .venv/bin/python bench/chaos.py --payments 300         # a quick look
    PYTHONPATH=. .venv/bin/python bench/chaos.py --no-kills --crm-faults off   # the calm baseline

The real system as child processes (a Prefect server, `stripeflow bridge`, `stripeflow worker`)
in a temp directory, loopback only. In this process, served over real sockets: the Stripe API
fake (enrichment), the HubSpot fake (the worker's CRM, at 100 requests per 10 s, answering a
seeded 30 % of calls with 429 or 5xx and 2 % with the answer lost after the write), an SMTP
server (aiosmtpd) for customer e-mails, and a hand-off receiver recording every delivery with
its Idempotency-Key. Team messages are off.

A seeded scenario of card payments (`payment_intent.succeeded` + `charge.succeeded`), some
refunded in full or in part (`charge.refunded`), some failed (`payment_intent.payment_failed`
+ `charge.failed`); 30 % of the deliveries are sent twice and the whole order is shuffled. A
sender in its own process behaves like Stripe: many deliveries in flight, every non-2xx and
every connection error retried with backoff until a 2xx (within `--send-timeout`). While it
sends, the worker is SIGKILLed twice and the bridge once (each restarted at once, as a
supervisor would) and the Prefect server is killed and restarted once.

Then it polls the fakes until every payment is in its final state everywhere and the inbox is
drained (or `--deadline` passes, or nothing moved for `--settle` s after the inbox drained), and
prints, counted from the fakes' own state, expected against found: deals (by the Stripe payment
id property, in the right stage), notes (one per state per deal), e-mails (per Message-ID and
recipient), hand-offs (per Idempotency-Key and per payment state), lost and duplicated, and
the time from the last delivery to convergence. Targets: 0 lost, 0 duplicated, under 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import random
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.common import (
    MachineLoad,
    Procs,
    base_env,
    bench_session,
    console,
    load_note,
    machine,
    print_table,
    python,
    secs,
    verdict,
    wait_http,
)
from stripeflow.core.money import from_minor
from stripeflow.launcher import free_port
from stripeflow.tasks.crm.tasks import NOTE_TEXT
from stripeflow.tasks.notify.email import message_id
from stripeflow.tasks.notify.handoff import SIGNATURE_HEADER, verify_signature
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.server import ServerThread
from stripeflow.testing.smtp import SMTPServer, smtp_server
from stripeflow.testing.stripe_api import FakeStripe
from stripeflow.testing.stripe_events import StripeWorld

DEPLOYMENT = "process-payment-events/process-payment-events"
SENDER = "Stripeflow <no-reply@localhost>"  # the default `notify.sender`: Message-IDs derive from it
LANGUAGE = "pl"  # the default language: notes are recognised by their text in it
TARGET_CONVERGE = 120.0  # seconds from the last delivery until everything is in place
PRODUCTS = [
    ("Subskrypcja Pro", 24900, "pln"),
    ("Konsultacja 1h", 35000, "pln"),
    ("Audyt CRM", 199900, "pln"),
    ("Starter plan", 2900, "eur"),
    ("Warsztaty", 120000, "pln"),
]
# What each final state looks like in the CRM with the default HubSpot stages (DEFAULT_STAGES),
# written out here so the bench does not take the system's word for it.
STAGE = {
    "succeeded": "closedwon",
    "partially_refunded": "closedwon",
    "refunded": "closedlost",
    "failed": "closedlost",
}
PAID = {"succeeded", "partially_refunded", "refunded"}


# --- the scenario -----------------------------------------------------------------------------


@dataclass
class Expected:
    """One payment and what it must end as everywhere."""

    payment_id: str
    email: str | None
    customer_id: str
    currency: str
    amount_minor: int
    final: str  # the payment's final status
    refunded_minor: int = 0
    states: list[str] = field(default_factory=list)  # in Stripe's order; a reorder may skip some

    def emails(self) -> dict[str, str]:
        """Message-ID -> kind, of every customer e-mail this payment calls for (once each)."""
        if not self.email:
            return {}
        keys: list[tuple[str, str]] = []
        if self.final in PAID:
            keys.append(("payment_confirmation", ""))
        if self.refunded_minor:
            keys.append(("refund_confirmation", f":r{self.refunded_minor}"))
        if self.final == "failed":
            keys.append(("payment_failed", ""))
        return {
            message_id(f"email:customer:{kind}:{self.payment_id}{suffix}", self.payment_id, SENDER): kind
            for kind, suffix in keys
        }


@dataclass
class Scenario:
    world: StripeWorld
    payments: list[Expected]
    events: list[str]  # one body per event
    deliveries: list[str]  # the events, some twice, shuffled

    @property
    def by_id(self) -> dict[str, Expected]:
        return {p.payment_id: p for p in self.payments}


def build_scenario(n: int, seed: int, duplicate_share: float = 0.3) -> Scenario:
    """`n` payments: ~80 % paid (a quarter of them refunded, one in five of those in part), ~20 %
    failed; ~8 % of customers without an e-mail, ~30 % of payments by a returning customer."""
    rng = random.Random(seed)
    world = StripeWorld()
    customers: list[dict[str, Any]] = []
    payments: list[Expected] = []
    events: list[str] = []
    for i in range(n):
        if customers and rng.random() < 0.3:
            cus = rng.choice(customers)
        else:
            email = f"klient{i}.{seed}@example.pl" if rng.random() >= 0.08 else None
            cus = world.customer(email, f"Klient {i}")
            customers.append(cus)
        product, amount, currency = rng.choice(PRODUCTS)
        wallet = rng.choice([None, None, None, "apple_pay", "google_pay"])
        failed = rng.random() < 0.2
        status = "requires_payment_method" if failed else "succeeded"
        pi, ch = world.payment_intent(amount, currency, cus, product=product, wallet=wallet, status=status)
        exp = Expected(
            pi["id"], cus["email"], cus["id"], currency, amount, "failed" if failed else "succeeded"
        )
        if failed:
            events += [_event(world, "payment_intent.payment_failed", pi), _event(world, "charge.failed", ch)]
            exp.states = ["failed"]
        else:
            events += [_event(world, "payment_intent.succeeded", pi), _event(world, "charge.succeeded", ch)]
            exp.states = ["succeeded"]
            if rng.random() < 0.25:
                part = amount // 2 if rng.random() < 0.2 else None
                refunded = world.refund(ch, part)
                events.append(_event(world, "charge.refunded", refunded))
                exp.refunded_minor = refunded["amount_refunded"]
                exp.final = "refunded" if refunded["refunded"] else "partially_refunded"
                exp.states.append(exp.final)
        payments.append(exp)
    deliveries = events + rng.sample(events, round(len(events) * duplicate_share))
    rng.shuffle(deliveries)
    return Scenario(world, payments, events, deliveries)


def _event(world: StripeWorld, type_: str, obj: dict[str, Any]) -> str:
    return json.dumps(world.event(type_, obj))


# --- Stripe's side: the sender ----------------------------------------------------------------


def run_stripe_sender(
    url: str,
    bodies_path: str,
    secret: str,
    concurrency: int,
    rate: float,
    timeout: float,
    acked: Any,  # multiprocessing Value("i"): deliveries answered 2xx so far
    result_path: str,
) -> None:
    """Process entry point: deliver every body until a 2xx, as Stripe does, then write a summary."""
    bodies = json.loads(Path(bodies_path).read_text())
    result = asyncio.run(_send_all(url, bodies, secret, concurrency, rate, timeout, acked))
    Path(result_path).write_text(json.dumps(result))


async def _send_all(
    url: str, bodies: list[str], secret: str, concurrency: int, rate: float, timeout: float, acked: Any
) -> dict[str, Any]:
    from stripeflow.testing.stripe_events import sign

    rng = random.Random(1)
    gate = asyncio.Semaphore(concurrency)
    answers: Counter[str] = Counter()
    stats = {"attempts": 0, "gave_up": 0, "last_ack": math.nan, "first_send": time.time()}
    deadline = time.monotonic() + timeout

    async def deliver(client: httpx.AsyncClient, body: str) -> None:
        backoff = 0.5
        try:
            while time.monotonic() < deadline:
                stats["attempts"] += 1
                try:
                    # signed at each attempt, as Stripe does: a retry carries a fresh timestamp
                    r = await client.post(url, content=body, headers={"Stripe-Signature": sign(body, secret)})
                    if 200 <= r.status_code < 300:
                        with acked.get_lock():
                            acked.value += 1
                        stats["last_ack"] = time.time()
                        return
                    answers[f"HTTP {r.status_code}"] += 1
                except httpx.HTTPError as exc:
                    answers[type(exc).__name__] += 1
                await asyncio.sleep(min(backoff, 8.0) * (0.5 + rng.random() / 2))
                backoff *= 2
            stats["gave_up"] += 1
        finally:
            gate.release()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=15, limits=limits) as client:
        tasks = []
        start = time.monotonic()
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.monotonic() if rate > 0 else 0
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(deliver(client, body)))
        await asyncio.gather(*tasks)
    return {**stats, "answers": dict(answers), "last_send": time.time()}


# --- the hand-off receiver --------------------------------------------------------------------


@dataclass(frozen=True)
class Handoff:
    key: str
    payment_id: str
    status: str
    refunded_amount: Decimal
    signed: bool


class HandoffReceiver:
    """An accounting system's webhook endpoint: checks the signature, records every delivery."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[Handoff] = []
        self.app = Starlette(routes=[Route("/handoff", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        signed = verify_signature(self.secret, request.headers.get(SIGNATURE_HEADER, ""), body)
        payment = json.loads(body)["payment"]
        self.received.append(
            Handoff(
                request.headers.get("idempotency-key", ""),
                payment["payment_id"],
                payment["status"],
                Decimal(payment["refunded_amount"]),
                signed,
            )
        )
        return JSONResponse({"received": True})


# --- measuring --------------------------------------------------------------------------------


def note_prefixes() -> dict[str, str]:
    """The opening words of each state's note (up to its first placeholder): how a note is told."""
    return {status.value: text.split("{", 1)[0] for status, text in NOTE_TEXT[LANGUAGE].items()}


@dataclass
class Figures:
    deals_found: int = 0
    deals_missing: int = 0
    deals_wrong_state: int = 0
    deals_duplicated: int = 0
    notes_expected_min: int = 0
    notes_expected_max: int = 0
    notes_found: int = 0
    notes_lost: int = 0
    notes_duplicated: int = 0
    notes_unknown: int = 0
    contacts_expected: int = 0
    contacts_found: int = 0
    contacts_duplicated: int = 0
    emails_expected: int = 0
    emails_found: int = 0
    emails_lost: int = 0
    emails_duplicated: int = 0
    emails_unexpected: int = 0
    emails_wrong_recipient: int = 0
    handoff_states_expected_min: int = 0
    handoff_states_expected_max: int = 0
    handoff_keys: int = 0
    handoff_deliveries: int = 0
    handoffs_lost: int = 0
    handoffs_redelivered: int = 0
    handoffs_bad_signature: int = 0
    inbox: dict[str, int] = field(default_factory=dict)
    effects: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    # effects the ledger holds as done/unknown whose target never got them: lost whatever the deadline
    vanished: Counter[str] = field(default_factory=Counter)

    @property
    def drained(self) -> bool:
        return not (self.inbox.get("pending", 0) or self.inbox.get("claimed", 0))

    @property
    def converged(self) -> bool:
        return self.drained and not (
            self.deals_missing
            or self.deals_wrong_state
            or self.notes_lost
            or self.emails_lost
            or self.handoffs_lost
        )

    def progress(self) -> tuple[int, ...]:
        """Changes while anything still moves."""
        return (
            self.deals_found,
            self.deals_wrong_state,
            self.notes_found,
            self.emails_found,
            self.handoff_deliveries,
            *sorted(self.inbox.items()),  # type: ignore[arg-type]
        )


def measure(
    scenario: Scenario,
    hubspot: FakeHubSpot,
    smtp: SMTPServer,
    receiver: HandoffReceiver,
    ledger: Path,
) -> Figures:
    f = Figures()
    expected = scenario.payments
    # the ledger first: an effect it records was sent before, so it must be in the targets read after
    f.inbox, f.effects, f.dead_letters = ledger_counts(ledger)
    effects = ledger_effects(ledger)
    with hubspot.lock:  # a consistent snapshot: the fake's threads write under this lock
        deals = [d["properties"] for d in hubspot.objects["deals"].values()]
        contacts = [c["properties"] for c in hubspot.objects["contacts"].values()]
        bodies = {
            oid: n["properties"].get("hs_note_body") or "" for oid, n in hubspot.objects["notes"].items()
        }
        note_links = [(a, b) for (fr, a, to, b, _) in hubspot.associations if fr == "notes" and to == "deals"]
    by_payment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for props in deals:
        if props.get("stripe_payment_id"):
            by_payment[props["stripe_payment_id"]].append(props)
    deal_of = {pid: ds[0]["hs_object_id"] for pid, ds in by_payment.items()}
    notes_of: dict[str, list[str]] = defaultdict(list)
    for note_id, deal_id in note_links:
        notes_of[deal_id].append(bodies.get(note_id, ""))
    prefixes = note_prefixes()

    def state_of(body: str) -> str:
        # the longest matching prefix: "Płatność ..." openings share their first word
        hits = [s for s, p in prefixes.items() if body.startswith(p)]
        return max(hits, key=lambda s: len(prefixes[s])) if hits else "?"

    for p in expected:
        found = by_payment.get(p.payment_id, [])
        f.deals_duplicated += max(0, len(found) - 1)
        f.notes_expected_min += 1  # the final state's note, whatever the order
        f.notes_expected_max += len(p.states)  # and one per earlier state the order let it pass
        if not found:
            f.deals_missing += 1
            f.notes_lost += 1
            continue
        f.deals_found += 1
        props = found[0]
        amount_ok = Decimal(props.get("amount") or "0") == from_minor(p.amount_minor, p.currency.upper())
        if props.get("dealstage") != STAGE[p.final] or not amount_ok:
            f.deals_wrong_state += 1
        states = Counter(state_of(b) for b in notes_of.get(deal_of[p.payment_id], []))
        f.notes_found += sum(states.values())
        f.notes_duplicated += sum(n - 1 for n in states.values() if n > 1)
        if states[p.final] == 0:
            f.notes_lost += 1
    f.deals_duplicated += sum(1 for pid in by_payment if pid not in scenario.by_id)  # strays

    keys = {(p.email or "").lower() or p.customer_id for p in expected}
    f.contacts_expected = len(keys)
    seen = Counter((c.get("email") or "").lower() or c.get("stripe_customer_id") or "?" for c in contacts)
    f.contacts_found = len(contacts)
    f.contacts_duplicated = sum(n - 1 for n in seen.values() if n > 1)

    wanted: dict[str, tuple[str, str]] = {}  # Message-ID -> (recipient, kind)
    for p in expected:
        for mid, kind in p.emails().items():
            wanted[mid] = ((p.email or "").lower(), kind)
    got: Counter[str] = Counter()
    to_of: dict[str, set[str]] = defaultdict(set)
    for m in list(smtp.messages):
        mid = str(m.message.get("Message-ID", "")).strip()
        got[mid] += 1
        to_of[mid].update(r.lower() for r in m.rcpt_tos)
    f.emails_expected = len(wanted)
    f.emails_found = sum(got.values())
    f.emails_lost = sum(1 for mid in wanted if not got[mid])
    f.emails_duplicated = sum(n - 1 for n in got.values() if n > 1)
    f.emails_unexpected = sum(n for mid, n in got.items() if mid not in wanted)
    f.emails_wrong_recipient = sum(1 for mid, (to, _) in wanted.items() if got[mid] and to_of[mid] != {to})

    deliveries = list(receiver.received)
    per_key = Counter(h.key for h in deliveries)
    states_seen: dict[str, set[tuple[str, Decimal]]] = defaultdict(set)
    for h in deliveries:
        states_seen[h.payment_id].add((h.status, h.refunded_amount))
    f.handoff_deliveries = len(deliveries)
    f.handoff_keys = len(per_key)
    f.handoffs_redelivered = sum(n - 1 for n in per_key.values() if n > 1)
    f.handoffs_bad_signature = sum(1 for h in deliveries if not h.signed)
    for p in expected:
        f.handoff_states_expected_min += 1
        f.handoff_states_expected_max += len(p.states)
        final = (p.final, from_minor(p.refunded_minor, p.currency.upper()))
        if final not in states_seen.get(p.payment_id, set()):
            f.handoffs_lost += 1

    notes_by_payment = {pid: {state_of(b) for b in notes_of.get(did, [])} for pid, did in deal_of.items()}
    delivered_keys = set(per_key)
    for key, pid, action, status in effects:
        if action == "note":  # hubspot:note:<pid>:<status>:<refunded minor>
            present = key.split(":")[3] in notes_by_payment.get(pid, set())
        elif action.startswith("customer_"):
            present = bool(got[message_id(key, pid, SENDER)])
        elif action == "payment_changed":
            present = key in delivered_keys
        else:
            continue
        if not present:
            f.vanished[f"{action.removeprefix('customer_')} {status}"] += 1
    return f


def ledger_counts(path: Path) -> tuple[dict[str, int], dict[str, int], int]:
    """Inbox rows and effects by status, open dead letters; read-only, never a write lock."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return {"pending": -1}, {}, 0
    try:
        inbox = dict(conn.execute("SELECT status, count(*) FROM inbox GROUP BY status").fetchall())
        effects = dict(
            conn.execute("SELECT action || ':' || status, count(*) FROM effects GROUP BY 1").fetchall()
        )
        dead = conn.execute("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL").fetchone()[0]
        return inbox, effects, int(dead)
    except sqlite3.OperationalError:  # not created yet, or locked past the timeout: look again
        return {"pending": -1}, {}, 0
    finally:
        conn.close()


def ledger_effects(path: Path) -> list[tuple[str, str, str, str]]:
    """(key, payment id, action, status) of every effect the ledger recorded."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return [tuple(r) for r in conn.execute("SELECT key, payment_id, action, status FROM effects")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Supervisor:
    """The processes, their restarts, and the planned kills (fraction of deliveries acked, what)."""

    procs: Procs
    specs: dict[str, tuple[list[str], dict[str, str], Path]]
    ledger: Path
    api: str
    plan: list[tuple[float, str]]
    min_gap: float = 10.0
    done: list[tuple[float, str, bool]] = field(default_factory=list)  # (at, what, during sends)
    unplanned: Counter[str] = field(default_factory=Counter)
    last_kill: float = -math.inf
    waited_for_claims: float = 0.0

    def start(self, name: str) -> None:
        args, env, cwd = self.specs[name]
        self.procs.start(name, args, env, cwd=cwd)

    def supervise(self) -> None:
        """Restart whatever died on its own (a supervisor's Restart=always)."""
        for name in self.procs.exited():
            self.procs.procs.pop(name)
            self.unplanned[name] += 1
            console.print(f"[yellow]{name} exited on its own; restarting it[/]")
            self.start(name)

    def step(self, share_acked: float, sending: bool) -> None:
        if not self.plan or time.monotonic() - self.last_kill < self.min_gap:
            return
        due, what = self.plan[0]
        if share_acked < due and sending:
            return
        if what == "worker" and claimed(self.ledger) == 0 and self.waited_for_claims < 10:
            self.waited_for_claims += 0.2  # kill it while it holds claimed events, if it soon does
            return
        self.plan.pop(0)
        self.waited_for_claims = 0.0
        self.kill(what, sending)

    def kill(self, what: str, sending: bool) -> None:
        name = "prefect-server" if what == "prefect" else what
        console.print(f"[magenta]SIGKILL {name}[/] ({'during' if sending else 'after'} the deliveries)")
        self.procs.kill(name)
        self.done.append((time.monotonic(), what, sending))
        self.start(name)
        if name == "prefect-server":
            wait_http(f"{self.api}/health", "the Prefect server, restarted", 180)
        self.last_kill = time.monotonic()


def claimed(ledger: Path) -> int:
    inbox, _, _ = ledger_counts(ledger)
    return inbox.get("claimed", 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--payments", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7, help="the scenario, its order and the CRM's faults")
    parser.add_argument("--no-kills", action="store_true", help="no SIGKILLs, no Prefect restart")
    parser.add_argument("--crm-faults", choices=("on", "off"), default="on")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="deliveries started a second (0: no pacing); default 150, slower for small runs so the "
        "deliveries last at least 60 s and the kills fall among them",
    )
    parser.add_argument("--concurrency", type=int, default=24, help="deliveries in flight, as Stripe sends")
    parser.add_argument("--send-timeout", type=float, default=600.0, help="seconds Stripe keeps retrying")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds after the last delivery")
    parser.add_argument(
        "--settle",
        type=float,
        default=45.0,
        help="stop once the inbox is drained and nothing moved this long",
    )
    parser.add_argument(
        "--timeout-hold",
        type=float,
        default=0.0,
        help="seconds the CRM holds a lost answer before dropping the connection (0: drop at once)",
    )
    parser.add_argument("--stripe-rate-limit", type=int, default=100, help="Stripe API requests a second")
    parser.add_argument("--runs", type=int, default=None, help="[dispatcher] runs (default: the product's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory and the logs")
    args = parser.parse_args(argv)

    with console.status(f"building {args.payments:,} payments…"):
        scenario = build_scenario(args.payments, args.seed)
    dups = len(scenario.deliveries) - len(scenario.events)
    console.print(
        f"{args.payments:,} payments, {len(scenario.events):,} events, "
        f"{len(scenario.deliveries):,} deliveries ({dups:,} duplicates)"
    )
    if args.rate is None:
        args.rate = min(150.0, len(scenario.deliveries) / 60.0)
    started = time.monotonic()
    with bench_session("bench-chaos", keep=args.keep) as (tmp, procs), contextlib.ExitStack() as stack:
        servers: list[ServerThread] = []
        sender: multiprocessing.process.BaseProcess | None = None
        try:
            home, prefect_home = tmp / "home", tmp / "prefect"
            home.mkdir()
            stripe_fake = FakeStripe(scenario.world, rate_per_second=args.stripe_rate_limit)
            hubspot = FakeHubSpot(limit=100, period=10.0, daily=10**9).ready()
            if args.crm_faults == "on":
                # 30 % of calls fail: 429 (15 %), 5xx before the write (10 %), 5xx after it (5 %);
                # and 2 % write, then lose the answer
                hubspot.chaos(
                    rate_429=0.15,
                    rate_5xx=0.10,
                    rate_5xx_after_write=0.05,
                    rate_timeout_after_write=0.02,
                    seed=args.seed,
                    hold=args.timeout_hold,
                )
            handoff_secret = "handoff_bench_secret"
            receiver = HandoffReceiver(handoff_secret)
            for app in (stripe_fake.app, hubspot.app, receiver.app):
                servers.append(ServerThread(app).start())
            stripe_url, hubspot_url, receiver_url = (s.url for s in servers)
            smtp = stack.enter_context(smtp_server())

            prefect_port, bridge_port = free_port(), free_port()
            api = f"http://127.0.0.1:{prefect_port}/api"
            secret = "whsec_bench_chaos"
            config = tmp / "stripeflow.toml"
            # the worker keeps to the Stripe fake's read limit, as it keeps to a real account's
            config.write_text(
                f'[stripe]\nrequests_per_second = {args.stripe_rate_limit}\n\n[[crm]]\ntype = "hubspot"\n'
                + (f"\n[dispatcher]\nruns = {args.runs}\n" if args.runs else "")
            )
            env = base_env(
                PREFECT_HOME=str(prefect_home),
                PREFECT_API_URL=api,
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_UI_ENABLED="false",
                PREFECT_RUNNER_POLL_FREQUENCY="2",
                STRIPEFLOW_HOME=str(home),
                STRIPEFLOW_CONFIG=str(config),
                STRIPE_WEBHOOK_SECRET=secret,
                STRIPE_API_KEY="sk_test_chaos",
                STRIPE_API_BASE=stripe_url,
                HUBSPOT_TOKEN=hubspot.token,
                HUBSPOT_BASE_URL=hubspot_url,
                SMTP_HOST="127.0.0.1",
                SMTP_PORT=str(smtp.port),
                SMTP_SECURITY="none",
                STRIPEFLOW_HANDOFF_URL=f"{receiver_url}/handoff",
                STRIPEFLOW_HANDOFF_SECRET=handoff_secret,
            )
            m = [python(), "-m"]
            specs = {
                "prefect-server": (
                    [*m, "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                    env,
                    tmp,
                ),
                "bridge": ([*m, "stripeflow.cli", "bridge", "--port", str(bridge_port)], env, home),
                "worker": ([*m, "stripeflow.cli", "worker"], env, home),
            }
            plan = (
                [] if args.no_kills else [(0.2, "worker"), (0.4, "bridge"), (0.6, "worker"), (0.8, "prefect")]
            )
            chaos = Supervisor(procs, specs, home / "ledger.db", api, plan)
            chaos.start("prefect-server")
            wait_http(f"{api}/health", "the Prefect server", 180, procs)
            chaos.start("bridge")
            chaos.start("worker")
            wait_http(f"http://127.0.0.1:{bridge_port}/healthz", "the bridge", 60, procs)
            wait_http(f"{api}/deployments/name/{DEPLOYMENT}", "the worker's deployments", 120, procs)
            load = MachineLoad(procs.groups)

            bodies_path, result_path = tmp / "deliveries.json", tmp / "sender.json"
            bodies_path.write_text(json.dumps(scenario.deliveries))
            ctx = multiprocessing.get_context("spawn")
            acked = ctx.Value("i", 0)
            sender = ctx.Process(
                target=run_stripe_sender,
                args=(
                    f"http://127.0.0.1:{bridge_port}/webhooks/stripe",
                    str(bodies_path),
                    secret,
                    args.concurrency,
                    args.rate,
                    args.send_timeout,
                    acked,
                    str(result_path),
                ),
                daemon=True,
            )
            sender.start()
            total = len(scenario.deliveries)
            with console.status("delivering, with kills…") as status:
                while sender.is_alive():
                    chaos.supervise()
                    chaos.step(acked.value / total, sending=True)
                    status.update(
                        f"delivering: {acked.value:,}/{total:,} acknowledged, {len(chaos.done)} kills"
                    )
                    time.sleep(0.2)
            sent = json.loads(result_path.read_text()) if result_path.exists() else {}
            last_ack = sent.get("last_ack", math.nan)
            last_ack = time.time() if math.isnan(last_ack) else last_ack
            last_delivery = time.monotonic() - (time.time() - last_ack)

            figures = Figures()
            converged_at = math.nan
            quiet_since, last_progress = time.monotonic(), None
            with console.status("waiting for convergence…") as status:
                while time.monotonic() < last_delivery + args.deadline:
                    chaos.supervise()
                    chaos.step(1.0, sending=False)  # kills not yet done happen now, while it catches up
                    figures = measure(scenario, hubspot, smtp, receiver, home / "ledger.db")
                    if figures.converged and not chaos.plan:
                        converged_at = time.monotonic()
                        break
                    if figures.progress() != last_progress:
                        last_progress, quiet_since = figures.progress(), time.monotonic()
                    elif figures.drained and not chaos.plan and time.monotonic() - quiet_since > args.settle:
                        break  # drained and still: what is missing now stays missing
                    status.update(
                        f"waiting: {figures.deals_found:,}/{args.payments:,} deals, "
                        f"inbox {dict(sorted(figures.inbox.items()))}, "
                        f"{time.monotonic() - last_delivery:.0f} s after the last delivery"
                    )
                    time.sleep(1.0)
            waited = time.monotonic() - last_delivery
            others = load_note(load.others())
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping every process the bench started[/]")
            return 130
        finally:
            if sender is not None and sender.is_alive():
                sender.terminate()
                sender.join(5)
            procs.stop()  # before the fakes: a run in flight must not lose its CRM mid-call
            for server in servers:
                server.stop()

    report(args, scenario, sent, chaos, figures, hubspot, converged_at - last_delivery, waited, others)
    console.print(f"[dim]bench wall time {time.monotonic() - started:.0f} s[/]")
    return 0


def report(
    args: argparse.Namespace,
    scenario: Scenario,
    sent: dict[str, Any],
    chaos: Supervisor,
    f: Figures,
    hubspot: FakeHubSpot,
    converge: float,
    waited: float,
    others: str,
) -> None:
    n = args.payments
    kinds = Counter(p.final for p in scenario.payments)
    answers = sent.get("answers", {})
    injected = hubspot.injected()
    kills = Counter(what for _, what, _ in chaos.done)
    after = sum(1 for *_, during in chaos.done if not during)

    def row(
        what: str, expected: str, found: str, lost: int | None, dup: int | None, judged: bool = True
    ) -> list[str]:
        bad = (lost or 0) + (dup or 0)
        return [
            what,
            expected,
            found,
            "—" if lost is None else str(lost),
            "—" if dup is None else str(dup),
            "0 / 0" if judged else "—",
            verdict(-float(bad), 0.0, higher_is_better=True) if judged else "",
        ]

    converged = not math.isnan(converge)
    notes_exp = f"{f.notes_expected_min:,}–{f.notes_expected_max:,}"
    handoff_exp = f"{f.handoff_states_expected_min:,}–{f.handoff_states_expected_max:,} states"
    print_table(
        f"Chaos: {n:,} payments ({kinds['succeeded']:,} paid, {kinds['refunded']:,} refunded, "
        f"{kinds['partially_refunded']:,} part-refunded, {kinds['failed']:,} failed), seed {args.seed}",
        ["", "expected", "found", "missing", "duplicated", "target", ""],
        [
            row(
                "deals (by stripe_payment_id)",
                f"{n:,}",
                f"{f.deals_found:,}",
                f.deals_missing,
                f.deals_duplicated,
            ),
            row("  in the wrong stage or amount", "0", str(f.deals_wrong_state), f.deals_wrong_state, None),
            row(
                "notes (one per state per deal)",
                notes_exp,
                f"{f.notes_found:,}",
                f.notes_lost,
                f.notes_duplicated,
            ),
            row(
                "contacts (by e-mail, else customer id)",
                f"{f.contacts_expected:,}",
                f"{f.contacts_found:,}",
                None,
                f.contacts_duplicated,
            ),
            row(
                "customer e-mails (by Message-ID)",
                f"{f.emails_expected:,}",
                f"{f.emails_found:,}",
                f.emails_lost,
                f.emails_duplicated + f.emails_unexpected,
            ),
            row(
                "  to the wrong recipient", "0", str(f.emails_wrong_recipient), f.emails_wrong_recipient, None
            ),
            row(
                "hand-offs (final state per payment)",
                handoff_exp,
                f"{f.handoff_keys:,} keys",
                f.handoffs_lost,
                None,
            ),
            row(  # a kill mid-send leaves a hand-off in doubt: it goes again with the same key
                "  resent after a kill, same key (receiver keeps one)",
                "—",
                f"{f.handoff_deliveries:,} deliveries",
                None,
                f.handoffs_redelivered,
                judged=False,
            ),
        ],
        caption="missing: the final state's deal/note/e-mail/hand-off was not there at the end "
        "(converged, or the deadline: see the inbox below); duplicated: more than one of the same",
    )
    print_table(
        "Chaos: what was done to it, and how long it took",
        ["measure", "value", "target", ""],
        [
            [
                "deliveries (events + duplicates)",
                f"{len(scenario.deliveries):,} ({len(scenario.events):,} + "
                f"{len(scenario.deliveries) - len(scenario.events):,})",
                "",
                "",
            ],
            [
                "delivery attempts / non-2xx or errors / gave up",
                f"{sent.get('attempts', 0):,} / {sum(answers.values()):,} / {sent.get('gave_up', 0)}",
                "",
                "",
            ],
            [
                "  answers retried",
                ", ".join(f"{k} {v}" for k, v in sorted(answers.items())) or "none",
                "",
                "",
            ],
            [
                "kills: worker / bridge / Prefect server",
                f"{kills['worker']} / {kills['bridge']} / {kills['prefect']}"
                + (f" ({after} after the last delivery)" if after else ""),
                "0 / 0 / 0" if args.no_kills else "2 / 1 / 1",
                "",
            ],
            [
                "unplanned restarts (died on their own)",
                ", ".join(f"{k} {v}" for k, v in chaos.unplanned.items()) or "0",
                "",
                "",
            ],
            [
                "CRM faults injected: 429 / 5xx / 5xx after write / lost after write",
                f"{injected['429']} / {injected['5xx']} / {injected['5xx_after_write']} / "
                f"{injected['timeout_after_write']}",
                "",
                "",
            ],
            [
                "CRM calls / 429s of its own limit / most in any 10 s",
                f"{len(hubspot.log):,} / {sum(1 for r in hubspot.log if r.status == 429 and not r.fault)} / "
                f"{hubspot.max_in_window(10.0)}",
                "— / 0 / ≤ 100",
                "",
            ],
            [
                "inbox at the end",
                ", ".join(f"{k} {v}" for k, v in sorted(f.inbox.items())),
                "all done",
                verdict(float(f.drained), 1.0, higher_is_better=True),
            ],
            [
                "ledger effects (action:status)",
                ", ".join(f"{k} {v}" for k, v in sorted(f.effects.items())),
                "",
                "",
            ],
            [
                "ledger: recorded, never arrived (lost for good)"
                + ("" if converged else "; 'unknown' may include a chunk in flight"),
                ", ".join(f"{k} {v}" for k, v in sorted(f.vanished.items())) or "0",
                "0",
                verdict(-float(sum(f.vanished.values())), 0.0, True),
            ],
            ["open dead letters", str(f.dead_letters), "0", verdict(-float(f.dead_letters), 0.0, True)],
            [
                "last delivery → converged",
                secs(converge) if converged else f"not converged (gave up after {waited:.0f} s)",
                f"< {TARGET_CONVERGE:g} s",
                verdict(converge if converged else math.inf, TARGET_CONVERGE),
            ],
        ],
        caption=machine(),
    )
    console.print(f"[dim]{others}[/]")


if __name__ == "__main__":
    raise SystemExit(main())
