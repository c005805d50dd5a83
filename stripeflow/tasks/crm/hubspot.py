"""HubSpot CRM adapter: batch upserts keyed by e-mail and by a unique `stripe_payment_id` property.

Per batch of up to 100 payments it costs four calls: contacts `batch/upsert` (idProperty email),
deals `batch/upsert` (idProperty stripe_payment_id, which `setup()` creates with hasUniqueValue),
one v4 `batch/associate/default` deal->contact, and notes `batch/create` with an inline
association to the deal (type 214). Contacts without an e-mail are a `batch/upsert` too, on
`stripeflow_contact_key`, a unique property `setup()` creates and sets only on e-mail-less
contacts (their Stripe customer id). `stripe_customer_id` itself cannot be unique: a customer
who later pays with an e-mail gets a contact by e-mail carrying the same id. Until `setup()` has
made the key, e-mail-less contacts are found by a search on `stripe_customer_id` (operator IN)
and the missing ones batch-created, as before. HubSpot returns batch results in no particular
order, so results are matched back by their key.

The upserts are keyed, so the seam may resend them. The creates are not: a lost answer of the
contacts `batch/create` is looked for by the search first (HubSpot's search lags fresh records,
so the look waits for it); notes carry their marker and are found by reading the deal's note
associations and the notes themselves, never by search.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Unpack, cast

import httpx

from stripeflow.core.config import CRMTarget
from stripeflow.core.errors import AuthError, PermanentError, VendorError
from stripeflow.core.http import (
    CursorPaginator,
    Paginator,
    dig,
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
    split_name,
    unique_by,
)

VENDOR = "hubspot"
NOTE_TO_DEAL = 214  # HUBSPOT_DEFINED association type note -> deal
NOTE_MAX = 65_536  # hs_note_body limit in characters
DEFAULT_STAGES = {  # the default "Sales Pipeline" (pipeline id `default`)
    "new": "appointmentscheduled",
    "paid": "closedwon",
    "invoiced": "closedwon",
    "failed": "closedlost",
    "refunded": "closedlost",
    "overdue": "contractsent",
}
OPTIONS: dict[str, type | tuple[type, ...]] = {"pipeline": str, "send_currency": bool}
FIELD_NAME = (r"[a-z][a-z0-9_]*", "a HubSpot property name (lower case, digits, _)")
PAYMENT_ID = "stripe_payment_id"
CUSTOMER_ID = "stripe_customer_id"
CONTACT_KEY = "stripeflow_contact_key"  # unique; the customer id of a contact without an e-mail
KEY_RECHECK = 600.0  # seconds before a missing contact key is looked for again (after a setup)


# --- quirks, each with its own test ---------------------------------------------------------


def rate_limit_wait(response: httpx.Response) -> float | None:
    """How long a HubSpot 429 says to wait. It sends no Retry-After: the body's `policyName` does.

    TEN_SECONDLY_ROLLING: the window (X-HubSpot-RateLimit-Interval-Milliseconds, else 10 s);
    SECONDLY (search): 1 s; DAILY: an hour, which escapes to the task's own retries.
    """
    try:
        body = response.json()
    except ValueError:
        body = {}
    policy = str(body.get("policyName", "")).upper() if isinstance(body, dict) else ""
    if policy == "DAILY":
        return 3600.0
    if policy == "SECONDLY":
        return 1.0
    interval = response.headers.get("x-hubspot-ratelimit-interval-milliseconds")
    try:
        return float(interval) / 1000 if interval else 10.0
    except ValueError:
        return 10.0


def batch_results(body: Any, what: str) -> list[dict[str, Any]]:
    """The `results` of a batch answer; a 207 with `errors` raises PermanentError with their messages."""
    errors = body.get("errors") or []
    if errors:
        messages = "; ".join(str(e.get("message", e)) for e in errors[:3])
        raise PermanentError(
            f"{what}: {len(errors)} item(s) refused: {messages}",
            vendor=VENDOR,
            status=207,
            code=str(errors[0].get("category") or "") or None,
        )
    return list(body.get("results") or [])


def epoch_ms(value: Any) -> int:
    """hs_timestamp as epoch milliseconds, whether HubSpot echoes it as a number or ISO text."""
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clip_note(note: NoteInput) -> str:
    """hs_note_body (HTML) within HubSpot's limit; the marker line is never the part cut off."""
    text = note.text("<br>")
    if len(text) <= NOTE_MAX:
        return text
    room = NOTE_MAX - (len(text) - len(note.body)) - 1
    return replace(note, body=note.body[:room] + "…").text("<br>")


