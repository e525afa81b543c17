"""Writes of exchange rates: the ECB reference-rate importer and operators' manual rates."""

from __future__ import annotations

import re

# The standard library's parser, hardened below: a DOCTYPE (and with it any entity) is refused.
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from aggregator.money import AmountError, CurrencyError, currency_code, to_decimal
from aggregator.tenancy.models import User
from aggregator.tenancy.services import audit_record
from billing.fx.models import RATE_DECIMAL_PLACES, RATE_MAX_DIGITS, FxRate
from billing.fx.selectors import PIVOT, FxError, tidy_rate

GESMES_NS = "http://www.gesmes.org/xml/2002-08-01"
EUROFXREF_NS = "http://www.ecb.int/vocabulary/2002-08-01/eurofxref"
_ENVELOPE = f"{{{GESMES_NS}}}Envelope"
_CUBE = f"{{{EUROFXREF_NS}}}Cube"
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_RATE_INTEGER_DIGITS = RATE_MAX_DIGITS - RATE_DECIMAL_PLACES


class FxImportError(FxError):
    """A reference-rate file that cannot be imported; nothing of it was written."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    days: int
    rates_written: int  # new rows plus corrected ones
    rates_unchanged: int
    last_day: date | None = None  # newest day in the file: tells a stale download from a fresh one


# --- ECB import ---------------------------------------------------------------------------------


def fx_rates_import_ecb(*, xml: bytes | str) -> ImportResult:
    """Import an ECB reference-rate file (eurofxref-daily.xml, -hist-90d.xml or -hist.xml).

    Rates are stored as published: base EUR, source ``ecb``. Importing the same file again writes
    nothing; a value the ECB corrected replaces the stored one (counted as written, and audited).
    The whole file is checked before anything is written, and written in one transaction.
    """
    days = _ecb_parse(xml)
    first, last = min(days), max(days)
    written = unchanged = 0
    with transaction.atomic():
        stored = {
            (row_day, quote): (pk, rate)
            for pk, row_day, quote, rate in FxRate.objects.filter(
                source=FxRate.Source.ECB, base=PIVOT, date__range=(first, last)
            ).values_list("pk", "date", "quote", "rate")
        }
        to_write: list[FxRate] = []
        corrections: list[tuple[int, date, str, Decimal, Decimal]] = []  # pk, day, quote, old, new
        for day, rates in days.items():
            for quote, rate in rates.items():
                previous = stored.get((day, quote))
                if previous is not None and previous[1] == rate:
                    unchanged += 1
                    continue
                if previous is not None:
                    corrections.append((previous[0], day, quote, previous[1], rate))
                to_write.append(FxRate(date=day, base=PIVOT, quote=quote, rate=rate, source=FxRate.Source.ECB))
        # An upsert rather than a plain insert, so two imports of the same file racing each other
        # both succeed instead of one failing on the unique constraint; it also applies corrections.
        FxRate.objects.bulk_create(
            to_write,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["date", "base", "quote", "source"],
            update_fields=["rate"],
        )
        written = len(to_write)
        for pk, day, quote, old_rate, new_rate in corrections:
            audit_record(
                action="fx_rate.ecb_correct",
                obj=FxRate(pk=pk, date=day, base=PIVOT, quote=quote, rate=new_rate, source=FxRate.Source.ECB),
                before=_audit_values(day, PIVOT, quote, old_rate),
                after=_audit_values(day, PIVOT, quote, new_rate),
            )
    return ImportResult(days=len(days), rates_written=written, rates_unchanged=unchanged, last_day=last)


def _ecb_parse(xml: bytes | str) -> dict[date, dict[str, Decimal]]:
    """Day -> quote currency -> rate (1 EUR = rate quote), or ``FxImportError`` naming the problem."""
    root = _xml_root(xml)
    if root.tag != _ENVELOPE:
        raise _rejected(
            f"the root element is <{_local(root.tag)}> in namespace {_namespace(root.tag) or '(none)'}, not "
            f"<gesmes:Envelope> in {GESMES_NS}, so this is not an ECB reference-rate file"
        )
    outer = root.find(_CUBE)
    if outer is None:
        raise _rejected(f"the envelope has no <Cube> element in namespace {EUROFXREF_NS}")
    days: dict[date, dict[str, Decimal]] = {}
    known: dict[str, str] = {}  # raw code -> validated code: the full history repeats ~40 codes 200 000 times
    for day_cube in outer.findall(_CUBE):
        day = _ecb_day(day_cube.get("time"))
        if day in days:
            raise _rejected(f"day {day} appears twice")
        rates: dict[str, Decimal] = {}
        for rate_cube in day_cube.findall(_CUBE):
            raw_currency, raw_rate = rate_cube.get("currency"), rate_cube.get("rate")
            if raw_currency is None or raw_rate is None:
                raise _rejected(f"day {day}: a rate <Cube> lacks its currency or rate attribute")
            quote = known.get(raw_currency) or known.setdefault(raw_currency, _ecb_currency(day, raw_currency))
            if quote in rates:
                raise _rejected(f"day {day}: {quote} appears twice")
            rates[quote] = _ecb_rate(day, quote, raw_rate)
        if not rates:
            raise _rejected(f"day {day} has no rates")
        days[day] = rates
    if not days:
        raise _rejected("the file contains no day of rates (no <Cube time='...'> element)")
    return days


class _NoDoctypeTreeBuilder(ET.TreeBuilder):
    # ECB files never carry a DOCTYPE; refusing one rules out entity expansion and external entities.
    def doctype(self, name: str, pubid: str, system: str) -> None:
        raise _rejected("it contains a DOCTYPE declaration, which ECB files never do")


def _xml_root(xml: bytes | str) -> ET.Element:
    if not isinstance(xml, bytes | str):
        raise TypeError(f"Pass the file's content as bytes or str, not {type(xml).__name__}.")
    parser = ET.XMLParser(target=_NoDoctypeTreeBuilder())  # noqa: S314 - DOCTYPE refused, see the tree builder
    try:
        parser.feed(xml)
        root: ET.Element = parser.close()
    except ET.ParseError as exc:
        raise _rejected(f"it is not well-formed XML ({exc})") from None
    return root


def _ecb_day(raw: str | None) -> date:
    if raw is None:
        raise _rejected("a day <Cube> has no time attribute")
    text = raw.strip()
    try:
        if not _ISO_DAY.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise _rejected(f"day {raw!r} is not a date (the ECB writes days as YYYY-MM-DD)") from None


def _ecb_currency(day: date, raw: str) -> str:
    try:
        quote = currency_code(raw)
    except CurrencyError as exc:
        raise _rejected(f"day {day}: currency {raw!r} is not usable: {exc}") from None
    if quote == PIVOT:
        raise _rejected(f"day {day}: EUR is quoted against itself; ECB rates are per 1 EUR")
    return quote


def _ecb_rate(day: date, quote: str, raw: str) -> Decimal:
    try:
        # From the string, never through float: "1.0512" must stay exactly 1.0512.
        rate = Decimal(raw.strip())
    except InvalidOperation:
        rate = Decimal("NaN")
    if not rate.is_finite():
        raise _rejected(f"day {day}: the {quote} rate {raw!r} is not a number")
    if rate <= 0:
        raise _rejected(f"day {day}: the {quote} rate {raw} is not positive; exchange rates are above zero")
    problem = _rate_storage_problem(rate)
    if problem:
        raise _rejected(f"day {day}: the {quote} rate {raw} {problem}")
    return rate


def _rejected(problem: str) -> FxImportError:
    return FxImportError(
        f"ECB rate file rejected, nothing imported: {problem}. "
        "Download the file again from the ECB (eurofxref-daily.xml or eurofxref-hist-90d.xml), "
        "or correct it, and import it again."
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _rate_storage_problem(rate: Decimal) -> str:
    """Why ``rate`` cannot be stored exactly in ``FxRate.rate``, or an empty string."""
    exponent = rate.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite numbers only
    if exponent < -RATE_DECIMAL_PLACES:
        return f"has more than {RATE_DECIMAL_PLACES} decimal places, which is all a stored rate keeps"
    if rate.adjusted() >= _RATE_INTEGER_DIGITS:
        return f"has more than {_RATE_INTEGER_DIGITS} digits before the decimal point"
    return ""


# --- Manual rates -------------------------------------------------------------------------------


@transaction.atomic
def fx_rate_set_manual(
    *, day: date, base: str, quote: str, rate: Decimal | str | int, actor: User | None = None
) -> FxRate:
    """Set the operator's rate 1 ``base`` = ``rate`` ``quote`` for ``day`` (created, or updated if set).

    A manual rate wins over the ECB rate of the same day (billing.fx.selectors.fx_rate). Audited.
    """
    if isinstance(day, datetime) or not isinstance(day, date):
        raise FxError(f"{day!r} is not a day: give the date the rate applies to, e.g. 2026-11-27.")
    try:
        base_code, quote_code = currency_code(base), currency_code(quote)
        value = to_decimal(rate)
    except (CurrencyError, AmountError) as exc:
        raise FxError(str(exc)) from None
    if base_code == quote_code:
        raise FxError(f"A rate needs two different currencies; 1 {base_code} is always 1 {base_code}.")
    if value <= 0:
        raise FxError(f"The rate {value} is not positive: enter how many {quote_code} one {base_code} buys.")
    problem = _rate_storage_problem(value)
    if problem:
        raise FxError(f"The rate {value} {problem}: round it to at most {RATE_DECIMAL_PLACES} decimal places.")
    existing = (
        FxRate.objects.select_for_update()
        .filter(date=day, base=base_code, quote=quote_code, source=FxRate.Source.MANUAL)
        .first()
    )
    summary = _audit_values(day, base_code, quote_code, value)
    if existing is None:
        row = FxRate.objects.create(
            date=day,
            base=base_code,
            quote=quote_code,
            rate=value,
            source=FxRate.Source.MANUAL,
            created_by=actor if actor is not None and actor.is_authenticated else None,
        )
        audit_record(action="fx_rate.set_manual", actor=actor, obj=row, after=summary)
        return row
    if existing.rate == value:
        return existing
    before = _audit_values(day, base_code, quote_code, existing.rate)
    existing.rate = value
    existing.save(update_fields=["rate"])
    audit_record(action="fx_rate.set_manual", actor=actor, obj=existing, before=before, after=summary)
    return existing


@transaction.atomic
def fx_rate_delete_manual(*, fx_rate: FxRate, actor: User | None = None) -> None:
    """Remove an operator's rate (audited). ECB rates are never deleted: they are the published record."""
    if fx_rate.source != FxRate.Source.MANUAL:
        raise FxError(
            f"{fx_rate} is an ECB reference rate and cannot be deleted; "
            "enter a manual rate for that day to override it."
        )
    audit_record(
        action="fx_rate.delete_manual",
        actor=actor,
        obj=fx_rate,
        before=_audit_values(fx_rate.date, fx_rate.base, fx_rate.quote, fx_rate.rate),
    )
    fx_rate.delete()


def _audit_values(day: date, base: str, quote: str, rate: Decimal) -> dict[str, Any]:
    # The rate as invoices show it (1.0498, not storage's 1.049800000000).
    return {"date": day.isoformat(), "pair": f"{base}/{quote}", "rate": str(tidy_rate(rate))}
