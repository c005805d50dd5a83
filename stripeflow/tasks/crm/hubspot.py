"""HubSpot CRM adapter: batch upserts keyed by e-mail and by a unique `stripe_payment_id` property.

Per batch of up to 100 payments it costs four calls: contacts `batch/upsert` (idProperty email),
deals `batch/upsert` (idProperty stripe_payment_id, which `setup()` creates with hasUniqueValue),
one v4 `batch/associate/default` deal->contact, and notes `batch/create` with an inline
association to the deal (type 214); an adapter also reads the deal properties once (and the
contact properties once, for a tax id). Contacts without an e-mail are a `batch/upsert` too, on
`stripeflow_contact_key`, a unique property `setup()` creates and sets only on e-mail-less
contacts (their Stripe customer id). `stripe_customer_id` itself cannot be unique: a customer
who later pays with an e-mail gets a contact by e-mail carrying the same id. Until `setup()` has
made the key, e-mail-less contacts are found by a search on `stripe_customer_id` (operator IN)
and the missing ones batch-created, as before. That search sends its `IN` values lower-case
(HubSpot matches a string `IN` against lower-cased values only) and matches the answers back
exactly; it lags fresh records, so what this adapter made or found is remembered (by customer
id) and never searched for again, and the CRM tasks pass the ledger's link of a contact made
earlier (`ContactInput.crm_id`), which is used as it is. HubSpot returns batch results in no
particular order, so results are matched back by their key.

Every payment field of the catalogue (`core.deal_fields`) is on the deal by default
(`DEFAULT_FIELDS`: HubSpot's own `amount`, `deal_currency_code` and `closedate`, and custom
`stripeflow_*` properties in a `stripeflow` group that `setup()` creates with the catalogue's
labels in the account's language). `deal_currency_code` takes only the currencies enabled in the
portal, and one other code fails the whole batch (400 `INVALID_OPTION`): the adapter reads the
portal's currencies once (the property's options) and writes a deal in any other currency
without HubSpot's amount and currency, keeping both in `stripeflow_amount` and
`stripeflow_currency`, with a warning naming the currency to add.

The upserts are keyed, so the seam may resend them. The creates are not: a lost answer of the
contacts `batch/create` is looked for by the search first (HubSpot's search lags fresh records,
so the look waits for it, and a contact it does not show yet is not created again for
UNSURE_FOR: the task's retry looks later); a deal property the portal lacks (an older setup) is
left off the deal with a warning, rather than failing the batch. Notes carry their marker and
are found by reading the deal's note associations and the notes themselves, never by search.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Unpack, cast

import httpx

from stripeflow.core.config import CRMTarget
from stripeflow.core.deal_fields import BY_NAME, resolve_mapping
from stripeflow.core.errors import AuthError, OutcomeUnknownError, PermanentError, VendorError
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
UNSURE_FOR = 600.0  # seconds a lost create waits for search to show it before it counts as not made
SCHEMA_RECHECK = 600.0  # seconds before the deal properties are read again for one a deal lacked
GROUP = "stripeflow"  # the property group of every property setup() creates
GROUP_LABELS = {"pl": "Płatności Stripe", "en": "Stripe payments"}
TAX_ID = "stripeflow_tax_id"
AMOUNT_KEPT = "stripeflow_amount"  # a deal's amount when its currency is not enabled in the portal
CURRENCY_KEPT = "stripeflow_currency"
# logical field (core.deal_fields) -> its HubSpot property: HubSpot's own where it has one
DEFAULT_FIELDS: dict[str, str] = {
    "amount": "amount",
    "currency": "deal_currency_code",
    "paid_on": "closedate",
    "payment_id": PAYMENT_ID,
    "status": "stripeflow_status",
    "refunded_amount": "stripeflow_refunded_amount",
    "method": "stripeflow_method",
    "product": "stripeflow_product",
    "kind": "stripeflow_kind",
    "invoice_pdf": "stripeflow_invoice_pdf",
    "receipt_url": "stripeflow_receipt_url",
    "dashboard_url": "stripeflow_dashboard_url",
}
HUBSPOT_TYPES = {"number": ("number", "number"), "date": ("date", "date"), "text": ("string", "text")}
HUBSPOT_TYPES["url"] = HUBSPOT_TYPES["text"]

# never left out: HubSpot's own, and the key (without it, HubSpot's refusal says what to do)
OWN_DEAL_PROPERTIES = frozenset(
    {"dealname", "amount", "dealstage", "pipeline", "closedate", "deal_currency_code", PAYMENT_ID}
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DealSchema:
    """What the portal's deals take: its property names, and the currencies enabled in it (None
    when `deal_currency_code` lists none)."""

    properties: frozenset[str]
    currencies: frozenset[str] | None


@dataclass(frozen=True)
class PropertySpec:
    """A custom property setup() creates: where, its name, its labels, its HubSpot type."""

    object_type: str
    name: str
    label_pl: str
    label_en: str
    type: str = "string"
    field_type: str = "text"
    unique: bool = False
    group: str = GROUP

    def body(self, language: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label_pl if language == "pl" else self.label_en,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group,
            "hasUniqueValue": self.unique,
        }


# the keys keep the group older versions made them in, so an existing account matches
KEY_PROPERTIES = (
    PropertySpec(
        "deals", PAYMENT_ID, "ID transakcji Stripe", "Stripe payment id", unique=True, group="dealinformation"
    ),
    PropertySpec(
        "contacts", CUSTOMER_ID, "ID klienta Stripe", "Stripe customer id", group="contactinformation"
    ),
    PropertySpec(
        "contacts",
        CONTACT_KEY,
        "Klucz kontaktu Stripeflow",
        "Stripeflow contact key",
        unique=True,
        group="contactinformation",
    ),
)
CONTACT_PROPERTIES = (PropertySpec("contacts", TAX_ID, "NIP", "Tax ID (NIP)"),)
KEPT_PROPERTIES = (
    PropertySpec(
        "deals",
        AMOUNT_KEPT,
        "Kwota w walucie płatności",
        "Amount in the payment currency",
        "number",
        "number",
    ),
    PropertySpec("deals", CURRENCY_KEPT, "Waluta płatności", "Payment currency"),
)


def deal_property_specs(mapping: Mapping[str, str]) -> list[PropertySpec]:
    """The custom deal properties a mapping needs: each catalogue field mapped onto its default
    `stripeflow_*` property (a field the user mapped elsewhere is the user's own property)."""
    specs = []
    for logical, prop in mapping.items():
        field = BY_NAME.get(logical)
        if field is None or prop != DEFAULT_FIELDS.get(logical) or not prop.startswith("stripeflow_"):
            continue
        kind, field_type = HUBSPOT_TYPES[field.type]
        specs.append(PropertySpec("deals", prop, field.label_pl, field.label_en, kind, field_type))
    return [*specs, *KEPT_PROPERTIES]


def wanted_properties(mapping: Mapping[str, str]) -> list[PropertySpec]:
    """Every custom property the adapter writes: the keys, the contact's tax id, and the deal
    properties of the mapping (with the two that keep a currency the portal lacks)."""
    return [*KEY_PROPERTIES, *CONTACT_PROPERTIES, *deal_property_specs(mapping)]


def hubspot_value(value: Any) -> str:
    """A catalogue value as HubSpot takes it: numbers as exact text, dates as YYYY-MM-DD
    (a date property is midnight UTC), nothing as "" (which clears the property)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(getattr(value, "value", value))


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
        language: str = "pl",
        **seams: Unpack[Seams],
    ) -> None:
        self.name = name
        self.stages = {**DEFAULT_STAGES, **(stages or {})}
        self.fields = dict(fields or {})  # the user's `[crm.fields]`, over DEFAULT_FIELDS
        self.mapping = resolve_mapping(DEFAULT_FIELDS, self.fields)
        self.pipeline = pipeline
        self.send_currency = send_currency
        self.language = language  # of the labels setup() gives the properties it creates
        self.api = HubSpotAPI(
            base_url, token, requests=requests_per_10s, searches=searches_per_second, **seams
        )
        self._notes: Remembered[NoteInput] = Remembered()
        self._contacts: Remembered[str] = Remembered()  # customer id -> contact made or found by search
        self._unsure: dict[str, float] = {}  # customer id -> when its create's answer was lost
        self._unsure_lock = threading.Lock()
        self._clock = seams.get("clock") or time.monotonic
        self._key_lock = threading.Lock()
        self._key_seen: tuple[bool, float] | None = None  # (the contact key exists, when looked)
        self._schema_lock = threading.Lock()
        self._schema: tuple[DealSchema, float] | None = None  # (the portal's deal properties, when read)
        self._contact_schema: tuple[frozenset[str], float] | None = None
        self._warned: set[str] = set()  # currencies and properties warned about once

    @classmethod
    def from_target(
        cls,
        target: CRMTarget,
        home: Path,
        *,
        env: Mapping[str, str] | None = None,
        language: str | None = None,
        **kw: Any,
    ) -> HubSpotCRM:
        from stripeflow.blocks.crm import HubSpotCredentials

        block, args = configure(
            VENDOR, target, env, HubSpotCredentials, OPTIONS, FIELD_NAME, DEFAULT_STAGES, language=language
        )
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
        """HubSpot's own name, phone and company, and the tax id in ours; what Stripe does not
        know is left out, so a value typed in HubSpot is never cleared."""
        first, last = split_name(c.name, c.email)
        props = {"firstname": first, "lastname": last}
        if c.email:
            props["email"] = c.email.lower()
        if c.customer_id:
            props[CUSTOMER_ID] = c.customer_id
        for prop, value in (("phone", c.phone), ("company", c.company)):
            if value:
                props[prop] = value
        if c.tax_id and self._has_contact_property(TAX_ID):  # else the whole batch would be refused
            props[TAX_ID] = c.tax_id
        return props

    def _has_contact_property(self, name: str) -> bool:
        """Whether the portal's contacts have this property (setup makes it): the contact
        properties are read once, and again SCHEMA_RECHECK later while it is missing."""
        with self._schema_lock:
            now = self._clock()
            seen = self._contact_schema
            if seen is None or (name not in seen[0] and now - seen[1] > SCHEMA_RECHECK):
                try:
                    seen = (frozenset(self._properties("contacts")), now)
                except VendorError:
                    return False  # not remembered: read again next time
                self._contact_schema = seen
        if name not in seen[0]:
            self._warn_missing(name, "contact")
        return name in seen[0]

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
            ids_by_customer = self._contacts_searched([contacts[i] for i in by_customer])
            for i in by_customer:
                ids[i] = ids_by_customer.get(str(contacts[i].customer_id))
        return _all_found(ids, "contact")

    def _contacts_searched(self, contacts: Sequence[ContactInput]) -> dict[str, str]:
        """customer id -> contact for e-mail-less contacts without the key: the ledger's link
        (`crm_id`) or what this adapter made or found before, else a search, else a create.
        The search lags fresh records, so nothing made here is ever searched for again."""
        found: dict[str, str] = {}
        for c in contacts:
            known = c.crm_id or self._contacts.pop(str(c.customer_id))
            if known:
                found[str(c.customer_id)] = known
                self._contacts.put(str(c.customer_id), known)  # kept even if this batch fails
        asked = sorted({str(c.customer_id) for c in contacts} - set(found))
        if asked:
            found.update(self._contacts_by_customer(asked))
        missing, _ = unique_by(
            [c for c in contacts if c.customer_id not in found], key=lambda c: c.customer_id
        )
        self._wait_for_unsure(str(c.customer_id) for c in missing)
        if missing:
            try:
                body = self.api.request_json(
                    "POST",
                    "/crm/v3/objects/contacts/batch/create",
                    json={"inputs": [{"properties": self._contact_properties(c)} for c in missing]},
                    idempotent=False,  # no key: a lost answer is looked for, never resent blindly
                )
            except OutcomeUnknownError:
                with self._unsure_lock:  # perhaps made: not made again until search shows it, or long after
                    self._unsure.update({str(c.customer_id): self._clock() for c in missing})
                raise
            for r in batch_results(body, "contacts create"):
                found[str(r["properties"][CUSTOMER_ID])] = str(r["id"])
        with self._unsure_lock:
            for customer in found:
                self._unsure.pop(customer, None)
        for customer, contact_id in found.items():
            self._contacts.put(customer, contact_id)
        return found

    def _wait_for_unsure(self, customers: Iterable[str]) -> None:
        """A contact whose create's answer was lost may exist and not show in search yet: until
        search shows it, or UNSURE_FOR has passed (it was never made), it is not created again."""
        now = self._clock()
        with self._unsure_lock:
            waiting = [c for c in customers if now - self._unsure.get(c, -UNSURE_FOR) < UNSURE_FOR]
        if waiting:
            raise OutcomeUnknownError(
                f"{len(waiting)} contact(s) whose create's answer was lost are not in search yet",
                vendor=VENDOR,
            )

    def _contacts_by_customer(self, customer_ids: Sequence[str]) -> dict[str, str]:
        """customer id -> the oldest contact carrying it, from one search (IN takes up to 100 values).

        HubSpot matches a string `IN` only against lower-case values, so they go lower-case; a
        Stripe id is case-sensitive, so the answers are matched back exactly (`cus_Ab` is not `cus_aB`).
        """
        wanted = set(customer_ids)
        found: dict[str, str] = {}
        request = {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": CUSTOMER_ID,
                            "operator": "IN",
                            "values": sorted({c.lower() for c in wanted}),
                        }
                    ]
                }
            ],
            "properties": [CUSTOMER_ID],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 200,
        }
        pages = cast(Paginator, CursorPaginator("results", "paging.next.after", "after", in_body=True))
        for r in self.api.paginate("POST", "/crm/v3/objects/contacts/search", pages, json=request):
            customer = str(r["properties"][CUSTOMER_ID])
            if customer in wanted:
                found.setdefault(customer, str(r["id"]))
        return found

    # -- deals ---------------------------------------------------------------------------------

    def _deal_properties(self, d: DealInput, schema: DealSchema | None) -> dict[str, Any]:
        """The deal's properties: HubSpot's own, then every mapped payment field that exists in
        the portal (`schema`; None when it could not be read: all are sent). A currency the portal
        has not enabled would fail the whole batch, so such a deal goes without HubSpot's amount
        and currency, both kept in our own properties."""
        props: dict[str, Any] = {
            "dealname": d.title,
            "amount": format(d.amount, "f"),  # numbers go as text: the Decimal's cents stay exact
            "dealstage": self.stages.get(d.stage, d.stage),
            "pipeline": self.pipeline,
            "closedate": d.payment.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            PAYMENT_ID: d.payment_id,
        }
        mapped = mapped_fields(d, self.mapping, hubspot_value, d.catalogue)
        props.update({k: v if isinstance(v, str) else hubspot_value(v) for k, v in mapped.items() if k})
        props.pop("deal_currency_code", None)
        if self._sends_currency:
            code = d.currency.upper()
            if schema is None or schema.currencies is None or code in schema.currencies:
                props["deal_currency_code"] = code
                if schema is not None:  # in HubSpot's own fields now: clear what an older write kept
                    props[AMOUNT_KEPT] = props[CURRENCY_KEPT] = ""
            else:
                props.pop("amount", None)  # it would read as an amount in the company currency
                props[AMOUNT_KEPT], props[CURRENCY_KEPT] = format(d.amount, "f"), code
                self._warn_currency(code, schema.currencies)
        if schema is not None:
            for prop in [p for p in props if p not in schema.properties and p not in OWN_DEAL_PROPERTIES]:
                del props[prop]
                self._warn_missing(prop)
        return props

    @property
    def _sends_currency(self) -> bool:
        return self.send_currency and self.mapping.get("currency") == "deal_currency_code"

    def _warn_currency(self, code: str, enabled: frozenset[str]) -> None:
        if code not in self._warned:
            self._warned.add(code)
            log.warning(
                "HubSpot (%s): the portal has no %s currency (it has %s), so deals in %s keep their "
                "amount in %s and the currency in %s, without HubSpot's own amount; add %s in "
                "HubSpot under Settings > Account defaults > Currencies to have them as HubSpot amounts",
                self.name,
                code,
                ", ".join(sorted(enabled)) or "none",
                code,
                AMOUNT_KEPT,
                CURRENCY_KEPT,
                code,
            )

    def _warn_missing(self, prop: str, object_type: str = "deal") -> None:
        if prop not in self._warned:
            self._warned.add(prop)
            log.warning(
                "HubSpot (%s): %s property %s does not exist, so %ss go without it: run "
                "`stripeflow crm setup hubspot` (or map the field elsewhere in [crm.fields])",
                self.name,
                object_type,
                prop,
                object_type,
            )

    def _deal_schema(self, deals: Sequence[DealInput], *, fresh: bool = False) -> DealSchema | None:
        """The portal's deal properties and the currencies `deal_currency_code` takes, from one
        read of the deal properties, made again only when a deal needs a property or currency
        it lacked and the last read is SCHEMA_RECHECK old (or `fresh`). None when it cannot be
        read: the deals are sent as they are, and HubSpot says what it refuses."""
        wanted = {d.currency.upper() for d in deals} if self._sends_currency else set()
        with self._schema_lock:
            now = self._clock()
            seen = self._schema
            if seen is not None and not fresh:
                lacking = not set(self.mapping.values()) <= seen[0].properties or (
                    seen[0].currencies is not None and not wanted <= seen[0].currencies
                )
                if not lacking or now - seen[1] <= SCHEMA_RECHECK:
                    return seen[0]
            try:
                body = self.api.request_json("GET", "/crm/v3/properties/deals")
            except VendorError:
                return seen[0] if seen else None  # not remembered as read: read again next time
            results = list((body or {}).get("results") or [])
            currency: dict[str, Any] = next((p for p in results if p.get("name") == "deal_currency_code"), {})
            options = currency.get("options")
            schema = DealSchema(
                frozenset(str(p["name"]) for p in results),
                frozenset(str(o["value"]).upper() for o in options) if options else None,
            )
            self._schema = (schema, now)
            return schema

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        chosen, _ = unique_by(deals, key=lambda d: d.payment_id)
        schema = self._deal_schema(chosen)
        try:
            body = self._upsert_deal_batch(chosen, schema)
        except PermanentError as exc:
            if not _refused_currency(exc):
                raise
            # the portal's currencies changed since they were read: read them, send once more
            body = self._upsert_deal_batch(chosen, self._deal_schema(chosen, fresh=True))
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

    def _upsert_deal_batch(self, deals: Sequence[DealInput], schema: DealSchema | None) -> Any:
        return self.api.request_json(
            "POST",
            "/crm/v3/objects/deals/batch/upsert",
            json={
                "inputs": [
                    {
                        "idProperty": PAYMENT_ID,
                        "id": d.payment_id,
                        "properties": self._deal_properties(d, schema),
                    }
                    for d in deals
                ]
            },
        )

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

    def _properties(self, object_type: str) -> dict[str, dict[str, Any]]:
        """name -> property, every property of this object type (one read)."""
        body = self.api.request_json("GET", f"/crm/v3/properties/{object_type}")
        return {str(p["name"]): p for p in (body or {}).get("results") or []}

    def wanted_properties(self) -> list[PropertySpec]:
        return wanted_properties(self.mapping)

    def setup(self) -> SetupReport:
        """Create the property groups and every custom property the adapter writes, labelled in
        the account's language; idempotent (what exists is left as it is)."""
        report = SetupReport(VENDOR)
        wanted = self.wanted_properties()
        existing = {t: self._properties(t) for t in sorted({w.object_type for w in wanted})}
        for object_type in existing:
            if any(w.object_type == object_type and w.group == GROUP for w in wanted):
                self._ensure_group(object_type, report)
        for spec in wanted:
            thing = f"{spec.object_type} property {spec.name}" + (" (unique)" if spec.unique else "")
            have = existing[spec.object_type].get(spec.name)
            if have is None:
                self.api.request_json(
                    "POST", f"/crm/v3/properties/{spec.object_type}", json=spec.body(self.language)
                )
                report.add(thing, "created", spec.body(self.language)["label"])
            elif spec.unique and not have.get("hasUniqueValue"):
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
        with self._schema_lock:
            self._schema = self._contact_schema = None  # and the properties
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
            **{f"field.{k}": v for k, v in self.mapping.items()},
            "deal key": f"deals.{PAYMENT_ID}",
            "contact key": f"contacts.email, then {CONTACT_KEY}",
            "pipeline": self.pipeline,
        }
        return report

    def _ensure_group(self, object_type: str, report: SetupReport) -> None:
        body = self.api.request_json("GET", f"/crm/v3/properties/{object_type}/groups")
        if any(g.get("name") == GROUP for g in (body or {}).get("results") or []):
            report.add(f"{object_type} property group {GROUP}", "exists")
            return
        self.api.request_json(
            "POST",
            f"/crm/v3/properties/{object_type}/groups",
            json={
                "name": GROUP,
                "label": GROUP_LABELS.get(self.language, GROUP_LABELS["en"]),
                "displayOrder": -1,
            },
        )
        report.add(f"{object_type} property group {GROUP}", "created")

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
        existing = {t: self._properties(t) for t in ("contacts", "deals")}
        for spec in self.wanted_properties():
            have = existing[spec.object_type].get(spec.name)
            what = f"{spec.object_type[:-1]} property {spec.name}"
            if have is None:
                report.problems.append(
                    f"{what} is missing ({spec.body(self.language)['label']}): "
                    "run `stripeflow crm setup hubspot`"
                )
            elif spec.unique and not have.get("hasUniqueValue"):
                report.problems.append(
                    f"{what} is not unique, so records cannot be upserted on it: delete it in "
                    "Settings > Properties and run `stripeflow crm setup hubspot`"
                )
            else:
                report.ok.append(f"{what} exists" + (" and is unique" if spec.unique else ""))
        options = (existing["deals"].get("deal_currency_code") or {}).get("options") or []
        if self._sends_currency and options:
            report.ok.append(
                "portal currencies: " + ", ".join(str(o["value"]) for o in options) + " (deals in "
                f"another currency keep their amount in {AMOUNT_KEPT} and {CURRENCY_KEPT})"
            )
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
        for payment_field, prop in self.fields.items():
            if prop and prop not in existing["deals"]:
                report.problems.append(
                    f"fields.{payment_field}: deal property {prop!r} does not exist in HubSpot; "
                    "create it there, or map the field elsewhere"
                )
        return report


def _refused_currency(exc: PermanentError) -> bool:
    """Whether HubSpot refused a batch for a `deal_currency_code` the portal does not have."""
    return (
        exc.status == 400
        and "INVALID_OPTION" in f"{exc.code} {exc.message}"
        and "deal_currency_code" in exc.message
    )


def _all_found(ids: Sequence[str | None], what: str) -> list[str]:
    missing = [i for i, x in enumerate(ids) if x is None]
    if missing:
        raise PermanentError(f"{what} #{missing[0]} missing from the batch answer", vendor=VENDOR)
    return [str(x) for x in ids]
