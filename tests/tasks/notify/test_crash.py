"""Killed for real: a child process running the notify task is SIGKILLed between the vendor's
answer and the ledger's settle, or between the claim and the send; then a rerun. Each sink
ends with exactly one e-mail or hand-off.

What a rerun does with what the dead one left (see `delivery`):
- `claimed` (killed after the claim, before the send): taken over and sent, once.
- at the hand-off (no `attempting` commit either): redone with the same Idempotency-Key; the
  receiver keeps one.
- at the outbox (no `attempting` commit: a repeat replaces the same file): rewritten, one file;
  a row left `attempting` (legacy claims) is looked at: the file is there, so `done`.
- `attempting` at SMTP (killed after the server took the message): SMTP cannot be asked, so
  the rerun settles it `unknown` and reports it; it is not sent again. The e-mail went once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from stripeflow.core.config import NotifySettings, Settings
from stripeflow.core.ledger import EffectRow, Ledger
from stripeflow.core.payment import PaymentChange
from stripeflow.tasks.notify import hand_off_changes, notify_changes
from stripeflow.tasks.notify.handoff import handoff_key
from stripeflow.testing.handoff import HandoffReceiver
from stripeflow.testing.server import serve_app
from stripeflow.testing.smtp import smtp_server
from tests.tasks.notify.conftest import make_payment

ROOT = Path(__file__).resolve().parents[3]
SECRET = "whsec_handoff"
KEY = "email:customer:payment_confirmation:pi_3Q0001"


def run_child(
    tmp_path: Path, settings: dict[str, Any], payments: list[Any], task: str, crash_at: str | None = None
) -> subprocess.Popen[str]:
    spec = tmp_path / f"spec-{time.monotonic_ns()}.json"
    spec.write_text(
        json.dumps(
            {
                "ledger": f"sqlite:///{tmp_path}/ledger.db",
                "settings": settings,
                "payments": [p.model_dump(mode="json") for p in payments],
                "task": task,
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STRIPEFLOW_CRASH_AT", None)
    if crash_at:
        env["STRIPEFLOW_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tasks.notify.crash_child", str(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rerun(ledger: Ledger, settings: dict[str, Any], payments: list[Any], task: str) -> dict[str, Any]:
    """The next run, after the kill (in this process: only the killed one has to be a child)."""
    cfg = Settings.model_validate(settings)
    changes = [PaymentChange(payment=p, previous=None) for p in payments]
    if task == "handoff":
        report = hand_off_changes.fn(changes, cfg, ledger)
    else:
        report = notify_changes.fn(changes, cfg, ledger, audience="customer")
    return {"counts": report.counts(), "unknown": report.unknown}


def finish(child: subprocess.Popen[str], *, killed: bool) -> dict[str, Any]:
    out, err = child.communicate(timeout=120)
    if killed:
        assert child.returncode == -signal.SIGKILL, err[-2000:]
        return {}
    assert child.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.migrate()
    yield ledger
    ledger.dispose()


def smtp_settings(tmp_path: Path, port: int | None) -> dict[str, Any]:
    smtp = {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5} if port else {}
    return {"home": str(tmp_path / "home"), "notify": {"smtp": smtp, "sender": "Sklep <sklep@example.pl>"}}


def test_killed_after_smtp_took_the_mail_it_was_sent_once_and_is_unknown(
    tmp_path: Path, ledger: Ledger
) -> None:
    with smtp_server() as server:
        settings = smtp_settings(tmp_path, server.port)
        finish(
            run_child(tmp_path, settings, [make_payment()], "customer", "notify.email.after_call"),
            killed=True,
        )
        assert len(server.messages) == 1 and ledger.effect_states([KEY]) == {KEY: "attempting"}
        report = rerun(ledger, settings, [make_payment()], "customer")
        assert report["unknown"] == [KEY] and report["counts"]["sent"] == 0
        assert ledger.effect_states([KEY]) == {KEY: "unknown"} and len(server.messages) == 1
        again = rerun(ledger, settings, [make_payment()], "customer")
        assert again["counts"]["already_done"] == 1 and len(server.messages) == 1


def test_killed_between_claim_and_send_the_rerun_sends_it_once(tmp_path: Path, ledger: Ledger) -> None:
    """The lost e-mails of issue 7: claimed, never sent, and never sent by any later run."""
    payments = [make_payment(payment_id=f"pi_{i}", email=f"c{i}@example.pl") for i in range(60)]
    with smtp_server() as server:
        settings = smtp_settings(tmp_path, server.port)
        finish(run_child(tmp_path, settings, payments, "customer", "notify.email.after_claim"), killed=True)
        assert not server.messages and set(
            ledger.effect_states([f"email:customer:payment_confirmation:pi_{i}" for i in range(60)]).values()
        ) == {"claimed"}
        report = rerun(ledger, settings, payments, "customer")
        assert report["counts"]["sent"] == 60
        assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(p.email for p in payments)


def test_killed_after_the_outbox_write_the_rerun_leaves_one_file(tmp_path: Path, ledger: Ledger) -> None:
    settings = smtp_settings(tmp_path, None)
    finish(
        run_child(tmp_path, settings, [make_payment()], "customer", "notify.email.after_call"), killed=True
    )
    outbox = tmp_path / "home" / "outbox"
    (written,) = outbox.glob("*.eml")
    assert ledger.effect_states([KEY]) == {KEY: "claimed"}  # the outbox takes no `attempting` commit
    report = rerun(ledger, settings, [make_payment()], "customer")
    assert report["counts"]["sent"] == 1 and ledger.effect_states([KEY]) == {KEY: "done"}
    assert list(outbox.glob("*")) == [written]  # the same file, replaced: one e-mail


def test_a_doubtful_outbox_mail_is_looked_for(tmp_path: Path, ledger: Ledger) -> None:
    """A row left `attempting` (by the pre-0005 claims, which migrate so) is settled by looking."""
    settings = smtp_settings(tmp_path, None)
    finish(
        run_child(tmp_path, settings, [make_payment()], "customer", "notify.email.after_call"), killed=True
    )
    with ledger.session() as s:  # as migration 0005 leaves a legacy claim
        s.execute(update(EffectRow).where(EffectRow.key == KEY).values(status="attempting"))
    report = rerun(ledger, settings, [make_payment()], "customer")
    assert report["counts"]["recovered"] == 1 and report["counts"]["sent"] == 0
    assert ledger.effect_states([KEY]) == {KEY: "done"}


def test_killed_after_the_hand_off_was_taken_the_receiver_keeps_one(tmp_path: Path, ledger: Ledger) -> None:
    receiver = HandoffReceiver(SECRET)
    payment = make_payment()
    key = handoff_key(payment)
    with serve_app(receiver.app()) as url:
        settings = {
            "home": str(tmp_path / "home"),
            "handoff": {"url": f"{url}{receiver.path}", "secret": SECRET},
        }
        finish(run_child(tmp_path, settings, [payment], "handoff", "notify.handoff.after_call"), killed=True)
        assert list(receiver.accepted) == [key] and ledger.effect_states([key]) == {key: "claimed"}
        report = rerun(ledger, settings, [payment], "handoff")
        assert report["counts"]["sent"] == 1 and ledger.effect_states([key]) == {key: "done"}
        assert receiver.attempts == 2 and receiver.repeats == 1 and list(receiver.accepted) == [key]


def test_a_burst_killed_at_a_random_moment_loses_and_doubles_nothing(tmp_path: Path, ledger: Ledger) -> None:
    """SIGKILL from outside, mid-burst, as `kill -9` of the worker in issue 7; then a rerun."""
    payments = [make_payment(payment_id=f"pi_{i}", email=f"c{i}@example.pl") for i in range(150)]
    keys = [f"email:customer:payment_confirmation:{p.payment_id}" for p in payments]
    with smtp_server() as server:
        settings = smtp_settings(tmp_path, server.port)
        child = run_child(tmp_path, settings, payments, "customer")
        deadline = time.monotonic() + 60
        while len(server.messages) < 40 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        finish(child, killed=True)
        first = len(server.messages)
        assert 40 <= first < 150
        report = rerun(ledger, settings, payments, "customer")
        delivered = [m.message["Message-ID"] for m in server.messages]
        assert len(delivered) == len(set(delivered))  # nothing twice
        states = ledger.effect_states(keys)
        assert set(states.values()) <= {"done", "unknown"}
        # only the messages in flight can be in doubt, one per SMTP session (each is settled once
        # sent): SMTP cannot be asked
        unknown = [k for k, s in states.items() if s == "unknown"]
        in_flight = NotifySettings().parallel
        assert sorted(unknown) == sorted(report["unknown"]) and len(unknown) <= in_flight
        got = {m.rcpt_tos[0] for m in server.messages}
        missing = [p.email for p in payments if p.email not in got]
        # at most those, if the kill fell between their `attempting` commit and the final dot
        assert len(missing) <= len(unknown) and len(got) + len(missing) == 150
