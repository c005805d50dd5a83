"""One harness per CRM: how to build its adapter against its fake, and how to read the fake.

The conformance suite is written once against this interface; adding a CRM adds one harness
class here and one line to `HARNESSES`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from stripeflow.core.config import STAGE_NAMES
from stripeflow.core.payment import Payment, PaymentStatus
from stripeflow.tasks.crm.base import CRM, ContactInput, DealInput, NoteInput
from stripeflow.tasks.crm.bitrix24 import DEFAULT_STAGES as BITRIX_STAGES
from stripeflow.tasks.crm.bitrix24 import Bitrix24CRM
from stripeflow.tasks.crm.common import Manageable
from stripeflow.tasks.crm.hubspot import DEFAULT_STAGES as HUBSPOT_STAGES
from stripeflow.tasks.crm.hubspot import HubSpotCRM
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.tasks.crm.pipedrive import PipedriveCRM
from stripeflow.tasks.crm.zoho import DEFAULT_STAGES as ZOHO_STAGES
from stripeflow.tasks.crm.zoho import ZohoCRM
from stripeflow.testing.bitrix24 import FakeBitrix24
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.pipedrive import FakePipedrive
from stripeflow.testing.vendor import FakeClock, FakeVendor
from stripeflow.testing.zoho import FakeZoho


def payment(
    n: int = 1, *, email: str | None = None, status: PaymentStatus = PaymentStatus.succeeded
) -> Payment:
    return Payment(
        payment_id=f"pi_{n:06d}",
        customer_id=f"cus_{n:06d}",
        email=email or f"klient{n}@example.pl",
        name=f"Jan Kowalski {n}",
        amount=Decimal("249.00"),
        currency="PLN",
        occurred_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        products=("Subskrypcja Pro",),
        status=status,
    )


def contact(n: int = 1, *, email: bool = True) -> ContactInput:
    p = payment(n)
    return ContactInput(
        key=(p.email or "") if email else str(p.customer_id),
        email=p.email if email else None,
        name=p.name,
        customer_id=p.customer_id,
    )


def deal(n: int = 1, stage: str = "paid", contact_id: str | None = None) -> DealInput:
    p = payment(n)
    return DealInput(
        payment_id=p.payment_id,
        title=f"Płatność Stripe – {p.product}, 249,00 zł",
        amount=p.amount,
        refunded_amount=p.refunded_amount,
        currency=p.currency,
        stage=stage,
        contact_id=contact_id,
        payment=p,
    )


def round_trip(crm: CRM, run: str) -> None:
    """The case the contract tests run against real accounts, and the conformance suite against
    every fake: setup and check pass, a contact upserted twice is one, a deal keyed by a fresh
    payment id moves stage in place, a keyed note is found again by its marker."""
    assert isinstance(crm, Manageable)
    crm.setup()
    report = crm.check()
    assert report.passed, report.problems
    person = ContactInput(
        key=f"stripeflow-{run}@example.com",
        email=f"stripeflow-{run}@example.com",
        name="Stripeflow Contract",
        customer_id=f"cus_contract_{run}",
    )
    [contact_id] = crm.upsert_contacts([person])
    assert crm.upsert_contacts([person]) == [contact_id]
    test_deal = replace(deal(1, stage="new", contact_id=contact_id), payment_id=f"pi_contract_{run}")
    [deal_id] = crm.upsert_deals([test_deal])
    assert crm.upsert_deals([replace(test_deal, stage="paid")]) == [deal_id]
    note = NoteInput(
        deal_id=deal_id,
        payment_id=test_deal.payment_id,
        body="Stripeflow contract test",
        key=f"contract:note:{run}",
    )
    [note_id] = crm.add_notes([note])
    assert note_id
    assert crm.find_notes([note]) == [note_id]  # the marker reads back from the CRM


@dataclass
class Built:
    crm: CRM
    fake: FakeVendor | None


class Harness:
    """How the suite reaches one CRM. Limits are small so waiting happens on a fake clock."""

    name: ClassVar[str]
    http: ClassVar[bool] = True
    storm_status: ClassVar[int] = 429
    rate: ClassVar[tuple[int, float]] = (10, 10.0)  # (requests, seconds) for the limiter test

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock()
        self.fake: Any = None

    def build(
        self, *, bad_credentials: bool = False, limited: bool = False, base_url: str | None = None
    ) -> CRM:
        raise NotImplementedError

    def crm_stage(self, logical: str) -> str:
        raise NotImplementedError

    def deal_stage(self, payment_id: str) -> str:
        raise NotImplementedError

    def count_contacts(self) -> int:
        raise NotImplementedError

    def count_deals(self) -> int:
        raise NotImplementedError

    def notes_on(self, deal_id: str) -> list[str]:
        raise NotImplementedError

    def count_notes(self) -> int:
        raise NotImplementedError

    def deal_calls_cap(self, n: int) -> int:
        """Most HTTP calls `upsert_deals` may make for n deals in `batch_size` batches."""
        raise NotImplementedError

    # the vendor's own create request for each kind of record: (path regex, method) for `inject`
    creates: ClassVar[dict[str, tuple[str, str]]] = {}
    keyed: ClassVar[set[str]] = set()  # the kinds whose create is an upsert on a unique field
    notes_page: ClassVar[int] = 50  # notes the vendor lists in one page of a deal's notes

    def lose_create_answer(self, kind: str, *, timeout: bool = True) -> None:
        """The next create of `kind` (contact, contact-without-email, deal, note) is written by
        the fake, then its answer is lost: no answer at all, or a 502."""
        path, method = self.creates[kind]
        self.fake.inject(502, path=path, method=method, after_write=True, timeout=timeout)

    def refuse_create(self, kind: str, count: int = 1) -> None:
        """The next `count` creates of `kind` answer 502 before the fake writes anything."""
        path, method = self.creates[kind]
        self.fake.inject(502, count, path=path, method=method)

    def unkeyed_creates_sent(self, kind: str) -> int | None:
        """How many unkeyed create requests of `kind` reached the fake; None when that create is
        keyed (an upsert on a unique field, which the seam may resend) or the log cannot tell."""
        if kind in self.keyed:
            return None
        path, method = self.creates[kind]
        return sum(1 for r in self.fake.log if r.method == method and re.search(path, r.path))

    def after_write_faults(self) -> int:
        got = self.fake.injected()
        return int(got["timeout_after_write"] + got["5xx_after_write"])

    def over_limit(self) -> int:
        """Requests in the fake's log that went over its rate limit (by its own rolling count)."""
        requests, period = self.rate
        return max(0, self.fake.max_in_window(period) - requests)

    def stored_deal(self, crm: Any, payment_id: str) -> dict[str, Any]:
        """Logical deal field -> the value the CRM holds for it (as the vendor stores it), read
        from the fake through the adapter's own mapping."""
        record = self.deal_record(payment_id)
        return {name: record.get(self.crm_field(crm, crm_field)) for name, crm_field in crm.mapping.items()}

    def deal_record(self, payment_id: str) -> dict[str, Any]:
        """The fake's deal, flat: CRM field -> stored value."""
        raise NotImplementedError

    def crm_field(self, crm: Any, crm_field: str) -> str:
        return crm_field


