"""Money: the one rounding function and strict decimal parsing.

Pure (no Django, no I/O). Amounts are ``Decimal`` in major units of their currency (dollars, not
cents) unless a name says ``minor_units``; a float is refused everywhere, because a binary float
cannot hold 0.1 and a ledger must reproduce the same cents every time.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext

__all__ = [
    "from_minor_units",
    "is_valid_currency",
    "minor_unit_exponent",
    "parse_decimal",
    "quantize",
    "to_minor_units",
    "whole_units",
]

# ISO 4217 minor-unit exponents: the number of decimal places of the smallest unit.
# Only currencies that differ from 2 are listed by exponent; the rest are the active codes with 2.
_EXPONENT_0 = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)
_EXPONENT_3 = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_EXPONENT_4 = frozenset("CLF UYW".split())
_EXPONENT_2 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ
    GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL
    MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN
    QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY
    TTD TWD TZS UAH USD UYU UZS VES VED WST XCD XCG YER ZAR ZMW ZWG""".split()
)
_EXPONENTS: dict[str, int] = {
    **{code: 2 for code in _EXPONENT_2},
    **{code: 0 for code in _EXPONENT_0},
    **{code: 3 for code in _EXPONENT_3},
    **{code: 4 for code in _EXPONENT_4},
}

# Wide enough that quantizing any realistic amount never loses a digit before the one rounding.
_CONTEXT = Context(prec=80, rounding=ROUND_HALF_UP)


def is_valid_currency(code: object) -> bool:
    """True for an active ISO 4217 code in upper case (``"USD"``), false for anything else."""
    return isinstance(code, str) and code in _EXPONENTS


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit: 2 for USD, 0 for JPY, 3 for KWD."""
    try:
        return _EXPONENTS[currency]
    except (KeyError, TypeError):
        raise ValueError(f"unknown currency code {currency!r}") from None


def _require_decimal(amount: object, what: str) -> Decimal:
    if isinstance(amount, float):
        raise TypeError(f"{what} must be a Decimal, not a float ({amount!r})")
    if not isinstance(amount, Decimal):
        raise TypeError(f"{what} must be a Decimal, not {type(amount).__name__}")
    if not amount.is_finite():
        raise ValueError(f"{what} must be a finite Decimal, not {amount}")
    return amount


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` half-up to the currency's minor unit. The only rounding in Tollgate
    (``whole_units`` is the same rounding for amounts already counted in minor units)."""
    amount = _require_decimal(amount, "amount")
    return _round_half_up(amount, minor_unit_exponent(currency))


def whole_units(amount: Decimal) -> int:
    """``amount`` rounded half-up to a whole number: for an amount already counted in minor
    units (a fee of 12.5 cents is 13 cents), the rounding of ``quantize``."""
    return int(_round_half_up(_require_decimal(amount, "amount"), 0))


def _round_half_up(amount: Decimal, places: int) -> Decimal:
    with localcontext(_CONTEXT):
        return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Exact integer of minor units (cents for USD); raises if ``amount`` has finer digits."""
    amount = _require_decimal(amount, "amount")
    exponent = minor_unit_exponent(currency)
    with localcontext(_CONTEXT):
        scaled = amount.scaleb(exponent)
        if scaled != scaled.to_integral_value():
            raise ValueError(
                f"{amount} is not a whole number of {currency} minor units (10^-{exponent})"
            )
        return int(scaled)


def from_minor_units(n: int, currency: str) -> Decimal:
    """``Decimal`` in major units from an integer of minor units: (1234, "USD") -> 12.34."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"minor units must be an int, not {type(n).__name__}")
    exponent = minor_unit_exponent(currency)
    with localcontext(_CONTEXT):
        return Decimal(n).scaleb(-exponent)


def parse_decimal(value: object, *, field: str, max_places: int | None = None) -> Decimal:
    """A finite ``Decimal`` from a decimal string, an int or a Decimal; never from a float.

    ``"12.50"``, ``12`` and ``Decimal("12.5")`` are accepted; ``12.5`` (float), ``True``,
    ``"NaN"``, ``"Infinity"``, ``"1e3"`` and ``" 12"`` are refused with an error naming ``field``.
    """
    if isinstance(value, float):
        raise TypeError(f"{field}: must be a decimal string, not a float ({value!r})")
    if isinstance(value, bool):
        raise TypeError(f"{field}: must be a decimal string, not a boolean")
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        if not _is_plain_decimal(value):
            raise ValueError(f'{field}: {value!r} is not a decimal number such as "12.50"')
        try:
            result = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the pattern check already rejects these
            raise ValueError(f"{field}: {value!r} is not a decimal number") from None
    else:
        raise TypeError(f"{field}: must be a decimal string, not {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{field}: must be a finite number, not {result}")
    if max_places is not None:
        exponent = result.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > max_places:
            raise ValueError(f"{field}: at most {max_places} decimal places")
    return result


def _is_plain_decimal(text: str) -> bool:
    """``-?digits[.digits]``: no exponent, no spaces, no sign but minus, no NaN or Infinity."""
    body = text[1:] if text.startswith("-") else text
    whole, dot, fraction = body.partition(".")
    if not whole or not whole.isascii() or not whole.isdigit():
        return False
    if dot and (not fraction or not fraction.isascii() or not fraction.isdigit()):
        return False
    return True
