"""Fuzz benchmark: signed, mutated events against the real bridge, then storage made to fail.

    PYTHONPATH=. .venv/bin/python bench/fuzz.py                  # 10,000 events, seed 7
    PYTHONPATH=. .venv/bin/python bench/fuzz.py --events 2000 --seed 3 --postgres no

The real bridge runs as its own process (`stripeflow bridge`, uvicorn) with a fresh
STRIPEFLOW_HOME and `[bridge] request_deadline = 3` (so a stall shows in seconds, not tens).
Events are built with `StripeWorld` over Stripe's fixtures, mutated by a seeded RNG (wrong types,
huge, negative and 64-bit-overflowing numbers, floats, NaN, U+2028/U+2029/NUL/lone surrogates,
nesting up to 50,000 deep, integers past Python's 4,300-digit limit, missing and extra fields,
non-string ids, strings up to 1.1 MB, broken JSON), signed with the bridge's secret, and sent
over keep-alive connections, each request with a client timeout (a "hang" if it passes).

Phases, each on a real ledger:
1. fuzz (SQLite): `--events` mutated events; every answer must be a 2xx or a 4xx with a code
   the bridge documents; then a good event must be accepted and /healthz be 200.
2. stall (SQLite): the bench holds the database's write lock (as a long migration or a stuck
   transaction would) while good events arrive: each must get 503 with Retry-After by the
   deadline, /healthz must say the writer is stuck, and after the lock goes the retried events
   are accepted.
3. outage (PostgreSQL behind a TCP proxy, stripeflow/testing/tcp_proxy.py): fuzz and good events while
   the database is up (no 5xx), then the proxy is taken down (connections cut, new ones
   refused): good events get 503 with Retry-After; after it comes back they are accepted.
A 5xx outside phases 2 and 3's failure windows is "unexplained"; the target is none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import secrets
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.bridge import pg_available, pg_create, pg_drop, raw_request
from bench.common import Procs, base_env, bench_session, console, machine, print_table, python, wait_http
from stripeflow.core.ledger import Ledger
from stripeflow.launcher import free_port
from stripeflow.testing.stripe_events import StripeWorld
from stripeflow.testing.tcp_proxy import TcpProxy

DEADLINE = 3.0  # the bridge's request_deadline in this bench
CLIENT_TIMEOUT = 3 * DEADLINE + 5  # past this a request counts as a hang
# Every 4xx code the bridge documents (stripeflow/bridge/app.py); anything else is unexplained.
KNOWN_4XX = {
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "client_disconnected",
    "invalid_json",
    "malformed_event",
    "unstorable_event",
    "payload_too_large",
}

# -- mutations -------------------------------------------------------------------------------------

Event = dict[str, Any]


class Mutator:
    """Turns a valid event into a hostile body (str), deterministically for a seed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.raw: dict[str, str] = {}  # placeholder -> raw JSON text json.dumps cannot produce
        self.applied: Counter[str] = Counter()

    def _raw(self, text: str) -> str:
        key = f"@@RAW{len(self.raw)}@@"
        self.raw[key] = text
        return key

    def value(self) -> Any:
        """One hostile value."""
        r = self.rng
        kind = r.choice(
            [
                "int",
                "int",
                "float",
                "bool",
                "null",
                "str",
                "str",
                "long",
                "unicode",
                "deep",
                "digits",
                "container",
            ]
        )
        if kind == "int":
            return r.choice([2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, -1, 0, 10**30, -(10**30)])
        if kind == "float":
            return r.choice([1.5, -0.0, 1e308, 1.7e9, float("inf"), float("-inf"), float("nan")])
        if kind == "bool":
            return r.choice([True, False])
        if kind == "null":
            return None
        if kind == "str":
            return r.choice(["", "0", "1764547200", "evt_", "evt_1", "pi_1", "true", "null", " "])
        if kind == "long":
            return "x" * r.choice([254, 255, 256, 1_000, 100_000])
        if kind == "unicode":
            return r.choice(
                [
                    "\u2028",
                    "\u2029",
                    "\x00",
                    "\ud800",
                    "\udfff",
                    "a\u2028b",
                    "evt_\x00",
                    "ch_\u2029",
                    "\ufeff",
                    "😀" * 50,
                ]
            )
        if kind == "deep":
            depth = r.choice([10, 100, 500, 900, 2_000, 50_000])
            opener, closer = r.choice([("[", "]"), ('{"a":', "}")])
            return self._raw(opener * depth + "1" + closer * depth)
        if kind == "digits":
            return self._raw(r.choice(["", "-"]) + "9" * r.choice([20, 400, 4_299, 4_301, 20_000]))
        return r.choice([[], {}, [1, 2], {"id": "evt_1"}, {"object": None}, [[[]]]])

    def paths(self, event: Event) -> list[tuple[Any, Any]]:
        """(container, key) pairs to aim at: the stored fields most, then anything in the object."""
        out: list[tuple[Any, Any]] = [(event, k) for k in ("id", "type", "created", "livemode", "data")] * 3
        out += [(event, k) for k in event]
        data = event.get("data")
        if isinstance(data, dict):
            out.append((data, "object"))
            obj = data.get("object")
            if isinstance(obj, dict):
                out += [(obj, "id")] * 4 + [(obj, k) for k in obj]
        return out

    def body(self, event: Event) -> str:
        r = self.rng
        op = r.choices(["none", "mutate", "raw"], weights=[12, 83, 5])[0]
        self.raw.clear()
        if op == "none":
            self.applied["unmutated"] += 1
            return json.dumps(event)
        if op == "raw":
            return self.raw_body(event)
        for _ in range(r.choice([1, 1, 2, 3])):
            container, key = r.choice(self.paths(event))
            action = r.choices(["set", "delete", "extra", "retype"], weights=[60, 15, 15, 10])[0]
            self.applied[action] += 1
            if action == "set":
                container[key] = self.value()
            elif action == "delete":
                container.pop(key, None)
            elif action == "extra":
                container[r.choice(["x_extra", "", "\u2028", "id ", "ID", "__proto__"])] = self.value()
            else:
                old = container.get(key)
                container[key] = r.choice([[old], {"value": old}, str(old), json.dumps(old)])
        text = json.dumps(event, ensure_ascii=r.random() < 0.5 or self._needs_ascii(event))
        for key, raw in self.raw.items():
            text = text.replace(f'"{key}"', raw)
        return text

    @staticmethod
    def _needs_ascii(event: Event) -> bool:
        """A lone surrogate can only travel escaped (UTF-8 cannot encode it)."""
        try:
            json.dumps(event, ensure_ascii=False).encode("utf-8")
            return False
        except UnicodeEncodeError:
            return True

    def raw_body(self, event: Event) -> str:
        r = self.rng
        text = json.dumps(event)
        kind = r.choice(["deep", "truncated", "scalar", "garbage", "duplicate_keys", "huge_created"])
        self.applied[f"raw:{kind}"] += 1
        if kind == "deep":
            return r.choice(["[", '{"a":']) * r.choice([1_000, 100_000, 400_000])
        if kind == "truncated":
            return text[: r.randrange(len(text))]
        if kind == "scalar":
            return r.choice(["[]", "5", "null", '"evt_1"', "NaN", "true", ""])
        if kind == "garbage":
            return text + r.choice(["}", "x", "\u2028", " ,"])
        if kind == "duplicate_keys":  # JSON allows them; the last one wins in Python
            return text[:-1] + ', "id": ' + r.choice(["5", '"ch_1"', "null"]) + ', "created": 1e400}'
        digits = "9" * r.choice([19, 4_300, 4_301, 100_000])
        return text.replace(f'"created": {event["created"]}', f'"created": {digits}', 1)


