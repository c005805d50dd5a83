"""What the vendor CRM adapters share: stage and field mapping, option checks, setup/check reports,
and the client base of the vendors reached with one static token.

Field mapping (one place, one rule, `payment_fields`): each adapter computes the mapped CRM fields
itself from `DealInput.payment` and `CRMTarget.fields` (Payment field -> CRM field), typed the way
its vendor wants them (HubSpot strings, Zoho numbers); `DealInput.fields` (the task fills it with the
same rule, untyped, for the local CRM) adds its other keys verbatim, while for a key the mapping also
produces the adapter's typed value wins.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypedDict, TypeVar, runtime_checkable

import httpx

from stripeflow.core.config import LOGICAL_STAGES, CRMTarget
from stripeflow.core.deal_fields import field_value
from stripeflow.core.errors import ConfigError, OutcomeUnknownError, RetriableError, VendorError
from stripeflow.core.http import Clock, Limiter, Sleep, SlidingWindowLimiter, VendorAPI
from stripeflow.core.payment import Payment
from stripeflow.tasks.crm.base import DealInput

if TYPE_CHECKING:
    from prefect.blocks.core import Block

K = TypeVar("K", bound=Hashable)
B = TypeVar("B", bound="Block")


def where(target: CRMTarget) -> str:
    """How an error names the configured target: `crm (hubspot, block 'hubspot-prod')`."""
    return f"crm ({target.type}" + (f", block {target.block!r})" if target.block else ")")


def resolve_stages(target: CRMTarget, defaults: Mapping[str, str]) -> dict[str, str]:
    """Logical stage -> CRM stage: the vendor's defaults, overridden by `target.stages`."""
    stages = {**defaults, **target.stages}
    missing = [s for s in LOGICAL_STAGES if not stages.get(s)]
    if missing:
        raise ConfigError(f"{where(target)}: stages.{missing[0]}: no CRM stage for this logical stage")
    return stages


def check_options(target: CRMTarget, known: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Refuse an unknown or mistyped vendor option, naming the key."""
    for key, value in target.options.items():
        if key not in known:
            raise ConfigError(
                f"{where(target)}: options.{key}: unknown option; known: {', '.join(sorted(known))}"
            )
        if not isinstance(value, known[key]):
            raise ConfigError(f"{where(target)}: options.{key}: {value!r} has the wrong type")
    return dict(target.options)


def check_field_names(target: CRMTarget, pattern: str, what: str) -> None:
    """Refuse a mapped CRM field name the vendor could never accept, naming the key."""
    rx = re.compile(pattern)
    for payment_field, crm_field in target.fields.items():
        if crm_field and not rx.fullmatch(crm_field):  # an empty one drops the field
            raise ConfigError(f"{where(target)}: fields.{payment_field}: {crm_field!r} is not {what}")


class Seams(TypedDict, total=False):
    """What tests and benchmarks swap in an adapter's client; an adapter passes them on untouched."""

    transport: httpx.BaseTransport | None
    sleep: Sleep
    clock: Clock
    limiter: Limiter | None


class TokenAPI(VendorAPI):
    """A vendor client with one static token, a sliding-window limit on every call and a second,
    lower one on its search endpoints (paths ending in `/search`).

    A subclass declares `limit` and `search_limit` as (calls, seconds), the defaults its account
    allows, and `auth` as (header, value with `{}` for the token); `requests` and `searches`
    override the two call counts.
    """

    limit: ClassVar[tuple[int, float]]
    search_limit: ClassVar[tuple[int, float]]
    auth: ClassVar[tuple[str, str]]

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        requests: int | None = None,
        searches: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        **kw: Any,
    ) -> None:
        calls, period = self.limit
        search_calls, search_period = self.search_limit
        if requests is not None:
            calls = requests
        if searches is not None:
            search_calls = searches
        self._token = token
        self._window = SlidingWindowLimiter(calls, period, clock=clock, sleep=sleep)
        self.search_limiter = SlidingWindowLimiter(search_calls, search_period, clock=clock, sleep=sleep)
        super().__init__(base_url, sleep=sleep, **kw)

    def default_limiter(self) -> Limiter:
        return self._window

    def auth_headers(self) -> dict[str, str]:
        header, value = self.auth
        return {header: value.format(self._token)}

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if path.endswith("/search"):  # search has its own, lower limit on top of the account's
            with self.search_limiter.slot():
                return super().request(method, path, **kw)
        return super().request(method, path, **kw)


def configure(
    vendor: str,
    target: CRMTarget,
    env: Mapping[str, str] | None,
    credentials: type[B],
    options: Mapping[str, type | tuple[type, ...]],
    field_name: tuple[str, str],
    stages: Mapping[str, str],
    *,
    check: Callable[[CRMTarget, dict[str, Any]], None] | None = None,
    language: str | None = None,
) -> tuple[B, dict[str, Any]]:
    """What every `from_target` checks and loads before it builds its adapter, in this order:
    the options' names and types (then the vendor's own `check` of them), the mapped field names
    (`field_name`: the pattern and what it means), the stages over the vendor's defaults, and
    last the credentials block (a named one, else built from `env`, by default `os.environ`).

    Returns the block and the arguments every adapter takes: stages, fields, name, the options,
    and `language` (of the labels setup gives what it creates): `options.language`, else the
    account's `language` the caller passes, else Polish.
    """
    from stripeflow.blocks.crm import load_crm_block  # Prefect is imported only when an adapter is built

    checked = check_options(target, {**options, "language": str})
    checked["language"] = checked.get("language") or language or "pl"
    if check is not None:
        check(target, checked)
    check_field_names(target, *field_name)
    resolved = resolve_stages(target, stages)
    block = load_crm_block(vendor, target.block, os.environ if env is None else env)
    assert isinstance(block, credentials)
    return block, {"stages": resolved, "fields": target.fields, "name": target.block or vendor, **checked}


