"""Exchange-rate lookups for settlement and invoices.

Rule (docs/fx-rates.md): the rate for ``day`` is the one dated ``day``, or failing that the most
recent one up to ``LOOKBACK_DAYS`` days before it (weekends, TARGET holidays). On the chosen day a
manual rate beats the ECB rate, a stored pair or its inverse beats a cross rate, and a cross rate
goes through EUR with both legs from that same day. Nothing here rounds to a currency's minor unit:
rates carry ``FX_PRECISION`` significant digits and conversions are exact products; documents round
once, where they show an amount.
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Max, Q

from aggregator.money import currency_code, to_decimal
from billing.fx.models import FxRate

# Significant digits of derived (inverse and cross) rates. 28 digits put the error of a derived
# rate below 1e-27 relative, far under any minor unit even on very large amounts.
FX_PRECISION = 28
FX_CONTEXT = decimal.Context(
    prec=FX_PRECISION,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
# The longest gap between ECB publication days is 4 days (Easter); a week is generous but still
# refuses a rate so old that using it is more likely a missing import than a holiday.
LOOKBACK_DAYS = 7
# The ECB publishes every rate against EUR, so EUR is the one currency all others are linked to.
PIVOT = "EUR"

# Within one day, the source tried first wins.
_SOURCE_PRIORITY = (FxRate.Source.MANUAL.value, FxRate.Source.ECB.value)


class FxError(Exception):
    """An exchange-rate request or import that cannot be carried out; the message says what to do."""


class FxRateMissing(FxError, LookupError):
    """No rate links the two currencies on the day or in the look-back window before it."""

    def __init__(self, *, base: str, quote: str, day: date) -> None:
        self.base, self.quote, self.day = base, quote, day
        earliest = day - timedelta(days=LOOKBACK_DAYS)
        super().__init__(
            f"No {base} to {quote} exchange rate for {day} (nor on any day back to {earliest}). "
            f"Import the ECB reference rates covering {day} (python manage.py import_fx_rates --file "
            f"eurofxref-hist-90d.xml) or enter a manual {base}/{quote} rate for that day in the admin "
            "(Billing > FX rates)."
        )


@dataclass(frozen=True, slots=True)
class FxQuote:
    """1 ``base`` = ``rate`` ``quote``, as published on ``day`` (which may precede the day asked for).

    ``source`` is ``ecb`` or ``manual`` (``manual`` if any leg of a cross rate is manual) or
    ``identity``; ``method`` says how the rate was obtained: identity, direct, inverse or cross.
    """

    rate: Decimal
    day: date
    source: str
    base: str
    quote: str
    method: str = "direct"


# A rate as an unevaluated fraction, so a cross rate through inverse legs is divided only once.
@dataclass(frozen=True, slots=True)
class _Ratio:
    numerator: Decimal
    denominator: Decimal
    source: str
    method: str


_DayTable = dict[tuple[str, str, str], Decimal]  # (base, quote, source) -> rate


def fx_rate(*, base: str, quote: str, day: date) -> FxQuote:
    """The rate to convert ``base`` into ``quote`` on ``day``; raises ``FxRateMissing``. One query at most."""
    base, quote = currency_code(base), currency_code(quote)
    day = _plain_date(day)
    if base == quote:
        return FxQuote(rate=Decimal(1), day=day, source="identity", base=base, quote=quote, method="identity")
    # Every row that can take part: the pair either way round and both currencies' EUR legs.
    pairs = Q(base=base, quote=quote) | Q(base=quote, quote=base)
    if PIVOT not in (base, quote):
        pairs |= Q(base=PIVOT, quote__in=[base, quote]) | Q(base__in=[base, quote], quote=PIVOT)
    rows = FxRate.objects.filter(pairs, date__range=(day - timedelta(days=LOOKBACK_DAYS), day)).values_list(
        "date", "base", "quote", "source", "rate"
    )
    by_day: defaultdict[date, _DayTable] = defaultdict(dict)
    for row_day, row_base, row_quote, source, rate in rows:
        by_day[row_day][(row_base, row_quote, source)] = rate
    for candidate in sorted(by_day, reverse=True):
        ratio = _resolve(by_day[candidate], base, quote)
        if ratio is not None:
            rate = tidy_rate(FX_CONTEXT.divide(ratio.numerator, ratio.denominator))
            return FxQuote(rate=rate, day=candidate, source=ratio.source, base=base, quote=quote, method=ratio.method)
    raise FxRateMissing(base=base, quote=quote, day=day)


def convert(*, amount: Decimal, from_currency: str, to_currency: str, day: date) -> tuple[Decimal, FxQuote]:
    """``amount`` of ``from_currency`` in ``to_currency`` on ``day``, unrounded, with the rate used.

    The product is exact: the only rounding is the one in a derived rate (``FX_PRECISION`` digits).
    Round the result once, on the document that shows it (aggregator.money.quantize).
    """
    value = to_decimal(amount)
    quote = fx_rate(base=from_currency, quote=to_currency, day=day)
    return _exact_product(value, quote.rate), quote


def fx_rate_latest_day(*, source: str = FxRate.Source.ECB) -> date | None:
    """The newest day with a rate from ``source``: tells whether the daily import keeps running."""
    latest: date | None = FxRate.objects.filter(source=source).aggregate(latest=Max("date"))["latest"]
    return latest


def _resolve(table: _DayTable, base: str, quote: str) -> _Ratio | None:
    direct = _direct_or_inverse(table, base, quote)
    if direct is not None or PIVOT in (base, quote):
        return direct
    # Cross: 1 base = (quote per EUR) / (base per EUR) quote, both legs from this same day.
    base_leg = _direct_or_inverse(table, PIVOT, base)
    quote_leg = _direct_or_inverse(table, PIVOT, quote)
    if base_leg is None or quote_leg is None:
        return None
    manual = FxRate.Source.MANUAL.value
    return _Ratio(
        numerator=_exact_product(quote_leg.numerator, base_leg.denominator),
        denominator=_exact_product(quote_leg.denominator, base_leg.numerator),
        source=manual if manual in (base_leg.source, quote_leg.source) else FxRate.Source.ECB.value,
        method="cross",
    )


def _direct_or_inverse(table: _DayTable, base: str, quote: str) -> _Ratio | None:
    for source in _SOURCE_PRIORITY:
        if (rate := table.get((base, quote, source))) is not None:
            return _Ratio(rate, Decimal(1), source, "direct")
        if (rate := table.get((quote, base, source))) is not None:
            return _Ratio(Decimal(1), rate, source, "inverse")
    return None


def _exact_product(a: Decimal, b: Decimal) -> Decimal:
    # Enough digits for the full product, so multiplying never rounds (Inexact would say otherwise).
    digits = len(a.as_tuple().digits) + len(b.as_tuple().digits)
    context = decimal.Context(prec=max(digits, 1), traps=[decimal.Inexact, decimal.InvalidOperation])
    return context.multiply(a, b)


def tidy_rate(rate: Decimal) -> Decimal:
    """Drop trailing zeros from storage (160.350000000000 -> 160.35) without exponent notation."""
    if rate == rate.to_integral_value():
        return rate.quantize(Decimal(1))
    return rate.normalize(FX_CONTEXT)


def _plain_date(day: date) -> date:
    # A datetime is a date too; which day it means depends on a time zone, so make the caller choose.
    if isinstance(day, datetime) or not isinstance(day, date):
        raise TypeError(f"{day!r} is not a date: pass the day (datetime.date) whose rate you want.")
    return day
