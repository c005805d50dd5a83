"""Prefect tasks over Stripe events."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from stripeflow.core.errors import InputError
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.ledger import Normalised
from stripeflow.tasks.retry import retry_if_retriable
from stripeflow.tasks.stripe.normalise import Lookup, Skipped, normalise


@task(cache_policy=NONE, retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=retry_if_retriable)
def normalise_events(ledger: Ledger, event_ids: Sequence[str], lookup: Lookup) -> Normalised:
    """Each inbox event -> a Payment (Stripe API only when the payload lacks something).

    The events are read here rather than passed in: Prefect walks every task argument, and a
    thousand raw events cost it seconds. Unknown types are skipped; malformed ones are set
    aside with the reason; a Stripe API outage raises a RetriableError, which this task's
    retries (reads only) handle.
    """
    log = get_run_logger()
    events = ledger.load_events(event_ids)
    out = Normalised(events=len(events))
    for event in events:
        try:
            payment = normalise(event, lookup)
        except InputError as exc:
            log.warning("event %s (%s) cannot be processed: %s", event.get("id"), event.get("type"), exc)
            out.dead[event["id"]] = str(exc)
            continue
        if payment is None or isinstance(payment, Skipped):
            out.skip(event["id"], payment.reason if payment else "event type not handled")
        else:
            out.payments.append(payment)
    log.info("%d payments, %d skipped, %d set aside", len(out.payments), len(out.skipped), len(out.dead))
    return out
