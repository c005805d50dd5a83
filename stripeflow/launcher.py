"""`stripeflow run`: every process of a local installation, started in order, stopped together.

1. the Prefect server (SQLite, UI on 127.0.0.1:4200), unless one already answers there;
2. the webhook bridge on 127.0.0.1:8000;
3. the worker (served deployments + dispatcher);
4. without Stripe credentials, the demo: a local Stripe API fake and signed demo events.
Ctrl-C stops every process it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel

console = Console()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_until(url: str, what: str, timeout: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for {what}…"):
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.3)
    raise SystemExit(f"{what} did not start (see the log in .stripeflow/logs)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Launcher:
    def __init__(self, prefect_port: int = 4200, bridge_port: int = 8000, demo: bool | None = None) -> None:
        self.prefect_port = prefect_port
        self.bridge_port = bridge_port
        self.home = Path(os.environ.get("STRIPEFLOW_HOME", ".stripeflow")).resolve()
        self.demo = demo if demo is not None else not os.environ.get("STRIPE_WEBHOOK_SECRET")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}
        self.logs = self.home / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PREFECT_HOME", str(self.home / "prefect"))
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{self.prefect_port}/api"
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # one flow run per batch of payments adds up: old runs are vacuumed (90 days by default)
        env.setdefault("PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED", "events,flow_runs")
        env.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
        env["STRIPEFLOW_HOME"] = str(self.home)
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self.names[proc.pid] = name
        return proc

    def run(self) -> None:
        # a closed terminal or a `kill` stops everything too, not only Ctrl-C
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        env = self.env()
        exe = [sys.executable, "-m"]
        try:
            if port_free(self.prefect_port):
                self.start(
                    "prefect-server",
                    [
                        *exe,
                        "prefect",
                        "server",
                        "start",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.prefect_port),
                    ],
                    env,
                )
            wait_until(
                f"http://127.0.0.1:{self.prefect_port}/api/health", "the Prefect server", 120, self.procs
            )
            stripe_port = None
            if self.demo:
                env["STRIPE_WEBHOOK_SECRET"] = "whsec_demo_" + secrets.token_hex(16)
                env["STRIPE_API_KEY"] = "sk_test_demo_" + secrets.token_hex(8)
                stripe_port = free_port()
                env["STRIPE_API_BASE"] = f"http://127.0.0.1:{stripe_port}"
            if not port_free(self.bridge_port):
                raise SystemExit(
                    f"port {self.bridge_port} is taken: stop what runs there or pass --bridge-port"
                )
            self.start("bridge", [*exe, "stripeflow.cli", "bridge", "--port", str(self.bridge_port)], env)
            wait_until(f"http://127.0.0.1:{self.bridge_port}/healthz", "the webhook bridge", 60, self.procs)
            self.start("worker", [*exe, "stripeflow.cli", "worker"], env)
            if self.demo:
                self.start(
                    "demo",
                    [
                        *exe,
                        "stripeflow.cli",
                        "demo",
                        "--stripe-port",
                        str(stripe_port),
                        "--bridge-url",
                        f"http://127.0.0.1:{self.bridge_port}/webhooks/stripe",
                    ],
                    env,
                )
            self.banner()
            self.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def banner(self) -> None:
        mode = (
            "[bold]demo[/]: signed demo payments are on their way to the bridge"
            if self.demo
            else "live: forward Stripe with `stripe listen --forward-to localhost:"
            f"{self.bridge_port}/webhooks/stripe`"
        )
        console.print(
            Panel.fit(
                f"Prefect UI      http://127.0.0.1:{self.prefect_port}/runs\n"
                f"Webhook bridge  http://127.0.0.1:{self.bridge_port}/webhooks/stripe  (health: /healthz)\n"
                f"Mode            {mode}\n"
                f"Deals           run `.venv/bin/stripeflow crm deals` in another terminal\n"
                f"Logs            {self.logs}\n"
                "Stop            Ctrl-C",
                title="Stripeflow is running",
            )
        )

    def wait(self) -> None:
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    name = self.names[proc.pid]
                    console.print(
                        f"[red]a process ({name}) stopped with code {proc.returncode}; see {self.logs}[/]"
                    )
                    return
            time.sleep(0.5)

    def stop(self) -> None:
        """Newest first, one at a time: the worker still needs the Prefect server while it stops."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C or a closing terminal must not orphan them
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    console.print(f"[yellow]{self.names[proc.pid]} did not stop in 20 s; killing it[/]")
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.procs:
            console.print("stopped every process Stripeflow started")
