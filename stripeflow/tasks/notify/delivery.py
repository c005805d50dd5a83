"""Send each message at most once, keyed in the ledger, and sort every failure by its cause.

Every message goes claim -> attempt -> act -> settle, in small chunks:

    claim     the chunk's keys in one transaction (`claimed`: the target has not been called)
    attempt   `attempting`, committed on its own right before the call that cannot be taken
              back (`Outgoing.send` says when, by calling `attempt()`: SMTP just before DATA's
              final dot, Slack and Telegram just before the request; the outbox and the
              hand-off need none, see below)
    act       the call
    settle    the chunk in one transaction (a message to a target that cannot be looked at,
              as soon as it is sent: `Outgoing.settle_at_once`):

    sent                      done      the receipt (Message-ID, Slack ts, Telegram message id)
    OutcomeUnknownError       unknown   maybe sent: never resent automatically; at a target that
                                        can be looked at (`Outgoing.can_look`), looked at first as a
                                        dead attempt is (below): at once on the task's last try, else
                                        left `attempting` for its retry, by when a slow write shows
    PermanentError, config    failed    + a dead letter with the reason; never raised, never resent
    cannot be built           failed    + a dead letter for that one message; the others go on
    RetriableError            (claim released) retried by the task; dead-lettered on its last attempt

A run that dies leaves its chunk's claims behind, and the next run settles them by what they say:
`claimed` ones never reached the target, so they are taken over and sent; `attempting` ones
may have, so each channel answers in its own way (`Outgoing.look` / `Outgoing.dedupes`):

    the outbox                 looked at: a file with that Message-ID is there -> done, else sent
    the hand-off               redone: the receiver dedupes on Idempotency-Key (the effect key)
    Slack bot (chat.postMessage)  looked at: `SlackAPI.find_message` reads the channel's history
                               since the effect's claim for a message whose metadata carries the
                               key -> done with its ts; none -> sent; the lookup refused
                               (missing_scope, not_in_channel, channel_not_found), down, rate-limited
                               past the seam's wait or over 2,000 messages deep -> `unknown`
    SMTP, Telegram, Slack webhook  cannot be looked at -> `unknown`, reported, never resent

(The look needs channels:read/groups:read and channels:history/groups:history; an app outside
the Slack Marketplace may be held to one history call a minute, 15 messages a page (Slack's
2025-05-29 change): then a look mostly ends `unknown`, never in a blind resend.)

A target that drops a repeat of our key (`dedupes`: the hand-off, and the outbox, whose file is
named by the Message-ID and replaced atomically) gets no `attempting` commit at all: a claim it
leaves is redone, which is what `attempting` would lead to as well, one commit per message cheaper
(SQLite, synchronous=FULL, on the 2-core test machine: 0.9 ms a commit idle, 6-7 ms under load;
a burst of 1,500 outbox e-mails took 9.9 s with the commit and 6.9 s without, 28 s / 16 s loaded).

A channel whose credentials are refused, or which is down, is not tried again in the same
run: the rest of its messages take the same outcome without another call.

Crash points (`stripeflow.core.crashpoints`, for the real-kill tests): `notify.<target>.after_claim`
(claims committed, nothing sent) and `notify.<target>.after_call` (the target answered, the
ledger not yet settled); <target> is email, slack, telegram or handoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stripeflow.core.batching import chunks, in_parallel
from stripeflow.core.crashpoints import crash_point
from stripeflow.core.errors import (
    AuthError,
    ConfigError,
    OutcomeUnknownError,
    PermanentError,
    RetriableError,
    VendorError,
)
from stripeflow.core.ledger import Ledger

CHUNK = 25  # messages per claim/settle transaction: fewer commits; a crash leaves at most these to settle
Logger = logging.Logger | logging.LoggerAdapter[Any]


class Attempt(Protocol):
    """Called once right before the call that may reach the target; `then`, if given, is that
    call's last step, run as soon as the ledger holds `attempting` (see `mark_attempting`)."""

    def __call__(self, then: Callable[[], None] | None = None) -> None: ...


class BuildError(PermanentError):
    """A message that cannot be made from this payment (a header, a template): dead-letter that one."""


