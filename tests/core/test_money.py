from decimal import Decimal

import pytest

from stripeflow.core.errors import UnknownCurrencyError
from stripeflow.core.money import format_money, from_minor, to_minor

NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [
        (12345, "pln", Decimal("123.45")),
        (12345, "PLN", Decimal("123.45")),
        (500, "jpy", Decimal("500")),
        (500, "krw", Decimal("500")),
        (5120, "kwd", Decimal("5.120")),
        (1000, "bhd", Decimal("1.000")),
        (12300, "isk", Decimal("123.00")),  # ISK is sent times 100 for backwards compatibility
        (0, "eur", Decimal("0.00")),
    ],
)
def test_minor_units_become_decimal_major_units(minor: int, currency: str, major: Decimal) -> None:
    assert from_minor(minor, currency) == major
    assert str(from_minor(minor, currency)) == str(major)
    assert to_minor(major, currency) == minor


def test_float_amounts_are_refused() -> None:
    with pytest.raises(TypeError):
        from_minor(12.5, "pln")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["xyz", "", "pl", "BTC"])
def test_unknown_currency_is_a_clear_error(currency: str) -> None:
    with pytest.raises(UnknownCurrencyError, match="unknown currency"):
        from_minor(100, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "language", "text"),
    [
        ("249.00", "PLN", "pl", f"249,00{NBSP}zł"),
        ("1249.00", "PLN", "pl", f"1{NBSP}249,00{NBSP}zł"),
        ("249.00", "PLN", "en", f"PLN{NBSP}249.00"),
        ("1249.00", "EUR", "en", "€1,249.00"),
        ("1249.00", "EUR", "pl", f"1{NBSP}249,00{NBSP}€"),
        ("5000", "JPY", "en", "¥5,000"),
        ("5.120", "KWD", "en", f"KWD{NBSP}5.120"),
    ],
)
def test_money_is_formatted_by_locale(amount: str, currency: str, language: str, text: str) -> None:
    assert format_money(Decimal(amount), currency, language) == text
