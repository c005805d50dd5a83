"""The one HTTP seam every vendor module uses.

A vendor subclasses `VendorAPI` and *declares* what differs: its name, base URL, auth headers,
rate limiter, how its error bodies read (`classify`), and its pagination. This module alone
sleeps, retries, honours Retry-After and loops over pages, so no vendor module does.

Retries here are bounded (`max_attempts`, `max_wait`); a longer wait escapes as a
`RetriableError` carrying `wait`, which the Prefect task's own declared retries handle.
A write that carries no idempotency key (a POST create) is sent with `idempotent=False`: it is
retried only when the vendor provably did not process it (a 429 or a rate-limit 503, or a
connection that never opened); a timeout or a connection lost after sending, or a 5xx, ends in
`OutcomeUnknownError`, and the caller looks for what the request may have made before it sends
anything again.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import httpx

from stripeflow.core.errors import (
    AuthError,
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    RetriableError,
    VendorError,
)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# Transport errors raised before a byte of the request left: no connection, or none from the pool.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# --- rate limiters --------------------------------------------------------------------------


class Limiter(Protocol):
    """Held around every request; blocks until the vendor's limit allows one more."""

    def slot(self) -> Any: ...  # a context manager


class _TimedLimiter:
    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self.sleep = sleep

    def _reserve(self) -> float:
        """Take a place; return how long to wait before using it (0 when free now)."""
        raise NotImplementedError

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            delay = self._reserve()
        if delay > 0:
            self.sleep(delay)
        yield


