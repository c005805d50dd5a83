"""Secrets that live in URLs never reach a log.

httpx logs every request's URL at INFO; httpcore logs response headers (a redirect's Location
keeps the path) at DEBUG; slack-sdk logs a webhook's URL at DEBUG, and again at INFO on a retry.
Some vendors put the secret in the URL: a Telegram bot token (`/bot<token>/`), a Slack
incoming-webhook path, a Bitrix24 inbound-webhook code (`/rest/<user>/<code>/`). A vendor client
calls `hide_in_logs(secret)` when it is built (not at import); every registered secret is then
masked in every record of those libraries' loggers and of their children (`httpcore.http11`,
`slack_sdk.webhook.client`, ...).

The masking is done where records are made (the logging module's record factory), not by a
filter on the parent loggers: a logger's filters never see the records its children propagate,
and a filter on handlers would miss every handler added later (pytest's, Prefect's, a user's).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

PROTECTED = ("httpx", "httpcore", "slack_sdk")  # the libraries that log request URLs or headers
MASK = "<redacted>"

_secrets: set[str] = set()
_lock = threading.Lock()
_installed: Any = None  # our factory while it is the logging module's


def protected(name: str) -> bool:
    """True for a protected library's logger or any logger under it."""
    return any(name == root or name.startswith(root + ".") for root in PROTECTED)


def redact(text: str) -> str:
    """`text` with every registered secret masked (longest first: no partial leftovers)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _mask(record: logging.LogRecord) -> None:
    if not _secrets or not protected(record.name):
        return
    message = record.getMessage()
    redacted = redact(message)
    if redacted != message:
        record.msg, record.args = redacted, None


def _install() -> None:
    """Wrap the current record factory once (again, if someone replaced ours without chaining)."""
    global _installed
    if _installed is not None and logging.getLogRecordFactory() is _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _mask(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = factory


def hide_in_logs(*secrets: str) -> None:
    """Mask these strings wherever httpx, httpcore or slack-sdk log them (empty or short ones are
    ignored: masking a common short string would garble the logs and hide nothing)."""
    with _lock:
        _secrets.update(s for s in secrets if s and len(s) >= 8)
        _install()
