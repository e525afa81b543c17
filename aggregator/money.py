"""Money: ISO 4217 currencies, Decimal arithmetic and rounding with an explicit mode.

Rules (DESIGN.md, invariant 1):
- amounts are ``Decimal``; floats are refused at the door;
- vendor costs keep full precision; rounding happens once, where a document needs it, with an
  explicit rounding mode, to the currency's minor unit (JPY 0 decimals, USD 2, KWD 3);
- amounts travel in the API as strings.

The currency table (minor units) comes from py-moneyed's copy of ISO 4217.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import moneyed
from django.core.exceptions import ValidationError
from django.db import models

RoundingMode = Literal[
    "ROUND_HALF_UP", "ROUND_HALF_EVEN", "ROUND_HALF_DOWN", "ROUND_UP", "ROUND_DOWN", "ROUND_CEILING", "ROUND_FLOOR"
]
ROUNDING_MODES: frozenset[str] = frozenset(RoundingMode.__args__)  # type: ignore[attr-defined]

# Storage precision for amounts: enough for vendor micro-cent prices and large invoices.
AMOUNT_MAX_DIGITS = 28
AMOUNT_DECIMAL_PLACES = 10


# ISO 4217 codes for metals, funds and test/no-currency: not something an invoice is issued in.
_NOT_MONEY = frozenset({"XAU", "XAG", "XPD", "XPT", "XDR", "XTS", "XXX", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA"})


class CurrencyError(ValueError):
    """An unknown or malformed currency code, or a mix of currencies."""


class AmountError(ValueError):
    """An amount that is not a finite decimal number."""


def currency_code(code: str) -> str:
    """Return the upper-case ISO 4217 code, or raise ``CurrencyError`` saying what is wrong."""
    if not isinstance(code, str) or len(code.strip()) != 3 or not code.strip().isalpha():
        raise CurrencyError(
            f"{code!r} is not a currency code: use a three-letter ISO 4217 code such as USD, EUR or JPY."
        )
    normalized = code.strip().upper()
    try:
        currency = moneyed.get_currency(normalized)
    except moneyed.CurrencyDoesNotExist:
        raise CurrencyError(f"{normalized} is not an ISO 4217 currency: use a code such as USD, EUR or JPY.") from None
    if normalized in _NOT_MONEY or currency.sub_unit is None:
        raise CurrencyError(f"{normalized} cannot be used for billing: use a code such as USD, EUR or JPY.")
    return normalized


def minor_units(code: str) -> int:
    """Number of decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3)."""
    sub_unit = moneyed.get_currency(currency_code(code)).sub_unit
    return len(str(sub_unit)) - 1


def to_decimal(value: Decimal | int | str) -> Decimal:
    """Parse an amount. Floats are refused: they cannot represent most decimal amounts."""
    if isinstance(value, bool) or isinstance(value, float):
        raise AmountError(f'{value!r} is a float: pass amounts as strings or Decimal, e.g. "12.30".')
    try:
        result = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise AmountError(f'{value!r} is not a number: write amounts like "12.30".') from None
    if not result.is_finite():
        raise AmountError(f"{value!r} is not a finite amount.")
    return result


def quantize(amount: Decimal, currency: str, *, rounding: RoundingMode) -> Decimal:
    """Round ``amount`` to the currency's minor unit with the given rounding mode."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"Unknown rounding mode {rounding!r}; use one of {sorted(ROUNDING_MODES)}.")
    exponent = Decimal(1).scaleb(-minor_units(currency))
    return to_decimal(amount).quantize(exponent, rounding=rounding)


def to_minor(amount: Decimal, currency: str, *, rounding: RoundingMode) -> int:
    """The amount in minor units (cents, yen, fils), as gateways such as Stripe expect."""
    return int(quantize(amount, currency, rounding=rounding).scaleb(minor_units(currency)))


def from_minor(units: int, currency: str) -> Decimal:
    """The Decimal amount of an integer count of minor units."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise AmountError(f"{units!r} is not a whole number of minor units.")
    return Decimal(units).scaleb(-minor_units(currency))


def allocate(total: Decimal, weights: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Split a rounded ``total`` across ``weights`` in minor units, largest remainder first.

    The parts always add up to ``total`` exactly, which rounding each part separately does not.
    """
    if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError("allocate needs at least one non-negative weight and a positive sum of weights.")
    digits = minor_units(currency)
    total_units = int(to_decimal(total).scaleb(digits))
    if Decimal(total_units).scaleb(-digits) != total:
        raise AmountError(f"{total} has more decimals than {currency} allows; round it first.")
    weight_sum = sum(weights)
    exact = [Decimal(total_units) * w / weight_sum for w in weights]
    units = [int(e.to_integral_value(rounding=decimal.ROUND_FLOOR)) for e in exact]
    remainder = total_units - sum(units)
    by_fraction = sorted(range(len(weights)), key=lambda i: (exact[i] - units[i], -i), reverse=True)
    for i in by_fraction[:remainder]:
        units[i] += 1
    return [Decimal(u).scaleb(-digits) for u in units]


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in one currency. Adding two currencies is an error, never a conversion."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", to_decimal(self.amount))
        object.__setattr__(self, "currency", currency_code(self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"Cannot combine Money with {type(other).__name__}.")
        if other.currency != self.currency:
            raise CurrencyError(f"Cannot combine {self.currency} and {other.currency}: convert one first.")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __mul__(self, factor: Decimal | int) -> Money:
        return Money(self.amount * to_decimal(factor), self.currency)

    def rounded(self, *, rounding: RoundingMode) -> Money:
        return Money(quantize(self.amount, self.currency, rounding=rounding), self.currency)

    def to_minor(self, *, rounding: RoundingMode) -> int:
        return to_minor(self.amount, self.currency, rounding=rounding)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


# --- Django fields ------------------------------------------------------------------------------


def validate_currency(value: str) -> None:
    try:
        currency_code(value)
    except CurrencyError as exc:
        raise ValidationError(str(exc)) from None


class CurrencyField(models.CharField):
    """An ISO 4217 code, stored upper-case."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max_length", 3)
        kwargs.setdefault("validators", [validate_currency])
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class AmountField(models.DecimalField):
    """A Decimal amount at storage precision (full vendor precision; rounding happens later)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max_digits", AMOUNT_MAX_DIGITS)
        kwargs.setdefault("decimal_places", AMOUNT_DECIMAL_PLACES)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
