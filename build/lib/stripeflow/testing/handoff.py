"""An accounting/ERP endpoint for the hand-off, as the documented contract asks a receiver to be.

    receiver = HandoffReceiver(secret)
    with serve_app(receiver.app()) as url:
        HandoffAPI(f"{url}{receiver.path}", secret)

- Verifies `Stripeflow-Signature` (400 `bad signature` otherwise).
- Dedupes on `Idempotency-Key`: a repeat of a key it already took answers 200 again and adds
  nothing (`accepted` holds one body per key; `attempts` counts every request that arrived).
- Fault injection: `fail_next = [500, 503]` answers the next requests with those statuses
  before looking at them; `down = True` answers 503 to everything until cleared.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripeflow.tasks.notify.handoff import SIGNATURE_HEADER, verify_signature


@dataclass
class HandoffReceiver:
    secret: str
    path: str = "/erp/stripeflow"
    fail_next: list[int] = field(default_factory=list)
    attempts: int = 0
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeats: int = 0  # requests whose Idempotency-Key was already taken (dropped, answered 200)
    bad_signatures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.attempts += 1
                if self.fail_next:
                    return JSONResponse({"error": "busy"}, status_code=self.fail_next.pop(0))
            if not verify_signature(self.secret, request.headers.get(SIGNATURE_HEADER, ""), body):
                self.bad_signatures += 1
                return JSONResponse({"error": "bad signature"}, status_code=400)
            key = request.headers.get("idempotency-key")
            if not key:
                return JSONResponse({"error": "Idempotency-Key is required"}, status_code=400)
            with self._lock:
                if key in self.accepted:
                    self.repeats += 1
                    return JSONResponse({"received": True, "duplicate": True})
                self.accepted[key] = json.loads(body)
            return JSONResponse({"received": True})

        return Starlette(routes=[Route(self.path, receive, methods=["POST"])])
