"""`process-payment-events`: inbox events -> payments in the ledger -> every configured sink."""

from __future__ import annotations

from prefect import flow

from stripeflow.runtime import get_runtime
from stripeflow.tasks.crm.tasks import contact_races, sync_crm
from stripeflow.tasks.inbox import (
    claim_run_events,
    finish_events,
    leases_kept,
    lock_payments,
    record_payments,
    run_token,
)
from stripeflow.tasks.notify import hand_off_changes, notify_changes
from stripeflow.tasks.prefect_runs import name_run_after, parameters_run_name
from stripeflow.tasks.stripe.tasks import normalise_events


@flow(name="process-payment-events", flow_run_name=parameters_run_name, log_prints=False)
def process_payment_events(
    event_ids: list[str] | None = None, claim_token: str | None = None, account: str | None = None
) -> dict[str, int]:
    """Drain these inbox events (all pending ones when none are given) into every sink, once.

    The run works only on what it claims and on payments no other live run holds; its leases
    live while it works.

    Args:
        event_ids: the inbox events to process; empty: whatever is pending, as the dispatcher does
        claim_token: set by the dispatcher, which claimed the events before the run existed;
            leave it empty (the run's own id is used)
        account: the Stripe account whose events these are (empty: the default account); the
            run uses its key, company, CRM targets, routes and language
    """
    rt = get_runtime().for_account(account)
    cfg = rt.settings.dispatcher
    token = run_token(claim_token)
    with leases_kept(rt.ledger, token, cfg):
        claimed = claim_run_events(rt.ledger, event_ids, token, cfg, rt.account_name)
        normalised = normalise_events(rt.ledger, claimed, rt.lookup)
        normalised = lock_payments(
            rt.ledger, normalised, token, cfg.lease_seconds, contact_races(lambda: rt.crms)
        )
        naming = name_run_after.submit(normalised, rt.settings.language)  # beside the sinks
        changes = record_payments(rt.ledger, normalised, token, rt.account_name)
        # customer e-mails need nothing from the CRM: they go out while the CRM calls wait on its limits
        customer_mail = notify_changes.submit(changes, rt.settings, rt.ledger, audience="customer")
        for crm, target in zip(rt.crms, rt.settings.crm, strict=True):
            sync_crm(crm, target, changes, rt.ledger, rt.settings)
        notify_changes(changes, rt.settings, rt.ledger, audience="team")  # links to the deals
        # last: a worker killed while hand-offs are in flight resends them (same Idempotency-Key),
        # so they go in the run's short tail rather than through its long CRM waits
        hand_off_changes(changes, rt.settings, rt.ledger)
        customer_mail.result()
        finish_events(rt.ledger, normalised, changes, token)
    naming.wait()  # the payments are free already: only the run's name waits for Prefect
    return {
        "events": normalised.events,
        "payments": len(normalised.payments),
        "changed": len(changes),
        "skipped": len(normalised.skipped),
        "dead": len(normalised.dead),
        "waiting": len(normalised.released),
    }
