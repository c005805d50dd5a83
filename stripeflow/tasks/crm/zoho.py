"""Zoho CRM adapter: v7 upserts with duplicate_check_fields, 100 records a call, notes on deals.

OAuth: an access token is refreshed from the data centre's accounts server (a form POST, so
the refresh token never sits in a URL), and the answer's `api_domain` becomes the API's base
URL. A 401 INVALID_TOKEN refreshes once more and repeats the call. Contacts are upserted with
`duplicate_check_fields = ["Email", "Stripe_Customer_Id"]` (Zoho tries them in that order, so
a contact is matched by e-mail, else by customer id), deals with `["Stripe_Payment_Id"]`,
a custom field that must not allow duplicates. Zoho answers per record, in input order.
The upserts are keyed; only notes are not: a note is found in its deal's Notes by its marker.

Every payment field of the catalogue (`core.deal_fields`) lands on the deal: the amount and date
in the native Amount and Closing_Date, the rest in custom fields. Zoho makes a custom field's API
name from the label it is created with, so `setup()` creates each under its API name spelled as a
label (`Payment Status` -> `Payment_Status`), then renames it to the catalogue's label in the
account's language (`options.language`); the API name stays. Zoho refuses a write naming a field
it does not know (INVALID_DATA), so a deal sent before `setup()` fails loudly, and `check()` names
each missing field.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Unpack, cast

import httpx

from stripeflow.core.config import CRMTarget
from stripeflow.core.deal_fields import BY_NAME, FieldType, resolve_mapping
from stripeflow.core.errors import AuthError, PermanentError, RateLimitedError, VendorError
from stripeflow.core.http import (
    Clock,
    ConcurrencyLimiter,
    Limiter,
    PageNumberPaginator,
    Paginator,
    Sleep,
    VendorAPI,
)
from stripeflow.tasks.crm.base import ContactInput, DealInput, NoteInput, has_marker
from stripeflow.tasks.crm.common import (
    CheckReport,
    Remembered,
    Seams,
    SetupReport,
    configure,
    payment_fields,
    plain,
    split_name,
    unique_by,
)

VENDOR = "zoho"
API = "/crm/v7"
PAYMENT_FIELD = "Stripe_Payment_Id"
CUSTOMER_FIELD = "Stripe_Customer_Id"
DEFAULT_STAGES = {  # the Stage picklist of a new Zoho CRM org
    "new": "Qualification",
    "paid": "Closed Won",
    "invoiced": "Closed Won",
    "failed": "Closed Lost",
    "refunded": "Closed Lost",
    "overdue": "Negotiation/Review",
}
DEFAULT_FIELDS = {  # logical deal field -> its API name on a Zoho deal
    "amount": "Amount",
    "currency": "Payment_Currency",  # the native Currency exists only with multi-currency on
    "paid_on": "Closing_Date",
    "payment_id": PAYMENT_FIELD,
    "status": "Payment_Status",
    "refunded_amount": "Refunded_Amount",
    "method": "Payment_Method",
    "product": "Product_Or_Service",
    "kind": "Payment_Type",
    "invoice_pdf": "Invoice_PDF",
    "receipt_url": "Receipt_URL",
    "dashboard_url": "Stripe_Dashboard_URL",
}
# what Stripe knows of a contact beyond its name and e-mail; a contact has no company-name text
# field of its own (Account_Name is a lookup to an Accounts record), so custom fields
CONTACT_FIELDS = {"phone": "Phone", "company": "Company_Name", "tax_id": "Tax_ID"}
CONTACT_LABELS = {
    "company": {"pl": "Firma", "en": "Company"},
    "tax_id": {"pl": "NIP", "en": "Tax ID"},
    "customer_id": {"pl": "ID klienta Stripe", "en": "Stripe customer ID"},
}
DATA_TYPES: dict[FieldType, str] = {"number": "currency", "text": "text", "date": "date", "url": "website"}
UI_TYPES = {"currency": "Currency", "text": "Single Line", "date": "Date", "website": "URL"}
OPTIONS: dict[str, type | tuple[type, ...]] = {"pipeline": str, "send_currency": bool}
FIELD_NAME = (
    r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*",
    "a Zoho API name (letters, digits, single underscores)",
)
MANUAL_FIELD = (
    "in Zoho CRM: Setup > Customization > Modules and Fields > {module} > Layout: add a {ui} "
    "field labelled '{first}' (so its API name is {api}){unique}, save, then rename its label to '{label}'"
)
UNIQUE_HINT = ", tick 'Do not allow duplicate values'"


# --- quirks, each with its own test ---------------------------------------------------------


def record_errors(body: Any) -> list[dict[str, Any]]:
    """The records Zoho refused in a per-record answer (`status: error`)."""
    data = body.get("data") if isinstance(body, dict) else None
    return [r for r in data or [] if isinstance(r, dict) and r.get("status") == "error"]


def raise_record_errors(body: Any, what: str) -> list[dict[str, Any]]:
    """The per-record answers; any `status: error` raises PermanentError naming the first one."""
    errors = record_errors(body)
    if errors:
        first = errors[0]
        raise PermanentError(
            f"{what}: {len(errors)} record(s) refused: {first.get('message')} ({first.get('details') or {}})",
            vendor=VENDOR,
            code=first.get("code"),
        )
    return list(body.get("data") or [])


def is_unique(field: Mapping[str, Any]) -> bool:
    """Whether a field's metadata says 'Do not allow duplicate values'."""
    return bool(field.get("unique")) or bool(field.get("unique_field"))


