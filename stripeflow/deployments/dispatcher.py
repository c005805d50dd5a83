"""The dispatcher: hands waiting inbox events to Prefect, and runs them in this process.

Each round claims up to `batch_size` pending events (events whose run failed go first, in
batches ten times smaller per attempt, see `Ledger.claim_next`), creates a flow run of the
`process-payment-events` deployment for them (Pending, so the served runner does not also pick
it up; one idempotency key per claim), and executes it here, in a long-lived process: a run
reaches its first task in ~0.1 s instead of the 2–4 s a fresh process costs. The run is a real
deployment run: it shows in the UI, and "Retry" there reruns it through the served deployment.

Up to `[dispatcher] runs` runs go at once, each in its own thread; one loop claims, and only
when a run slot is free. A run spends most of its time waiting on vendors (a CRM's 429 window,
backoffs), so while one waits the next events need not: under a failing CRM, one run at a
time left thousands of events waiting behind a single run (the chaos bench). Runs at once
never work on the same payment or customer (their leases), and share each vendor's limiter.

Each claim carries a token, passed to the run as `claim_token`: the run renews the claim's
lease while it works (every third of `lease_seconds`), so a run that dies, with its process,
stops renewing and its events are claimed again within one lease (30 s by default). If
Prefect cannot be reached the events go back to the inbox and wait; the dispatcher tries again
with a capped backoff. Effects in the ledger keep every side effect single.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
import uuid
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.flow_engine import run_flow_sync
from prefect.states import Pending

from stripeflow.core.config import DEFAULT_ACCOUNT
from stripeflow.core.ledger import new_token
from stripeflow.flows.process_payment_events import process_payment_events
from stripeflow.runtime import Runtime
from stripeflow.tasks.prefect_runs import account_run_name, events_run_name

log = logging.getLogger("stripeflow.dispatcher")
DEPLOYMENT = "process-payment-events/process-payment-events"

# What "Prefect is unreachable" looks like from the client: connection errors, 5xx, and the
# RuntimeError("Failed to reach API ...") its version check raises when the server is gone.
UNREACHABLE = (httpx.HTTPError, PrefectHTTPStatusError, OSError, RuntimeError)


class PrefectUnreachable(Exception):
    """Prefect's API did not answer; the claimed events went back to the inbox."""