class SlidingWindowLimiter(_TimedLimiter):
    """At most `max_calls` in any rolling `period` seconds (HubSpot's ten-secondly limit).

    The vendor counts a call when it arrives, which is some time after we start it; so each
    call is counted here from when it *ended* (by then it had arrived), and a new call waits
    until the call `max_calls` back ended a whole period ago. A busy client can then never
    look, to the vendor, like one over its limit. `margin` adds a little for clock steps.
    """

    def __init__(self, max_calls: int, period: float, margin: float = 0.05, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_calls = max_calls
        self.period = period + margin
        # one cell per call: [its start, 0.0] while in flight, then [its end, 1.0]
        self._calls: deque[list[float]] = deque()

    def _reserve_call(self) -> tuple[float, list[float]]:
        now = self.clock()
        while self._calls and self._calls[0][1] and self._calls[0][0] <= now - self.period:
            self._calls.popleft()
        start = now
        if len(self._calls) >= self.max_calls:
            # a call still in flight reaches the vendor by now at the earliest (many threads
            # share a limiter: counting one from its start let the 101st call in early)
            times = sorted(cell[0] if cell[1] else max(cell[0], now) for cell in self._calls)
            start = max(start, times[-self.max_calls] + self.period)
        cell = [start, 0.0]
        self._calls.append(cell)
        return start - now, cell

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            delay, cell = self._reserve_call()
        if delay > 0:
            self.sleep(delay)
        try:
            yield
        finally:
            with self._lock:
                cell[0], cell[1] = max(cell[0], self.clock()), 1.0


class TokenBucketLimiter(_TimedLimiter):
    """A burst of `capacity`, refilled at `rate` a second (Bitrix24's leaky bucket: 50 and 2/s)."""

    def __init__(self, capacity: float, rate: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.capacity = capacity
        self.rate = rate
        self._tokens = float(capacity)
        self._at = self.clock()

    def _reserve(self) -> float:
        now = self.clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class ConcurrencyLimiter:
    """At most `limit` requests in flight at once (Zoho's per-org concurrency)."""

    def __init__(self, limit: int) -> None:
        self._sem = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._sem:
            yield


class Unlimited:
    @contextmanager
    def slot(self) -> Iterator[None]:
        yield


# --- pagination -----------------------------------------------------------------------------


def dig(body: Any, path: str) -> Any:
    """`dig(body, "paging.next.after")`: None when any step is missing."""
    for part in path.split(".") if path else []:
        if isinstance(body, Mapping):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


@dataclass(frozen=True)
class CursorPaginator:
    """Next page from a cursor in the body (HubSpot `paging.next.after`, Pipedrive v2, Stripe)."""

    records_path: str
    cursor_path: str
    cursor_param: str
    in_body: bool = False  # HubSpot search takes `after` in the JSON body

    def next_request(self, request: dict[str, Any], body: Any) -> dict[str, Any] | None:
        cursor = dig(body, self.cursor_path)
        if cursor in (None, ""):
            return None
        where = "json" if self.in_body else "params"
        return {**request, where: {**(request.get(where) or {}), self.cursor_param: cursor}}


@dataclass(frozen=True)
class LastIdPaginator:
    """Stripe's lists: `has_more`, then `starting_after` the last record's id."""

    records_path: str = "data"
    has_more_path: str = "has_more"
    cursor_param: str = "starting_after"

    def next_request(self, request: dict[str, Any], body: Any) -> dict[str, Any] | None:
        records = dig(body, self.records_path) or []
        if not dig(body, self.has_more_path) or not records:
            return None
        return {**request, "params": {**(request.get("params") or {}), self.cursor_param: records[-1]["id"]}}


@dataclass(frozen=True)
class OffsetPaginator:
    """Offset pages: Bitrix24 `next`, Pipedrive v1 `next_start`."""

    records_path: str
    next_path: str
    offset_param: str
    in_body: bool = False

    def next_request(self, request: dict[str, Any], body: Any) -> dict[str, Any] | None:
        nxt = dig(body, self.next_path)
        if nxt in (None, "", False):
            return None
        where = "json" if self.in_body else "params"
        return {**request, where: {**(request.get(where) or {}), self.offset_param: nxt}}


@dataclass(frozen=True)
class PageNumberPaginator:
    """Numbered pages with a `more` flag (Zoho `info.more_records`, Fakturownia)."""

    records_path: str
    more_path: str
    page_param: str = "page"

    def next_request(self, request: dict[str, Any], body: Any) -> dict[str, Any] | None:
        if not dig(body, self.more_path):
            return None
        params = dict(request.get("params") or {})
        params[self.page_param] = int(params.get(self.page_param, 1)) + 1
        return {**request, "params": params}


class Paginator(Protocol):
    records_path: str

    def next_request(self, request: dict[str, Any], body: Any) -> dict[str, Any] | None: ...


# --- the client -----------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = now if now is not None else datetime.now(UTC).timestamp()
    return max(0.0, when.timestamp() - current)


@dataclass
class CallStats:
    """Counts every HTTP call a client made, for benchmarks and tests that cap calls."""

    calls: int = 0
    retries: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, *, path: str | None = None, call: bool = False, retry: bool = False) -> None:
        with self._lock:  # one client serves parallel batches
            if path is not None:
                self.by_path[path] = self.by_path.get(path, 0) + 1
            self.calls += call
            self.retries += retry


class VendorAPI:
    """Base for every vendor's HTTP client. Subclasses declare; this class does the I/O."""

    vendor: ClassVar[str] = "vendor"
    max_attempts: ClassVar[int] = 6
    max_wait: ClassVar[float] = 30.0  # longer waits escape to the task's declared retries
    backoff_base: ClassVar[float] = 0.5
    backoff_cap: ClassVar[float] = 20.0

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        limiter: Limiter | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter: Limiter = limiter or self.default_limiter()
        self.sleep = sleep
        self.stats = CallStats()
        self.http = httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout)

    # -- hooks a vendor may override ---------------------------------------------------------

    def default_limiter(self) -> Limiter:
        return Unlimited()

    def auth_headers(self) -> dict[str, str]:
        return {}

    def request_id(self, response: httpx.Response) -> str | None:
        return response.headers.get("x-request-id")

    def error_message(self, response: httpx.Response) -> tuple[str, str | None]:
        """(message, code) from the vendor's error body; the default reads common shapes."""
        try:
            body = response.json()
        except ValueError:
            return (response.text[:300] or response.reason_phrase, None)
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict):
                return (str(err.get("message") or err), err.get("code") or err.get("type"))
            msg = body.get("message") or body.get("error_description") or body.get("description")
            code = body.get("code") or body.get("category") or (err if isinstance(err, str) else None)
            if msg or code:
                return (str(msg or code), str(code) if code is not None else None)
        return (str(body)[:300], None)

    def classify(self, response: httpx.Response) -> VendorError | None:
        """None for success; else the error this response means. The one error table."""
        status = response.status_code
        if status < 400:
            return None
        message, code = self.error_message(response)
        kw: dict[str, Any] = dict(
            vendor=self.vendor, status=status, request_id=self.request_id(response), code=code
        )
        if status == 429:
            return RateLimitedError(message, wait=self.retry_after(response), **kw)
        if status in (500, 502, 503, 504) or status >= 500:
            return RetriableError(message, wait=self.retry_after(response), **kw)
        if status in (401, 403):
            return AuthError(message, **kw)
        return PermanentError(message, **kw)

    def retry_after(self, response: httpx.Response) -> float | None:
        return parse_retry_after(response.headers.get("retry-after"))

    # -- the seam ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one logical request, retrying what is safe to retry. Returns a 2xx/3xx response."""
        self.stats.count(path=path)
        attempt = 0
        while True:
            attempt += 1
            error: VendorError
            with self.limiter.slot():
                self.stats.count(call=True)
                try:
                    response = self.http.request(
                        method,
                        path,
                        params=params,
                        json=json,
                        data=data,
                        content=content,
                        headers={**self.auth_headers(), **(headers or {})},
                    )
                except NOT_SENT as exc:  # never reached the vendor: safe to send again, keyed or not
                    error = RetriableError(f"cannot connect: {type(exc).__name__}: {exc}", vendor=self.vendor)
                except httpx.TransportError as exc:  # sent, perhaps processed, the answer lost
                    error = RetriableError(f"{type(exc).__name__}: {exc}", vendor=self.vendor)
                    if not idempotent:
                        raise OutcomeUnknownError(
                            f"no answer to an unkeyed {method}, perhaps after it was done: {error.message}",
                            vendor=self.vendor,
                        ) from exc
                else:
                    classified = self.classify(response)
                    if classified is None:
                        return response
                    error = classified
            if not isinstance(error, RetriableError):
                raise error
            if not idempotent and not isinstance(error, RateLimitedError) and error.status:
                # a 5xx may come after the vendor wrote; only a rate limit proves nothing was done
                # (the path is not in the message: some vendors, Telegram, put the token in it)
                raise OutcomeUnknownError(
                    f"unkeyed {method} answered {error.status}, perhaps after it was done: {error.message}",
                    vendor=self.vendor,
                    status=error.status,
                    request_id=error.request_id,
                    code=error.code,
                ) from error
            wait = error.wait if error.wait is not None else self._backoff(attempt)
            if attempt >= self.max_attempts or wait > self.max_wait:
                error.wait = wait
                raise error
            self.stats.count(retry=True)
            self.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    def request_json(self, method: str, path: str, **kw: Any) -> Any:
        response = self.request(method, path, **kw)
        if not response.content:
            return None
        return response.json()

    def paginate(self, method: str, path: str, paginator: Paginator, **kw: Any) -> Iterator[Any]:
        """Every record of a paginated list, one page request at a time (memory stays flat)."""
        request: dict[str, Any] | None = kw
        while request is not None:
            body = self.request_json(method, path, **request)
            yield from dig(body, paginator.records_path) or []
            request = paginator.next_request(request, body)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> VendorAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
