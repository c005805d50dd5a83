"""A faithful local Slack: Web API `chat.postMessage`, `conversations.list`, `conversations.history`,
and incoming webhooks (reference section 9).

    state = SlackState()
    with serve_app(make_slack_app(state)) as url:
        SlackAPI("xoxb-test", f"{url}/api")           # Web API
        SlackWebhookAPI(f"{url}/services/T0/B0/secret")  # a webhook that `state.webhooks` knows

- `POST /api/chat.postMessage` with `Authorization: Bearer xoxb-...`: HTTP 200 and
  `{"ok": true, "channel", "ts", "message"}`; errors are HTTP 200 too: `{"ok": false, "error":
  "channel_not_found" | "invalid_auth" | "not_authed" | "no_text" | "invalid_metadata_format"}`;
  `metadata` ({"event_type", "event_payload"}) is kept with the message, as Slack keeps it.
  About one message a second per channel: a faster one gets 429, `Retry-After: <s>` and
  `{"ok": false, "error": "ratelimited"}` (time from `clock`, which a test may make virtual).
- `conversations.list` (GET query or POST form; `types`, `exclude_archived`, `limit` <= 1000,
  `cursor`): `{"ok", "channels": [{id, name, is_channel, is_private, is_archived, is_member}],
  "response_metadata": {"next_cursor": "" | opaque}}`; needs `channels:read` / `groups:read`.
- `conversations.history` (`channel` an id, never a name: a name is `channel_not_found`; `oldest`,
  `latest` exclusive unless `inclusive`, `limit` <= 999, `cursor`, `include_all_metadata`):
  messages newest first, `has_more`, `response_metadata.next_cursor` while more remain; a
  message's `metadata` only with `include_all_metadata`. Needs `channels:history` (or
  `groups:history` for a private channel) and membership (`not_in_channel`).
  A refused scope answers `{"ok": false, "error": "missing_scope", "needed", "provided"}`.
  Tier limits per method in any 60 s (list 20, history 50): over it, 429 with Retry-After.
- Webhooks answer plain `ok`, or their plain-text errors: 404 `no_service` (an unknown URL) /
  `channel_not_found`, 400 `invalid_payload`, 429 `rate_limited` with Retry-After, and for a
  webhook set to one of `WEBHOOK_ERRORS` (`state.webhooks[path] = "invalid_token"`, a revoked
  URL) that code with its status: 403 `invalid_token` / `action_prohibited` / `team_disabled`,
  410 `channel_is_archived`, 500 `rollup_error`, ...
- Faults (FakeVendor): `state.fail_next(n, status=429, retry_after=1)` (or 500) for the next n
  requests; `state.inject(500, path="chat.postMessage", after_write=True)` or `timeout=True` for
  a post that Slack stored but whose answer is lost.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette

from stripeflow.testing.vendor import Call, FakeVendor, Fault, RollingWindow, respond

DEFAULT_SCOPES = frozenset(
    {"chat:write", "channels:read", "groups:read", "channels:history", "groups:history"}
)
TIER_PER_MINUTE = {"conversations.list": 20, "conversations.history": 50}  # Tier 2, Tier 3
MAX_LIMIT = {"conversations.list": 1000, "conversations.history": 999}
# an incoming webhook's own errors: plain text, with these statuses (Slack's "Handling errors")
WEBHOOK_ERRORS = {
    "invalid_payload": 400,
    "user_not_found": 400,
    "too_many_attachments": 400,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "team_disabled": 403,
    "invalid_token": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "no_team": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}


def _ok(body: dict[str, Any]) -> httpx.Response:
    return respond(200, {"ok": True, **body})


def _err(error: str, **extra: Any) -> httpx.Response:
    return respond(200, {"ok": False, "error": error, **extra})


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, text=text, headers=headers)


def _cursor(kind: str, offset: int) -> str:
    return base64.b64encode(f"{kind}:{offset}".encode()).decode()


def _offset(kind: str, cursor: str) -> int | None:
    try:
        got_kind, _, n = base64.b64decode(cursor.encode(), validate=True).decode().partition(":")
        return int(n) if got_kind == kind else None
    except ValueError:
        return None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


class SlackState(FakeVendor):
    def __init__(
        self,
        *,
        tokens: set[str] | None = None,
        channels: dict[str, str] | None = None,
        webhooks: dict[str, str] | None = None,
        per_channel_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        scopes: set[str] | None = None,
        private: set[str] | None = None,  # channel names that are private
        archived: set[str] | None = None,
        not_member: set[str] | None = None,  # channel names the bot is not in
    ) -> None:
        super().__init__(clock)
        self.tokens = tokens if tokens is not None else {"xoxb-test"}
        self.channels = channels if channels is not None else {"payments": "C0PAYMENTS", "team": "C0TEAM"}
        # webhook path -> channel name, or an error code the webhook answers with
        self.webhooks = webhooks if webhooks is not None else {"/services/T0/B0/secret": "payments"}
        self.per_channel_interval = per_channel_interval
        self.scopes = set(scopes if scopes is not None else DEFAULT_SCOPES)
        self.private = private or set()
        self.archived = archived or set()
        self.not_member = not_member or set()
        self.messages: list[dict[str, Any]] = []  # in the order posted (oldest first)
        self.requests: list[dict[str, Any]] = []
        self._last_post: dict[str, float] = {}
        self._last_ts = 0.0
        self._tiers = {m: RollingWindow(n, 60.0, clock) for m, n in TIER_PER_MINUTE.items()}
        self.route("POST", r"/api/chat\.postMessage", self._post_message)
        for method in ("GET", "POST"):
            self.route(method, r"/api/conversations\.list", self._conversations_list)
            self.route(method, r"/api/conversations\.history", self._conversations_history)
        self.route("POST", r"/services/.+", self._webhook)

    # -- faults ------------------------------------------------------------------------------

    def fault_body(self, status: int) -> Fault:
        if status == 429:
            return Fault(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
        return Fault(status, {"ok": False, "error": "internal_error"})

    def fail_next(self, n: int, status: int = 429, retry_after: float = 1) -> None:
        headers = {"Retry-After": str(math.ceil(retry_after))} if status == 429 else None
        self.inject(status, n, headers=headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(self._logged(request))  # every request, a fault's too
        response = super().handle(request)
        if request.url.path.startswith("/services/") and "json" in response.headers.get("content-type", ""):
            error = response.json().get("error", "")  # an injected fault, in the webhook's plain text
            error = "rate_limited" if response.status_code == 429 else error
            return _plain(response.status_code, error, dict(response.headers))
        return response

    @staticmethod
    def _logged(request: httpx.Request) -> dict[str, Any]:
        path, raw = request.url.path, request.read()
        if path == "/api/chat.postMessage":
            try:
                body = httpx.Response(200, content=raw).json()
            except ValueError:
                body = None
            return {"path": path, "json": body, "auth": bool(request.headers.get("authorization"))}
        if path.startswith("/api/"):  # Slack takes a method's arguments in the query or a form body
            form = parse_qs(raw.decode(errors="replace")) if b"=" in raw and not raw.startswith(b"{") else {}
            return {
                "path": path,
                "params": {**dict(request.url.params), **{k: v[0] for k, v in form.items()}},
            }
        return {"path": path, "body": raw.decode(errors="replace")}

    # -- helpers -----------------------------------------------------------------------------

    def channel_id(self, channel: str) -> str | None:
        name = channel.lstrip("#")
        if name in self.channels:
            return self.channels[name]
        return channel if channel in self.channels.values() else None

    def channel_name(self, channel_id: str) -> str | None:
        return next((n for n, i in self.channels.items() if i == channel_id), None)

    def _rate_limited(self, channel_id: str) -> float | None:
        """Seconds to wait when this channel had a message too recently; else records this one."""
        now = self.clock()
        last = self._last_post.get(channel_id)
        if last is not None and now - last < self.per_channel_interval:
            return self.per_channel_interval - (now - last)
        self._last_post[channel_id] = now
        return None

    def _new_ts(self) -> str:
        ts = max(time.time(), self._last_ts + 0.000001)  # unique and increasing, as Slack's are
        self._last_ts = ts
        return f"{ts:.6f}"

    def add_message(self, channel: str, text: str, metadata: dict[str, Any] | None = None) -> str:
        """A message someone else posted (a person, another app); returns its ts."""
        ts = self._new_ts()
        message: dict[str, Any] = {"type": "message", "user": "U0PERSON", "text": text, "ts": ts}
        if metadata is not None:
            message["metadata"] = metadata
        self.messages.append({**message, "channel": self.channel_id(channel)})
        return ts

    def texts(self, channel: str | None = None) -> list[str]:
        wanted = self.channel_id(channel) if channel else None
        return [m["text"] for m in self.messages if wanted is None or m["channel"] == wanted]

    def _auth(self, call: Call, params: dict[str, str]) -> httpx.Response | None:
        auth = call.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token", "")
        if not token:
            return _err("not_authed")
        if token not in self.tokens:
            return _err("invalid_auth")
        return None

    def _needs(self, scope: str) -> httpx.Response | None:
        if scope in self.scopes:
            return None
        return _err("missing_scope", needed=scope, provided=",".join(sorted(self.scopes)))

    def _tier(self, method: str) -> httpx.Response | None:
        window = self._tiers[method]
        if window.admit():
            return None
        wait = max(1, math.ceil(window.reset_in()))
        return respond(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(wait)})

    @staticmethod
    def _params(call: Call) -> dict[str, str]:
        params = dict(call.params)
        if call.method == "POST" and call.body:
            if "json" in call.headers.get("content-type", ""):
                params.update({k: str(v) for k, v in (call.json() or {}).items()})
            else:
                params.update({k: v[0] for k, v in parse_qs(call.body.decode()).items()})
        return params

    def _page(
        self, rows: list[Any], params: dict[str, Any], prefix: str, method: str
    ) -> tuple[list[Any], str | None] | None:
        """One page of `rows` from the request's cursor, and the next cursor (None: the last
        page); None for a cursor this fake did not give out."""
        start = 0
        if params.get("cursor"):
            got = _offset(prefix, params["cursor"])
            if got is None:
                return None
            start = got
        limit = self._limit(params, method)
        more = start + limit < len(rows)
        return rows[start : start + limit], _cursor(prefix, start + limit) if more else None

    @staticmethod
    def _limit(params: dict[str, str], method: str) -> int:
        try:
            limit = int(params.get("limit") or 100)
        except ValueError:
            limit = 100
        return max(1, min(limit, MAX_LIMIT[method]))

    # -- the Web API -------------------------------------------------------------------------

    def _post_message(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        denied = self._auth(call, {})
        if denied is not None:
            return denied
        channel_id = self.channel_id(str(body.get("channel", "")))
        if channel_id is None:
            return _err("channel_not_found")
        if not body.get("text") and not body.get("blocks"):
            return _err("no_text")
        wait = self._rate_limited(channel_id)
        if wait is not None:
            return respond(
                429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(max(1, math.ceil(wait)))}
            )
        ts = self._new_ts()
        message: dict[str, Any] = {
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
                return _err("invalid_metadata_format")
            message["metadata"] = {
                "event_type": metadata["event_type"],
                "event_payload": metadata.get("event_payload", {}),
            }
        self.messages.append({**message, "channel": channel_id})
        return _ok({"channel": channel_id, "ts": ts, "message": message})

    def _conversations_list(self, call: Call) -> httpx.Response:
        params = self._params(call)
        denied = self._auth(call, params) or self._tier("conversations.list")
        if denied is not None:
            return denied
        types = set((params.get("types") or "public_channel").split(","))
        for kind, scope in (("public_channel", "channels:read"), ("private_channel", "groups:read")):
            refused = self._needs(scope) if kind in types else None
            if refused is not None:
                return refused
        rows = [
            {
                "id": cid,
                "name": name,
                "is_channel": True,
                "is_private": name in self.private,
                "is_archived": name in self.archived,
                "is_member": name not in self.not_member,
            }
            for name, cid in self.channels.items()
            if ("private_channel" if name in self.private else "public_channel") in types
            and not (_truthy(params.get("exclude_archived")) and name in self.archived)
        ]
        paged = self._page(rows, params, "team", "conversations.list")
        if paged is None:
            return _err("invalid_cursor")
        page, next_cursor = paged
        return _ok({"channels": page, "response_metadata": {"next_cursor": next_cursor or ""}})

    def _conversations_history(self, call: Call) -> httpx.Response:
        params = self._params(call)
        denied = self._auth(call, params) or self._tier("conversations.history")
        if denied is not None:
            return denied
        channel_id = params.get("channel", "")
        name = self.channel_name(channel_id)  # an id only: Slack answers a name with channel_not_found
        if name is None:
            return _err("channel_not_found")
        refused = self._needs("groups:history" if name in self.private else "channels:history")
        if refused is not None:
            return refused
        if name in self.not_member:
            return _err("not_in_channel")
        inclusive = _truthy(params.get("inclusive"))
        try:
            oldest = float(params.get("oldest") or 0)
            latest = float(params["latest"]) if params.get("latest") else math.inf
        except ValueError:
            return _err("invalid_ts_oldest")

        def within(ts: float) -> bool:
            if inclusive:
                return oldest <= ts <= latest
            return oldest < ts < latest

        metadata = _truthy(params.get("include_all_metadata"))
        found = [
            {k: v for k, v in m.items() if k != "channel" and (metadata or k != "metadata")}
            for m in reversed(self.messages)  # newest first
            if m["channel"] == channel_id and within(float(m["ts"]))
        ]
        paged = self._page(found, params, "next_ts", "conversations.history")
        if paged is None:
            return _err("invalid_cursor")
        page, next_cursor = paged
        body: dict[str, Any] = {"messages": page, "has_more": bool(next_cursor), "pin_count": 0}
        if next_cursor:
            body["response_metadata"] = {"next_cursor": next_cursor}
        return _ok(body)

    # -- incoming webhooks -------------------------------------------------------------------

    def _webhook(self, call: Call) -> httpx.Response:
        target = self.webhooks.get(call.path)
        if target is None:
            return _plain(404, "no_service")
        if target in WEBHOOK_ERRORS:
            return _plain(WEBHOOK_ERRORS[target], target)
        if target not in self.channels:
            return _plain(404, "channel_not_found")
        try:
            body = call.json()
        except ValueError:
            return _plain(400, "invalid_payload")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return _plain(400, "invalid_payload")
        channel_id = self.channels[target]
        wait = self._rate_limited(channel_id)
        if wait is not None:
            return _plain(429, "rate_limited", {"Retry-After": str(max(1, math.ceil(wait)))})
        self.messages.append(
            {
                "channel": channel_id,
                "text": body.get("text", ""),
                "blocks": body.get("blocks", []),
                "ts": self._new_ts(),
            }
        )
        return _plain(200, "ok")


def make_slack_app(state: SlackState) -> Starlette:
    return state.app