# --- the client -----------------------------------------------------------------------------


class ZohoAccountsAPI(VendorAPI):
    """The data centre's accounts server, where access tokens come from."""

    vendor = VENDOR

    def classify(self, response: httpx.Response) -> VendorError | None:
        error = super().classify(response)
        if error is not None and error.message.startswith("You have made too many requests"):
            # access-token refreshes are capped (10 per 10 minutes): wait rather than fail
            return RateLimitedError(error.message, vendor=VENDOR, status=error.status, wait=60.0)
        return error


class ZohoAPI(VendorAPI):
    vendor = VENDOR

    def __init__(
        self,
        *,
        accounts_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        api_domain: str | None = None,
        concurrency: int = 5,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        **kw: Any,
    ) -> None:
        self._secrets = {
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        }
        self._api_domain = api_domain
        self._token: str | None = None
        self._expires = 0.0
        self._clock = clock
        self._refresh_lock = threading.Lock()
        self._slots = ConcurrencyLimiter(concurrency)
        self.accounts = ZohoAccountsAPI(accounts_url, transport=transport, sleep=sleep)
        super().__init__(api_domain or "https://www.zohoapis.com", sleep=sleep, transport=transport, **kw)

    def default_limiter(self) -> Limiter:
        return self._slots

    def refresh(self) -> None:
        """A new access token from the accounts server; its `api_domain` becomes the base URL."""
        with self._refresh_lock:
            body = self.accounts.request_json(
                "POST", "/oauth/v2/token", data={**self._secrets, "grant_type": "refresh_token"}
            )
            if not isinstance(body, dict) or "access_token" not in body:
                code = str(body.get("error") if isinstance(body, dict) else body)
                raise AuthError(f"token refresh refused: {code}", vendor=VENDOR, status=200, code=code)
            self._token = str(body["access_token"])
            self._expires = self._clock() + float(body.get("expires_in", 3600)) - 60
            self.http.base_url = httpx.URL(self._api_domain or str(body.get("api_domain")))
            self.base_url = str(self.http.base_url).rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        if self._token is None or self._clock() >= self._expires:
            self.refresh()
        return {"Authorization": f"Zoho-oauthtoken {self._token}"}

    def error_message(self, response: httpx.Response) -> tuple[str, str | None]:
        try:
            body = response.json()
        except ValueError:
            return super().error_message(response)
        errors = record_errors(body)
        if errors:  # an all-records-refused 400 carries the reasons per record
            return f"{errors[0].get('message')} ({errors[0].get('details') or {}})", errors[0].get("code")
        return super().error_message(response)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return super().request(method, path, **kw)
        except AuthError as exc:
            if exc.code != "INVALID_TOKEN":
                raise
        self._token = None  # revoked or expired early: one refresh, one more try
        return super().request(method, path, **kw)

    def close(self) -> None:
        self.accounts.close()
        super().close()


# --- the adapter ----------------------------------------------------------------------------