def plain(value: Any) -> Any:
    """A Payment value as JSON: Decimal and dates as text, enums as their value, tuples joined."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return ", ".join(str(plain(v)) for v in value)
    return value


def payment_fields(
    payment: Payment,
    mapping: Mapping[str, str],
    convert: Callable[[Any], Any] = plain,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """CRM field -> value: a mapping (logical or Payment field -> CRM field) over a Payment, typed
    by `convert`; `values` are the catalogue's (`fields.deal_values`), else the Payment's own."""
    return {crm: convert(field_value(payment, values or {}, name)) for name, crm in mapping.items()}


def mapped_fields(
    deal: DealInput,
    mapping: Mapping[str, str],
    convert: Callable[[Any], Any] = plain,
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """CRM field -> value: `deal.fields` verbatim, then the mapping over `values` (by default the
    deal's own), typed."""
    return {
        **deal.fields,
        **payment_fields(deal.payment, mapping, convert, deal.values if values is None else values),
    }


def split_name(name: str | None, email: str | None) -> tuple[str, str]:
    """(first, last) for CRMs that need a last name: 'Jan Maria Kowalski' -> ('Jan Maria', 'Kowalski')."""
    parts = (name or "").split()
    if len(parts) >= 2:
        return " ".join(parts[:-1]), parts[-1]
    if parts:
        return "", parts[0]
    return "", (email or "").split("@")[0] or "Stripe customer"


def unique_by(items: Sequence[Any], key: Callable[[Any], K]) -> tuple[list[Any], list[int]]:
    """De-duplicate a batch by key (last one wins); `positions[i]` is where item i went."""
    index: dict[K, int] = {}
    chosen: list[Any] = []
    positions: list[int] = []
    for item in items:
        k = key(item)
        if k in index:
            chosen[index[k]] = item
        else:
            index[k] = len(chosen)
            chosen.append(item)
        positions.append(index[k])
    return chosen, positions


T = TypeVar("T")

LAG_WAIT = 10.0  # seconds for a vendor's search index to show a record just created


LAG_TRIES = 3  # looks after a lost create, each LAG_WAIT later, before the task's retry takes over


def look_first(
    upsert: Callable[[Sequence[T]], list[str]],
    items: Sequence[T],
    *,
    vendor: str,
    consistent: bool,
    sleep: Callable[[float], None] | None = None,
) -> list[str]:
    """Run an upsert that looks before it creates (search, then create what is missing); when a
    create's answer was lost (`OutcomeUnknownError`: a timeout or 5xx after the vendor may have
    written), never create blindly again: look again first, and create only what is still missing.

    With a lookup the vendor answers from its own records (`consistent`), the second look runs now.
    With a search index that lags fresh records (HubSpot, Pipedrive), looking now could miss what
    the lost create made, so the look runs `LAG_WAIT` seconds later (the client's `sleep` seam),
    for this batch alone, up to `LAG_TRIES` times; then (or without a `sleep`) this raises
    `RetriableError` and the task's declared retry runs the same look-then-create later. A whole
    task redone for one lost answer cost minutes of rate limit per attempt (the chaos bench).
    """
    try:
        return upsert(items)
    except OutcomeUnknownError as exc:
        if not consistent and sleep is None:
            raise _look_later(exc, vendor) from exc
        last = exc
    for _ in range(1 if consistent else LAG_TRIES):
        if not consistent and sleep is not None:
            sleep(LAG_WAIT)  # for the search index to show what the lost create made
        try:
            return upsert(items)
        except OutcomeUnknownError as exc:
            last = exc
    raise _look_later(last, vendor) from last


def _look_later(exc: OutcomeUnknownError, vendor: str) -> RetriableError:
    return RetriableError(
        f"a create's outcome is unknown ({exc.message}); the retry looks for it before creating",
        vendor=vendor,
        status=exc.status,
        request_id=exc.request_id,
        wait=LAG_WAIT,
    )


class Remembered(Generic[K]):
    """Ids of writes that carry no key (notes), kept when their batch partly failed.

    A partly failed batch raises `PermanentError` so `call_in_batches` halves it and pins the
    bad item; the halves come back here, and the items that were already created return their
    ids without being created a second time. Bounded, so a long-lived adapter stays small.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[K, str] = OrderedDict()
        self._lock = threading.Lock()  # batches run in parallel threads

    def put(self, key: K, value: str) -> None:
        with self._lock:
            self._ids[key] = value
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def pop(self, key: K) -> str | None:
        with self._lock:
            return self._ids.pop(key, None)

    @contextmanager
    def kept_on_error(self, items: Sequence[K], ids: list[str | None]) -> Iterator[None]:
        """Around a batch write: if it raises, every item that has an id in `ids` is remembered."""
        try:
            yield
        except VendorError:
            for item, got in zip(items, ids, strict=True):
                if got is not None:
                    self.put(item, got)
            raise


@dataclass
class SetupReport:
    """What `setup()` did: one line per thing it needs, and the mapping in force afterwards."""

    crm: str
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (thing, created|exists|manual, note)
    mapping: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(status == "created" for _, status, _ in self.actions)

    def add(self, thing: str, status: str, note: str = "") -> None:
        self.actions.append((thing, status, note))


@dataclass
class CheckReport:
    """What `check()` found: `problems` say exactly what is wrong and how to fix it."""

    crm: str
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


@runtime_checkable
class Manageable(Protocol):
    """A vendor adapter that can prepare its CRM (`stripeflow crm setup`) and diagnose it (`crm check`)."""

    def setup(self) -> SetupReport: ...

    def check(self) -> CheckReport: ...

    def close(self) -> None: ...
