"""Run naming, in one place: what a `process-payment-events` run is called in the UI.

A run gets a first name when it is created (the dispatcher's, from its events, else the flow's own
from its parameters) and is renamed after its payment once it knows it (`name_run_after`).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from prefect import get_client, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from stripeflow.core.config import DEFAULT_ACCOUNT
from stripeflow.core.money import format_money
from stripeflow.core.payment import Payment
from stripeflow.tasks.inbox import Normalised


def events_run_name(event_ids: Sequence[str]) -> str:
    """The name the dispatcher creates a run with: `evt_1`, or `evt_1 +4` for five events."""
    return event_ids[0] if len(event_ids) == 1 else f"{event_ids[0]} +{len(event_ids) - 1}"


def account_run_name(account: str, name: str) -> str:
    """`sklep · pi_3Q… · 249,00 zł`: a run of another account than the default says whose it is."""
    return name if account == DEFAULT_ACCOUNT else f"{account} · {name}"


def parameters_run_name() -> str:
    """The flow's `flow_run_name`, for a run created without a name: `evt_1`, or `3 events`."""
    ids = flow_run.parameters.get("event_ids") or []
    name = f"{len(ids)} events" if len(ids) != 1 else ids[0]
    return account_run_name(flow_run.parameters.get("account") or DEFAULT_ACCOUNT, name)


def run_name_for(payments: Sequence[Payment], language: str = "pl") -> str | None:
    """`pi_3Q… · 249,00 zł` for one payment; `pi_3Q… · 249,00 zł +4` when a run drains more."""
    ids = list(dict.fromkeys(p.payment_id for p in payments))
    if not ids:
        return None
    first = next(p for p in payments if p.payment_id == ids[0])
    name = f"{first.payment_id} · {format_money(first.amount, first.currency, language)}"
    return f"{name} +{len(ids) - 1}" if len(ids) > 1 else name


@task(cache_policy=NONE)
def name_run_after(normalised: Normalised, language: str) -> None:
    """Rename the running flow run after its payment, so the UI lists runs by payment.

    Submitted beside the sinks, not waited for: under a loaded or restarting Prefect server the
    call takes seconds, and a name is never worth holding up, let alone failing, a payment."""
    name = run_name_for(normalised.payments, language)
    if name:
        name = account_run_name(flow_run.parameters.get("account") or DEFAULT_ACCOUNT, name)
    run_id = flow_run.get_id()
    if name and run_id and flow_run.get_name() != name:
        try:
            with get_client(sync_client=True) as client:
                client.update_flow_run(UUID(run_id), name=name)
        except Exception as exc:  # the run keeps the name it was created with
            get_run_logger().warning("could not rename the run to %r: %s", name, type(exc).__name__)
