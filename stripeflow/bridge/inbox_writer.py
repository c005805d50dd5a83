"""Group commit: many concurrent webhook requests share one durable transaction.

Each request hands its event to a single writer thread and awaits the outcome. The writer
takes everything waiting (up to `max_batch`), stores it in one transaction (one fsync), and
then answers every waiter. Under load this turns 1,000 commits a second into a few dozen,
while each 2xx still follows its own durable write.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from stripeflow.core.ledger import IncomingEvent, Ledger


@dataclass
class _Pending:
    event: IncomingEvent
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class LedgerUnavailable(Exception):
    """The ledger could not store the event; the bridge answers 503 so Stripe retries."""


class InboxWriter:
    def __init__(self, ledger: Ledger, max_batch: int = 500) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self.batches = 0

    def start(self) -> InboxWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    async def store(self, event: IncomingEvent) -> bool:
        """True when the event is new, False for a duplicate; raises LedgerUnavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.put(_Pending(event, future, loop))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
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
            try:
                results = self.ledger.store_events([p.event for p in batch])
            except SQLAlchemyError as exc:
                error = LedgerUnavailable(type(exc).__name__)
                for p in batch:
                    p.loop.call_soon_threadsafe(_set_exception, p.future, error)
                continue
            self.batches += 1
            for p, new in zip(batch, results, strict=True):
                p.loop.call_soon_threadsafe(_set_result, p.future, new)


def _set_result(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[bool], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
