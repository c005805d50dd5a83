"""Send each message at most once, keyed in the ledger, and sort every failure by its cause.

Messages go in small chunks: claim the chunk's effect keys (one insert that only one run wins
per key; status `unknown`, so a crash mid-chunk leaves at most a chunk unknown, never resent)
-> send each -> settle the chunk in one transaction:

    sent                      done      the receipt (Message-ID, Slack ts, Telegram message id)
    OutcomeUnknownError       unknown   maybe sent: not resent automatically; reconciliation settles it
    PermanentError, config    failed    + a dead letter with the reason; never raised, never resent
    RetriableError            (claim released) retried by the task; dead-lettered on its last attempt

A channel whose credentials are refused, or which is down, is not tried again in the same
run: the rest of its messages take the same outcome without another call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stripeflow.core.batching import chunks
from stripeflow.core.errors import (
    AuthError,
    ConfigError,
    OutcomeUnknownError,
    PermanentError,
    RetriableError,
    VendorError,
)
from stripeflow.core.ledger import Ledger

CHUNK = 25  # messages per claim/settle transaction: fewer commits, at most this many left unknown by a crash
Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True)
class Outgoing:
    """One message ready to go: `send()` renders and sends it, returning a receipt."""

    key: str
    payment_id: str
    target: str  # the ledger's target: email, slack, telegram, handoff
    action: str
    channel: str  # what a failure of credentials or availability takes down with it
    send: Callable[[], str]


@dataclass
class NotifyReport:
    """Effect keys by outcome; `pending` ones are left for the task's next attempt."""

    sent: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    last_retriable: RetriableError | None = field(default=None, repr=False)

    def counts(self) -> dict[str, int]:
        return {
            "sent": len(self.sent),
            "already_done": len(self.already_done),
            "unknown": len(self.unknown),
            "dead": len(self.dead),
            "pending": len(self.pending),
        }


@dataclass(frozen=True)
class _Outcome:
    item: Outgoing
    status: str  # done | unknown | failed | release
    result: str
    claimed: bool = True


def describe(exc: Exception) -> str:
    """A reason for the ledger: the error's category and vendor text, never a payload."""
    return f"{type(exc).__name__}: {exc}"[:1000]


def deliver(
    items: Sequence[Outgoing], ledger: Ledger, *, final_attempt: bool, logger: Logger
) -> NotifyReport:
    report = NotifyReport()
    done = ledger.effects_done(item.key for item in items)
    report.already_done.extend(i.key for i in items if i.key in done)
    broken: dict[str, Exception] = {}
    for chunk in chunks([i for i in items if i.key not in done], CHUNK):
        won, token = ledger.claim_effects(chunk)
        outcomes: list[_Outcome] = []
        for item in chunk:
            if item.key not in won:
                report.already_done.append(item.key)  # another run took it first
            elif item.channel in broken:  # no call: the channel already failed this way
                outcomes.append(_failure(item, broken[item.channel], report, final_attempt, logger))
            else:
                outcomes.append(_send(item, broken, report, final_attempt, logger))
        ledger.settle_effects(outcomes, token)
    return report


def _send(
    item: Outgoing, broken: dict[str, Exception], report: NotifyReport, final_attempt: bool, logger: Logger
) -> _Outcome:
    try:
        receipt = item.send()
    except (VendorError, ConfigError) as exc:
        if isinstance(exc, AuthError | ConfigError | RetriableError):
            broken[item.channel] = exc
        return _failure(item, exc, report, final_attempt, logger)
    report.sent.append(item.key)
    logger.info("sent %s for payment %s via %s", item.action, item.payment_id, item.target)
    return _Outcome(item, "done", receipt)


def _failure(
    item: Outgoing, exc: Exception, report: NotifyReport, final_attempt: bool, logger: Logger
) -> _Outcome:
    reason = describe(exc)
    if isinstance(exc, OutcomeUnknownError):
        report.unknown.append(item.key)
        logger.warning(
            "%s for payment %s: outcome unknown, not resent (%s)",
            item.action,
            item.payment_id,
            type(exc).__name__,
        )
        return _Outcome(item, "unknown", reason)
    if isinstance(exc, RetriableError) and not final_attempt:
        report.pending.append(item.key)
        report.last_retriable = exc
        return _Outcome(item, "release", reason)
    if not isinstance(exc, PermanentError | ConfigError | RetriableError):
        raise exc  # pragma: no cover - only the categories above reach here
    report.dead.append(item.key)
    code = getattr(exc, "code", None) or getattr(exc, "status", None) or type(exc).__name__
    logger.warning("%s for payment %s dead-lettered (%s)", item.action, item.payment_id, code)
    return _Outcome(item, "failed", reason)
