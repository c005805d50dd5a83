"""Secrets that live in URLs (a Telegram bot token, a Slack webhook path) never reach a log.

httpx logs every request's URL at INFO; a filter on its loggers masks those parts.
"""

from __future__ import annotations

import logging
import re

_SECRET_IN_URL = re.compile(r"(/bot)[0-9]+:[A-Za-z0-9_-]+|(hooks\.slack\.com/services/)[A-Za-z0-9/_-]+")


class _RedactSecrets(logging.Filter):
    """Masks bot tokens and webhook paths in a log record (httpx logs every request's URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_IN_URL.sub(lambda m: (m.group(1) or m.group(2)) + "<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = _RedactSecrets()


def redact_tokens() -> None:
    """Install the filter on httpx's loggers, once (called when a client is built, not at import)."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
