"""Tasks over the ledger: load the events a run drains, record payments, close the events."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from sqlalchemy import select

from stripeflow.core.batching import chunks
from stripeflow.core.ledger import Changes, EffectRow, Ledger, PaymentChange
from stripeflow.core.payment import Payment


class Normalised:
    """What normalisation made of a run's events. A plain class, not a dataclass, so Prefect
    hands it to tasks as it is rather than walking every payment in it (see `Changes`)."""

    def __init__(self, events: int = 0) -> None:
        self.events = events  # how many of the run's events were found in the inbox
        self.payments: list[Payment] = []
        self.skipped: list[str] = []  # ids of events that are not payments (types we do not handle, $0)
        self.skip_reasons: dict[str, str] = {}  # event id -> why it is not a payment
        self.dead: dict[str, str] = {}  # event id -> why it cannot be processed

    def __repr__(self) -> str:
        return (
            f"Normalised({len(self.payments)} payments, {len(self.skipped)} skipped, {len(self.dead)} dead)"
        )

    def skip(self, event_id: str, reason: str) -> None:
        self.skipped.append(event_id)
        self.skip_reasons[event_id] = reason

    def skipped_by_reason(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for event_id in self.skipped:
            groups.setdefault(self.skip_reasons.get(event_id, "event type not handled"), []).append(event_id)
        return groups

    @property
    def done_event_ids(self) -> list[str]:
        return [eid for p in self.payments for eid in p.event_ids]


@task(cache_policy=NONE)
def claim_pending_events(ledger: Ledger, limit: int, lease_seconds: float) -> list[str]:
    """For a run started by hand: take whatever is waiting in the inbox."""
    return ledger.claim_events(limit, lease_seconds)


@task(cache_policy=NONE)
def record_payments(ledger: Ledger, normalised: Normalised) -> Changes:
    """Merge each payment into the ledger; one change per payment the run touched.

    A change compares the merged state with the state the sinks last finished with, so a rerun
    after a crash still sees (and passes on) what the crashed run did not finish. Sinks skip
    what they already did by their own effect keys.
    """
    first_seen: dict[str, Payment | None] = {}
    latest: dict[str, Payment] = {}
    for change in ledger.record_payments(normalised.payments):
        first_seen.setdefault(change.payment.payment_id, change.previous)
        latest[change.payment.payment_id] = change.payment
    return Changes(PaymentChange(payment=p, previous=first_seen[pid]) for pid, p in latest.items())


@task(cache_policy=NONE)
def finish_events(ledger: Ledger, normalised: Normalised, changes: Changes) -> None:
    """The last step: every sink has these payments' states now; the events are closed.

    A payment with an effect still failed or in flight keeps its processed state where it was,
    so a replay (or the next change) plans the same effects again and their keys skip what is done.
    """
    unfinished = _unfinished_payments(ledger, [p.payment_id for p in changes.payments])
    ledger.mark_processed([p for p in changes.payments if p.payment_id not in unfinished])
    ledger.finish_events(normalised.done_event_ids, "done")
    for reason, skipped in normalised.skipped_by_reason().items():
        ledger.finish_events(skipped, "skipped", note=reason)
    for event_id, reason in normalised.dead.items():
        ledger.finish_events([event_id], "dead", note=reason)
        ledger.dead_letter(target="stripe", action="normalise", reason=reason, event_id=event_id)


@task(cache_policy=NONE)
def events_to_replay(
    ledger: Ledger, event_ids: Sequence[str] | None, include_dead_letters: bool
) -> list[str]:
    """The events to process again; their payments' failed effects are reopened so the run redoes
    them. Their dead letters stay open until `close_replayed_dead_letters`, after the run."""
    ids = list(event_ids or [])
    if include_dead_letters and not ids:
        letters = ledger.dead_letters()
        ids = ledger.events_for_dead_letters(letters)
        ledger.reopen_failed_effects({d.payment_id for d in letters if d.payment_id})
    get_run_logger().info("replaying %d events", len(ids))
    return ids


@task(cache_policy=NONE)
def open_dead_letter_ids(ledger: Ledger) -> list[int]:
    return [d.id for d in ledger.dead_letters()]


@task(cache_policy=NONE)
def close_replayed_dead_letters(ledger: Ledger, replayed: Sequence[int]) -> int:
    """After a replay ran to its end: a dead letter of an effect is resolved when that effect is
    done; one of no effect (a normalise or CRM failure), or of an effect that failed again, when
    the run redid the work, since a repeat failure wrote a dead letter of its own."""
    resolved = ledger.resolve_done_dead_letters()
    wanted = set(replayed)
    letters = ledger.dead_letters()
    newest: dict[str, int] = {}
    for d in letters:
        if d.effect_key:
            newest[d.effect_key] = max(d.id, newest.get(d.effect_key, 0))
    others = [
        d.id
        for d in letters
        if d.id in wanted
        and (d.effect_key is None or newest[d.effect_key] != d.id)  # failed again: one letter
    ]
    ledger.resolve_dead_letters(others)
    get_run_logger().info("dead letters resolved: %d of effects done, %d others", resolved, len(others))
    return resolved + len(others)


UNFINISHED = ("failed", "claimed", "attempting")


def _unfinished_payments(ledger: Ledger, payment_ids: Sequence[str]) -> set[str]:
    """Payments with an effect not yet finished (failed, or claimed/attempting and never settled).

    A local query: the ledger has no batch method for this yet.
    """
    found: set[str] = set()
    with ledger.session() as s:
        for batch in chunks(list(payment_ids), 500):
            found.update(
                s.scalars(
                    select(EffectRow.payment_id)
                    .where(EffectRow.payment_id.in_(batch), EffectRow.status.in_(UNFINISHED))
                    .distinct()
                )
            )
    return found