class LocalHarness(Harness):
    name = "local"
    http = False
    notes_page = 0  # one SQL query, no pages

    def build(
        self, *, bad_credentials: bool = False, limited: bool = False, base_url: str | None = None
    ) -> CRM:
        self.local = LocalCRM(self.tmp_path / "crm.db")
        return self.local

    def crm_stage(self, logical: str) -> str:
        return logical

    def deal_stage(self, payment_id: str) -> str:
        return next(d.stage for d in self.local.list_deals() if d.payment_id == payment_id)

    def count_contacts(self) -> int:
        return len(self.local.list_contacts())

    def count_deals(self) -> int:
        return len(self.local.list_deals())

    def notes_on(self, deal_id: str) -> list[str]:
        payment_id = next(d.payment_id for d in self.local.list_deals() if str(d.id) == deal_id)
        return self.local.notes_for(payment_id)

    def count_notes(self) -> int:
        return sum(d.notes for d in self.local.list_deals())

    def stored_deal(self, crm: Any, payment_id: str) -> dict[str, Any]:
        return next(d.values for d in self.local.list_deals() if d.payment_id == payment_id)


class HubSpotHarness(Harness):
    name = "hubspot"
    creates: ClassVar[dict[str, tuple[str, str]]] = {
        "contact": (r"/contacts/batch/upsert$", "POST"),  # keyed by e-mail
        "contact-without-email": (r"/contacts/batch/upsert$", "POST"),  # keyed by stripeflow_contact_key
        "deal": (r"/deals/batch/upsert$", "POST"),  # keyed by the unique payment-id property
        "note": (r"/notes/batch/create$", "POST"),
    }
    keyed: ClassVar[set[str]] = {"contact", "contact-without-email", "deal"}
    notes_page = 500  # v4 associations per page
    contact_key = True

    def build(
        self, *, bad_credentials: bool = False, limited: bool = False, base_url: str | None = None
    ) -> CRM:
        if self.fake is None:
            fake = FakeHubSpot(clock=self.clock, limit=self.rate[0] if limited else 100)
            self.fake = fake.ready(contact_key=self.contact_key)
        return HubSpotCRM(
            token="wrong" if bad_credentials else "pat-fake",
            base_url=base_url or "http://hubspot.test",
            transport=None if base_url else self.fake.transport(),
            sleep=self.clock.sleep,
            clock=self.clock,
            requests_per_10s=self.rate[0] if limited else 100,
        )

    def crm_stage(self, logical: str) -> str:
        return HUBSPOT_STAGES[logical]

    def deal_stage(self, payment_id: str) -> str:
        return str(self.fake.deal_by_payment(payment_id)["properties"]["dealstage"])

    def count_contacts(self) -> int:
        return len(self.fake.objects["contacts"])

    def count_deals(self) -> int:
        return len(self.fake.objects["deals"])

    def notes_on(self, deal_id: str) -> list[str]:
        return list(self.fake.notes_of_deal(deal_id))

    def count_notes(self) -> int:
        return len(self.fake.objects["notes"])

    def deal_record(self, payment_id: str) -> dict[str, Any]:
        return dict(self.fake.deal_by_payment(payment_id)["properties"])

    def deal_calls_cap(self, n: int) -> int:
        return 2 * math.ceil(n / 100)  # batch upsert + batch associate per 100


