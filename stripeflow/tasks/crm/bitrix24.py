"""Bitrix24 adapter over an inbound webhook: every batch form is Bitrix24's own `batch` (50 commands).

A batch of up to 50 contacts or deals costs two calls: one `batch` of lookups (`crm.contact.list`
by EMAIL, or by ORIGIN_ID = the Stripe customer id; `crm.deal.list` by the payment-id field),
then one `batch` of `*.add` / `*.update`. Notes are one `batch` of `crm.timeline.comment.add`.
The payment id lives in a UF field (`UF_CRM_STRIPE_PI`, made by `setup()`) or, with
`options.payment_id_field = "ORIGIN_ID"`, in the deal's ORIGIN_ID. A user-field name holds at most
20 characters with its `UF_CRM_` prefix (13 of the user's own), so every name here fits.
Every payment field of the catalogue (`core.deal_fields`) lands on the deal: amount, currency and
date in the native OPPORTUNITY, CURRENCY_ID and CLOSEDATE, the rest in `UF_CRM_SF_*` user fields
that `setup()` creates with the catalogue's labels in the account's language (`options.language`).
The webhook URL holds the secret, so it is never printed: only the portal's host is.
`*.add` carries no key: a batch with adds is sent unretried, and when its answer is lost the
lookups run again at once (they read the records, not an index) and only what is still missing
is added. A note is found among its deal's `crm.timeline.comment.list` by its marker.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack, cast
from urllib.parse import quote, urlsplit

import httpx

from stripeflow.core.config import STAGE_NAMES, CRMTarget
from stripeflow.core.deal_fields import BY_NAME, FieldType, resolve_mapping
from stripeflow.core.errors import AuthError, ConfigError, PermanentError, RateLimitedError, VendorError
from stripeflow.core.http import (
    Clock,
    Limiter,
    OffsetPaginator,
    Paginator,
    Sleep,
    TokenBucketLimiter,
    VendorAPI,
)
from stripeflow.core.redact import hide_in_logs
from stripeflow.tasks.crm.base import ContactInput, DealInput, NoteInput, has_marker
from stripeflow.tasks.crm.common import (
    CheckReport,
    Remembered,
    Seams,
    SetupReport,
    configure,
    look_first,
    payment_fields,
    plain,
    split_name,
    unique_by,
    where,
)

VENDOR = "bitrix24"
MAX_COMMANDS = 50
LIST_PAGE = 50  # records in one page of a *.list answer
PAYMENT_UF = "UF_CRM_STRIPE_PI"
UF_PREFIX = "UF_CRM_"
UF_MAX = 20  # characters in a user-field name, UF_CRM_ included (13 of the user's own)
DEFAULT_FIELDS = {  # logical deal field -> its home on a Bitrix24 deal (the payment id: `key_field`)
    "amount": "OPPORTUNITY",
    "currency": "CURRENCY_ID",
    "paid_on": "CLOSEDATE",
    "status": "UF_CRM_SF_STATUS",
    "refunded_amount": "UF_CRM_SF_REFUNDED",
    "method": "UF_CRM_SF_METHOD",
    "product": "UF_CRM_SF_PRODUCT",
    "kind": "UF_CRM_SF_KIND",
    "invoice_pdf": "UF_CRM_SF_INVOICE",
    "receipt_url": "UF_CRM_SF_RECEIPT",
    "dashboard_url": "UF_CRM_SF_DASHBOARD",
}
# what Stripe knows of a contact beyond its name and e-mail: PHONE is a native multi-field; a
# contact has no company-name field of its own (only a link to a company record), so user fields
CONTACT_PHONE = "PHONE"
CONTACT_FIELDS = {"company": "UF_CRM_SF_COMPANY", "tax_id": "UF_CRM_SF_TAX_ID"}
CONTACT_LABELS = {
    "company": {"pl": "Firma", "en": "Company"},
    "tax_id": {"pl": "NIP", "en": "Tax ID"},
}
USER_TYPES: dict[FieldType, str] = {"number": "double", "text": "string", "date": "date", "url": "url"}
DEFAULT_STAGES = {  # the built-in stages of the default deal pipeline (category 0)
    "new": "NEW",
    "paid": "WON",
    "invoiced": "WON",
    "failed": "LOSE",
    "refunded": "APOLOGY",
    "overdue": "FINAL_INVOICE",
}
OPTIONS: dict[str, type | tuple[type, ...]] = {"category_id": int, "payment_id_field": str}
UF_NAME = rf"UF_CRM_[A-Z0-9_]{{1,{UF_MAX - len(UF_PREFIX)}}}"
FIELD_NAME = (
    rf"{UF_NAME}|(?!UF_)[A-Z][A-Z_]*",  # a standard field never starts with UF_
    f"a Bitrix24 deal field: an upper-case standard field, or UF_CRM_ and at most "
    f"{UF_MAX - len(UF_PREFIX)} of A-Z, 0-9 and _ ({UF_MAX} characters in all, Bitrix24's limit)",
)
NO_EVENT = {"REGISTER_SONET_EVENT": "N"}  # do not flood the activity stream with our writes


# --- quirks, each with its own test ---------------------------------------------------------


def php_query(params: Mapping[str, Any], prefix: str = "") -> str:
    """PHP's http_build_query, which `batch` commands need.

    {"filter": {"EMAIL": "a@b"}} -> filter[EMAIL]=a%40b
    """
    parts: list[str] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            parts.append(php_query(value, name))
        elif isinstance(value, list | tuple):
            parts.append(php_query({str(i): v for i, v in enumerate(value)}, name))
        else:
            text = "" if value is None else ("Y" if value is True else "N" if value is False else str(value))
            parts.append(f"{quote(name, safe='[]')}={quote(text, safe='')}")
    return "&".join(p for p in parts if p)


def check_key_field(target: CRMTarget, options: Mapping[str, Any]) -> None:
    """The payment id can live only in the deal's ORIGIN_ID or in a UF_CRM_ field Bitrix24 can make."""
    key = str(options.get("payment_id_field", PAYMENT_UF))
    if key != "ORIGIN_ID" and not re.fullmatch(UF_NAME, key):
        raise ConfigError(
            f"{where(target)}: options.payment_id_field: {key!r} must be ORIGIN_ID or "
            f"UF_CRM_ and at most {UF_MAX - len(UF_PREFIX)} of A-Z, 0-9 and _ ({UF_MAX} characters in all)"
        )


