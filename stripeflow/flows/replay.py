"""`replay`: process events again, from the ledger: the ones set aside, or the ones you name.

Safe by construction: every side effect is keyed in the ledger, so replaying an event that
already went through does nothing new, and one that failed half-way finishes. A dead letter is
resolved only after the run: for an effect, when that effect is done.
"""

from __future__ import annotations

from prefect import flow

from stripeflow.core.config import DEFAULT_ACCOUNT
from stripeflow.flows.process_payment_events import process_payment_events
from stripeflow.runtime import get_runtime
from stripeflow.tasks.inbox import close_replayed_dead_letters, events_to_replay, open_dead_letter_ids


@flow(name="replay")
def replay(event_ids: list[str] | None = None, include_dead_letters: bool = True) -> dict[str, int]:
    """Replay these events, or (none given) every event and payment with an open dead letter."""
    rt = get_runtime()
    letters = open_dead_letter_ids(rt.ledger) if include_dead_letters and not event_ids else []
    ids = events_to_replay(rt.ledger, event_ids, include_dead_letters)
    if not ids:
        return {"events": 0}
    owners = rt.ledger.event_accounts(ids)
    result: dict[str, int] = {}
    for account in sorted(set(owners.values()) or {DEFAULT_ACCOUNT}):  # each account's own run
        mine = [e for e in ids if owners.get(e, DEFAULT_ACCOUNT) == account]
        done = process_payment_events(event_ids=mine, account=None if account == DEFAULT_ACCOUNT else account)
        result = {k: result.get(k, 0) + v for k, v in done.items()}
    close_replayed_dead_letters(rt.ledger, letters)
    return result
