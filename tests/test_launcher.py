"""`stripeflow run`'s decisions, without starting a process: demo or live from the loaded settings
(file, environment, Stripe block), and a demo that keeps to its own home and reaches nothing real."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr
from rich.console import Console

from stripeflow.core.config import load_settings
from stripeflow.core.errors import ConfigError
from stripeflow.demo import command_settings, record_run
from stripeflow.launcher import Launcher, Plan, decide_demo, load_user_settings, plan_run
from stripeflow.tasks.crm import build_crm
from stripeflow.tasks.crm.local import LocalCRM
from stripeflow.tasks.notify.channels import Channels
from stripeflow.tasks.notify.email import OutboxMailer

REAL_FILE = """
language = "en"
database_url = "postgresql://stripeflow@db.example.com:5432/stripeflow"

[[crm]]
type = "hubspot"

[notify]
company = "XYZ"
[notify.smtp]
host = "smtp.example.com"
username = "payments@example.com"
[notify.routes]
payment = ["slack:#payments", "telegram:-100123", "email:team@example.com"]

[handoff]
url = "https://erp.example.com/hooks/stripeflow?token=tok_in_the_url"
"""
# every way the environment can name a real system, with values we can look for afterwards
REAL_ENV = {
    "STRIPE_API_KEY": "sk_live_real_key",
    "STRIPE_API_BASE": "https://api.stripe.com",
    "DATABASE_URL": "postgresql://stripeflow@db.example.com:5432/real",
    "HUBSPOT_TOKEN": "pat-real-hubspot",
    "PIPEDRIVE_API_TOKEN": "real-pipedrive",
    "BITRIX24_WEBHOOK_URL": "https://real.bitrix24.pl/rest/1/realtoken/",
    "ZOHO_REFRESH_TOKEN": "real-zoho",
    "SMTP_HOST": "smtp.real.example.com",
    "SMTP_PASSWORD": "real-smtp-password",
    "SLACK_BOT_TOKEN": "xoxb-real",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/REAL",
    "TELEGRAM_BOT_TOKEN": "123:real",
    "STRIPEFLOW_HANDOFF_URL": "https://erp.example.com/real",
    "STRIPEFLOW_HANDOFF_SECRET": "real-handoff-secret",
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def render(launcher: Launcher, plan: Plan) -> str:
    console = Console(record=True, width=400)
    console.print(launcher.banner(plan))
    return console.export_text()


def test_no_webhook_secret_anywhere_runs_the_demo(cwd: Path) -> None:
    assert decide_demo(load_user_settings({}))[0] is True


def test_a_webhook_secret_in_the_file_runs_live(cwd: Path) -> None:
    write(cwd / "stripeflow.toml", '[stripe]\nwebhook_secrets = ["whsec_from_file"]\n')
    demo, why = decide_demo(load_user_settings({}))
    assert demo is False and "webhook secret is configured" in why


def test_a_webhook_secret_in_the_environment_runs_live(cwd: Path) -> None:
    assert decide_demo(load_user_settings({"STRIPE_WEBHOOK_SECRET": "whsec_a,whsec_b"}))[0] is False


def test_a_config_file_named_by_the_environment_is_the_one_read(cwd: Path) -> None:
    config = write(cwd / "elsewhere.toml", '[stripe]\nwebhook_secrets = ["whsec_x"]\n')
    assert decide_demo(load_user_settings({"STRIPEFLOW_CONFIG": str(config)}))[0] is False


def test_a_webhook_secret_in_the_stripe_block_runs_live(cwd: Path, prefect_server: str) -> None:
    from stripeflow.blocks.stripe import StripeCredentials

    with_secret, without = f"stripe-live-{uuid.uuid4().hex[:8]}", f"stripe-key-{uuid.uuid4().hex[:8]}"
    StripeCredentials(api_key=SecretStr("sk_test_blk"), webhook_secrets=[SecretStr("whsec_blk")]).save(
        with_secret
    )
    StripeCredentials(api_key=SecretStr("sk_test_blk")).save(without)

    write(cwd / "stripeflow.toml", f'[stripe]\nblock = "{with_secret}"\n')
    settings = load_user_settings({}, prefect_server)
    assert decide_demo(settings)[0] is False
    assert [s.get_secret_value() for s in settings.stripe.webhook_secrets] == ["whsec_blk"]

    write(cwd / "stripeflow.toml", f'[stripe]\nblock = "{without}"\n')
    settings = load_user_settings({}, prefect_server)
    assert decide_demo(settings)[0] is True  # a key but no secret: nothing real can be verified
    assert settings.stripe.api_key is not None


def test_a_stripe_block_that_cannot_be_loaded_stops_with_its_name(cwd: Path, prefect_server: str) -> None:
    write(cwd / "stripeflow.toml", '[stripe]\nblock = "no-such-stripe-block"\n')
    with pytest.raises(ConfigError, match="Stripe block 'no-such-stripe-block' could not be loaded"):
        load_user_settings({}, prefect_server)


def test_demo_and_no_demo_flags_win_over_the_settings(cwd: Path) -> None:
    live = load_user_settings({"STRIPE_WEBHOOK_SECRET": "whsec_x"})
    assert decide_demo(live, forced=True) == (True, "--demo was given")
    assert decide_demo(load_user_settings({}), forced=False)[0] is False


def test_the_demo_reaches_none_of_the_users_systems(cwd: Path) -> None:
    write(cwd / "stripeflow.toml", REAL_FILE)
    env = {"PATH": os.environ["PATH"], **REAL_ENV}
    launcher = Launcher(environ=env)
    plan = plan_run(load_user_settings(env), launcher.env())
    assert plan.demo and plan.stripe is not None and plan.config is not None

    leaked = {k: v for k, v in plan.env.items() if v in REAL_ENV.values() or k in REAL_ENV}
    assert leaked == {}
    assert plan.env["PREFECT_API_URL"] == launcher.prefect_api_url  # Prefect is still the one started

    child = load_settings(env=plan.env)  # exactly as the bridge and the worker will load it
    assert [t.type for t in child.crm] == ["local"]
    assert (
        child.database_url is None and child.ledger_url == f"sqlite:///{cwd / '.stripeflow/demo/ledger.db'}"
    )
    assert child.notify.smtp.host is None and child.notify.smtp.password is None
    assert child.notify.routes == {} and child.notify.block is None
    assert child.notify.slack_token is None and child.notify.telegram_token is None
    assert child.notify.slack_webhook_url is None
    assert child.handoff.url is None and child.handoff.secret is None
    assert child.stripe.api_base == plan.stripe.api_base.rstrip("/")
    assert child.stripe.api_base.startswith("http://127.0.0.1:")
    assert [s.get_secret_value() for s in child.stripe.webhook_secrets] == [plan.stripe.webhook_secret]
    assert child.language == "en" and child.notify.company == "XYZ"  # the user's wording stays

    crm = build_crm(child.crm[0], child.home)
    assert isinstance(crm, LocalCRM) and Path(crm.path).parent == cwd / ".stripeflow" / "demo"
    crm.close()
    mailer = Channels(child).mailer()
    assert isinstance(mailer, OutboxMailer) and mailer.folder == cwd / ".stripeflow" / "demo" / "outbox"


def test_the_demo_runs_two_accounts_of_two_companies(cwd: Path) -> None:
    """The demo's second Stripe account belongs to another company: its own route and secret,
    the demo's Stripe fake, the demo's local CRM; the first keeps the user's wording."""
    from stripeflow.core.accounts import accounts

    write(cwd / "stripeflow.toml", REAL_FILE)
    env = {"PATH": os.environ["PATH"], **REAL_ENV}
    plan = plan_run(load_user_settings(env), Launcher(environ=env).env())
    assert plan.stripe is not None
    found = accounts(load_settings(env=plan.env))
    assert list(found) == ["default", "agencja"]
    first, second = found["default"], found["agencja"]
    assert first.company is not None and second.company is not None
    assert first.company.nip != second.company.nip and first.company.name != second.company.name
    assert second.webhook_secrets == [plan.stripe.second_secret] != first.webhook_secrets
    assert second.stripe.api_base == first.stripe.api_base  # the demo's Stripe fake
    assert [t.type for t in second.crm] == ["local"] and second.routes == {}


