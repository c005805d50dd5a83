"""Money: Stripe's integer minor units to `Decimal` major units, and locale-aware formatting.

Stripe sends every amount as an integer in the currency's minor unit. The exponent is not
always 2: zero-decimal currencies (JPY, KRW, ...) have none, three-decimal ones (KWD, ...)
have three, and ISK is zero-decimal but sent multiplied by 100 for backwards compatibility.
"""

from __future__ import annotations

import copy
from decimal import Decimal

from babel import Locale
from babel.numbers import get_currency_symbol

from stripeflow.core.errors import UnknownCurrencyError

# docs.stripe.com/currencies
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())

# Every presentment currency Stripe accepts (docs.stripe.com/currencies, 2026).
STRIPE_CURRENCIES = frozenset(
    """
    USD AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP
    GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR ISK JMD JOD JPY KES KGS KHR KMF KRW KWD KYD KZT
    LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SEK SGD SHP SLE SOS SRD
    STD SZL THB TJS TND TOP TRY TTD TWD TZS UAH UGX UYU UZS VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW
    """.split()
)

LOCALES = {"pl": "pl_PL", "en": "en_US"}


def currency_code(currency: str) -> str:
    """Upper-case ISO code for a Stripe currency, or `UnknownCurrencyError`."""
    code = (currency or "").strip().upper()
    if code not in STRIPE_CURRENCIES:
        raise UnknownCurrencyError(currency)
    return code


def exponent(currency: str) -> int:
    """How many decimal places Stripe's minor unit has for this currency."""
    code = currency_code(currency)
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2  # includes ISK, which Stripe sends times 100


def from_minor(amount: int, currency: str) -> Decimal:
    """`12345, "pln"` -> `Decimal("123.45")`; `500, "jpy"` -> `Decimal("500")`."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"Stripe amounts are integers in minor units, got {amount!r}")
    places = exponent(currency)
    return Decimal(amount).scaleb(-places).quantize(Decimal(1).scaleb(-places))


def to_minor(amount: Decimal, currency: str) -> int:
    """The inverse of `from_minor`."""
    return int(amount.scaleb(exponent(currency)).to_integral_value())


def display_digits(currency: str) -> int:
    """How many decimals an amount in this currency is shown with: Stripe's minor unit."""
    code = currency_code(currency)
    return 0 if code == "ISK" else exponent(code)


def format_money(amount: Decimal, currency: str, language: str = "pl") -> str:
    """`249,00 zł` in Polish, `PLN 249.00` / `€1,249.00` in English (non-breaking spaces)."""
    code = currency_code(currency)
    locale = Locale.parse(LOCALES.get(language, language))
    # Stripe's digits, not ISO's: HUF, COP, IDR... are charged in hundredths, so 1234,56 Ft is
    # not shown as 1235 Ft. ISK is zero-decimal in meaning (sent times 100): whole krónur.
    digits = display_digits(code)
    pattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (digits, digits)
    text = pattern.apply(amount, locale, currency=code, currency_digits=False)
    symbol = get_currency_symbol(code, locale=locale)
    # CLDR's currencySpacing: an alphabetic symbol (PLN, JPY) is set apart from the digits.
    if symbol.isalpha() and text.startswith(symbol) and text[len(symbol) :][:1].isdigit():
        text = f"{symbol}\u00a0{text[len(symbol) :]}"
    return text
