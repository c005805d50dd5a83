"""Stripe's side of a burst: signed webhooks from their own process, on keep-alive connections.

Uses the bridge benchmark's lean HTTP client (raw requests over asyncio streams), so the
sender is not what limits the rate.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from bench.bridge import closed_loop, raw_request


def run_sender(url: str, bodies: list[str], secret: str, started: float, concurrency: int = 64) -> None:
    """Process entry point: send every body, then print how long the sending itself took."""
    port = urlsplit(url).port or 80
    requests = [raw_request(body, secret, port) for body in bodies]
    outcome = asyncio.run(closed_loop(port, requests, concurrency))
    bad = {status: n for status, n in outcome.statuses.items() if status != 200}
    if bad:
        raise SystemExit(f"the bridge refused some events: {bad}")
    print(
        f"sender: {len(bodies)} events in {outcome.elapsed:.1f} s ({len(bodies) / outcome.elapsed:.0f}/s), "
        f"{time.monotonic() - started - outcome.elapsed:.1f} s to start and sign",
        flush=True,
    )