def test_the_demo_has_a_home_of_its_own(cwd: Path) -> None:
    plan = plan_run(load_user_settings({}), Launcher(environ={}).env())
    assert plan.data_home == cwd / ".stripeflow" / "demo"
    assert plan.config == plan.data_home / "stripeflow.toml"
    assert load_settings(env=plan.env).home == plan.data_home
    assert not (cwd / ".stripeflow" / "ledger.db").exists()


def test_a_home_set_in_the_file_holds_the_demo_home(cwd: Path) -> None:
    write(cwd / "stripeflow.toml", 'home = "state"\n')
    plan = plan_run(load_user_settings({}), Launcher(environ={}).env())
    assert plan.data_home == cwd / "state" / "demo"


def test_live_keeps_the_users_settings_and_home(cwd: Path) -> None:
    write(cwd / "stripeflow.toml", REAL_FILE)
    env = {**REAL_ENV, "STRIPE_WEBHOOK_SECRET": "whsec_real"}
    plan = plan_run(load_user_settings(env), Launcher(environ=env).env())
    assert not plan.demo and plan.config is None and plan.stripe is None
    assert plan.data_home == cwd / ".stripeflow"
    assert plan.env["HUBSPOT_TOKEN"] == "pat-real-hubspot"
    assert plan.env["STRIPEFLOW_HOME"] == str(cwd / ".stripeflow")
    assert not (cwd / ".stripeflow" / "demo").exists()


