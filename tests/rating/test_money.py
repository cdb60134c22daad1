"""core.money: one rounding function, ISO 4217 minor units, no float ever."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.money import (
    from_minor_units,
    is_valid_currency,
    minor_unit_exponent,
    parse_decimal,
    quantize,
    to_minor_units,
    whole_units,
)


@pytest.mark.parametrize(("currency", "exponent"), [
    ("USD", 2), ("EUR", 2), ("GBP", 2), ("CHF", 2), ("CNY", 2), ("CAD", 2), ("AUD", 2),
    ("JPY", 0), ("KRW", 0), ("VND", 0), ("CLP", 0), ("ISK", 0),
    ("KWD", 3), ("BHD", 3), ("OMR", 3), ("JOD", 3), ("TND", 3), ("LYD", 3), ("IQD", 3),
])
def test_it_knows_the_minor_unit(currency: str, exponent: int) -> None:
    assert minor_unit_exponent(currency) == exponent
    assert is_valid_currency(currency)


@pytest.mark.parametrize("code", ["usd", "XYZ", "", "US", None])
def test_it_rejects_unknown_currencies_by_name(code: str) -> None:
    assert not is_valid_currency(code)
    with pytest.raises(ValueError, match=repr(code).replace("'", ".")):
        quantize(Decimal(1), code)


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    ("0.005", "USD", "0.01"), ("0.0049999", "USD", "0.00"), ("2.675", "USD", "2.68"),
    ("-0.005", "USD", "-0.01"), ("0.5", "JPY", "1"), ("1.4999", "JPY", "1"),
    ("0.0005", "KWD", "0.001"), ("12345678901234567890123456789.005", "USD",
                                 "12345678901234567890123456789.01"),
])
def test_it_rounds_half_up_once(amount: str, currency: str, expected: str) -> None:
    result = quantize(Decimal(amount), currency)
    assert result == Decimal(expected)
    assert str(result) == expected


def test_minor_units_are_exact() -> None:
    assert to_minor_units(Decimal("12.34"), "USD") == 1234
    assert to_minor_units(Decimal("12.340000"), "USD") == 1234
    assert to_minor_units(Decimal("1234"), "JPY") == 1234
    assert from_minor_units(1234, "USD") == Decimal("12.34")
    assert from_minor_units(1234, "KWD") == Decimal("1.234")
    with pytest.raises(ValueError, match="minor units"):
        to_minor_units(Decimal("12.345"), "USD")


def test_floats_are_refused_everywhere() -> None:
    with pytest.raises(TypeError, match="float"):
        quantize(0.1, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        to_minor_units(0.1, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_minor_units(1.0, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"revenue.*float"):
        parse_decimal(0.1, field="revenue")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e3", " 1", "1.", ".5",
                                   "", "1,000", "sNaN", Decimal("NaN"), Decimal("Infinity")])
def test_parse_decimal_refuses_non_plain_numbers(value: object) -> None:
    with pytest.raises(ValueError, match=r"^revenue: "):
        parse_decimal(value, field="revenue")


def test_parse_decimal_accepts_strings_ints_and_decimals() -> None:
    assert parse_decimal("12.50", field="f") == Decimal("12.50")
    assert parse_decimal("-3", field="f") == Decimal(-3)
    assert parse_decimal(7, field="f") == Decimal(7)
    assert parse_decimal(Decimal("1.5"), field="f") == Decimal("1.5")
    with pytest.raises(TypeError, match=r"^f: "):
        parse_decimal(True, field="f")
    with pytest.raises(TypeError, match=r"^f: "):
        parse_decimal(None, field="f")


def test_parse_decimal_limits_places() -> None:
    assert parse_decimal("1.123456", field="revenue", max_places=6) == Decimal("1.123456")
    with pytest.raises(ValueError, match="revenue: at most 6 decimal places"):
        parse_decimal("1.1234567", field="revenue", max_places=6)


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**12, max_value=10**12),
    st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_quantize_lands_within_half_a_minor_unit(amount: Decimal, currency: str) -> None:
    result = quantize(amount, currency)
    unit = Decimal(1).scaleb(-minor_unit_exponent(currency))
    assert from_minor_units(to_minor_units(result, currency), currency) == result
    assert abs(result - amount) <= unit / 2
    assert quantize(result, currency) == result


@pytest.mark.parametrize(("amount", "expected"), [
    ("12.5", 13), ("12.49", 12), ("-12.5", -13), ("0.5", 1), ("7", 7), ("1234567.500", 1234568),
])
def test_whole_units_rounds_half_up_to_an_integer(amount: str, expected: int) -> None:
    # a platform fee of 2.5% of 500 cents is 12.5 cents: 13 cents
    assert whole_units(Decimal(amount)) == expected
    with pytest.raises(TypeError, match="float"):
        whole_units(12.5)  # type: ignore[arg-type]