def bitrix_value(value: Any) -> Any:
    """A deal value as Bitrix24 takes it: text (numbers and dates as `plain` writes them), an
    empty string clearing a field that has no value."""
    return "" if value is None else plain(value)


def command(method: str, params: Mapping[str, Any]) -> str:
    return f"{method}?{php_query(params)}"


def stage_in_category(stage: str, category_id: int) -> str:
    """Stage ids outside pipeline 0 carry its prefix: WON in category 3 is `C3:WON`."""
    if category_id == 0 or stage.startswith(f"C{category_id}:"):
        return stage
    return f"C{category_id}:{stage}"


def as_dict(value: Any) -> dict[str, Any]:
    """PHP encodes an empty map as `[]`: read `result_error` and friends as a dict either way."""
    return dict(value) if isinstance(value, Mapping) else {}


def rate_limit_wait(response: httpx.Response, now: float, per_second: float) -> float | None:
    """Bitrix24 sends no Retry-After: OPERATION_TIME_LIMIT names `time.operating_reset_at`;
    QUERY_LIMIT_EXCEEDED means the leaky bucket is full, so wait for one drop to drain."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if body.get("error") == "OPERATION_TIME_LIMIT":
        reset = (body.get("time") or {}).get("operating_reset_at")
        return max(1.0, float(reset) - now) if reset else 60.0
    if body.get("error") == "QUERY_LIMIT_EXCEEDED":
        return 1.0 / per_second
    return None


# --- the client -----------------------------------------------------------------------------


class Bitrix24API(VendorAPI):
    vendor = VENDOR

    def __init__(
        self,
        webhook_url: str,
        *,
        burst: int = 50,
        per_second: float = 2.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        wall: Clock = time.time,
        **kw: Any,
    ) -> None:
        self.per_second = per_second
        self.wall = wall
        self._bucket = TokenBucketLimiter(burst, per_second, clock=clock, sleep=sleep)
        hide_in_logs(urlsplit(webhook_url).path.rstrip("/"))  # /rest/<user>/<code>: the code is the secret
        super().__init__(webhook_url.rstrip("/") + "/", sleep=sleep, **kw)

    def default_limiter(self) -> Limiter:
        return self._bucket

    def classify(self, response: httpx.Response) -> VendorError | None:
        error = super().classify(response)
        if error is not None and error.code in ("QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"):
            return RateLimitedError(
                error.message,
                vendor=VENDOR,
                status=error.status,
                code=error.code,
                wait=rate_limit_wait(response, self.wall(), self.per_second),
            )
        return error

    def call(self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True) -> Any:
        body = self.request_json("POST", f"{method}.json", json=dict(params or {}), idempotent=idempotent)
        return body.get("result") if isinstance(body, dict) else None

    def batch(
        self, commands: Mapping[str, str], *, idempotent: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One `batch` call: (results by key, errors by key)."""
        if len(commands) > MAX_COMMANDS:
            raise ValueError(f"batch takes at most {MAX_COMMANDS} commands, got {len(commands)}")
        result = self.call("batch", {"halt": 0, "cmd": dict(commands)}, idempotent=idempotent) or {}
        return as_dict(result.get("result")), as_dict(result.get("result_error"))


