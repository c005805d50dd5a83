"""A faithful local Slack: Web API `chat.postMessage` and incoming webhooks (reference section 9).

    state = SlackState()
    with serve_app(make_slack_app(state)) as url:
        SlackAPI("xoxb-test", f"{url}/api")           # Web API
        SlackWebhookAPI(f"{url}/services/T0/B0/secret")  # a webhook that `state.webhooks` knows

- `POST /api/chat.postMessage` with `Authorization: Bearer xoxb-...`: HTTP 200 and
  `{"ok": true, "channel", "ts", "message"}`; errors are HTTP 200 too: `{"ok": false, "error":
  "channel_not_found" | "invalid_auth" | "not_authed" | "no_text" | "invalid_metadata_format"}`;
  `metadata` ({"event_type", "event_payload"}) is kept with the message, as Slack keeps it.
- About one message a second per channel: a faster one gets 429, `Retry-After: <s>` and
  `{"ok": false, "error": "ratelimited"}` (time from `clock`, which a test may make virtual).
- Webhooks answer plain `ok`, or 404 `no_service` / `channel_not_found`, 410 `channel_is_archived`,
  400 `invalid_payload`, 429.
- Fault injection: `state.fail_next(n, status=429, retry_after=1)` (or 500) for the next n requests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass
class SlackState:
    tokens: set[str] = field(default_factory=lambda: {"xoxb-test"})
    channels: dict[str, str] = field(default_factory=lambda: {"payments": "C0PAYMENTS", "team": "C0TEAM"})
    # webhook path -> channel name, or an error code the webhook answers with
    webhooks: dict[str, str] = field(default_factory=lambda: {"/services/T0/B0/secret": "payments"})
    per_channel_interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _faults: list[tuple[int, float]] = field(default_factory=list)
    _last_post: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, n: int, status: int = 429, retry_after: float = 1) -> None:
        with self._lock:
            self._faults.extend([(status, retry_after)] * n)

    def _take_fault(self) -> tuple[int, float] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def channel_id(self, channel: str) -> str | None:
        name = channel.lstrip("#")
        if name in self.channels:
            return self.channels[name]
        return channel if channel in self.channels.values() else None

    def _rate_limited(self, channel_id: str) -> float | None:
        """Seconds to wait when this channel had a message too recently; else records this one."""
        with self._lock:
            now = self.clock()
            last = self._last_post.get(channel_id)
            if last is not None and now - last < self.per_channel_interval:
                return self.per_channel_interval - (now - last)
            self._last_post[channel_id] = now
            return None

    def texts(self, channel: str | None = None) -> list[str]:
        wanted = self.channel_id(channel) if channel else None
        return [m["text"] for m in self.messages if wanted is None or m["channel"] == wanted]


def _fault_response(fault: tuple[int, float], *, plain: bool) -> Response:
    status, retry_after = fault
    headers = {"Retry-After": str(math.ceil(retry_after))} if status == 429 else {}
    error = "ratelimited" if status == 429 else "internal_error"
    if plain:
        return PlainTextResponse(error, status_code=status, headers=headers)
    return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)


def make_slack_app(state: SlackState) -> Starlette:
    async def post_message(request: Request) -> Response:
        body = await request.json()
        auth = request.headers.get("authorization", "")
        state.requests.append({"path": "/api/chat.postMessage", "json": body, "auth": bool(auth)})
        fault = state._take_fault()
        if fault:
            return _fault_response(fault, plain=False)
        if not auth.startswith("Bearer "):
            return JSONResponse({"ok": False, "error": "not_authed"})
        if auth.removeprefix("Bearer ") not in state.tokens:
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        channel_id = state.channel_id(str(body.get("channel", "")))
        if channel_id is None:
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        if not body.get("text") and not body.get("blocks"):
            return JSONResponse({"ok": False, "error": "no_text"})
        wait = state._rate_limited(channel_id)
        if wait is not None:
            return JSONResponse(
                {"ok": False, "error": "ratelimited"},
                status_code=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        ts = f"{time.time():.6f}"
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": body.get("text", ""),
            "ts": ts,
            "bot_id": "B0STRIPEFLOW",
            "blocks": body.get("blocks", []),
        }
        metadata = body.get("metadata")
        if metadata is not None:
            if not (isinstance(metadata, dict) and isinstance(metadata.get("event_type"), str)):
                return JSONResponse({"ok": False, "error": "invalid_metadata_format"})
            message["metadata"] = {
                "event_type": metadata["event_type"],
                "event_payload": metadata.get("event_payload", {}),
            }
        state.messages.append({**message, "channel": channel_id})
        return JSONResponse({"ok": True, "channel": channel_id, "ts": ts, "message": message})

    async def webhook(request: Request) -> Response:
        path = request.url.path
        raw = await request.body()
        state.requests.append({"path": path, "body": raw.decode(errors="replace")})
        fault = state._take_fault()
        if fault:
            return _fault_response(fault, plain=True)
        target = state.webhooks.get(path)
        if target is None:
            return PlainTextResponse("no_service", status_code=404)
        if target == "channel_is_archived":
            return PlainTextResponse(target, status_code=410)
        if target not in state.channels:
            return PlainTextResponse("channel_not_found", status_code=404)
        try:
            body = await request.json()
        except ValueError:
            return PlainTextResponse("invalid_payload", status_code=400)
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return PlainTextResponse("invalid_payload", status_code=400)
        channel_id = state.channels[target]
        wait = state._rate_limited(channel_id)
        if wait is not None:
            return PlainTextResponse(
                "rate_limited", status_code=429, headers={"Retry-After": str(max(1, math.ceil(wait)))}
            )
        state.messages.append(
            {
                "channel": channel_id,
                "text": body.get("text", ""),
                "blocks": body.get("blocks", []),
                "ts": f"{time.time():.6f}",
            }
        )
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/api/chat.postMessage", post_message, methods=["POST"]),
            Route("/services/{rest:path}", webhook, methods=["POST"]),
        ]
    )
