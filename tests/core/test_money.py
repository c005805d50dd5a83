from decimal import Decimal

import pytest

from stripeflow.core.errors import UnknownCurrencyError
from stripeflow.core.money import STRIPE_CURRENCIES, format_money, from_minor, to_minor

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


@pytest.mark.parametrize(
    ("minor", "currency", "language", "text"),
    [
        # Stripe charges these in hundredths though ISO shows whole units: the hundredths stay
        (123456, "huf", "en", f"HUF{NBSP}1,234.56"),
        (123456, "huf", "pl", f"1{NBSP}234,56{NBSP}HUF"),
        (123450, "cop", "en", f"COP{NBSP}1,234.50"),
        (1000050, "idr", "en", f"IDR{NBSP}10,000.50"),
        (10050, "twd", "en", "NT$100.50"),
        (12345, "lbp", "en", f"LBP{NBSP}123.45"),
        # ISK comes times 100 but means whole krónur
        (12300, "isk", "en", f"ISK{NBSP}123"),
        (5000, "jpy", "pl", f"5{NBSP}000{NBSP}JPY"),
        (5000, "krw", "en", "₩5,000"),
        (5120, "kwd", "en", f"KWD{NBSP}5.120"),
        (24900, "pln", "pl", f"249,00{NBSP}zł"),
    ],
)
def test_money_is_shown_with_the_digits_stripe_charges(
    minor: int, currency: str, language: str, text: str
) -> None:
    assert format_money(from_minor(minor, currency), currency, language) == text


@pytest.mark.parametrize("currency", sorted(STRIPE_CURRENCIES))
def test_no_currency_drops_a_digit_stripe_charged(currency: str) -> None:
    """Every digit of the minor amount is shown, for every currency Stripe accepts (ISK aside)."""
    shown = format_money(from_minor(123457, currency), currency, "en")
    digits = "".join(ch for ch in shown if ch.isdigit())
    assert digits == ("1235" if currency == "ISK" else "123457"), shown
