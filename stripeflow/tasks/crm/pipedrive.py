"""Pipedrive adapter: v2 persons, deals, pipelines, stages and fields; v1 notes; no batch API.

A person is found by e-mail (`/api/v2/persons/search?fields=email&exact_match=true`), or without
one by a "Stripe customer id" person field; a deal by the "Stripe payment id" deal field
(`/api/v2/deals/search?fields=custom_fields&exact_match=true`), then PATCHed, or created.
That is two calls per record (search + write) where HubSpot needs a hundredth of one: the
vendor's reality. Ids found or made are remembered for the adapter's life, which saves the
search on a stage move and covers Pipedrive's search index lagging a fresh record.

Every catalogue field (`core.deal_fields`) is on the deal by default: amount and currency in the
deal's own `value` and `currency`, the rest in custom fields `setup` creates by name (the
catalogue's labels in `options.language`) and the adapter finds by name once, since Pipedrive
addresses them by 40-hex keys generated per account. A person carries its name, e-mail and phone
natively, and the company name and tax id (NIP) in two person fields of its own: an organisation
per company would cost a search and a create per contact, and the company rarely is the customer.
`/v1/pipelines` and `/v1/stages` are out of support since 2026-08-01: the v2 ones replace them.
Creates carry no key: a lost answer is never resent. The batch looks again first
(`common.look_first`), and for what lost its answer it also reads the newest persons or deals
(`GET /api/v2/deals?sort_by=id&sort_direction=desc`), which show a record the moment it is
written where search may lag it; a note is found on its deal (`GET /v1/notes?deal_id=`) by its marker.

Limits: the client keeps to the burst window itself; a 429 waits what Pipedrive says (Retry-After,
`x-ratelimit-reset`), or escapes for an hour when `x-daily-ratelimit-token-remaining` is 0. Sending
into 429s gets the token blocked by Cloudflare (a 403 with an HTML page): that is a wait, not a
refused token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, Unpack, cast

import httpx

from stripeflow.core.config import STAGE_NAMES, CRMTarget
from stripeflow.core.deal_fields import DEAL_FIELDS, resolve_mapping
from stripeflow.core.errors import (
    AuthError,
    OutcomeUnknownError,
    PermanentError,
    RetriableError,
    VendorError,
)
from stripeflow.core.http import CursorPaginator, OffsetPaginator, Paginator
from stripeflow.tasks.crm.base import ContactInput, DealInput, NoteInput, has_marker
from stripeflow.tasks.crm.common import (
    CheckReport,
    Remembered,
    Seams,
    SetupReport,
    TokenAPI,
    configure,
    look_first,
    payment_fields,
    plain,
    unique_by,
)

VENDOR = "pipedrive"
DEAL_FIELD = "Stripe payment id"  # the key: not translated, so a language switch still finds it
PERSON_FIELD = "Stripe customer id"
OPTIONS: dict[str, type | tuple[type, ...]] = {
    "pipeline": str,
    "deal_field_key": str,
    "person_field_key": str,
}
FIELD_NAME = (
    r"[0-9a-f]{40}|[a-z][a-z_]*",
    "a Pipedrive field key (40-hex, or a standard deal field such as expected_close_date)",
)
STATUS = {"paid": "won", "invoiced": "won", "failed": "lost", "refunded": "lost"}  # else open
CUSTOM_KEY = re.compile(r"[0-9a-f]{40}")
CUSTOM = "custom:"  # a DEFAULT_FIELDS value: the custom field `setup` makes for that catalogue field
# where each catalogue field lives: Pipedrive's own value/currency, a custom field for the rest
DEFAULT_FIELDS: dict[str, str] = {
    f.name: {"amount": "value", "currency": "currency"}.get(f.name, CUSTOM + f.name) for f in DEAL_FIELDS
}
FIELD_TYPES = {"number": "double", "text": "varchar", "date": "date", "url": "text"}  # url: > 255 chars
PERSON_LABELS = {"company": ("Firma", "Company"), "tax_id": ("NIP", "Tax ID")}
DAILY_WAIT = 3600.0  # the day's token budget is spent: let the task's retries come back later
CLOUDFLARE_WAIT = 600.0  # blocked at the edge for sending into 429s: stay away for a while
MIN_429_WAIT = 1.0  # never straight back into a 429: that is how a token gets blocked
RECENT = 500  # newest records read after a lost create: one page, more than a batch makes
T = TypeVar("T", bound=Hashable)


def is_custom_key(name: str) -> bool:
    """Pipedrive custom fields are addressed by a 40-hex key; anything else is a standard field."""
    return bool(CUSTOM_KEY.fullmatch(name))


def deal_field_specs(language: str) -> dict[str, tuple[str, str]]:
    """Logical field -> (name, field_type) of each deal custom field the catalogue needs."""
    specs = {
        f.name: (f.label(language), FIELD_TYPES[f.type])
        for f in DEAL_FIELDS
        if DEFAULT_FIELDS[f.name].startswith(CUSTOM)
    }
    specs["payment_id"] = (DEAL_FIELD, "varchar")  # the catalogue's id is the key field itself
    return specs


def person_field_specs(language: str) -> dict[str, tuple[str, str]]:
    """Contact field -> (name, field_type) of each person custom field."""
    specs = {"customer_id": (PERSON_FIELD, "varchar")}
    for name, (pl, en) in PERSON_LABELS.items():
        specs[name] = (pl if language == "pl" else en, "varchar")
    return specs


def other_language(language: str) -> str:
    return "en" if language == "pl" else "pl"


def value(v: Any) -> Any:
    """A field value as Pipedrive's v2 JSON types it: numbers as numbers, dates as YYYY-MM-DD."""
    if isinstance(v, Decimal):
        return float(v)  # JSON has no decimals; 15 significant digits hold any amount we see
    if isinstance(v, date) and not isinstance(v, datetime):
        return v.isoformat()
    return plain(v)