def valid_event(world: StripeWorld, i: int) -> Event:
    """Stripe's shapes, rotating through the event types the bridge sees most."""
    cus = world.customer(f"klient{i}@example.pl", "Anna Nowak")
    kind = i % 6
    if kind == 0:
        pi, _ = world.payment_intent(24900, "pln", cus, product="Subskrypcja Pro")
        return world.event("payment_intent.succeeded", pi)
    if kind == 1:
        _, ch = world.payment_intent(1999, "eur", cus)
        return world.event("charge.succeeded", ch)
    if kind == 2:
        _, ch = world.payment_intent(5000, "jpy", cus)
        return world.event("charge.refunded", world.refund(ch))
    if kind == 3:
        session = world.checkout_session(24900, "pln", f"k{i}@example.pl", "Jan", products=["Kurs"])
        return world.event("checkout.session.completed", session)
    if kind == 4:
        return world.event("invoice.paid", world.invoice(4900, "pln", cus, product="Plan"))
    pi, _ = world.payment_intent(24900, "pln", cus, status="requires_payment_method")
    return world.event("payment_intent.payment_failed", pi)


# -- the client ------------------------------------------------------------------------------------


@dataclass
class Tally:
    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    retry_after: Counter[int] = field(default_factory=Counter)  # 503s carrying Retry-After
    hangs: int = 0
    no_answer: int = 0  # the connection closed twice without an answer
    new_ids: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.answers.values()) + self.hangs + self.no_answer

    def count(self, pred: Callable[[int, str], bool]) -> int:
        return sum(n for (s, c), n in self.answers.items() if pred(s, c))


