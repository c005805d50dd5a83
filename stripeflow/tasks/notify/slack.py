"""Slack: `chat.postMessage` with a bot token (the `slack:<channel>` route), through slack-sdk's
`WebClient`; what both Slack channels share (the incoming webhook is `slack_webhook`).

slack-sdk does the HTTP (urllib) and its retry loop; `SlackRetry`, our one retry handler in it,
keeps our policy: Retry-After through the injected sleep, no blind retry of a post. `SlackClient.call`
is the one place its exceptions and Slack's error codes become our error tree
(`classify_slack_error`). Blocks go out as `slack_sdk.models.blocks` models, checked before sending.

A bot message carries its effect key in its metadata, so `find_message` can tell afterwards
whether Slack has it (conversations.list for the channel's id, then conversations.history):
that is how `SlackChannel.look` settles a message a dead attempt may have posted.

Slack answers most errors with HTTP 200 and `{"ok": false, "error": "..."}` (slack-sdk raises
`SlackApiError`), and 429 carries `Retry-After`.
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.error import HTTPError, URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackObjectFormationError
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryHandler, RetryState
from slack_sdk.models.blocks import Block
from slack_sdk.web import SlackResponse

from stripeflow.core.errors import (
    AuthError,
    ConfigError,
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    RetriableError,
    VendorError,
)
from stripeflow.core.http import Clock, Limiter, Sleep, TokenBucketLimiter, dig, parse_retry_after
from stripeflow.core.redact import hide_in_logs, redact
from stripeflow.tasks.notify.base import Message, Secret, build
from stripeflow.tasks.notify.delivery import Attempt, Looked, describe

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

T = TypeVar("T")
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
        # an incoming webhook's: its URL is revoked, wrong, or its workspace forbids it
        "invalid_token",
        "no_service",
        "no_active_hooks",
        "team_disabled",
        "action_prohibited",
    }
)
RATE_ERRORS = frozenset({"ratelimited", "rate_limited"})
METADATA_EVENT = "stripeflow_message"  # message metadata's event_type for what we post
HISTORY_PAGE = 200  # Slack's advice for conversations.history pages
HISTORY_PAGES = 10  # a look at most this deep; deeper than that it cannot tell, so it does not say "missing"
CHANNEL_PAGES = 20
CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{6,}")  # names are lower-case; ids C…/G…, upper-case
SERVER_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "rollup_error"}
)
MAX_ATTEMPTS = 6  # as every vendor through core.http
MAX_WAIT = 30.0  # a longer Retry-After escapes to the task's declared retries
BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
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


class SlackRetry(RetryHandler):
    """The one retry policy of both Slack clients, run by slack-sdk's own retry loop.

    A 429 waits out its Retry-After through our `sleep` seam (a longer wait than `max_wait`
    is not slept: it escapes as `RateLimitedError` for the task's retries). A connection that
    never opened is tried again; a 5xx or an answer lost after sending is tried again only for
    a read: `unkeyed` tells which requests may have written (Slack dedupes no post).
    """

    def __init__(
        self,
        sleep: Sleep,
        *,
        unkeyed: Callable[[HttpRequest], bool],
        max_attempts: int = MAX_ATTEMPTS,
        max_wait: float = MAX_WAIT,
    ) -> None:
        super().__init__(max_retry_count=max_attempts - 1)
        self.sleep = sleep
        self.unkeyed = unkeyed
        self.max_wait = max_wait

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None:
            if response.status_code == 429:
                return (_retry_after(response.headers) or 0.0) <= self.max_wait
            server_error = response.status_code >= 500 or _answer_code(response) in SERVER_ERRORS
            waited = (_retry_after(response.headers) or 0.0) <= self.max_wait
            return server_error and waited and not self.unkeyed(request)
        if not isinstance(error, (OSError, HTTPException)):  # no connection problem: nothing to retry
            return False
        return not_sent(error) or not self.unkeyed(request)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        wait = _retry_after(response.headers) if response is not None else None
        if wait is None:  # no word from Slack: exponential backoff with jitter
            wait = min(BACKOFF_CAP, BACKOFF_BASE * 2**state.current_attempt) * (0.5 + random.random() / 2)
        self.sleep(wait)
        state.increment_current_attempt()


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    """A header's value from slack-sdk's header dicts (any case; a value or a list of values)."""
    for key, value in headers.items():
        if key.lower() == name:
            return str(value[0] if isinstance(value, list) and value else value)
    return None


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    return parse_retry_after(_header(headers, "retry-after"))


def _answer_code(response: HttpResponse) -> str | None:
    body = response.body
    if body is None and response.data and response.data[:1] == b"{":
        try:
            body = json.loads(response.data)
        except ValueError:
            body = None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error) if error else None


def not_sent(error: BaseException) -> bool:
    """True when the request provably never reached Slack (no connection was made).

    urllib wraps what fails while connecting and sending in `URLError`; a timeout there is the
    connect's (a message this small never blocks the send), so it is safe to send again.
    An answer lost after that (`RemoteDisconnected`, `IncompleteRead`, a read timeout) is not.
    """
    if isinstance(error, HTTPError) or not isinstance(error, URLError):
        return False
    return isinstance(error.reason, (ConnectionRefusedError, socket.gaierror, TimeoutError, ssl.SSLError))


def slack_error(status: int, code: str | None, headers: Mapping[str, Any]) -> VendorError:
    """An answer Slack gave (its status, its error code, its headers) as our error.

    `code` as Slack wrote it (`channel_not_found`); anything else there (a proxy's HTML page,
    slack-sdk's note on a non-JSON body) is not a code, and the status speaks instead.
    """
    bare = code.strip() if code else ""
    return classify_slack_error(
        bare if bare and len(bare) <= 80 and bare.replace("_", "").isalnum() else f"http_{status}",
        vendor="slack",
        status=status,
        wait=_retry_after(headers),
        request_id=_header(headers, "x-slack-req-id"),
    )


def team_blocks(blocks: Sequence[Mapping[str, Any] | Block]) -> list[Block]:
    """The rendered blocks as Block Kit models, checked against Slack's limits before sending.

    A block the models do not know or that breaks a limit raises `ValueError`, so the message
    fails as a build error (dead-lettered with the reason) instead of as Slack's `invalid_blocks`.
    """
    parsed: list[Block] = []
    for raw in blocks:
        block = Block.parse(raw if isinstance(raw, Block) else dict(raw))
        if block is None:
            raise ValueError(f"not a Block Kit block: {raw!r:.80}")
        try:
            block.validate_json()
        except SlackObjectFormationError as exc:
            raise ValueError(f"Block Kit refuses the {block.type} block: {exc}") from exc
        parsed.append(block)
    return parsed


class SlackClient:
    """What both Slack clients share: the per-channel pace, the retry handler, the error mapping.

    slack-sdk speaks urllib, so there is no httpx transport to inject: tests serve the fake over
    real HTTP and point the client at it by its URL.
    """

    vendor: ClassVar[str] = "slack"

    def __init__(
        self,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        limiter: Limiter | None = None,
        timeout: float = 30.0,
        transport: object = None,
    ) -> None:
        if transport is not None:
            raise ConfigError("slack: slack-sdk takes no httpx transport; serve the fake and pass its URL")
        self.sleep = sleep
        self.timeout = max(1, math.ceil(timeout))  # slack-sdk's clients take whole seconds
        self.limiter = limiter or per_channel_limiter(sleep, clock)

    def retry_handlers(self, unkeyed: Callable[[HttpRequest], bool]) -> list[RetryHandler]:
        return [SlackRetry(self.sleep, unkeyed=unkeyed)]

    def call(self, unkeyed: bool, send: Callable[[], T]) -> T:
        """One request through slack-sdk (retried by `SlackRetry`), its failure as our error.

        The one place slack-sdk's exceptions become the error tree: an `ok: false` answer by
        `classify_slack_error`; no answer at all to a post is `OutcomeUnknownError`, as is a
        5xx to one (Slack may have posted it), so the caller looks before it posts again.
        """
        with self.limiter.slot():
            try:
                return send()
            except SlackApiError as exc:
                data = exc.response.data
                code = data.get("error") if isinstance(data, dict) else None
                error = slack_error(exc.response.status_code, code, exc.response.headers)
            except VendorError as exc:  # an answer `send` read itself (the webhook's plain text)
                error = exc
            except SlackClientError as exc:  # slack-sdk refused to send: a non-http(s) URL
                # its message would quote the URL (for a webhook, the secret): the type only
                raise ConfigError(f"slack: slack-sdk refused the request ({type(exc).__name__})") from exc
            except (OSError, HTTPException, json.JSONDecodeError) as exc:  # URLError is an OSError
                what = redact(f"{type(exc).__name__}: {exc}")
                if not_sent(exc):
                    raise RetriableError(f"cannot connect: {what}", vendor=self.vendor) from exc
                if unkeyed:
                    raise OutcomeUnknownError(
                        f"no answer to a post, perhaps after Slack took it: {what}", vendor=self.vendor
                    ) from exc
                raise RetriableError(what, vendor=self.vendor) from exc
        if unkeyed and isinstance(error, RetriableError) and not isinstance(error, RateLimitedError):
            raise OutcomeUnknownError(
                f"a post answered {error.status}, perhaps after Slack took it: {error.message}",
                vendor=self.vendor,
                status=error.status,
                request_id=error.request_id,
                code=error.code,
            ) from error
        raise error

    def close(self) -> None:
        """slack-sdk opens a connection per request: nothing is kept open."""


class SlackAPI(SlackClient):
    """The Web API through slack-sdk's `WebClient`. One client per channel: its limiter keeps
    to Slack's ~1 message a second per channel."""

    def __init__(self, token: str, base_url: str = "https://slack.com/api", **kw: Any) -> None:
        super().__init__(**kw)
        hide_in_logs(token)  # slack-sdk masks the Authorization header; this covers anywhere else
        self.web = WebClient(
            token=token,
            base_url=base_url.rstrip("/") + "/",
            timeout=self.timeout,
            retry_handlers=self.retry_handlers(lambda request: request.url.startswith(self._post_url)),
        )
        self._post_url = self.web.base_url + "chat.postMessage"
        self._channel_ids: dict[str, str] = {}  # channel name -> id, from conversations.list

    def post_message(
        self, channel: str, text: str, blocks: Sequence[Mapping[str, Any] | Block], *, key: str | None = None
    ) -> str:
        """Post; returns the message's `ts` (its id in the channel).

        `key` (our effect key) rides along as message metadata, so the message in the channel
        says which effect it is (Slack keeps metadata with the message; it dedupes nothing).
        """
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"effect_key": key}} if key else None
        models = team_blocks(blocks)
        answer = self.call(
            True,
            lambda: self.web.chat_postMessage(
                channel=channel, text=text, blocks=models or None, metadata=metadata, unfurl_links=False
            ),
        )
        return str(answer.get("ts", ""))

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

    def _pages(self, read: Callable[[str | None], SlackResponse], limit: int) -> Iterator[SlackResponse]:
        """Each page of a cursor-paged method, at most `limit` of them."""
        cursor: str | None = None
        for _ in range(limit):
            page = self.call(False, partial(read, cursor))
            yield page
            cursor = dig(page.data, "response_metadata.next_cursor") or None
            if not cursor:
                return

    def _list_channels(self) -> dict[str, str]:
        found: dict[str, str] = {}

        def read(cursor: str | None) -> SlackResponse:
            return self.web.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
            )

        for page in self._pages(read, CHANNEL_PAGES):
            for row in page.get("channels") or []:
                found[str(row.get("name"))] = str(row.get("id"))
        return found

    def find_message(self, channel: str, key: str, since: float) -> str | None:
        """The ts of the message in `channel` (name or id) that carries effect `key` in its
        metadata, posted after `since` (Unix seconds); None when the channel has none since then.

        Raises a `VendorError` when it cannot tell (channel_not_found, not_in_channel,
        missing_scope, an outage, or more messages since then than it reads): the caller must
        then not take the message for missing.
        """
        channel_id = self.channel_id(channel)

        def read(cursor: str | None) -> SlackResponse:
            return self.web.conversations_history(
                channel=channel_id,
                oldest=f"{since:.6f}",
                include_all_metadata=True,
                limit=HISTORY_PAGE,
                cursor=cursor,
            )

        page: SlackResponse | None = None
        for page in self._pages(read, HISTORY_PAGES):
            for message in page.get("messages") or []:
                meta = message.get("metadata") if isinstance(message, dict) else None
                ours = isinstance(meta, dict) and meta.get("event_type") == METADATA_EVENT
                payload = meta.get("event_payload") if ours and isinstance(meta, dict) else None
                if isinstance(payload, dict) and payload.get("effect_key") == key:
                    return str(message.get("ts", ""))
        if page is not None and dig(page.data, "response_metadata.next_cursor"):
            raise PermanentError(
                f"more than {HISTORY_PAGE * HISTORY_PAGES} messages since the attempt: not looked further",
                vendor=self.vendor,
                code="history_too_deep",
            )
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
        blocks = build(lambda: team_blocks(content.blocks))
        client = self.api(message.to)
        attempt()
        return client.post_message(message.to, content.text, blocks, key=message.key)

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
