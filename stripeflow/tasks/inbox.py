"""Tasks over the ledger: claim the events a run drains, lock their payments, record payments,
close the events."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from stripeflow.core.config import DEFAULT_ACCOUNT, DispatcherSettings
from stripeflow.core.errors import RetriableError
from stripeflow.core.ledger import OUTAGE, LeaseKeeper, Ledger, describe_error, new_token, utcnow
from stripeflow.core.payment import Changes, Payment, PaymentChange


class Normalised:
    """What normalisation made of a run's events. A plain class, not a dataclass, so Prefect
    hands it to tasks as it is rather than walking every payment in it (see `Changes`)."""

    def __init__(self, events: int = 0) -> None:
        self.events = events  # how many of the run's events were found in the inbox
        self.payments: list[Payment] = []
        self.skipped: list[str] = []  # ids of events that are not payments (types we do not handle, $0)
        self.skip_reasons: dict[str, str] = {}  # event id -> why it is not a payment
        self.dead: dict[str, str] = {}  # event id -> why it cannot be processed
        self.released: list[str] = []  # ids of events whose payment another run holds just now
        self.locked_at: datetime | None = None  # when the run took its payments' leases

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


def run_token(claim_token: str | None) -> str:
    """The token a run claims with: the dispatcher's (it claimed before the run existed), else
    the flow run's id, so a Retry of the run holds the same claims."""
    if claim_token:
        return claim_token
    from prefect.runtime import flow_run

    return flow_run.get_id() or new_token()


@contextmanager
def leases_kept(ledger: Ledger, token: str, cfg: DispatcherSettings) -> Iterator[None]:
    """Around a run: its leases are renewed while it works, and its payments freed when it ends.
    A run that fails stops renewing: its events keep the error and are claimed again when their
    lease ends; its payments stay held until then too, as a task it submitted may still run."""
    keeper = LeaseKeeper(ledger, token, cfg.lease_seconds).start()
    try:
        yield
    except BaseException as exc:  # recorded and re-raised: the run still fails as it would
        keeper.stop()
        outage = isinstance(exc, RetriableError)  # the vendor's fault, not the events'
        ledger.note_failure(token, (OUTAGE if outage else "") + describe_error(exc))
        raise
    keeper.stop()
    ledger.release_payments(token)


@task(cache_policy=NONE)
def claim_run_events(
    ledger: Ledger,
    event_ids: Sequence[str] | None,
    token: str,
    cfg: DispatcherSettings,
    account: str = DEFAULT_ACCOUNT,
) -> list[str]:
    """The events this run works on, claimed for its token: the ones given (those another live
    run holds are left out), or (none given, a run started by hand) whatever waits in the inbox,
    of this run's account only: another account's events go back for a run of their own, which
    uses that account's key, company and targets. Events claimed more than `max_attempts` times
    go to the dead letters instead."""
    log = get_run_logger()
    if event_ids:
        claimed = ledger.claim_given(event_ids, token, cfg.lease_seconds)
        left_out = [e for e in event_ids if e not in set(claimed)]
        if left_out:
            log.warning(
                "%d of %d events left out (another live run holds them, or not in the inbox): %s",
                len(left_out),
                len(event_ids),
                ", ".join(left_out[:20]) + (" ..." if len(left_out) > 20 else ""),
            )
        owners = ledger.event_accounts(claimed)
        others = [e for e in claimed if owners.get(e, account) != account]
        if others:
            ledger.release_events(others, token)
            log.warning("%d events belong to other accounts and wait for their own runs", len(others))
            claimed = [e for e in claimed if e not in set(others)]
    else:
        claimed = ledger.claim_next(cfg.batch_size, cfg.lease_seconds, token, account=account)
    buried = ledger.bury_exhausted(claimed, token, cfg.max_attempts)
    for event_id, reason in buried.items():
        log.error("event %s goes to the dead letters: %s", event_id, reason)
    return [e for e in claimed if e not in buried]


def lock_ids(payment: Payment, known: Mapping[str, str], customer: bool = True) -> set[str]:
    """What a run must hold to work on a payment: every id it goes by, the payment each already
    known id belongs to (a charge and its PaymentIntent are one lock, whichever came), and, with
    `customer`, its customer: a contact found-or-created by search (Pipedrive, an e-mail-less
    HubSpot contact) would be created twice by two runs at once."""
    ids = {payment.payment_id, *payment.ids}
    return ids | {known[i] for i in ids if i in known} | (customer_lock(payment) if customer else set())