class Conn:
    """One keep-alive HTTP/1.1 connection; one request at a time; reads the status, the headers
    and a Content-Length body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(head[9:12]), headers, body

    def close(self) -> None:
        self.writer.close()


async def send_all(port: int, requests: list[tuple[str, bytes]], concurrency: int) -> Tally:
    """Send (event id or "", request) pairs, `concurrency` at a time; tally every answer."""
    tally = Tally()
    todo = iter(requests)
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        conn: Conn | None = None
        for event_id, raw in todo:
            for attempt in (1, 2):  # like any HTTP client: resend once on a connection found closed
                if conn is None:
                    conn = await Conn.open(port)
                started = loop.time()
                try:
                    status, headers, body = await asyncio.wait_for(conn.request(raw), CLIENT_TIMEOUT)
                except TimeoutError:
                    tally.hangs += 1
                    conn.close()
                    conn = None
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    conn.close()
                    conn = None
                    if attempt == 2:
                        tally.no_answer += 1
                    continue
                tally.latencies.append(loop.time() - started)
                record(tally, event_id, status, headers, body)
                if headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
        if conn is not None:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.elapsed = time.perf_counter() - started
    return tally


def record(tally: Tally, event_id: str, status: int, headers: dict[str, str], body: bytes) -> None:
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if 200 <= status < 300:
        code = "duplicate" if answer.get("duplicate") else "stored"
        if code == "stored":
            tally.new_ids.add(answer.get("id", event_id))
    else:
        code = (answer.get("error") or {}).get("code", "(no code)")
    tally.answers[(status, code)] += 1
    if status == 503 and headers.get("retry-after"):
        tally.retry_after[status] += 1


# -- the bridge ------------------------------------------------------------------------------------


@dataclass
class Bridge:
    port: int
    secret: str
    ledger_url: str

    def request(self, body: str) -> bytes:
        return raw_request(body, self.secret, self.port)

    def health(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=CLIENT_TIMEOUT)

    def good(self, world: StripeWorld, n: int, start: int = 0) -> list[tuple[str, bytes]]:
        events = [valid_event(world, start + i) for i in range(n)]
        return [(e["id"], self.request(json.dumps(e))) for e in events]

    def stored(self) -> int:
        ledger = Ledger(self.ledger_url)
        try:
            return sum(ledger.inbox_counts().values())
        finally:
            ledger.dispose()


def start_bridge(name: str, tmp: Path, procs: Procs, ledger_url: str | None) -> Bridge:
    home = tmp / name
    home.mkdir(parents=True)
    # cwd = the home, so this file (and no developer's stripeflow.toml) is what the bridge reads.
    (home / "stripeflow.toml").write_text(
        f"[bridge]\nrequest_deadline = {DEADLINE}\nwriter_stuck_after = {DEADLINE}\n", encoding="utf-8"
    )
    port, secret = free_port(), "whsec_fuzz_" + secrets.token_hex(16)
    env = base_env(STRIPEFLOW_HOME=str(home), STRIPE_WEBHOOK_SECRET=secret)
    if ledger_url:
        env["DATABASE_URL"] = ledger_url
    procs.start(name, [python(), "-m", "stripeflow.cli", "bridge", "--port", str(port)], env, cwd=home)
    wait_http(f"http://127.0.0.1:{port}/healthz", f"the bridge ({name})", 60, procs)
    return Bridge(port, secret, ledger_url or f"sqlite:///{home / 'ledger.db'}")


def wait_health(bridge: Bridge, status: int, timeout: float = 30) -> float:
    """Seconds until /healthz answers `status` (polled every 0.1 s); NaN if it never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if bridge.health().status_code == status:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return float("nan")


@contextmanager
def sqlite_write_lock(url: str) -> Iterator[None]:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


# -- phases ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    tally: Tally
    expect_503: bool = False  # storage is failing on purpose in this phase
    checks: list[str] = field(default_factory=list)
    ok: bool = True

    def check(self, passed: bool, text: str) -> None:
        self.checks.append(("[green]✓[/] " if passed else "[red]✗[/] ") + text)
        self.ok = self.ok and passed


