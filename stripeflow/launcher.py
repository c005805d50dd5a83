"""`stripeflow run`: every process of a local installation, started in order, stopped together.

1. the Prefect server (SQLite, UI on 127.0.0.1:4200), unless one already answers there;
2. the webhook bridge on 127.0.0.1:8000;
3. the worker (served deployments + dispatcher);
4. without a webhook secret in the settings (file, environment or `[stripe] block`), the demo:
   a local Stripe API fake and signed demo events, in a home of its own (`<home>/demo`) with a
   generated configuration that reaches none of the user's real systems (stripeflow/demo.py).
Ctrl-C stops every process it started.

The decisions are functions (`load_user_settings`, `decide_demo`, `plan_run`), so they are
tested without starting a process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from stripeflow.core.accounts import any_webhook_secret
from stripeflow.core.config import Settings, load_settings
from stripeflow.core.enrichment import Enrichment, enrichment
from stripeflow.core.errors import ConfigError
from stripeflow.demo import DemoStripe, demo_env, departures, record_run, write_demo_config

console = Console()
NO_SECRET = (
    "no Stripe webhook secret is configured (STRIPE_WEBHOOK_SECRET, [stripe] webhook_secrets "
    "or a [stripe] block), so nothing real can reach the bridge"
)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_until(
    url: str,
    what: str,
    timeout: float,
    procs: list[subprocess.Popen[bytes]],
    logs: Path | str = "<home>/logs",
) -> None:
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
    raise SystemExit(f"{what} did not start (see its log in {logs})")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def load_user_settings(env: Mapping[str, str], prefect_api_url: str | None = None) -> Settings:
    """The settings as every process will load them: the file, the environment, then the block.

    A `[stripe] block` lives on the Prefect server, so it is read from `prefect_api_url` (the
    server the launcher started) when given.
    """
    settings = load_settings(env=dict(env))
    blocks = [b for b in (settings.stripe.block, *(a.stripe.block for a in settings.accounts)) if b]
    if not blocks:
        return settings
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from stripeflow.blocks.stripe import with_stripe_block

    url = prefect_api_url or env.get("PREFECT_API_URL")
    try:
        with temporary_settings(updates={PREFECT_API_URL: url} if url else None):
            return with_stripe_block(settings)
    # not found (ValueError), an invalid block (ValidationError), Prefect unreachable (httpx, OSError)
    except (ValueError, httpx.HTTPError, OSError, RuntimeError) as exc:
        raise ConfigError(
            f"the Stripe block {', '.join(map(repr, blocks))} could not be loaded from {url or 'Prefect'}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def decide_demo(settings: Settings, forced: bool | None = None) -> tuple[bool, str]:
    """(demo?, why): the demo runs when no webhook secret is configured anywhere, or on --demo."""
    if forced is not None:
        return forced, "--demo was given" if forced else "--no-demo was given"
    if any_webhook_secret(settings):
        return False, "a Stripe webhook secret is configured"
    return True, NO_SECRET


@dataclass(frozen=True)
class Plan:
    """What `stripeflow run` starts, decided before any process is."""

    demo: bool
    why: str
    user: Settings  # the user's own settings (with the block), whatever runs
    env: dict[str, str]  # for the bridge, the worker and the demo
    data_home: Path  # where those processes keep their ledger, local CRM and outbox
    config: Path | None = None  # the demo's generated stripeflow.toml
    stripe: DemoStripe | None = None
    left_out: list[str] = field(default_factory=list)

    @property
    def enrichment(self) -> Enrichment:
        """What the processes that run can fetch from Stripe (the fake's API in the demo)."""
        return enrichment(load_settings(self.config, self.env) if self.config else self.user)


def plan_run(
    user: Settings,
    base_env: Mapping[str, str],
    forced: bool | None = None,
    port: Callable[[], int] | None = None,
) -> Plan:
    """Decide demo or live and build the children's environment (and the demo's config)."""
    demo, why = decide_demo(user, forced)
    if not demo:
        return Plan(False, why, user, dict(base_env), user.home.resolve())
    stripe = DemoStripe.new((port or free_port)())
    config = write_demo_config(user, stripe)
    env = demo_env(base_env, config)
    return Plan(True, why, user, env, Path(env["STRIPEFLOW_HOME"]), config, stripe, departures(user))


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Launcher:
    def __init__(
        self,
        prefect_port: int = 4200,
        bridge_port: int = 8000,
        demo: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.prefect_port = prefect_port
        self.bridge_port = bridge_port
        self.forced = demo
        self.environ = dict(os.environ if environ is None else environ)
        self.settings = load_settings(env=self.environ)  # the file and env; the block once Prefect runs
        self.home = self.settings.home.resolve()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}
        self.logs = self.home / "logs"

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def env(self) -> dict[str, str]:
        env = dict(self.environ)
        env.setdefault("PREFECT_HOME", str(self.home / "prefect"))
        env["PREFECT_API_URL"] = self.prefect_api_url
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # one flow run per batch of payments adds up: old runs are vacuumed (90 days by default)
        env.setdefault("PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED", "events,flow_runs")
        env.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
        env["STRIPEFLOW_HOME"] = str(self.home)
        return env

    def plan(self) -> Plan:
        """Needs the Prefect server when a Stripe block is named (the block lives there)."""
        user = load_user_settings(self.environ, self.prefect_api_url)
        return plan_run(user, self.env(), self.forced)

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
                    self.env(),
                )
            wait_until(f"{self.prefect_api_url}/health", "the Prefect server", 120, self.procs, self.logs)
            if not port_free(self.bridge_port):
                raise SystemExit(
                    f"port {self.bridge_port} is taken: stop what runs there or pass --bridge-port"
                )
            try:
                plan = self.plan()
            except ConfigError as exc:
                raise SystemExit(str(exc)) from None
            record_run(self.home, "demo" if plan.demo else "live", plan.config, self.prefect_api_url)
            env = plan.env
            self.start("bridge", [*exe, "stripeflow.cli", "bridge", "--port", str(self.bridge_port)], env)
            bridge_health = f"http://127.0.0.1:{self.bridge_port}/healthz"
            wait_until(bridge_health, "the webhook bridge", 60, self.procs, self.logs)
            self.start("worker", [*exe, "stripeflow.cli", "worker"], env)
            if plan.stripe is not None:
                self.start(
                    "demo",
                    [
                        *exe,
                        "stripeflow.cli",
                        "demo",
                        "--stripe-port",
                        str(plan.stripe.api_base.rsplit(":", 1)[1]),
                        "--bridge-url",
                        f"http://127.0.0.1:{self.bridge_port}/webhooks/stripe",
                    ],
                    env,
                )
            console.print(self.banner(plan))
            self.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def banner(self, plan: Plan) -> Panel:
        rows = [
            ("Prefect UI", f"http://127.0.0.1:{self.prefect_port}/runs"),
            ("Webhook bridge", f"http://127.0.0.1:{self.bridge_port}/webhooks/stripe  (health: /healthz)"),
        ]
        deals = "run `.venv/bin/stripeflow crm deals` in another terminal"
        if plan.demo:
            assert plan.config is not None
            rows += [
                ("Mode", "demo: signed demo payments are on their way to the bridge"),
                ("Why", plan.why),
                ("Demo home", f"{_shown(plan.data_home)}  (its own ledger, local CRM and outbox)"),
                ("Demo config", f"{_shown(plan.config)}  (written on every start)"),
            ]
            rows += [("Not used" if i == 0 else "", item) for i, item in enumerate(plan.left_out)]
            rows += [
                ("Stripe API", "the demo's Stripe fake: payloads are completed as with a key"),
                ("Deals", deals + " (it shows the demo's while the demo is what runs)"),
                ("E-mails", f"{_shown(plan.data_home / 'outbox')}/"),
            ]
            own = enrichment(plan.user)
            if not own.api_key:
                rows.append(
                    (
                        "Your Stripe",
                        f"no API key: live, {len(own.gaps)} kinds of detail would be "
                        "missing (`stripeflow status` lists them)",
                    )
                )
        else:
            found = plan.enrichment
            rows += [
                (
                    "Mode",
                    "live: forward Stripe with `stripe listen --forward-to localhost:"
                    f"{self.bridge_port}/webhooks/stripe`",
                ),
                ("Stripe API", found.summary),
            ]
            rows += [("Missing" if i == 0 else "", f"- {gap}") for i, gap in enumerate(found.gaps)]
            rows.append(("Deals", deals))
        rows += [("Logs", _shown(self.logs)), ("Stop", "Ctrl-C")]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for label, value in rows:
            grid.add_row(label, Text(value))  # Text, not markup: values hold brackets ([stripe] block)
        return Panel.fit(grid, title="Stripeflow is running")

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
