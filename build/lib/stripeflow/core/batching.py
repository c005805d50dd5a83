"""Batches with a bad apple: split a failed batch until the one bad item is found.

A vendor's batch endpoint often rejects the whole batch for one invalid item. Rather than
dead-letter a hundred good payments, the batch is halved until each permanent error is
pinned to its own item; the good ones go through. Every sink uses this one helper.

Batches may go `parallel` (a few in flight at once, each in its own thread): the vendor's
limits are kept by its client's limiter, which every thread shares, so overlapping calls only
overlaps their waits (a 429's window, a 5xx backoff, a look-again pause), which one batch at a
time would take one after another.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from stripeflow.core.errors import PermanentError

T = TypeVar("T")
R = TypeVar("R")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def call_in_batches(
    items: Sequence[T],
    size: int,
    call: Callable[[Sequence[T]], Sequence[R | None]],
    on_permanent: Callable[[T, PermanentError], None],
    *,
    parallel: int = 1,
) -> list[R | None]:
    """`call` each batch; results in input order, None where the item failed permanently.

    With `parallel` > 1, up to that many batches are in flight at once (see `in_parallel`).
    """
    done = in_parallel(
        lambda batch: _call_isolating(batch, call, on_permanent), chunks(items, size), parallel
    )
    return [r for results in done for r in results]


def in_parallel(fn: Callable[[T], R], items: Sequence[T], parallel: int) -> list[R]:
    """`fn` of each item, up to `parallel` at once, each in a thread with a copy of the caller's
    context (Prefect's run context and logger live there); results in input order.

    An exception stops the items not yet started, waits for those in flight, and the first
    item's is raised, as one at a time would raise it.
    """
    if parallel <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(parallel, len(items)), thread_name_prefix="parallel") as pool:
        futures: list[Future[R]] = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            for f in futures:
                f.cancel()
            wait(futures)
            for f in futures:
                if not f.cancelled() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
    return [f.result() for f in futures]


def _call_isolating(
    batch: Sequence[T],
    call: Callable[[Sequence[T]], Sequence[R | None]],
    on_permanent: Callable[[T, PermanentError], None],
) -> list[R | None]:
    try:
        return list(call(batch))
    except PermanentError as exc:
        if len(batch) == 1:
            on_permanent(batch[0], exc)
            return [None]
        if exc.status in (401, 403):  # credentials, not an item: every item would fail alike
            for item in batch:
                on_permanent(item, exc)
            return [None] * len(batch)
        mid = len(batch) // 2
        return [
            *_call_isolating(batch[:mid], call, on_permanent),
            *_call_isolating(batch[mid:], call, on_permanent),
        ]
