"""`POST /webhooks/stripe[/<account>]` and `GET /healthz`, as a Starlette app under uvicorn.

Each account has its own route, `/webhooks/stripe/<account>`, checked against that account's
webhook secrets only; `/webhooks/stripe` serves the `default` account (a single-account setup),
or the only one. A Connect event (`account: acct_…`) at a platform's route is stored as the
connected account configured with that id.

The order is the contract: check the size, verify the signature on the raw body with the
stripe library, check the event's shape, store it durably in the inbox, and only then 2xx.
Each failure answers by its cause, with a JSON body naming it:

    400 missing_signature | bad_signature | stale_timestamp | client_disconnected
    400 invalid_json       not JSON, or nested deeper than the parser's recursion limit, or an
                           integer longer than Python's int-string conversion limit
    400 malformed_event    a field the inbox stores has the wrong type or range; the message
                           names the field (see `parse_event`)
    400 unstorable_event   the database refused the event's values although they passed
                           `parse_event` (only this event fails; the others in its commit are stored)
    413 payload_too_large
    503 ledger_unavailable storage down, or no durable write within `bridge.request_deadline`
                           (with Retry-After; Stripe retries; nothing acknowledged is lost)
    404 unknown_account    the route names no configured account, or several accounts are
                           configured and the route names none
    503 not_configured     the account has no webhook secret

The payload is stored as received (the raw, verified text). Valid JSON cannot carry a raw NUL
or a lone surrogate, only their escapes (`\u0000`, `\ud800`), which both databases store as
plain characters; so such events are accepted and kept whole. In the indexed fields (id, type,
object id) they are refused by the charset checks, as PostgreSQL refuses NUL in text.

`GET /healthz` answers 503 when the ledger does not answer or the inbox writer is dead or
stuck; the ledger check runs in a worker thread and is cached for 2 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import stripe
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stripeflow.bridge.inbox_writer import EventRefused, InboxWriter, LedgerUnavailable
from stripeflow.core.accounts import UnknownAccount, accounts, event_account, webhook_account
from stripeflow.core.config import DEFAULT_ACCOUNT, Settings, account_env_suffix
from stripeflow.core.enrichment import health as enrichment_health
from stripeflow.core.ledger import IncomingEvent, Ledger

log = logging.getLogger("stripeflow.bridge")


def problem(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers or None)


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge
    return bytes(body)


def verify(payload: str, header: str | None, secrets: list[str], tolerance: int) -> None:
    """The stripe library's signature check against each configured secret (rotation).

    `stripe.WebhookSignature.verify_header` is the check `stripe.Webhook.construct_event` makes;
    construct_event then builds a StripeObject tree of the whole payload, which the bridge would
    throw away (it stores the raw body): measured, 35% of the bridge's CPU, so it is skipped.
    """
    if not header:
        raise stripe.SignatureVerificationError("No Stripe-Signature header value was provided.", header)
    if not header.isascii():  # hmac.compare_digest raises TypeError on non-ASCII str
        raise stripe.SignatureVerificationError("The Stripe-Signature header is not ASCII.", header)
    error: stripe.SignatureVerificationError | None = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            error = exc
            if "tolerance" in str(exc):  # the timestamp is stale whichever secret signed it
                break
    assert error is not None
    raise error


def signature_problem(exc: stripe.SignatureVerificationError) -> JSONResponse:
    text = str(exc)
    if "No Stripe-Signature header" in text:
        return problem(400, "missing_signature", "The Stripe-Signature header is missing.")
    if "tolerance" in text:
        return problem(
            400,
            "stale_timestamp",
            "The signature's timestamp is older than the tolerance; check the server clock "
            "or whether this is a replay.",
        )
    return problem(
        400,
        "bad_signature",
        "The Stripe-Signature does not match this body with any configured webhook secret.",
    )


# What Stripe sends, with room to spare: ids are `prefix_` + alphanumerics, types dotted words.
EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,251}")  # 255 with the prefix: the column's size
EVENT_TYPE = re.compile(r"[A-Za-z0-9_.]{1,100}")
CONNECT_ID = re.compile(r"acct_[A-Za-z0-9]{1,250}")
OBJECT_ID = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII: no NUL, space, separator, surrogate
# A real date: after Stripe began (2009-01-01) and before 2100-01-01; fits any 64-bit column.
CREATED_MIN, CREATED_MAX = 1_230_768_000, 4_102_444_800


class MalformedEvent(ValueError):
    """The event cannot be stored as it is; the message names the field."""


def parse_event(data: Any, payload: str) -> IncomingEvent:
    """The verified event's indexed fields, each checked for type and range before the write.

    Raises MalformedEvent naming the field. Values are never echoed (they may be huge).
    """
    if not isinstance(data, dict):
        raise MalformedEvent("the body is not a JSON object")
    event_id, type_, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise MalformedEvent("id is not an event id (evt_ and up to 251 letters, digits or _)")
    if not isinstance(type_, str) or not EVENT_TYPE.fullmatch(type_):
        raise MalformedEvent("type is not an event type (up to 100 letters, digits, _ or .)")
    if type(created) is not int:  # bool is an int subclass: refused by the exact check
        raise MalformedEvent("created is not an integer Unix timestamp")
    if not CREATED_MIN <= created < CREATED_MAX:
        raise MalformedEvent("created is not a date between 2009-01-01 and 2100-01-01")
    livemode = data.get("livemode", False)
    if not isinstance(livemode, bool):
        raise MalformedEvent("livemode is not true or false")
    body = data.get("data")
    obj = body.get("object") if isinstance(body, dict) else None
    if not isinstance(obj, dict):
        raise MalformedEvent("data.object is not an object")
    object_id = obj.get("id")
    if object_id is not None and (not isinstance(object_id, str) or not OBJECT_ID.fullmatch(object_id)):
        raise MalformedEvent("data.object.id is not an id (1 to 255 printable ASCII characters)")
    return IncomingEvent(
        event_id=event_id,
        type=type_,
        object_id=object_id,
        created=created,
        livemode=livemode,
        payload=payload,
    )


def decode_json(payload: str) -> Any:
    """json.loads, with every way hostile text can fail it turned into ValueError."""
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError:  # the only other ValueError json.loads raises: Python's int-string limit
        raise ValueError(f"an integer has more than {sys.get_int_max_str_digits():,} digits") from None


class LedgerProbe:
    """Ping and inbox counts in a worker thread, one at a time, cached for `ttl` seconds.

    Health probes then cost the event loop nothing, and a slow GROUP BY over a large inbox or a
    database that hangs holds at most one thread, however many probes arrive.
    """

    def __init__(self, ledger: Ledger, ttl: float = 2.0, timeout: float = 5.0) -> None:
        self.ledger, self.ttl, self.timeout = ledger, ttl, timeout
        self._result: dict[str, Any] | None = None
        self._at = 0.0
        self._running: asyncio.Future[dict[str, Any]] | None = None

    async def check(self) -> dict[str, Any]:
        if self._result is not None and time.monotonic() - self._at < self.ttl:
            return self._result
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._refresh())
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {self.timeout:g} s"}

    async def _refresh(self) -> dict[str, Any]:
        result = await run_in_threadpool(self._probe)
        self._result, self._at = result, time.monotonic()
        return result

    def _probe(self) -> dict[str, Any]:
        try:
            self.ledger.ping()
            return {"ok": True, "inbox": self.ledger.inbox_counts()}
        except SQLAlchemyError as exc:
            return {"ok": False, "error": type(exc).__name__}


def connect_account(data: dict[str, Any]) -> str | None:
    """The connected account a Connect event is for (`account`), checked; None for the others."""
    account = data.get("account")
    if account is not None and (not isinstance(account, str) or not CONNECT_ID.fullmatch(account)):
        raise MalformedEvent("account is not a Stripe account id (acct_ and up to 250 letters or digits)")
    return account


def create_app(settings: Settings, ledger: Ledger, prefect_api_url: str | None = None) -> Starlette:
    found = accounts(settings)
    writer = InboxWriter(ledger, deadline=settings.bridge.request_deadline)
    probe = LedgerProbe(ledger)
    limit = settings.bridge.max_body_bytes
    deadline = settings.bridge.request_deadline
    prefect_state: dict[str, Any] = {"checked": 0.0, "ok": None}

    async def stripe_webhook(request: Request) -> JSONResponse:
        started = time.monotonic()
        try:
            route = webhook_account(found, request.path_params.get("account"))
        except UnknownAccount as exc:
            return problem(404, "unknown_account", f"{exc}.")
        secrets = route.webhook_secrets  # this account's own: another account's signature is refused
        if not secrets:
            where = "STRIPE_WEBHOOK_SECRET" + (
                "" if route.name == DEFAULT_ACCOUNT else f"_{account_env_suffix(route.name)}"
            )
            return problem(
                503,
                "not_configured",
                f"No webhook secret is configured for account {route.name!r} ({where}).",
            )
        try:
            body = await read_body(request, limit)
        except TooLarge:
            return problem(413, "payload_too_large", f"The body is larger than {limit} bytes.")
        except ClientDisconnect:
            return problem(400, "client_disconnected", "The client went away before sending the body.")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            payload = body.decode("utf-8", errors="replace")  # the signature check will refuse it
        try:
            verify(payload, request.headers.get("stripe-signature"), secrets, settings.stripe.tolerance)
        except stripe.SignatureVerificationError as exc:
            return signature_problem(exc)
        try:
            data = decode_json(payload)
        except ValueError as exc:
            return problem(400, "invalid_json", f"The body is not valid JSON: {exc}")
        try:
            event = parse_event(data, payload)
            owner = event_account(found, route, connect_account(data))
        except MalformedEvent as exc:
            return problem(400, "malformed_event", f"Not a Stripe event: {exc}.")
        event = replace(event, account=owner.name)
        try:
            # the rest of the request's deadline, never less than a moment to try
            new = await writer.store(event, max(0.1, deadline - (time.monotonic() - started)))
        except EventRefused as exc:
            return problem(400, "unstorable_event", f"The ledger cannot store this event: {exc}.")
        except LedgerUnavailable as exc:
            log.error("ledger unavailable, answering 503 for %s: %s", event.event_id, exc)
            return problem(
                503,
                "ledger_unavailable",
                f"The event could not be stored ({exc}); retry later.",
                **{"Retry-After": "5"},
            )
        log.debug("stored %s %s (%s)", event.event_id, event.type, "new" if new else "duplicate")
        return JSONResponse({"received": True, "id": event.event_id, "duplicate": not new})

    stripe_health = enrichment_health(settings)

    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {
            "ledger": await probe.check(),
            "writer": writer.health(settings.bridge.writer_stuck_after),
            "prefect": await prefect_health(prefect_api_url, prefect_state),
            "stripe": stripe_health,  # which enrichment works without an API key, and its cost
        }
        ok = checks["ledger"]["ok"] and checks["writer"]["ok"]
        return JSONResponse({"ok": ok, **checks}, 200 if ok else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        yield
        writer.stop()

    app = Starlette(
        routes=[
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/webhooks/stripe/{account}", stripe_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.writer = writer
    return app


async def prefect_health(api_url: str | None, state: dict[str, Any]) -> dict[str, Any]:
    """Is the Prefect API answering? Cached for 2 s so health probes stay cheap."""
    if not api_url:
        return {"ok": None, "detail": "PREFECT_API_URL is not set"}
    if time.monotonic() - state["checked"] > 2:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                response = await client.get(f"{api_url.rstrip('/')}/health")
            state["ok"] = response.status_code == 200
        except httpx.HTTPError:
            state["ok"] = False
        state["checked"] = time.monotonic()
    return {"ok": state["ok"], "url": api_url}
