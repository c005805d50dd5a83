"""Customer e-mails, team messages and the accounting hand-off: the Prefect tasks a flow calls.

    notify_changes(changes, settings, ledger)    customer e-mail + team messages (Slack, Telegram,
                                                 e-mail), each exactly once per payment and kind
    hand_off_changes(changes, settings, ledger)  one signed JSON webhook per payment change

What each change calls for is in `plan`, how it reads in `render` (and the templates), how each
message goes once in `delivery`. Neither task raises for a message that cannot be delivered
(a rejected address, an unknown channel, refused credentials): it is dead-lettered with the
reason, so notifications never hold up the CRM work. Their declared retries are for outages
only (`RetriableError`), and are safe because every send is guarded by its ledger effect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError

from stripeflow.core.config import Settings
from stripeflow.core.errors import ConfigError, RetriableError, VendorError
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import PaymentChange
from stripeflow.tasks.notify.channels import Channels, NotifySecrets, load_secrets
from stripeflow.tasks.notify.delivery import (
    CANNOT_LOOK,
    Attempt,
    BuildError,
    Looked,
    NotifyReport,
    Outgoing,
    cannot_look,
    deliver,
    describe,
)
from stripeflow.tasks.notify.email import Envelope, build_email, message_id
from stripeflow.tasks.notify.handoff import HandoffAPI, handoff_key
from stripeflow.tasks.notify.plan import Audience, Planned, plan_messages
from stripeflow.tasks.notify.render import Renderer, RenderError, message_context
from stripeflow.tasks.retry import retry_if_retriable

log = logging.getLogger("stripeflow.notify")
T = TypeVar("T")
# a Slack message of an effect is no older than its claim (less this, for the two clocks' skew);
# the look-back when the claim's time is unknown
SLACK_CLOCK_MARGIN = timedelta(minutes=5)
SLACK_LOOK_BACK = timedelta(hours=24)


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


def deal_url(settings: Settings, ledger: Ledger, payment_id: str) -> str | None:
    """The deal's page in the first CRM that has both a link template and this deal."""
    for crm_name, template in settings.notify.deal_urls.items():
        deal_id = ledger.get_link("deal", payment_id, crm_name)
        if deal_id:
            return template.format(deal_id=deal_id)
    return None


def build_messages(
    changes: Sequence[PaymentChange],
    settings: Settings,
    ledger: Ledger,
    channels: Channels,
    renderer: Renderer,
    audience: Audience | None = None,
) -> list[Outgoing]:
    """Every message the changes call for (for one audience, if given), each with a `send` that
    renders it when it goes."""
    return [
        _outgoing(planned, settings, ledger, channels, renderer)
        for change in changes
        for planned in plan_messages(change, settings.notify)
        if audience is None or planned.audience == audience
    ]


BUILD_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, AttributeError, RenderError)


def _build(make: Callable[[], T]) -> T:
    """Make a message's content or MIME; a payment it cannot be made from fails only this message."""
    try:
        return make()
    except BUILD_ERRORS as exc:  # a name no header takes, a broken template override, ...
        raise BuildError(f"cannot build the message: {describe(exc)}", vendor="notify", code="build") from exc


def _outgoing(
    p: Planned, settings: Settings, ledger: Ledger, channels: Channels, renderer: Renderer
) -> Outgoing:
    cfg = settings.notify
    payment = p.change.payment
    customer = p.audience == "customer"
    msg_id = message_id(p.key, payment.payment_id, cfg.sender)

    def context() -> dict[str, Any]:
        return message_context(
            payment,
            p.change.previous,
            kind=p.kind,
            language=settings.language,
            timezone=cfg.timezone,
            company=cfg.company,
            deal_url=deal_url(settings, ledger, payment.payment_id),
        )

    def make_email() -> EmailMessage:
        content = (
            renderer.customer_email(p.kind, context()) if customer else renderer.team_email(p.kind, context())
        )
        envelope = Envelope(
            sender=cfg.sender,
            to=p.channel_target,
            to_name=payment.name if customer else None,
            reply_to=cfg.reply_to if customer else None,
            unsubscribe_mailto=cfg.unsubscribe_mailto if customer else None,
            unsubscribe_url=cfg.unsubscribe_url if customer else None,
        )
        msg = build_email(content, envelope, msg_id=msg_id)
        msg.as_bytes()  # serialising is where a bad header value shows itself: here, not mid-send
        return msg

    def send_email(attempt: Attempt) -> str:
        return channels.send_email(_build(make_email), attempt)

    def look_email() -> Looked:
        found = channels.mailer().look(msg_id)
        return CANNOT_LOOK if found is None else Looked(found, msg_id)

    def look_slack() -> Looked:
        claimed = ledger.effect_claimed_at(p.key)
        since = (claimed or datetime.now(UTC) - SLACK_LOOK_BACK) - SLACK_CLOCK_MARGIN
        try:
            client = channels.slack(p.channel_target)
            ts = client.find_message(p.channel_target, p.key, since.timestamp())
        except (VendorError, ConfigError) as exc:  # cannot tell: never taken for "not sent"
            return Looked(None, reason=f"the lookup failed: {describe(exc)}")
        return Looked(True, ts) if ts else Looked(False)

    def send_slack(attempt: Attempt) -> str:
        content = _build(lambda: renderer.team_slack(p.kind, context()))
        client = channels.slack(p.channel_target)
        attempt()
        return client.post_message(p.channel_target, content.text, content.blocks, key=p.key)

    def send_slack_webhook(attempt: Attempt) -> str:
        content = _build(lambda: renderer.team_slack(p.kind, context()))
        client = channels.slack_webhook()
        attempt()
        return client.send(content.text, content.blocks)

    def send_telegram(attempt: Attempt) -> str:
        html = _build(lambda: renderer.team_telegram(p.kind, context()))
        client = channels.telegram(p.channel_target)
        attempt()
        return client.send_message(p.channel_target, html)

    senders: dict[str, Callable[[Attempt], str]] = {
        "email": send_email,
        "slack": send_slack,
        "slack-webhook": send_slack_webhook,
        "telegram": send_telegram,
    }
    target = "slack" if p.channel_type == "slack-webhook" else p.channel_type
    outbox = p.channel_type == "email" and channels.mailer_can_look()
    # SMTP, the Slack webhook and Telegram keep nothing one could ask for later
    lookers: dict[str, Callable[[], Looked]] = {
        "slack": look_slack,
        **({"email": look_email} if outbox else {}),
    }
    breaker = "email" if p.channel_type == "email" else p.channel  # one SMTP server for all mail
    return Outgoing(
        key=p.key,
        payment_id=payment.payment_id,
        target=target,
        action=p.action,
        channel=breaker,
        send=senders[p.channel_type],
        look=lookers.get(p.channel_type, cannot_look),
        dedupes=outbox,  # one file per Message-ID, replaced atomically: a repeat changes nothing
        settle_at_once=not outbox,
    )


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
            return clients[0] if clients else build_api()

    def build_api() -> HandoffAPI:
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


__all__ = [
    "Channels",
    "NotifyReport",
    "NotifySecrets",
    "build_messages",
    "hand_off_changes",
    "load_secrets",
    "notify_changes",
]
