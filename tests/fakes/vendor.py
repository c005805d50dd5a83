"""What every fake vendor shares: routing, a request log, fault injection, two ways in.

A fake is one object holding in-memory state. Its `handle(httpx.Request) -> httpx.Response`
is the whole server; `app` wraps it as a Starlette ASGI app (for `serve_app`, real sockets)
and `transport()` as an `httpx.MockTransport` (sync, in-process). Every request is logged
(method, path, time by the fake's clock, status) so tests and benchmarks can count calls and
check that no rolling window held more than the vendor allows.
"""

from __future__ import annotations

import asyncio
import json
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
    status: int


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


Handler = Callable[[Call], httpx.Response]


class FakeVendor:
    """Base of the fakes. A vendor subclass adds routes, `authorize`, `admit` and its fault bodies."""

    def __init__(self, clock: Clock = time.monotonic, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency  # seconds the ASGI app holds each request, to make concurrency visible
        self.log: list[Logged] = []
        self.faults: deque[Fault] = deque()
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
        self, status: int, count: int = 1, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        """The next `count` requests answer `status` with the vendor's own body (or `body`)."""
        for _ in range(count):
            fault = self.fault_body(status)
            if body is not None:
                fault = Fault(status, body, headers or {})
            elif headers:
                fault = Fault(status, fault.body, {**fault.headers, **headers})
            self.faults.append(fault)

    # -- the server --------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            response = self._dispatch(request)
            self.log.append(Logged(request.method, request.url.path, self.clock(), response.status_code))
            return response

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        call = Call(
            request.method, path, dict(request.url.params), request.headers, request.read(), {}, request.url
        )
        if self.faults:
            fault = self.faults.popleft()
            return respond(fault.status, fault.body, fault.headers)
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
                return self.handle(request)

        return httpx.MockTransport(handler)

    @property
    def app(self) -> Starlette:
        async def endpoint(request: StarletteRequest) -> StarletteResponse:
            body = await request.body()
            req = httpx.Request(request.method, str(request.url), headers=request.headers.raw, content=body)
            with self._flight():
                if self.latency:
                    await asyncio.sleep(self.latency)
                response = self.handle(req)
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
