"""Webhook-to-deal benchmark: from a signed Stripe webhook to its deal in the CRM, steady traffic.

    PYTHONPATH=. .venv/bin/python bench/webhook_to_deal.py                 # 2 events/s for 60 s
    PYTHONPATH=. .venv/bin/python bench/webhook_to_deal.py --rate 5 --seconds 30

Everything is the real thing, started as it is in production, in a temp directory: a Prefect
server (SQLite), the bridge (`stripeflow bridge`) and the worker (`stripeflow worker`: served
deployments + the dispatcher), with the built-in local CRM. The Stripe API the flow enriches
from is `FakeStripe`, served in a thread here; every customer and charge an event names is put
in its world first, so enrichment finds them.

For each distinct `payment_intent.succeeded` the clock starts just before the webhook is sent
and stops when a thread that polls the CRM's SQLite (read-only, every `--poll` seconds) first
sees a deal with that payment id. A few warm-up payments go first and are reported apart: they
include the worker's first-run costs (imports, CRM schema, Stripe client).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import secrets
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    MachineLoad,
    Procs,
    base_env,
    bench_session,
    console,
    cpu_seconds,
    load_note,
    machine,
    print_table,
    python,
    secs,
    summary,
    verdict,
    wait_http,
)
from stripeflow.launcher import free_port
from stripeflow.testing.server import ServerThread
from stripeflow.testing.stripe_api import FakeStripe
from stripeflow.testing.stripe_events import StripeWorld, sign

TARGET_P50 = 2.0  # seconds, webhook to deal (DESIGN.md, "Numbers to reach")
TARGET_P95 = 5.0
DEPLOYMENT = "process-payment-events/process-payment-events"
PRODUCTS = [
    ("Subskrypcja Pro", 24900, "pln"),
    ("Konsultacja 1h", 35000, "pln"),
    ("Audyt CRM", 199900, "pln"),
    ("Starter plan", 2900, "eur"),
]


class DealWatcher(threading.Thread):
    """Polls the local CRM's SQLite read-only and notes when each payment's deal first appears."""

    def __init__(self, path: Path, interval: float) -> None:
        super().__init__(name="deal-watcher", daemon=True)
        self.path, self.interval = path, interval
        self.seen: dict[str, float] = {}
        self.polls = 0
        self._halt = threading.Event()
        self._last_id = 0

    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._halt.is_set():
            now = time.monotonic()
            try:
                if conn is None:
                    # mode=ro: we must never write to, or take a write lock on, the worker's CRM.
                    conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1)
                rows = conn.execute(
                    "SELECT id, payment_id FROM deals WHERE id > ? ORDER BY id", (self._last_id,)
                ).fetchall()
                seen_at = time.monotonic()
                for deal_id, payment_id in rows:
                    self.seen.setdefault(payment_id, seen_at)
                    self._last_id = max(self._last_id, deal_id)
                self.polls += 1
            except sqlite3.OperationalError:  # not created yet (no file or no table): look again
                if conn is not None:
                    conn.close()
                    conn = None
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - now)))
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@dataclass
class Sent:
    payment_id: str
    at: float  # monotonic, just before the POST
    ack: float = math.nan  # seconds to the bridge's 2xx
    status: int = 0


@dataclass
class Traffic:
    world: StripeWorld
    secret: str
    url: str
    sent: list[Sent] = field(default_factory=list)

    def events(self, n: int) -> list[tuple[str, str]]:
        """(payment id, body) for n distinct payments, each by a new customer, built up front."""
        out = []
        for i in range(n):
            product, amount, currency = PRODUCTS[i % len(PRODUCTS)]
            customer = self.world.customer(f"klient{secrets.token_hex(4)}@example.pl", "Anna Nowak")
            pi, _ = self.world.payment_intent(amount, currency, customer, product=product)
            out.append((pi["id"], json.dumps(self.world.event("payment_intent.succeeded", pi))))
        return out

    def send(self, client: httpx.Client, payment_id: str, body: str) -> Sent:
        # Signed at send time, as Stripe does: the timestamp is fresh whatever the run's length.
        headers = {"Stripe-Signature": sign(body, self.secret), "Content-Type": "application/json"}
        item = Sent(payment_id, time.monotonic())
        response = client.post(self.url, content=body, headers=headers)
        item.ack, item.status = time.monotonic() - item.at, response.status_code
        self.sent.append(item)
        return item

    def paced(self, events: list[tuple[str, str]], rate: float, procs: Procs) -> list[Sent]:
        """Send on a fixed schedule (start + i/rate), whatever the pipeline is doing."""
        out = []
        with httpx.Client(timeout=10) as client:
            start = time.monotonic()
            for i, (payment_id, body) in enumerate(events):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                out.append(self.send(client, payment_id, body))
                if i % 20 == 0:
                    procs.check()
        return out


def wait_for_deals(watcher: DealWatcher, items: list[Sent], timeout: float, procs: Procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.payment_id in watcher.seen for s in items):
            return
        procs.check()
        time.sleep(0.1)


def to_deal(watcher: DealWatcher, items: list[Sent]) -> list[float]:
    """Seconds from send to deal; +inf for a deal never seen (it then fails any percentile target)."""
    return [watcher.seen[s.payment_id] - s.at if s.payment_id in watcher.seen else math.inf for s in items]


def flow_runs(api: str, since: datetime) -> list[dict[str, Any]]:
    """Flow runs created at or after `since` (same machine, same clock), every page."""
    runs: list[dict[str, Any]] = []
    offset = 0
    with httpx.Client(timeout=30) as client:
        while True:
            page = client.post(f"{api}/flow_runs/filter", json={"limit": 200, "offset": offset})
            page.raise_for_status()
            batch = page.json()
            runs.extend(r for r in batch if _when(r["created"]) >= since)
            offset += len(batch)
            if len(batch) < 200:
                return runs


def flow_run_count(api: str) -> int:
    response = httpx.post(f"{api}/flow_runs/count", json={}, timeout=30)
    response.raise_for_status()
    return int(response.json())


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def run_seconds(run: dict[str, Any]) -> float:
    """Wall time from the run's start to its end, from the timestamps Prefect stored."""
    if not run.get("start_time") or not run.get("end_time"):
        return math.nan
    return (_when(run["end_time"]) - _when(run["start_time"])).total_seconds()