def _adds(writes: Mapping[str, str]) -> bool:
    """Whether a batch of writes creates anything (`*.add` carries no key; `*.update` is idempotent)."""
    return any(cmd.split("?", 1)[0].endswith(".add") for cmd in writes.values())


def _comments_of(deal_id: str) -> dict[str, Any]:
    return {
        "filter": {"ENTITY_ID": deal_id, "ENTITY_TYPE": "deal"},
        "select": ["ID", "ENTITY_ID", "COMMENT"],
        "order": {"ID": "ASC"},
    }


def _raise_errors(errors: Mapping[str, Any], what: str) -> None:
    if errors:
        key, first = next(iter(errors.items()))
        detail = first.get("error_description") or first.get("error") if isinstance(first, Mapping) else first
        raise PermanentError(
            f"{what}: {len(errors)} command(s) failed, {key}: {detail}",
            vendor=VENDOR,
            code=str(first.get("error") or "") or None if isinstance(first, Mapping) else None,
        )


def _contact_changes(c: ContactInput, have: Mapping[str, Any]) -> dict[str, Any]:
    """The contact fields Stripe knows that the record (`have`, empty for a new one) lacks or has
    otherwise. A phone is added only when the contact has no such number: PHONE is a multi-field,
    and a value sent without its ID is added beside the others."""
    out: dict[str, Any] = {}
    if c.name and have:
        first, last = split_name(c.name, c.email)
        if (have.get("NAME") or "", have.get("LAST_NAME") or "") != (first, last):
            out.update(NAME=first, LAST_NAME=last)
    phones = [str(v.get("VALUE", "")) for v in have.get(CONTACT_PHONE) or [] if isinstance(v, Mapping)]
    if c.phone and c.phone not in phones:
        out[CONTACT_PHONE] = [{"VALUE": c.phone, "VALUE_TYPE": "WORK"}]
    for name, uf in CONTACT_FIELDS.items():
        value = getattr(c, name)
        if value and have.get(uf) != value:  # what Stripe does not know is left as the user set it
            out[uf] = value
    return out


# --- the adapter ----------------------------------------------------------------------------


