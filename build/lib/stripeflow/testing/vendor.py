"""What every fake vendor shares: routing, a request log, fault injection, two ways in.

A fake is one object holding in-memory state. Its `handle(httpx.Request) -> httpx.Response`
is the whole server; `app` wraps it as a Starlette ASGI app (for `serve_app`, real sockets)
and `transport()` as an `httpx.MockTransport` (sync, in-process). Every request is logged
(method, path, time by the fake's clock, status) so tests and benchmarks can count calls and
check that no rolling window held more than the vendor allows.

Faults come queued (`inject`) or at random from a seeded RNG (`chaos`). A fault either answers
*instead of* the handler (nothing was written: a 429, a 5xx before the write) or *after* it
(`after_write=True`: the record is in the fake's state, the answer is lost): a 5xx, or no answer
at all (`timeout=True`: over a socket the connection closes without a complete answer, after
holding it `hold` seconds; in-process the transport raises `httpx.ReadTimeout`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

Clock = Callable[[], float]


class FakeClock:
    """Time that moves only when someone sleeps: shared by a client's limiter and a fake."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += max(0.0, seconds)


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    at: float
    status: int  # what the client got; 0 when the answer was lost (a timeout)
    fault: str = ""  # "" | "before" | "after_write" | "timeout_after_write"


@dataclass
class Call:
    """One request as a route handler sees it."""

    method: str
    path: str
    params: dict[str, str]
    headers: httpx.Headers
    body: bytes
    match: dict[str, str]
    url: httpx.URL

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


@dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    after_write: bool = False  # the handler runs (its write stays), then this answer replaces its own
    timeout: bool = False  # after the write, no answer at all (implies after_write)
    hold: float = 0.0  # seconds a socket answer is held before the connection is dropped
    path: str | None = None  # only requests whose path matches this regex (searched), else any
    method: str | None = None  # only this HTTP method, else any

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or re.search(self.path, path) is not None

    @property
    def kind(self) -> str:
        if self.timeout:
            return "timeout_after_write"
        return "after_write" if self.after_write else "before"


class LostAnswer(Exception):
    """Raised by `handle` when the handler ran but its answer must never reach the client."""

    def __init__(self, fault: Fault, status: int) -> None:
        super().__init__(f"answer {status} lost after the write")
        self.fault = fault
        self.status = status  # what the handler answered, never sent


@dataclass
class Chaos:
    """Random faults, drawn per request from a seeded RNG; rates are fractions of all requests."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0  # before the handler: nothing written
    rate_5xx_after_write: float = 0.0  # the handler wrote, then a 502/503/500 answers instead
    rate_timeout_after_write: float = 0.0  # the handler wrote, then no answer
    seed: int = 0
    statuses_5xx: tuple[int, ...] = (500, 502, 503, 504)
    hold: float = 0.0
    path: str | None = None  # only requests whose path matches this regex
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self, fake: FakeVendor, method: str, path: str) -> Fault | None:
        if self.path is not None and re.search(self.path, path) is None:
            return None
        x = self.rng.random()
        for rate, make in (
            (self.rate_429, lambda: fake.fault_body(429)),
            (self.rate_5xx, lambda: fake.fault_body(self.rng.choice(self.statuses_5xx))),
            (self.rate_5xx_after_write, lambda: _after(fake.fault_body(self.rng.choice((500, 502))))),
            (self.rate_timeout_after_write, lambda: _after(fake.fault_body(504), timeout=True)),
        ):
            if x < rate:
                fault = make()
                fault.hold = self.hold
                return fault
            x -= rate
        return None


def _after(fault: Fault, timeout: bool = False) -> Fault:
    fault.after_write = True
    fault.timeout = timeout
    return fault


class _DroppedAnswer(StarletteResponse):
    """Headers promising a body that never comes, then EOF: the client cannot read an answer."""

    def __init__(self, hold: float) -> None:
        super().__init__(b"", status_code=200)
        self.hold = hold

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.hold:
            await asyncio.sleep(self.hold)  # longer than the client's timeout: it gives up first
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
        # returning now makes uvicorn close the connection with the body incomplete


class _QuietDrop(logging.Filter):
    """uvicorn logs each deliberately dropped answer as an error; these are injected, not bugs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_QuietDrop())