def busy_answers(log: Path) -> int:
    """Requests the Prefect server answered 503 (with PREFECT_API_LOG_RETRYABLE_ERRORS it logs each)."""
    try:
        return log.read_text(errors="replace").count("Encountered retryable exception in request")
    except OSError:
        return 0


def gaps_between_runs(runs: list[dict[str, Any]]) -> list[float]:
    """Seconds from one run's end to the next one's start: the dispatcher's time between runs.

    Under steady traffic events are already waiting when a run ends, so this is overhead:
    the engine's teardown, the inbox poll and creating the next run.
    """
    timed = sorted(
        (_when(r["start_time"]), _when(r["end_time"]))
        for r in runs
        if r.get("start_time") and r.get("end_time")
    )
    return [(nxt[0] - cur[1]).total_seconds() for cur, nxt in itertools.pairwise(timed)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2.0, help="payments a second")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the steady traffic")
    parser.add_argument(
        "--warmup", type=int, default=3, help="payments sent (and awaited) first, reported apart"
    )
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of no traffic to measure the processes' idle CPU"
    )
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between looks at the CRM")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for the last deals after the traffic ends",
    )
    parser.add_argument(
        "--stripe-rate-limit",
        type=int,
        default=25,
        help="FakeStripe's requests a second (Stripe test mode: 25)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory and the logs")
    args = parser.parse_args(argv)

    started = time.monotonic()
    with bench_session("bench-deal", keep=args.keep) as (tmp, procs):
        fake_server: ServerThread | None = None
        watcher: DealWatcher | None = None
        try:
            home, prefect_home = tmp / "home", tmp / "prefect"
            home.mkdir()
            prefect_port, bridge_port = free_port(), free_port()
            api = f"http://127.0.0.1:{prefect_port}/api"
            secret = "whsec_bench_" + secrets.token_hex(16)
            fake = FakeStripe(rate_per_second=args.stripe_rate_limit)
            fake_server = ServerThread(fake.app).start()
            env = base_env(
                PREFECT_HOME=str(prefect_home),
                PREFECT_API_URL=api,
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_UI_ENABLED="false",
                PREFECT_RUNNER_POLL_FREQUENCY="2",  # as `stripeflow run` sets it
                STRIPEFLOW_HOME=str(home),
                STRIPE_WEBHOOK_SECRET=secret,
                STRIPE_API_KEY="sk_test_x",
                STRIPE_API_BASE=fake_server.url,
            )

            t = time.monotonic()
            # The server logs each request it answers 503 (e.g. SQLite "database is locked"); the
            # client retries those after ~2 s, so they are counted in the report.
            procs.start(
                "prefect-server",
                [
                    python(),
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(prefect_port),
                ],
                {**env, "PREFECT_API_LOG_RETRYABLE_ERRORS": "true"},
                cwd=tmp,
            )
            prefect_up = wait_http(f"{api}/health", "the Prefect server", 180, procs)
            procs.start(
                "bridge",
                [python(), "-m", "stripeflow.cli", "bridge", "--port", str(bridge_port)],
                env,
                cwd=home,
            )
            procs.start("worker", [python(), "-m", "stripeflow.cli", "worker"], env, cwd=home)
            wait_http(f"http://127.0.0.1:{bridge_port}/healthz", "the bridge", 60, procs)
            wait_http(f"{api}/deployments/name/{DEPLOYMENT}", "the worker's deployments", 120, procs)
            startup = time.monotonic() - t

            watcher = DealWatcher(home / "crm.db", args.poll)
            watcher.start()
            traffic = Traffic(fake.world, secret, f"http://127.0.0.1:{bridge_port}/webhooks/stripe")
            n = max(1, round(args.rate * args.seconds))
            with console.status(f"building {args.warmup + n} payments in the Stripe fake…"):
                warm_events = traffic.events(args.warmup)
                events = traffic.events(n)

            with console.status(f"warm-up: {args.warmup} payments, one at a time…"):
                warm: list[Sent] = []
                with httpx.Client(timeout=10) as client:
                    for payment_id, body in warm_events:
                        warm.append(traffic.send(client, payment_id, body))
                        wait_for_deals(watcher, warm[-1:], 120, procs)
            warm_lat = to_deal(watcher, warm)

            names = ("worker", "bridge", "prefect-server")
            # What the processes burn with no traffic (the runner's polling, Prefect's services),
            # so the report can say what a flow run itself costs.
            with console.status(f"idle baseline: {args.idle:g} s without traffic…"):
                time.sleep(2)  # let the warm-up's last run finish its teardown first
                idle_before = {name: cpu_seconds(procs.pid(name)) for name in names}
                time.sleep(args.idle)
                idle = {
                    name: (cpu_seconds(procs.pid(name)) - idle_before[name]) / args.idle for name in names
                }

            since = datetime.now(UTC)
            window = time.monotonic()
            runs_before = flow_run_count(api)
            cpu_before = {name: cpu_seconds(procs.pid(name)) for name in names}
            load = MachineLoad(procs.groups)
            stripe_calls_before = len(fake.requests)
            with console.status(f"steady traffic: {args.rate:g} payments/s for {args.seconds:g} s…"):
                measured = traffic.paced(events, args.rate, procs)
            with console.status("waiting for the last deals…"):
                wait_for_deals(watcher, measured, args.drain_timeout, procs)
            window = time.monotonic() - window
            cpu = {name: cpu_seconds(procs.pid(name)) - before for name, before in cpu_before.items()}
            busy = {name: cpu[name] - idle[name] * window for name in names}  # above the idle baseline
            lat = to_deal(watcher, measured)
            runs_total = flow_run_count(api) - runs_before
            runs = [
                r for r in flow_runs(api, since) if r.get("parameters", {}).get("event_ids")
            ]  # the dispatcher's runs
            stripe_calls = len(fake.requests) - stripe_calls_before
            others = load_note(load.others())
            locked = busy_answers(procs.log_dir / "prefect-server.log")
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping every process the bench started[/]")
            return 130
        except Exception:
            procs.explain()  # before the stop below: a child that died is the usual cause
            raise
        finally:
            procs.stop()  # before the Stripe fake: a run in flight must not lose its Stripe API
            if watcher is not None:
                watcher.stop()
            if fake_server is not None:
                fake_server.stop()

    assert watcher is not None
    report(
        args,
        measured,
        lat,
        warm_lat,
        runs_total,
        runs,
        cpu,
        busy,
        stripe_calls,
        startup,
        prefect_up,
        others,
        watcher.polls,
        time.monotonic() - started,
        locked,
    )
    return 0


