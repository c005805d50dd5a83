"""`call_in_batches`: results in input order, a bad item pinned to itself, and batches in flight
at once when the caller asks for it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from stripeflow.core.batching import call_in_batches
from stripeflow.core.errors import PermanentError, RetriableError


def doubled(batch: Sequence[int]) -> list[int]:
    if 13 in batch:
        raise PermanentError("13 is refused", vendor="test", status=400)
    return [i * 2 for i in batch]


@pytest.mark.parametrize("parallel", [1, 4])
def test_results_keep_the_input_order_and_a_bad_item_fails_alone(parallel: int) -> None:
    failed: list[int] = []
    got = call_in_batches(list(range(40)), 5, doubled, lambda i, exc: failed.append(i), parallel=parallel)
    assert got == [None if i == 13 else i * 2 for i in range(40)]
    assert failed == [13]


def test_parallel_batches_are_in_flight_at_once() -> None:
    """Four batches meet at a barrier: one batch at a time would never get past it."""
    barrier = threading.Barrier(4, timeout=30)

    def meet(batch: Sequence[int]) -> list[int]:
        barrier.wait()
        return list(batch)

    assert call_in_batches(list(range(8)), 2, meet, lambda i, exc: None, parallel=4) == list(range(8))


def test_an_outage_is_raised_as_one_batch_at_a_time_would_raise_it() -> None:
    """Two batches in flight both fail: the first batch's error is the one raised."""
    barrier = threading.Barrier(2, timeout=30)

    def call(batch: Sequence[int]) -> list[int]:
        if batch[0] < 2:
            barrier.wait()  # both in flight before either fails
            raise RetriableError(f"batch {batch[0]} down", vendor="test", status=503)
        return list(batch)

    with pytest.raises(RetriableError, match="batch 0 down"):
        call_in_batches(list(range(10)), 1, call, lambda i, exc: None, parallel=2)