@dataclass(frozen=True)
class Looked:
    """What the target says about a message an attempt may have sent: `found` None = cannot tell."""

    found: bool | None
    receipt: str = ""
    reason: str = ""  # why it cannot tell, when it cannot


CANNOT_LOOK = Looked(None)


def cannot_look() -> Looked:
    return CANNOT_LOOK


@dataclass(frozen=True)
class Outgoing:
    """One message ready to go.

    `send(attempt)` builds it, calls `attempt()` once right before the call that may reach the
    target (not before: a failure to build or connect leaves the claim clean), and returns a
    receipt. `look()` tells whether the target has it; `dedupes` says the target drops a repeat
    of our key, so a doubtful attempt is simply redone.
    """

    key: str
    payment_id: str
    target: str  # the ledger's target: email, slack, telegram, handoff
    action: str
    channel: str  # what a failure of credentials or availability takes down with it
    send: Callable[[Attempt], str]
    look: Callable[[], Looked] = cannot_look
    dedupes: bool = False
    # a target that can neither be looked at nor dedupes: settle each one as soon as it is sent,
    # so a crash leaves only the message in flight in doubt, not the chunk's delivered ones
    settle_at_once: bool = False

    @property
    def can_look(self) -> bool:
        return self.look is not cannot_look


@dataclass
class NotifyReport:
    """Effect keys by outcome; `pending` ones are left for the task's next attempt."""

    sent: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # a dead attempt's, found at the target
    last_retriable: RetriableError | None = field(default=None, repr=False)

    def counts(self) -> dict[str, int]:
        return {
            "sent": len(self.sent),
            "already_done": len(self.already_done),
            "unknown": len(self.unknown),
            "dead": len(self.dead),
            "pending": len(self.pending),
            "recovered": len(self.recovered),
        }


@dataclass(frozen=True)
class _Outcome:
    item: Outgoing
    status: str  # done | unknown | failed | release | keep (left `attempting`, looked at on the retry)
    result: str
    claimed: bool = True


def describe(exc: Exception) -> str:
    """A reason for the ledger: the error's category and vendor text, never a payload."""
    return f"{type(exc).__name__}: {exc}"[:1000]


@dataclass
class _Run:
    ledger: Ledger
    report: NotifyReport
    final_attempt: bool
    logger: Logger
    broken: dict[str, Exception] = field(default_factory=dict)


def deliver(
    items: Sequence[Outgoing], ledger: Ledger, *, final_attempt: bool, logger: Logger, parallel: int = 1
) -> NotifyReport:
    """Send each item once. With `parallel` > 1, that many chunks go at once, each in its own
    thread (an SMTP session each): a server answering in tens of milliseconds then still takes
    thousands of messages a minute."""
    run = _Run(ledger, NotifyReport(), final_attempt, logger)
    done = ledger.effects_done(item.key for item in items)
    run.report.already_done.extend(i.key for i in items if i.key in done)
    in_parallel(
        lambda chunk: _deliver_chunk(run, chunk),
        chunks([i for i in items if i.key not in done], CHUNK),
        parallel,
    )
    return run.report


def _deliver_chunk(run: _Run, chunk: Sequence[Outgoing]) -> None:
    ledger = run.ledger
    won, token = ledger.claim_effects(chunk)  # new keys, and `claimed` ones a dead attempt left
    for target in dict.fromkeys(i.target for i in chunk if i.key in won):
        crash_point(f"notify.{target}.after_claim")
    stuck: set[str] = set()
    rest = [i.key for i in chunk if i.key not in won]
    if rest:
        states = ledger.effect_states(rest)
        doubtful = [k for k in rest if states.get(k) == "attempting"]
        if doubtful:
            stuck, stuck_token = ledger.take_over_attempting(doubtful)
            _send_and_settle(run, [i for i in chunk if i.key in stuck], stuck_token, recover=True)
    run.report.already_done.extend(k for k in rest if k not in stuck)  # another run's, settled
    _send_and_settle(run, [i for i in chunk if i.key in won], token, recover=False)


def _send_and_settle(run: _Run, items: list[Outgoing], token: str, *, recover: bool) -> None:
    if not items:
        return
    outcomes: list[_Outcome] = []
    try:
        for item in items:
            outcome = _recover(run, item, token) if recover else _attempt(run, item, token, fresh=True)
            if item.settle_at_once and outcome.status == "done":
                run.ledger.settle_effects([outcome], token)  # a crash now leaves no delivered one in doubt
            else:
                outcomes.append(outcome)
    finally:  # even when something unforeseen escapes: what was sent is settled, not left in doubt
        run.ledger.settle_effects([o for o in outcomes if o.status != "keep"], token)