def test_the_demo_banner_says_the_local_crm_is_used_instead_and_why(cwd: Path) -> None:
    write(cwd / "stripeflow.toml", REAL_FILE)
    launcher = Launcher(environ={})
    text = render(launcher, plan_run(load_user_settings({}), launcher.env()))
    assert "demo: signed demo payments" in text
    assert "no Stripe webhook secret is configured" in text
    assert "CRM: hubspot configured; the demo writes to the local CRM only" in text
    assert "SMTP smtp.example.com configured; the demo's mail goes to its outbox" in text
    assert "team messages to email:team@example.com, slack:#payments, telegram:-100123: off" in text
    assert "hand-off to erp.example.com: off" in text and "tok_in_the_url" not in text
    assert ".stripeflow/demo" in text and "[stripe] block" in text


def test_the_live_banner_says_what_is_missing_without_an_api_key(cwd: Path) -> None:
    from stripeflow.core.enrichment import GAPS

    env = {"STRIPE_WEBHOOK_SECRET": "whsec_real"}
    launcher = Launcher(environ=env)
    text = render(launcher, plan_run(load_user_settings(env), launcher.env()))
    assert "live: forward Stripe" in text and "no API key" in text
    for gap in GAPS:
        assert gap.what in text
    keyed = {**env, "STRIPE_API_KEY": "sk_test_key_shown_nowhere"}
    text = render(launcher, plan_run(load_user_settings(keyed), Launcher(environ=keyed).env()))
    assert "API key set" in text and "sk_test_key_shown_nowhere" not in text
    assert not any(gap.what in text for gap in GAPS)


def test_other_terminals_see_the_demo_while_it_is_what_runs(cwd: Path) -> None:
    launcher = Launcher(environ={})
    plan = plan_run(load_user_settings({}), launcher.env())
    assert command_settings({})[1] is None  # planned, not yet run
    record_run(launcher.home, "demo", plan.config, launcher.prefect_api_url)
    settings, config = command_settings({"DATABASE_URL": "postgresql://x@db/real"})
    assert config == plan.config and settings.home == plan.data_home and settings.database_url is None
    assert command_settings({"STRIPE_WEBHOOK_SECRET": "whsec_now_live"})[1] is None
    record_run(launcher.home, "live", None, launcher.prefect_api_url)
    assert command_settings({})[0].home == Path(".stripeflow")
