"""Killed for real: a worker running `process-payment-events` dies by SIGKILL right after the CRM
took its note and before the ledger settled it (or right after it created the deal, before the
ledger linked it); the next run finishes, and exactly one note (and one deal) exists.

The child is a real process running the real flow against the session's Prefect server, with
the ledger on SQLite and the CRM either the local one or the HubSpot fake over a real socket.
`STRIPEFLOW_CRASH_AT` names the point it dies at (stripeflow/core/crashpoints.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from stripeflow.bridge.app import parse_event
from stripeflow.core.config import load_settings
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.pipedrive import FakePipedrive
from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_events import StripeWorld

ROOT = Path(__file__).resolve().parents[3]
CHILD = """
import sys
from stripeflow.core.config import load_settings
from stripeflow.runtime import build_runtime, set_runtime
from stripeflow.flows.process_payment_events import process_payment_events

runtime = build_runtime(load_settings())
set_runtime(runtime)
print(process_payment_events(event_ids=sys.argv[1:] or None))
runtime.close()
"""


def run_worker(
    env: dict[str, str], crash_at: str | None = None, event_ids: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """One run of the flow in a child process: of these events, or (none given) what is pending."""
    child_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    child_env.pop("STRIPEFLOW_CRASH_AT", None)
    if crash_at:
        child_env["STRIPEFLOW_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-c", CHILD, *event_ids],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


Counts = Callable[[str], int]  # payment id -> how many of a thing the CRM holds for it


@contextmanager
def local_crm(home: Path) -> Iterator[tuple[dict[str, str], Counts, Counts]]:
    def deals(pid: str) -> int:
        return sum(1 for d in LocalCRM(home / "crm.db").list_deals() if d.payment_id == pid)

    yield {}, lambda pid: len(LocalCRM(home / "crm.db").notes_for(pid)), deals


@contextmanager
def hubspot_over_a_socket(home: Path) -> Iterator[tuple[dict[str, str], Counts, Counts]]:
    fake = FakeHubSpot().ready()
    with serve_app(fake.app) as url:

        def notes(pid: str) -> int:
            deal = fake.deal_by_payment(pid)
            return len(fake.notes_of_deal(deal["id"])) if deal else 0

        def deals(pid: str) -> int:
            return sum(
                1 for d in fake.objects["deals"].values() if d["properties"].get("stripe_payment_id") == pid
            )

        yield {"HUBSPOT_TOKEN": fake.token, "HUBSPOT_BASE_URL": url}, notes, deals


@contextmanager
def pipedrive_over_a_socket(home: Path) -> Iterator[tuple[dict[str, str], Counts, Counts]]:
    fake = FakePipedrive().ready()
    with serve_app(fake.app) as url:

        def notes(pid: str) -> int:
            deal = fake.deal_by_payment(pid)
            return sum(1 for n in fake.notes.values() if deal and n["deal_id"] == deal["id"])

        def deals(pid: str) -> int:
            return sum(1 for d in fake.deals.values() if pid in d["custom_fields"].values())

        yield {"PIPEDRIVE_API_TOKEN": fake.token, "PIPEDRIVE_BASE_URL": url}, notes, deals
        assert len(fake.persons) == 1  # nor was the person created again


CRMS = {"local": local_crm, "hubspot": hubspot_over_a_socket, "pipedrive": pipedrive_over_a_socket}


@pytest.mark.parametrize(
    ("crm_type", "crash_at"),
    [
        ("local", "crm.note.after_call"),
        ("hubspot", "crm.note.after_call"),
        ("pipedrive", "crm.deal.after_call"),  # an unkeyed create (POST /deals), its id never recorded
    ],
    ids=["local-note", "hubspot-over-socket-note", "pipedrive-over-socket-deal"],
)
def test_sigkill_between_a_crm_call_and_its_record_leaves_exactly_one_of_each(
    prefect_server: str, tmp_path: Path, world: StripeWorld, crm_type: str, crash_at: str
) -> None:
    home = tmp_path / "home"
    crm = CRMS[crm_type]
    config = tmp_path / "stripeflow.toml"
    config.write_text(
        f'home = "{home}"\n[dispatcher]\nlease_seconds = 1\n[[crm]]\ntype = "{crm_type}"\n', encoding="utf-8"
    )
    settings = load_settings(config, env={})
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    cus = world.customer("anna@example.pl", "Anna Nowak")
    pi, ch = world.payment_intent(24900, "pln", cus)
    event = world.event("payment_intent.succeeded", {**pi, "latest_charge": ch, "customer": cus})
    ledger.store_events([parse_event(event, json.dumps(event))])

    with crm(home) as (crm_env, notes_of, deals_of):  # type: ignore[operator]
        env = {"STRIPEFLOW_CONFIG": str(config), "PREFECT_API_URL": prefect_server, **crm_env}
        killed = run_worker(env, crash_at=crash_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        notes = [e.status for e in ledger.effects_for(pi["id"]) if e.action == "note"]
        if crash_at == "crm.note.after_call":
            assert notes_of(pi["id"]) == 1 and notes == ["claimed"]  # in the CRM, never settled
        else:
            assert deals_of(pi["id"]) == 1 and ledger.get_link("deal", pi["id"], crm_type) is None
            assert notes == []  # made in the CRM, never recorded; no note yet
        assert ledger.inbox_counts() == {"claimed": 1}

        deadline = time.monotonic() + 120
        while ledger.inbox_counts() != {"done": 1}:  # the next runs, once the dead run's lease ends
            assert time.monotonic() < deadline, ledger.inbox_counts()
            rerun = run_worker(env)
            assert rerun.returncode == 0, rerun.stderr[-3000:]

        assert notes_of(pi["id"]) == 1 and deals_of(pi["id"]) == 1
        notes = [e for e in ledger.effects_for(pi["id"]) if e.action == "note"]
        assert [e.status for e in notes] == ["done"]
    ledger.dispose()


def test_a_note_a_killed_run_claimed_for_a_state_the_payment_moved_past_is_settled(
    prefect_server: str, tmp_path: Path, world: StripeWorld
) -> None:
    """Killed after claiming the "paid" note, before calling the CRM; the refund then comes, and
    the run that finishes both events plans only the refund's note. The dead run's claim is let
    go (the CRM never had it), so the payment is not left unfinished for good."""
    home = tmp_path / "home"
    config = tmp_path / "stripeflow.toml"
    config.write_text(f'home = "{home}"\n[dispatcher]\nlease_seconds = 1\n[[crm]]\ntype = "local"\n')
    settings = load_settings(config, env={})
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    cus = world.customer("anna@example.pl", "Anna Nowak")
    pi, ch = world.payment_intent(24900, "pln", cus)
    success = world.event("payment_intent.succeeded", {**pi, "latest_charge": ch, "customer": cus})
    ledger.store_events([parse_event(success, json.dumps(success))])
    env = {"STRIPEFLOW_CONFIG": str(config), "PREFECT_API_URL": prefect_server}

    killed = run_worker(env, crash_at="crm.note.after_claim")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [(e.action, e.status) for e in ledger.effects_for(pi["id"]) if e.action == "note"] == [
        ("note", "claimed")
    ]
    refund = world.event("charge.refunded", world.refund(ch))
    ledger.store_events([parse_event(refund, json.dumps(refund))])
    deadline = time.monotonic() + 120
    while ledger.inbox_counts() != {"done": 2}:  # both events in one run, once the dead lease ends
        assert time.monotonic() < deadline, ledger.inbox_counts()
        rerun = run_worker(env, event_ids=[success["id"], refund["id"]])
        assert rerun.returncode == 0, rerun.stderr[-3000:]

    assert LocalCRM(home / "crm.db").notes_for(pi["id"]) == ["Zwrot całej płatności: 249,00\u00a0zł."]
    notes = {e.key.rsplit(":", 2)[1]: e.status for e in ledger.effects_for(pi["id"]) if e.action == "note"}
    assert notes == {"refunded": "done"}  # the paid note's claim let go, not left claimed
    assert ledger.unfinished_payments([pi["id"]]) == set()
    ledger.dispose()
