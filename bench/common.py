"""Helpers shared by the benchmarks: child processes, health waits, percentiles, result tables.

Every benchmark starts the real programs as child processes (each in its own session, so a
Ctrl-C or a crash of the bench never leaves one behind), waits for their health URLs, measures,
and prints a rich table with the target beside each figure.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.table import Table

# Wide enough for the result tables when the output is a file or a pipe (rich's default there is 80).
console = Console(width=None if sys.stdout.isatty() else 150)
ROOT = Path(__file__).resolve().parent.parent  # the repository: `bench` and `tests` import from here

# Variables a developer's shell may carry that would point a bench at someone else's state.
_HERMETIC_DROP = (
    "STRIPEFLOW_CONFIG",
    "STRIPEFLOW_HOME",
    "DATABASE_URL",
    "PREFECT_API_URL",
    "PREFECT_HOME",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "PREFECT_PROFILES_PATH",
)


def base_env(**extra: str) -> dict[str, str]:
    """The bench's environment minus anything that names other state, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _HERMETIC_DROP}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def machine() -> str:
    """One line saying what the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


@dataclass
class Procs:
    """Child processes started by one bench, logs in `log_dir`, all stopped together."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        # A new session: the child gets no terminal SIGINT of its own, and we stop its whole group.
        self.procs[name] = subprocess.Popen(
            list(args), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()  # the child holds its own copy of the descriptor

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def groups(self) -> list[int]:
        """Process group ids of the live children (each one leads its own group)."""
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.tail(name)
                raise RuntimeError(f"{name} exited with code {proc.returncode}; its log ends:\n{tail}")

    def explain(self) -> None:
        """Print the log tail of every child that has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                console.print(
                    f"[red]{name} exited with code {proc.returncode}; its log ends:[/]\n{self.tail(name)}"
                )

    def tail(self, name: str, lines: int = 25) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str | None = None, timeout: float = 10.0) -> None:
        """Stop one child, or all in reverse start order: SIGINT (graceful for uvicorn and Prefect),
        SIGTERM after `timeout`, then SIGKILL.

        One at a time, so the worker winds down (pauses its deployments, ends a run in flight)
        while the Prefect server still answers.
        """
        for n in [name] if name else list(reversed(self.procs)):
            proc = self.procs.pop(n)
            started = time.monotonic()
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0)):
                if proc.poll() is not None:
                    break
                _signal_group(proc, sig)
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left in the group (Prefect's server runs its API in a subprocess) goes too.
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)
            if time.monotonic() - started > 3:
                console.print(f"[dim]{n} took {time.monotonic() - started:.1f} s to stop[/]")

    def kill(self, name: str) -> None:
        """SIGKILL a child's whole process group, as a crash (or the OOM killer) would; no cleanup."""
        proc = self.procs.pop(name)
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)

    def exited(self) -> list[str]:
        """Names of the children that have exited (a supervisor restarts these)."""
        return [n for n, p in self.procs.items() if p.poll() is not None]


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def bench_session(prefix: str, keep: bool = False) -> Iterator[tuple[Path, Procs]]:
    """A temp directory and a process group that are cleaned up however the bench ends.

    SIGTERM is turned into KeyboardInterrupt so `kill <bench>` cleans up like Ctrl-C does.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"stripeflow-{prefix}-"))
    procs = Procs(tmp / "logs")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT (a
    # background job), and children then get the default SIGINT rather than an inherited "ignore".
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    failed = False
    try:
        yield tmp, procs
    except Exception:
        failed = True
        procs.explain()  # a child that died is the usual cause: show its log, not only our trace
        raise
    finally:
        procs.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if keep or failed:  # a failed run keeps its logs for the post-mortem
            console.print(f"[dim]kept {tmp} (logs in {tmp / 'logs'})[/]")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def wait_http(
    url: str,
    what: str,
    timeout: float,
    procs: Procs | None = None,
    ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
) -> float:
    """Poll `url` until `ok(response)`; returns the seconds it took. Fails fast if a child died."""
    start = time.monotonic()
    deadline = start + timeout
    with console.status(f"waiting for {what}…"), httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if ok(client.get(url)):
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            if procs is not None:
                procs.check()
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def _stat(pid: int | str) -> list[str]:
    # Fields after the command name, which may itself hold spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pgid: int) -> float:
    """User + system CPU used by every live process in a process group (Linux /proc); else NaN.

    Each child is started as the leader of its own group, so this counts what it spawned too
    (`prefect server start` runs its API in a uvicorn subprocess). CPU per event is the figure
    that stays put when other work shares the machine, so the benches report it.
    """
    ticks, found = 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(entry.name)
            if int(fields[2]) == pgid:  # pgrp
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
                found = True
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK") if found else math.nan


def cpu_seconds_matching(text: str) -> float:
    """CPU of the processes whose command line contains `text` (a PostgreSQL backend names its
    database there, so the database work done for a bench counts as the bench's)."""
    ticks = 0
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                fields = _stat(entry.name)
                ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class MachineLoad:
    """How much CPU *other* work used while a bench ran: the machine's busy time minus ours.

    Wall-clock figures are only comparable between runs on an otherwise quiet machine; this
    says how quiet it was.
    """

    def __init__(self, groups: Callable[[], Sequence[int]], also_ours: str | None = None) -> None:
        self.groups = groups
        self.also_ours = also_ours  # see cpu_seconds_matching
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        try:
            busy = sum(
                int(v) for i, v in enumerate(Path("/proc/stat").read_text().split()[1:9]) if i not in (3, 4)
            ) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        except (OSError, ValueError):
            busy = math.nan
        ours = sum(t for t in (cpu_seconds(g) for g in self.groups()) if not math.isnan(t))
        ours += sum(os.times()[:2])
        if self.also_ours:
            ours += cpu_seconds_matching(self.also_ours)
        return time.monotonic(), busy, ours

    def others(self) -> float:
        """Cores' worth of CPU that other processes used since the start (0.5 = half a core)."""
        t1, busy1, ours1 = self._sample()
        t0, busy0, ours0 = self.start
        return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / (t1 - t0))


def load_note(others: float) -> str:
    """Says how much of the machine other processes took while the bench measured."""
    note = f"other processes used {others:.2f} of {os.cpu_count()} cores meanwhile"
    if others > 0.25:
        note += " [yellow](wall-clock figures are pessimistic)[/]"
    return note


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (p in 0..100); NaN when empty.

    Nearest rank never invents a value between two samples, so p99 of 3,000 latencies is the
    30th worst one actually observed.
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "n": float(len(s)),
        "p50": percentile(s, 50),
        "p95": percentile(s, 95),
        "p99": percentile(s, 99),
        "max": s[-1] if s else math.nan,
        "mean": sum(s) / len(s) if s else math.nan,
    }


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    if math.isnan(value):
        return "[red]MISS[/]"
    ok = value >= target if higher_is_better else value < target
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def ms(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{seconds:.2f} s"


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None
) -> None:
    table = Table(title=title, caption=caption, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def python() -> str:
    """The interpreter running the bench: children use the same venv."""
    return sys.executable