Handler = Callable[[Call], httpx.Response]


class FakeVendor:
    """Base of the fakes. A vendor subclass adds routes, `authorize`, `admit` and its fault bodies."""

    def __init__(self, clock: Clock = time.monotonic, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency  # seconds the ASGI app holds each request, to make concurrency visible
        self.log: list[Logged] = []
        self.faults: deque[Fault] = deque()
        self.chaos_plan: Chaos | None = None
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.lock = threading.RLock()
        self.in_flight = 0
        self.max_in_flight = 0

    # -- declaring ---------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern + r"/?"), handler))

    # -- hooks -------------------------------------------------------------------------------

    def authorize(self, call: Call) -> httpx.Response | None:
        """None when the credentials are good, else the vendor's 401."""
        return None

    def admit(self, call: Call) -> httpx.Response | None:
        """None when the rate limit allows this request, else the vendor's 429/503."""
        return None

    def fault_body(self, status: int) -> Fault:
        return Fault(status, {"message": "injected fault"})

    def not_found(self, call: Call) -> httpx.Response:
        return respond(404, {"message": f"no route {call.method} {call.path}"})

    # -- faults ------------------------------------------------------------------------------

    def inject(
        self,
        status: int = 500,
        count: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        path: str | None = None,
        method: str | None = None,
        after_write: bool = False,
        timeout: bool = False,
        hold: float = 0.0,
    ) -> None:
        """The next `count` requests (matching `path` regex / `method`, if given) answer `status`
        with the vendor's own body (or `body`). With `after_write` the handler runs first and its
        write stays; with `timeout` (after the write) there is no answer at all."""
        for _ in range(count):
            fault = self.fault_body(status)
            if body is not None:
                fault = Fault(status, body, headers or {})
            elif headers:
                fault = Fault(status, fault.body, {**fault.headers, **headers})
            fault.after_write = after_write or timeout
            fault.timeout = timeout
            fault.hold = hold
            fault.path = path
            fault.method = method
            self.faults.append(fault)

    def chaos(
        self,
        rate_429: float = 0.0,
        rate_5xx: float = 0.0,
        rate_timeout_after_write: float = 0.0,
        *,
        rate_5xx_after_write: float = 0.0,
        seed: int = 0,
        hold: float = 0.0,
        path: str | None = None,
    ) -> Chaos:
        """Fail requests at random (seeded), with this vendor's own 429/5xx bodies and headers.
        Queued `inject` faults go first; `chaos()` with no rates turns it off."""
        plan = Chaos(
            rate_429, rate_5xx, rate_5xx_after_write, rate_timeout_after_write, seed, hold=hold, path=path
        )
        active = rate_429 + rate_5xx + rate_5xx_after_write + rate_timeout_after_write > 0
        with self.lock:
            self.chaos_plan = plan if active else None
        return plan

    def _next_fault(self, method: str, path: str) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.matches(method, path):
                del self.faults[i]
                return fault
        if self.chaos_plan is not None:
            return self.chaos_plan.draw(self, method, path)
        return None

    # -- the server --------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """The vendor's answer; raises `LostAnswer` when the handler ran but no answer may go out."""
        with self.lock:
            fault = self._next_fault(request.method, request.url.path)
            if fault is not None and not fault.after_write:
                response = respond(fault.status, fault.body, fault.headers)
            else:
                response = self._dispatch(request)
            kind = fault.kind if fault is not None else ""
            if fault is not None and fault.timeout:
                self.log.append(Logged(request.method, request.url.path, self.clock(), 0, kind))
                raise LostAnswer(fault, response.status_code)
            if fault is not None and fault.after_write:
                response = respond(fault.status, fault.body, fault.headers)
            self.log.append(
                Logged(request.method, request.url.path, self.clock(), response.status_code, kind)
            )
            return response

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        call = Call(
            request.method, path, dict(request.url.params), request.headers, request.read(), {}, request.url
        )
        denied = self.authorize(call) or self.admit(call)
        if denied is not None:
            return denied
        for method, rx, handler in self.routes:
            m = rx.fullmatch(path)
            if m and method == request.method:
                call.match = m.groupdict()
                return handler(call)
        return self.not_found(call)

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            with self._flight():
                if self.latency:
                    time.sleep(self.latency)  # simulated server latency, so concurrent calls overlap
                try:
                    return self.handle(request)
                except LostAnswer as lost:
                    raise httpx.ReadTimeout(str(lost), request=request) from None

        return httpx.MockTransport(handler)

    @property
    def app(self) -> Starlette:
        async def endpoint(request: StarletteRequest) -> StarletteResponse:
            body = await request.body()
            req = httpx.Request(request.method, str(request.url), headers=request.headers.raw, content=body)
            with self._flight():
                if self.latency:
                    await asyncio.sleep(self.latency)
                try:
                    response = self.handle(req)
                except LostAnswer as lost:
                    return _DroppedAnswer(lost.fault.hold)
            headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length",)}
            return StarletteResponse(response.content, status_code=response.status_code, headers=headers)

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])

    def _flight(self) -> _Flight:
        return _Flight(self)

    # -- what tests and benchmarks read ------------------------------------------------------

    def calls(self, path_contains: str = "", method: str | None = None) -> int:
        return sum(1 for r in self.log if path_contains in r.path and (method is None or r.method == method))

    def statuses(self) -> list[int]:
        return [r.status for r in self.log]

    def injected(self) -> dict[str, int]:
        """Faults answered so far: 429, 5xx (before the write), 5xx_after_write, timeout_after_write."""
        out = {"429": 0, "5xx": 0, "other": 0, "5xx_after_write": 0, "timeout_after_write": 0}
        for r in list(self.log):
            if r.fault == "timeout_after_write":
                out["timeout_after_write"] += 1
            elif r.fault == "after_write":
                out["5xx_after_write"] += 1
            elif r.fault == "before":
                out["429" if r.status == 429 else "5xx" if r.status >= 500 else "other"] += 1
        return out

    def max_in_window(self, window: float, path_contains: str = "") -> int:
        """Most requests (of any answer) that arrived within any rolling `window` seconds."""
        times = [r.at for r in self.log if path_contains in r.path]
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


