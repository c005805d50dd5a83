"""Every Block: documented fields, a `.load("NAME")` example, secrets that never print."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from prefect.blocks.core import Block
from pydantic import SecretStr

import stripeflow.blocks


def all_blocks() -> list[type[Block]]:
    found: list[type[Block]] = []
    for module in pkgutil.iter_modules(stripeflow.blocks.__path__):
        mod = importlib.import_module(f"stripeflow.blocks.{module.name}")
        found += [
            obj
            for _, obj in inspect.getmembers(mod, inspect.isclass)
            if issubclass(obj, Block) and obj is not Block and obj.__module__ == mod.__name__
        ]
    return found


def test_every_system_has_a_block() -> None:
    names = {b.__name__ for b in all_blocks()}
    assert {
        "StripeCredentials",
        "HubSpotCredentials",
        "PipedriveCredentials",
        "Bitrix24Credentials",
        "ZohoCredentials",
        "NotifyCredentials",
        "HandoffCredentials",
    } <= names


@pytest.mark.parametrize("block", all_blocks(), ids=lambda b: b.__name__)
def test_block_is_documented_and_keeps_secrets_secret(block: type[Block]) -> None:
    assert '.load("' in (inspect.getdoc(block) or ""), f"{block.__name__} shows no .load example"
    for name, info in block.model_fields.items():
        assert info.description, f"{block.__name__}.{name} has no description"
    secret_fields = [n for n, f in block.model_fields.items() if "SecretStr" in str(f.annotation)]
    assert secret_fields, f"{block.__name__} holds no secret"


def test_stripe_block_replaces_the_environment_settings() -> None:
    from stripeflow.blocks.stripe import StripeCredentials
    from stripeflow.core.config import StripeSettings

    block = StripeCredentials(api_key=SecretStr("sk_live_secret"), webhook_secrets=[SecretStr("whsec_x")])
    settings = block.to_settings(StripeSettings())
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk_live_secret"
    assert "sk_live_secret" not in repr(block) and "sk_live_secret" not in repr(settings)


def test_each_account_may_take_its_stripe_credentials_from_its_own_block(prefect_server: str) -> None:
    from stripeflow.blocks.stripe import StripeCredentials, with_stripe_block
    from stripeflow.core.accounts import accounts
    from stripeflow.core.config import Settings

    StripeCredentials(api_key=SecretStr("sk_test_sklep"), webhook_secrets=[SecretStr("whsec_sklep")]).save(
        "stripe-sklep", overwrite=True
    )
    settings = Settings.model_validate(
        {"accounts": [{"name": "sklep", "stripe": {"block": "stripe-sklep"}}, {"name": "saas"}]}
    )
    found = accounts(with_stripe_block(settings))
    sklep = found["sklep"]
    assert sklep.stripe.api_key is not None and sklep.stripe.api_key.get_secret_value() == "sk_test_sklep"
    assert sklep.webhook_secrets == ["whsec_sklep"] and sklep.stripe.block is None
    assert found["saas"].stripe.api_key is None  # its own, not another account's
