"""Secrets that live in URLs never reach a log.

httpx logs every request's URL at INFO. Some vendors put the secret in it: a Telegram bot token
(`/bot<token>/`), a Slack incoming-webhook path, a Bitrix24 inbound-webhook code
(`/rest/<user>/<code>/`). A vendor client calls `hide_in_logs(secret)` when it is built (not at
import); a filter on httpx's loggers then masks every registered secret in every record.
"""

from __future__ import annotations

import logging
import threading

_secrets: set[str] = set()
_lock = threading.Lock()


class _HideSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret in sorted(_secrets, key=len, reverse=True):  # longest first: no partial leftovers
            redacted = redacted.replace(secret, "<redacted>")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = _HideSecrets()


def hide_in_logs(*secrets: str) -> None:
    """Mask these strings wherever httpx or httpcore log them (empty or short strings are ignored)."""
    with _lock:
        _secrets.update(s for s in secrets if s and len(s) >= 8)
        for name in ("httpx", "httpcore"):
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
