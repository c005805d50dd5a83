"""Send each message at most once, keyed in the ledger, and sort every failure by its cause.

Per message:  claim its effect key (an insert that only one run wins; status `unknown`, so a
crash mid-send leaves it unknown, never resent) -> send -> settle the effect:

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

from sqlalchemy import delete, update

from stripeflow.core.errors import (
    AuthError,
    ConfigError,
    OutcomeUnknownError,
    PermanentError,
    RetriableError,
    VendorError,
)
from stripeflow.core.ledger import EffectRow, Ledger

CLAIM = "sending"


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
        return {"sent": len(self.sent), "already_done": len(self.already_done),
                "unknown": len(self.unknown), "dead": len(self.dead), "pending": len(self.pending)}

    def merge(self, other: NotifyReport) -> NotifyReport:
        for name in ("sent", "already_done", "unknown", "dead", "pending"):
            getattr(self, name).extend(getattr(other, name))
        self.last_retriable = other.last_retriable or self.last_retriable
        return self


# The ledger offers insert-once; moving a claimed effect on is done here, in one place.
def settle_effect(ledger: Ledger, key: str, status: str, result: str | None) -> None:
    with ledger.session() as s:
        s.execute(update(EffectRow).where(EffectRow.key == key).values(status=status, result=result))


def release_claim(ledger: Ledger, key: str) -> None:
    with ledger.session() as s:
        s.execute(delete(EffectRow).where(EffectRow.key == key, EffectRow.status == "unknown",
                                          EffectRow.result == CLAIM))


def describe(exc: Exception) -> str:
    """A reason for the ledger: the error's category and vendor text, never a payload."""
    return f"{type(exc).__name__}: {exc}"[:1000]


def deliver(items: Sequence[Outgoing], ledger: Ledger, *, final_attempt: bool,
            logger: logging.Logger | logging.LoggerAdapter[Any]) -> NotifyReport:
    report = NotifyReport()
    done = ledger.effects_done(item.key for item in items)
    broken: dict[str, Exception] = {}
    for item in items:
        if item.key in done:
            report.already_done.append(item.key)
            continue
        if item.channel in broken:
            _fail(item, broken[item.channel], ledger, report, final_attempt, logger, claimed=False)
            continue
        if not ledger.record_effect(item.key, item.payment_id, item.target, item.action,
                                    result=CLAIM, status="unknown"):
            report.already_done.append(item.key)  # another run took it first
            continue
        try:
            receipt = item.send()
        except (VendorError, ConfigError) as exc:
            if isinstance(exc, AuthError | ConfigError | RetriableError):
                broken[item.channel] = exc
            _fail(item, exc, ledger, report, final_attempt, logger, claimed=True)
        else:
            settle_effect(ledger, item.key, "done", receipt[:500])
            report.sent.append(item.key)
            logger.info("sent %s for payment %s via %s", item.action, item.payment_id, item.target)
    return report


def _fail(item: Outgoing, exc: Exception, ledger: Ledger, report: NotifyReport, final_attempt: bool,
          logger: logging.Logger | logging.LoggerAdapter[Any], *, claimed: bool) -> None:
    reason = describe(exc)
    if isinstance(exc, OutcomeUnknownError):
        settle_effect(ledger, item.key, "unknown", reason)
        report.unknown.append(item.key)
        logger.warning("%s for payment %s: outcome unknown, not resent (%s)", item.action,
                       item.payment_id, type(exc).__name__)
        return
    if isinstance(exc, RetriableError) and not final_attempt:
        if claimed:
            release_claim(ledger, item.key)
        report.pending.append(item.key)
        report.last_retriable = exc
        return
    if isinstance(exc, PermanentError | ConfigError | RetriableError):
        if claimed:
            settle_effect(ledger, item.key, "failed", reason)
        else:
            ledger.record_effect(item.key, item.payment_id, item.target, item.action,
                                 result=reason, status="failed")
        ledger.dead_letter(target=item.target, action=item.action, payment_id=item.payment_id,
                           reason=f"{item.key}: {reason}")
        report.dead.append(item.key)
        code = getattr(exc, "code", None) or getattr(exc, "status", None) or type(exc).__name__
        logger.warning("%s for payment %s dead-lettered (%s)", item.action, item.payment_id, code)
        return
    raise exc  # pragma: no cover - deliver only passes the categories above