class Dispatcher:
    def __init__(self, runtime: Runtime, deployment: str = DEPLOYMENT, max_backoff: float = 10.0) -> None:
        self.rt = runtime
        self.deployment = deployment
        self.max_backoff = max_backoff
        self.stop_event = threading.Event()
        self._deployment_id: UUID | None = None
        self.failures = 0
        self.runs = 0
        self._count_lock = threading.Lock()
        self._live: set[threading.Thread] = set()  # the runs' threads
        self._turn = 0  # whose events the next claim looks at first
        self._thread: threading.Thread | None = None

    def _find_deployment(self, client: Any) -> UUID | None:
        if self._deployment_id is None:
            try:
                self._deployment_id = client.read_deployment_by_name(self.deployment).id
            except ObjectNotFound:
                return None
        return self._deployment_id

    def create_run(
        self, event_ids: list[str], claim_token: str | None = None, account: str = DEFAULT_ACCOUNT
    ) -> FlowRun:
        """A Pending flow run for these events of one account; raises when Prefect is unreachable."""
        # one key per claim: the client's own retries of this call make one run, while the same
        # events claimed again after a dead run get a new run (the old key names a finished one)
        batch = hashlib.sha256("\n".join(event_ids).encode()).hexdigest()[:24]
        key = f"events-{batch}-{uuid.uuid4().hex[:12]}"
        name = account_run_name(account, events_run_name(event_ids))
        tags = [f"account:{account}"]
        params: dict[str, Any] = {"event_ids": event_ids, "claim_token": claim_token}
        if account != DEFAULT_ACCOUNT:
            params["account"] = account
        with get_client(sync_client=True) as client:
            deployment_id = self._find_deployment(client)
            if deployment_id is not None:
                return client.create_flow_run_from_deployment(
                    deployment_id,
                    parameters=params,
                    name=name,
                    idempotency_key=key,
                    state=Pending(),
                    tags=tags,
                )
            return client.create_flow_run(
                process_payment_events, parameters=params, name=name, state=Pending(), tags=tags
            )

    def run_once(self) -> int:
        """One round: claim, create the run, execute it. Returns how many events it took."""
        claimed = self.claim_run()
        if claimed is None:
            return 0
        self.execute(*claimed)
        return len(claimed[0])

    def claim_run(self) -> tuple[list[str], str, FlowRun] | None:
        """Claim waiting events and create their flow run; None when the inbox has nothing."""
        cfg = self.rt.settings.dispatcher
        token = new_token()
        account, event_ids = self._claim_in_turn(cfg.batch_size, cfg.lease_seconds, token)
        if not event_ids:
            return None
        # before the next claim: it leaves these events' payments to this run
        self.rt.ledger.lease_objects(event_ids, token, cfg.lease_seconds)
        try:
            flow_run = self.create_run(event_ids, token, account)
        except UNREACHABLE as exc:
            if isinstance(exc, RuntimeError) and "Failed to reach API" not in str(exc):
                raise
            self.rt.ledger.release_events(event_ids, token)
            self.rt.ledger.release_payments(token)
            self.failures += 1
            log.warning(
                "Prefect unreachable (%s); %d events wait in the inbox", type(exc).__name__, len(event_ids)
            )
            raise PrefectUnreachable(str(exc)) from exc
        self.failures = 0
        self.rt.ledger.set_flow_run(event_ids, str(flow_run.id))
        return event_ids, token, flow_run

    def _claim_in_turn(self, limit: int, lease_seconds: float, token: str) -> tuple[str, list[str]]:
        """Claim for the accounts with waiting events in turn (a run serves one account), so a
        burst on one account does not keep another's payments waiting."""
        ready = self.rt.ledger.claimable_accounts()
        if not ready:
            return DEFAULT_ACCOUNT, []
        start = self._turn % len(ready)
        for account in ready[start:] + ready[:start]:
            self._turn += 1
            event_ids = self.rt.ledger.claim_next(limit, lease_seconds, token, account=account)
            if event_ids:
                return account, event_ids
        return DEFAULT_ACCOUNT, []

    def execute(self, event_ids: list[str], token: str, flow_run: FlowRun) -> None:
        """Run the flow run here, to its end."""
        state = run_flow_sync(
            process_payment_events,
            flow_run=flow_run,
            parameters=dict(flow_run.parameters),
            return_type="state",
        )
        with self._count_lock:
            self.runs += 1
        if isinstance(state, State) and not state.is_completed():
            log.error(
                "run %s for %d events ended %s; they are claimed again when the lease ends",
                flow_run.name,
                len(event_ids),
                state.type.value,
            )

    def run_forever(self) -> None:
        cfg = self.rt.settings.dispatcher
        try:  # built once here, not raced for by the first runs at once
            _ = (self.rt.crms, self.rt.lookup)
        except Exception:  # a bad CRM or Stripe setting: each run fails with it, and says so
            log.exception("cannot build the CRM clients or the Stripe lookup")
        slots = threading.BoundedSemaphore(cfg.runs)
        while not self.stop_event.is_set():
            if not slots.acquire(timeout=cfg.poll_interval):
                continue  # every slot busy
            try:
                claimed = self.claim_run()
            except PrefectUnreachable:
                slots.release()
                self.stop_event.wait(min(self.max_backoff, cfg.poll_interval * 2 ** min(self.failures, 8)))
                continue
            except Exception:  # the loop is a process boundary: log, keep dispatching
                slots.release()
                log.exception("dispatch round failed; its events are claimed again after the lease")
                self.stop_event.wait(cfg.poll_interval)
                continue
            if claimed is None:
                slots.release()
                self.stop_event.wait(cfg.poll_interval)
                continue
            # a daemon thread, as the dispatcher's own: stopping the worker does not wait for a run
            thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._execute_in_slot, claimed, slots),
                name=f"flow-run-{claimed[2].name}",
                daemon=True,
            )
            with self._count_lock:
                self._live = {t for t in self._live if t.is_alive()} | {thread}
            thread.start()

    def _execute_in_slot(
        self, claimed: tuple[list[str], str, FlowRun], slots: threading.BoundedSemaphore
    ) -> None:
        try:
            self.execute(*claimed)
        except Exception:  # a thread boundary: the events are claimed again after their lease
            log.exception("flow run %s failed to execute", claimed[2].name)
        finally:
            slots.release()

    def start(self) -> threading.Thread:
        # the thread keeps the caller's context, where Prefect's settings (the API URL) live
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(self.run_forever,), name="dispatcher", daemon=True
        )
        thread.start()
        self._thread = thread
        return thread

    def stop(self, timeout: float = 30) -> None:
        """Stop claiming, let the runs going end (within `timeout`), and send what Prefect's
        background workers still hold."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        with self._count_lock:
            live = list(self._live)
        for thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all(timeout=5)
        APILogWorker.drain_all(timeout=5)
