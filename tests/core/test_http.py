"""The HTTP seam: limiters, the error table, retries and pagination, over httpx transports."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from stripeflow.core.errors import (
    AuthError,
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    RetriableError,
)
from stripeflow.core.http import (
    CursorPaginator,
    LastIdPaginator,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    VendorAPI,
    parse_retry_after,
)


class FakeClock:
    """Time that moves only when someone sleeps: limiters are tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def starts_in_any_window(starts: list[float], period: float) -> int:
    return max(sum(1 for t in starts if s <= t < s + period) for s in starts)


def test_sliding_window_never_exceeds_its_limit() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(100, 10.0, margin=0.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(350):
        with limiter.slot():
            starts.append(clock.now)
    assert starts_in_any_window(starts, 10.0) == 100
    assert clock.now == pytest.approx(30.0)  # 350 calls: three full windows waited, no more


def test_sliding_window_counts_a_call_in_flight_as_arriving_now() -> None:
    """Threads share a limiter: two calls still in flight after a whole period (a slow answer)
    may only just be arriving at the vendor, so a third waits a period from now, not from when
    they started."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, 10.0, margin=0.0, clock=clock, sleep=clock.sleep)
    with limiter.slot(), limiter.slot():  # both in flight
        clock.now = 12.0
        with limiter.slot():
            assert clock.now == pytest.approx(22.0)
    with limiter.slot():  # all three ended; the window holds the two that ended at 22
        assert clock.now == pytest.approx(32.0)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(50, 2.0, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        with limiter.slot():
            pass
    assert clock.now == 0.0
    for _ in range(10):
        with limiter.slot():
            pass
    assert clock.now == pytest.approx(5.0)


class Demo(VendorAPI):
    vendor = "demo"


def client(handler: Callable[[httpx.Request], httpx.Response], sleeps: list[float]) -> Demo:
    return Demo("https://api.example", transport=httpx.MockTransport(handler), sleep=sleeps.append)


def test_429_is_waited_out_honouring_retry_after() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down"})
        return httpx.Response(200, json={"ok": True})

    sleeps: list[float] = []
    assert client(handler, sleeps).request_json("GET", "/x") == {"ok": True}
    assert sleeps == [7.0, 7.0]


def test_401_is_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, json={"message": "bad token", "category": "INVALID_AUTHENTICATION"})

    with pytest.raises(AuthError, match="bad token") as exc:
        client(handler, []).request("GET", "/x")
    assert len(calls) == 1
    assert exc.value.status == 401 and exc.value.vendor == "demo"


def test_400_is_permanent_with_the_vendors_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={"message": "Property values were not valid", "category": "VALIDATION_ERROR"},
            headers={"x-request-id": "req-9"},
        )

    with pytest.raises(PermanentError) as exc:
        client(handler, []).request("POST", "/x", json={})
    assert "Property values were not valid" in str(exc.value) and exc.value.request_id == "req-9"


def test_retries_are_bounded_and_the_error_says_how_long_to_wait() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"message": "down"}, headers={"Retry-After": "2"})

    sleeps: list[float] = []
    with pytest.raises(RetriableError) as exc:
        client(handler, sleeps).request("GET", "/x")
    assert len(sleeps) == Demo.max_attempts - 1
    assert exc.value.wait == 2.0


def test_a_long_wait_escapes_to_the_task_instead_of_blocking() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3600"})

    sleeps: list[float] = []
    with pytest.raises(RateLimitedError) as exc:
        client(handler, sleeps).request("GET", "/x")
    assert sleeps == [] and exc.value.wait == 3600


def test_an_unkeyed_write_that_failed_ambiguously_is_not_resent() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500, json={"message": "oops"})

    with pytest.raises(OutcomeUnknownError):
        client(handler, []).request("POST", "/notes", json={}, idempotent=False)
    assert len(calls) == 1


def test_an_unkeyed_write_is_resent_after_a_429_since_it_was_not_processed() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429 if len(calls) == 1 else 201, json={})

    client(handler, []).request("POST", "/notes", json={}, idempotent=False)
    assert len(calls) == 2


def failing_then_ok(failure: Callable[[httpx.Request], httpx.Response]) -> tuple[Demo, list[int]]:
    """A client whose first request meets `failure` (raise or answer) and whose second gets 201."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return failure(request) if len(calls) == 1 else httpx.Response(201, json={"id": 1})

    return client(handler, []), calls


def raising(exc: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc("injected", request=request)

    return fail


def answering(status: int, body: dict[str, str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body or {"message": "oops"})


@pytest.mark.parametrize(
    "failure",
    [
        raising(httpx.ReadTimeout),  # sent; the vendor may have written before the answer was lost
        raising(httpx.RemoteProtocolError),  # the connection dropped mid-answer
        raising(httpx.WriteTimeout),
        answering(502),
        answering(504),
    ],
    ids=["read-timeout", "dropped-answer", "write-timeout", "502", "504"],
)
def test_an_unkeyed_write_that_may_have_been_done_is_not_resent(
    failure: Callable[[httpx.Request], httpx.Response],
) -> None:
    api, calls = failing_then_ok(failure)
    with pytest.raises(OutcomeUnknownError) as caught:
        api.request("POST", "/bot123:SECRET/sendMessage", json={}, idempotent=False)
    assert len(calls) == 1
    assert "SECRET" not in str(caught.value)  # a path may hold a token (Telegram): never in errors


@pytest.mark.parametrize(
    "failure",
    [raising(httpx.ConnectError), raising(httpx.ConnectTimeout), raising(httpx.PoolTimeout), answering(429)],
    ids=["refused", "connect-timeout", "pool-timeout", "429"],
)
def test_an_unkeyed_write_is_resent_when_it_provably_was_not_done(
    failure: Callable[[httpx.Request], httpx.Response],
) -> None:
    api, calls = failing_then_ok(failure)
    assert api.request_json("POST", "/persons", json={}, idempotent=False) == {"id": 1}
    assert len(calls) == 2


@pytest.mark.parametrize("failure", [raising(httpx.ReadTimeout), answering(502)], ids=["read-timeout", "502"])
def test_a_keyed_write_is_retried_after_an_ambiguous_failure(
    failure: Callable[[httpx.Request], httpx.Response],
) -> None:
    api, calls = failing_then_ok(failure)  # an upsert on a unique key: sending it twice is one record
    assert api.request_json("POST", "/deals/batch/upsert", json={}) == {"id": 1}
    assert len(calls) == 2


def test_cursor_pagination_reads_every_page_once() -> None:
    pages = {None: (["a", "b"], "2"), "2": (["c"], "3"), "3": (["d"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        records, nxt = pages[request.url.params.get("after")]
        body = {"results": records, "paging": {"next": {"after": nxt}} if nxt else {}}
        return httpx.Response(200, json=body)

    api = client(handler, [])
    got = list(
        api.paginate(
            "GET", "/list", CursorPaginator("results", "paging.next.after", "after"), params={"limit": 2}
        )
    )
    assert got == ["a", "b", "c", "d"]
    assert api.stats.calls == 3


def test_stripe_style_pagination_uses_the_last_id() -> None:
    data = [{"id": f"pi_{i}"} for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("starting_after")
        start = next(i + 1 for i, d in enumerate(data) if d["id"] == after) if after else 0
        chunk = data[start : start + 2]
        return httpx.Response(200, json={"data": chunk, "has_more": start + 2 < len(data)})

    api = client(handler, [])
    assert [d["id"] for d in api.paginate("GET", "/v1/x", LastIdPaginator(), params={"limit": 2})] == [
        d["id"] for d in data
    ]
    assert api.stats.calls == 3


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None


def test_sliding_window_counts_a_call_from_when_it_ended() -> None:
    """A slow call arrives late at the vendor: the next window waits for its end, not its start."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(10, 10.0, margin=0.0, clock=clock, sleep=clock.sleep)
    spans = []
    for _ in range(35):
        with limiter.slot():
            start = clock.now
            clock.now += 0.3  # the call takes 0.3 s; the vendor saw it some time in between
            spans.append((start, clock.now))
    for i in range(10, len(spans)):
        assert spans[i][0] >= spans[i - 10][1] + 10.0
