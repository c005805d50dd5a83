"""Bridge benchmark: verified, durably stored webhooks a second, and time to 2xx at a steady rate.

    PYTHONPATH=. .venv/bin/python bench/bridge.py            # SQLite, plus PostgreSQL if it answers
    PYTHONPATH=. .venv/bin/python bench/bridge.py --events 20000 --postgres no

The real bridge runs as its own process (`stripeflow bridge`, uvicorn) with a fresh
STRIPEFLOW_HOME. From this process we send distinct, signed `payment_intent.succeeded` events
built with `StripeWorld` over Stripe's fixtures:

(a) throughput: closed loop, `--concurrency` requests in flight over keep-alive connections;
    figure = 2xx answers / wall time, and the inbox rows are counted afterwards to prove each
    acknowledged event was stored;
(b) latency: open loop at `--rate` events a second for `--seconds`; each request is sent on its
    schedule whether or not earlier ones were answered, and its latency runs from its *scheduled*
    send time, so a stalled server cannot hide behind a waiting client (no coordinated omission).

The client is a minimal HTTP/1.1 writer/reader over asyncio streams with every request
pre-built and pre-signed, so it costs a few microseconds a request and is not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.common import (
    MachineLoad,
    Procs,
    base_env,
    bench_session,
    console,
    cpu_seconds,
    load_note,
    machine,
    ms,
    print_table,
    python,
    summary,
    verdict,
    wait_http,
)
from stripeflow.core.ledger import Ledger
from stripeflow.launcher import free_port
from stripeflow.testing.stripe_events import StripeWorld, sign

TARGET_THROUGHPUT = 1000.0  # events/s (DESIGN.md, "Numbers to reach")
TARGET_P99 = 0.050  # seconds to 2xx at 200 events/s
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- the client ----------------------------------------------------------------------------------


def raw_request(body: str, secret: str, port: int) -> bytes:
    """One complete HTTP request delivering a signed event, as Stripe sends it."""
    head = (
        f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json; charset=utf-8\r\nUser-Agent: Stripe/1.0\r\n"
        f"Stripe-Signature: {sign(body, secret)}\r\nContent-Length: {len(body.encode())}\r\n\r\n"
    )
    return head.encode() + body.encode()


def build_requests(n: int, secret: str, port: int, world: StripeWorld) -> list[bytes]:
    """n complete HTTP requests, each a distinct signed payment_intent.succeeded."""
    out = []
    for i in range(n):
        customer = world.customer(f"klient{i}@example.pl", "Anna Nowak")
        pi, _ = world.payment_intent(24900, "pln", customer, product="Subskrypcja Pro")
        out.append(raw_request(json.dumps(world.event("payment_intent.succeeded", pi)), secret, port))
    return out


class Conn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    new: int = 0  # 2xx answers saying duplicate=false
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    max_send_lag: float = 0.0  # how late the open-loop client sent relative to its schedule
    connections: int = 0
    reconnects: int = 0  # requests resent because the server had closed an idle connection

    def record(self, status: int, body: bytes) -> None:
        self.statuses[status] += 1
        if 200 <= status < 300 and b'"duplicate":false' in body:
            self.new += 1


async def closed_loop(port: int, requests: list[bytes], concurrency: int) -> Outcome:
    """Keep `concurrency` requests in flight until all are answered."""
    out = Outcome()
    conns = [await Conn.open(port) for _ in range(concurrency)]
    out.connections = len(conns)
    todo = iter(requests)  # shared by the workers: asyncio is single-threaded, no lock needed

    async def worker(conn: Conn) -> None:
        for raw in todo:
            out.record(*await conn.request(raw))

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    out.elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    return out


async def open_loop(port: int, requests: list[bytes], rate: float, warm_connections: int = 8) -> Outcome:
    """Send request i at start + i/rate on an idle connection (a new one if none is idle)."""
    out = Outcome()
    loop = asyncio.get_running_loop()
    idle = [await Conn.open(port) for _ in range(warm_connections)]
    out.connections = len(idle)

    async def one(raw: bytes, scheduled: float) -> None:
        if idle:
            conn = idle.pop()
        else:  # everything busy: a fresh connection, and its handshake counts in the latency
            conn = await Conn.open(port)
            out.connections += 1
        try:
            answer = await conn.request(raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            # uvicorn closes connections idle for 5 s; like any HTTP client, resend on a new one
            # (the time lost stays in this request's latency).
            conn.close()
            conn = await Conn.open(port)
            out.connections += 1
            out.reconnects += 1
            answer = await conn.request(raw)
        out.record(*answer)
        out.latencies.append(loop.time() - scheduled)
        idle.append(conn)

    tasks = []
    start = loop.time() + 0.05
    for i, raw in enumerate(requests):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        out.max_send_lag = max(out.max_send_lag, loop.time() - scheduled)
        tasks.append(asyncio.create_task(one(raw, scheduled)))
    await asyncio.gather(*tasks)
    out.elapsed = loop.time() - start
    for c in idle:
        c.close()
    return out


# -- one scenario (a database) -------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    throughput: float = float("nan")
    sent: int = 0
    acked_new: int = 0
    stored: int = 0
    commits: int = 0
    cpu_per_event: float = float("nan")  # bridge process CPU seconds per event, throughput run
    load: str = ""
    latency: dict[str, float] = field(default_factory=dict)
    rate_achieved: float = float("nan")
    open_loop_conns: int = 0
    reconnects: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    note: str = ""


def inbox_stats(url: str) -> tuple[int, int]:
    """(rows in the inbox, distinct group commits); all rows of one commit share `received_at`."""
    ledger = Ledger(url)
    try:
        stored = sum(ledger.inbox_counts().values())
        with ledger.engine.connect() as conn:
            commits = int(conn.execute(text("SELECT COUNT(DISTINCT received_at) FROM inbox")).scalar_one())
        return stored, commits
    finally:
        ledger.dispose()


def run_backend(
    backend: str, ledger_url: str | None, args: argparse.Namespace, tmp: Path, procs: Procs
) -> Result:
    home = tmp / backend
    port = free_port()
    secret = "whsec_bench_" + secrets.token_hex(16)
    url = ledger_url or f"sqlite:///{home / 'ledger.db'}"
    env = base_env(STRIPEFLOW_HOME=str(home), STRIPE_WEBHOOK_SECRET=secret)
    if ledger_url:
        env["DATABASE_URL"] = ledger_url
    home.mkdir(parents=True)
    # cwd = the temp home, so no stripeflow.toml of the developer's is read.
    procs.start(
        f"bridge-{backend}", [python(), "-m", "stripeflow.cli", "bridge", "--port", str(port)], env, cwd=home
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", f"the bridge ({backend})", 60, procs)

    world = StripeWorld()
    latency_n = int(args.rate * args.seconds)
    with console.status(f"[{backend}] building and signing {args.warmup + args.events + latency_n} events…"):
        warm = build_requests(args.warmup, secret, port, world)
        burst = build_requests(args.events, secret, port, world)
        paced = build_requests(latency_n, secret, port, world)

    result = Result(backend)
    pid = procs.pid(f"bridge-{backend}")
    # A PostgreSQL backend's CPU is the bench's too: its process title names the database.
    load = MachineLoad(procs.groups, also_ours=ledger_url.rsplit("/", 1)[-1] if ledger_url else None)
    with console.status(
        f"[{backend}] warm-up ({args.warmup}) and throughput ({args.events} events, "
        f"{args.concurrency} in flight)…"
    ):
        asyncio.run(closed_loop(port, warm, min(args.concurrency, 16)))
        stored_before, commits_before = inbox_stats(url)
        cpu_before = cpu_seconds(pid)
        tp = asyncio.run(closed_loop(port, burst, args.concurrency))
        result.cpu_per_event = (cpu_seconds(pid) - cpu_before) / len(burst)
    stored_after, commits_after = inbox_stats(url)
    result.sent = len(burst)
    result.acked_new = tp.new
    result.stored = stored_after - stored_before
    result.commits = commits_after - commits_before
    # Only events both acknowledged *and* found in the inbox count as "durably stored".
    result.throughput = min(tp.new, result.stored) / tp.elapsed
    result.errors.update({s: c for s, c in tp.statuses.items() if not 200 <= s < 300})

    with console.status(f"[{backend}] latency: {args.rate:g}/s for {args.seconds:g} s, open loop…"):
        lat = asyncio.run(open_loop(port, paced, args.rate))
    stored_final, _ = inbox_stats(url)
    result.load = load_note(load.others())
    result.latency = summary(lat.latencies)
    result.rate_achieved = len(paced) / lat.elapsed
    result.open_loop_conns = lat.connections
    result.reconnects = lat.reconnects
    result.errors.update({s: c for s, c in lat.statuses.items() if not 200 <= s < 300})
    if stored_final - stored_after != lat.new:
        result.note = f"latency phase: {lat.new} acknowledged but {stored_final - stored_after} stored"
    if lat.max_send_lag > 0.005:
        result.note += f" client fell {lat.max_send_lag * 1000:.0f} ms behind schedule"
    procs.stop(f"bridge-{backend}")
    return result


# -- PostgreSQL: a fresh database per run --------------------------------------------------------


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except Exception:
        return False


def pg_create() -> str:
    import psycopg

    name = f"stripeflow_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- main ----------------------------------------------------------------------------------------


def report(results: list[Result], args: argparse.Namespace) -> None:
    rows = []
    for r in results:
        if r.note == "skipped":
            rows.append([r.backend, "skipped (not reachable)", "", "", "", "", "", "", "", ""])
            continue
        lat = r.latency
        rows.append(
            [
                r.backend,
                f"{r.throughput:,.0f}/s {verdict(r.throughput, TARGET_THROUGHPUT, higher_is_better=True)}",
                f"{r.stored:,}/{r.sent:,}",
                f"{r.cpu_per_event * 1e6:.0f} µs",
                f"{r.stored / r.commits:.0f}" if r.commits else "—",
                ms(lat["p50"]),
                ms(lat["p95"]),
                f"{ms(lat['p99'])} {verdict(lat['p99'], TARGET_P99)}",
                ms(lat["max"]),
                ", ".join(f"{s}×{c}" for s, c in sorted(r.errors.items())) or "none",
            ]
        )
    print_table(
        f"Bridge: {args.events:,} events at {args.concurrency} in flight; "
        f"latency at {args.rate:g}/s for {args.seconds:g} s (open loop)",
        [
            "ledger",
            f"stored/s (≥ {TARGET_THROUGHPUT:,.0f})",
            "stored/sent",
            "bridge CPU/event",
            "events/commit",
            "p50",
            "p95",
            f"p99 (< {TARGET_P99 * 1000:.0f} ms)",
            "max",
            "non-2xx",
        ],
        rows,
        caption=machine(),
    )
    for r in results:
        if r.note and r.note != "skipped":
            console.print(f"[yellow]{r.backend}: {r.note.strip()}[/]")
        if r.latency:
            console.print(
                f"[dim]{r.backend}: open loop achieved {r.rate_achieved:.1f}/s, "
                f"{r.open_loop_conns} connections ({r.reconnects} reopened after the server's "
                f"keep-alive timeout), {int(r.latency['n'])} samples; "
                f"{r.load}[/]"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000, help="events in the throughput run")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (throughput run)")
    parser.add_argument("--warmup", type=int, default=300, help="events sent first, not timed")
    parser.add_argument("--rate", type=float, default=200.0, help="events a second in the latency run")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency run")
    parser.add_argument(
        "--postgres",
        choices=["auto", "yes", "no"],
        default="auto",
        help="also run on PostgreSQL at 127.0.0.1:5432 (auto: when it answers)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp directory and logs")
    args = parser.parse_args(argv)

    results: list[Result] = []
    with bench_session("bench-bridge", keep=args.keep) as (tmp, procs):
        try:
            results.append(run_backend("sqlite", None, args, tmp, procs))
            if args.postgres != "no":
                if pg_available():
                    db = pg_create()
                    try:
                        url = f"postgresql://postgres@127.0.0.1:5432/{db}"
                        results.append(run_backend("postgresql", url, args, tmp, procs))
                    finally:
                        procs.stop()  # the bridge holds connections: stop it before the drop
                        pg_drop(db)
                elif args.postgres == "yes":
                    raise RuntimeError("PostgreSQL does not answer at 127.0.0.1:5432")
                else:
                    results.append(Result("postgresql", note="skipped"))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping the bridge[/]")
            return 130
    report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
