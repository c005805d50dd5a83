"""`POST /webhooks/stripe` and `GET /healthz`, as a Starlette app under uvicorn.

The order is the contract: check the size, verify the signature on the raw body with the
stripe library, check the event's shape, store it durably in the inbox, and only then 2xx.
Each failure answers by its cause, with a JSON body naming it:

    400 missing_signature | bad_signature | stale_timestamp | invalid_json | malformed_event
    413 payload_too_large
    503 ledger_unavailable (Stripe retries; nothing acknowledged is lost) | not_configured
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import stripe
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stripeflow.bridge.inbox_writer import InboxWriter, LedgerUnavailable
from stripeflow.core.config import Settings
from stripeflow.core.ledger import IncomingEvent, Ledger

log = logging.getLogger("stripeflow.bridge")


def problem(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers or None)


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
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


def parse_event(data: Any, payload: str) -> IncomingEvent:
    """The verified event's indexed fields; ValueError naming what is wrong with its shape."""
    if not isinstance(data, dict):
        raise ValueError("the body is not a JSON object")
    event_id, type_, created = data.get("id"), data.get("type"), data.get("created")
    obj = (data.get("data") or {}).get("object") if isinstance(data.get("data"), dict) else None
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise ValueError("the event has no id starting with evt_")
    if not isinstance(type_, str) or not type_:
        raise ValueError("the event has no type")
    if not isinstance(created, int):
        raise ValueError("the event has no integer created timestamp")
    if not isinstance(obj, dict):
        raise ValueError("the event has no data.object")
    return IncomingEvent(
        event_id=event_id,
        type=type_,
        object_id=obj.get("id"),
        created=created,
        livemode=bool(data.get("livemode")),
        payload=payload,
    )


def create_app(settings: Settings, ledger: Ledger, prefect_api_url: str | None = None) -> Starlette:
    secrets = [s.get_secret_value() for s in settings.stripe.webhook_secrets]
    writer = InboxWriter(ledger)
    limit = settings.bridge.max_body_bytes
    prefect_state: dict[str, Any] = {"checked": 0.0, "ok": None}

    async def stripe_webhook(request: Request) -> JSONResponse:
        if not secrets:
            return problem(503, "not_configured", "No webhook secret is configured (STRIPE_WEBHOOK_SECRET).")
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
            data = json.loads(payload)
        except ValueError as exc:
            return problem(400, "invalid_json", f"The body is not valid JSON: {exc}")
        try:
            event = parse_event(data, payload)
        except ValueError as exc:
            return problem(400, "malformed_event", f"Not a Stripe event: {exc}.")
        try:
            new = await writer.store(event)
        except LedgerUnavailable as exc:
            log.error("ledger unavailable, answering 503 for %s: %s", event.event_id, exc)
            return problem(
                503,
                "ledger_unavailable",
                "The event could not be stored; retry later.",
                **{"Retry-After": "5"},
            )
        log.debug("stored %s %s (%s)", event.event_id, event.type, "new" if new else "duplicate")
        return JSONResponse({"received": True, "id": event.event_id, "duplicate": not new})

    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            ledger.ping()
            checks["ledger"] = {"ok": True, "inbox": ledger.inbox_counts()}
        except SQLAlchemyError as exc:
            checks["ledger"] = {"ok": False, "error": type(exc).__name__}
        checks["prefect"] = await prefect_health(prefect_api_url, prefect_state)
        ok = checks["ledger"]["ok"]
        return JSONResponse({"ok": ok, **checks}, 200 if ok else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        yield
        writer.stop()

    app = Starlette(
        routes=[
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
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