def customer_lock(payment: Payment) -> set[str]:
    """The lease id of a payment's customer: a digest, so no e-mail sits in the lease table."""
    if not payment.customer_key:
        return set()
    return {"customer:" + hashlib.sha256(payment.customer_key.encode()).hexdigest()[:32]}


@task(cache_policy=NONE)
def lock_payments(
    ledger: Ledger,
    normalised: Normalised,
    token: str,
    lease_seconds: float,
    customer_races: Callable[[Payment], bool] = lambda p: True,
) -> Normalised:
    """Take the lease on every payment the run is about to record, and on its customer where
    `customer_races` says two runs could make its contact twice. Events of a payment another
    live run holds go back to the inbox, uncounted, and wait for that run to end: two runs
    never work on the same payment at once."""
    known = ledger.canonical_ids(i for p in normalised.payments for i in (p.payment_id, *p.ids))
    wanted = {id(p): lock_ids(p, known, customer_races(p)) for p in normalised.payments}
    out = Normalised(normalised.events)
    out.locked_at = utcnow()
    won = ledger.lock_payments(set().union(*wanted.values()), token, lease_seconds)
    out.skipped, out.skip_reasons, out.dead = normalised.skipped, normalised.skip_reasons, normalised.dead
    out.payments = [p for p in normalised.payments if wanted[id(p)] <= won]
    waiting = {
        eid: sorted(wanted[id(p)] - won)[0]  # wait for the run holding one of its ids
        for p in normalised.payments
        if not wanted[id(p)] <= won
        for eid in p.event_ids
    }
    out.released = list(waiting)
    # ids won for a payment that waits (or leased at the claim), given back: the holder of the
    # rest of that payment would otherwise wait for this run too
    ledger.unlock_payments(won - set().union(set(), *(wanted[id(p)] for p in out.payments)), token)
    if waiting:
        ledger.defer_events(waiting, token)
        get_run_logger().info("%d events wait for another run that holds their payment", len(out.released))
    return out


@task(cache_policy=NONE)
def record_payments(
    ledger: Ledger, normalised: Normalised, token: str | None = None, account: str = DEFAULT_ACCOUNT
) -> Changes:
    """Merge each payment into the ledger; one change per payment the run touched.

    A change compares the merged state with the state the sinks last finished with, so a rerun
    after a crash still sees (and passes on) what the crashed run did not finish. Sinks skip
    what they already did by their own effect keys. A payment the ledger refuses is set aside
    at once (its events dead, a dead letter with the reason); the others go on.
    """
    first_seen: dict[str, Payment | None] = {}
    latest: dict[str, Payment] = {}
    recorded, failed = ledger.record_payments_isolated(normalised.payments, account=account)
    for change in recorded:
        first_seen.setdefault(change.payment.payment_id, change.previous)
        latest[change.payment.payment_id] = change.payment
    for payment_id, reason in failed.items():
        event_ids = [eid for p in normalised.payments if p.payment_id == payment_id for eid in p.event_ids]
        ledger.finish_events(event_ids, "dead", note=reason, token=token)
        for event_id in event_ids:
            ledger.dead_letter(
                target="ledger",
                action="record_payment",
                reason=reason,
                event_id=event_id,
                payment_id=payment_id,
                account=account,
            )
    return Changes(PaymentChange(payment=p, previous=first_seen[pid]) for pid, p in latest.items())


@task(cache_policy=NONE)
def finish_events(ledger: Ledger, normalised: Normalised, changes: Changes, token: str | None = None) -> None:
    """The last step: every sink has these payments' states now; the events are closed.

    A payment with an effect still failed or in flight keeps its processed state where it was,
    so a replay (or the next change) plans the same effects again and their keys skip what is done.
    """
    if normalised.locked_at is not None:  # what dead runs left of states these payments moved past
        released = ledger.release_superseded([p.payment_id for p in changes.payments], normalised.locked_at)
        if released:
            get_run_logger().info("%d effects of superseded states, left by dead runs, settled", released)
    unfinished = ledger.unfinished_payments([p.payment_id for p in changes.payments])
    ledger.mark_processed([p for p in changes.payments if p.payment_id not in unfinished])
    ledger.finish_events(normalised.done_event_ids, "done", token=token)
    for reason, skipped in normalised.skipped_by_reason().items():
        ledger.finish_events(skipped, "skipped", note=reason, token=token)
    for event_id, reason in normalised.dead.items():
        if ledger.finish_events([event_id], "dead", note=reason, token=token) or token is None:
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
