"""Prefect tasks over Stripe events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from stripeflow.core.batching import in_parallel
from stripeflow.core.errors import RetriableError
from stripeflow.core.ledger import Ledger, describe_error
from stripeflow.core.payment import Payment
from stripeflow.tasks.inbox import Normalised
from stripeflow.tasks.retry import retry_if_retriable
from stripeflow.tasks.stripe.normalise import Lookup, Skipped, normalise

LOOKUPS_IN_FLIGHT = 8


@task(cache_policy=NONE, retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=retry_if_retriable)
def normalise_events(ledger: Ledger, event_ids: Sequence[str], lookup: Lookup) -> Normalised:
    """Each inbox event -> a Payment (Stripe API only when the payload lacks something).

    The events are read here rather than passed in: Prefect walks every task argument, and a
    thousand raw events cost it seconds. Unknown types are skipped. Whatever else goes wrong
    with one event (a malformed payload, a timestamp out of range, the Stripe API refusing
    for good) sets that event aside with the reason, and the others go on; only a Stripe API
    outage (RetriableError) fails the task, whose retries (reads only) handle it.
    """
    log = get_run_logger()
    events = ledger.load_events(event_ids)
    out = Normalised(events=len(events))

    def one(event: dict[str, Any]) -> Payment | Skipped | Exception | None:
        try:
            return normalise(event, lookup)
        except RetriableError:
            raise
        except Exception as exc:  # poison isolation: one event's failure, whatever it is, is its own
            return exc

    # with the API, each event may wait on a lookup: several at once (the read limiter still holds)
    parallel = 1 if getattr(lookup, "offline", False) else LOOKUPS_IN_FLIGHT
    for event, payment in zip(events, in_parallel(one, events, parallel), strict=True):
        if isinstance(payment, Exception):
            reason = describe_error(payment)
            log.warning("event %s (%s) cannot be processed: %s", event.get("id"), event.get("type"), reason)
            out.dead[event["id"]] = reason
            continue
        if payment is None or isinstance(payment, Skipped):
            out.skip(event["id"], payment.reason if payment else "event type not handled")
        else:
            out.payments.append(payment)
    log.info("%d payments, %d skipped, %d set aside", len(out.payments), len(out.skipped), len(out.dead))
    return out
