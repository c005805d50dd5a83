"""Bitrix24 adapter over an inbound webhook: every batch form is Bitrix24's own `batch` (50 commands).

A batch of up to 50 contacts or deals costs two calls: one `batch` of lookups (`crm.contact.list`
by EMAIL, or by ORIGIN_ID = the Stripe customer id; `crm.deal.list` by the payment-id field),
then one `batch` of `*.add` / `*.update`. Notes are one `batch` of `crm.timeline.comment.add`.
The payment id lives in a UF field (`UF_CRM_STRIPE_PAYMENT_ID`, made by `setup()`) or, with
`options.payment_id_field = "ORIGIN_ID"`, in the deal's ORIGIN_ID. The webhook URL holds the
secret, so it is never printed: only the portal's host is.
`*.add` carries no key: a batch with adds is sent unretried, and when its answer is lost the
lookups run again at once (they read the records, not an index) and only what is still missing
is added. A note is found among its deal's `crm.timeline.comment.list` by its marker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack, cast
from urllib.parse import quote, urlsplit

import httpx

from stripeflow.core.config import STAGE_NAMES, CRMTarget
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
    mapped_fields,
    split_name,
    unique_by,
    where,
)

VENDOR = "bitrix24"
MAX_COMMANDS = 50
LIST_PAGE = 50  # records in one page of a *.list answer
PAYMENT_UF = "UF_CRM_STRIPE_PAYMENT_ID"
DEFAULT_STAGES = {  # the built-in stages of the default deal pipeline (category 0)
    "new": "NEW",
    "paid": "WON",
    "invoiced": "WON",
    "failed": "LOSE",
    "refunded": "APOLOGY",
    "overdue": "FINAL_INVOICE",
}
OPTIONS: dict[str, type | tuple[type, ...]] = {"category_id": int, "payment_id_field": str, "language": str}
FIELD_NAME = (
    r"UF_CRM_[A-Z0-9_]+|[A-Z][A-Z_]*",
    "a Bitrix24 deal field (UF_CRM_... or an upper-case standard field)",
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
    """The payment id can live only in the deal's ORIGIN_ID or in a UF_CRM_ field."""
    key = str(options.get("payment_id_field", PAYMENT_UF))
    if key != "ORIGIN_ID" and not key.startswith("UF_CRM_"):
        raise ConfigError(
            f"{where(target)}: options.payment_id_field: {key!r} must be ORIGIN_ID or UF_CRM_..."
        )


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
        self.fields = dict(fields or {})
        self.key_field = payment_id_field
        self.language = language
        self.api = Bitrix24API(webhook_url, burst=burst, per_second=per_second, wall=wall, **seams)
        self.portal = urlsplit(webhook_url).netloc  # printable; the path holds the secret
        self._notes: Remembered[NoteInput] = Remembered()

    @classmethod
    def from_target(
        cls, target: CRMTarget, home: Path, *, env: Mapping[str, str] | None = None, **kw: Any
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
                {"filter": where, "select": ["ID", "NAME", "LAST_NAME"], "order": {"ID": "ASC"}},
            )
        found, errors = self.api.batch(lookups)
        _raise_errors(errors, "contact lookup")
        ids: dict[int, str] = {}
        writes: dict[str, str] = {}
        for k, c in enumerate(chosen):
            first, last = split_name(c.name, c.email)
            hits = found.get(f"c{k}") or []
            if hits:
                ids[k] = str(hits[0]["ID"])
                if c.name and (hits[0].get("NAME") or "", hits[0].get("LAST_NAME") or "") != (first, last):
                    # no EMAIL here: sending it again would add a second e-mail to the contact
                    writes[f"c{k}"] = command(
                        "crm.contact.update",
                        {"id": ids[k], "fields": {"NAME": first, "LAST_NAME": last}, "params": NO_EVENT},
                    )
            else:
                new: dict[str, Any] = {"NAME": first, "LAST_NAME": last, "SOURCE_ID": "WEB"}
                if c.email:
                    new["EMAIL"] = [{"VALUE": c.email.lower(), "VALUE_TYPE": "WORK"}]
                if c.customer_id:
                    new.update(ORIGINATOR_ID="stripe", ORIGIN_ID=c.customer_id)
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
            "CURRENCY_ID": d.currency.upper(),
            "OPPORTUNITY": str(d.amount),
            "IS_MANUAL_OPPORTUNITY": "Y",
            self.key_field: d.payment_id,
        }
        if self.key_field == "ORIGIN_ID":
            fields["ORIGINATOR_ID"] = "stripe"
        if d.contact_id:
            fields["CONTACT_IDS"] = [d.contact_id]
        fields.update(mapped_fields(d, self.fields))
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

    def setup(self) -> SetupReport:
        """Create the payment-id UF field and any configured stage the pipeline lacks; idempotent."""
        report = SetupReport(VENDOR)
        if self.key_field == "ORIGIN_ID":
            report.add("deal key ORIGIN_ID", "exists", "built in")
        else:
            fields = self.api.call("crm.deal.fields") or {}
            if self.key_field in fields:
                report.add(f"deal field {self.key_field}", "exists")
            else:
                self.api.call(
                    "crm.deal.userfield.add",
                    {
                        "fields": {
                            "FIELD_NAME": self.key_field.removeprefix("UF_CRM_"),
                            "USER_TYPE_ID": "string",
                            "XML_ID": self.key_field,
                            "EDIT_FORM_LABEL": "Stripe payment id",
                            "LIST_COLUMN_LABEL": "Stripe payment id",
                            "SHOW_FILTER": "E",
                        }
                    },
                )
                report.add(f"deal field {self.key_field}", "created")
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
            **{f"field.{k}": v for k, v in self.fields.items()},
            "deal key": self.key_field,
            "contact key": "EMAIL, then ORIGIN_ID",
            "pipeline": f"category {self.category_id}",
        }
        return report

    def check(self) -> CheckReport:
        """Try the webhook, the payment-id field, the stages and the mapped fields."""
        report = CheckReport(VENDOR)
        try:
            fields = self.api.call("crm.deal.fields") or {}
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
        if self.key_field != "ORIGIN_ID" and self.key_field not in fields:
            report.problems.append(
                f"deal field {self.key_field} is missing: run `stripeflow crm setup bitrix24`"
            )
        existing = self._existing_stages()
        for logical, stage in self.stages.items():
            if stage not in existing:
                report.problems.append(
                    f"stages.{logical}: stage {stage!r} does not exist in category "
                    f"{self.category_id}: run `stripeflow crm setup bitrix24`"
                )
        for payment_field, field in self.fields.items():
            if field not in fields:
                report.problems.append(f"fields.{payment_field}: deal field {field!r} does not exist")
        if not report.problems:
            report.ok.append("payment-id field, stages and mapped fields exist")
        return report
