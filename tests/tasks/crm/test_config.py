"""Choosing and configuring a CRM: registry, env credentials, blocks, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from stripeflow.blocks.crm import HubSpotCredentials
from stripeflow.core.config import CRMTarget, load_settings
from stripeflow.core.errors import ConfigError
from stripeflow.tasks.crm import ADAPTERS, build_crm
from stripeflow.tasks.crm.bitrix24 import Bitrix24CRM
from stripeflow.tasks.crm.hubspot import HubSpotCRM
from stripeflow.tasks.crm.pipedrive import PipedriveCRM
from stripeflow.tasks.crm.zoho import ZohoCRM

ENV = {
    "hubspot": {"HUBSPOT_TOKEN": "pat-secret", "HUBSPOT_BASE_URL": "http://127.0.0.1:9"},
    "pipedrive": {"PIPEDRIVE_API_TOKEN": "pd-secret"},
    "bitrix24": {"BITRIX24_WEBHOOK_URL": "https://firma.bitrix24.pl/rest/1/secretcode/"},
    "zoho": {"ZOHO_CLIENT_ID": "1000.ID", "ZOHO_CLIENT_SECRET": "s", "ZOHO_REFRESH_TOKEN": "r"},
}
CLASSES = {"hubspot": HubSpotCRM, "pipedrive": PipedriveCRM, "bitrix24": Bitrix24CRM, "zoho": ZohoCRM}


@pytest.mark.parametrize("vendor", ENV)
def test_every_vendor_is_registered_and_built_from_env(
    vendor: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert vendor in ADAPTERS
    for name, value in ENV[vendor].items():
        monkeypatch.setenv(name, value)
    crm = build_crm(CRMTarget(type=vendor), tmp_path)
    assert isinstance(crm, CLASSES[vendor])
    crm.close()


def test_env_base_url_override(tmp_path: Path) -> None:
    crm = HubSpotCRM.from_target(CRMTarget(type="hubspot"), tmp_path, env=ENV["hubspot"])
    assert crm.api.base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("vendor", ENV)
def test_missing_credentials_name_the_variable(vendor: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=next(iter(ENV[vendor]))):
        CLASSES[vendor].from_target(CRMTarget(type=vendor), tmp_path, env={})  # type: ignore[attr-defined]


@pytest.mark.parametrize("vendor", ENV)
def test_unknown_option_names_the_key(vendor: str, tmp_path: Path) -> None:
    target = CRMTarget(type=vendor, options={"pipelin": "x"})
    with pytest.raises(ConfigError, match=r"options\.pipelin"):
        CLASSES[vendor].from_target(target, tmp_path, env=ENV[vendor])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("vendor", "bad"),
    [
        ("hubspot", "Stripe Amount"),
        ("pipedrive", "Not-A-Key"),
        ("bitrix24", "uf_lower"),
        ("zoho", "Two__Underscores"),
    ],
)
def test_impossible_field_name_names_the_key(vendor: str, bad: str, tmp_path: Path) -> None:
    target = CRMTarget(type=vendor, fields={"amount": bad})
    with pytest.raises(ConfigError, match=r"fields\.amount"):
        CLASSES[vendor].from_target(target, tmp_path, env=ENV[vendor])  # type: ignore[attr-defined]


def test_stage_mapping_is_laid_over_vendor_defaults(tmp_path: Path) -> None:
    crm = HubSpotCRM.from_target(
        CRMTarget(type="hubspot", stages={"paid": "12345"}), tmp_path, env=ENV["hubspot"]
    )
    assert crm.stages["paid"] == "12345" and crm.stages["new"] == "appointmentscheduled"


def test_bitrix_category_prefixes_the_stages(tmp_path: Path) -> None:
    target = CRMTarget(type="bitrix24", options={"category_id": 2})
    crm = Bitrix24CRM.from_target(target, tmp_path, env=ENV["bitrix24"])
    assert crm.stages["paid"] == "C2:WON"


def test_several_crms_at_once_from_the_file(tmp_path: Path) -> None:
    file = tmp_path / "stripeflow.toml"
    file.write_text(
        '[[crm]]\ntype = "hubspot"\nblock = "hubspot-prod"\n[crm.stages]\npaid = "closedwon"\n'
        '[[crm]]\ntype = "bitrix24"\n[crm.options]\npayment_id_field = "ORIGIN_ID"\n',
        encoding="utf-8",
    )
    settings = load_settings(file, env={})
    assert [t.type for t in settings.crm] == ["hubspot", "bitrix24"]
    crm = Bitrix24CRM.from_target(settings.crm[1], tmp_path, env=ENV["bitrix24"])
    assert crm.key_field == "ORIGIN_ID"


def test_bad_bitrix_key_field_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options\.payment_id_field"):
        Bitrix24CRM.from_target(
            CRMTarget(type="bitrix24", options={"payment_id_field": "TITLE"}), tmp_path, env=ENV["bitrix24"]
        )


def test_block_secrets_do_not_print() -> None:
    block = HubSpotCredentials(token=SecretStr("pat-na-eu1-secret"))
    assert "pat-na-eu1-secret" not in repr(block) and "pat-na-eu1-secret" not in str(block.model_dump())
