"""The Prefect tasks of customer e-mails, team messages and the accounting hand-off.

    notify_changes(changes, settings, ledger)    customer e-mail + team messages (Slack, Telegram,
                                                 e-mail), each exactly once per payment and kind
    hand_off_changes(changes, settings, ledger)  one signed JSON webhook per payment change

What each change calls for is in `plan`, how it reads in `render` (and the templates), which
channel takes it in `messages` (the channels: `base`, `registry`), how each message goes once
in `delivery`. Neither task raises for a message that cannot be delivered
(a rejected address, an unknown channel, refused credentials): it is dead-lettered with the
reason, so notifications never hold up the CRM work. Their declared retries are for outages
only (`RetriableError`), and are safe because every send is guarded by its ledger effect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError

from stripeflow.core.config import Settings
from stripeflow.core.errors import ConfigError, RetriableError
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import PaymentChange
from stripeflow.tasks.notify.channels import Channels
from stripeflow.tasks.notify.delivery import Attempt, NotifyReport, Outgoing, deliver
from stripeflow.tasks.notify.handoff import HandoffAPI, handoff_key
from stripeflow.tasks.notify.messages import build_messages
from stripeflow.tasks.notify.plan import Audience
from stripeflow.tasks.notify.render import Renderer
from stripeflow.tasks.retry import retry_if_retriable

log = logging.getLogger("stripeflow.notify")


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def _final_attempt() -> bool:
    """True on the task's last try (or outside Prefect): what is still failing is dead-lettered then."""
    ctx = TaskRunContext.get()
    if ctx is None or ctx.task_run is None:
        return True
    return ctx.task_run.run_count > ctx.task.retries


def _finish(report: NotifyReport, what: str) -> NotifyReport:
    """Raise for the task's retries while anything is still pending (an outage, not a bad message)."""
    if report.pending:
        wait = report.last_retriable.wait if report.last_retriable else None
        raise RetriableError(
            f"{len(report.pending)} {what} still to send after an outage", vendor="notify", wait=wait
        )
    return report


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def notify_changes(
    changes: Sequence[PaymentChange],
    settings: Settings,
    ledger: Ledger,
    channels: Channels | None = None,
    audience: Audience | None = None,
) -> NotifyReport:
    """Send the customer e-mails and team messages these payment changes call for, once each.

    `audience="customer"` needs nothing from the CRM, so a flow may send it beside the CRM sync;
    `audience="team"` links to the deals, so it goes after.
    """
    logger = _logger()
    own = channels is None
    channels = channels or Channels(settings)
    try:
        items = build_messages(
            changes,
            settings,
            ledger,
            channels,
            Renderer(settings.language, settings.notify.templates_dir),
            audience,
        )
        report = deliver(
            items, ledger, final_attempt=_final_attempt(), logger=logger, parallel=settings.notify.parallel
        )
    finally:
        if own:
            channels.close()
    logger.info("notifications: %s", report.counts())
    return _finish(report, "notifications")


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retriable)
def hand_off_changes(
    changes: Sequence[PaymentChange], settings: Settings, ledger: Ledger, client: HandoffAPI | None = None
) -> NotifyReport:
    """POST each payment change, signed, to the configured accounting/ERP webhook, once each."""
    cfg = settings.handoff
    if not cfg.url and client is None:
        return NotifyReport()
    logger = _logger()
    clients: list[HandoffAPI] = [client] if client is not None else []
    building = threading.Lock()  # hand-offs go from several threads at once

    def api() -> HandoffAPI:
        with building:
            if not clients:
                url, secret = cfg.url, cfg.secret.get_secret_value() if cfg.secret else None
                if cfg.block and not secret:
                    from stripeflow.blocks.notify import HandoffCredentials, load_block

                    block: Any = load_block(HandoffCredentials, cfg.block, "handoff")
                    secret, url = block.secret.get_secret_value(), url or block.url
                if not url or not secret:
                    raise ConfigError("handoff: a URL but no secret (STRIPEFLOW_HANDOFF_SECRET or a block)")
                clients.append(HandoffAPI(url, secret, timeout=cfg.timeout))
            return clients[0]

    def sender(change: PaymentChange, key: str) -> Callable[[Attempt], str]:
        def send(attempt: Attempt) -> str:
            client = api()
            attempt()
            return client.deliver(change, key)

        return send

    items = [
        Outgoing(
            key=key,
            payment_id=change.payment.payment_id,
            target="handoff",
            action="payment_changed",
            channel="handoff",
            send=sender(change, key),
            dedupes=True,  # Idempotency-Key: a receiver drops a repeat, so a doubtful one is redone
            # settled as soon as taken: a kill leaves only those in flight to redo, not a chunk's
            settle_at_once=True,
        )
        for change in changes
        if change.changed
        for key in [handoff_key(change.payment)]
    ]
    try:
        report = deliver(items, ledger, final_attempt=_final_attempt(), logger=logger, parallel=cfg.parallel)
    finally:
        if client is None:
            for c in clients:
                c.close()
    logger.info("hand-off: %s", report.counts())
    return _finish(report, "hand-offs")