class Bitrix24CRM:
    """The `CRM` protocol over Bitrix24's `batch`."""

    batch_size = MAX_COMMANDS
    parallel = 2  # the leaky bucket refills 2 calls a second: two batches keep it busy

    def __init__(
        self,
        *,
        webhook_url: str,
        stages: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        category_id: int = 0,
        payment_id_field: str = PAYMENT_UF,
        language: str = "pl",
        burst: int = 50,
        per_second: float = 2.0,
        name: str = "bitrix24",
        wall: Clock = time.time,
        **seams: Unpack[Seams],
    ) -> None:
        self.name = name
        self.category_id = category_id
        self.stages = {
            k: stage_in_category(v, category_id) for k, v in {**DEFAULT_STAGES, **(stages or {})}.items()
        }
        self.fields = dict(fields or {})  # the user's `[crm.fields]` overrides
        self.key_field = payment_id_field
        # logical field -> deal field: the defaults, then the overrides (an empty one drops a field)
        self.mapping = resolve_mapping({**DEFAULT_FIELDS, "payment_id": payment_id_field}, self.fields)
        self.language = language
        self.api = Bitrix24API(webhook_url, burst=burst, per_second=per_second, wall=wall, **seams)
        self.portal = urlsplit(webhook_url).netloc  # printable; the path holds the secret
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
    ) -> Bitrix24CRM:
        from stripeflow.blocks.crm import Bitrix24Credentials

        block, args = configure(
            VENDOR,
            target,
            env,
            Bitrix24Credentials,
            OPTIONS,
            FIELD_NAME,
            DEFAULT_STAGES,
            check=check_key_field,
            language=language,
        )
        return cls(
            webhook_url=block.webhook_url.get_secret_value(),
            burst=block.burst,
            per_second=block.per_second,
            **args,
            **kw,
        )

    # -- contacts ------------------------------------------------------------------------------

    def keys_contact(self, email: str | None) -> bool:
        return False  # crm.contact.list, then crm.contact.add: nothing keys the add

    def upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        # crm.contact.add carries no key; crm.contact.list reads the records themselves, so a lost
        # answer is looked for at once, and only what is still missing is added
        return look_first(self._upsert_contacts, contacts, vendor=VENDOR, consistent=True)

    def _upsert_contacts(self, contacts: Sequence[ContactInput]) -> list[str]:
        chosen, positions = unique_by(contacts, key=lambda c: c.key)
        lookups = {}
        for k, c in enumerate(chosen):
            if c.email:
                where: dict[str, str] = {"EMAIL": c.email.lower()}
            elif c.customer_id:
                where = {"ORIGIN_ID": c.customer_id}
            else:
                raise PermanentError(
                    "a contact has neither an e-mail nor a Stripe customer id", vendor=VENDOR
                )
            lookups[f"c{k}"] = command(
                "crm.contact.list",
                {
                    "filter": where,
                    "select": ["ID", "NAME", "LAST_NAME", CONTACT_PHONE, *CONTACT_FIELDS.values()],
                    "order": {"ID": "ASC"},
                },
            )
        found, errors = self.api.batch(lookups)
        _raise_errors(errors, "contact lookup")
        ids: dict[int, str] = {}
        writes: dict[str, str] = {}
        for k, c in enumerate(chosen):
            hits = found.get(f"c{k}") or []
            if hits:
                ids[k] = str(hits[0]["ID"])
                # no EMAIL here: sending it again would add a second e-mail to the contact
                changes = _contact_changes(c, hits[0])
                if changes:
                    writes[f"c{k}"] = command(
                        "crm.contact.update", {"id": ids[k], "fields": changes, "params": NO_EVENT}
                    )
            else:
                first, last = split_name(c.name, c.email)
                new: dict[str, Any] = {"NAME": first, "LAST_NAME": last, "SOURCE_ID": "WEB"}
                if c.email:
                    new["EMAIL"] = [{"VALUE": c.email.lower(), "VALUE_TYPE": "WORK"}]
                if c.customer_id:
                    new.update(ORIGINATOR_ID="stripe", ORIGIN_ID=c.customer_id)
                new.update(_contact_changes(c, {}))
                writes[f"c{k}"] = command("crm.contact.add", {"fields": new, "params": NO_EVENT})
        if writes:
            done, errors = self.api.batch(writes, idempotent=not _adds(writes))
            _raise_errors(errors, "contact write")
            for key, value in done.items():
                if value is not True:
                    ids[int(key[1:])] = str(value)
        return [ids[p] for p in positions]

    # -- deals ---------------------------------------------------------------------------------

    def _deal_fields(self, d: DealInput) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "TITLE": d.title,
            "CATEGORY_ID": self.category_id,
            "STAGE_ID": self.stages.get(d.stage, d.stage),
            **{k: v for k, v in d.fields.items() if k},
            **payment_fields(d.payment, self.mapping, bitrix_value, d.catalogue),
            self.key_field: d.payment_id,  # the key, whatever the mapping says
        }
        if "OPPORTUNITY" in fields:
            fields["IS_MANUAL_OPPORTUNITY"] = "Y"  # else Bitrix24 sums the deal's products over it
        if self.key_field == "ORIGIN_ID":
            fields["ORIGINATOR_ID"] = "stripe"
        if d.contact_id:
            fields["CONTACT_IDS"] = [d.contact_id]
        return fields

    def upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        # crm.deal.add carries no key: as for contacts, a lost answer is looked for by payment id
        return look_first(self._upsert_deals, deals, vendor=VENDOR, consistent=True)

    def _upsert_deals(self, deals: Sequence[DealInput]) -> list[str]:
        chosen, positions = unique_by(deals, key=lambda d: d.payment_id)
        found, errors = self.api.batch(
            {
                f"d{k}": command(
                    "crm.deal.list",
                    {"filter": {self.key_field: d.payment_id}, "select": ["ID"], "order": {"ID": "ASC"}},
                )
                for k, d in enumerate(chosen)
            }
        )
        _raise_errors(errors, "deal lookup")
        ids: dict[int, str] = {}
        writes: dict[str, str] = {}
        for k, d in enumerate(chosen):
            hits = found.get(f"d{k}") or []
            if hits:
                ids[k] = str(hits[0]["ID"])
                writes[f"d{k}"] = command(
                    "crm.deal.update", {"id": ids[k], "fields": self._deal_fields(d), "params": NO_EVENT}
                )
            else:
                writes[f"d{k}"] = command(
                    "crm.deal.add", {"fields": self._deal_fields(d), "params": NO_EVENT}
                )
        done, errors = self.api.batch(writes, idempotent=not _adds(writes))
        _raise_errors(errors, "deal write")
        for key, value in done.items():
            if value is not True:
                ids[int(key[1:])] = str(value)
        return [ids[p] for p in positions]

    # -- notes ---------------------------------------------------------------------------------

    def add_notes(self, notes: Sequence[NoteInput]) -> list[str]:
        ids: list[str | None] = [self._notes.pop(n) for n in notes]
        todo = {
            f"n{i}": command(
                "crm.timeline.comment.add",
                {"fields": {"ENTITY_ID": n.deal_id, "ENTITY_TYPE": "deal", "COMMENT": n.text()}},
            )
            for i, n in enumerate(notes)
            if ids[i] is None
        }
        if todo:
            with self._notes.kept_on_error(notes, ids):  # halves call_in_batches resends skip made ones
                done, errors = self.api.batch(todo, idempotent=False)
                for key, value in done.items():
                    ids[int(key[1:])] = str(value)
                _raise_errors(errors, "timeline comment")
        return [str(i) for i in ids]

    def find_notes(self, notes: Sequence[NoteInput]) -> list[str | None]:
        """Each deal's timeline comments, one `crm.timeline.comment.list` per deal in a `batch`
        (a deal with more than a page is then read page by page), matched by marker."""
        deals = list(dict.fromkeys(n.deal_id for n in notes if n.marker))
        on_deal: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(deals), MAX_COMMANDS):
            chunk = deals[start : start + MAX_COMMANDS]
            found, errors = self.api.batch(
                {
                    f"n{k}": command("crm.timeline.comment.list", _comments_of(deal))
                    for k, deal in enumerate(chunk)
                }
            )
            _raise_errors(errors, "timeline comment lookup")
            for k, deal in enumerate(chunk):
                rows = found.get(f"n{k}") or []
                if len(rows) >= LIST_PAGE:  # maybe more than one page
                    rows = list(
                        self.api.paginate(
                            "POST",
                            "crm.timeline.comment.list.json",
                            cast(Paginator, OffsetPaginator("result", "next", "start", in_body=True)),
                            json=_comments_of(deal),
                        )
                    )
                on_deal[deal] = rows
        return [
            next(
                (str(r["ID"]) for r in on_deal.get(n.deal_id, []) if has_marker(r.get("COMMENT"), n.marker)),
                None,
            )
            for n in notes
        ]

    def close(self) -> None:
        self.api.close()

    # -- setup and check -----------------------------------------------------------------------

    def _status_entity(self) -> str:
        return "DEAL_STAGE" if self.category_id == 0 else f"DEAL_STAGE_{self.category_id}"

    def _existing_stages(self) -> set[str]:
        rows = self.api.call("crm.status.list", {"filter": {"ENTITY_ID": self._status_entity()}}) or []
        return {str(r["STATUS_ID"]) for r in rows}

    def _user_fields(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(entity, UF field) -> (user type, label in the account's language) of every user field
        the mapping and the contacts need."""
        wanted: dict[tuple[str, str], tuple[str, str]] = {}
        if self.key_field.startswith(UF_PREFIX):
            wanted["deal", self.key_field] = ("string", BY_NAME["payment_id"].label(self.language))
        for name, field in self.mapping.items():
            if field.startswith(UF_PREFIX):
                spec = BY_NAME.get(name)  # a Payment field of the user's own choice is text
                kind = USER_TYPES[spec.type] if spec else "string"
                wanted.setdefault(("deal", field), (kind, spec.label(self.language) if spec else name))
        for name, field in CONTACT_FIELDS.items():
            wanted["contact", field] = ("string", CONTACT_LABELS[name].get(self.language, name))
        return wanted

    def _fields_of(self) -> dict[str, dict[str, Any]]:
        return {
            "deal": self.api.call("crm.deal.fields") or {},
            "contact": self.api.call("crm.contact.fields") or {},
        }

    def setup(self) -> SetupReport:
        """Create the user fields (the payment id, the payment fields, the contact's company and
        tax id) with the catalogue's labels, and any configured stage the pipeline lacks; idempotent."""
        report = SetupReport(VENDOR)
        if self.key_field == "ORIGIN_ID":
            report.add("deal key ORIGIN_ID", "exists", "built in")
        existing_fields = self._fields_of()
        for (entity, field), (kind, label) in self._user_fields().items():
            thing = f"{entity} field {field}"
            if field in existing_fields[entity]:
                report.add(thing, "exists")
                continue
            self.api.call(
                f"crm.{entity}.userfield.add",
                {
                    "fields": {
                        "FIELD_NAME": field.removeprefix(UF_PREFIX),
                        "USER_TYPE_ID": kind,
                        "XML_ID": field,
                        "LABEL": label,
                        "EDIT_FORM_LABEL": label,
                        "LIST_COLUMN_LABEL": label,
                        "LIST_FILTER_LABEL": label,
                        "SHOW_FILTER": "E" if field == self.key_field else "N",
                    }
                },
            )
            report.add(thing, "created", label)
        existing = self._existing_stages()
        labels = STAGE_NAMES.get(self.language, STAGE_NAMES["pl"])
        for sort, (logical, stage) in enumerate(self.stages.items(), start=1):
            if stage in existing:
                report.add(f"stage {logical} -> {stage}", "exists")
            else:
                self.api.call(
                    "crm.status.add",
                    {
                        "fields": {
                            "ENTITY_ID": self._status_entity(),
                            "STATUS_ID": stage,
                            "NAME": labels[logical],
                            "SORT": 1000 + sort * 10,
                        }
                    },
                )
                existing.add(stage)
                report.add(f"stage {logical} -> {stage}", "created", labels[logical])
        report.mapping = {
            **{f"stage.{k}": v for k, v in self.stages.items()},
            **{f"field.{k}": v for k, v in self.mapping.items()},
            **{f"contact.{k}": v for k, v in {"phone": CONTACT_PHONE, **CONTACT_FIELDS}.items()},
            "deal key": self.key_field,
            "contact key": "EMAIL, then ORIGIN_ID",
            "pipeline": f"category {self.category_id}",
        }
        return report

    def check(self) -> CheckReport:
        """Try the webhook, the user fields, the stages and the mapped fields."""
        report = CheckReport(VENDOR)
        try:
            fields = self._fields_of()
            report.ok.append(f"webhook accepted by {self.portal}")
        except AuthError as exc:
            report.problems.append(
                f"webhook refused by {self.portal} ({exc.message}): create an inbound webhook "
                "with the crm scope and put its URL in the block or BITRIX24_WEBHOOK_URL"
            )
            return report
        except VendorError as exc:
            report.problems.append(f"cannot reach Bitrix24 at {self.portal}: {exc}")
            return report
        for (entity, field), (_, label) in self._user_fields().items():
            if field not in fields[entity]:
                report.problems.append(
                    f"{entity} field {field} ({label}) is missing: run `stripeflow crm setup bitrix24`"
                )
        existing = self._existing_stages()
        for logical, stage in self.stages.items():
            if stage not in existing:
                report.problems.append(
                    f"stages.{logical}: stage {stage!r} does not exist in category "
                    f"{self.category_id}: run `stripeflow crm setup bitrix24`"
                )
        for name, field in self.mapping.items():
            if not field.startswith(UF_PREFIX) and field not in fields["deal"]:
                report.problems.append(
                    f"fields.{name}: deal field {field!r} does not exist; name a deal field, or "
                    f'set `{name} = ""` in [crm.fields] to leave it off the deal'
                )
        if not report.problems:
            report.ok.append("payment fields, contact fields, stages and mapped fields exist")
        return report
