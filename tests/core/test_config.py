from pathlib import Path

import pytest

from stripeflow.core.config import load_settings
from stripeflow.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stripeflow.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file_and_no_accounts(tmp_path: Path) -> None:
    s = load_settings(env={"STRIPEFLOW_CONFIG": str(tmp_path / "absent.toml")})
    assert s.language == "pl"
    assert [t.type for t in s.crm] == ["local"]
    assert s.ledger_url.startswith("sqlite:///")


def test_a_typo_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[[crm]]\ntpye = "hubspot"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    assert "crm.0.tpye: unknown key" in str(exc.value)


def test_an_unknown_stage_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[[crm]]\ntype = "local"\n[crm.stages]\npayed = "won"\n')
    with pytest.raises(ConfigError, match="unknown stage 'payed'"):
        load_settings(path, env={})


def test_an_unknown_payment_field_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[[crm]]\ntype = "local"\n[crm.fields]\nemial = "email"\n')
    with pytest.raises(ConfigError, match="unknown deal field 'emial' \\(did you mean 'email'\\?\\)"):
        load_settings(path, env={})


def test_broken_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "language = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, env={})


def test_secrets_come_from_the_environment_and_stay_secret(tmp_path: Path) -> None:
    s = load_settings(
        None,
        env={
            "STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b",
            "STRIPE_API_KEY": "sk_test_123",
            "STRIPEFLOW_CONFIG": str(tmp_path / "absent.toml"),
        },
    )
    assert [x.get_secret_value() for x in s.stripe.webhook_secrets] == ["whsec_a", "whsec_b"]
    assert "sk_test_123" not in repr(s) and "whsec_a" not in repr(s)


def test_an_invalid_language_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, 'language = "de"\n')
    with pytest.raises(ConfigError, match="language"):
        load_settings(path, env={})


def test_the_example_configuration_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "stripeflow.example.toml"
    settings = load_settings(example, env={})
    assert settings.language == "pl" and [t.type for t in settings.crm] == ["local"]


def test_an_unknown_deal_field_names_the_catalogue(tmp_path: Path) -> None:
    path = write(tmp_path, '[[crm]]\ntype = "hubspot"\n[crm.fields]\nrecipt_url = "x"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    message = str(exc.value)
    assert "crm.0.fields" in message and "unknown deal field 'recipt_url'" in message
    assert "did you mean 'receipt_url'" in message and "amount, currency, paid_on" in message


def test_an_empty_field_value_drops_the_field(tmp_path: Path) -> None:
    from stripeflow.core.deal_fields import resolve_mapping

    path = write(tmp_path, '[[crm]]\ntype = "local"\n[crm.fields]\nreceipt_url = ""\nmethod = "metoda"\n')
    (target,) = load_settings(path, env={}).crm
    assert target.fields == {"receipt_url": "", "method": "metoda"}
    mapping = resolve_mapping({"receipt_url": "receipt_url", "method": "method"}, target.fields)
    assert mapping == {"method": "metoda"}
