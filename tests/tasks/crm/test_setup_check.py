"""`setup()` creates what each CRM needs, idempotently; `check()` says what is wrong; the CLI prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stripeflow.tasks.crm.bitrix24 import Bitrix24CRM
from stripeflow.tasks.crm.common import Manageable
from stripeflow.tasks.crm.hubspot import HubSpotCRM
from stripeflow.tasks.crm.pipedrive import PipedriveCRM
from stripeflow.tasks.crm.zoho import ZohoCRM
from stripeflow.testing.bitrix24 import FakeBitrix24
from stripeflow.testing.hubspot import FakeHubSpot
from stripeflow.testing.pipedrive import FakePipedrive
from stripeflow.testing.server import serve_app
from stripeflow.testing.vendor import FakeVendor
from stripeflow.testing.zoho import FakeZoho
from tests.tasks.crm.harness import deal

Make = Callable[..., tuple[FakeVendor, Any]]


def hubspot(bad: bool = False, **kw: Any) -> tuple[FakeVendor, Any]:
    fake = FakeHubSpot()
    return fake, lambda **more: HubSpotCRM(
        token="nope" if bad else "pat-fake", transport=fake.transport(), **kw, **more
    )


def pipedrive(bad: bool = False, **kw: Any) -> tuple[FakeVendor, Any]:
    fake = FakePipedrive(burst=1000, search_burst=1000)
    return fake, lambda **more: PipedriveCRM(
        api_token="nope" if bad else "pd-fake", transport=fake.transport(), **kw, **more
    )


def bitrix24(bad: bool = False, **kw: Any) -> tuple[FakeVendor, Any]:
    fake = FakeBitrix24()
    url = "http://b24.test" + ("/rest/1/nope/" if bad else fake.url)
    return fake, lambda **more: Bitrix24CRM(webhook_url=url, transport=fake.transport(), **kw, **more)


def zoho(bad: bool = False, **kw: Any) -> tuple[FakeVendor, Any]:
    fake = FakeZoho()
    return fake, lambda **more: ZohoCRM(
        client_id="1000.FAKECLIENT",
        client_secret="fake-secret",
        refresh_token="nope" if bad else "1000.fake-refresh",
        accounts_url="http://accounts.zoho.test",
        transport=fake.transport(),
        **kw,
        **more,
    )


VENDORS = {"hubspot": hubspot, "pipedrive": pipedrive, "bitrix24": bitrix24, "zoho": zoho}


@pytest.mark.parametrize("vendor", VENDORS)
def test_setup_creates_what_is_missing_then_changes_nothing(vendor: str) -> None:
    _, make = VENDORS[vendor]()
    crm: Manageable = make()
    before = crm.check()
    assert not before.passed  # nothing set up yet, and check says so
    first = crm.setup()
    assert first.changed
    assert not [a for a in first.actions if a[1] == "manual"], first.actions
    assert first.mapping
    second = make().setup()
    assert not second.changed
    assert {a[0] for a in second.actions} == {a[0] for a in first.actions}
    assert make().check().passed


@pytest.mark.parametrize("vendor", VENDORS)
def test_after_setup_deals_land(vendor: str) -> None:
    _, make = VENDORS[vendor]()
    make().setup()
    crm = make()
    assert crm.upsert_deals([deal(1)]) == crm.upsert_deals([deal(1, stage="refunded")])


@pytest.mark.parametrize("vendor", VENDORS)
def test_check_names_bad_credentials(vendor: str) -> None:
    _, make = VENDORS[vendor](bad=True)
    report = make().check()
    assert not report.passed
    assert len(report.problems) == 1
    assert "nope" not in report.problems[0]  # never the secret itself


@pytest.mark.parametrize("vendor", VENDORS)
def test_check_names_the_bad_stage_key(vendor: str) -> None:
    _, make = VENDORS[vendor]()
    make().setup()
    report = make(stages={"paid": "NO_SUCH_STAGE"}).check()
    assert any(p.startswith("stages.paid") for p in report.problems), report.problems


def test_hubspot_reports_a_non_unique_property_as_manual() -> None:
    fake, make = hubspot()
    fake.properties["deals"]["stripe_payment_id"] = {"name": "stripe_payment_id", "hasUniqueValue": False}
    report = make().setup()
    assert ("deals property stripe_payment_id (unique)", "manual") in [(a[0], a[1]) for a in report.actions]


def test_zoho_says_what_to_do_by_hand_when_the_api_refuses() -> None:
    fake, make = zoho()
    fake.route(
        "POST",
        r"/crm/v7/settings/fields",
        lambda call: __import__("httpx").Response(
            403,
            json={"code": "NO_PERMISSION", "details": {}, "message": "permission denied", "status": "error"},
        ),
    )
    fake.routes.insert(0, fake.routes.pop())
    report = make().setup()
    manual = [a for a in report.actions if a[1] == "manual"]
    assert manual and "Do not allow duplicate values" in manual[0][2]


def test_cli_setup_and_check_against_a_served_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stripeflow.cli.crm import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRIPEFLOW_CONFIG", raising=False)
    fake = FakeHubSpot()
    with serve_app(fake.app) as url:
        monkeypatch.setenv("HUBSPOT_TOKEN", "pat-fake")
        monkeypatch.setenv("HUBSPOT_BASE_URL", url)
        runner = CliRunner()
        bad = runner.invoke(app, ["check", "hubspot"])
        assert bad.exit_code == 1 and "stripe_payment_id is missing" in bad.output
        first = runner.invoke(app, ["setup", "hubspot"])
        assert first.exit_code == 0, first.output
        assert "created" in first.output and "closedwon" in first.output
        again = runner.invoke(app, ["setup", "hubspot"])
        assert "nothing, everything was already in place" in again.output
        good = runner.invoke(app, ["check", "hubspot"])
        assert good.exit_code == 0, good.output
        assert "pat-fake" not in first.output + good.output + bad.output