class PipedriveHarness(Harness):
    name = "pipedrive"
    rate = (5, 2.0)
    creates: ClassVar[dict[str, tuple[str, str]]] = {
        "contact": (r"/api/v2/persons$", "POST"),
        "contact-without-email": (r"/api/v2/persons$", "POST"),
        "deal": (r"/api/v2/deals$", "POST"),
        "note": (r"/v1/notes$", "POST"),
    }
    notes_page = 500

    def build(
        self, *, bad_credentials: bool = False, limited: bool = False, base_url: str | None = None
    ) -> CRM:
        if self.fake is None:
            burst = self.rate[0] if limited else 20
            self.fake = FakePipedrive(clock=self.clock, burst=burst, search_burst=min(burst, 10)).ready()
        return PipedriveCRM(
            api_token="wrong" if bad_credentials else "pd-fake",
            base_url=base_url or "http://pipedrive.test",
            transport=None if base_url else self.fake.transport(),
            sleep=self.clock.sleep,
            clock=self.clock,
            requests_per_2s=self.rate[0] if limited else 20,
            searches_per_2s=self.rate[0] if limited else 10,
        )

    def crm_stage(self, logical: str) -> str:
        return STAGE_NAMES["pl"][logical]

    def deal_stage(self, payment_id: str) -> str:
        return self.fake.stage_name(self.fake.deal_by_payment(payment_id)["stage_id"])

    def count_contacts(self) -> int:
        return len(self.fake.persons)

    def count_deals(self) -> int:
        return len(self.fake.deals)

    def notes_on(self, deal_id: str) -> list[str]:
        return [n["content"] for n in self.fake.notes.values() if str(n["deal_id"]) == deal_id]

    def count_notes(self) -> int:
        return len(self.fake.notes)

    def deal_record(self, payment_id: str) -> dict[str, Any]:
        found = self.fake.deal_by_payment(payment_id)
        return {**found, **found["custom_fields"]}

    def crm_field(self, crm: Any, crm_field: str) -> str:
        return str(crm._target(crm_field))  # our custom fields have generated keys

    def deal_calls_cap(self, n: int) -> int:
        return 2 * n + 4  # search + create/patch per deal, plus the one-off field/pipeline/stage lookups