def unexplained(t: Tally, expect_503: bool) -> int:
    """5xx answers not explained by a storage failure, and 4xx codes the bridge does not document."""
    bad_5xx = t.count(lambda s, c: s >= 500 and not (expect_503 and s == 503 and c == "ledger_unavailable"))
    bad_4xx = t.count(lambda s, c: 400 <= s < 500 and c not in KNOWN_4XX)
    return (
        bad_5xx + bad_4xx + (t.answers[(503, "ledger_unavailable")] - t.retry_after[503] if expect_503 else 0)
    )


def fuzz_phase(bridge: Bridge, args: argparse.Namespace, world: StripeWorld, n: int) -> tuple[Phase, Mutator]:
    mutator = Mutator(random.Random(args.seed))
    with console.status(f"building and signing {n:,} mutated events…"):
        requests = []
        for i in range(n):
            event = valid_event(world, i)
            requests.append((event["id"], bridge.request(mutator.body(event))))
    stored_before = bridge.stored()
    with console.status(f"sending {n:,} mutated events, {args.concurrency} in flight…"):
        tally = asyncio.run(send_all(bridge.port, requests, args.concurrency))
    phase = Phase("fuzz", tally)
    phase.check(
        tally.hangs == 0 and tally.no_answer == 0, f"hangs {tally.hangs}, no answer {tally.no_answer}"
    )
    phase.check(unexplained(tally, False) == 0, f"unexplained answers {unexplained(tally, False)}")
    stored = bridge.stored() - stored_before
    phase.check(
        stored == len(tally.new_ids), f"acknowledged as new {len(tally.new_ids):,} = stored {stored:,}"
    )
    good_event_check(phase, bridge, world)
    return phase, mutator


def good_event_check(phase: Phase, bridge: Bridge, world: StripeWorld) -> None:
    after = asyncio.run(send_all(bridge.port, bridge.good(world, 1, 900_000), 1))
    health = bridge.health()
    phase.check(
        after.answers == Counter({(200, "stored"): 1}) and health.status_code == 200,
        f"a good event afterwards: {fmt(after.answers)}; /healthz {health.status_code}",
    )


def stall_phase(bridge: Bridge, world: StripeWorld) -> Phase:
    good = bridge.good(world, 50, 100_000)
    with sqlite_write_lock(bridge.ledger_url):
        started = time.monotonic()
        during = asyncio.run(send_all(bridge.port, good, 50))
        waited = time.monotonic() - started
        wait_health(bridge, 503, timeout=2 * DEADLINE)  # stuck: the oldest has waited past the limit
        health = bridge.health()
    phase = Phase("stall: SQLite write lock held by another process", during, expect_503=True)
    phase.check(
        during.answers == Counter({(503, "ledger_unavailable"): 50}) and during.retry_after[503] == 50,
        f"all 50 answered 503 with Retry-After, within {waited:.1f} s (deadline {DEADLINE:g} s)",
    )
    phase.check(
        health.status_code == 503 and health.json()["writer"]["ok"] is False,
        f"/healthz {health.status_code}, writer stuck for {health.json()['writer']['oldest_wait_s']:.1f} s",
    )
    recovered = wait_health(bridge, 200)
    retried = asyncio.run(send_all(bridge.port, good, 16))  # as Stripe retries
    phase.check(
        retried.count(lambda s, c: s == 200) == 50,
        f"lock released: /healthz 200 after {recovered:.1f} s; the 50 resent: {fmt(retried.answers)}",
    )
    good_event_check(phase, bridge, world)
    return phase


def outage_phase(
    bridge: Bridge, proxy: TcpProxy, args: argparse.Namespace, world: StripeWorld
) -> list[Phase]:
    mutator = Mutator(random.Random(args.seed + 1))
    mixed = bridge.good(world, 200, 200_000)
    for i in range(300):
        event = valid_event(world, 300_000 + i)
        mixed.append((event["id"], bridge.request(mutator.body(event))))
    random.Random(args.seed).shuffle(mixed)
    up = asyncio.run(send_all(bridge.port, mixed, args.concurrency))
    before = Phase("outage, before: PostgreSQL up (200 good + 300 mutated)", up)
    before.check(
        up.hangs == 0 and unexplained(up, False) == 0,
        f"hangs {up.hangs}, unexplained {unexplained(up, False)}",
    )

    good = bridge.good(world, 200, 400_000)
    proxy.down()
    started = time.monotonic()
    down_tally = asyncio.run(send_all(bridge.port, good, args.concurrency))
    waited = time.monotonic() - started
    during = Phase("outage: PostgreSQL unreachable (proxy down)", down_tally, expect_503=True)
    unhealthy = wait_health(bridge, 503)
    during.check(
        down_tally.answers == Counter({(503, "ledger_unavailable"): 200})
        and down_tally.retry_after[503] == 200,
        f"all 200 answered 503 with Retry-After in {waited:.1f} s",
    )
    during.check(not math.isnan(unhealthy), f"/healthz 503 after {unhealthy:.1f} s")

    proxy.up()
    healthy = wait_health(bridge, 200)
    resent = asyncio.run(send_all(bridge.port, good, args.concurrency))  # as Stripe retries
    after = Phase("outage, after: proxy up again, the 200 resent", resent)
    after.check(
        resent.answers == Counter({(200, "stored"): 200}),
        f"/healthz 200 after {healthy:.1f} s; resent: {fmt(resent.answers)}",
    )
    expected = len(up.new_ids) + 200
    after.check(bridge.stored() == expected, f"inbox rows {bridge.stored()} = acknowledged {expected}")
    good_event_check(after, bridge, world)
    return [before, during, after]


