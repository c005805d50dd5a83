"""A faithful in-memory HubSpot CRM v3/v4 (reference/third-party-apis.md, section 1 and its
corrections).

Objects (contacts, deals, notes) with typed properties, unique-property enforcement, batch
upsert/create/update that fail whole (400, or 409 for a unique value taken) when one input is
invalid and write nothing, search (EQ, IN, HAS_PROPERTY; cursor in the body), cursor-paged
lists, v4 default associations (their batch read is multi-status, 207), properties, property
groups and pipelines APIs, Bearer auth with HubSpot's 401 body, and the ten-secondly rolling
limit (plus the search limit per second) enforced with HubSpot's 429 body and
X-HubSpot-RateLimit-* headers. Batch results come back in reverse order, since HubSpot does
not promise input order.

As HubSpot's own search does, the search here is eventually consistent: a write is visible to
it only `search_lag` seconds later (by the fake's clock; until then search answers from what
the record was before, or not at all), and `IN` on a string property matches the indexed,
lower-cased value, so a mixed-case value never matches. `deal_currency_code` is an enumeration
of the portal's currencies (`currencies`, the company currency first): any other code is
`INVALID_OPTION`, which fails the whole batch.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import httpx

from stripeflow.testing.vendor import Call, Clock, FakeVendor, Fault, RollingWindow, respond

OBJECT_TYPES = ("contacts", "deals", "notes")
# name -> (unique, type, fieldType), as HubSpot defines its own properties
BUILTIN_PROPERTIES: dict[str, dict[str, tuple[bool, str, str]]] = {
    "contacts": {
        "email": (True, "string", "text"),
        "firstname": (False, "string", "text"),
        "lastname": (False, "string", "text"),
        "phone": (False, "string", "phonenumber"),
        "company": (False, "string", "text"),
    },
    "deals": {
        "dealname": (False, "string", "text"),
        "amount": (False, "number", "number"),
        "dealstage": (False, "enumeration", "radio"),
        "pipeline": (False, "enumeration", "select"),
        "closedate": (False, "datetime", "date"),
        "deal_currency_code": (False, "enumeration", "select"),
        "description": (False, "string", "textarea"),
    },
    "notes": {"hs_timestamp": (False, "datetime", "date"), "hs_note_body": (False, "string", "html")},
}
BUILTIN_GROUPS = {
    "contacts": {"contactinformation": "Contact information"},
    "deals": {"dealinformation": "Deal information"},
    "notes": {"engagement": "Engagement"},
}
PROPERTY_TYPES = {"string", "number", "date", "datetime", "enumeration", "bool"}
FIELD_TYPES = {
    "text",
    "textarea",
    "number",
    "date",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "html",
    "file",
    "phonenumber",
    "calculation_equation",
}
CURRENCY_NAMES = {"PLN": "Polish Zloty", "EUR": "Euro", "USD": "US Dollar", "GBP": "British Pound"}
DEFAULT_PIPELINE = [
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
]
ASSOCIATION_TYPES = {
    ("deals", "contacts"): 3,
    ("contacts", "deals"): 4,
    ("notes", "deals"): 214,
    ("deals", "notes"): 213,
    ("notes", "contacts"): 202,
}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_date(value: str, *, midnight: bool) -> bool:
    """A HubSpot date(time) value: epoch milliseconds or ISO 8601; a `date` must be midnight UTC."""
    try:
        if value.isdigit():
            at = datetime.fromtimestamp(int(value) / 1000, UTC)
        elif len(value) == 10:
            at = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        else:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return not midnight or (at.hour, at.minute, at.second, at.microsecond) == (0, 0, 0, 0)


def property_values_not_valid(name: str, code: str, message: str) -> str:
    """HubSpot's message for a property value it refuses: the validation result as JSON."""
    result = {
        "isValid": False,
        "message": message,
        "error": code,
        "name": name,
        "localizedErrorMessage": message,
    }
    return f"Property values were not valid: {json.dumps([result])}"


def refused(problem: tuple[str, str, str]) -> httpx.Response:
    """The whole request refused for one problem: 409 CONFLICT, else 400 with the error's code."""
    category, message, code = problem
    return error(
        409 if category == "CONFLICT" else 400,
        message,
        category,
        errors=[{"message": message, "code": code}],
    )


