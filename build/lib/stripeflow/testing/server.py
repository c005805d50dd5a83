"""Serve a fake vendor (any ASGI app) over real HTTP on 127.0.0.1, in a thread.

    with serve_app(make_hubspot_app()) as base_url:
        client = HubSpotAPI(base_url, token="...")

The port is free and chosen by the OS; the server is up (it answers) before the block runs,
and is stopped when the block ends. The same helper serves the tests, the benchmarks and the demo.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from stripeflow.launcher import free_port


class ServerThread:
    """A uvicorn server in a daemon thread; `start()` returns once it accepts connections."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **config
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"fake:{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        started = threading.Event()

        def wait() -> None:
            while not self.server.started and self.thread.is_alive():
                started.wait(0.01)

        wait()
        if not self.server.started:
            raise RuntimeError(f"server on port {self.port} did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serve_app(app: Any, port: int | None = None, **config: Any) -> Iterator[str]:
    server = ServerThread(app, port, **config).start()
    try:
        yield server.url
    finally:
        server.stop()