def rate_limit_wait(response: httpx.Response) -> float | None:
    """Seconds to wait on a Pipedrive 429: an hour when the daily token budget is spent, else
    Retry-After, else `x-ratelimit-reset` (at least `MIN_429_WAIT`)."""
    left = response.headers.get("x-daily-ratelimit-token-remaining")
    if left is not None:
        try:
            if float(left) <= 0:
                return DAILY_WAIT
        except ValueError:
            pass
    for header in ("retry-after", "x-ratelimit-reset"):
        given = response.headers.get(header)
        if given:
            try:
                return max(MIN_429_WAIT, float(given))
            except ValueError:
                continue
    return None


def is_cloudflare_block(response: httpx.Response) -> bool:
    """A 403 from Pipedrive's edge (an HTML page), not Pipedrive's own JSON refusal of a token."""
    kind = response.headers.get("content-type", "")
    return response.status_code == 403 and (
        "html" in kind or response.headers.get("server", "").lower() == "cloudflare"
    )


class PipedriveAPI(TokenAPI):
    vendor = VENDOR
    limit = (20, 2.0)  # the per-user burst limit over a rolling 2 s
    search_limit = (10, 2.0)  # the search endpoints' own, lower burst limit
    auth = ("x-api-token", "{}")

    def request_id(self, response: httpx.Response) -> str | None:
        return response.headers.get("x-request-id") or response.headers.get("cf-ray")

    def error_message(self, response: httpx.Response) -> tuple[str, str | None]:
        try:
            body = response.json()
        except ValueError:
            return super().error_message(response)
        if isinstance(body, dict) and body.get("success") is False:
            message = str(body.get("error") or "error")
            if body.get("error_info"):
                message += f" ({body['error_info']})"
            code = body.get("errorCode") or body.get("code")
            return message, str(code) if code is not None else None
        return super().error_message(response)

    def classify(self, response: httpx.Response) -> VendorError | None:
        if is_cloudflare_block(response):
            return RetriableError(
                "blocked by Cloudflare after repeated 429s (not a refused token); waiting before "
                "sending again",
                vendor=VENDOR,
                status=403,
                request_id=self.request_id(response),
                wait=CLOUDFLARE_WAIT,
            )
        return super().classify(response)

    def retry_after(self, response: httpx.Response) -> float | None:
        if response.status_code == 429:
            return rate_limit_wait(response)
        return super().retry_after(response)

    def data(self, method: str, path: str, **kw: Any) -> Any:
        body = self.request_json(method, path, **kw)
        return body.get("data") if isinstance(body, dict) else None

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every record of a v2 list, 500 a page, following `additional_data.next_cursor`."""
        pager = cast(Paginator, CursorPaginator("data", "additional_data.next_cursor", "cursor"))
        yield from self.paginate("GET", path, pager, params={"limit": 500, **params})


@dataclass
class Schema:
    """What Pipedrive calls things in this account, looked up once."""

    deal_key: str | None = None
    person_key: str | None = None
    pipeline_id: int | None = None
    stage_ids: dict[str, int] = field(default_factory=dict)  # stage name -> id, in our pipeline
    deal_fields: dict[str, str] = field(default_factory=dict)  # logical field -> key, found by name
    person_fields: dict[str, str] = field(default_factory=dict)  # company / tax_id -> key


class PipedriveCRM:
    """The `CRM` protocol over Pipedrive, one record per call."""

    batch_size = 100
    parallel = 4  # batches in flight at once; the rate limiter is shared by them

    def __init__(
        self,
        *,
        api_token: str,
        base_url: str = "https://api.pipedrive.com",
        stages: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        pipeline: str = "Stripe",
        language: str = "pl",
        deal_field_key: str | None = None,
        person_field_key: str | None = None,
        requests_per_2s: int = 20,
        searches_per_2s: int = 10,
        name: str = "pipedrive",
        **seams: Unpack[Seams],
    ) -> None:
        self.name = name
        self.language = language
        self.stages = {**STAGE_NAMES.get(language, STAGE_NAMES["pl"]), **(stages or {})}
        self.fields = dict(fields or {})
        self.mapping = resolve_mapping(DEFAULT_FIELDS, self.fields)  # logical -> Pipedrive field
        self.pipeline = pipeline
        self.api = PipedriveAPI(
            base_url, api_token, requests=requests_per_2s, searches=searches_per_2s, **seams
        )
        self._given = Schema(deal_field_key, person_field_key)
        self._schema: Schema | None = None
        self._persons: dict[str, int] = {}  # contact key -> person id
        self._deals: dict[str, int] = {}  # payment id -> deal id
        self._lost: set[str] = set()  # contact keys and payment ids whose create answer was lost
        self._notes: Remembered[NoteInput] = Remembered()

    @classmethod
    def from_target(
        cls,
        target: CRMTarget,
        home: Path,
        *,
        env: Mapping[str, str] | None = None,
        language: str | None = None,
        **kw: Any,
    ) -> PipedriveCRM:
        from stripeflow.blocks.crm import PipedriveCredentials

        chosen = str(target.options.get("language") or language or "pl")
        labels = STAGE_NAMES.get(chosen, STAGE_NAMES["pl"])
        block, args = configure(
            VENDOR, target, env, PipedriveCredentials, OPTIONS, FIELD_NAME, labels, language=language
        )
        return cls(
            api_token=block.api_token.get_secret_value(),
            base_url=block.base_url,
            requests_per_2s=block.requests_per_2s,
            searches_per_2s=block.searches_per_2s,
            **args,
            **kw,
        )

    # -- account schema --------------------------------------------------------------------------

    def _field_list(self, kind: str) -> list[dict[str, Any]]:
        """`GET /api/v2/dealFields|personFields`: every field, standard and custom."""
        return list(self.api.pages(f"/api/v2/{kind}"))

    def _by_name(self, fields: list[dict[str, Any]]) -> dict[str, str]:
        """Custom field name (trimmed, any case) -> key; the first of two with one name wins."""
        named: dict[str, str] = {}
        for f in fields:
            if f.get("is_custom_field", True):
                named.setdefault(str(f.get("field_name", "")).strip().lower(), str(f["field_code"]))
        return named

    def _needed(self, kind: str) -> dict[str, tuple[str, str]]:
        """Logical field -> (name, type) of each custom field this configuration writes."""
        if kind == "personFields":
            return person_field_specs(self.language)
        specs = deal_field_specs(self.language)
        wanted = {n[len(CUSTOM) :] for n in self.mapping.values() if n.startswith(CUSTOM)}
        return {k: v for k, v in specs.items() if k in wanted or k == "payment_id"}

    def _resolve(self, kind: str, fields: list[dict[str, Any]]) -> dict[str, str | None]:
        """Logical field -> key of its custom field (its name in this language, else the other
        one, so switching `language` does not make a second set), None when it is missing."""
        named = self._by_name(fields)
        other = deal_field_specs if kind == "dealFields" else person_field_specs
        alt = other(other_language(self.language))
        return {
            logical: named.get(name.lower()) or named.get(alt[logical][0].lower())
            for logical, (name, _) in self._needed(kind).items()
        }

    def _pipeline_id(self) -> int | None:
        if self.pipeline.isdigit():
            return int(self.pipeline)
        for p in self.api.pages("/api/v2/pipelines"):
            if str(p["name"]).strip().lower() == self.pipeline.lower() and not p.get("is_deleted"):
                return int(p["id"])
        return None

    def _stage_ids(self, pipeline_id: int) -> dict[str, int]:
        return {
            str(s["name"]): int(s["id"])
            for s in self.api.pages("/api/v2/stages", pipeline_id=pipeline_id)
            if not s.get("is_deleted")
        }

    def schema(self) -> Schema:
        if self._schema is None:
            deal = self._resolve("dealFields", self._field_list("dealFields"))
            person = self._resolve("personFields", self._field_list("personFields"))
            s = Schema(
                self._given.deal_key or deal.pop("payment_id"),
                self._given.person_key or person.pop("customer_id"),
                self._pipeline_id(),
            )
            deal.pop("payment_id", None)
            person.pop("customer_id", None)
            if s.pipeline_id is not None:
                s.stage_ids = self._stage_ids(s.pipeline_id)
            missing = [
                f"deal field {deal_field_specs(self.language)[k][0]!r}" for k, v in deal.items() if not v
            ]
            if s.deal_key is None:
                missing.insert(0, f"deal field {DEAL_FIELD!r}")
            if s.pipeline_id is None:
                missing.append(f"pipeline {self.pipeline!r}")
            if missing:
                raise PermanentError(
                    f"{', '.join(missing)} missing in Pipedrive: run `stripeflow crm setup pipedrive`"
                    ' (or drop a field with `[crm.fields] <name> = ""`)',
                    vendor=VENDOR,
                )
            s.deal_fields = {k: v for k, v in deal.items() if v} | {"payment_id": str(s.deal_key)}
            s.person_fields = {k: v for k, v in person.items() if v}
            self._schema = s
        return self._schema

    def stage_id(self, logical: str) -> int:
        stage = self.stages.get(logical, logical)
        if stage.isdigit():
            return int(stage)
        found = self.schema().stage_ids.get(stage)
        if found is None:
            raise PermanentError(
                f"stage {stage!r} is not in pipeline {self.pipeline!r}: run `stripeflow crm setup pipedrive`",
                vendor=VENDOR,
            )
        return found

    # -- contacts ------------------------------------------------------------------------------

    def _search(self, kind: str, term: str, fields: str) -> dict[str, Any] | None:
        data = self.api.data(
            "GET",
            f"/api/v2/{kind}/search",
            params={"term": term, "fields": fields, "exact_match": "true", "limit": 1},
        )
        items = (data or {}).get("items") or []
        return items[0]["item"] if items else None

    def _person_custom(self, c: ContactInput) -> dict[str, Any]:
        """The person's custom fields we hold a value for; a missing field asks for `setup`."""
        schema = self.schema()
        custom: dict[str, Any] = {}
        if c.customer_id and schema.person_key:
            custom[schema.person_key] = c.customer_id
        for name, held in (("company", c.company), ("tax_id", c.tax_id)):
            if not held:
                continue
            key = schema.person_fields.get(name)
            if key is None:
                label = person_field_specs(self.language)[name][0]
                raise PermanentError(
                    f"person field {label!r} is missing: run `stripeflow crm setup pipedrive`", vendor=VENDOR
                )
            custom[key] = held
        return custom

    def _upsert_person(self, c: ContactInput) -> int:
        if c.key in self._persons:
            return self._persons[c.key]
        person_key = self.schema().person_key
        if c.email:
            found = self._search("persons", c.email.lower(), "email")
        elif c.customer_id and person_key:
            found = self._search("persons", c.customer_id, "custom_fields")
        else:
            raise PermanentError("a contact has neither an e-mail nor a Stripe customer id", vendor=VENDOR)
        custom = self._person_custom(c)
        if found is None and c.key in self._lost:
            found = self._recent("persons", lambda p: _is_person(p, c, person_key))
        if found is not None:
            pid = int(found["id"])
            patch: dict[str, Any] = {}
            if c.name and found.get("name") != c.name:
                patch["name"] = c.name
            phones = [str(p) for p in found.get("phones") or []]
            if c.phone and c.phone not in phones:  # ours first, theirs kept
                patch["phones"] = [{"value": c.phone, "primary": True, "label": "work"}] + [
                    {"value": p, "primary": False, "label": "other"} for p in phones
                ]
            shown = {str(v) for v in found.get("custom_fields") or []}  # search shows values, not keys
            if any(str(v) not in shown for v in custom.values()):
                patch["custom_fields"] = custom
            if patch:
                self.api.data("PATCH", f"/api/v2/persons/{pid}", json=patch)
        else:
            body: dict[str, Any] = {"name": c.name or c.email or c.customer_id}
            if c.email:
                body["emails"] = [{"value": c.email.lower(), "primary": True, "label": "work"}]
            if c.phone:
                body["phones"] = [{"value": c.phone, "primary": True, "label": "work"}]
            if custom:
                body["custom_fields"] = custom
            pid = int(self._create("/api/v2/persons", body, c.key)["id"])
        self._lost.discard(c.key)
        self._persons[c.key] = pid
        return pid

    def _create(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        """POST a create that carries no key; a lost answer marks `key` so the next look also
        reads the newest records, which (unlike search) show a record the moment it is written."""
        try:
            return cast(dict[str, Any], self.api.data("POST", path, json=body, idempotent=False))
        except OutcomeUnknownError:
            self._lost.add(key)
            raise

    def _recent(
        self, kind: str, match: Callable[[dict[str, Any]], bool], **params: Any
    ) -> dict[str, Any] | None:
        """The newest `RECENT` persons or deals (`GET /api/v2/{kind}`, newest first), the one
        `match` accepts: where a create whose answer was lost shows before search catches up."""
        rows = self.api.data(
            "GET",
            f"/api/v2/{kind}",
            params={"sort_by": "id", "sort_direction": "desc", "limit": RECENT, **params},
        )
        return next((r for r in rows or [] if match(r)), None)

    def keys_contact(self, email: str | None) -> bool:
        return False  # persons are searched for, then created: nothing keys the create

    def upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        # POST /persons carries no key: a lost answer is looked for (search, then the newest
        # persons), not resent
        return look_first(
            self._upsert_contacts, contacts, vendor=VENDOR, consistent=False, sleep=self.api.sleep
        )

    def _upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        chosen, positions = unique_by(contacts, key=lambda c: c.key)
        ids = [str(self._upsert_person(c)) for c in chosen]
        return [ids[p] for p in positions]

    # -- deals ---------------------------------------------------------------------------------

    def _target(self, crm_field: str) -> str:
        """A mapping's Pipedrive field as a key: our custom fields resolved by name."""
        if crm_field.startswith(CUSTOM):
            return self.schema().deal_fields[crm_field[len(CUSTOM) :]]
        return crm_field

    def _deal_body(self, d: DealInput) -> dict[str, Any]:
        schema = self.schema()
        body: dict[str, Any] = {
            "title": d.title,
            "pipeline_id": schema.pipeline_id,
            "stage_id": self.stage_id(d.stage),
            "status": STATUS.get(d.stage, "open"),
        }
        if d.contact_id:
            body["person_id"] = int(d.contact_id)
        mapping = {name: self._target(crm) for name, crm in self.mapping.items()}
        custom: dict[str, Any] = {}
        given = {k: v for k, v in d.fields.items() if k and not k.startswith(CUSTOM)}  # "" = dropped
        for key, v in {**given, **payment_fields(d.payment, mapping, value, d.catalogue)}.items():
            (custom if is_custom_key(key) else body)[key] = v
        if "currency" in body:
            body["currency"] = str(body["currency"]).upper()
        custom[str(schema.deal_key)] = d.payment_id  # the key, whatever the mapping says
        body["custom_fields"] = custom
        return body

    def _upsert_deal(self, d: DealInput) -> int:
        body = self._deal_body(d)
        deal_id = self._deals.get(d.payment_id)
        if deal_id is None:
            found = self._search("deals", d.payment_id, "custom_fields")
            if found is None and d.payment_id in self._lost:
                key = str(self.schema().deal_key)
                found = self._recent(
                    "deals",
                    lambda r: (r.get("custom_fields") or {}).get(key) == d.payment_id,
                    pipeline_id=self.schema().pipeline_id,
                )
            deal_id = int(found["id"]) if found else None
        if deal_id is not None:
            self.api.data("PATCH", f"/api/v2/deals/{deal_id}", json=body)
        else:
            deal_id = int(self._create("/api/v2/deals", body, d.payment_id)["id"])
        self._lost.discard(d.payment_id)
        self._deals[d.payment_id] = deal_id
        return deal_id

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        # POST /deals carries no key: a lost answer is looked for (search, then the newest deals)
        return look_first(self._upsert_deals, deals, vendor=VENDOR, consistent=False, sleep=self.api.sleep)

    def _upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        chosen, positions = unique_by(deals, key=lambda d: d.payment_id)
        ids = [str(self._upsert_deal(d)) for d in chosen]
        return [ids[p] for p in positions]

    # -- notes ---------------------------------------------------------------------------------

    def add_notes(self, notes: Sequence[NoteInput]) -> list[str]:
        return _each_once(
            notes,
            self._notes,
            lambda n: str(
                self.api.data(
                    "POST",
                    "/v1/notes",
                    json={"content": n.text("<br>"), "deal_id": int(n.deal_id)},  # content is HTML
                    idempotent=False,
                )["id"]
            ),
        )

    def find_notes(self, notes: Sequence[NoteInput]) -> list[str | None]:
        """Each deal's notes (`GET /v1/notes?deal_id=`, start/limit pages), matched by marker."""
        pages = cast(Paginator, OffsetPaginator("data", "additional_data.pagination.next_start", "start"))
        on_deal: dict[str, list[dict[str, Any]]] = {}
        for deal in dict.fromkeys(n.deal_id for n in notes if n.marker):
            on_deal[deal] = list(
                self.api.paginate(
                    "GET", "/v1/notes", pages, params={"deal_id": int(deal), "limit": 500, "sort": "id ASC"}
                )
            )
        return [
            next(
                (str(r["id"]) for r in on_deal.get(n.deal_id, []) if has_marker(r.get("content"), n.marker)),
                None,
            )
            for n in notes
        ]

    def close(self) -> None:
        self.api.close()

    # -- setup and check -----------------------------------------------------------------------

    def _create_once(self, path: str, body: dict[str, Any], answer_key: str, find: Callable[[], Any]) -> str:
        """POST a create that carries no key; when its answer is lost, look (these lists are
        consistent) before anything is sent again, so a lost answer never makes a second one."""
        try:
            return str(self.api.data("POST", path, json=body, idempotent=False)[answer_key])
        except OutcomeUnknownError:
            found = find()
            if found is None:
                raise
            return str(found)

    def _setup_fields(self, kind: str, given: str | None, report: SetupReport) -> None:
        keys = self._resolve(kind, self._field_list(kind))
        key_field = "payment_id" if kind == "dealFields" else "customer_id"
        for logical, (name, field_type) in self._needed(kind).items():
            key = given if logical == key_field and given else keys[logical]
            if key is None:

                def find(logical: str = logical) -> str | None:
                    return self._resolve(kind, self._field_list(kind))[logical]

                body = {"field_name": name, "field_type": field_type}
                key = self._create_once(f"/api/v2/{kind}", body, "field_code", find)
                report.add(f"{kind} {name!r}", "created", key)
            else:
                report.add(f"{kind} {name!r}", "exists", key)
            report.mapping[f"{kind}.{logical}"] = key

    def setup(self) -> SetupReport:
        """Create the custom fields (labels in `language`), the pipeline and its missing stages;
        idempotent."""
        report = SetupReport(VENDOR)
        self._setup_fields("dealFields", self._given.deal_key, report)
        self._setup_fields("personFields", self._given.person_key, report)
        pipeline_id = self._pipeline_id()
        if pipeline_id is None:
            pipeline_id = int(
                self._create_once("/api/v2/pipelines", {"name": self.pipeline}, "id", self._pipeline_id)
            )
            report.add(f"pipeline {self.pipeline!r}", "created", str(pipeline_id))
        else:
            report.add(f"pipeline {self.pipeline!r}", "exists", str(pipeline_id))
        existing = self._stage_ids(pipeline_id)
        for logical, stage in self.stages.items():
            if stage.isdigit():
                report.add(f"stage {logical}", "exists", f"id {stage} (given)")
            elif stage in existing:
                report.add(f"stage {logical} {stage!r}", "exists", str(existing[stage]))
            else:

                def find(stage: str = stage, pipeline_id: int = pipeline_id) -> int | None:
                    return self._stage_ids(pipeline_id).get(stage)

                body = {"name": stage, "pipeline_id": pipeline_id}
                existing[stage] = int(self._create_once("/api/v2/stages", body, "id", find))
                report.add(f"stage {logical} {stage!r}", "created", str(existing[stage]))
            report.mapping[f"stage.{logical}"] = f"{stage} ({stage if stage.isdigit() else existing[stage]})"
        report.mapping.update({f"field.{k}": v for k, v in self.mapping.items()})
        self._schema = None
        return report

    def check(self) -> CheckReport:
        """Try the token (and say what is left of the day's budget), every custom field, the
        pipeline, its stages and the fields the mapping names."""
        report = CheckReport(VENDOR)
        try:
            answer = self.api.request("GET", "/v1/users/me")
            me = (answer.json() or {}).get("data") or {}
            report.ok.append(f"token accepted (user {me.get('email') or me.get('id')})")
            budget = answer.headers.get("x-daily-ratelimit-token-remaining")
            if budget is not None:
                report.ok.append(f"{budget} API tokens left of today's budget")
        except AuthError as exc:
            report.problems.append(
                f"API token refused ({exc.message}); copy it from Settings > Personal "
                "preferences > API into the block or PIPEDRIVE_API_TOKEN"
            )
            return report
        except VendorError as exc:
            report.problems.append(f"cannot reach Pipedrive at {self.api.base_url}: {exc}")
            return report
        deal_list = self._field_list("dealFields")
        for kind, fields in (("dealFields", deal_list), ("personFields", self._field_list("personFields"))):
            keys = self._resolve(kind, fields)
            option, given = (
                ("deal_field_key", self._given.deal_key)
                if kind == "dealFields"
                else ("person_field_key", self._given.person_key)
            )
            for logical, (name, _) in self._needed(kind).items():
                if given and logical in ("payment_id", "customer_id"):  # the key field, named by key
                    if given not in {str(f["field_code"]) for f in fields}:
                        report.problems.append(f"options.{option}: no {kind} field with key {given!r}")
                elif keys[logical] is not None:
                    report.ok.append(f"{kind} {name!r} exists")
                elif kind == "dealFields" and logical != "payment_id":
                    report.problems.append(
                        f"fields.{logical}: no deal field {name!r}: run `stripeflow crm setup pipedrive`, "
                        f'or drop it with `[crm.fields] {logical} = ""`'
                    )
                else:
                    report.problems.append(
                        f"{kind} {name!r} is missing: run `stripeflow crm setup pipedrive`"
                    )
        pipeline_id = self._pipeline_id()
        if pipeline_id is None:
            report.problems.append(f"pipeline {self.pipeline!r} is missing (options.pipeline): run setup")
        else:
            existing = self._stage_ids(pipeline_id)
            for logical, stage in self.stages.items():
                if not stage.isdigit() and stage not in existing:
                    report.problems.append(
                        f"stages.{logical}: no stage {stage!r} in pipeline {self.pipeline!r}"
                    )
        deal_keys = {str(f["field_code"]) for f in deal_list}
        for logical, key in self.mapping.items():
            if not key.startswith(CUSTOM) and key not in deal_keys:
                report.problems.append(f"fields.{logical}: no deal field with key {key!r}")
        return report


def _is_person(record: dict[str, Any], c: ContactInput, person_key: str | None) -> bool:
    """Whether a listed person (v2 shape) is this contact: its e-mail, else its customer id."""
    if c.email:
        return any(str(e.get("value", "")).lower() == c.email.lower() for e in record.get("emails") or [])
    return bool(person_key) and (record.get("custom_fields") or {}).get(person_key) == c.customer_id


def _each_once(items: Sequence[T], memory: Remembered[T], create: Callable[[T], str]) -> list[str]:
    """Create each item (no key, no batch API); when one fails, the ones made so far are remembered
    so the halves `call_in_batches` sends again do not create them twice."""
    ids: list[str | None] = [memory.pop(item) for item in items]
    with memory.kept_on_error(items, ids):
        for i, item in enumerate(items):
            if ids[i] is None:
                ids[i] = create(item)
    return [str(i) for i in ids]
