"""Batches with a bad apple: split a failed batch until the one bad item is found.

A vendor's batch endpoint often rejects the whole batch for one invalid item. Rather than
dead-letter a hundred good payments, the batch is halved until each permanent error is
pinned to its own item; the good ones go through. Every sink uses this one helper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
) -> list[R | None]:
    """`call` each batch; results in input order, None where the item failed permanently."""
    results: list[R | None] = []
    for batch in chunks(items, size):
        results.extend(_call_isolating(batch, call, on_permanent))
    return results


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
