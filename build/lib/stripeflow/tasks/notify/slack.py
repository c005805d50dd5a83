"""Slack: `chat.postMessage` with a bot token (the `slack:<channel>` route); the error table both
Slack channels share (the incoming webhook is `slack_webhook`).

Sent through our `VendorAPI` rather than slack-sdk's WebClient: one HTTP seam means the same
Retry-After policy, injected sleep and error tree as every vendor, and no second retry layer.

A bot message carries its effect key in its metadata, so `find_message` can tell afterwards
whether Slack has it (conversations.list for the channel's id, then conversations.history):
that is how `SlackChannel.look` settles a message a dead attempt may have posted.

Slack answers most errors with HTTP 200 and `{"ok": false, "error": "..."}`; `classify`
reads those into the error tree (the table below), and 429 carries `Retry-After`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, cast

import httpx

from stripeflow.core.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RateLimitedError,
    RetriableError,
    VendorError,
)
from stripeflow.core.http import (
    Clock,
    CursorPaginator,
    Limiter,
    Paginator,
    Sleep,
    TokenBucketLimiter,
    VendorAPI,
)
from stripeflow.tasks.notify.base import Message, Secret, build
from stripeflow.tasks.notify.delivery import Attempt, Looked, describe

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "team_access_not_granted",
    }
)
RATE_ERRORS = frozenset({"ratelimited", "rate_limited"})
METADATA_EVENT = "stripeflow_message"  # message metadata's event_type for what we post
HISTORY_PAGE = 200  # Slack's advice for conversations.history pages
HISTORY_PAGES = 10  # a look at most this deep; deeper than that it cannot tell, so it does not say "missing"
CHANNEL_PAGES = 20
CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{6,}")  # names are lower-case; ids C…/G…, upper-case
CHANNELS = cast(Paginator, CursorPaginator("channels", "response_metadata.next_cursor", "cursor"))
HISTORY = cast(Paginator, CursorPaginator("messages", "response_metadata.next_cursor", "cursor"))
SERVER_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
# a Slack message of an effect is no older than its claim (less this, for the two clocks' skew);
# the look-back when the claim's time is unknown
SLACK_CLOCK_MARGIN = timedelta(minutes=5)
SLACK_LOOK_BACK = timedelta(hours=24)
SLACK_TOKEN = Secret("slack_token", lambda cfg: cfg.slack_token, "slack_bot_token")


def per_channel_limiter(sleep: Sleep, clock: Clock = time.monotonic) -> Limiter:
    """Slack allows about one message a second per channel (short bursts pass)."""
    return TokenBucketLimiter(capacity=1, rate=1.0, sleep=sleep, clock=clock)


def classify_slack_error(
    code: str, *, vendor: str, status: int, wait: float | None, request_id: str | None
) -> VendorError:
    """The one place a Slack error code becomes our error (channel_not_found: permanent, ...)."""
    kw: dict[str, Any] = dict(vendor=vendor, status=status, code=code, request_id=request_id)
    if code in RATE_ERRORS or status == 429:
        return RateLimitedError(code, wait=wait, **kw)
    if code in AUTH_ERRORS:
        return AuthError(code, **kw)
    if code in SERVER_ERRORS or status >= 500:
        return RetriableError(code, wait=wait, **kw)
    return PermanentError(code, **kw)


class SlackAPI(VendorAPI):
    """One client per channel: its limiter keeps to Slack's ~1 message a second per channel."""

    vendor = "slack"

    def __init__(self, token: str, base_url: str = "https://slack.com/api", **kw: Any) -> None:
        self._token = token
        clock = kw.pop("clock", time.monotonic)
        kw.setdefault("limiter", per_channel_limiter(kw.get("sleep", time.sleep), clock))
        super().__init__(base_url, **kw)
        self._channel_ids: dict[str, str] = {}  # channel name -> id, from conversations.list

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def request_id(self, response: httpx.Response) -> str | None:
        return response.headers.get("x-slack-req-id")

    def classify(self, response: httpx.Response) -> VendorError | None:
        body: Any = None
        try:
            body = response.json()
        except ValueError:
            pass
        if isinstance(body, dict) and body.get("ok") is True and response.status_code < 400:
            return None
        code = body.get("error") if isinstance(body, dict) else None
        if not code:
            return (
                super().classify(response)
                if response.status_code >= 400
                else PermanentError("not a Slack API answer", vendor=self.vendor, status=response.status_code)
            )
        return classify_slack_error(
            str(code),
            vendor=self.vendor,
            status=response.status_code,
            wait=self.retry_after(response),
            request_id=self.request_id(response),
        )

    def post_message(
        self, channel: str, text: str, blocks: list[dict[str, Any]], *, key: str | None = None
    ) -> str:
        """Post; returns the message's `ts` (its id in the channel).

        `key` (our effect key) rides along as message metadata, so the message in the channel
        says which effect it is (Slack keeps metadata with the message; it dedupes nothing).
        """
        payload: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks, "unfurl_links": False}
        if key:
            payload["metadata"] = {"event_type": METADATA_EVENT, "event_payload": {"effect_key": key}}
        body = self.request_json(
            "POST",
            "/chat.postMessage",
            idempotent=False,  # Slack has no idempotency key
            json=payload,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        return str(body.get("ts", ""))

    def channel_id(self, channel: str) -> str:
        """The id of `#name` or `name` (conversations.history takes ids only); an id as given.

        Raises `PermanentError` channel_not_found when no channel the bot can list has the name.
        """
        name = channel.removeprefix("#")
        if channel.startswith("#") or not CHANNEL_ID.fullmatch(name):
            if name not in self._channel_ids:
                self._channel_ids.update(self._list_channels())
            if name not in self._channel_ids:
                raise PermanentError(
                    "channel_not_found", vendor=self.vendor, code="channel_not_found", status=200
                )
            return self._channel_ids[name]
        return name

    def _list_channels(self) -> dict[str, str]:
        params = {"types": "public_channel,private_channel", "exclude_archived": "true", "limit": "1000"}
        found: dict[str, str] = {}
        for n, row in enumerate(self.paginate("GET", "/conversations.list", CHANNELS, params=params)):
            if n >= CHANNEL_PAGES * 1000:
                break
            found[str(row.get("name"))] = str(row.get("id"))
        return found

    def find_message(self, channel: str, key: str, since: float) -> str | None:
        """The ts of the message in `channel` (name or id) that carries effect `key` in its
        metadata, posted after `since` (Unix seconds); None when the channel has none since then.

        Raises a `VendorError` when it cannot tell (channel_not_found, not_in_channel,
        missing_scope, an outage, or more messages since then than it reads): the caller must
        then not take the message for missing.
        """
        params = {
            "channel": self.channel_id(channel),
            "oldest": f"{since:.6f}",
            "include_all_metadata": "true",
            "limit": str(HISTORY_PAGE),
        }
        for n, message in enumerate(self.paginate("GET", "/conversations.history", HISTORY, params=params)):
            if n >= HISTORY_PAGE * HISTORY_PAGES:
                raise PermanentError(
                    f"more than {n} messages since the attempt: not looked further",
                    vendor=self.vendor,
                    code="history_too_deep",
                )
            meta = message.get("metadata") if isinstance(message, dict) else None
            ours = isinstance(meta, dict) and meta.get("event_type") == METADATA_EVENT
            payload = meta.get("event_payload") if ours and isinstance(meta, dict) else None
            if isinstance(payload, dict) and payload.get("effect_key") == key:
                return str(message.get("ts", ""))
        return None


class SlackChannel:
    """`slack:<channel>` routes: a bot's messages, which carry their key, so the channel can be looked at."""

    type: ClassVar[str] = "slack"
    target: ClassVar[str] = "slack"
    secrets: ClassVar[tuple[Secret, ...]] = (SLACK_TOKEN,)
    can_look: ClassVar[bool] = True
    dedupes: ClassVar[bool] = False  # Slack keeps the key with the message but takes a repeat

    def __init__(self, clients: Channels) -> None:
        self.clients = clients

    def api(self, channel: str) -> SlackAPI:
        """One client per channel: its limiter keeps to that channel's pace."""
        token = self.clients.secrets.get(SLACK_TOKEN.name)
        if not token:
            raise ConfigError("notify: a route names slack:... but SLACK_BOT_TOKEN is not set")
        base = self.clients.settings.notify.slack_api_base
        return self.clients.client(
            f"slack:{channel}", lambda: SlackAPI(token, base, **self.clients.http_kw())
        )

    def send(self, message: Message, attempt: Attempt) -> str:
        content = build(lambda: message.renderer.team_slack(message.kind, message.context()))
        client = self.api(message.to)
        attempt()
        return client.post_message(message.to, content.text, content.blocks, key=message.key)

    def look(self, message: Message) -> Looked:
        claimed = message.ledger.effect_claimed_at(message.key)
        since = (claimed or datetime.now(UTC) - SLACK_LOOK_BACK) - SLACK_CLOCK_MARGIN
        try:
            ts = self.api(message.to).find_message(message.to, message.key, since.timestamp())
        except (VendorError, ConfigError) as exc:  # cannot tell: never taken for "not sent"
            return Looked(None, reason=f"the lookup failed: {describe(exc)}")
        return Looked(True, ts) if ts else Looked(False)

    def breaker(self, message: Message) -> str:
        return message.planned.channel  # one channel's refusal leaves the others going
