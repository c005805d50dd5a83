"""Several Stripe accounts and companies in one configuration (`[[accounts]]`, `core/accounts.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stripeflow.core.accounts import UnknownAccount, accounts, event_account, webhook_account
from stripeflow.core.config import DEFAULT_ACCOUNT, load_settings
from stripeflow.core.errors import ConfigError

TWO_COMPANIES = """
language = "pl"

[company]
name = "Agencja XYZ sp. z o.o."
nip = "526-000-12-46"
bank_account = "61 1090 1014 0000 0712 1981 2874"

[[crm]]
type = "local"

[[accounts]]
name = "sklep"
language = "en"

[accounts.company]
name = "Jan Kowalski Usługi IT"
nip = "PL7251801126"
invoice_series = "JK/{number}/{year}"

[[accounts.crm]]
type = "hubspot"

[[accounts]]
name = "klient-a"
connect_account = "acct_1Klient"
platform = "sklep"

[[accounts]]
name = "saas"
routes = { payment = ["slack:#saas"] }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stripeflow.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_configuration_without_accounts_is_the_one_default_account(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), env={"STRIPE_WEBHOOK_SECRET": "whsec_a,whsec_b"})
    (only,) = accounts(settings).values()
    assert only.name == DEFAULT_ACCOUNT and only.webhook_secrets == ["whsec_a", "whsec_b"]
    assert webhook_account(accounts(settings), None) == only


def test_each_account_takes_what_it_leaves_out_from_the_shared_settings(tmp_path: Path) -> None:
    env = {
        "STRIPE_API_KEY_SKLEP": "sk_test_sklep",
        "STRIPE_WEBHOOK_SECRET_SKLEP": "whsec_sklep",
        "STRIPE_WEBHOOK_SECRET_SAAS": "whsec_saas_new, whsec_saas_old",
    }
    found = accounts(load_settings(write(tmp_path, TWO_COMPANIES), env=env))
    assert list(found) == ["sklep", "klient-a", "saas"]  # no top-level [stripe] key: no default
    sklep, klient, saas = found["sklep"], found["klient-a"], found["saas"]
    assert sklep.company is not None and sklep.company.nip == "7251801126"
    assert sklep.company.invoice_series == "JK/{number}/{year}"
    assert (sklep.language, [t.type for t in sklep.crm]) == ("en", ["hubspot"])
    assert saas.webhook_secrets == ["whsec_saas_new", "whsec_saas_old"]
    assert saas.company is not None and saas.company.name == "Agencja XYZ sp. z o.o."
    assert saas.company.nip == "5260001246" and saas.company.bank_account == "PL61109010140000071219812874"
    assert (saas.language, [t.type for t in saas.crm], saas.routes) == (
        "pl",
        ["local"],
        {"payment": ["slack:#saas"]},
    )
    # a connected account: its platform's key and secrets, and the Stripe-Account header
    assert klient.stripe.api_key is not None and klient.stripe.api_key.get_secret_value() == "sk_test_sklep"
    assert (klient.webhook_secrets, klient.stripe_account) == (["whsec_sklep"], "acct_1Klient")
    assert klient.company == found["saas"].company and klient.crm == saas.crm  # shared, not the platform's


def test_a_webhook_route_names_its_account(tmp_path: Path) -> None:
    found = accounts(load_settings(write(tmp_path, TWO_COMPANIES), env={}))
    assert webhook_account(found, "saas").name == "saas"
    with pytest.raises(UnknownAccount, match="no account 'nope'; the accounts are sklep, klient-a, saas"):
        webhook_account(found, "nope")
    with pytest.raises(UnknownAccount, match="post to /webhooks/stripe/<account>"):
        webhook_account(found, None)  # several accounts and no default: the route must say
    # a Connect event at the platform's route is the connected account's; at another route, not
    assert event_account(found, found["sklep"], "acct_1Klient").name == "klient-a"
    assert event_account(found, found["saas"], "acct_1Klient").name == "saas"
    assert event_account(found, found["sklep"], "acct_1Other").name == "sklep"


def test_the_top_level_stripe_stays_the_default_account_beside_others(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, '[[accounts]]\nname = "drugi"\n'),
        env={"STRIPE_WEBHOOK_SECRET": "whsec_first", "STRIPE_WEBHOOK_SECRET_DRUGI": "whsec_second"},
    )
    found = accounts(settings)
    assert list(found) == [DEFAULT_ACCOUNT, "drugi"]
    assert webhook_account(found, None).name == DEFAULT_ACCOUNT  # /webhooks/stripe keeps working
    assert found["drugi"].webhook_secrets == ["whsec_second"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[accounts]]\nname = "Sklep PL"\n', "accounts.0.name: String should match pattern"),
        ('[[accounts]]\nname = "a"\n[[accounts]]\nname = "a"\n', "the name 'a' is used twice"),
        ('[[accounts]]\nname = "default"\n', "'default' is the top-level [stripe]"),
        (
            '[[accounts]]\nname = "a"\nplatform = "b"\nconnect_account = "acct_1"\n',
            "a.platform 'b' is not an account",
        ),
        ('[[accounts]]\nname = "a"\nplatform = "default"\n', "a has a platform but no connect_account"),
        ('[[accounts]]\nname = "a"\nconnect_account = "cus_1"\n', "accounts.0.connect_account"),
        (
            '[company]\nname = "X"\nnip = "526-000-12-47"\n',
            "company.nip: Value error, '526-000-12-47' is not a valid NIP",
        ),
        ('[company]\nname = "X"\nbank_account = "PL00 1090 1014"\n', "company.bank_account: Value error"),
        ('[company]\nname = "X"\ninvoice_series = "FV/{year}"\n', "an invoice series needs {number}"),
        (
            '[company]\nname = "X"\ninvoice_series = "FV/{number}/{day}"\n',
            "may use only {number}, {month}, {year}",
        ),
        (
            '[[accounts]]\nname = "a"\n[accounts.company]\nname = "X"\nnipp = "1"\n',
            "accounts.0.company.nipp: unknown key",
        ),
        (
            '[[accounts]]\nname = "a"\nroutes = { payment = ["sms:1"] }\n',
            "channel 'sms:1' must start with one of",
        ),
    ],
)
def test_a_mistake_in_the_accounts_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    assert message in str(caught.value)


def test_an_accounts_secret_alone_means_real_webhooks_not_the_demo(tmp_path: Path) -> None:
    from stripeflow.launcher import decide_demo

    path = write(tmp_path, '[[accounts]]\nname = "sklep"\n')
    assert decide_demo(load_settings(path, env={}))[0] is True
    real = load_settings(path, env={"STRIPE_WEBHOOK_SECRET_SKLEP": "whsec_sklep"})
    assert decide_demo(real) == (False, "a Stripe webhook secret is configured")