def _recover(run: _Run, item: Outgoing, token: str, *, after: str = "a dead attempt") -> _Outcome:
    """An attempt died after `attempting` (or lost its answer): settle it by looking at the
    target, or redo it."""
    looked = item.look()
    if looked.found:
        run.report.recovered.append(item.key)
        run.logger.info(
            "%s for payment %s: found at %s after %s", item.action, item.payment_id, item.target, after
        )
        return _Outcome(item, "done", looked.receipt)
    if looked.found is False or item.dedupes:  # not there, or a repeat is dropped: send it now
        return _attempt(run, item, token, fresh=False)
    run.report.unknown.append(item.key)
    why = looked.reason or f"{item.target} cannot be looked at"
    run.logger.warning(
        "%s for payment %s: an attempt died while sending via %s; %s; left unknown, not resent",
        item.action,
        item.payment_id,
        item.target,
        why,
    )
    return _Outcome(item, "unknown", f"attempt died during the call; {why}"[:1000])


def _attempt(run: _Run, item: Outgoing, token: str, *, fresh: bool) -> _Outcome:
    if item.channel in run.broken:  # no call: the channel already failed this way
        return _failure(run, item, run.broken[item.channel])
    marked: list[bool] = []

    def attempt(then: Callable[[], None] | None = None) -> None:
        # one small commit: "the call is about to be made"; not needed where a repeat is harmless
        if fresh and not marked and not item.dedupes:
            run.ledger.mark_attempting([item.key], token, then)
        elif then is not None:
            then()
        marked.append(True)

    try:
        receipt = item.send(attempt)
    except (VendorError, ConfigError) as exc:
        if isinstance(exc, OutcomeUnknownError) and fresh and item.can_look:
            return _lost_answer(run, item, token, exc)
        if isinstance(exc, AuthError | ConfigError | RetriableError) and not isinstance(exc, BuildError):
            if item.channel not in run.broken:  # once a channel: why its other messages wait
                why = describe(exc)
                run.logger.warning("%s unavailable (%s): its other messages wait", item.channel, why)
            run.broken[item.channel] = exc
        return _failure(run, item, exc)
    crash_point(f"notify.{item.target}.after_call")
    run.report.sent.append(item.key)
    run.logger.info("sent %s for payment %s via %s", item.action, item.payment_id, item.target)
    return _Outcome(item, "done", receipt)


def _lost_answer(run: _Run, item: Outgoing, token: str, exc: OutcomeUnknownError) -> _Outcome:
    """The call went out and its answer was lost, at a target that can be looked at."""
    if not run.final_attempt:  # left `attempting` for the task's retry, by when a slow write shows
        run.report.pending.append(item.key)
        run.report.last_retriable = RetriableError(
            f"{item.target}: an answer was lost; looked for on the retry", vendor=item.target
        )
        return _Outcome(item, "keep", describe(exc))
    return _recover(run, item, token, after="a lost answer")


def _failure(run: _Run, item: Outgoing, exc: Exception) -> _Outcome:
    reason = describe(exc)
    report = run.report
    if isinstance(exc, OutcomeUnknownError):
        report.unknown.append(item.key)
        run.logger.warning(
            "%s for payment %s: outcome unknown, not resent (%s)",
            item.action,
            item.payment_id,
            type(exc).__name__,
        )
        return _Outcome(item, "unknown", reason)
    if isinstance(exc, RetriableError) and not run.final_attempt:
        report.pending.append(item.key)
        report.last_retriable = exc
        return _Outcome(item, "release", reason)
    if not isinstance(exc, PermanentError | ConfigError | RetriableError):
        raise exc  # pragma: no cover - only the categories above reach here
    report.dead.append(item.key)
    code = getattr(exc, "code", None) or getattr(exc, "status", None) or type(exc).__name__
    run.logger.warning("%s for payment %s dead-lettered (%s)", item.action, item.payment_id, code)
    return _Outcome(item, "failed", reason)
