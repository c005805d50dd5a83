"""CRM calls per payment for each CRM fake, and a 10,000-payment burst into HubSpot held to 100 per 10 s.

    .venv/bin/python bench/crm_burst.py [--payments 10000] [--table-payments 1000]

Part 1 (in-process, fake clock, so it runs in seconds): the HTTP calls each adapter makes for one
payment on a fresh adapter (token refreshes and field look-ups included), for one more payment
on a warm one, and per payment in a burst, the way the flow calls the CRM: contacts batch
upsert, then deals with those contact ids, then notes on those deals, each through
`call_in_batches(items, crm.batch_size, ...)`.

Part 2 (real sockets, real clock): the same burst of `--payments` into the HubSpot fake,
served over HTTP and enforcing 100 requests per rolling 10 s. Reported as the time to land it
against the floor that limit allows, (ceil(calls / 100) - 1) * 10 s: the first 100 calls may
go at once, each further 100 must wait for a window to roll. Asserts no request went over the
limit (counted from the fake's own log over every rolling 10 s window), no 429, every deal in
place, and at most 0.05 calls per payment. Target: ratio at most 1.25.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the fakes live in tests/

from rich.console import Console
from rich.table import Table

from stripeflow.core.batching import call_in_batches
from stripeflow.core.errors import PermanentError
from stripeflow.tasks.crm.base import CRM, NoteInput
from stripeflow.tasks.crm.bitrix24 import Bitrix24CRM
from stripeflow.tasks.crm.hubspot import HubSpotCRM
from stripeflow.tasks.crm.pipedrive import PipedriveCRM
from stripeflow.tasks.crm.zoho import ZohoCRM
from stripeflow.testing.bitrix24 import FakeBitrix24
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.pipedrive import FakePipedrive
from stripeflow.testing.server import serve_app
from stripeflow.testing.vendor import FakeClock, FakeVendor
from stripeflow.testing.zoho import FakeZoho
from tests.tasks.crm.harness import contact, deal

console = Console()


def refuse(item: Any, exc: PermanentError) -> None:
    raise SystemExit(f"a payment was refused: {exc}")


def land(crm: CRM, first: int, count: int) -> int:
    """Contacts, then deals, then notes for payments first..first+count-1, as the flow does."""
    numbers = range(first, first + count)
    contact_ids = call_in_batches([contact(n) for n in numbers], crm.batch_size, crm.upsert_contacts, refuse)
    deals = [deal(n, contact_id=str(c)) for n, c in zip(numbers, contact_ids, strict=True)]
    deal_ids = call_in_batches(deals, crm.batch_size, crm.upsert_deals, refuse)
    notes = [
        NoteInput(deal_id=str(d), payment_id=x.payment_id, body=f"Płatność {x.payment_id}: 249,00 zł")
        for d, x in zip(deal_ids, deals, strict=True)
    ]
    call_in_batches(notes, crm.batch_size, crm.add_notes, refuse)
    return len(deal_ids)


@dataclass
class Vendor:
    name: str

    def make(self, clock: FakeClock) -> tuple[FakeVendor, CRM]:
        kw: dict[str, Any] = {"sleep": clock.sleep, "clock": clock}
        if self.name == "hubspot":
            hs = FakeHubSpot(clock=clock, daily=10**9).ready()
            return hs, HubSpotCRM(token="pat-fake", transport=hs.transport(), **kw)
        if self.name == "pipedrive":
            pd = FakePipedrive(clock=clock).ready()
            return pd, PipedriveCRM(api_token="pd-fake", transport=pd.transport(), **kw)
        if self.name == "bitrix24":
            bx = FakeBitrix24(clock=clock, wall=clock).ready()
            return bx, Bitrix24CRM(
                webhook_url="http://b24.test" + bx.url, transport=bx.transport(), wall=clock, **kw
            )
        zo = FakeZoho(clock=clock).ready()
        return zo, ZohoCRM(
            client_id="1000.FAKECLIENT",
            client_secret="fake-secret",
            refresh_token="1000.fake-refresh",
            accounts_url="http://accounts.zoho.test",
            transport=zo.transport(),
            **kw,
        )


def calls_table(payments: int) -> Table:
    table = Table(title=f"CRM calls per payment (contacts + deals + notes; burst of {payments:,})")
    for col in (
        "CRM",
        "single, fresh adapter",
        "single, warm adapter",
        f"burst of {payments:,}",
        "calls in burst",
        "waited (fake clock)",
    ):
        table.add_column(col, justify="right" if col != "CRM" else "left")
    table.add_row("local", "0", "0", "0", "0", "-")
    for name in ("hubspot", "pipedrive", "bitrix24", "zoho"):
        clock = FakeClock()
        fake, crm = Vendor(name).make(clock)
        land(crm, 1, 1)
        cold = len(fake.log)
        land(crm, 2, 1)
        warm = len(fake.log) - cold
        fake2, crm2 = Vendor(name).make(clock2 := FakeClock())
        land(crm2, 1, payments)
        burst = len(fake2.log)
        assert 429 not in fake2.statuses() and 503 not in fake2.statuses()
        table.add_row(
            name,
            f"{cold}",
            f"{warm}",
            f"{burst / payments:.3f}",
            f"{burst:,}",
            f"{clock2.now - 1000.0:,.0f} s",
        )
    return table


def hubspot_burst(payments: int) -> tuple[Table, bool]:
    fake = FakeHubSpot(limit=100, period=10.0, daily=10**9).ready()
    with serve_app(fake.app) as url:
        crm = HubSpotCRM(token="pat-fake", base_url=url, requests_per_10s=100)
        started = time.monotonic()
        landed = land(crm, 1, payments)
        elapsed = time.monotonic() - started
        crm.close()
    calls = len(fake.log)
    floor = (math.ceil(calls / 100) - 1) * 10.0
    worst = fake.max_in_window(10.0)
    ratio = elapsed / floor if floor else float("nan")
    deals_in_place = len(fake.objects["deals"])
    per_payment = calls / payments
    ok = (
        worst <= 100
        and 429 not in fake.statuses()
        and deals_in_place == landed == payments
        and per_payment <= 0.05
        and (not floor or ratio <= 1.25)
    )
    table = Table(title=f"Burst of {payments:,} payments into the HubSpot fake held to 100 requests / 10 s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("deals in place", f"{deals_in_place:,}", f"{payments:,}")
    table.add_row("HTTP calls (contacts, deals, associations, notes)", f"{calls:,}", "")
    table.add_row("calls per payment", f"{per_payment:.4f}", "≤ 0.05")
    table.add_row("time to land", f"{elapsed:.1f} s", "")
    table.add_row("floor the limit allows, (ceil(calls/100) - 1) × 10 s", f"{floor:.1f} s", "")
    table.add_row("ratio to the floor", f"{ratio:.3f}", "≤ 1.25")
    table.add_row("most requests in any rolling 10 s (fake's log)", f"{worst}", "≤ 100")
    table.add_row("429 answers", f"{fake.statuses().count(429)}", "0")
    return table, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=10_000, help="payments in the timed HubSpot burst")
    parser.add_argument(
        "--table-payments",
        type=int,
        default=1_000,
        help="payments per CRM for the calls-per-payment table (in-process, fake clock)",
    )
    args = parser.parse_args()
    console.print(calls_table(args.table_payments))
    table, ok = hubspot_burst(args.payments)
    console.print(table)
    console.print("[green]all targets met[/]" if ok else "[red]a target was missed[/]")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
