"""A faithful local Telegram Bot API: `sendMessage` with HTML parse mode (reference section 9).

    state = TelegramState()
    with serve_app(make_telegram_app(state)) as url:
        TelegramAPI("123456:TEST-token", url)

- `POST /bot<token>/sendMessage` -> `{"ok": true, "result": Message}`.
- Errors: `{"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}`;
  401 `Unauthorized` for an unknown token; 403 `Forbidden: bot was blocked by the user`;
  400 `Bad Request: can't parse entities: ...` for HTML it does not support; 400 `message is too long`.
- About one message a second per chat; faster gets 429 with `parameters.retry_after` (time from
  `clock`, which a test may make virtual).
- Fault injection: `state.fail_next(n, status=429, retry_after=5)` (or 500) for the next n requests.
"""

from __future__ import annotations

import html
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "blockquote",
    }
)
NAMED_ENTITIES = frozenset({"lt", "gt", "amp", "quot"})
MAX_TEXT = 4096


class _EntityChecker(HTMLParser):
    """The parts of Telegram's HTML parser a fake needs: known tags, balanced, known entities."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.error: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.error is None and tag not in ALLOWED_TAGS:
            self.error = f'Unsupported start tag "{tag}" at byte offset {self.getpos()[1]}'
        if self.error is None and tag == "a" and not dict(attrs).get("href"):
            self.error = "Can't parse entities: a tag without href"
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.error is None and (not self.stack or self.stack[-1] != tag):
            expected = self.stack[-1] if self.stack else ""
            self.error = (
                f"Unmatched end tag at byte offset {self.getpos()[1]}, "
                f'expected "</{expected}>", found "</{tag}>"'
            )
        if self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if self.error is None and name not in NAMED_ENTITIES:
            self.error = f'Unsupported HTML entity "&{name};"'
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))


def check_html(text: str) -> tuple[str | None, str]:
    """(error or None, the plain text Telegram would show)."""
    if re.search(r"<(?![A-Za-z/])", text):
        return "Unexpected end of name token", text
    checker = _EntityChecker()
    checker.feed(text)
    checker.close()
    if checker.error is None and checker.stack:
        checker.error = f'Can\'t find end tag corresponding to start tag "{checker.stack[-1]}"'
    return checker.error, "".join(checker.text)


@dataclass
class TelegramState:
    tokens: set[str] = field(default_factory=lambda: {"123456:TEST-token"})
    chats: dict[str, str] = field(default_factory=lambda: {"-1001": "group", "42": "private"})
    blocked: set[str] = field(default_factory=set)
    per_chat_interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _faults: list[tuple[int, float]] = field(default_factory=list)
    _last: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, n: int, status: int = 429, retry_after: float = 5) -> None:
        with self._lock:
            self._faults.extend([(status, retry_after)] * n)

    def _take_fault(self) -> tuple[int, float] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _rate_limited(self, chat: str) -> float | None:
        with self._lock:
            now = self.clock()
            last = self._last.get(chat)
            if last is not None and now - last < self.per_chat_interval:
                return self.per_chat_interval - (now - last)
            self._last[chat] = now
            return None


def _error(code: int, description: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error_code": code, "description": description, **extra}, status_code=code
    )


def _too_many(wait: float) -> JSONResponse:
    seconds = max(1, math.ceil(wait))
    return _error(429, f"Too Many Requests: retry after {seconds}", parameters={"retry_after": seconds})


def make_telegram_app(state: TelegramState) -> Starlette:
    async def send_message(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            body = await request.json()
        except ValueError:
            body = dict(await request.form())
        state.requests.append({"method": "sendMessage", "json": body, "token_ok": token in state.tokens})
        fault = state._take_fault()
        if fault:
            status, wait = fault
            return _too_many(wait) if status == 429 else _error(status, "Internal Server Error")
        if token not in state.tokens:
            return _error(401, "Unauthorized")
        chat = str(body.get("chat_id", ""))
        text = str(body.get("text", ""))
        if chat not in state.chats:
            return _error(400, "Bad Request: chat not found")
        if chat in state.blocked:
            return _error(403, "Forbidden: bot was blocked by the user")
        if not text.strip():
            return _error(400, "Bad Request: message text is empty")
        shown = text
        if body.get("parse_mode") == "HTML":
            problem, shown = check_html(text)
            if problem:
                return _error(400, f"Bad Request: can't parse entities: {problem}")
        if len(shown) > MAX_TEXT:
            return _error(400, "Bad Request: message is too long")
        too_soon = state._rate_limited(chat)
        if too_soon is not None:
            return _too_many(too_soon)
        message = {
            "message_id": len(state.messages) + 1,
            "date": int(time.time()),
            "chat": {"id": int(chat), "type": state.chats[chat]},
            "text": shown,
        }
        state.messages.append({**message, "html": text})
        return JSONResponse({"ok": True, "result": message})

    return Starlette(routes=[Route("/bot{token}/sendMessage", send_message, methods=["POST"])])
