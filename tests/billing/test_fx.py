"""FX rates: the ECB importer, manual rates, lookups (direct, inverse, cross, look-back), conversion,
the import command and task, and the admin.

Expected rates are written out as literals, each computed by hand from the test files' values with
28 significant digits (decimal.Context(prec=28), ROUND_HALF_EVEN), the precision fx_rate promises.
"""

from __future__ import annotations

import decimal
from datetime import date, datetime, timedelta
from decimal import Decimal
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import RequestFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.money import AmountError, CurrencyError
from aggregator.tenancy.models import AuditEvent, User
from billing.fx.admin import FxRateAdmin, FxRateForm
from billing.fx.models import FxRate
from billing.fx.selectors import LOOKBACK_DAYS, FxError, FxQuote, FxRateMissing, convert, fx_rate, fx_rate_latest_day
from billing.fx.services import FxImportError, ImportResult, fx_rate_set_manual, fx_rates_import_ecb
from billing.fx.tasks import fx_rates_import_file
from tests.factories import UserFactory

DATA = Path(__file__).parent / "data"
DAILY = DATA / "eurofxref-daily.xml"
HIST_90D = DATA / "eurofxref-hist-90d.xml"
FRIDAY = date(2026, 11, 27)  # the daily file's day and the newest day of the 90-day file
THURSDAY = date(2026, 11, 26)
MONDAY = date(2026, 11, 23)  # the oldest day of the 90-day file