def report(
    args: argparse.Namespace,
    measured: list[Sent],
    lat: list[float],
    warm_lat: list[float],
    runs_total: int,
    runs: list[dict[str, Any]],
    cpu: dict[str, float],
    busy: dict[str, float],
    stripe_calls: int,
    startup: float,
    prefect_up: float,
    load: str,
    polls: int,
    wall: float,
    locked: int,
) -> None:
    s = summary(lat)
    missing = sum(1 for v in lat if math.isinf(v))
    acks = summary([m.ack for m in measured])
    bad = sum(1 for m in measured if not 200 <= m.status < 300)
    per_run = [len(r["parameters"]["event_ids"]) for r in runs]
    durations = summary([d for d in map(run_seconds, runs) if not math.isnan(d)])
    gaps = summary(gaps_between_runs(runs))
    n = len(measured)

    def fmt(v: float) -> str:
        return "not seen" if math.isinf(v) else secs(v)

    print_table(
        f"Webhook → deal in the local CRM: {n} payments at {args.rate:g}/s for {args.seconds:g} s",
        ["measure", "value", "target", ""],
        [
            ["p50 webhook → deal", fmt(s["p50"]), f"< {TARGET_P50:g} s", verdict(s["p50"], TARGET_P50)],
            ["p95 webhook → deal", fmt(s["p95"]), f"< {TARGET_P95:g} s", verdict(s["p95"], TARGET_P95)],
            ["p99 webhook → deal", fmt(s["p99"]), "", ""],
            ["max webhook → deal", fmt(s["max"]), "", ""],
            ["deals seen", f"{n - missing}/{n}", f"{n}/{n}", verdict(float(n - missing), float(n), True)],
            ["bridge 2xx p50 / max", f"{acks['p50'] * 1000:.1f} / {acks['max'] * 1000:.1f} ms", "", ""],
            ["non-2xx answers", str(bad), "0", verdict(-bad, 0, True)],
            ["flow runs (all, in the window)", str(runs_total), "", ""],
            [
                "dispatcher runs / payments a run",
                f"{len(runs)} / {sum(per_run) / len(per_run):.1f}" if per_run else "0",
                "",
                "",
            ],
            ["flow run duration p50 / max", f"{secs(durations['p50'])} / {secs(durations['max'])}", "", ""],
            ["gap, a run's end → next start p50 / max", f"{secs(gaps['p50'])} / {secs(gaps['max'])}", "", ""],
            ["Prefect API 503s (retryable, e.g. SQLite locked)", str(locked), "", ""],
            ["Stripe API calls a payment", f"{stripe_calls / n:.2f}" if n else "—", "", ""],
            [
                "CPU s: worker / bridge / Prefect server",
                f"{cpu['worker']:.1f} / {cpu['bridge']:.1f} / {cpu['prefect-server']:.1f}",
                "",
                "",
            ],
            [
                "CPU s a flow run, above idle: worker / Prefect",
                f"{busy['worker'] / runs_total:.2f} / {busy['prefect-server'] / runs_total:.2f}"
                if runs_total
                else "—",
                "",
                "",
            ],
            ["warm-up → deal (each)", ", ".join(fmt(v) for v in warm_lat), "", ""],
            ["start-up: Prefect / all three", f"{secs(prefect_up)} / {secs(startup)}", "", ""],
        ],
        caption=machine(),
    )
    console.print(f"[dim]{load}; CRM polled {polls} times; bench wall time {wall:.0f} s[/]")


if __name__ == "__main__":
    raise SystemExit(main())
