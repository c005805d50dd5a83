"""A faithful in-memory Bitrix24 REST portal behind an inbound webhook (reference section 3).

`/rest/<user>/<code>/<method>[.json]` with a JSON body or PHP-style form/query parameters
(top-level keys case-insensitive); crm.contact.* and crm.deal.* (list with 50-record pages
and `next`/`total`, add, update, get, fields), crm.duplicate.findbycomm,
crm.timeline.comment.add/list, crm.deal.userfield.list/add and crm.contact.userfield.list/add
(FIELD_NAME checked as Bitrix24 documents it: A-Z, 0-9 and _, at most 20 characters with its
UF_CRM_ prefix, refused with 400 and `error: ""`), crm.contact.fields, crm.status.list/add, profile,
and `batch` (at most 50 commands, `$result[key]` references, `result_error` per command,
nested batch refused). A wrong webhook code answers 401 NO_AUTH_FOUND; the portal's leaky
bucket (50 burst, 2 a second by default) answers 503 QUERY_LIMIT_EXCEEDED; every answer has
the `time` block. Unknown fields are ignored, as Bitrix24 does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from stripeflow.testing.vendor import Call, Clock, FakeVendor, Fault, LeakyBucket, respond

PAGE = 50
UF_MAX = 20  # a user-field name's length, UF_CRM_ included (the parameter table's limit)
USER_TYPES = {"string", "integer", "double", "boolean", "datetime", "date", "money", "url", "enumeration"}
BUILTIN_STAGES = [
    "NEW",
    "PREPARATION",
    "PREPAYMENT_INVOICE",
    "EXECUTING",
    "FINAL_INVOICE",
    "WON",
    "LOSE",
    "APOLOGY",
]
DEAL_FIELDS = [
    "ID",
    "TITLE",
    "CATEGORY_ID",
    "STAGE_ID",
    "CURRENCY_ID",
    "OPPORTUNITY",
    "IS_MANUAL_OPPORTUNITY",
    "CONTACT_ID",
    "CONTACT_IDS",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "COMMENTS",
    "BEGINDATE",
    "CLOSEDATE",
    "DATE_CREATE",
    "DATE_MODIFY",
]
CONTACT_FIELDS = [
    "ID",
    "NAME",
    "LAST_NAME",
    "EMAIL",
    "PHONE",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "SOURCE_ID",
    "COMPANY_ID",
    "POST",
    "DATE_CREATE",
    "DATE_MODIFY",
]


class MethodError(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


def parse_php_query(query: str) -> dict[str, Any]:
    """filter[EMAIL]=a&select[0]=ID -> {"filter": {"EMAIL": "a"}, "select": ["ID"]}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        names = re.findall(r"[^\[\]]+|\[\]", key)
        node = root
        for i, name in enumerate(names):
            last = i == len(names) - 1
            if name == "[]":
                name = str(len(node))
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FakeBitrix24(FakeVendor):
    def __init__(
        self,
        code: str = "fakewebhookcode",
        user: int = 1,
        *,
        burst: int = 50,
        rate: float = 2.0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        latency: float = 0.0,
    ) -> None:
        super().__init__(clock, latency)
        self.code, self.user = code, user
        self.wall = wall
        self.bucket = LeakyBucket(burst, rate, clock)
        self.contacts: dict[int, dict[str, Any]] = {}
        self.deals: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.userfields: dict[str, dict[str, Any]] = {}  # the deals' user fields
        self.contact_userfields: dict[str, dict[str, Any]] = {}
        self.stage_lists: dict[str, list[str]] = {"DEAL_STAGE": list(BUILTIN_STAGES)}
        self.command_faults: list[tuple[str, int, dict[str, Any]]] = []
        self._next = 0
        self.methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "crm.contact.list": lambda p: self.list_rows(self.contacts, p),
            "crm.contact.add": lambda p: self.add(self.contacts, p),
            "crm.contact.update": lambda p: self.update(self.contacts, p),
            "crm.contact.get": lambda p: self.get(self.contacts, p),
            "crm.deal.list": lambda p: self.list_rows(self.deals, p),
            "crm.deal.add": lambda p: self.add(self.deals, p),
            "crm.deal.update": lambda p: self.update(self.deals, p),
            "crm.deal.get": lambda p: self.get(self.deals, p),
            "crm.deal.fields": self.deal_fields,
            "crm.duplicate.findbycomm": self.findbycomm,
            "crm.timeline.comment.add": self.comment_add,
            "crm.timeline.comment.list": self.comment_list,
            "crm.deal.userfield.list": lambda p: list(self.userfields.values()),
            "crm.deal.userfield.add": lambda p: self.userfield_add(self.userfields, p),
            "crm.contact.userfield.list": lambda p: list(self.contact_userfields.values()),
            "crm.contact.userfield.add": lambda p: self.userfield_add(self.contact_userfields, p),
            "crm.contact.fields": self.contact_fields,
            "crm.status.list": self.status_list,
            "crm.status.add": self.status_add,
            "profile": lambda p: {"ID": str(self.user), "ADMIN": True, "NAME": "Admin"},
        }
        self.route("POST", r"/rest/(?P<user>\d+)/(?P<code>[^/]+)/(?P<method>[\w.]+?)(\.json)?", self.rest)
        self.route("GET", r"/rest/(?P<user>\d+)/(?P<code>[^/]+)/(?P<method>[\w.]+?)(\.json)?", self.rest)

    # -- envelope, auth, limits, faults ----------------------------------------------------------

    def inject_on_command(self, command: str, status: int = 500, **kw: Any) -> None:
        """Like `inject`, for the next request calling `command` (e.g. `crm.deal.add`), alone or
        inside a `batch`: every batch shares one path, so the path alone cannot single it out."""
        self.command_faults.append((command, status, kw))

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.command_faults:
            text = request.url.path + "?" + request.read().decode(errors="replace")
            for i, (command, status, kw) in enumerate(self.command_faults):
                if re.search(rf"(?<![\w.]){re.escape(command)}(?![\w])", text):
                    del self.command_faults[i]
                    self.inject(status, path=re.escape(request.url.path) + "$", **kw)
                    self.faults.rotate(1)  # this request's fault goes first
                    break
        return super().handle(request)

    def time_block(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        now = self.wall()
        return {
            "start": now,
            "finish": now,
            "duration": 0.001,
            "processing": 0.0005,
            "date_start": stamp(),
            "date_finish": stamp(),
            "operating_reset_at": int(now) + 600,
            "operating": 0,
            **(extra or {}),
        }

    def error(self, status: int, code: str, description: str) -> httpx.Response:
        return respond(status, {"error": code, "error_description": description})

    def authorize(self, call: Call) -> httpx.Response | None:
        m = re.match(r"/rest/(\d+)/([^/]+)/", call.path)
        if not m or int(m.group(1)) != self.user or m.group(2) != self.code:
            return self.error(401, "NO_AUTH_FOUND", "Wrong authorization data")
        return None

    def admit(self, call: Call) -> httpx.Response | None:
        if not self.bucket.admit():
            return self.error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        return None

    def fault_body(self, status: int) -> Fault:
        if status == 503:
            return Fault(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
        if status == 429:
            return Fault(
                429,
                {
                    "error": "OPERATION_TIME_LIMIT",
                    "error_description": "Method is blocked due to operation time limit.",
                    "time": self.time_block({"operating_reset_at": int(self.wall()) + 5, "operating": 480.5}),
                },
            )
        if status == 401:
            return Fault(401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
        return Fault(status, {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"})

    def not_found(self, call: Call) -> httpx.Response:
        return self.error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def params(self, call: Call) -> dict[str, Any]:
        params: dict[str, Any] = parse_php_query(call.url.query.decode())
        ctype = call.headers.get("content-type", "")
        if call.body and "json" in ctype:
            params.update(json.loads(call.body))
        elif call.body:
            params.update(parse_php_query(call.body.decode()))
        return {k.lower(): v for k, v in params.items()}

    def rest(self, call: Call) -> httpx.Response:
        method = call.match["method"].lower()
        params = self.params(call)
        if method == "batch":
            return self.batch(params)
        handler = self.methods.get(method)
        if handler is None:
            return self.not_found(call)
        try:
            result = handler(params)
        except MethodError as exc:
            return self.error(exc.status, exc.code, exc.description)
        body = {"result": result, "time": self.time_block()}
        if isinstance(result, tuple):
            rows, total, nxt = result
            body = {
                "result": rows,
                "total": total,
                **({"next": nxt} if nxt is not None else {}),
                "time": self.time_block(),
            }
        return respond(200, body)

    # -- batch ---------------------------------------------------------------------------------

    def batch(self, params: dict[str, Any]) -> httpx.Response:
        cmd = params.get("cmd") or {}
        if len(cmd) > 50:
            return self.error(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = str(params.get("halt", "0")) not in ("0", "false", "")
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        for key, line in cmd.items():
            method, _, query = str(line).partition("?")
            query = re.sub(r"\$result\[(\w+)\]", lambda m: str(results.get(m.group(1), "")), query)
            if method.lower() == "batch":
                errors[key] = {
                    "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
                    "error_description": "Method is not allowed",
                }
                continue
            handler = self.methods.get(method.lower())
            if handler is None:
                errors[key] = {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
            else:
                try:
                    out = handler({k.lower(): v for k, v in parse_php_query(query).items()})
                except MethodError as exc:
                    errors[key] = {"error": exc.code, "error_description": exc.description}
                else:
                    if isinstance(out, tuple):
                        out, totals[key], nxt = out
                        if nxt is not None:
                            nexts[key] = nxt
                    results[key] = out
            if halt and errors:
                break
        php = lambda d: d or []  # noqa: E731 - PHP's json_encode turns an empty map into []
        return respond(
            200,
            {
                "result": {
                    "result": php(results),
                    "result_error": php(errors),
                    "result_total": php(totals),
                    "result_next": php(nexts),
                    "result_time": [],
                },
                "time": self.time_block(),
            },
        )

    # -- records -------------------------------------------------------------------------------

    def new_id(self) -> int:
        self._next += 1
        return self._next

    @staticmethod
    def matches(rec: dict[str, Any], where: dict[str, Any]) -> bool:
        for key, want in where.items():
            have = rec.get(key.upper())
            if isinstance(have, list):  # multi-fields (EMAIL, PHONE) match one value exactly
                values = [str(v.get("VALUE", "")).lower() if isinstance(v, dict) else str(v) for v in have]
                if str(want).lower() not in values:
                    return False
            elif str(have if have is not None else "") != str(want):
                return False
        return True

    def list_rows(
        self, table: dict[int, dict[str, Any]], p: dict[str, Any]
    ) -> tuple[list[Any], int, int | None]:
        where = p.get("filter") or {}
        found = [r for _, r in sorted(table.items()) if self.matches(r, where)]
        if str((p.get("order") or {}).get("ID", "ASC")).upper() == "DESC":
            found.reverse()
        start = int(p.get("start") or 0)
        page = found[start : start + PAGE]
        select = [s.upper() for s in p.get("select") or []]
        rows = [{k: v for k, v in r.items() if not select or k in select or "*" in select} for r in page]
        nxt = start + PAGE if start + PAGE < len(found) else None
        return rows, len(found), nxt

    def clean(self, table: dict[int, dict[str, Any]], fields: dict[str, Any]) -> dict[str, Any]:
        deals = table is self.deals
        allowed = set(DEAL_FIELDS if deals else CONTACT_FIELDS) | set(
            self.userfields if deals else self.contact_userfields
        )
        out = {k.upper(): v for k, v in fields.items() if k.upper() in allowed}  # unknown fields are ignored
        if table is self.deals and "STAGE_ID" in out:
            category = int(out.get("CATEGORY_ID") or 0)
            entity = "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
            if out["STAGE_ID"] not in self.stage_lists.get(entity, []):
                raise MethodError(400, "", f"Stage {out['STAGE_ID']} is not found in category {category}")
        if "CONTACT_IDS" in out:
            out["CONTACT_IDS"] = [int(x) for x in out["CONTACT_IDS"]]
            out["CONTACT_ID"] = out["CONTACT_IDS"][0] if out["CONTACT_IDS"] else None
        return out

    def add(self, table: dict[int, dict[str, Any]], p: dict[str, Any]) -> int:
        fields = self.clean(table, p.get("fields") or {})
        if table is self.contacts and not (fields.get("NAME") or fields.get("LAST_NAME")):
            raise MethodError(400, "", "Required fields: NAME or LAST_NAME")
        if table is self.deals and not fields.get("TITLE"):
            fields["TITLE"] = f"Deal #{self._next + 1}"
        rid = self.new_id()
        table[rid] = {
            "ID": str(rid),
            "DATE_CREATE": stamp(),
            "DATE_MODIFY": stamp(),
            **({"STAGE_ID": "NEW", "CATEGORY_ID": "0"} if table is self.deals else {}),
            **fields,
        }
        return rid

    def update(self, table: dict[int, dict[str, Any]], p: dict[str, Any]) -> bool:
        rid = int(p.get("id") or 0)
        if rid not in table:
            raise MethodError(400, "", "Not found")
        fields = self.clean(table, p.get("fields") or {})
        for multi in ("EMAIL", "PHONE"):  # Bitrix24 adds multi-field values given without an ID
            if multi in fields:
                fields[multi] = (table[rid].get(multi) or []) + list(fields[multi])
        table[rid].update(fields, DATE_MODIFY=stamp())
        return True

    def get(self, table: dict[int, dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
        rid = int(p.get("id") or 0)
        if rid not in table:
            raise MethodError(400, "", "Not found")
        return table[rid]

    @staticmethod
    def described(names: list[str], userfields: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            **{f: {"type": "string", "title": f} for f in names},
            **{
                name: {
                    "type": uf["USER_TYPE_ID"],
                    "title": name,
                    "isDynamic": True,
                    "formLabel": uf.get("EDIT_FORM_LABEL"),
                    "listLabel": uf.get("LIST_COLUMN_LABEL"),
                    "filterLabel": uf.get("LIST_FILTER_LABEL"),
                }
                for name, uf in userfields.items()
            },
        }

    def deal_fields(self, p: dict[str, Any]) -> dict[str, Any]:
        return self.described(DEAL_FIELDS, self.userfields)

    def contact_fields(self, p: dict[str, Any]) -> dict[str, Any]:
        return self.described(CONTACT_FIELDS, self.contact_userfields)

    def findbycomm(self, p: dict[str, Any]) -> Any:
        values = [str(v).lower() for v in p.get("values") or []]
        if len(values) > 20:
            raise MethodError(400, "", "Too many values: at most 20")
        ids = [
            int(r["ID"])
            for r in self.contacts.values()
            if any(str(e.get("VALUE", "")).lower() in values for e in r.get("EMAIL") or [])
        ]
        return {"CONTACT": sorted(ids)} if ids else []

    def comment_add(self, p: dict[str, Any]) -> int:
        fields = {k.upper(): v for k, v in (p.get("fields") or {}).items()}
        if (
            str(fields.get("ENTITY_TYPE", "")).lower() != "deal"
            or int(fields.get("ENTITY_ID") or 0) not in self.deals
        ):
            raise MethodError(400, "", "ENTITY_ID is not defined or invalid")
        if not fields.get("COMMENT"):
            raise MethodError(400, "", "COMMENT is not defined or invalid")
        cid = self.new_id()
        self.comments[cid] = {
            "ID": str(cid),
            "ENTITY_ID": int(fields["ENTITY_ID"]),
            "ENTITY_TYPE": "deal",
            "COMMENT": fields["COMMENT"],
            "CREATED": stamp(),
        }
        return cid

    def comment_list(self, p: dict[str, Any]) -> tuple[list[Any], int, int | None]:
        return self.list_rows(self.comments, p)

    def userfield_add(self, userfields: dict[str, dict[str, Any]], p: dict[str, Any]) -> int:
        fields = {k.upper(): v for k, v in (p.get("fields") or {}).items()}
        code = str(fields.get("FIELD_NAME") or "")
        if not code:
            raise MethodError(400, "", "The 'FIELD_NAME' field is not found.")
        name = "UF_CRM_" + code.removeprefix("UF_CRM_")
        if not re.fullmatch(r"[A-Z0-9_]+", name):
            raise MethodError(
                400, "", "Field name contains invalid characters. Allowed characters are: A-Z, 0-9, and _."
            )
        if len(name) > UF_MAX:
            raise MethodError(400, "", f"Field name is too long (more than {UF_MAX} characters).")
        kind = str(fields.get("USER_TYPE_ID") or "")
        if not kind:
            raise MethodError(400, "", "The 'USER_TYPE_ID' field is not found.")
        if kind not in USER_TYPES:
            raise MethodError(400, "", "Invalid custom type specified")
        if name in userfields:
            raise MethodError(400, "", f"Field {name} already exists")
        label = fields.get("LABEL")
        uid = len(self.userfields) + len(self.contact_userfields) + 1
        userfields[name] = {
            "ID": str(uid),
            "ENTITY_ID": "CRM_DEAL" if userfields is self.userfields else "CRM_CONTACT",
            "FIELD_NAME": name,
            "USER_TYPE_ID": kind,
            "XML_ID": fields.get("XML_ID"),
            **{
                key: fields.get(key) or label
                for key in ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL")
            },
        }
        return uid

    def status_list(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        entity = str((p.get("filter") or {}).get("ENTITY_ID", "DEAL_STAGE"))
        return [
            {"ENTITY_ID": entity, "STATUS_ID": s, "NAME": s, "SORT": (i + 1) * 10}
            for i, s in enumerate(self.stage_lists.get(entity, []))
        ]

    def status_add(self, p: dict[str, Any]) -> int:
        fields = {k.upper(): v for k, v in (p.get("fields") or {}).items()}
        stages = self.stage_lists.setdefault(str(fields.get("ENTITY_ID")), [])
        if fields.get("STATUS_ID") in stages:
            raise MethodError(400, "", "Status already exists")
        stages.append(str(fields.get("STATUS_ID")))
        return len(stages)

    # -- what tests read -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The webhook path; prefix a fake's base URL to it."""
        return f"/rest/{self.user}/{self.code}/"

    def deal_by_payment(self, payment_id: str) -> dict[str, Any] | None:
        from stripeflow.tasks.crm.bitrix24 import PAYMENT_UF

        return next((d for d in self.deals.values() if d.get(PAYMENT_UF) == payment_id), None)

    def ready(self, language: str = "pl") -> FakeBitrix24:
        """As `stripeflow crm setup bitrix24` leaves it: the payment-id field, the payment fields
        and the contact's company and tax-id fields exist, labelled in `language`."""
        from stripeflow.tasks.crm.bitrix24 import Bitrix24CRM

        crm = Bitrix24CRM(webhook_url="http://portal.bitrix24.test" + self.url, language=language)
        try:
            for (entity, field), (kind, label) in crm._user_fields().items():
                table = self.userfields if entity == "deal" else self.contact_userfields
                if field not in table:
                    self.userfield_add(
                        table, {"fields": {"FIELD_NAME": field, "USER_TYPE_ID": kind, "LABEL": label}}
                    )
        finally:
            crm.close()
        return self