# --- the client -----------------------------------------------------------------------------


class HubSpotAPI(TokenAPI):
    vendor = VENDOR
    limit = (100, 10.0)  # the portal's ten-secondly limit: 100 on Free/Starter, 190 on Pro/Enterprise
    search_limit = (4, 1.0)  # the CRM search endpoints' own limit per second
    auth = ("Authorization", "Bearer {}")

    def request_id(self, response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("correlationId"):
            return str(body["correlationId"])
        return response.headers.get("x-hubspot-correlation-id")

    def retry_after(self, response: httpx.Response) -> float | None:
        explicit = super().retry_after(response)
        if explicit is not None or response.status_code != 429:
            return explicit
        return rate_limit_wait(response)


# --- the adapter ----------------------------------------------------------------------------


class HubSpotCRM:
    """The `CRM` protocol over HubSpot's batch APIs."""

    batch_size = 100
    parallel = 8  # batches in flight at once: a 429 waits out 10 s, so overlap the waits; one limiter for all

    def __init__(
        self,
        *,
        token: str,
        base_url: str = "https://api.hubapi.com",
        stages: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        pipeline: str = "default",
        send_currency: bool = True,
        requests_per_10s: int = 100,
        searches_per_second: int = 4,
        name: str = "hubspot",
        **seams: Unpack[Seams],
    ) -> None:
        self.name = name
        self.stages = {**DEFAULT_STAGES, **(stages or {})}
        self.fields = dict(fields or {})
        self.pipeline = pipeline
        self.send_currency = send_currency
        self.api = HubSpotAPI(
            base_url, token, requests=requests_per_10s, searches=searches_per_second, **seams
        )
        self._notes: Remembered[NoteInput] = Remembered()
        self._clock = seams.get("clock") or time.monotonic
        self._key_lock = threading.Lock()
        self._key_seen: tuple[bool, float] | None = None  # (the contact key exists, when looked)

    @classmethod
    def from_target(
        cls, target: CRMTarget, home: Path, *, env: Mapping[str, str] | None = None, **kw: Any
    ) -> HubSpotCRM:
        from stripeflow.blocks.crm import HubSpotCredentials

        block, args = configure(VENDOR, target, env, HubSpotCredentials, OPTIONS, FIELD_NAME, DEFAULT_STAGES)
        return cls(
            token=block.token.get_secret_value(),
            base_url=block.base_url,
            requests_per_10s=block.requests_per_10s,
            searches_per_second=block.searches_per_second,
            **args,
            **kw,
        )

    # -- contacts ------------------------------------------------------------------------------

    def _contact_properties(self, c: ContactInput) -> dict[str, str]:
        first, last = split_name(c.name, c.email)
        props = {"firstname": first, "lastname": last}
        if c.email:
            props["email"] = c.email.lower()
        if c.customer_id:
            props[CUSTOMER_ID] = c.customer_id
        return props

    def keys_contact(self, email: str | None) -> bool:
        return bool(email) or self._contact_key_ready()

    def _contact_key_ready(self) -> bool:
        """Whether the unique contact key exists (after `setup()`): looked up once, and again
        every KEY_RECHECK seconds while it is missing; a failed look counts as missing."""
        with self._key_lock:
            now = self._clock()
            if self._key_seen is None or (not self._key_seen[0] and now - self._key_seen[1] > KEY_RECHECK):
                try:
                    prop = self._property("contacts", CONTACT_KEY)
                except VendorError:
                    return False  # not remembered: looked for again next time
                self._key_seen = (bool(prop and prop.get("hasUniqueValue")), now)
            return self._key_seen[0]

    def upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        # e-mail contacts are a keyed upsert; the others a search, then an unkeyed batch/create
        return look_first(
            self._upsert_contacts, contacts, vendor=VENDOR, consistent=False, sleep=self.api.sleep
        )

    def _upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        ids: list[str | None] = [None] * len(contacts)
        with_email = [i for i, c in enumerate(contacts) if c.email]
        by_customer = [i for i, c in enumerate(contacts) if not c.email and c.customer_id]
        if len(with_email) + len(by_customer) < len(contacts):
            raise PermanentError("a contact has neither an e-mail nor a Stripe customer id", vendor=VENDOR)
        if with_email:
            chosen, _ = unique_by([contacts[i] for i in with_email], key=lambda c: c.email.lower())
            body = self.api.request_json(
                "POST",
                "/crm/v3/objects/contacts/batch/upsert",
                json={
                    "inputs": [
                        {
                            "idProperty": "email",
                            "id": c.email.lower(),
                            "properties": self._contact_properties(c),
                        }
                        for c in chosen
                    ]
                },
            )
            got = {
                str(r["properties"]["email"]).lower(): str(r["id"])
                for r in batch_results(body, "contacts upsert")
            }
            for i in with_email:
                ids[i] = got.get(str(contacts[i].email).lower())
        if by_customer and self._contact_key_ready():
            chosen, _ = unique_by([contacts[i] for i in by_customer], key=lambda c: c.customer_id)
            body = self.api.request_json(
                "POST",
                "/crm/v3/objects/contacts/batch/upsert",
                json={
                    "inputs": [
                        {
                            "idProperty": CONTACT_KEY,
                            "id": c.customer_id,
                            "properties": {**self._contact_properties(c), CONTACT_KEY: c.customer_id},
                        }
                        for c in chosen
                    ]
                },
            )
            keyed = {
                str(r["properties"][CONTACT_KEY]): str(r["id"])
                for r in batch_results(body, "contacts upsert")
            }
            for i in by_customer:
                ids[i] = keyed.get(str(contacts[i].customer_id))
        elif by_customer:
            found = self._contacts_by_customer([str(contacts[i].customer_id) for i in by_customer])
            missing, _ = unique_by(
                [contacts[i] for i in by_customer if contacts[i].customer_id not in found],
                key=lambda c: c.customer_id,
            )
            if missing:
                body = self.api.request_json(
                    "POST",
                    "/crm/v3/objects/contacts/batch/create",
                    json={"inputs": [{"properties": self._contact_properties(c)} for c in missing]},
                    idempotent=False,  # no key: a lost answer is looked for, never resent blindly
                )
                for r in batch_results(body, "contacts create"):
                    found[str(r["properties"][CUSTOMER_ID])] = str(r["id"])
            for i in by_customer:
                ids[i] = found.get(str(contacts[i].customer_id))
        return _all_found(ids, "contact")

    def _contacts_by_customer(self, customer_ids: Sequence[str]) -> dict[str, str]:
        """customer id -> the oldest contact carrying it, from one search (IN takes up to 100 values)."""
        found: dict[str, str] = {}
        request = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": CUSTOMER_ID, "operator": "IN", "values": sorted(set(customer_ids))}
                    ]
                }
            ],
            "properties": [CUSTOMER_ID],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 200,
        }
        pages = cast(Paginator, CursorPaginator("results", "paging.next.after", "after", in_body=True))
        for r in self.api.paginate("POST", "/crm/v3/objects/contacts/search", pages, json=request):
            found.setdefault(str(r["properties"][CUSTOMER_ID]), str(r["id"]))
        return found

    # -- deals ---------------------------------------------------------------------------------

    def _deal_properties(self, d: DealInput) -> dict[str, Any]:
        props: dict[str, Any] = {
            "dealname": d.title,
            "amount": str(d.amount),  # HubSpot takes numbers as strings; Decimal keeps the cents exact
            "dealstage": self.stages.get(d.stage, d.stage),
            "pipeline": self.pipeline,
            "closedate": d.payment.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            PAYMENT_ID: d.payment_id,
        }
        if self.send_currency:
            props["deal_currency_code"] = d.currency.upper()
        props.update(
            {k: v if isinstance(v, str) else str(v) for k, v in mapped_fields(d, self.fields).items()}
        )
        return props

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        chosen, _ = unique_by(deals, key=lambda d: d.payment_id)
        body = self.api.request_json(
            "POST",
            "/crm/v3/objects/deals/batch/upsert",
            json={
                "inputs": [
                    {"idProperty": PAYMENT_ID, "id": d.payment_id, "properties": self._deal_properties(d)}
                    for d in chosen
                ]
            },
        )
        got = {str(r["properties"][PAYMENT_ID]): str(r["id"]) for r in batch_results(body, "deals upsert")}
        ids = _all_found([got.get(d.payment_id) for d in deals], "deal")
        pairs = {(got[d.payment_id], d.contact_id) for d in chosen if d.contact_id}
        if pairs:  # associating an associated pair again is a no-op, so this is safe to repeat
            body = self.api.request_json(
                "POST",
                "/crm/v4/associations/deals/contacts/batch/associate/default",
                json={
                    "inputs": [
                        {"from": {"id": deal}, "to": {"id": contact}} for deal, contact in sorted(pairs)
                    ]
                },
            )
            batch_results(body or {}, "deal-contact association")
        return ids

    # -- notes ---------------------------------------------------------------------------------

    def add_notes(self, notes: Sequence[NoteInput]) -> list[str]:
        ids: list[str | None] = [self._notes.pop(n) for n in notes]
        todo = [i for i, got in enumerate(ids) if got is None]
        if not todo:
            return _all_found(ids, "note")
        base = int(time.time() * 1000)
        # a distinct hs_timestamp per note (base + position) matches HubSpot's unordered results back
        inputs = [
            {
                "properties": {"hs_timestamp": iso_ms(base + k), "hs_note_body": clip_note(notes[i])},
                "associations": [
                    {
                        "to": {"id": notes[i].deal_id},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_DEAL}
                        ],
                    }
                ],
            }
            for k, i in enumerate(todo)
        ]
        with self._notes.kept_on_error(notes, ids):
            body = self.api.request_json(
                "POST", "/crm/v3/objects/notes/batch/create", json={"inputs": inputs}, idempotent=False
            )
            for r in body.get("results") or []:
                k = epoch_ms(r["properties"]["hs_timestamp"]) - base
                if 0 <= k < len(todo):
                    ids[todo[k]] = str(r["id"])
            batch_results(body, "notes create")
        return _all_found(ids, "note")

    def find_notes(self, notes: Sequence[NoteInput]) -> list[str | None]:
        """Read, never search (HubSpot's search lags a fresh note): the deals' note associations
        (v4 batch read), then those notes' bodies (batch read), matched by marker."""
        deals = sorted({n.deal_id for n in notes if n.marker})
        on_deal: dict[str, list[str]] = {}
        for start in range(0, len(deals), self.batch_size):
            on_deal.update(self._notes_of_deals(deals[start : start + self.batch_size]))
        note_ids = sorted({i for ids in on_deal.values() for i in ids}, key=int)
        bodies: dict[str, str] = {}
        for start in range(0, len(note_ids), self.batch_size):
            body = self.api.request_json(
                "POST",
                "/crm/v3/objects/notes/batch/read",
                json={
                    "properties": ["hs_note_body"],
                    "inputs": [{"id": i} for i in note_ids[start : start + self.batch_size]],
                },
            )
            for r in (body or {}).get("results") or []:  # an archived note comes back in `errors`
                bodies[str(r["id"])] = str((r.get("properties") or {}).get("hs_note_body") or "")
        return [
            next((i for i in on_deal.get(n.deal_id, []) if has_marker(bodies.get(i), n.marker)), None)
            for n in notes
        ]

    def _notes_of_deals(self, deals: Sequence[str]) -> dict[str, list[str]]:
        """deal id -> its note ids, oldest first. A deal without notes is a 207 `error`, not a failure."""
        if not deals:
            return {}
        body = self.api.request_json(
            "POST",
            "/crm/v4/associations/deals/notes/batch/read",
            json={"inputs": [{"id": d} for d in deals]},
        )
        found: dict[str, list[str]] = {}
        for r in (body or {}).get("results") or []:
            deal = str(r["from"]["id"])
            ids = [str(t["toObjectId"]) for t in r.get("to") or []]
            if dig(r, "paging.next.after"):  # more than one page: read this deal's list page by page
                pages = cast(Paginator, CursorPaginator("results", "paging.next.after", "after"))
                ids = [
                    str(t["toObjectId"])
                    for t in self.api.paginate(
                        "GET",
                        f"/crm/v4/objects/deals/{deal}/associations/notes",
                        pages,
                        params={"limit": 500},
                    )
                ]
            found.setdefault(deal, []).extend(ids)
        return {d: sorted(set(ids), key=int) for d, ids in found.items()}

    def close(self) -> None:
        self.api.close()

    # -- setup and check -----------------------------------------------------------------------

    def _property(self, object_type: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.request_json("GET", f"/crm/v3/properties/{object_type}/{name}")  # type: ignore[no-any-return]
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def setup(self) -> SetupReport:
        """Create the unique deal property and the contact property; idempotent."""
        report = SetupReport(VENDOR)
        wanted = [
            ("deals", PAYMENT_ID, "Stripe payment id", "dealinformation", True),
            ("contacts", CUSTOMER_ID, "Stripe customer id", "contactinformation", False),
            ("contacts", CONTACT_KEY, "Stripeflow contact key", "contactinformation", True),
        ]
        for object_type, prop, label, group, unique in wanted:
            thing = f"{object_type} property {prop}" + (" (unique)" if unique else "")
            existing = self._property(object_type, prop)
            if existing is None:
                self.api.request_json(
                    "POST",
                    f"/crm/v3/properties/{object_type}",
                    json={
                        "name": prop,
                        "label": label,
                        "type": "string",
                        "fieldType": "text",
                        "groupName": group,
                        "hasUniqueValue": unique,
                    },
                )
                report.add(thing, "created")
            elif unique and not existing.get("hasUniqueValue"):
                report.add(
                    thing,
                    "manual",
                    "exists but is not unique; HubSpot cannot make an existing property "
                    "unique: delete it in Settings > Properties and run setup again",
                )
            else:
                report.add(thing, "exists")
        with self._key_lock:
            self._key_seen = None  # look again: setup may have just made it
        if self._contact_key_ready():
            keyed = self._key_earlier_contacts()
            if keyed:
                report.add(f"{keyed} e-mail-less contact(s) made before the key", "created", "keyed")
        stage_ids = self._stage_ids()
        for logical, stage in self.stages.items():
            note = "" if stage in stage_ids else f"no such stage in pipeline {self.pipeline!r}"
            report.add(f"stage {logical} -> {stage}", "exists" if not note else "manual", note)
        report.mapping = {
            **{f"stage.{k}": v for k, v in self.stages.items()},
            **{f"field.{k}": v for k, v in self.fields.items()},
            "deal key": f"deals.{PAYMENT_ID}",
            "contact key": f"contacts.email, then {CONTACT_KEY}",
            "pipeline": self.pipeline,
        }
        return report

    def _key_earlier_contacts(self) -> int:
        """Give the contact key to e-mail-less contacts made by the search-then-create path (the
        oldest one per customer), so the keyed upsert finds them instead of making another."""
        request = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": CUSTOMER_ID, "operator": "HAS_PROPERTY"},
                        {"propertyName": "email", "operator": "NOT_HAS_PROPERTY"},
                        {"propertyName": CONTACT_KEY, "operator": "NOT_HAS_PROPERTY"},
                    ]
                }
            ],
            "properties": [CUSTOMER_ID],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 200,
        }
        pages = cast(Paginator, CursorPaginator("results", "paging.next.after", "after", in_body=True))
        oldest: dict[str, str] = {}
        for r in self.api.paginate("POST", "/crm/v3/objects/contacts/search", pages, json=request):
            oldest.setdefault(str(r["properties"][CUSTOMER_ID]), str(r["id"]))
        items = list(oldest.items())
        for start in range(0, len(items), 100):
            self.api.request_json(
                "POST",
                "/crm/v3/objects/contacts/batch/update",
                json={
                    "inputs": [
                        {"id": oid, "properties": {CONTACT_KEY: cus}}
                        for cus, oid in items[start : start + 100]
                    ]
                },
            )
        return len(items)

    def _stage_ids(self) -> set[str]:
        body = self.api.request_json("GET", f"/crm/v3/pipelines/deals/{self.pipeline}")
        return {str(s["id"]) for s in body.get("stages", [])}

    def check(self) -> CheckReport:
        """Try the token, the properties, the pipeline's stages and the mapped fields."""
        report = CheckReport(VENDOR)
        try:
            self.api.request_json("GET", "/crm/v3/objects/deals", params={"limit": 1})
            report.ok.append("token accepted")
        except AuthError as exc:
            report.problems.append(
                f"token refused ({exc.message}); create a private app with crm.objects.* "
                "scopes and put its token in the block or HUBSPOT_TOKEN"
            )
            return report
        except VendorError as exc:
            report.problems.append(f"cannot reach HubSpot at {self.api.base_url}: {exc}")
            return report
        deal_prop = self._property("deals", PAYMENT_ID)
        if deal_prop is None:
            report.problems.append(
                f"deal property {PAYMENT_ID} is missing: run `stripeflow crm setup hubspot`"
            )
        elif not deal_prop.get("hasUniqueValue"):
            report.problems.append(
                f"deal property {PAYMENT_ID} is not unique, so deals cannot be upserted on it"
            )
        else:
            report.ok.append(f"deal property {PAYMENT_ID} is unique")
        if self._property("contacts", CUSTOMER_ID) is None:
            report.problems.append(
                f"contact property {CUSTOMER_ID} is missing: run `stripeflow crm setup hubspot`"
            )
        else:
            report.ok.append(f"contact property {CUSTOMER_ID} exists")
        key = self._property("contacts", CONTACT_KEY)
        if key is None or not key.get("hasUniqueValue"):
            report.problems.append(
                f"contact property {CONTACT_KEY} is missing or not unique, so contacts without an "
                "e-mail are found by a search, which lags: run `stripeflow crm setup hubspot`"
            )
        else:
            report.ok.append(f"contact property {CONTACT_KEY} is unique")
        try:
            stage_ids = self._stage_ids()
        except PermanentError:
            report.problems.append(f"pipeline {self.pipeline!r} does not exist (options.pipeline)")
        else:
            for logical, stage in self.stages.items():
                if stage not in stage_ids:
                    report.problems.append(
                        f"stages.{logical}: {stage!r} is not a stage of pipeline "
                        f"{self.pipeline!r}; known: {', '.join(sorted(stage_ids))}"
                    )
        known = {str(p["name"]) for p in self.api.request_json("GET", "/crm/v3/properties/deals")["results"]}
        for payment_field, prop in self.fields.items():
            if prop not in known:
                report.problems.append(
                    f"fields.{payment_field}: deal property {prop!r} does not exist in HubSpot"
                )
        return report


def _all_found(ids: Sequence[str | None], what: str) -> list[str]:
    missing = [i for i, x in enumerate(ids) if x is None]
    if missing:
        raise PermanentError(f"{what} #{missing[0]} missing from the batch answer", vendor=VENDOR)
    return [str(x) for x in ids]