def error(status: int, message: str, category: str, **extra: Any) -> httpx.Response:
    return respond(
        status,
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        },
    )


class FakeHubSpot(FakeVendor):
    def __init__(
        self,
        token: str = "pat-fake",
        *,
        limit: int = 100,
        period: float = 10.0,
        search_per_second: int = 4,
        daily: int = 250_000,
        clock: Clock = time.monotonic,
        latency: float = 0.0,
        search_lag: float = 2.0,
        currencies: Sequence[str] = ("PLN", "EUR", "USD"),
    ) -> None:
        super().__init__(clock, latency)
        self.token = token
        self.search_lag = search_lag  # seconds before search sees a write (HubSpot: "a few")
        self._indexed: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = {}
        self.window = RollingWindow(limit, period, clock)
        self.search_window = RollingWindow(search_per_second, 1.0, clock)
        self.daily = daily
        self.daily_used = 0
        self.objects: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in OBJECT_TYPES}
        self.properties: dict[str, dict[str, dict[str, Any]]] = {
            t: {
                n: {
                    "name": n,
                    "label": n,
                    "type": type_,
                    "fieldType": field_type,
                    "hasUniqueValue": u,
                    "groupName": next(iter(BUILTIN_GROUPS[t])),
                    "hubspotDefined": True,
                }
                for n, (u, type_, field_type) in props.items()
            }
            for t, props in BUILTIN_PROPERTIES.items()
        }
        self.groups: dict[str, dict[str, dict[str, Any]]] = {
            t: {n: {"name": n, "label": label, "displayOrder": -1} for n, label in groups.items()}
            for t, groups in BUILTIN_GROUPS.items()
        }
        self.set_currencies(currencies)
        self.pipelines: dict[str, dict[str, Any]] = {
            "default": {
                "id": "default",
                "label": "Sales Pipeline",
                "stages": [{"id": s, "label": s, "displayOrder": i} for i, s in enumerate(DEFAULT_PIPELINE)],
            }
        }
        self.associations: set[tuple[str, str, str, str, int]] = set()
        self.index: dict[tuple[str, str], dict[str, str]] = {}  # (type, unique property) -> value -> id
        self._next_id = 1000
        o = r"/crm/v3/objects/(?P<type>contacts|deals|notes)"
        self.route("GET", o, self.list_objects)
        self.route("POST", o, self.create_one)
        self.route("POST", o + "/search", self.search)
        self.route("POST", o + "/batch/upsert", self.batch_upsert)
        self.route("POST", o + "/batch/create", self.batch_create)
        self.route("POST", o + "/batch/read", self.batch_read)
        self.route("POST", o + "/batch/update", self.batch_update)
        self.route("GET", o + r"/(?P<id>[^/]+)", self.get_one)
        self.route("PATCH", o + r"/(?P<id>[^/]+)", self.patch_one)
        self.route(
            "POST",
            r"/crm/v4/associations/(?P<from>\w+)/(?P<to>\w+)/batch/associate/default",
            self.associate_batch,
        )
        self.route(
            "PUT",
            r"/crm/v4/objects/(?P<from>\w+)/(?P<id>\d+)/associations/default/(?P<to>\w+)/(?P<toid>\d+)",
            self.associate_one,
        )
        self.route(
            "GET", r"/crm/v4/objects/(?P<from>\w+)/(?P<id>\d+)/associations/(?P<to>\w+)", self.read_assoc
        )
        self.route(
            "POST", r"/crm/v4/associations/(?P<from>\w+)/(?P<to>\w+)/batch/read", self.read_assoc_batch
        )
        self.route("GET", r"/crm/v3/properties/(?P<type>\w+)/groups", self.list_groups)
        self.route("POST", r"/crm/v3/properties/(?P<type>\w+)/groups", self.create_group)
        self.route("GET", r"/crm/v3/properties/(?P<type>\w+)", self.list_properties)
        self.route("POST", r"/crm/v3/properties/(?P<type>\w+)", self.create_property)
        self.route("GET", r"/crm/v3/properties/(?P<type>\w+)/(?P<name>\w+)", self.get_property)
        self.route("GET", r"/crm/v3/pipelines/deals", self.list_pipelines)
        self.route("GET", r"/crm/v3/pipelines/deals/(?P<id>\w+)", self.get_pipeline)

    # -- auth, limits, faults ------------------------------------------------------------------

    def authorize(self, call: Call) -> httpx.Response | None:
        if call.headers.get("authorization") != f"Bearer {self.token}":
            return error(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
                "oauth-overview",
                "INVALID_AUTHENTICATION",
            )
        return None

    def limit_headers(self) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Max": str(self.window.limit),
            "X-HubSpot-RateLimit-Remaining": str(self.window.remaining()),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window.period * 1000)),
            "X-HubSpot-RateLimit-Secondly": str(int(self.window.limit / self.window.period)),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(int(self.window.remaining() / self.window.period)),
            "X-HubSpot-RateLimit-Daily": str(self.daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily - self.daily_used)),
        }

    def rate_limited(self, policy: str) -> httpx.Response:
        message = {
            "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
            "SECONDLY": "You have reached your secondly limit.",
            "DAILY": "You have reached your daily limit.",
        }[policy]
        return respond(
            429,
            {
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": policy,
                "requestId": str(uuid.uuid4()),
            },
            self.limit_headers(),
        )

    def admit(self, call: Call) -> httpx.Response | None:
        if self.daily_used >= self.daily:
            return self.rate_limited("DAILY")
        if not self.window.admit():
            return self.rate_limited("TEN_SECONDLY_ROLLING")
        if call.path.endswith("/search") and not self.search_window.admit():
            return self.rate_limited("SECONDLY")
        self.daily_used += 1
        return None

    def fault_body(self, status: int) -> Fault:
        if status == 429:
            r = self.rate_limited("TEN_SECONDLY_ROLLING")
            return Fault(429, r.json(), dict(r.headers))
        if status == 401:
            refused = self.authorize(Call("GET", "/", {}, httpx.Headers(), b"", {}, httpx.URL("/")))
            assert refused is not None  # a call without the token is always refused
            return Fault(401, refused.json())
        return Fault(
            status,
            {
                "status": "error",
                "message": "internal error",
                "correlationId": str(uuid.uuid4()),
                "category": "INTERNAL_ERROR",
            },
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = super().handle(request)
        if response.status_code != 429:
            response.headers.update(self.limit_headers())
        return response

    def not_found(self, call: Call) -> httpx.Response:
        return error(404, f"Unable to route {call.method} request to {call.path}", "OBJECT_NOT_FOUND")

    # -- objects -------------------------------------------------------------------------------

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def indexed(self, type_: str, prop: str) -> bool:
        return prop == "email" or bool(self.properties[type_].get(prop, {}).get("hasUniqueValue"))

    def by_property(self, type_: str, prop: str, value: str) -> dict[str, Any] | None:
        value = value.lower() if prop == "email" else value
        if self.indexed(type_, prop) and (type_, prop) in self.index:
            oid = self.index[(type_, prop)].get(value)
            return self.objects[type_].get(oid) if oid else None
        for obj in self.objects[type_].values():
            have = obj["properties"].get(prop)
            if have is not None and (have.lower() if prop == "email" else have) == value:
                return obj
        return None

    def set_currencies(self, currencies: Sequence[str]) -> None:
        """The portal's currencies (Settings > Account defaults > Currencies), the company
        currency first: the options of `deal_currency_code`."""
        self.currencies = [c.upper() for c in currencies]
        self.properties["deals"]["deal_currency_code"]["options"] = [
            {"label": CURRENCY_NAMES.get(c, c), "value": c, "displayOrder": i, "hidden": False}
            for i, c in enumerate(self.currencies)
        ]

    def validate(
        self, type_: str, props: dict[str, Any], own_id: str | None = None
    ) -> tuple[str, str, str] | None:
        """(category, message, code) when these properties cannot be written, else None."""
        for name, value in props.items():
            spec = self.properties[type_].get(name)
            if spec is None:
                return ("VALIDATION_ERROR", f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST")
            if value is not None and not isinstance(value, str | int | float | bool):
                return ("VALIDATION_ERROR", f'Property "{name}" has an invalid value', "INVALID_VALUE")
            if value in (None, ""):
                continue  # clears the property
            bad = self.invalid_value(spec, str(value))
            if bad:
                return ("VALIDATION_ERROR", property_values_not_valid(name, *bad), bad[0])
            if spec["hasUniqueValue"]:
                other = self.by_property(type_, name, str(value))
                if other is not None and other["id"] != own_id:
                    return (
                        "CONFLICT",
                        f"{type_[:-1].capitalize()} already exists. Existing ID: {other['id']}",
                        "CONFLICT",
                    )
        if type_ == "deals":
            pipeline = self.pipelines.get(str(props.get("pipeline") or "default"))
            stage = props.get("dealstage")
            if pipeline is None:
                return (
                    "VALIDATION_ERROR",
                    f"pipeline {props.get('pipeline')!r} does not exist",
                    "INVALID_OPTION",
                )
            if stage and stage not in {s["id"] for s in pipeline["stages"]}:
                return (
                    "VALIDATION_ERROR",
                    f"{stage} is not a valid dealstage in pipeline {pipeline['id']}",
                    "INVALID_OPTION",
                )
        if type_ == "notes" and "hs_timestamp" in props and not props["hs_timestamp"]:
            return ("VALIDATION_ERROR", "hs_timestamp is required", "REQUIRED")
        return None

    def invalid_value(self, spec: dict[str, Any], value: str) -> tuple[str, str] | None:
        """(error code, message) when `value` does not fit the property's type, as HubSpot checks it."""
        kind = spec.get("type")
        if kind == "number":
            try:
                float(value)
            except ValueError:
                return ("INVALID_FLOAT", f"{value!r} was not a valid number.")
        if kind in ("date", "datetime") and not _is_date(value, midnight=kind == "date"):
            return ("INVALID_DATE", f"{value!r} is not a valid {kind}.")
        if (
            kind == "enumeration"
            and spec.get("options") is not None
            and spec["name"] not in ("dealstage", "pipeline")
        ):
            allowed = [str(o["value"]) for o in spec["options"]]
            if value not in allowed:
                listed = ", ".join(f'label: "{o["label"]}" value: "{o["value"]}"' for o in spec["options"])
                return ("INVALID_OPTION", f"{value} was not one of the allowed options: [{listed}]")
        return None

    def store(
        self, type_: str, props: dict[str, Any], existing: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        stamp = now_iso()
        clean = {
            k: (str(v).lower() if k == "email" else (None if v is None else str(v))) for k, v in props.items()
        }
        if existing is None:
            oid = self.new_id()
            existing = {
                "id": oid,
                "properties": {"hs_object_id": oid, "createdate": stamp},
                "createdAt": stamp,
                "archived": False,
            }
            self.objects[type_][oid] = existing
        for name, value in clean.items():  # keep the unique-property index in step (bursts of 10,000)
            if self.indexed(type_, name):
                idx = self.index.setdefault((type_, name), {})
                old = existing["properties"].get(name)
                if old is not None and idx.get(old) == existing["id"]:
                    del idx[old]
                if value is not None:
                    idx[value] = existing["id"]
        existing["properties"].update(clean)
        existing["properties"]["lastmodifieddate"] = stamp
        existing["updatedAt"] = stamp
        if self.search_lag > 0:
            self._index_later(type_, existing)
        return existing

    def _index_later(self, type_: str, obj: dict[str, Any]) -> None:
        """Queue this version of the record for the search index; keep only the versions search
        may still answer from (the newest one old enough, and those newer)."""
        now = self.clock()
        versions = self._indexed.setdefault((type_, obj["id"]), [])
        versions.append((now + self.search_lag, dict(obj["properties"])))
        while len(versions) > 1 and versions[1][0] <= now:
            versions.pop(0)

    def searchable(self, type_: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The record's properties as the search index has them now; None when not indexed yet."""
        if self.search_lag <= 0:
            return obj["properties"]  # type: ignore[no-any-return]
        now = self.clock()
        seen = [props for at, props in self._indexed.get((type_, obj["id"]), []) if at <= now]
        return seen[-1] if seen else None

    def list_objects(self, call: Call) -> httpx.Response:
        limit = min(int(call.params.get("limit", 10)), 100)
        ids = sorted(self.objects[call.match["type"]], key=int)
        after = call.params.get("after")
        if after:
            ids = [i for i in ids if int(i) > int(after)]
        page = [self.objects[call.match["type"]][i] for i in ids[:limit]]
        body: dict[str, Any] = {"results": page}
        if len(ids) > limit:
            body["paging"] = {"next": {"after": page[-1]["id"]}}
        return respond(200, body)

    def get_one(self, call: Call) -> httpx.Response:
        type_, key = call.match["type"], call.match["id"]
        prop = call.params.get("idProperty")
        obj = self.by_property(type_, prop, key) if prop else self.objects[type_].get(key)
        if obj is None:
            return error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
        return respond(200, obj)

    def create_one(self, call: Call) -> httpx.Response:
        type_ = call.match["type"]
        body = call.json() or {}
        props = body.get("properties") or {}
        problem = self.validate(type_, props)
        if problem:
            return refused(problem)
        obj = self.store(type_, props)
        for assoc in body.get("associations") or []:
            self.add_inline_association(type_, obj["id"], assoc)
        return respond(201, obj)

    def patch_one(self, call: Call) -> httpx.Response:
        type_ = call.match["type"]
        obj = self.objects[type_].get(call.match["id"])
        if obj is None:
            return error(404, "Object not found.", "OBJECT_NOT_FOUND")
        props = (call.json() or {}).get("properties") or {}
        problem = self.validate(type_, props, obj["id"])
        if problem:
            return refused(problem)
        return respond(200, self.store(type_, props, obj))

    def search(self, call: Call) -> httpx.Response:
        """Search answers from the index: each record as it was `search_lag` seconds ago."""
        type_ = call.match["type"]
        body = call.json() or {}
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or any(len(g.get("filters", [])) > 6 for g in groups):
            return error(400, "too many filterGroups or filters", "VALIDATION_ERROR")

        def matches(props: dict[str, Any], f: dict[str, Any]) -> bool:
            have = props.get(f["propertyName"])
            op = f.get("operator", "EQ")
            if op == "EQ":
                return have is not None and str(have).lower() == str(f.get("value")).lower()
            if op == "IN":  # the index holds string values lower-cased; the values are taken as sent
                return have is not None and str(have).lower() in {str(v) for v in f.get("values", [])}
            if op == "HAS_PROPERTY":
                return have not in (None, "")
            if op == "NOT_HAS_PROPERTY":
                return have in (None, "")
            raise ValueError(op)

        found = []
        for o in self.objects[type_].values():
            props = self.searchable(type_, o)
            if props is None:
                continue
            if not groups or any(all(matches(props, f) for f in g.get("filters", [])) for g in groups):
                found.append({**o, "properties": props})
        found.sort(key=lambda o: int(o["id"]))
        limit = min(int(body.get("limit", 10)), 200)
        start = int(body.get("after") or 0)
        page = found[start : start + limit]
        out: dict[str, Any] = {"total": len(found), "results": page}
        if start + limit < len(found):
            out["paging"] = {"next": {"after": str(start + limit)}}
        return respond(200, out)

    def _batch(self, call: Call, upsert: bool) -> httpx.Response:
        """batch/create and batch/upsert: every input is checked first, and one invalid input
        fails the whole batch (400, or 409 for a unique value another record holds), as HubSpot
        does; nothing of it is written."""
        type_ = call.match["type"]
        inputs = (call.json() or {}).get("inputs") or []
        if len(inputs) > 100:
            return error(400, "Batch input limit is 100 inputs", "VALIDATION_ERROR")
        started = now_iso()
        if upsert:
            keys = [(i.get("idProperty"), i.get("id")) for i in inputs]
            if len(set(keys)) < len(keys):
                return error(400, "Duplicate IDs found in batch input", "VALIDATION_ERROR")
        planned: list[tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]] = []
        for item in inputs:
            props = dict(item.get("properties") or {})
            existing = None
            if upsert:
                prop, key = item.get("idProperty"), item.get("id")
                if prop not in self.properties[type_] or not self.properties[type_][prop]["hasUniqueValue"]:
                    return error(
                        400,
                        f"{prop} is not a unique property and cannot be used as idProperty",
                        "VALIDATION_ERROR",
                    )
                existing = self.by_property(type_, prop, str(key))
                props[prop] = key
            problem = self.validate(
                type_, props, existing["id"] if existing else None
            ) or self.check_associations(item.get("associations") or [])
            if problem:
                return refused(problem)
            planned.append((item, existing, props))
        results: list[dict[str, Any]] = []
        for item, existing, props in planned:
            obj = self.store(type_, props, existing)
            for assoc in item.get("associations") or []:
                self.add_inline_association(type_, obj["id"], assoc)
            results.append({**obj, "new": existing is None} if upsert else obj)
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": list(reversed(results)),
            "startedAt": started,
            "completedAt": now_iso(),
        }
        return respond(200 if upsert else 201, body)

    def batch_read(self, call: Call) -> httpx.Response:
        """`batch/read` by id (or a unique `idProperty`): the asked `properties`; unknown ids: 207 errors."""
        type_ = call.match["type"]
        body = call.json() or {}
        inputs = body.get("inputs") or []
        if len(inputs) > 100:
            return error(400, "Batch input limit is 100 inputs", "VALIDATION_ERROR")
        prop = body.get("idProperty")
        wanted = [*(body.get("properties") or []), "hs_object_id", "createdate", "lastmodifieddate"]
        results, missing = [], []
        for item in inputs:
            key = str(item.get("id"))
            obj = self.by_property(type_, prop, key) if prop else self.objects[type_].get(key)
            if obj is None:
                missing.append(key)
                continue
            props = {k: obj["properties"].get(k) for k in wanted}
            results.append({**obj, "properties": props})
        out: dict[str, Any] = {
            "status": "COMPLETE",
            "results": list(reversed(results)),
            "startedAt": now_iso(),
            "completedAt": now_iso(),
        }
        if missing:
            out.update(
                numErrors=1,
                errors=[
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": f"Could not get some {type_} objects, they may be deleted or not exist.",
                        "context": {"ids": missing},
                    }
                ],
            )
            return respond(207, out)
        return respond(200, out)

    def batch_update(self, call: Call) -> httpx.Response:
        """`batch/update` by object id: all or nothing, like HubSpot (an unknown id or a bad
        value fails the batch with 400)."""
        type_ = call.match["type"]
        inputs = (call.json() or {}).get("inputs") or []
        if len(inputs) > 100:
            return error(400, "Batch input limit is 100 inputs", "VALIDATION_ERROR")
        for item in inputs:
            obj = self.objects[type_].get(str(item.get("id")))
            if obj is None:
                return error(404, f"Object {item.get('id')} not found", "OBJECT_NOT_FOUND")
            problem = self.validate(type_, dict(item.get("properties") or {}), obj["id"])
            if problem:
                return refused(problem)
        started = now_iso()
        results = [
            self.store(type_, dict(i.get("properties") or {}), self.objects[type_][str(i["id"])])
            for i in inputs
        ]
        return respond(
            200, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now_iso()}
        )

    def batch_upsert(self, call: Call) -> httpx.Response:
        return self._batch(call, upsert=True)

    def batch_create(self, call: Call) -> httpx.Response:
        return self._batch(call, upsert=False)

    # -- associations --------------------------------------------------------------------------

    def check_associations(self, associations: list[dict[str, Any]]) -> tuple[str, str, str] | None:
        for assoc in associations:
            for t in assoc.get("types") or []:
                to_type = {214: "deals", 202: "contacts", 3: "contacts", 4: "deals"}.get(
                    int(t["associationTypeId"])
                )
                if to_type and str(assoc["to"]["id"]) not in self.objects[to_type]:
                    return (
                        "VALIDATION_ERROR",
                        f"No {to_type[:-1]} with id {assoc['to']['id']} to associate with",
                        "INVALID_ASSOCIATION",
                    )
        return None

    def add_inline_association(self, type_: str, oid: str, assoc: dict[str, Any]) -> None:
        for t in assoc.get("types") or []:
            to_type = {214: "deals", 202: "contacts", 3: "contacts", 4: "deals"}.get(
                int(t["associationTypeId"])
            )
            if to_type:
                self.associations.add(
                    (type_, oid, to_type, str(assoc["to"]["id"]), int(t["associationTypeId"]))
                )

    def associate_batch(self, call: Call) -> httpx.Response:
        from_, to = call.match["from"], call.match["to"]
        results, errors = [], []
        for item in (call.json() or {}).get("inputs") or []:
            a, b = str(item["from"]["id"]), str(item["to"]["id"])
            if a not in self.objects.get(from_, {}) or b not in self.objects.get(to, {}):
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": f"No {from_} with id {a} or {to} with id {b}",
                        "context": {},
                    }
                )
                continue
            self.associations.add((from_, a, to, b, ASSOCIATION_TYPES[(from_, to)]))
            results.append(
                {
                    "from": {"id": a},
                    "to": {"id": b},
                    "associationSpec": {
                        "associationCategory": "HUBSPOT_DEFINED",
                        "associationTypeId": ASSOCIATION_TYPES[(from_, to)],
                    },
                }
            )
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now_iso(),
            "completedAt": now_iso(),
        }
        if errors:
            body.update(errors=errors, numErrors=len(errors))
            return respond(207, body)
        return respond(200, body)

    def associate_one(self, call: Call) -> httpx.Response:
        from_, to = call.match["from"], call.match["to"]
        self.associations.add(
            (from_, call.match["id"], to, call.match["toid"], ASSOCIATION_TYPES[(from_, to)])
        )
        return respond(200, {"status": "COMPLETE", "results": []})

    def associated(self, from_: str, oid: str, to: str) -> list[dict[str, Any]]:
        """The v4 `to` entries of one object, by ascending id (either direction of an association)."""
        hits = [(b, t) for (f, a, tt, b, t) in self.associations if f == from_ and a == oid and tt == to]
        hits += [(a, t) for (f, a, tt, b, t) in self.associations if tt == from_ and b == oid and f == to]
        types: dict[str, set[int]] = {}
        for b, t in hits:
            types.setdefault(b, set()).add(t)
        return [
            {
                "toObjectId": int(b),
                "associationTypes": [
                    {"category": "HUBSPOT_DEFINED", "typeId": t, "label": None} for t in sorted(types[b])
                ],
            }
            for b in sorted(types, key=int)
        ]

    def read_assoc(self, call: Call) -> httpx.Response:
        """`GET /crm/v4/objects/{from}/{id}/associations/{to}`: `limit` (≤500) and `after` pages."""
        rows = self.associated(call.match["from"], call.match["id"], call.match["to"])
        limit = min(int(call.params.get("limit", 500)), 500)
        start = int(call.params.get("after") or 0)
        body: dict[str, Any] = {"results": rows[start : start + limit]}
        if start + limit < len(rows):
            body["paging"] = {"next": {"after": str(start + limit), "link": None}}
        return respond(200, body)

    def read_assoc_batch(self, call: Call) -> httpx.Response:
        """v4 batch read: up to 1,000 objects; one with none is a 207 `error` (NO_ASSOCIATIONS_FOUND),
        and one with more than 500 carries `paging` for the single-object list."""
        from_, to = call.match["from"], call.match["to"]
        inputs = (call.json() or {}).get("inputs") or []
        if len(inputs) > 1000:
            return error(400, "Batch input limit is 1000 inputs", "VALIDATION_ERROR")
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            oid = str(item["id"])
            rows = self.associated(from_, oid, to)
            if not rows:
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                        "message": f"No {to} is associated with {from_[:-1]} {oid}.",
                        "context": {"fromObjectId": [oid]},
                    }
                )
                continue
            result: dict[str, Any] = {"from": {"id": oid}, "to": rows[:500]}
            if len(rows) > 500:
                result["paging"] = {"next": {"after": "500", "link": None}}
            results.append(result)
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now_iso(),
            "completedAt": now_iso(),
        }
        if errors:
            body.update(errors=errors, numErrors=len(errors))
            return respond(207, body)
        return respond(200, body)

    # -- properties and pipelines --------------------------------------------------------------

    def list_properties(self, call: Call) -> httpx.Response:
        return respond(200, {"results": list(self.properties.get(call.match["type"], {}).values())})

    def get_property(self, call: Call) -> httpx.Response:
        prop = self.properties.get(call.match["type"], {}).get(call.match["name"])
        if prop is None:
            return error(404, f"Unable to find property {call.match['name']}", "OBJECT_NOT_FOUND")
        return respond(200, prop)

    def create_property(self, call: Call) -> httpx.Response:
        """POST /crm/v3/properties/{type}: name, label, type, fieldType and an existing groupName
        are required; a name taken is 409."""
        type_ = call.match["type"]
        body = call.json() or {}
        props = self.properties.setdefault(type_, {})
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
        if missing:
            return error(400, f"Missing required fields: {', '.join(missing)}", "VALIDATION_ERROR")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(body["name"])):
            return error(400, f"Invalid property name {body['name']!r}", "VALIDATION_ERROR")
        if body["type"] not in PROPERTY_TYPES or body["fieldType"] not in FIELD_TYPES:
            return error(
                400, f"Invalid type/fieldType {body['type']}/{body['fieldType']}", "VALIDATION_ERROR"
            )
        if body["groupName"] not in self.groups.get(type_, {}):
            return error(400, f"Property group {body['groupName']} does not exist", "VALIDATION_ERROR")
        if body["name"] in props:
            return error(409, f"Property {body['name']} already exists", "CONFLICT")
        props[body["name"]] = {**body, "hasUniqueValue": bool(body.get("hasUniqueValue"))}
        return respond(201, props[body["name"]])

    def list_groups(self, call: Call) -> httpx.Response:
        return respond(200, {"results": list(self.groups.get(call.match["type"], {}).values())})

    def create_group(self, call: Call) -> httpx.Response:
        body = call.json() or {}
        groups = self.groups.setdefault(call.match["type"], {})
        if not body.get("name") or not body.get("label"):
            return error(400, "Missing required fields: name, label", "VALIDATION_ERROR")
        if body["name"] in groups:
            return error(409, f"Property group {body['name']} already exists", "CONFLICT")
        groups[body["name"]] = {"name": body["name"], "label": body["label"], "displayOrder": -1}
        return respond(201, groups[body["name"]])

    def list_pipelines(self, call: Call) -> httpx.Response:
        return respond(200, {"results": list(self.pipelines.values())})

    def get_pipeline(self, call: Call) -> httpx.Response:
        p = self.pipelines.get(call.match["id"])
        if p is None:
            return error(404, f"Unable to find pipeline {call.match['id']}", "OBJECT_NOT_FOUND")
        return respond(200, p)

    # -- what tests read -----------------------------------------------------------------------

    def deal_by_payment(self, payment_id: str) -> dict[str, Any] | None:
        return self.by_property("deals", "stripe_payment_id", payment_id)

    def notes_of_deal(self, deal_id: str) -> list[str]:
        return [
            self.objects["notes"][a]["properties"]["hs_note_body"]
            for (f, a, t, b, _) in self.associations
            if f == "notes" and t == "deals" and b == deal_id
        ]

    def ready(self, contact_key: bool = True, language: str = "pl") -> FakeHubSpot:
        """As `stripeflow crm setup hubspot` leaves it: the groups and custom properties exist
        (without `contact_key`, as an older setup left it: no unique key for e-mail-less contacts)."""
        from stripeflow.tasks.crm.hubspot import CONTACT_KEY, DEFAULT_FIELDS, GROUP, wanted_properties

        for groups in self.groups.values():
            groups.setdefault(GROUP, {"name": GROUP, "label": "Stripe", "displayOrder": -1})
        for spec in wanted_properties(DEFAULT_FIELDS):
            if spec.name != CONTACT_KEY or contact_key:
                self.properties[spec.object_type][spec.name] = {
                    **spec.body(language),
                    "hasUniqueValue": spec.unique,
                }
        return self
