"""A faithful in-memory Pipedrive (reference/third-party-apis.md, section 2 and its corrections).

v2 persons and deals (create, PATCH, get, cursor-paged list, search with exact_match over
email / custom_fields / name, optionally lagging fresh records by `search_lag` seconds), v1 notes,
v2 pipelines, stages and deal/person fields (cursor pages; the v1 field lists stay, start/limit),
users/me; the `{"success":false,"error",...}` envelope; the API token in `x-api-token` (or
`?api_token=`). `/v1/pipelines` and `/v1/stages` are out of support since 2026-08-01 and answer
410 here, as a removed endpoint would.

Limits: the per-token burst limit over a rolling 2 seconds (a lower one for search) and the daily
token budget, both a 429; every answer carries `x-ratelimit-limit|remaining|reset` and
`x-daily-ratelimit-token-remaining`. A client that keeps sending into 429s (`cloudflare_after`
of them within `cloudflare_window` seconds, no success between) is blocked by Cloudflare for
`cloudflare_block` seconds: a 403 with an HTML page, whatever it sends [U: the threshold is not
published; these defaults are a guess].
Custom field values are checked as Pipedrive types them: a number for `double`, `YYYY-MM-DD` for
`date`, at most 255 characters for `varchar`.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import httpx

from stripeflow.testing.vendor import Call, Clock, FakeVendor, Fault, Logged, RollingWindow, respond

# Token cost per call (apis.io figures, reference [S]): search 40, list 20, write 10, get 2.
COSTS = {"search": 40, "list": 20, "write": 10, "get": 2}
# what `POST /api/v2/dealFields` accepts as `field_type` (client-nodejs AddDealFieldRequest)
FIELD_TYPES = frozenset(
    "varchar text double phone date daterange time timerange set enum varchar_auto address monetary org "
    "people user".split()
)


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


CLOUDFLARE_PAGE = """<!DOCTYPE html>
<html lang="en-US"><head><title>Attention Required! | Cloudflare</title></head>
<body><div id="cf-wrapper"><h1>Sorry, you have been blocked</h1>
<h2>You are unable to access api.pipedrive.com</h2>
<p>Cloudflare Ray ID: <strong>{ray}</strong></p></div></body></html>
"""
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
VARCHAR_MAX = 255  # a "Text" custom field; "Large text" (`text`) holds far more

# standard fields every account lists next to its custom ones (v2 `is_custom_field: false`)
STANDARD = {
    "dealFields": [
        ("title", "Title", "varchar"),
        ("value", "Value", "monetary"),
        ("currency", "Currency", "varchar"),
        ("status", "Status", "status"),
        ("expected_close_date", "Expected close date", "date"),
        ("won_time", "Won time", "date"),
        ("person_id", "Contact person", "people"),
    ],
    "personFields": [
        ("name", "Name", "varchar"),
        ("emails", "Email", "varchar"),
        ("phones", "Phone", "phone"),
        ("org_id", "Organization", "org"),
    ],
}


class Cloudflare:
    """Pipedrive's edge: too many 429s in a row and every request is refused for a while."""

    def __init__(self, after: int, window: float, block: float, clock: Clock) -> None:
        self.after = after
        self.window = window
        self.block = block
        self.clock = clock
        self.refused: deque[float] = deque()  # times of the 429s since the last success
        self.until = 0.0
        self.blocks = 0

    def blocked(self) -> bool:
        return self.clock() < self.until

    def saw(self, status: int) -> None:
        now = self.clock()
        if status != 429:
            if status < 400:
                self.refused.clear()
            return
        self.refused.append(now)
        while self.refused and self.refused[0] <= now - self.window:
            self.refused.popleft()
        if len(self.refused) >= self.after:
            self.until = now + self.block
            self.blocks += 1
            self.refused.clear()

    def page(self) -> httpx.Response:
        ray = hashlib.sha1(str(self.clock()).encode()).hexdigest()[:16]
        return httpx.Response(
            403,
            text=CLOUDFLARE_PAGE.format(ray=ray),
            headers={"content-type": "text/html; charset=UTF-8", "server": "cloudflare", "cf-ray": ray},
        )


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
        search_lag: float = 0.0,
        cloudflare_after: int = 20,
        cloudflare_window: float = 60.0,
        cloudflare_block: float = 600.0,
    ) -> None:
        super().__init__(clock, latency)
        self.token = token
        self.search_lag = search_lag  # seconds before a new person or deal shows in search
        self.cloudflare = Cloudflare(cloudflare_after, cloudflare_window, cloudflare_block, clock)
        self.created_at: dict[int, float] = {}  # record id -> when it was made, by the fake's clock
        self.window = RollingWindow(burst, 2.0, clock)
        self.search_window = RollingWindow(search_burst, 2.0, clock)
        self.daily_tokens = daily_tokens
        self.tokens_used = 0
        self.persons: dict[int, dict[str, Any]] = {}
        self.deals: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.fields: dict[str, list[dict[str, Any]]] = {
            kind: [
                {"id": i + 1, "key": key, "name": name, "field_type": ftype, "is_custom": False}
                for i, (key, name, ftype) in enumerate(standard)
            ]
            for kind, standard in STANDARD.items()
        }
        self.pipelines: dict[int, dict[str, Any]] = {
            1: {"id": 1, "name": "Pipeline", "order_nr": 1, "is_deleted": False}
        }
        self.stages: dict[int, dict[str, Any]] = {}
        for i, n in enumerate(["Qualified", "Contact Made", "Proposal Made", "Negotiations Started"]):
            self.stages[i + 1] = {"id": i + 1, "name": n, "pipeline_id": 1, "order_nr": i}
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
        self.route("GET", r"/api/v2/(?P<kind>dealFields|personFields)", self.list_fields_v2)
        self.route("POST", r"/api/v2/(?P<kind>dealFields|personFields)", self.create_field_v2)
        self.route("GET", r"/api/v2/pipelines", self.list_pipelines)
        self.route("POST", r"/api/v2/pipelines", self.create_pipeline)
        self.route("GET", r"/api/v2/stages", self.list_stages)
        self.route("POST", r"/api/v2/stages", self.create_stage)
        for method in ("GET", "POST", "PUT", "DELETE"):
            self.route(method, r"/v1/(?P<gone>pipelines|stages)(/.*)?", self.removed)

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

    def budget_left(self) -> int:
        return max(0, self.daily_tokens - self.tokens_used)

    def limit_headers(self, window: RollingWindow) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(window.limit),
            "x-ratelimit-remaining": str(window.remaining()),
            "x-ratelimit-reset": str(math.ceil(window.reset_in())),
            "x-daily-ratelimit-token-remaining": str(self.budget_left()),
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
        if self.tokens_used >= self.daily_tokens:  # the call that crosses the budget still runs
            # the burst window may well be free: only the daily header says to stop for the day
            r = fail(429, "Daily token budget exhausted", "The budget resets at the start of the next day")
            r.headers.update(self.limit_headers(self.window))
            return r
        if not self.window.admit():
            return self.over_limit(self.window)
        if call.path.endswith("/search") and not self.search_window.admit():
            return self.over_limit(self.search_window)
        self.tokens_used += cost
        return None

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Cloudflare answers first while a block lasts; every answer carries the limit headers."""
        with self.lock:
            if self.cloudflare.blocked():
                response = self.cloudflare.page()
                self.log.append(Logged(request.method, request.url.path, self.clock(), 403, "cloudflare"))
                return response
            response = super().handle(request)
            self.cloudflare.saw(response.status_code)
            for header, value in self.limit_headers(self.window).items():
                response.headers.setdefault(header, value)
            return response

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
        """`GET /api/v2/deals|persons`: read from the records, never lagging like search;
        `sort_by` id / add_time (ids grow with time here), `sort_direction`, `pipeline_id`."""
        if call.params.get("sort_by", "id") not in ("id", "add_time", "update_time"):
            return fail(400, "sort_by must be one of id, update_time, add_time")
        rows = [table[i] for i in sorted(table, reverse=call.params.get("sort_direction") == "desc")]
        if "pipeline_id" in call.params:
            rows = [r for r in rows if str(r.get("pipeline_id")) == call.params["pipeline_id"]]
        return self.cursor_page(call, rows)

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
            if self.clock() - self.created_at.get(rec["id"], -math.inf) < self.search_lag:
                continue  # the search index has not caught up with this record yet
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
                    "phones": [p["value"] for p in rec.get("phones") or []],
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
        return {f["key"] for f in self.fields[kind] if f.get("is_custom", True)}

    def bad_custom(self, kind: str, custom: dict[str, Any]) -> httpx.Response | None:
        """An unknown key, or a value the field's type refuses, as Pipedrive answers it."""
        types = {f["key"]: f["field_type"] for f in self.fields[kind] if f.get("is_custom", True)}
        for key, value in custom.items():
            if key not in types:
                return fail(400, f"Unknown custom field key {key}")
            if value is None:
                continue  # null clears a field
            ftype = types[key]
            if ftype in ("double", "monetary") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                return fail(400, f"Custom field {key} must be a number, got {value!r}")
            if ftype == "date" and not (isinstance(value, str) and DATE.fullmatch(value)):
                return fail(400, f"Custom field {key} must be a date (YYYY-MM-DD), got {value!r}")
            if ftype == "varchar" and len(str(value)) > VARCHAR_MAX:
                return fail(400, f"Custom field {key} holds at most {VARCHAR_MAX} characters")
        return None

    def stamp(self, rec_id: int) -> None:
        self.created_at[rec_id] = self.clock()

    def create_person(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("name"):
            return fail(400, "Name must be given")
        problem = self.bad_custom("personFields", body.get("custom_fields") or {})
        if problem:
            return problem
        pid = self.new_id()
        self.stamp(pid)
        self.persons[pid] = {
            "id": pid,
            "name": body["name"],
            "emails": body.get("emails") or [],
            "phones": body.get("phones") or [],
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
        problem = self.bad_custom("personFields", custom)
        if problem:
            return problem
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
        return self.bad_custom("dealFields", body.get("custom_fields") or {})

    def create_deal(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("title"):
            return fail(400, "Title must be given")
        problem = self.validate_deal(body)
        if problem:
            return problem
        did = self.new_id()
        self.stamp(did)
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

    # -- fields (v1 start/limit pages, v2 cursor pages), pipelines and stages (v2) ---------------

    def list_fields(self, call: Call) -> httpx.Response:
        items = [
            {k: v for k, v in f.items() if k != "is_custom"} | {"edit_flag": f["is_custom"]}
            for f in self.fields[call.match["kind"]]
        ]
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

    def _add_field(self, kind: str, name: Any, field_type: Any) -> dict[str, Any]:
        items = self.fields[kind]
        key = hashlib.sha1(f"{kind}:{name}:{len(items)}".encode()).hexdigest()
        field = {"id": len(items) + 1, "key": key, "name": name, "field_type": field_type, "is_custom": True}
        items.append(field)
        return field

    def create_field(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        field = self._add_field(call.match["kind"], body.get("name"), body.get("field_type", "varchar"))
        return ok({k: v for k, v in field.items() if k != "is_custom"}, status=201)

    @staticmethod
    def v2_field(f: dict[str, Any]) -> dict[str, Any]:
        return {
            "field_code": f["key"],
            "field_name": f["name"],
            "field_type": f["field_type"],
            "description": None,
            "is_custom_field": f["is_custom"],
            "is_optional_response_field": False,
            "options": None,
            "subfields": None,
        }

    def list_fields_v2(self, call: Call) -> httpx.Response:
        return self.cursor_page(call, [self.v2_field(f) for f in self.fields[call.match["kind"]]])

    def create_field_v2(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("field_name"):
            return fail(400, "field_name is required")
        if body.get("field_type") not in FIELD_TYPES:
            return fail(400, f"field_type must be one of {', '.join(sorted(FIELD_TYPES))}")
        return ok(self.v2_field(self._add_field(call.match["kind"], body["field_name"], body["field_type"])))

    @staticmethod
    def cursor_page(call: Call, rows: list[dict[str, Any]]) -> httpx.Response:
        limit = min(int(call.params.get("limit", 100)), 500)
        start = int(call.params.get("cursor") or 0)  # an opaque string to clients
        nxt = str(start + limit) if start + limit < len(rows) else None
        return ok(rows[start : start + limit], {"next_cursor": nxt})

    def list_pipelines(self, call: Call) -> httpx.Response:
        return self.cursor_page(call, [self.pipelines[i] for i in sorted(self.pipelines)])

    def create_pipeline(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("name"):
            return fail(400, "name is required")
        pid = max(self.pipelines) + 1
        self.pipelines[pid] = {
            "id": pid,
            "name": body["name"],
            "order_nr": pid,
            "is_deleted": False,
            "is_deal_probability_enabled": False,
            "add_time": now(),
            "update_time": now(),
        }
        return ok(self.pipelines[pid])

    def list_stages(self, call: Call) -> httpx.Response:
        pid = call.params.get("pipeline_id")
        rows = [self.stages[i] for i in sorted(self.stages)]
        return self.cursor_page(call, [s for s in rows if pid is None or s["pipeline_id"] == int(pid)])

    def create_stage(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        if not body.get("name"):
            return fail(400, "name is required")
        if int(body.get("pipeline_id") or 0) not in self.pipelines:
            return fail(400, "Pipeline does not exist")
        return ok(self.add_stage(body["name"], int(body["pipeline_id"])))

    def add_stage(self, name: str, pipeline_id: int) -> dict[str, Any]:
        sid = max(self.stages) + 1
        self.stages[sid] = {
            "id": sid,
            "order_nr": sid,
            "name": name,
            "is_deleted": False,
            "deal_probability": 100,
            "pipeline_id": pipeline_id,
            "is_deal_rot_enabled": False,
            "days_to_rotten": None,
            "add_time": now(),
            "update_time": now(),
        }
        return self.stages[sid]

    def removed(self, call: Call) -> httpx.Response:
        gone = call.match["gone"]
        return fail(
            410,
            f"{call.method} /v1/{gone} is no longer available",
            f"Deprecated since 2026-01-01, out of support since 2026-08-01: use /api/v2/{gone}",
        )

    # -- what tests read -----------------------------------------------------------------------

    def deal_key(self) -> str:
        return next(f["key"] for f in self.fields["dealFields"] if f["name"] == "Stripe payment id")

    def deal_by_payment(self, payment_id: str) -> dict[str, Any] | None:
        key = self.deal_key()
        return next((d for d in self.deals.values() if d["custom_fields"].get(key) == payment_id), None)

    def stage_name(self, stage_id: int) -> str:
        return str(self.stages[stage_id]["name"])

    def field_key(self, kind: str, name: str) -> str:
        return next(f["key"] for f in self.fields[kind] if f["name"] == name)

    def ready(self, stage_names: list[str] | None = None, language: str = "pl") -> FakePipedrive:
        """As `stripeflow crm setup pipedrive` leaves it: every custom field (labels in `language`),
        a "Stripe" pipeline and its stages."""
        from stripeflow.core.config import STAGE_NAMES
        from stripeflow.tasks.crm.pipedrive import deal_field_specs, person_field_specs

        for kind, specs in (
            ("dealFields", deal_field_specs(language)),
            ("personFields", person_field_specs(language)),
        ):
            for name, field_type in specs.values():
                self._add_field(kind, name, field_type)
        self.pipelines[2] = {"id": 2, "name": "Stripe", "order_nr": 2, "is_deleted": False}
        for name in dict.fromkeys(stage_names or list(STAGE_NAMES["pl"].values())):
            self.add_stage(name, 2)
        return self