def _ecb(cubes: str) -> str:
    """An ECB envelope around ``cubes`` (the day <Cube> elements)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
        'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">\n'
        "<gesmes:subject>Reference rates</gesmes:subject>\n"
        "<gesmes:Sender><gesmes:name>European Central Bank</gesmes:name></gesmes:Sender>\n"
        f"<Cube>{cubes}</Cube>\n"
        "</gesmes:Envelope>\n"
    )


def _day(day: str, **rates: str) -> str:
    return f"<Cube time='{day}'>" + "".join(f"<Cube currency='{c}' rate='{r}'/>" for c, r in rates.items()) + "</Cube>"


def _snapshot() -> list[tuple[Any, ...]]:
    return list(FxRate.objects.order_by("pk").values_list("pk", "date", "base", "quote", "rate", "source"))


@pytest.fixture
def hist_90d(db: Any) -> ImportResult:
    return fx_rates_import_ecb(xml=HIST_90D.read_bytes())


# --- Import -------------------------------------------------------------------------------------


def test_import_of_the_daily_file_stores_every_rate_against_eur(db: Any) -> None:
    result = fx_rates_import_ecb(xml=DAILY.read_bytes())

    assert result == ImportResult(days=1, rates_written=29, rates_unchanged=0, last_day=FRIDAY)
    assert FxRate.objects.count() == 29
    assert set(FxRate.objects.values_list("date", "base", "source").distinct()) == {(FRIDAY, "EUR", "ecb")}
    rates = dict(FxRate.objects.values_list("quote", "rate"))
    assert rates["USD"] == Decimal("1.0512")
    assert rates["JPY"] == Decimal("160.35")
    assert rates["IDR"] == Decimal("16789.45")
    assert {"GBP", "CNY", "CHF", "ISK", "KRW", "ZAR"} <= set(rates)


def test_import_of_the_90_day_file_stores_every_day(db: Any) -> None:
    result = fx_rates_import_ecb(xml=HIST_90D.read_bytes())

    assert result == ImportResult(days=5, rates_written=25, rates_unchanged=0, last_day=FRIDAY)
    assert sorted(set(FxRate.objects.values_list("date", flat=True))) == [MONDAY + timedelta(days=n) for n in range(5)]
    assert FxRate.objects.get(date=THURSDAY, quote="CNY").rate == Decimal("7.6011")
    assert fx_rate_latest_day() == FRIDAY


def test_import_accepts_text_as_well_as_bytes(db: Any) -> None:
    result = fx_rates_import_ecb(xml=DAILY.read_text(encoding="utf-8"))

    assert (result.days, result.rates_written) == (1, 29)


def test_reimporting_a_file_writes_nothing(hist_90d: ImportResult) -> None:
    before = _snapshot()

    again = fx_rates_import_ecb(xml=HIST_90D.read_bytes())

    assert again == ImportResult(days=5, rates_written=0, rates_unchanged=25, last_day=FRIDAY)
    assert _snapshot() == before
    assert not AuditEvent.objects.filter(action__startswith="fx_rate.").exists()


def test_daily_file_after_the_90_day_file_adds_only_the_new_currencies(hist_90d: ImportResult) -> None:
    result = fx_rates_import_ecb(xml=DAILY.read_bytes())

    # Friday's USD, JPY, GBP, CNY and CHF are in both files with the same values.
    assert result == ImportResult(days=1, rates_written=24, rates_unchanged=5, last_day=FRIDAY)
    assert FxRate.objects.count() == 25 + 24


def test_a_corrected_value_updates_that_one_row_and_is_audited(hist_90d: ImportResult) -> None:
    original = FxRate.objects.get(date=THURSDAY, quote="USD")
    corrected = HIST_90D.read_text().replace(
        '<Cube currency="USD" rate="1.0498"/>', '<Cube currency="USD" rate="1.0499"/>'
    )
    assert corrected != HIST_90D.read_text()

    result = fx_rates_import_ecb(xml=corrected)

    assert result == ImportResult(days=5, rates_written=1, rates_unchanged=24, last_day=FRIDAY)
    row = FxRate.objects.get(date=THURSDAY, quote="USD")
    assert (row.pk, row.rate) == (original.pk, Decimal("1.0499"))
    assert FxRate.objects.count() == 25
    event = AuditEvent.objects.get(action="fx_rate.ecb_correct")
    assert (event.object_type, event.object_id) == ("billing.FxRate", str(row.pk))
    assert (event.before["rate"], event.after["rate"]) == ("1.0498", "1.0499")


BAD_FILES = [
    pytest.param(b"Rates: USD 1.0512", "it is not well-formed XML", id="not-xml"),
    pytest.param(_ecb(_day("2026-11-27", USD="1.0512"))[:-40], "it is not well-formed XML", id="truncated"),
    pytest.param(
        "<html><body>Service unavailable</body></html>", "the root element is <html> in namespace (none)", id="html"
    ),
    pytest.param(
        _ecb("").replace("gesmes:Envelope", "Envelope"),
        "the root element is <Envelope> in namespace http://www.ecb.int/vocabulary/2002-08-01/eurofxref",
        id="root-in-wrong-namespace",
    ),
    pytest.param(
        _ecb("").replace("<Cube></Cube>", ""),
        "the envelope has no <Cube> element in namespace http://www.ecb.int/vocabulary/2002-08-01/eurofxref",
        id="no-cube",
    ),
    pytest.param(_ecb(""), "the file contains no day of rates", id="no-days"),
    pytest.param(_ecb("<Cube time='2026-11-27'></Cube>"), "day 2026-11-27 has no rates", id="empty-day"),
    pytest.param(
        _ecb("<Cube><Cube currency='USD' rate='1.0512'/></Cube>"), "a day <Cube> has no time attribute", id="no-time"
    ),
    pytest.param(_ecb(_day("2026-11-31", USD="1.0512")), "day '2026-11-31' is not a date", id="impossible-date"),
    pytest.param(_ecb(_day("27/11/2026", USD="1.0512")), "day '27/11/2026' is not a date", id="date-format"),
    pytest.param(_ecb(_day("20261127", USD="1.0512")), "day '20261127' is not a date", id="compact-date"),
    pytest.param(
        _ecb(_day("2026-11-27", USD="1.0512") + _day("2026-11-27", USD="1.0512")),
        "day 2026-11-27 appears twice",
        id="duplicate-day",
    ),
    pytest.param(
        _ecb(_day("2026-11-27", USD="1,0512")), "day 2026-11-27: the USD rate '1,0512' is not a number", id="comma"
    ),
    pytest.param(_ecb(_day("2026-11-27", JPY="")), "day 2026-11-27: the JPY rate '' is not a number", id="empty-rate"),
    pytest.param(_ecb(_day("2026-11-27", GBP="NaN")), "day 2026-11-27: the GBP rate 'NaN' is not a number", id="nan"),
    pytest.param(
        _ecb(_day("2026-11-27", CNY="Infinity")), "day 2026-11-27: the CNY rate 'Infinity' is not a number", id="inf"
    ),
    pytest.param(_ecb(_day("2026-11-27", USD="0")), "day 2026-11-27: the USD rate 0 is not positive", id="zero"),
    pytest.param(
        _ecb(_day("2026-11-27", USD="-1.0512")), "day 2026-11-27: the USD rate -1.0512 is not positive", id="negative"
    ),
    pytest.param(
        _ecb(_day("2026-11-27", USD="1.0000000000001")),
        "day 2026-11-27: the USD rate 1.0000000000001 has more than 12 decimal places",
        id="too-many-decimals",
    ),
    pytest.param(
        _ecb(_day("2026-11-27", IDR="1234567890123")),
        "day 2026-11-27: the IDR rate 1234567890123 has more than 12 digits before the decimal point",
        id="too-large",
    ),
    pytest.param(
        _ecb(_day("2026-11-27", XYZ="1.5")),
        "day 2026-11-27: currency 'XYZ' is not usable: XYZ is not an ISO 4217 currency",
        id="unknown-currency",
    ),
    pytest.param(
        _ecb(_day("2026-11-27", US="1.5")), "day 2026-11-27: currency 'US' is not usable", id="malformed-currency"
    ),
    pytest.param(
        _ecb(_day("2026-11-27", XAU="0.0004")),
        "day 2026-11-27: currency 'XAU' is not usable: XAU cannot be used for billing",
        id="not-money",
    ),
    pytest.param(
        _ecb(_day("2026-11-27", EUR="1")), "day 2026-11-27: EUR is quoted against itself", id="eur-against-eur"
    ),
    pytest.param(
        _ecb("<Cube time='2026-11-27'><Cube currency='USD' rate='1.05'/><Cube currency='usd' rate='1.05'/></Cube>"),
        "day 2026-11-27: USD appears twice",
        id="duplicate-currency",
    ),
    pytest.param(
        _ecb("<Cube time='2026-11-27'><Cube currency='USD'/></Cube>"),
        "day 2026-11-27: a rate <Cube> lacks its currency or rate attribute",
        id="missing-rate",
    ),
    pytest.param(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        "<lolz>&lol2;</lolz>",
        "it contains a DOCTYPE declaration",
        id="doctype-entities",
    ),
]


@pytest.mark.parametrize(("xml", "problem"), BAD_FILES)
def test_a_malformed_file_is_rejected_with_its_problem_and_writes_nothing(
    hist_90d: ImportResult, xml: str | bytes, problem: str
) -> None:
    before = _snapshot()

    with pytest.raises(FxImportError) as excinfo:
        fx_rates_import_ecb(xml=xml)

    message = str(excinfo.value)
    assert message.startswith(f"ECB rate file rejected, nothing imported: {problem}")
    assert "import it again" in message
    assert _snapshot() == before


def test_a_bad_day_late_in_the_file_stops_the_good_days_before_it_too(hist_90d: ImportResult) -> None:
    before = _snapshot()
    # A new currency and a corrected value on Friday, then a broken Thursday.
    xml = _ecb(_day("2026-11-27", USD="1.0600", SEK="11.2845") + _day("2026-11-26", USD="n/a"))

    with pytest.raises(FxImportError, match=r"day 2026-11-26: the USD rate 'n/a' is not a number"):
        fx_rates_import_ecb(xml=xml)

    assert _snapshot() == before


# --- Lookups ------------------------------------------------------------------------------------


def test_a_currency_against_itself_is_one_without_a_query(db: Any, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        quote = fx_rate(base="jpy", quote="JPY", day=FRIDAY)

    assert quote == FxQuote(rate=Decimal(1), day=FRIDAY, source="identity", base="JPY", quote="JPY", method="identity")


def test_direct_rate_is_the_published_value(hist_90d: ImportResult) -> None:
    quote = fx_rate(base="EUR", quote="USD", day=THURSDAY)

    assert quote == FxQuote(rate=Decimal("1.0498"), day=THURSDAY, source="ecb", base="EUR", quote="USD")
    assert str(quote.rate) == "1.0498"  # storage's trailing zeros are not shown on invoices


def test_inverse_rate_is_one_over_the_published_value_to_28_digits(hist_90d: ImportResult) -> None:
    quote = fx_rate(base="USD", quote="EUR", day=FRIDAY)

    # 1 / 1.0512
    assert quote.rate == Decimal("0.9512937595129375951293759513")
    assert (quote.day, quote.source, quote.method) == (FRIDAY, "ecb", "inverse")

    # 1 / 160.35: a JPY rate is small, and still carries 28 significant digits.
    assert fx_rate(base="JPY", quote="EUR", day=FRIDAY).rate == Decimal("0.006236357966947302775179295292")


def test_cross_rate_goes_through_eur_on_the_same_day(hist_90d: ImportResult) -> None:
    usd_jpy = fx_rate(base="USD", quote="JPY", day=FRIDAY)
    gbp_cny = fx_rate(base="GBP", quote="CNY", day=THURSDAY)

    # 160.35 / 1.0512
    assert usd_jpy == FxQuote(
        rate=Decimal("152.5399543378995433789954338"), day=FRIDAY, source="ecb", base="USD", quote="JPY", method="cross"
    )
    # 7.6011 / 0.8315 on Thursday
    assert gbp_cny.rate == Decimal("9.141431148526758869512928443")
    assert gbp_cny.rate == decimal.Context(prec=28).divide(Decimal("7.6011"), Decimal("0.8315"))
    # The other way round: 1.0512 / 160.35
    assert fx_rate(base="JPY", quote="USD", day=FRIDAY).rate == Decimal("0.006555659494855004677268475210")


def test_a_lookup_costs_one_query(hist_90d: ImportResult, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        fx_rate(base="USD", quote="JPY", day=date(2026, 11, 29))
    with django_assert_num_queries(1):
        convert(amount=Decimal("10"), from_currency="CHF", to_currency="GBP", day=FRIDAY)


def test_a_weekend_day_uses_fridays_rate(hist_90d: ImportResult) -> None:
    saturday, sunday = date(2026, 11, 28), date(2026, 11, 29)

    for day in (saturday, sunday):
        quote = fx_rate(base="USD", quote="JPY", day=day)
        assert (quote.day, quote.rate) == (FRIDAY, Decimal("152.5399543378995433789954338"))


def test_the_look_back_stops_after_seven_days(hist_90d: ImportResult) -> None:
    last_covered = FRIDAY + timedelta(days=LOOKBACK_DAYS)

    assert fx_rate(base="EUR", quote="GBP", day=last_covered).day == FRIDAY
    with pytest.raises(FxRateMissing) as excinfo:
        fx_rate(base="EUR", quote="GBP", day=last_covered + timedelta(days=1))

    assert str(excinfo.value).startswith(
        "No EUR to GBP exchange rate for 2026-12-05 (nor on any day back to 2026-11-28)."
    )


def test_a_missing_pair_says_which_and_how_to_fix_it(hist_90d: ImportResult) -> None:
    with pytest.raises(FxRateMissing) as excinfo:
        fx_rate(base="usd", quote="KWD", day=FRIDAY)

    error = excinfo.value
    assert (error.base, error.quote, error.day) == ("USD", "KWD", FRIDAY)
    assert str(error) == (
        "No USD to KWD exchange rate for 2026-11-27 (nor on any day back to 2026-11-20). "
        "Import the ECB reference rates covering 2026-11-27 (python manage.py import_fx_rates --file "
        "eurofxref-hist-90d.xml) or enter a manual USD/KWD rate for that day in the admin (Billing > FX rates)."
    )
    assert isinstance(error, FxError) and isinstance(error, LookupError)


def test_a_day_before_the_first_import_has_no_rate(hist_90d: ImportResult) -> None:
    with pytest.raises(FxRateMissing, match="No EUR to USD exchange rate for 2026-11-22"):
        fx_rate(base="EUR", quote="USD", day=MONDAY - timedelta(days=1))


def test_a_lookup_wants_a_date_not_a_datetime(hist_90d: ImportResult) -> None:
    with pytest.raises(TypeError, match="is not a date"):
        fx_rate(base="EUR", quote="USD", day=datetime(2026, 11, 27, 12, 0))  # noqa: DTZ001
    with pytest.raises(CurrencyError):
        fx_rate(base="EURO", quote="USD", day=FRIDAY)


def test_a_manual_rate_wins_over_the_ecb_rate_of_the_same_day(hist_90d: ImportResult) -> None:
    fx_rate_set_manual(day=FRIDAY, base="EUR", quote="USD", rate=Decimal("1.06"))

    direct = fx_rate(base="EUR", quote="USD", day=FRIDAY)
    cross = fx_rate(base="USD", quote="JPY", day=FRIDAY)

    assert (direct.rate, direct.source) == (Decimal("1.06"), "manual")
    # 160.35 (ECB) / 1.06 (manual): a cross rate with a manual leg is reported as manual.
    assert cross == FxQuote(
        rate=Decimal("151.2735849056603773584905660"),
        day=FRIDAY,
        source="manual",
        base="USD",
        quote="JPY",
        method="cross",
    )
    # Other days keep the ECB rate.
    assert fx_rate(base="EUR", quote="USD", day=THURSDAY).source == "ecb"


def test_a_manual_pair_wins_over_a_cross_rate_and_serves_its_inverse(hist_90d: ImportResult) -> None:
    fx_rate_set_manual(day=FRIDAY, base="USD", quote="JPY", rate="150")

    assert fx_rate(base="USD", quote="JPY", day=FRIDAY) == FxQuote(
        rate=Decimal("150"), day=FRIDAY, source="manual", base="USD", quote="JPY", method="direct"
    )
    # 1 / 150
    assert fx_rate(base="JPY", quote="USD", day=FRIDAY).rate == Decimal("0.006666666666666666666666666667")


def test_the_most_recent_day_wins_over_an_older_manual_rate(hist_90d: ImportResult) -> None:
    fx_rate_set_manual(day=THURSDAY, base="EUR", quote="USD", rate="2")

    quote = fx_rate(base="EUR", quote="USD", day=FRIDAY)

    assert (quote.day, quote.rate, quote.source) == (FRIDAY, Decimal("1.0512"), "ecb")


def test_a_manual_rate_alone_serves_a_pair_the_ecb_does_not_publish(db: Any) -> None:
    fx_rate_set_manual(day=FRIDAY, base="USD", quote="KWD", rate="0.30712")

    quote = fx_rate(base="KWD", quote="USD", day=date(2026, 11, 30))

    # 1 / 0.30712
    assert quote == FxQuote(
        rate=Decimal("3.256056264652253190935139359"),
        day=FRIDAY,
        source="manual",
        base="KWD",
        quote="USD",
        method="inverse",
    )


# --- Conversion ---------------------------------------------------------------------------------


def test_convert_keeps_full_precision(hist_90d: ImportResult) -> None:
    amount, quote = convert(amount=Decimal("123.456789"), from_currency="USD", to_currency="JPY", day=FRIDAY)

    # 123.456789 x 152.5399543378995433789954338, exactly: 36 significant digits, no rounding.
    assert amount == Decimal("18832.0929567636986301369863026100682")
    assert quote.rate == Decimal("152.5399543378995433789954338")


def test_convert_of_a_published_rate_is_exact(hist_90d: ImportResult) -> None:
    amount, quote = convert(amount=Decimal("100.00"), from_currency="EUR", to_currency="USD", day=FRIDAY)

    assert amount == Decimal("105.120000")
    assert (quote.rate, quote.day, quote.source) == (Decimal("1.0512"), FRIDAY, "ecb")


def test_convert_to_the_same_currency_returns_the_amount(db: Any) -> None:
    amount, quote = convert(amount=Decimal("0.0000012345"), from_currency="USD", to_currency="USD", day=FRIDAY)

    assert (amount, quote.rate) == (Decimal("0.0000012345"), Decimal(1))


def test_convert_refuses_floats(hist_90d: ImportResult) -> None:
    with pytest.raises(AmountError, match="is a float"):
        convert(amount=1.5, from_currency="EUR", to_currency="USD", day=FRIDAY)  # type: ignore[arg-type]


# Derived rates are rounded once to 28 significant digits (relative error at most 5e-28 each), and
# the products are exact, so A -> B -> A is off by at most about 1e-27 relative. Exactly equal is
# impossible in general (1 / 3 has no finite decimal); 1e-26 keeps a margin over the bound and is
# still 10^6 times tighter than the 1e-20 that would be harmless on any invoice.
ROUND_TRIP_TOLERANCE = Decimal("1e-26")
ECB_LIKE_RATES = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("99999"), places=6).filter(lambda d: d > 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pair=st.sampled_from([("USD", "JPY"), ("GBP", "CNY"), ("EUR", "CHF"), ("INR", "EUR")]),
    first=ECB_LIKE_RATES,
    second=ECB_LIKE_RATES,
    amount=st.decimals(min_value=Decimal("0.0000000001"), max_value=Decimal("1e12"), places=10),
)
def test_converting_there_and_back_returns_the_amount(
    db: Any, pair: tuple[str, str], first: Decimal, second: Decimal, amount: Decimal
) -> None:
    a, b = pair
    with transaction.atomic():
        for quote, rate in zip(pair, (first, second), strict=True):
            if quote != "EUR":
                FxRate.objects.create(date=FRIDAY, base="EUR", quote=quote, rate=rate, source=FxRate.Source.ECB)

        there, _ = convert(amount=amount, from_currency=a, to_currency=b, day=FRIDAY)
        back, _ = convert(amount=there, from_currency=b, to_currency=a, day=FRIDAY)

        error = decimal.Context(prec=60).divide(abs(back - amount), amount)
        assert error <= ROUND_TRIP_TOLERANCE, (amount, there, back)
        transaction.set_rollback(True)


# --- Manual rates -------------------------------------------------------------------------------


def test_setting_a_manual_rate_is_audited_and_records_who(db: Any) -> None:
    operator = UserFactory(email="ops@operator.test", is_staff=True)

    row = fx_rate_set_manual(day=FRIDAY, base="usd", quote="cny", rate="7.2417", actor=operator)

    assert (row.base, row.quote, row.rate, row.source, row.created_by) == (
        "USD", "CNY", Decimal("7.2417"), "manual", operator
    )  # fmt: skip
    event = AuditEvent.objects.get(action="fx_rate.set_manual")
    assert (event.actor, event.object_id, event.before) == (operator, str(row.pk), None)
    assert event.after == {"date": "2026-11-27", "pair": "USD/CNY", "rate": "7.2417"}


def test_changing_a_manual_rate_updates_it_with_before_and_after(db: Any) -> None:
    operator = UserFactory(email="ops@operator.test", is_staff=True)
    first = fx_rate_set_manual(day=FRIDAY, base="USD", quote="CNY", rate="7.2417", actor=operator)

    second = fx_rate_set_manual(day=FRIDAY, base="USD", quote="CNY", rate="7.25")
    fx_rate_set_manual(day=FRIDAY, base="USD", quote="CNY", rate="7.2500")  # same value: nothing to record

    assert second.pk == first.pk
    assert FxRate.objects.get().rate == Decimal("7.25")
    assert FxRate.objects.get().created_by == operator
    change = AuditEvent.objects.filter(action="fx_rate.set_manual").order_by("id").last()
    assert change is not None
    assert (change.before["rate"], change.after["rate"]) == ("7.2417", "7.25")
    assert AuditEvent.objects.filter(action="fx_rate.set_manual").count() == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 7.25}, "is a float"),
        ({"rate": "seven"}, "is not a number"),
        ({"rate": "0"}, "The rate 0 is not positive"),
        ({"rate": "-7.25"}, "is not positive"),
        ({"rate": "7.0000000000001"}, "round it to at most 12 decimal places"),
        ({"quote": "USD"}, "two different currencies"),
        ({"quote": "YUAN"}, "three-letter ISO 4217"),
        ({"day": "2026-11-27"}, "is not a day"),
        ({"day": datetime(2026, 11, 27)}, "is not a day"),  # noqa: DTZ001
    ],
)
def test_a_manual_rate_refuses_bad_input(db: Any, kwargs: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"day": FRIDAY, "base": "USD", "quote": "CNY", "rate": "7.25", **kwargs}

    with pytest.raises(FxError, match=message):
        fx_rate_set_manual(**values)

    assert not FxRate.objects.exists()
    assert not AuditEvent.objects.exists()


# --- Command and task ---------------------------------------------------------------------------


def test_the_command_imports_a_file_and_prints_a_summary(db: Any) -> None:
    out = StringIO()
    call_command("import_fx_rates", file=str(HIST_90D), stdout=out)
    call_command("import_fx_rates", file=str(DAILY), stdout=out)

    assert out.getvalue().splitlines() == [
        "Imported 5 days: 25 rates written, 0 unchanged",
        "Imported 1 days: 24 rates written, 5 unchanged",
    ]


def test_the_command_reads_standard_input(db: Any) -> None:
    out = StringIO()
    call_command("import_fx_rates", file="-", stdin=BytesIO(DAILY.read_bytes()), stdout=out)

    assert out.getvalue().strip() == "Imported 1 days: 29 rates written, 0 unchanged"


def test_the_command_fails_cleanly_on_a_bad_file(db: Any, tmp_path: Path) -> None:
    bad = tmp_path / "eurofxref-daily.xml"
    bad.write_text(_ecb(_day("2026-11-27", USD="1.0512", JPY="-160")))

    with pytest.raises(CommandError, match=r"nothing imported: day 2026-11-27: the JPY rate -160 is not positive"):
        call_command("import_fx_rates", file=str(bad), stdout=StringIO())
    with pytest.raises(CommandError, match=r"Cannot read .*missing\.xml: No such file or directory"):
        call_command("import_fx_rates", file=str(tmp_path / "missing.xml"), stdout=StringIO())

    assert not FxRate.objects.exists()


def test_the_task_imports_the_dropped_file(db: Any) -> None:
    summary = fx_rates_import_file.delay(str(HIST_90D)).get()

    assert summary == {
        "file": str(HIST_90D),
        "days": 5,
        "rates_written": 25,
        "rates_unchanged": 0,
        "last_day": "2026-11-27",
    }
    assert FxRate.objects.count() == 25


def test_the_task_defaults_to_the_configured_file_and_skips_a_missing_one(
    db: Any, tmp_path: Path, settings: Any
) -> None:
    settings.FX_ECB_FILE = str(tmp_path / "eurofxref-daily.xml")

    assert fx_rates_import_file() == {"file": settings.FX_ECB_FILE, "skipped": "file not found"}

    (tmp_path / "eurofxref-daily.xml").write_bytes(DAILY.read_bytes())
    assert fx_rates_import_file()["rates_written"] == 29


def test_the_task_fails_on_a_malformed_file(db: Any, tmp_path: Path) -> None:
    bad = tmp_path / "eurofxref-daily.xml"
    bad.write_text("<html>Bad gateway</html>")

    with pytest.raises(FxImportError, match="the root element is <html>"):
        fx_rates_import_file(str(bad))


# --- Admin --------------------------------------------------------------------------------------


@pytest.fixture
def operator(db: Any) -> User:
    return UserFactory(email="ops@operator.test", is_staff=True, is_superuser=True)


@pytest.fixture
def rate_admin() -> FxRateAdmin:
    return FxRateAdmin(FxRate, admin.site)


def _request(user: User) -> Any:
    request = RequestFactory().post("/admin/billing/fxrate/add/")
    request.user = user
    return request


def test_the_admin_lists_rates_and_is_registered(rate_admin: FxRateAdmin) -> None:
    assert admin.site.is_registered(FxRate)
    assert list(rate_admin.list_display[:5]) == ["date", "base", "quote", "rate", "source"]
    assert "source" in rate_admin.list_filter
    assert rate_admin.search_fields


def test_the_admin_adds_manual_rates_only(operator: User, rate_admin: FxRateAdmin) -> None:
    request = _request(operator)
    form_class = rate_admin.get_form(request)
    form = form_class(data={"date": "2026-11-27", "base": "usd", "quote": "jpy", "rate": "151.25"})
    assert form.is_valid(), form.errors
    obj = form.save(commit=False)

    rate_admin.save_model(request, obj, form, change=False)

    row = FxRate.objects.get()
    assert (obj.pk, row.base, row.quote, row.rate, row.source, row.created_by) == (
        row.pk, "USD", "JPY", Decimal("151.25"), "manual", operator
    )  # fmt: skip
    assert AuditEvent.objects.filter(action="fx_rate.set_manual", actor=operator).count() == 1
    assert rate_admin.get_fields(request) == ("date", "base", "quote", "rate")


def test_the_admin_form_refuses_a_second_manual_rate_for_the_same_day_and_pair(operator: User) -> None:
    fx_rate_set_manual(day=FRIDAY, base="USD", quote="JPY", rate="151.25")

    form = FxRateForm(data={"date": "2026-11-27", "base": "USD", "quote": "JPY", "rate": "152"})

    assert not form.is_valid()
    assert "exists already" in str(form.errors)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rate": "0"}, "must be greater than zero"),
        ({"quote": "USD"}, "two different currencies"),
        ({"quote": "ZZZ"}, "not an ISO 4217 currency"),
        ({"rate": "1.0000000000001"}, "12 decimal places"),
    ],
)
def test_the_admin_form_explains_bad_input(operator: User, data: dict[str, str], message: str) -> None:
    form = FxRateForm(data={"date": "2026-11-27", "base": "USD", "quote": "JPY", "rate": "151.25", **data})

    assert not form.is_valid()
    assert message in str(form.errors)


def test_the_admin_keeps_ecb_rows_read_only(hist_90d: ImportResult, operator: User, rate_admin: FxRateAdmin) -> None:
    request = _request(operator)
    ecb_row = FxRate.objects.filter(source="ecb").first()
    manual_row = fx_rate_set_manual(day=FRIDAY, base="EUR", quote="USD", rate="1.06")

    assert not rate_admin.has_change_permission(request, ecb_row)
    assert not rate_admin.has_delete_permission(request, ecb_row)
    assert rate_admin.has_view_permission(request, ecb_row)
    assert rate_admin.has_change_permission(request, manual_row)
    assert rate_admin.has_add_permission(request)
    assert set(rate_admin.get_readonly_fields(request, manual_row)) == {
        "date", "base", "quote", "source", "created_by", "created_at"
    }  # fmt: skip


def test_the_admin_changes_and_deletes_manual_rates_with_an_audit_row(operator: User, rate_admin: FxRateAdmin) -> None:
    request = _request(operator)
    row = fx_rate_set_manual(day=FRIDAY, base="EUR", quote="USD", rate="1.06")
    row.rate = Decimal("1.07")

    rate_admin.save_model(request, row, form=None, change=True)
    assert FxRate.objects.get().rate == Decimal("1.07")

    rate_admin.delete_queryset(request, FxRate.objects.all())
    assert not FxRate.objects.exists()
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "fx_rate.set_manual", "fx_rate.set_manual", "fx_rate.delete_manual"
    ]  # fmt: skip
