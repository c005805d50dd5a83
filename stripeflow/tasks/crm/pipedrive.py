"""Pipedrive adapter: v2 persons and deals, v1 notes; no batch API, so batches are loops.

A person is found by e-mail (`/api/v2/persons/search?fields=email&exact_match=true`), or without
one by a "Stripe customer id" person field; a deal by the "Stripe payment id" deal field
(`/api/v2/deals/search?fields=custom_fields&exact_match=true`), then PATCHed, or created.
That is two calls per record (search + write) where HubSpot needs a hundredth of one: the
vendor's reality. Ids found or made are remembered for the adapter's life, which saves the
search on a stage move and covers Pipedrive's search index lagging a fresh record.
Field keys (40-character hashes), the pipeline and its stage ids are looked up by name once.
Creates carry no key: a lost answer is never resent; the task's retry searches again first, and a
note is found on its deal (`GET /v1/notes?deal_id=`) by its marker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Unpack, cast

import httpx

from stripeflow.core.config import STAGE_NAMES, CRMTarget
from stripeflow.core.errors import AuthError, PermanentError, VendorError
from stripeflow.core.http import (
    OffsetPaginator,
    Paginator,
)
from stripeflow.tasks.crm.base import ContactInput, DealInput, NoteInput, has_marker
from stripeflow.tasks.crm.common import (
    CheckReport,
    Remembered,
    Seams,
    SetupReport,
    TokenAPI,
    configure,
    look_first,
    mapped_fields,
    unique_by,
)

VENDOR = "pipedrive"
DEAL_FIELD = "Stripe payment id"
PERSON_FIELD = "Stripe customer id"
OPTIONS: dict[str, type | tuple[type, ...]] = {
    "pipeline": str,
    "language": str,
    "deal_field_key": str,
    "person_field_key": str,
}
FIELD_NAME = (
    r"[0-9a-f]{40}|[a-z][a-z_]*",
    "a Pipedrive field key (40-hex, or a standard deal field such as expected_close_date)",
)
STATUS = {"paid": "won", "invoiced": "won", "failed": "lost", "refunded": "lost"}  # else open
CUSTOM_KEY = re.compile(r"[0-9a-f]{40}")
T = TypeVar("T", bound=Hashable)


def is_custom_key(name: str) -> bool:
    """Pipedrive custom fields are addressed by a 40-hex key; anything else is a standard field."""
    return bool(CUSTOM_KEY.fullmatch(name))


def rate_limit_wait(response: httpx.Response) -> float | None:
    """Seconds to wait on a Pipedrive 429: Retry-After, else `x-ratelimit-reset`.

    A spent daily token budget waits an hour, which escapes to the task's own retries.
    """
    if response.headers.get("x-daily-requests-left") == "0":
        return 3600.0
    for header in ("retry-after", "x-ratelimit-reset"):
        value = response.headers.get(header)
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                continue
    return None


class PipedriveAPI(TokenAPI):
    vendor = VENDOR
    limit = (20, 2.0)  # the per-user burst limit over a rolling 2 s
    search_limit = (10, 2.0)  # the search endpoints' own, lower burst limit
    auth = ("x-api-token", "{}")

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

    def retry_after(self, response: httpx.Response) -> float | None:
        if response.status_code == 429:
            return rate_limit_wait(response)
        return super().retry_after(response)

    def data(self, method: str, path: str, **kw: Any) -> Any:
        body = self.request_json(method, path, **kw)
        return body.get("data") if isinstance(body, dict) else None


@dataclass
class Schema:
    """What Pipedrive calls things in this account, looked up once."""

    deal_key: str | None = None
    person_key: str | None = None
    pipeline_id: int | None = None
    stage_ids: dict[str, int] = field(default_factory=dict)  # stage name -> id, in our pipeline


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
        self.stages = {**STAGE_NAMES.get(language, STAGE_NAMES["pl"]), **(stages or {})}
        self.fields = dict(fields or {})
        self.pipeline = pipeline
        self.api = PipedriveAPI(
            base_url, api_token, requests=requests_per_2s, searches=searches_per_2s, **seams
        )
        self._given = Schema(deal_field_key, person_field_key)
        self._schema: Schema | None = None
        self._persons: dict[str, int] = {}  # contact key -> person id
        self._deals: dict[str, int] = {}  # payment id -> deal id
        self._notes: Remembered[NoteInput] = Remembered()

    @classmethod
    def from_target(
        cls, target: CRMTarget, home: Path, *, env: Mapping[str, str] | None = None, **kw: Any
    ) -> PipedriveCRM:
        from stripeflow.blocks.crm import PipedriveCredentials

        labels = STAGE_NAMES.get(str(target.options.get("language", "pl")), STAGE_NAMES["pl"])
        block, args = configure(VENDOR, target, env, PipedriveCredentials, OPTIONS, FIELD_NAME, labels)
        return cls(
            api_token=block.api_token.get_secret_value(),
            base_url=block.base_url,
            requests_per_2s=block.requests_per_2s,
            searches_per_2s=block.searches_per_2s,
            **args,
            **kw,
        )

    # -- account schema --------------------------------------------------------------------------

    def _field_key(self, kind: str, name: str) -> str | None:
        pages = cast(Paginator, OffsetPaginator("data", "additional_data.pagination.next_start", "start"))
        for f in self.api.paginate("GET", f"/v1/{kind}", pages, params={"limit": 500}):
            if str(f.get("name", "")).strip().lower() == name.lower():
                return str(f["key"])
        return None

    def _pipeline_id(self) -> int | None:
        if self.pipeline.isdigit():
            return int(self.pipeline)
        for p in self.api.data("GET", "/v1/pipelines") or []:
            if str(p["name"]).strip().lower() == self.pipeline.lower():
                return int(p["id"])
        return None

    def _stage_ids(self, pipeline_id: int) -> dict[str, int]:
        return {
            str(s["name"]): int(s["id"])
            for s in self.api.data("GET", "/v1/stages", params={"pipeline_id": pipeline_id}) or []
        }

    def schema(self) -> Schema:
        if self._schema is None:
            s = Schema(
                self._given.deal_key or self._field_key("dealFields", DEAL_FIELD),
                self._given.person_key or self._field_key("personFields", PERSON_FIELD),
                self._pipeline_id(),
            )
            if s.pipeline_id is not None:
                s.stage_ids = self._stage_ids(s.pipeline_id)
            if s.deal_key is None or s.pipeline_id is None:
                raise PermanentError(
                    f"deal field {DEAL_FIELD!r} or pipeline {self.pipeline!r} is missing: run "
                    "`stripeflow crm setup pipedrive`",
                    vendor=VENDOR,
                )
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
        if found is not None:
            if c.name and found.get("name") != c.name:
                self.api.data("PATCH", f"/api/v2/persons/{found['id']}", json={"name": c.name})
            pid = int(found["id"])
        else:
            body: dict[str, Any] = {"name": c.name or c.email or c.customer_id}
            if c.email:
                body["emails"] = [{"value": c.email.lower(), "primary": True, "label": "work"}]
            if c.customer_id and person_key:
                body["custom_fields"] = {person_key: c.customer_id}
            pid = int(self.api.data("POST", "/api/v2/persons", json=body, idempotent=False)["id"])
        self._persons[c.key] = pid
        return pid

    def keys_contact(self, email: str | None) -> bool:
        return False  # persons are searched for, then created: nothing keys the create

    def upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        # POST /persons carries no key: a lost answer is looked for by the search, not resent
        return look_first(
            self._upsert_contacts, contacts, vendor=VENDOR, consistent=False, sleep=self.api.sleep
        )

    def _upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        chosen, positions = unique_by(contacts, key=lambda c: c.key)
        ids = [str(self._upsert_person(c)) for c in chosen]
        return [ids[p] for p in positions]

    # -- deals ---------------------------------------------------------------------------------

    def _deal_body(self, d: DealInput) -> dict[str, Any]:
        schema = self.schema()
        body: dict[str, Any] = {
            "title": d.title,
            "value": float(d.amount),
            "currency": d.currency.upper(),
            "pipeline_id": schema.pipeline_id,
            "stage_id": self.stage_id(d.stage),
            "status": STATUS.get(d.stage, "open"),
        }
        if d.contact_id:
            body["person_id"] = int(d.contact_id)
        custom: dict[str, Any] = {str(schema.deal_key): d.payment_id}
        for key, value in mapped_fields(d, self.fields).items():
            (custom if is_custom_key(key) else body)[key] = value
        body["custom_fields"] = custom
        return body

    def _upsert_deal(self, d: DealInput) -> int:
        body = self._deal_body(d)
        deal_id = self._deals.get(d.payment_id)
        if deal_id is None:
            found = self._search("deals", d.payment_id, "custom_fields")
            deal_id = int(found["id"]) if found else None
        if deal_id is not None:
            self.api.data("PATCH", f"/api/v2/deals/{deal_id}", json=body)
        else:
            deal_id = int(self.api.data("POST", "/api/v2/deals", json=body, idempotent=False)["id"])
        self._deals[d.payment_id] = deal_id
        return deal_id

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        # POST /deals carries no key: a lost answer is looked for by payment id, not resent
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

    def setup(self) -> SetupReport:
        """Create the two custom fields, the pipeline and its missing stages; idempotent."""
        report = SetupReport(VENDOR)
        for kind, name, given in (
            ("dealFields", DEAL_FIELD, self._given.deal_key),
            ("personFields", PERSON_FIELD, self._given.person_key),
        ):
            key = given or self._field_key(kind, name)
            if key is None:
                key = str(
                    self.api.data("POST", f"/v1/{kind}", json={"name": name, "field_type": "varchar"})["key"]
                )
                report.add(f"{kind} {name!r}", "created", key)
            else:
                report.add(f"{kind} {name!r}", "exists", key)
            report.mapping[f"{kind}.{name}"] = key
        pipeline_id = self._pipeline_id()
        if pipeline_id is None:
            pipeline_id = int(self.api.data("POST", "/v1/pipelines", json={"name": self.pipeline})["id"])
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
                existing[stage] = int(
                    self.api.data("POST", "/v1/stages", json={"name": stage, "pipeline_id": pipeline_id})[
                        "id"
                    ]
                )
                report.add(f"stage {logical} {stage!r}", "created", str(existing[stage]))
            report.mapping[f"stage.{logical}"] = f"{stage} ({stage if stage.isdigit() else existing[stage]})"
        report.mapping.update({f"field.{k}": v for k, v in self.fields.items()})
        self._schema = None
        return report

    def check(self) -> CheckReport:
        """Try the token, the two fields, the pipeline, its stages and the mapped fields."""
        report = CheckReport(VENDOR)
        try:
            me = self.api.data("GET", "/v1/users/me") or {}
            report.ok.append(f"token accepted (user {me.get('email') or me.get('id')})")
        except AuthError as exc:
            report.problems.append(
                f"API token refused ({exc.message}); copy it from Settings > Personal "
                "preferences > API into the block or PIPEDRIVE_API_TOKEN"
            )
            return report
        except VendorError as exc:
            report.problems.append(f"cannot reach Pipedrive at {self.api.base_url}: {exc}")
            return report
        for kind, name in (("dealFields", DEAL_FIELD), ("personFields", PERSON_FIELD)):
            if self._field_key(kind, name) is None:
                report.problems.append(f"{kind} {name!r} is missing: run `stripeflow crm setup pipedrive`")
            else:
                report.ok.append(f"{kind} {name!r} exists")
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
        deal_keys = {
            str(f["key"])
            for f in self.api.paginate(
                "GET",
                "/v1/dealFields",
                cast(Paginator, OffsetPaginator("data", "additional_data.pagination.next_start", "start")),
                params={"limit": 500},
            )
        }
        for payment_field, key in self.fields.items():
            if key not in deal_keys:
                report.problems.append(f"fields.{payment_field}: no deal field with key {key!r}")
        return report


def _each_once(items: Sequence[T], memory: Remembered[T], create: Callable[[T], str]) -> list[str]:
    """Create each item (no key, no batch API); when one fails, the ones made so far are remembered
    so the halves `call_in_batches` sends again do not create them twice."""
    ids: list[str | None] = [memory.pop(item) for item in items]
    with memory.kept_on_error(items, ids):
        for i, item in enumerate(items):
            if ids[i] is None:
                ids[i] = create(item)
    return [str(i) for i in ids]