class Bitrix24Harness(Harness):
    name = "bitrix24"
    storm_status = 503
    rate = (5, 2.0)  # bucket of 5, draining 2 a second; checked by `over_limit` below
    creates: ClassVar[dict[str, tuple[str, str]]] = {  # commands, inside a `batch`
        "contact": ("crm.contact.add", ""),
        "contact-without-email": ("crm.contact.add", ""),
        "deal": ("crm.deal.add", ""),
        "note": ("crm.timeline.comment.add", ""),
    }

    def lose_create_answer(self, kind: str, *, timeout: bool = True) -> None:
        self.fake.inject_on_command(self.creates[kind][0], 502, after_write=True, timeout=timeout)

    def unkeyed_creates_sent(self, kind: str) -> int | None:
        return None  # the commands travel inside `batch` bodies

    def refuse_create(self, kind: str, count: int = 1) -> None:
        for _ in range(count):
            self.fake.inject_on_command(self.creates[kind][0], 502)

    def build(
        self, *, bad_credentials: bool = False, limited: bool = False, base_url: str | None = None
    ) -> CRM:
        if self.fake is None:
            self.fake = FakeBitrix24(
                clock=self.clock, wall=self.clock, burst=self.rate[0] if limited else 50
            ).ready()
        url = (base_url or "http://portal.bitrix24.test") + (
            "/rest/1/wrongcode/" if bad_credentials else self.fake.url
        )
        return Bitrix24CRM(
            webhook_url=url,
            transport=None if base_url else self.fake.transport(),
            sleep=self.clock.sleep,
            clock=self.clock,
            wall=self.clock,
            burst=self.rate[0] if limited else 50,
        )

    def over_limit(self) -> int:
        return sum(1 for r in self.fake.log if r.status == 503)  # the leaky bucket's own verdict

    def crm_stage(self, logical: str) -> str:
        return BITRIX_STAGES[logical]

    def deal_stage(self, payment_id: str) -> str:
        return str(self.fake.deal_by_payment(payment_id)["STAGE_ID"])

    def count_contacts(self) -> int:
        return len(self.fake.contacts)

    def count_deals(self) -> int:
        return len(self.fake.deals)

    def notes_on(self, deal_id: str) -> list[str]:
        return [c["COMMENT"] for c in self.fake.comments.values() if str(c["ENTITY_ID"]) == deal_id]

    def count_notes(self) -> int:
        return len(self.fake.comments)

    def deal_record(self, payment_id: str) -> dict[str, Any]:
        return dict(self.fake.deal_by_payment(payment_id))

    def deal_calls_cap(self, n: int) -> int:
        return 2 * math.ceil(n / 50)  # one batch of lookups + one batch of writes per 50


class ZohoHarness(Harness):
    name = "zoho"
    creates: ClassVar[dict[str, tuple[str, str]]] = {
        "contact": (r"/Contacts/upsert$", "POST"),  # keyed by duplicate_check_fields
        "contact-without-email": (r"/Contacts/upsert$", "POST"),
        "deal": (r"/Deals/upsert$", "POST"),
        "note": (r"/crm/v7/Notes$", "POST"),
    }
    keyed: ClassVar[set[str]] = {"contact", "contact-without-email", "deal"}
    notes_page = 200

    def build(
        self, *, bad_credentials: bool = False, limited: bool = False, base_url: str | None = None
    ) -> CRM:
        if self.fake is None:
            self.fake = FakeZoho(
                clock=self.clock, concurrency=2 if limited else 5, latency=0.01 if limited else 0.0
            ).ready()
        return ZohoCRM(
            client_id="1000.FAKECLIENT",
            client_secret="fake-secret",
            refresh_token="wrong" if bad_credentials else "1000.fake-refresh",
            accounts_url=base_url or "http://accounts.zoho.test",
            transport=None if base_url else self.fake.transport(),
            sleep=self.clock.sleep,
            clock=self.clock,
            concurrency=2 if limited else 5,
        )

    def over_limit(self) -> int:
        return sum(1 for r in self.fake.log if r.status == 429) + max(0, self.fake.max_in_flight - 2)

    def crm_stage(self, logical: str) -> str:
        return ZOHO_STAGES[logical]

    def deal_stage(self, payment_id: str) -> str:
        return str(self.fake.deal_by_payment(payment_id)["Stage"])

    def count_contacts(self) -> int:
        return len(self.fake.records["Contacts"])

    def count_deals(self) -> int:
        return len(self.fake.records["Deals"])

    def notes_on(self, deal_id: str) -> list[str]:
        return [
            n["Note_Content"] for n in self.fake.records["Notes"].values() if n["Parent_Id"]["id"] == deal_id
        ]

    def count_notes(self) -> int:
        return len(self.fake.records["Notes"])

    def deal_record(self, payment_id: str) -> dict[str, Any]:
        return dict(self.fake.deal_by_payment(payment_id))

    def deal_calls_cap(self, n: int) -> int:
        return math.ceil(n / 100) + 1  # one upsert per 100, plus the token refresh


class HubSpotSearchHarness(HubSpotHarness):
    """HubSpot as an older setup left it: no contact key, so e-mail-less contacts are searched
    for (the search lags) and created unkeyed."""

    name = "hubspot-search"
    creates: ClassVar[dict[str, tuple[str, str]]] = {
        **HubSpotHarness.creates,
        "contact-without-email": (r"/contacts/batch/create$", "POST"),
    }
    keyed: ClassVar[set[str]] = {"contact", "deal"}
    contact_key = False


HARNESSES: list[type[Harness]] = [
    LocalHarness,
    HubSpotHarness,
    HubSpotSearchHarness,
    PipedriveHarness,
    Bitrix24Harness,
    ZohoHarness,
]