class _Flight:
    def __init__(self, fake: FakeVendor) -> None:
        self.fake = fake

    def __enter__(self) -> None:
        with self.fake.lock:
            self.fake.in_flight += 1
            self.fake.max_in_flight = max(self.fake.max_in_flight, self.fake.in_flight)

    def __exit__(self, *exc: object) -> None:
        with self.fake.lock:
            self.fake.in_flight -= 1


class RollingWindow:
    """Arrivals admitted in the last `period` seconds; the fakes' enforcement of a sliding limit."""

    def __init__(self, limit: int, period: float, clock: Clock) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self.times: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()

    def admit(self) -> bool:
        now = self.clock()
        self._trim(now)
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True

    def remaining(self) -> int:
        self._trim(self.clock())
        return max(0, self.limit - len(self.times))

    def reset_in(self) -> float:
        """Seconds until the oldest admitted arrival leaves the window."""
        now = self.clock()
        self._trim(now)
        return max(0.0, self.times[0] + self.period - now) if self.times else 0.0


class LeakyBucket:
    """Bitrix24's limit: a bucket of `capacity` requests draining `rate` a second."""

    def __init__(self, capacity: int, rate: float, clock: Clock) -> None:
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self.level = 0.0
        self.at = clock()

    def admit(self) -> bool:
        now = self.clock()
        self.level = max(0.0, self.level - (now - self.at) * self.rate)
        self.at = now
        if self.level + 1 > self.capacity + 1e-9:
            return False
        self.level += 1
        return True


def new_ids(start: int = 1) -> Iterator[int]:
    n = start
    while True:
        yield n
        n += 1