# -- report ----------------------------------------------------------------------------------------


def fmt(answers: Counter[tuple[int, str]]) -> str:
    return ", ".join(f"{s} {c} ×{n}" for (s, c), n in sorted(answers.items())) or "none"


def report(phases: list[Phase], mutator: Mutator, args: argparse.Namespace) -> None:
    fuzz = phases[0].tally
    print_table(
        f"Fuzz: {fuzz.sent:,} signed, mutated events (seed {args.seed}) to the real bridge on SQLite, "
        f"{args.concurrency} in flight, {fuzz.elapsed:.1f} s",
        ["status", "code", "answers"],
        [[str(s), c, f"{n:,}"] for (s, c), n in sorted(fuzz.answers.items())]
        + [
            ["—", "client timeout (hang)", str(fuzz.hangs)],
            ["—", "closed without an answer", str(fuzz.no_answer)],
        ],
        caption=machine(),
    )
    rows = []
    for p in phases:
        t = p.tally
        rows.append(
            [
                p.name,
                f"{t.sent:,}",
                f"{t.count(lambda s, c: 200 <= s < 300):,}",
                f"{t.count(lambda s, c: 400 <= s < 500):,}",
                f"{t.retry_after[503]:,}",
                str(unexplained(t, p.expect_503)),
                str(t.hangs),
                "[green]PASS[/]" if p.ok else "[red]MISS[/]",
            ]
        )
    print_table(
        "Phases",
        [
            "phase",
            "sent",
            "2xx",
            "4xx",
            "503 + Retry-After",
            "unexplained 5xx/4xx (0)",
            "hangs (0)",
            "checks",
        ],
        rows,
    )
    for p in phases:
        console.print(f"[bold]{p.name}[/]")
        for line in p.checks:
            console.print(f"  {line}")
    ops = ", ".join(f"{k} {v:,}" for k, v in sorted(mutator.applied.items()))
    console.print(f"[dim]mutations applied in the fuzz phase: {ops}[/]")
    verdict = all(p.ok for p in phases)
    console.print(
        "[green]PASS[/]: no hang, no unexplained answer" if verdict else "[red]MISS[/]: see the ✗ above"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000, help="mutated events in the fuzz phase")
    parser.add_argument("--seed", type=int, default=7, help="seed of the mutations")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--postgres", choices=["auto", "yes", "no"], default="auto", help="the outage phase")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory and logs")
    args = parser.parse_args(argv)

    world = StripeWorld()
    phases: list[Phase] = []
    with bench_session("bench-fuzz", keep=args.keep) as (tmp, procs):
        try:
            bridge = start_bridge("bridge-sqlite", tmp, procs, None)
            fuzz, mutator = fuzz_phase(bridge, args, world, args.events)
            phases.append(fuzz)
            with console.status("stall: holding SQLite's write lock…"):
                phases.append(stall_phase(bridge, world))
            procs.stop("bridge-sqlite")
            if args.postgres != "no" and pg_available():
                db = pg_create()
                proxy = TcpProxy("127.0.0.1", 5432)
                try:
                    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{db}"
                    bridge = start_bridge("bridge-postgresql", tmp, procs, url)
                    with console.status("outage: PostgreSQL behind a proxy that goes down…"):
                        phases += outage_phase(bridge, proxy, args, world)
                finally:
                    procs.stop()  # the bridge holds connections: stop it before the drop
                    proxy.down()
                    pg_drop(db)
            elif args.postgres == "yes":
                raise RuntimeError("PostgreSQL does not answer at 127.0.0.1:5432")
            else:
                console.print("[yellow]PostgreSQL not reachable: outage phase skipped[/]")
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping the bridge[/]")
            return 130
    report(phases, mutator, args)
    return 0 if all(p.ok for p in phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
