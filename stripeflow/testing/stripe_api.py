"""A local fake of the Stripe API: the read endpoints enrichment uses, over a `StripeWorld`.

Answers like Stripe: `Request-Id` headers, `{"error": {...}}` bodies with Stripe's types and
codes (401 without a key, 404 `resource_missing`, 429 `rate_limit` past the sandbox's 25
requests a second), `expand[]`, and list objects with `has_more` / `starting_after`.
Reached by stripe-python through `StripeClient(base_addresses={"api": url})`.
"""

from __future__ import annotations

import copy
import re
import secrets
import threading
import time
from collections import deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stripeflow.testing.stripe_events import StripeWorld

COLLECTIONS = {
    "payment_intents": "payment_intent",
    "charges": "charge",
    "customers": "customer",
    "invoices": "invoice",
    "checkout/sessions": "checkout.session",
}


class FakeStripe:
    """`world` is the key's own account; `connected` the accounts of a Connect platform, reached
    with the `Stripe-Account` header (any other account id is refused with 403, as Stripe does)."""

    def __init__(
        self,
        world: StripeWorld | None = None,
        rate_per_second: int = 25,
        connected: dict[str, StripeWorld] | None = None,
    ) -> None:
        self.world = world or StripeWorld()
        self.connected = dict(connected or {})
        self.rate_per_second = rate_per_second
        self.requests: list[tuple[str, str]] = []
        self.callers: list[tuple[str, str, str | None]] = []  # (path, the key's last 4, Stripe-Account)
        self.fail_next: deque[int] = deque()  # statuses to answer with next, for outage tests
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v1/checkout/sessions/{id}/line_items", self.line_items),
                Route("/v1/invoice_payments", self.invoice_payments),
                Route("/v1/{collection:path}/{id}", self.retrieve),
            ]
        )

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def error(
        status: int, type_: str, message: str, code: str | None = None, param: str | None = None
    ) -> JSONResponse:
        body: dict[str, Any] = {"error": {"type": type_, "message": message}}
        if code:
            body["error"].update(
                code=code, doc_url=f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
            )
        if param:
            body["error"]["param"] = param
        return JSONResponse(body, status, headers={"Request-Id": f"req_{secrets.token_hex(7)}"})

    def ok(self, body: Any) -> JSONResponse:
        return JSONResponse(
            body, headers={"Request-Id": f"req_{secrets.token_hex(7)}", "Stripe-Version": "2026-10-28.endive"}
        )

    def gate(self, request: Request) -> JSONResponse | None:
        """Auth, injected faults and the rate limit, checked the way Stripe does, in that order."""
        self.requests.append((request.method, request.url.path))
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self.error(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth.",
            )
        key = auth.removeprefix("Bearer ")
        self.callers.append((request.url.path, key[-4:], request.headers.get("stripe-account")))
        if not key.startswith(("sk_test_", "rk_test_", "sk_live_", "rk_live_")):
            return self.error(
                401,
                "invalid_request_error",
                f"Invalid API Key provided: {key[:8]}****{key[-4:]}",
                code="api_key_invalid",
            )
        with self._lock:
            if self.fail_next:
                status = self.fail_next.popleft()
                if status == 429:
                    return self.error(
                        429, "invalid_request_error", "Request rate limit exceeded.", code="rate_limit"
                    )
                return self.error(status, "api_error", "An unknown error occurred on Stripe's side.")
            now = time.monotonic()
            while self._times and self._times[0] <= now - 1:
                self._times.popleft()
            if len(self._times) >= self.rate_per_second:
                return self.error(
                    429,
                    "invalid_request_error",
                    "Request rate limit exceeded. Learn more about rate limits here "
                    "https://stripe.com/docs/rate-limits.",
                    code="rate_limit",
                )
            self._times.append(now)
        return None

    def world_of(self, request: Request) -> StripeWorld | JSONResponse:
        """The account a request acts on: the key's own, or a connected one (`Stripe-Account`)."""
        account = request.headers.get("stripe-account")
        if account is None:
            return self.world
        if not self.connected:
            return self.error(
                403,
                "invalid_request_error",
                "Only Stripe Connect platforms can work with other accounts. If you specified a "
                "client_id parameter, make sure it's correct. If you need to setup a Stripe Connect "
                "platform, you can do so at https://dashboard.stripe.com/account/applications/settings.",
            )
        if account not in self.connected:
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            return self.error(
                403,
                "invalid_request_error",
                f"The provided key '{key[:8]}****{key[-4:]}' does not have access to account "
                f"'{account}' (or that account does not exist). Application access may have been revoked.",
            )
        return self.connected[account]

    def expand(
        self, obj: dict[str, Any], paths: list[str], world: StripeWorld | None = None
    ) -> dict[str, Any]:
        world = world or self.world
        obj = copy.deepcopy(obj)
        for path in paths:
            head, _, rest = path.partition(".")
            value = obj.get(head)
            if isinstance(value, str) and value in world.objects:
                obj[head] = copy.deepcopy(world.objects[value])
            if rest and isinstance(obj.get(head), dict):
                obj[head] = self.expand(obj[head], [rest], world)
        return obj

    @staticmethod
    def expand_paths(request: Request) -> list[str]:
        """`expand[]=a` or, as stripe-python encodes a list, `expand[0]=a`: Stripe takes both."""
        return [v for k, v in request.query_params.multi_items() if re.fullmatch(r"expand\[\d*\]", k)]

    @staticmethod
    def page(items: list[dict[str, Any]], request: Request, url: str) -> dict[str, Any]:
        limit = min(100, int(request.query_params.get("limit", 10)))
        after = request.query_params.get("starting_after")
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}

    # -- routes --------------------------------------------------------------------------------

    async def retrieve(self, request: Request) -> JSONResponse:
        refused = self.gate(request)
        if refused:
            return refused
        world = self.world_of(request)
        if isinstance(world, JSONResponse):
            return world
        collection, object_id = request.path_params["collection"], request.path_params["id"]
        kind = COLLECTIONS.get(collection)
        obj = world.objects.get(object_id)
        if kind is None:
            return self.error(
                404, "invalid_request_error", f"Unrecognized request URL (GET: {request.url.path})."
            )
        if obj is None or obj.get("object") != kind:
            return self.error(
                404,
                "invalid_request_error",
                f"No such {kind}: '{object_id}'",
                code="resource_missing",
                param="id",
            )
        paths = self.expand_paths(request)
        found = self.expand(obj, paths, world)
        if kind == "customer" and "tax_ids" in paths:  # includable only: absent unless expanded
            data = world.tax_ids.get(object_id, [])
            found["tax_ids"] = {
                "object": "list",
                "data": copy.deepcopy(data),
                "has_more": False,
                "url": f"/v1/customers/{object_id}/tax_ids",
            }
        return self.ok(found)

    async def line_items(self, request: Request) -> JSONResponse:
        refused = self.gate(request)
        if refused:
            return refused
        world = self.world_of(request)
        if isinstance(world, JSONResponse):
            return world
        session_id = request.path_params["id"]
        if session_id not in world.line_items:
            return self.error(
                404,
                "invalid_request_error",
                f"No such checkout.session: '{session_id}'",
                code="resource_missing",
                param="session",
            )
        return self.ok(self.page(world.line_items[session_id], request, request.url.path))

    async def invoice_payments(self, request: Request) -> JSONResponse:
        refused = self.gate(request)
        if refused:
            return refused
        world = self.world_of(request)
        if isinstance(world, JSONResponse):
            return world
        invoice = request.query_params.get("invoice")
        return self.ok(
            self.page(world.invoice_payments.get(invoice or "", []), request, "/v1/invoice_payments")
        )
