"""A faithful in-memory Pipedrive (reference/third-party-apis.md, section 2).

v2 persons and deals (create, PATCH, get, cursor-paged list, search with exact_match over
email / custom_fields / name), v1 notes, dealFields/personFields (start/limit pages),
pipelines, stages and users/me; the `{"success":false,"error",...}` envelope; the API token
in `x-api-token` (or `?api_token=`); the per-token burst limit over a rolling 2 seconds (with
a lower one for search) and a daily token budget, both enforced with a 429 and the
x-ratelimit-* / x-daily-requests-left headers.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from stripeflow.testing.vendor import Call, Clock, FakeVendor, Fault, RollingWindow, respond

# Token cost per call (apis.io figures, reference [S]): search 40, list 20, write 10, get 2.
COSTS = {"search": 40, "list": 20, "write": 10, "get": 2}


def ok(data: Any, additional: dict[str, Any] | None = None, status: int = 200) -> httpx.Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if additional is not None:
        body["additional_data"] = additional
    return respond(status, body)


def fail(status: int, message: str, info: str = "") -> httpx.Response:
    return respond(
        status,
        {
            "success": False,
            "error": message,
            "errorCode": status,
            "error_info": info or "Please check developers.pipedrive.com",
            "data": None,
        },
    )


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakePipedrive(FakeVendor):
    def __init__(
        self,
        token: str = "pd-fake",
        *,
        burst: int = 20,
        search_burst: int = 10,
        daily_tokens: int = 1_000_000,
        clock: Clock = time.monotonic,
        latency: float = 0.0,
    ) -> None:
        super().__init__(clock, latency)
        self.token = token
        self.window = RollingWindow(burst, 2.0, clock)
        self.search_window = RollingWindow(search_burst, 2.0, clock)
        self.daily_tokens = daily_tokens
        self.tokens_used = 0
        self.persons: dict[int, dict[str, Any]] = {}
        self.deals: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.fields: dict[str, list[dict[str, Any]]] = {
            "dealFields": [
                {"id": 1, "key": "title", "name": "Title", "field_type": "varchar"},
                {"id": 2, "key": "value", "name": "Value", "field_type": "monetary"},
                {"id": 3, "key": "expected_close_date", "name": "Expected close date", "field_type": "date"},
            ],
            "personFields": [
                {"id": 1, "key": "name", "name": "Name", "field_type": "varchar"},
                {"id": 2, "key": "email", "name": "Email", "field_type": "varchar"},
            ],
        }
        self.pipelines: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "Pipeline", "active": True}}
        self.stages: dict[int, dict[str, Any]] = {
            i + 1: {"id": i + 1, "name": n, "pipeline_id": 1, "order_nr": i}
            for i, n in enumerate(["Qualified", "Contact Made", "Proposal Made", "Negotiations Started"])
        }
        self._next = 100
        self.route(
            "GET", r"/v1/users/me", lambda c: ok({"id": 1, "email": "owner@example.com", "name": "Owner"})
        )
        self.route("GET", r"/api/v2/persons/search", lambda c: self.search(c, self.persons, "person"))
        self.route("GET", r"/api/v2/deals/search", lambda c: self.search(c, self.deals, "deal"))
        self.route("POST", r"/api/v2/persons", self.create_person)
        self.route("PATCH", r"/api/v2/persons/(?P<id>\d+)", self.patch_person)
        self.route("GET", r"/api/v2/persons/(?P<id>\d+)", lambda c: self.get(c, self.persons, "Person"))
        self.route("GET", r"/api/v2/persons", lambda c: self.list_v2(c, self.persons))
        self.route("POST", r"/api/v2/deals", self.create_deal)
        self.route("PATCH", r"/api/v2/deals/(?P<id>\d+)", self.patch_deal)
        self.route("GET", r"/api/v2/deals/(?P<id>\d+)", lambda c: self.get(c, self.deals, "Deal"))
        self.route("GET", r"/api/v2/deals", lambda c: self.list_v2(c, self.deals))
        self.route("POST", r"/v1/notes", self.create_note)
        self.route("GET", r"/v1/notes", self.list_notes)
        self.route("GET", r"/v1/(?P<kind>dealFields|personFields)", self.list_fields)
        self.route("POST", r"/v1/(?P<kind>dealFields|personFields)", self.create_field)
        self.route("GET", r"/v1/pipelines", lambda c: ok(list(self.pipelines.values())))
        self.route("POST", r"/v1/pipelines", self.create_pipeline)
        self.route("GET", r"/v1/stages", self.list_stages)
        self.route("POST", r"/v1/stages", self.create_stage)

    # -- auth, limits, faults ------------------------------------------------------------------

    def authorize(self, call: Call) -> httpx.Response | None:
        if (call.headers.get("x-api-token") or call.params.get("api_token")) != self.token:
            return fail(401, "unauthorized access")
        return None

    def cost(self, call: Call) -> int:
        if call.path.endswith("/search"):
            return COSTS["search"]
        if call.method != "GET":
            return COSTS["write"]
        return COSTS["get"] if call.path.rstrip("/").split("/")[-1].isdigit() else COSTS["list"]

    def limit_headers(self, window: RollingWindow) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(window.limit),
            "x-ratelimit-remaining": str(window.remaining()),
            "x-ratelimit-reset": str(math.ceil(window.reset_in())),
            "x-daily-requests-left": str(max(0, self.daily_tokens - self.tokens_used)),
        }

    def over_limit(self, window: RollingWindow) -> httpx.Response:
        r = fail(
            429,
            "Request over limit",
            "Rate limit exceeded: see developers.pipedrive.com/docs/api/v1/#/rate-limiting",
        )
        r.headers.update(self.limit_headers(window))
        return r

    def admit(self, call: Call) -> httpx.Response | None:
        cost = self.cost(call)
        if self.tokens_used + cost > self.daily_tokens:
            r = fail(429, "Daily token budget exhausted")
            r.headers.update(self.limit_headers(self.window))
            r.headers["x-daily-requests-left"] = "0"
            return r
        if not self.window.admit():
            return self.over_limit(self.window)
        if call.path.endswith("/search") and not self.search_window.admit():
            return self.over_limit(self.search_window)
        self.tokens_used += cost
        return None

    def fault_body(self, status: int) -> Fault:
        if status == 429:
            return Fault(
                429,
                {"success": False, "error": "Request over limit", "errorCode": 429, "data": None},
                {
                    "x-ratelimit-limit": str(self.window.limit),
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": "2",
                },
            )
        if status == 401:
            return Fault(
                401, {"success": False, "error": "unauthorized access", "errorCode": 401, "data": None}
            )
        return Fault(
            status, {"success": False, "error": "Internal server error", "errorCode": status, "data": None}
        )

    def not_found(self, call: Call) -> httpx.Response:
        return fail(404, f"Unknown method {call.method} {call.path}")

    # -- records -------------------------------------------------------------------------------

    def new_id(self) -> int:
        self._next += 1
        return self._next

    def get(self, call: Call, table: dict[int, dict[str, Any]], what: str) -> httpx.Response:
        rec = table.get(int(call.match["id"]))
        return ok(rec) if rec else fail(404, f"{what} not found")

    def list_v2(self, call: Call, table: dict[int, dict[str, Any]]) -> httpx.Response:
        limit = min(int(call.params.get("limit", 100)), 500)
        start = int(call.params.get("cursor") or 0)
        ids = sorted(table)[start : start + limit]
        nxt = str(start + limit) if start + limit < len(table) else None
        return ok([table[i] for i in ids], {"next_cursor": nxt})

    def search(self, call: Call, table: dict[int, dict[str, Any]], kind: str) -> httpx.Response:
        term = call.params.get("term", "")
        if len(term) < 2:
            return fail(400, "term must be at least 2 characters long")
        fields = set(
            call.params.get(
                "fields", "email,name,custom_fields" if kind == "person" else "title,custom_fields"
            ).split(",")
        )
        exact = call.params.get("exact_match") == "true"

        def hit(value: Any) -> bool:
            text = str(value).lower()
            return text == term.lower() if exact else term.lower() in text

        found = []
        for rec in table.values():
            values: list[Any] = []
            if "email" in fields:
                values += [e["value"] for e in rec.get("emails") or []]
            if "name" in fields:
                values.append(rec.get("name"))
            if "title" in fields:
                values.append(rec.get("title"))
            if "custom_fields" in fields:
                values += [v for v in (rec.get("custom_fields") or {}).values() if v is not None]
            if any(hit(v) for v in values):
                found.append(rec)
        limit = min(int(call.params.get("limit", 100)), 500)
        start = int(call.params.get("cursor") or 0)
        page = found[start : start + limit]
        items = []
        for rec in page:
            if kind == "person":
                item = {
                    "id": rec["id"],
                    "type": "person",
                    "name": rec["name"],
                    "emails": [e["value"] for e in rec.get("emails") or []],
                    "phones": [],
                    "owner": {"id": 1},
                    "organization": None,
                    "custom_fields": [v for v in rec["custom_fields"].values() if v is not None],
                    "notes": [],
                }
            else:
                item = {
                    "id": rec["id"],
                    "type": "deal",
                    "title": rec["title"],
                    "value": rec["value"],
                    "currency": rec["currency"],
                    "status": rec["status"],
                    "owner": {"id": 1},
                    "stage": {"id": rec["stage_id"], "name": self.stages[rec["stage_id"]]["name"]},
                    "person": {"id": rec["person_id"]} if rec.get("person_id") else None,
                    "custom_fields": [v for v in rec["custom_fields"].values() if v is not None],
                }
            items.append({"result_score": 1.0, "item": item})
        nxt = str(start + limit) if start + limit < len(found) else None
        return ok({"items": items}, {"next_cursor": nxt})

    def known_keys(self, kind: str) -> set[str]:
        return {f["key"] for f in self.fields[kind]}

    def create_person(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("name"):
            return fail(400, "Name must be given")
        bad = set(body.get("custom_fields") or {}) - self.known_keys("personFields")
        if bad:
            return fail(400, f"Unknown custom field key {sorted(bad)[0]}")
        pid = self.new_id()
        self.persons[pid] = {
            "id": pid,
            "name": body["name"],
            "emails": body.get("emails") or [],
            "owner_id": 1,
            "add_time": now(),
            "update_time": now(),
            "custom_fields": dict(body.get("custom_fields") or {}),
        }
        return ok(self.persons[pid])

    def patch_person(self, call: Call) -> httpx.Response:
        rec = self.persons.get(int(call.match["id"]))
        if rec is None:
            return fail(404, "Person not found")
        body = call.json() or {}
        custom = body.pop("custom_fields", None) or {}
        rec.update(body)
        rec["custom_fields"].update(custom)
        rec["update_time"] = now()
        return ok(rec)

    def validate_deal(self, body: dict[str, Any]) -> httpx.Response | None:
        if "stage_id" in body and int(body["stage_id"]) not in self.stages:
            return fail(400, f"Stage with id {body['stage_id']} does not exist")
        if "pipeline_id" in body and int(body["pipeline_id"]) not in self.pipelines:
            return fail(400, f"Pipeline with id {body['pipeline_id']} does not exist")
        if (
            "stage_id" in body
            and "pipeline_id" in body
            and self.stages[int(body["stage_id"])]["pipeline_id"] != int(body["pipeline_id"])
        ):
            return fail(400, "Stage does not belong to the given pipeline")
        if body.get("status", "open") not in ("open", "won", "lost"):
            return fail(400, "status must be one of open, won, lost")
        if "value" in body and not isinstance(body["value"], int | float):
            return fail(400, "value must be a number")
        if (
            "person_id" in body
            and body["person_id"] is not None
            and int(body["person_id"]) not in self.persons
        ):
            return fail(400, f"Person with id {body['person_id']} does not exist")
        bad = set(body.get("custom_fields") or {}) - self.known_keys("dealFields")
        if bad:
            return fail(400, f"Unknown custom field key {sorted(bad)[0]}")
        return None

    def create_deal(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("title"):
            return fail(400, "Title must be given")
        problem = self.validate_deal(body)
        if problem:
            return problem
        did = self.new_id()
        stage_id = int(
            body.get("stage_id")
            or min(s for s in self.stages if self.stages[s]["pipeline_id"] == int(body.get("pipeline_id", 1)))
        )
        self.deals[did] = {
            "id": did,
            "title": body["title"],
            "value": body.get("value", 0),
            "currency": body.get("currency", "EUR"),
            "person_id": body.get("person_id"),
            "pipeline_id": self.stages[stage_id]["pipeline_id"],
            "stage_id": stage_id,
            "status": body.get("status", "open"),
            "add_time": now(),
            "update_time": now(),
            "custom_fields": dict(body.get("custom_fields") or {}),
        }
        self.deals[did].update({k: v for k, v in body.items() if k not in self.deals[did]})
        return ok(self.deals[did])

    def patch_deal(self, call: Call) -> httpx.Response:
        rec = self.deals.get(int(call.match["id"]))
        if rec is None:
            return fail(404, "Deal not found")
        body = call.json() or {}
        problem = self.validate_deal(body)
        if problem:
            return problem
        custom = body.pop("custom_fields", None) or {}
        rec.update(body)
        rec["custom_fields"].update(custom)
        rec["update_time"] = now()
        return ok(rec)

    def create_note(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("content"):
            return fail(400, "Note content must be given")
        if not any(body.get(k) for k in ("deal_id", "person_id", "org_id", "lead_id", "project_id")):
            return fail(400, "Note must be attached to a deal, person, organization, lead or project")
        if body.get("deal_id") and int(body["deal_id"]) not in self.deals:
            return fail(400, f"Deal with id {body['deal_id']} does not exist")
        nid = self.new_id()
        self.notes[nid] = {
            "id": nid,
            "content": body["content"],
            "deal_id": body.get("deal_id"),
            "person_id": body.get("person_id"),
            "add_time": now(),
            "pinned_to_deal_flag": bool(body.get("pinned_to_deal_flag")),
        }
        return ok(self.notes[nid], status=201)

    def list_notes(self, call: Call) -> httpx.Response:
        """`GET /v1/notes?deal_id=&start=&limit=&sort=`: v1 start/limit pages, `sort` like `id ASC`."""
        rows = [
            n
            for n in self.notes.values()
            if all(
                str(n.get(k)) == call.params[k]
                for k in ("deal_id", "person_id", "org_id")
                if k in call.params
            )
        ]
        field, _, direction = call.params.get("sort", "id ASC").partition(" ")
        rows.sort(key=lambda n: n.get(field) or 0, reverse=direction.upper() == "DESC")
        start, limit = int(call.params.get("start", 0)), min(int(call.params.get("limit", 100)), 500)
        more = start + limit < len(rows)
        return ok(
            rows[start : start + limit],
            {
                "pagination": {
                    "start": start,
                    "limit": limit,
                    "more_items_in_collection": more,
                    **({"next_start": start + limit} if more else {}),
                }
            },
        )

    # -- fields, pipelines, stages (v1, start/limit pages) ---------------------------------------

    def list_fields(self, call: Call) -> httpx.Response:
        items = self.fields[call.match["kind"]]
        start, limit = int(call.params.get("start", 0)), min(int(call.params.get("limit", 100)), 500)
        more = start + limit < len(items)
        return ok(
            items[start : start + limit],
            {
                "pagination": {
                    "start": start,
                    "limit": limit,
                    "more_items_in_collection": more,
                    **({"next_start": start + limit} if more else {}),
                }
            },
        )

    def create_field(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        items = self.fields[call.match["kind"]]
        key = hashlib.sha1(f"{call.match['kind']}:{body.get('name')}:{len(items)}".encode()).hexdigest()
        field = {
            "id": len(items) + 1,
            "key": key,
            "name": body.get("name"),
            "field_type": body.get("field_type", "varchar"),
        }
        items.append(field)
        return ok(field, status=201)

    def create_pipeline(self, call: Call) -> httpx.Response:
        pid = max(self.pipelines) + 1
        self.pipelines[pid] = {"id": pid, "name": (call.json() or {}).get("name"), "active": True}
        return ok(self.pipelines[pid], status=201)

    def list_stages(self, call: Call) -> httpx.Response:
        pid = call.params.get("pipeline_id")
        return ok([s for s in self.stages.values() if pid is None or s["pipeline_id"] == int(pid)])

    def create_stage(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if int(body.get("pipeline_id", 0)) not in self.pipelines:
            return fail(400, "Pipeline does not exist")
        sid = max(self.stages) + 1
        self.stages[sid] = {
            "id": sid,
            "name": body.get("name"),
            "pipeline_id": int(body["pipeline_id"]),
            "order_nr": sid,
        }
        return ok(self.stages[sid], status=201)

    # -- what tests read -----------------------------------------------------------------------

    def deal_key(self) -> str:
        return next(f["key"] for f in self.fields["dealFields"] if f["name"] == "Stripe payment id")

    def deal_by_payment(self, payment_id: str) -> dict[str, Any] | None:
        key = self.deal_key()
        return next((d for d in self.deals.values() if d["custom_fields"].get(key) == payment_id), None)

    def stage_name(self, stage_id: int) -> str:
        return str(self.stages[stage_id]["name"])

    def ready(self, stage_names: list[str] | None = None) -> FakePipedrive:
        """As `stripeflow crm setup pipedrive` leaves it: fields, a "Stripe" pipeline and its stages."""
        from stripeflow.core.config import STAGE_NAMES

        for kind, name in (("dealFields", "Stripe payment id"), ("personFields", "Stripe customer id")):
            body = json.dumps({"name": name, "field_type": "varchar"}).encode()
            self.create_field(Call("POST", "", {}, httpx.Headers(), body, {"kind": kind}, httpx.URL("/")))
        self.pipelines[2] = {"id": 2, "name": "Stripe", "active": True}
        for name in dict.fromkeys(stage_names or list(STAGE_NAMES["pl"].values())):
            sid = max(self.stages) + 1
            self.stages[sid] = {"id": sid, "name": name, "pipeline_id": 2, "order_nr": sid}
        return self