class ZohoCRM:
    """The `CRM` protocol over Zoho CRM's upsert and notes APIs."""

    batch_size = 100
    parallel = 4  # batches in flight at once; Zoho's concurrency limiter caps the calls

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        accounts_url: str = "https://accounts.zoho.com",
        api_domain: str | None = None,
        stages: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        pipeline: str | None = None,
        send_currency: bool = False,
        language: str = "pl",
        concurrency: int = 5,
        name: str = "zoho",
        **seams: Unpack[Seams],
    ) -> None:
        self.name = name
        self.stages = {**DEFAULT_STAGES, **(stages or {})}
        self.fields = dict(fields or {})  # the user's `[crm.fields]` overrides
        self.pipeline = pipeline
        self.send_currency = send_currency
        self.language = language
        defaults = {**DEFAULT_FIELDS, **({"currency": "Currency"} if send_currency else {})}
        # logical field -> API name: the defaults, then the overrides (an empty one drops a field)
        self.mapping = resolve_mapping(defaults, self.fields)
        self.api = ZohoAPI(
            accounts_url=accounts_url,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            api_domain=api_domain,
            concurrency=concurrency,
            **seams,
        )
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
    ) -> ZohoCRM:
        from stripeflow.blocks.crm import ZohoCredentials

        block, args = configure(
            VENDOR, target, env, ZohoCredentials, OPTIONS, FIELD_NAME, DEFAULT_STAGES, language=language
        )
        return cls(
            client_id=block.client_id.get_secret_value(),
            client_secret=block.client_secret.get_secret_value(),
            refresh_token=block.refresh_token.get_secret_value(),
            accounts_url=block.accounts_url,
            api_domain=block.api_domain,
            concurrency=block.concurrency,
            **args,
            **kw,
        )

    def _upsert(self, module: str, records: list[dict[str, Any]], keys: list[str], what: str) -> list[str]:
        body = self.api.request_json(
            "POST",
            f"{API}/{module}/upsert",
            json={"data": records, "duplicate_check_fields": keys, "trigger": []},
        )
        return [str(r["details"]["id"]) for r in raise_record_errors(body, what)]

    # -- contacts ------------------------------------------------------------------------------

    def keys_contact(self, email: str | None) -> bool:
        return True  # upsert with duplicate_check_fields: Zoho matches on the e-mail or customer id

    def upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        chosen, positions = unique_by(contacts, key=lambda c: c.key)
        records = []
        for c in chosen:
            if not (c.email or c.customer_id):
                raise PermanentError(
                    "a contact has neither an e-mail nor a Stripe customer id", vendor=VENDOR
                )
            first, last = split_name(c.name, c.email)
            record: dict[str, Any] = {"Last_Name": last}  # Last_Name is mandatory in Contacts
            if first:
                record["First_Name"] = first
            if c.email:
                record["Email"] = c.email.lower()
            if c.customer_id:
                record[CUSTOMER_FIELD] = c.customer_id
            for name, api_name in CONTACT_FIELDS.items():
                if getattr(c, name):  # what Stripe does not know is left as the user set it
                    record[api_name] = getattr(c, name)
            records.append(record)
        ids = self._upsert("Contacts", records, ["Email", CUSTOMER_FIELD], "contacts upsert")
        return [ids[p] for p in positions]

    # -- deals ---------------------------------------------------------------------------------

    def _deal_record(self, d: DealInput) -> dict[str, Any]:
        record: dict[str, Any] = {
            "Deal_Name": d.title[:120],  # Deal_Name holds at most 120 characters
            "Stage": self.stages.get(d.stage, d.stage),
        }
        if self.pipeline:
            record["Pipeline"] = self.pipeline
        if d.contact_id:
            record["Contact_Name"] = {"id": d.contact_id}
        record.update({k: v for k, v in d.fields.items() if k})
        record.update(payment_fields(d.payment, self.mapping, _zoho_value, d.catalogue))
        record[PAYMENT_FIELD] = d.payment_id  # the key, whatever the mapping says
        return record

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        chosen, positions = unique_by(deals, key=lambda d: d.payment_id)
        ids = self._upsert("Deals", [self._deal_record(d) for d in chosen], [PAYMENT_FIELD], "deals upsert")
        return [ids[p] for p in positions]

    # -- notes ---------------------------------------------------------------------------------

    def add_notes(self, notes: Sequence[NoteInput]) -> list[str]:
        ids: list[str | None] = [self._notes.pop(n) for n in notes]
        todo = [i for i, got in enumerate(ids) if got is None]
        if todo:
            with self._notes.kept_on_error(notes, ids):  # halves call_in_batches resends skip made ones
                body = self.api.request_json(
                    "POST",
                    f"{API}/Notes",
                    idempotent=False,
                    json={
                        "data": [
                            {
                                "Note_Title": f"Stripe {notes[i].payment_id}",
                                "Note_Content": notes[i].text(),
                                "Parent_Id": {"module": {"api_name": "Deals"}, "id": notes[i].deal_id},
                            }
                            for i in todo
                        ]
                    },
                )
                for i, r in zip(todo, body.get("data") or [], strict=False):
                    if r.get("status") == "success":
                        ids[i] = str(r["details"]["id"])
                raise_record_errors(body, "notes create")
        return [str(i) for i in ids]

    def find_notes(self, notes: Sequence[NoteInput]) -> list[str | None]:
        """Each deal's notes (its Notes related list, page by page), matched by marker."""
        pages = cast(Paginator, PageNumberPaginator("data", "info.more_records"))
        on_deal: dict[str, list[dict[str, Any]]] = {}
        for deal in dict.fromkeys(n.deal_id for n in notes if n.marker):
            on_deal[deal] = list(
                self.api.paginate(
                    "GET",
                    f"{API}/Deals/{deal}/Notes",
                    pages,
                    params={"fields": "Note_Content", "per_page": 200, "page": 1},
                )
            )
        return [
            next(
                (
                    str(r["id"])
                    for r in on_deal.get(n.deal_id, [])
                    if has_marker(r.get("Note_Content"), n.marker)
                ),
                None,
            )
            for n in notes
        ]

    def close(self) -> None:
        self.api.close()

    # -- setup and check -----------------------------------------------------------------------

    def _fields(self, module: str) -> dict[str, dict[str, Any]]:
        body = self.api.request_json("GET", f"{API}/settings/fields", params={"module": module}) or {}
        return {str(f["api_name"]): f for f in body.get("fields", [])}

    def _wanted(self) -> dict[tuple[str, str], tuple[str, str, bool]]:
        """(module, API name) -> (data type, label in the account's language, unique) of every
        field the deals and contacts are written with (the native ones simply exist)."""
        lang = self.language
        wanted: dict[tuple[str, str], tuple[str, str, bool]] = {
            ("Deals", PAYMENT_FIELD): ("text", BY_NAME["payment_id"].label(lang), True),
            ("Contacts", CUSTOMER_FIELD): ("text", CONTACT_LABELS["customer_id"].get(lang, "Stripe"), True),
        }
        for name, api_name in self.mapping.items():
            spec = BY_NAME.get(name)  # a Payment field of the user's own choice is text
            kind = DATA_TYPES[spec.type] if spec else "text"
            wanted.setdefault(("Deals", api_name), (kind, spec.label(lang) if spec else name, False))
        for name, api_name in CONTACT_FIELDS.items():
            labels = CONTACT_LABELS.get(name)
            if labels:
                wanted["Contacts", api_name] = ("text", labels.get(lang, name), False)
        return wanted

    def _create_field(self, module: str, api_name: str, kind: str, label: str, unique: bool) -> str:
        """Create one custom field so that Zoho names it `api_name`, then give it `label`; returns
        what went differently ("" when all went as planned). Raises PermanentError when refused."""
        first = api_name.replace("_", " ")  # Zoho derives the API name from the first label
        spec: dict[str, Any] = {"field_label": first, "data_type": kind}
        if kind == "text":
            spec["length"] = 255
        if unique:  # field-creation API (v6+): the unique flag's shape is Zoho's documented `unique` key
            spec["unique"] = {"casesensitive": False}
        body = self.api.request_json(
            "POST", f"{API}/settings/fields", params={"module": module}, json={"fields": [spec]}
        )
        _raise_field_errors(body, f"{module} field {first!r}")
        fields = self._fields(module)
        created = fields.get(api_name)
        if created is None or (unique and not is_unique(created)):
            made = next((f for f in fields.values() if f.get("field_label") == first), None)
            return f"created as {made and made.get('api_name')}, not as needed"
        taken = {str(f.get("field_label", "")).lower() for n, f in fields.items() if n != api_name}
        if label.lower() in taken:  # labels are unique in a module (the native Currency, say)
            label = f"{label} (Stripe)"
        if label != first:
            body = self.api.request_json(
                "PATCH",
                f"{API}/settings/fields",
                params={"module": module},
                json={"fields": [{"id": created["id"], "field_label": label}]},
            )
            _raise_field_errors(body, f"{module} field {api_name} relabel")
        return ""

    def setup(self) -> SetupReport:
        """Create every custom field the deals and contacts need (the two unique keys, the payment
        fields, the contact's company and tax id) through the fields settings API, labelled in the
        account's language, or say exactly what to do by hand; idempotent."""
        report = SetupReport(VENDOR)
        existing = {module: self._fields(module) for module in ("Deals", "Contacts")}
        for (module, api_name), (kind, label, unique) in self._wanted().items():
            thing = f"{module}.{api_name}" + (" (unique)" if unique else "")
            manual = MANUAL_FIELD.format(
                module=module,
                ui=UI_TYPES.get(kind, kind),
                first=api_name.replace("_", " "),
                api=api_name,
                unique=UNIQUE_HINT if unique else "",
                label=label,
            )
            have = existing[module].get(api_name)
            if have is not None:
                if unique and not is_unique(have):
                    report.add(
                        thing,
                        "manual",
                        "exists but allows duplicates: edit it in Setup > Modules and Fields "
                        "and tick 'Do not allow duplicate values'",
                    )
                else:
                    report.add(thing, "exists")
                continue
            try:
                problem = self._create_field(module, api_name, kind, label, unique)
            except PermanentError as exc:
                report.add(thing, "manual", f"the API refused ({exc.message}); {manual}")
                continue
            if problem:
                report.add(thing, "manual", f"{problem}; {manual}")
            else:
                report.add(thing, "created", label)
        stage_values = self._stage_values()
        for logical, stage in self.stages.items():
            if stage in stage_values:
                report.add(f"stage {logical} -> {stage!r}", "exists")
            else:
                report.add(
                    f"stage {logical} -> {stage!r}",
                    "manual",
                    "add it to the Deals Stage picklist (Setup > Modules and Fields > Deals)",
                )
        report.mapping = {
            **{f"stage.{k}": v for k, v in self.stages.items()},
            **{f"field.{k}": v for k, v in self.mapping.items()},
            **{f"contact.{k}": v for k, v in CONTACT_FIELDS.items()},
            "deal key": f"Deals.{PAYMENT_FIELD}",
            "contact key": f"Contacts.Email, then {CUSTOMER_FIELD}",
        }
        return report

    def _stage_values(self) -> set[str]:
        stage = self._fields("Deals").get("Stage") or {}
        return {
            str(v.get("actual_value") or v.get("display_value")) for v in stage.get("pick_list_values", [])
        }

    def check(self) -> CheckReport:
        """Try the refresh token and the API, the unique fields, the stages and the mapped fields."""
        report = CheckReport(VENDOR)
        try:
            deal_fields = self._fields("Deals")
            report.ok.append(f"token refreshed, API at {self.api.base_url}")
        except AuthError as exc:
            report.problems.append(
                f"Zoho refused the credentials ({exc.message}): check the client id and secret, "
                "generate a new refresh token, and use the accounts URL of your data centre"
            )
            return report
        except VendorError as exc:
            report.problems.append(f"cannot reach Zoho: {exc}")
            return report
        fields = {"Deals": deal_fields, "Contacts": self._fields("Contacts")}
        for (module, api_name), (kind, label, unique) in self._wanted().items():
            f = fields[module].get(api_name)
            if f is None:
                report.problems.append(
                    f"{module}.{api_name} ({UI_TYPES.get(kind, kind)} field '{label}') is missing: "
                    "run `stripeflow crm setup zoho`"
                )
            elif unique and not is_unique(f):
                report.problems.append(f"{module}.{api_name} allows duplicates, so upserts cannot key on it")
        stage_values = self._stage_values()
        for logical, stage in self.stages.items():
            if stage not in stage_values:
                report.problems.append(f"stages.{logical}: {stage!r} is not in the Deals Stage picklist")
        if not report.problems:
            report.ok.append("payment fields, contact fields and stages exist")
        return report


def _raise_field_errors(body: Any, what: str) -> None:
    """The fields settings API answers per field, like records: any `status: error` raises."""
    errors = [
        f for f in (body or {}).get("fields") or [] if isinstance(f, dict) and f.get("status") == "error"
    ]
    if errors:
        first = errors[0]
        raise PermanentError(
            f"{what}: {first.get('message')} ({first.get('details') or {}})",
            vendor=VENDOR,
            code=first.get("code"),
        )


def _zoho_value(value: Any) -> Any:
    """Zoho's number fields take JSON numbers; everything else as `plain` gives it."""
    return float(value) if isinstance(value, Decimal) else plain(value)
