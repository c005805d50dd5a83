"""A faithful in-memory Zoho CRM v7 and its accounts server (reference section 4).

The same app serves the accounts server (`POST /oauth/v2/token`, refresh-token grant, answering
with `api_domain` = this server's own URL, `{"error":"invalid_code"}` for a bad refresh token,
and the 10-refreshes-per-10-minutes cap) and the API: Contacts/Deals upsert with
duplicate_check_fields (at most 100 records, per-record SUCCESS / DUPLICATE_DATA /
MANDATORY_NOT_FOUND / INVALID_DATA, 200, 207 or 400 as records pass or fail), search
(`email=`, `criteria=`; 204 when nothing matches), page/per_page lists with
`info.more_records`, get by id, Notes with `Parent_Id`, the fields settings API (GET; POST
creating a custom field with the unique flag, its API name made from its label as Zoho does, a
label unique in its module; PATCH renaming a custom field's label, its API name kept), writes
refused per record with INVALID_DATA for a field the module lacks or a value of the wrong type
(numbers for currency fields, YYYY-MM-DD for dates), `Zoho-oauthtoken` auth answering 401
INVALID_TOKEN, and the per-org concurrency limit (and a daily credit budget) enforced with 429
TOO_MANY_REQUESTS and no Retry-After.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from stripeflow.testing.vendor import Call, Clock, FakeVendor, Fault, RollingWindow, respond

MODULES = ("Contacts", "Deals", "Notes")
STAGES = [
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
    "Closed Lost to Competition",
]
DATA_TYPES = {
    "text",
    "textarea",
    "email",
    "phone",
    "picklist",
    "date",
    "datetime",
    "integer",
    "currency",
    "double",
    "percent",
    "bigint",
    "boolean",
    "website",
}
NUMBERS = {"integer", "currency", "double", "percent", "bigint"}
BUILTIN_TYPES = {
    "Amount": "currency",
    "Closing_Date": "date",
    "Phone": "phone",
    "Email": "email",
    "Contact_Name": "lookup",
    "Parent_Id": "lookup",
    "Stage": "picklist",
    "Pipeline": "picklist",
    "Currency": "picklist",
    "Description": "textarea",
    "Note_Content": "textarea",
}
BUILTIN_FIELDS = {
    "Contacts": {"Email": True, "First_Name": False, "Last_Name": False, "Phone": False},
    "Deals": {
        "Deal_Name": True,
        "Stage": False,
        "Amount": False,
        "Closing_Date": False,
        "Contact_Name": False,
        "Pipeline": False,
        "Currency": False,
        "Description": False,
    },
    "Notes": {"Note_Title": False, "Note_Content": False, "Parent_Id": False},
}
MANDATORY = {
    "Contacts": ["Last_Name"],
    "Deals": ["Deal_Name", "Stage"],
    "Notes": ["Note_Content", "Parent_Id"],
}


def zerror(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> httpx.Response:
    return respond(status, {"code": code, "details": details or {}, "message": message, "status": "error"})


def record_error(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"code": code, "details": details, "message": message, "status": "error"}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FakeZoho(FakeVendor):
    def __init__(
        self,
        client_id: str = "1000.FAKECLIENT",
        client_secret: str = "fake-secret",
        refresh_token: str = "1000.fake-refresh",
        *,
        concurrency: int = 5,
        credits: int = 1_000_000,
        clock: Clock = time.monotonic,
        latency: float = 0.0,
    ) -> None:
        super().__init__(clock, latency)
        self.client_id, self.client_secret, self.refresh_token = client_id, client_secret, refresh_token
        self.concurrency = concurrency
        self.credits = credits
        self.credits_used = 0
        self.tokens: set[str] = set()
        self.refreshes = RollingWindow(10, 600.0, clock)
        self.records: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODULES}
        self.fields: dict[str, dict[str, dict[str, Any]]] = {
            module: {
                name: {
                    "api_name": name,
                    "field_label": name.replace("_", " "),
                    "data_type": BUILTIN_TYPES.get(name, "text"),
                    "custom_field": False,
                    "id": str(5843104000000002000 + i),
                    "system_duplicate_check": unique,
                }
                for i, (name, unique) in enumerate(names.items())
            }
            for module, names in BUILTIN_FIELDS.items()
        }
        self.fields["Deals"]["Stage"].update(
            data_type="picklist", pick_list_values=[{"display_value": s, "actual_value": s} for s in STAGES]
        )
        self._next = 5843104000000412000
        self.route("POST", r"/oauth/v2/token", self.token)
        m = r"/crm/v7/(?P<module>Contacts|Deals|Notes)"
        self.route("POST", m + "/upsert", self.upsert)
        self.route("GET", m + "/search", self.search)
        self.route("GET", m, self.list)
        self.route("POST", m, self.insert)
        self.route("GET", m + r"/(?P<id>\d+)", self.get)
        self.route("GET", r"/crm/v7/Deals/(?P<id>\d+)/Notes", self.deal_notes)
        self.route("GET", r"/crm/v7/settings/fields", self.get_fields)
        self.route("POST", r"/crm/v7/settings/fields", self.create_fields)
        self.route("PATCH", r"/crm/v7/settings/fields(/(?P<id>\d+))?", self.update_fields)

    # -- auth, limits, faults ------------------------------------------------------------------

    def token(self, call: Call) -> httpx.Response:
        params = {**call.params, **dict(parse_qsl(call.body.decode()))}
        if not self.refreshes.admit():
            return respond(
                400,
                {
                    "error_description": "You have made too many requests continuously. Please try "
                    "again after some time.",
                    "error": "Access Denied",
                    "status": "failure",
                },
            )
        if params.get("grant_type") != "refresh_token":
            return respond(200, {"error": "unsupported_grant_type"})
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return respond(200, {"error": "invalid_client"})
        if params.get("refresh_token") != self.refresh_token:
            return respond(200, {"error": "invalid_code"})
        access = f"1000.{uuid.uuid4().hex}.{uuid.uuid4().hex[:8]}"
        self.tokens.add(access)
        base = f"{call.url.scheme}://{call.url.netloc.decode()}"
        return respond(
            200,
            {
                "access_token": access,
                "scope": "ZohoCRM.modules.ALL ZohoCRM.settings.ALL",
                "api_domain": base,
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )

    def authorize(self, call: Call) -> httpx.Response | None:
        if call.path.startswith("/oauth/"):
            return None
        header = call.headers.get("authorization", "")
        if not header.startswith("Zoho-oauthtoken "):
            return zerror(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        if header.removeprefix("Zoho-oauthtoken ") not in self.tokens:
            return zerror(401, "INVALID_TOKEN", "invalid oauth token")
        return None

    def cost(self, call: Call) -> int:
        if call.path.endswith("/upsert") or (call.method == "POST" and call.path.endswith("/Notes")):
            records = len((call.json() or {}).get("data") or [])
            return max(1, -(-records // 10))  # 1 credit per 10 records
        return 1

    def admit(self, call: Call) -> httpx.Response | None:
        if call.path.startswith("/oauth/"):
            return None
        if self.in_flight > self.concurrency:
            return zerror(
                429, "TOO_MANY_REQUESTS", "The number of concurrent requests has exceeded the limit"
            )
        cost = self.cost(call)
        if self.credits_used + cost > self.credits:
            return zerror(429, "TOO_MANY_REQUESTS", "API credits exhausted for the last 24 hours")
        self.credits_used += cost
        return None

    def fault_body(self, status: int) -> Fault:
        if status == 429:
            return Fault(
                429,
                {
                    "code": "TOO_MANY_REQUESTS",
                    "details": {},
                    "message": "too many requests",
                    "status": "error",
                },
            )
        if status == 401:
            return Fault(
                401,
                {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"},
            )
        return Fault(
            status,
            {"code": "INTERNAL_ERROR", "details": {}, "message": "Internal Server Error", "status": "error"},
        )

    def not_found(self, call: Call) -> httpx.Response:
        return zerror(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")

    def expire_tokens(self) -> None:
        """Every access token handed out so far now answers 401 INVALID_TOKEN."""
        self.tokens.clear()

    # -- records -------------------------------------------------------------------------------

    def new_id(self) -> str:
        self._next += 1
        return str(self._next)

    def unique_fields(self, module: str) -> set[str]:
        """Fields marked "Do not allow duplicate values": enforced on every write."""
        return {n for n, f in self.fields[module].items() if f.get("unique")}

    def check_fields(self, module: str) -> set[str]:
        """What duplicate_check_fields may name: the unique fields plus the system ones (Email, Deal_Name)."""
        return self.unique_fields(module) | {
            n for n, f in self.fields[module].items() if f.get("system_duplicate_check")
        }

    def details(self, rec: dict[str, Any]) -> dict[str, Any]:
        who = {"name": "Fake Admin", "id": "5843104000000000001"}
        return {
            "Modified_Time": rec["Modified_Time"],
            "Modified_By": who,
            "Created_Time": rec["Created_Time"],
            "id": rec["id"],
            "Created_By": who,
        }

    def check_record(self, module: str, record: dict[str, Any], own_id: str | None) -> dict[str, Any] | None:
        for name in MANDATORY[module]:
            if own_id is None and record.get(name) in (None, ""):
                return record_error(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    api_name=name,
                    json_path=f"$.data[0].{name}",
                )
        for name, value in record.items():
            if name not in self.fields[module] and name != "id":
                return record_error("INVALID_DATA", "the field is not available", api_name=name)
            if (
                name == "Stage"
                and value not in STAGES
                and value
                not in [v["actual_value"] for v in self.fields["Deals"]["Stage"]["pick_list_values"]]
            ):
                return record_error(
                    "INVALID_DATA", "invalid data", api_name=name, expected_data_type="picklist"
                )
            kind = self.fields[module].get(name, {}).get("data_type")
            if value is not None and not self.typed(kind, value):
                return record_error("INVALID_DATA", "invalid data", api_name=name, expected_data_type=kind)
            if name == "Contact_Name" and value and str(value.get("id")) not in self.records["Contacts"]:
                return record_error("INVALID_DATA", "the id given seems to be invalid", api_name=name)
            if name in self.unique_fields(module) and value not in (None, ""):
                other = self.find(module, name, value)
                if other is not None and other["id"] != own_id:
                    return record_error(
                        "DUPLICATE_DATA",
                        "duplicate data",
                        api_name=name,
                        id=other["id"],
                        duplicate_record={"id": other["id"]},
                    )
        return None

    @staticmethod
    def typed(kind: str | None, value: Any) -> bool:
        """Whether a value fits a field's data type, as Zoho checks it on every write."""
        if kind in NUMBERS:
            return isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "date":
            return isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None
        if kind in ("text", "website", "email", "phone", "textarea"):
            return isinstance(value, str)
        return True

    def find(self, module: str, name: str, value: Any) -> dict[str, Any] | None:
        norm = str(value).lower() if name == "Email" else value
        for rec in self.records[module].values():
            have = rec.get(name)
            if have is not None and (str(have).lower() if name == "Email" else have) == norm:
                return rec
        return None

    def store(self, module: str, record: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        if existing is None:
            rid = self.new_id()
            existing = {"id": rid, "Created_Time": now()}
            self.records[module][rid] = existing
        existing.update({k: v for k, v in record.items() if k != "id"}, Modified_Time=now())
        return existing

    def answer(self, results: list[dict[str, Any]], ok_status: int) -> httpx.Response:
        failed = sum(1 for r in results if r["status"] == "error")
        status = ok_status if not failed else 400 if failed == len(results) else 207
        return respond(status, {"data": results})

    def upsert(self, call: Call) -> httpx.Response:
        module = call.match["module"]
        body = call.json() or {}
        data = body.get("data") or []
        if len(data) > 100:
            return zerror(400, "LIMIT_EXCEEDED", "the number of records exceeds the limit", {"limit": 100})
        keys = body.get("duplicate_check_fields") or sorted(self.check_fields(module))
        for key in keys:
            if key not in self.check_fields(module):
                return zerror(
                    400,
                    "INVALID_DATA",
                    "duplicate check field is not unique",
                    {"api_name": key, "json_path": "$.duplicate_check_fields"},
                )
        results = []
        for record in data:
            existing, hit = None, None
            for key in keys:  # Zoho tries the duplicate-check fields in the order given
                if record.get(key) not in (None, ""):
                    existing = self.find(module, key, record[key])
                    if existing is not None:
                        hit = key
                        break
            problem = self.check_record(module, record, existing["id"] if existing else None)
            if problem:
                results.append(problem)
                continue
            rec = self.store(module, record, existing)
            results.append(
                {
                    "code": "SUCCESS",
                    "duplicate_field": hit,
                    "action": "update" if existing else "insert",
                    "details": self.details(rec),
                    "message": "record updated" if existing else "record added",
                    "status": "success",
                }
            )
        return self.answer(results, 200)

    def insert(self, call: Call) -> httpx.Response:
        module = call.match["module"]
        data = (call.json() or {}).get("data") or []
        if len(data) > 100:
            return zerror(400, "LIMIT_EXCEEDED", "the number of records exceeds the limit", {"limit": 100})
        results = []
        for record in data:
            if module == "Notes":
                parent = record.get("Parent_Id") or {}
                if (parent.get("module") or {}).get("api_name") != "Deals" or str(
                    parent.get("id")
                ) not in self.records["Deals"]:
                    results.append(
                        record_error(
                            "INVALID_DATA", "the related id given seems to be invalid", api_name="Parent_Id"
                        )
                    )
                    continue
            problem = self.check_record(module, record, None)
            if problem:
                results.append(problem)
                continue
            rec = self.store(module, record, None)
            results.append(
                {
                    "code": "SUCCESS",
                    "details": self.details(rec),
                    "message": "record added",
                    "status": "success",
                }
            )
        return self.answer(results, 201)

    def search(self, call: Call) -> httpx.Response:
        module = call.match["module"]
        if "email" in call.params:
            hits = [
                r
                for r in self.records[module].values()
                if call.params["email"].lower() in str(r.get("Email", "")).lower()
            ]
        elif "criteria" in call.params:
            m = re.fullmatch(r"\((\w+):(equals|starts_with):(.+)\)", call.params["criteria"])
            if not m:
                return zerror(400, "INVALID_QUERY", "invalid query formed", {"reason": "invalid criteria"})
            name, _, value = m.groups()
            hits = [r for r in self.records[module].values() if value.lower() in str(r.get(name, "")).lower()]
        else:
            return zerror(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param": "criteria"},
            )
        if not hits:
            return httpx.Response(204)
        return respond(
            200,
            {"data": hits, "info": {"per_page": 200, "count": len(hits), "page": 1, "more_records": False}},
        )

    def list(self, call: Call) -> httpx.Response:
        module = call.match["module"]
        page, per_page = int(call.params.get("page", 1)), min(int(call.params.get("per_page", 200)), 200)
        rows = sorted(self.records[module].values(), key=lambda r: int(r["id"]))
        chunk = rows[(page - 1) * per_page : page * per_page]
        if not chunk:
            return httpx.Response(204)
        return respond(
            200,
            {
                "data": chunk,
                "info": {
                    "per_page": per_page,
                    "count": len(chunk),
                    "page": page,
                    "more_records": page * per_page < len(rows),
                },
            },
        )

    def get(self, call: Call) -> httpx.Response:
        rec = self.records[call.match["module"]].get(call.match["id"])
        if rec is None:
            return httpx.Response(204)
        return respond(200, {"data": [rec]})

    def deal_notes(self, call: Call) -> httpx.Response:
        """A deal's Notes related list: `fields` required (v4+), `page`/`per_page` (≤200), 204 when empty."""
        if not call.params.get("fields"):
            return zerror(
                400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing", {"param": "fields"}
            )
        notes = sorted(
            (n for n in self.records["Notes"].values() if str(n["Parent_Id"]["id"]) == call.match["id"]),
            key=lambda n: int(n["id"]),
        )
        page, per_page = int(call.params.get("page", 1)), min(int(call.params.get("per_page", 200)), 200)
        chunk = notes[(page - 1) * per_page : page * per_page]
        if not chunk:
            return httpx.Response(204)
        wanted = {"id", *call.params["fields"].split(",")}
        return respond(
            200,
            {
                "data": [{k: v for k, v in n.items() if k in wanted} for n in chunk],
                "info": {
                    "per_page": per_page,
                    "count": len(chunk),
                    "page": page,
                    "more_records": page * per_page < len(notes),
                },
            },
        )

    # -- field settings ------------------------------------------------------------------------

    def get_fields(self, call: Call) -> httpx.Response:
        module = call.params.get("module")
        if module not in self.fields:
            return zerror(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"param": "module"}
            )
        return respond(200, {"fields": list(self.fields[module].values())})

    def create_fields(self, call: Call) -> httpx.Response:
        module = call.params.get("module")
        if module not in self.fields:
            return zerror(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"param": "module"}
            )
        out = []
        for f in (call.json() or {}).get("fields") or []:
            label = str(f.get("field_label") or "").strip()
            # Zoho's API name: the label's letters and digits, runs of anything else as one _
            api_name = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
            if not label or f.get("data_type") not in DATA_TYPES:
                key = "field_label" if not label else "data_type"
                out.append(record_error("INVALID_DATA", "invalid data", api_name=key))
            elif self.label_taken(module, label) or api_name in self.fields[module]:
                out.append(
                    record_error("DUPLICATE_DATA", "field label already exists", api_name="field_label")
                )
            else:
                fid = self.new_id()
                self.fields[module][api_name] = {
                    "api_name": api_name,
                    "field_label": label,
                    "data_type": f["data_type"],
                    "custom_field": True,
                    "id": fid,
                    **({"unique": f["unique"]} if f.get("unique") else {}),
                }
                out.append(
                    {
                        "code": "SUCCESS",
                        "details": {"id": fid},
                        "message": "field created",
                        "status": "success",
                    }
                )
        return respond(201, {"fields": out})

    def label_taken(self, module: str, label: str, but: str | None = None) -> bool:
        return any(
            str(f.get("field_label", "")).lower() == label.lower() and f.get("id") != but
            for f in self.fields[module].values()
        )

    def update_fields(self, call: Call) -> httpx.Response:
        """PATCH settings/fields[/{id}]: at most five fields a call; a custom field's label changes,
        its API name stays."""
        module = call.params.get("module")
        if module not in self.fields:
            return zerror(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"param": "module"}
            )
        given = (call.json() or {}).get("fields") or []
        if len(given) > 5:
            return zerror(400, "LIMIT_EXCEEDED", "the number of fields exceeds the limit", {"limit": 5})
        by_id = {f["id"]: f for f in self.fields[module].values()}
        out = []
        for f in given:
            fid = str(call.match.get("id") or f.get("id") or "")
            field = by_id.get(fid)
            label = str(f.get("field_label") or "").strip()
            if field is None:
                out.append(record_error("INVALID_DATA", "the id given seems to be invalid", api_name="id"))
            elif not field.get("custom_field"):
                out.append(
                    record_error(
                        "NOT_ALLOWED", "system field label cannot be updated", api_name="field_label"
                    )
                )
            elif label and self.label_taken(module, label, but=fid):
                out.append(
                    record_error("DUPLICATE_DATA", "field label already exists", api_name="field_label")
                )
            else:
                if label:
                    field["field_label"] = label
                out.append(
                    {
                        "code": "SUCCESS",
                        "details": {"id": fid},
                        "message": "field updated",
                        "status": "success",
                    }
                )
        return respond(200, {"fields": out})

    # -- what tests read -----------------------------------------------------------------------

    def deal_by_payment(self, payment_id: str) -> dict[str, Any] | None:
        return self.find("Deals", "Stripe_Payment_Id", payment_id)

    def ready(self, language: str = "pl") -> FakeZoho:
        """As `stripeflow crm setup zoho` leaves it: the two unique keys, the payment fields and
        the contact's company and tax-id fields exist, labelled in `language`."""
        from stripeflow.tasks.crm.zoho import ZohoCRM

        crm = ZohoCRM(client_id="-", client_secret="-", refresh_token="-", language=language)
        try:
            for (module, api_name), (kind, label, unique) in crm._wanted().items():
                if api_name not in self.fields[module]:
                    self.fields[module][api_name] = {
                        "api_name": api_name,
                        "field_label": label if not self.label_taken(module, label) else f"{label} (Stripe)",
                        "data_type": kind,
                        "custom_field": True,
                        "id": self.new_id(),
                        **({"unique": {"casesensitive": False}} if unique else {}),
                    }
        finally:
            crm.close()
        return self
