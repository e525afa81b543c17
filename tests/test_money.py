from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.money import (
    AmountError,
    CurrencyError,
    Money,
    allocate,
    currency_code,
    from_minor,
    minor_units,
    quantize,
    to_decimal,
    to_minor,
)

CURRENCIES = {"JPY": 0, "USD": 2, "EUR": 2, "KWD": 3}
MODES = [
    "ROUND_HALF_UP",
    "ROUND_HALF_EVEN",
    "ROUND_DOWN",
    "ROUND_UP",
    "ROUND_FLOOR",
    "ROUND_CEILING",
    "ROUND_HALF_DOWN",
]

amounts = st.decimals(
    min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False, places=8
)
currencies = st.sampled_from(sorted(CURRENCIES))


@pytest.mark.parametrize(("code", "digits"), sorted(CURRENCIES.items()))
def test_minor_units_follow_iso_4217(code: str, digits: int) -> None:
    assert minor_units(code) == digits
    assert minor_units(code.lower()) == digits


@given(amount=amounts, currency=currencies, mode=st.sampled_from(MODES))
def test_quantize_lands_on_the_minor_unit_and_moves_less_than_one_unit(
    amount: Decimal, currency: str, mode: str
) -> None:
    rounded = quantize(amount, currency, rounding=mode)  # type: ignore[arg-type]
    assert rounded.as_tuple().exponent == -CURRENCIES[currency]
    assert abs(rounded - amount) < Decimal(1).scaleb(-CURRENCIES[currency])


@given(amount=amounts, currency=currencies)
def test_half_even_moves_at_most_half_a_unit(amount: Decimal, currency: str) -> None:
    rounded = quantize(amount, currency, rounding="ROUND_HALF_EVEN")
    assert abs(rounded - amount) <= Decimal(1).scaleb(-CURRENCIES[currency]) / 2


@given(units=st.integers(min_value=-(10**15), max_value=10**15), currency=currencies)
def test_minor_units_round_trip_exactly(units: int, currency: str) -> None:
    amount = from_minor(units, currency)
    assert to_minor(amount, currency, rounding="ROUND_HALF_UP") == units


@given(amount=amounts, currency=currencies)
def test_rounding_is_idempotent(amount: Decimal, currency: str) -> None:
    once = quantize(amount, currency, rounding="ROUND_HALF_UP")
    assert quantize(once, currency, rounding="ROUND_HALF_UP") == once


@given(
    units=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1000), places=2), min_size=1, max_size=12
    ),
    currency=currencies,
)
def test_allocate_parts_add_up_to_the_total_exactly(units: int, weights: list[Decimal], currency: str) -> None:
    total = from_minor(units, currency)
    parts = allocate(total, weights, currency)
    assert sum(parts) == total
    assert all(p.as_tuple().exponent == -CURRENCIES[currency] for p in parts)


def test_explicit_rounding_modes_give_known_results() -> None:
    assert quantize(Decimal("2.345"), "USD", rounding="ROUND_HALF_UP") == Decimal("2.35")
    assert quantize(Decimal("2.345"), "USD", rounding="ROUND_HALF_EVEN") == Decimal("2.34")
    assert quantize(Decimal("1234.5"), "JPY", rounding="ROUND_HALF_UP") == Decimal("1235")
    assert quantize(Decimal("1234.5"), "JPY", rounding="ROUND_DOWN") == Decimal("1234")
    assert quantize(Decimal("1.23456"), "KWD", rounding="ROUND_HALF_UP") == Decimal("1.235")
    assert to_minor(Decimal("19.99"), "USD", rounding="ROUND_HALF_UP") == 1999
    assert to_minor(Decimal("1500"), "JPY", rounding="ROUND_HALF_UP") == 1500
    assert to_minor(Decimal("0.125"), "KWD", rounding="ROUND_HALF_UP") == 125
    assert ROUND_HALF_EVEN == "ROUND_HALF_EVEN"


def test_allocate_gives_the_leftover_cent_to_the_largest_remainder() -> None:
    assert allocate(Decimal("100.00"), [Decimal(1), Decimal(1), Decimal(1)], "USD") == [
        Decimal("33.34"),
        Decimal("33.33"),
        Decimal("33.33"),
    ]
    assert allocate(Decimal("10"), [Decimal(1), Decimal(2)], "JPY") == [Decimal("3"), Decimal("7")]


def test_floats_are_refused_with_advice() -> None:
    with pytest.raises(AmountError, match="float"):
        to_decimal(0.1)  # type: ignore[arg-type]
    with pytest.raises(AmountError, match="float"):
        Money(0.1, "USD")  # type: ignore[arg-type]


def test_unknown_and_malformed_currencies_are_refused() -> None:
    with pytest.raises(CurrencyError, match="ISO 4217"):
        currency_code("ABC")
    with pytest.raises(CurrencyError, match="three-letter"):
        currency_code("US")
    with pytest.raises(CurrencyError, match="cannot be used"):
        currency_code("XAU")
    assert currency_code(" usd ") == "USD"


def test_money_refuses_to_mix_currencies() -> None:
    assert Money(Decimal("1.10"), "USD") + Money(Decimal("2.20"), "USD") == Money(Decimal("3.30"), "USD")
    with pytest.raises(CurrencyError, match="Cannot combine USD and EUR"):
        Money(Decimal(1), "USD") + Money(Decimal(1), "EUR")


def test_rounding_mode_must_be_named() -> None:
    with pytest.raises(TypeError):
        quantize(Decimal("1.005"), "USD")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="Unknown rounding mode"):
        quantize(Decimal("1.005"), "USD", rounding="BANKERS")  # type: ignore[arg-type]
