"""Group commit: many concurrent webhook requests share one durable transaction.

Each request hands its event to a single writer thread and awaits the outcome. The writer
takes everything waiting (up to `max_batch`), stores it in one transaction (one fsync), and
then answers every waiter. Under load this turns 1,000 commits a second into a few dozen,
while each 2xx still follows its own durable write.

The writer never dies and never leaves a waiter without an answer:

- storage down (an OperationalError: refused connection, locked or read-only database, a
  disconnect) fails the whole batch with `LedgerUnavailable` (503, Stripe retries);
- a row the database refuses (a value out of a column's range, a type it cannot bind) fails
  the batch, which is then halved until the row is alone: it gets `EventRefused` (400) and
  every other row is stored (log2(batch) extra transactions for one bad row);
- anything else raised in the thread is caught at its boundary and answered as
  `LedgerUnavailable` to the batch, and the thread goes on;
- every request has a deadline: past it the waiter gets `LedgerUnavailable`, and the writer
  skips the event if it has not reached it yet (Stripe will deliver it again).

`health()` says whether the thread is alive and how long the oldest event has waited, for
`/healthz`; it reads a few attributes and takes no database lock.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from stripeflow.core.ledger import IncomingEvent, Ledger

log = logging.getLogger("stripeflow.bridge.inbox_writer")

# What the database raises for one row's values rather than for its own state: sqlite3 raises
# OverflowError for an int over 64 bits and UnicodeEncodeError (a ValueError) for a lone
# surrogate, unwrapped; SQLAlchemy raises StatementError (TypeError inside) for a bad bool.
_ROW_ERRORS = (SQLAlchemyError, ValueError, TypeError, OverflowError)


class LedgerUnavailable(Exception):
    """The ledger could not store the event now; the bridge answers 503 so Stripe retries."""


class EventRefused(Exception):
    """The ledger refused this one event's values; the bridge answers 400 `unstorable_event`."""


def storage_is_down(exc: BaseException) -> bool:
    """True when the failure is the database's (down, locked, full, read-only), not a row's."""
    if isinstance(exc, OperationalError | PoolTimeout | DisconnectionError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass
class _Pending:
    event: IncomingEvent
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    # set on the event loop when the deadline passed; read by the writer (a plain bool is safe)
    abandoned: bool = False


class InboxWriter:
    def __init__(self, ledger: Ledger, max_batch: int = 500, deadline: float = 10.0) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.deadline = deadline
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._busy_since: float | None = None  # enqueue time of the oldest event being written
        self.batches = 0  # transactions committed
        self.refused = 0  # events the database refused (answered 400)
        self.unavailable = 0  # batches answered 503 because storage was down
        self.crashes = 0  # unexpected exceptions caught at the thread's boundary
        self.expired = 0  # events whose deadline passed before the writer reached them

    def start(self) -> InboxWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def store(self, event: IncomingEvent, timeout: float | None = None) -> bool:
        """True when the event is new, False for a duplicate.

        Raises LedgerUnavailable (storage down, writer not running, or no answer within
        `timeout`, default the writer's deadline) or EventRefused (the database refused it).
        """
        if not self._thread.is_alive():
            raise LedgerUnavailable("the inbox writer is not running")
        loop = asyncio.get_running_loop()
        pending = _Pending(event, loop.create_future(), loop)
        self._queue.put(pending)
        # A timer, not asyncio.wait_for: no extra task per request on the hot path.
        timer = loop.call_later(self.deadline if timeout is None else timeout, self._expire, pending)
        try:
            return await pending.future
        finally:
            timer.cancel()

    def _expire(self, pending: _Pending) -> None:
        if not pending.future.done():
            pending.abandoned = True
            self.expired += 1
            pending.future.set_exception(LedgerUnavailable("not stored before the request's deadline"))

    def health(self, stuck_after: float) -> dict[str, Any]:
        """Alive, and no event waiting longer than `stuck_after` seconds (queued or being written)."""
        now = time.monotonic()
        oldest = self._busy_since
        with self._queue.mutex:  # held for a peek only; the writer takes it per get()
            head = self._queue.queue[0] if self._queue.queue else None
        if head is not None and (oldest is None or head.enqueued < oldest):
            oldest = head.enqueued
        waited = now - oldest if oldest is not None else 0.0
        alive = self._thread.is_alive()
        return {
            "ok": alive and waited <= stuck_after,
            "alive": alive,
            "queued": self._queue.qsize(),
            "oldest_wait_s": round(waited, 3),
            "batches": self.batches,
            "refused": self.refused,
            "unavailable": self.unavailable,
            "expired": self.expired,
            "crashes": self.crashes,
        }

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                live = [p for p in batch if not p.abandoned]
                if live:
                    self._busy_since = min(p.enqueued for p in live)
                    self._store(live)
            except Exception as exc:  # the thread's boundary: answer every waiter, keep running
                self.crashes += 1
                log.exception("inbox writer failed on a batch of %d; answering 503", len(batch))
                self._answer_error(batch, LedgerUnavailable, type(exc).__name__)
            finally:
                self._busy_since = None

    def _next_batch(self) -> list[_Pending] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _store(self, batch: list[_Pending]) -> None:
        """Store `batch` in one transaction; on a row's error, halve until that row is alone."""
        try:
            results = self.ledger.store_events([p.event for p in batch])
        except _ROW_ERRORS as exc:
            if storage_is_down(exc):
                self.unavailable += 1
                log.error("ledger unavailable for a batch of %d: %s", len(batch), type(exc).__name__)
                self._answer_error(batch, LedgerUnavailable, type(exc).__name__)
                return
            if len(batch) == 1:
                self.refused += 1
                event = batch[0].event
                reason = _describe(exc)
                log.error("the ledger refused event %s: %s", ascii(event.event_id[:255]), reason)
                self._answer_error(batch, EventRefused, reason)
                return
            middle = len(batch) // 2
            self._store(batch[:middle])
            self._store(batch[middle:])
            return
        self.batches += 1
        for p, new in zip(batch, results, strict=True):
            _answer(p, _set_result, new)

    def _answer_error(self, batch: list[_Pending], error: type[Exception], message: str) -> None:
        for p in batch:  # one exception each: a raised exception collects its waiter's traceback
            _answer(p, _set_exception, error(message))


def _describe(exc: BaseException) -> str:
    """The cause's class and first line, without the SQL statement or its parameters (payload data)."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    text = str(cause)
    return f"{type(cause).__name__}: {text.splitlines()[0][:200]}" if text else type(cause).__name__


def _answer(p: _Pending, setter: Any, value: Any) -> None:
    try:
        p.loop.call_soon_threadsafe(setter, p.future, value)
    except RuntimeError:  # the event loop has closed (shutdown): nobody is waiting any more
        pass


def _set_result(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[bool], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
